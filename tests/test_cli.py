"""The attnlab command: every validation error is one line on stderr with exit status 2 and no
traceback; list works; a tiny train + eval end to end on the embedded digits."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from attnlab.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(capsys, argv, *needles):
    code, out, err = run(capsys, *argv)
    assert code == 2, (argv, out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.fixture
def out(tmp_path):
    return str(tmp_path / "run")


def test_unknown_model(capsys, out):
    assert_usage_error(capsys, ["train", "--model", "resnet21", "--dataset", "digits", "--epochs", "1", "--out", out],
                       "'resnet21'", "resnet20")


def test_unknown_attention(capsys, out):
    assert_usage_error(capsys, ["train", "--model", "resnet20", "--attention", "sqex", "--dataset", "digits",
                                "--out", out], "'sqex'", "se")


def test_unknown_dataset(capsys, out):
    assert_usage_error(capsys, ["train", "--model", "resnet20", "--dataset", "fashion", "--out", out],
                       "'fashion'", "fashion-mnist")


@pytest.mark.parametrize("command", ["train", "compare"])
def test_negative_epochs(capsys, out, command):
    argv = [command, "--epochs", "-3", "--out", out]
    if command == "train":
        argv += ["--model", "resnet20", "--dataset", "digits"]
    assert_usage_error(capsys, argv, "-3", ">= 0")


def test_unwritable_output_folder(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_usage_error(capsys, ["train", "--model", "resnet20", "--dataset", "digits", "--out", str(blocker / "x")],
                       str(blocker / "x"), "writable")


def test_model_that_cannot_take_the_image_size(capsys, out):
    assert_usage_error(capsys, ["train", "--model", "cnn_mnist", "--dataset", "digits", "--epochs", "1", "--out", out],
                       "'cnn_mnist'", "(1, 8, 8)", "--image-size")


def test_bad_json_kwargs_and_missing_required(capsys, out):
    assert_usage_error(capsys, ["train", "--model", "resnet20", "--dataset", "digits", "--attention", "se",
                                "--attention-kwargs", "{reduction: 4}", "--out", out], "--attention-kwargs")
    assert_usage_error(capsys, ["train", "--model", "resnet20", "--dataset", "digits"], "--out")
    assert_usage_error(capsys, ["frobnicate"], "frobnicate")


def test_unknown_preset(capsys, tmp_path):
    study = pytest.importorskip("attnlab.study")
    assert_usage_error(capsys, ["compare", "--preset", "no-such-preset", "--out", str(tmp_path)], "'no-such-preset'",
                       *study.list_presets()[:1])


def test_compare_unknown_model_and_attention(capsys, tmp_path):
    assert_usage_error(capsys, ["compare", "--models", "resnet20", "vgg99", "--out", str(tmp_path)], "'vgg99'")
    assert_usage_error(capsys, ["compare", "--attentions", "none", "seee", "--out", str(tmp_path)], "'seee'")


def test_eval_report_explain_missing_inputs(capsys, tmp_path):
    assert_usage_error(capsys, ["eval", "--checkpoint", str(tmp_path / "nope")], "does not exist")
    assert_usage_error(capsys, ["report", str(tmp_path / "nope")], "is not a folder")
    assert_usage_error(capsys, ["explain", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path)],
                       "does not exist")


def test_list(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0 and "resnet20" in out and "  se\n" in out and "digits-rts" in out
    code, out, _ = run(capsys, "list", "datasets", "*mnist-r*")
    assert code == 0 and out.split() == ["fashion-mnist-r", "fashion-mnist-rts", "mnist-r", "mnist-rts"]
    assert_usage_error(capsys, ["list", "gadgets", "*"], "gadgets")


def test_train_then_eval_end_to_end(capsys, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", "--model", "resnet20", "--dataset", "digits", "--epochs", "1",
                         "--batch-size", "256", "--seed", "1", "--out", str(run_dir), "--no-progress")
    assert code == 0, err
    final = json.loads((run_dir / "final.json").read_text())
    assert final["epochs"] == 1 and final["params"] > 0 and json.loads(out.splitlines()[0])["test_acc"] == final["test_acc"]
    assert (run_dir / "config.yaml").exists() and (run_dir / "metrics.jsonl").read_text().count("\n") == 1
    code, out, err = run(capsys, "eval", "--checkpoint", str(run_dir), "--dataset", "digits")
    assert code == 0, err
    assert json.loads(out)["test_acc"] == pytest.approx(final["test_acc"])
    # a dataset with other channels than the model was trained on
    assert_usage_error(capsys, ["eval", "--checkpoint", str(run_dir), "--dataset", "cifar10"], "channel")
    # the same folder again without --resume would overwrite the run
    assert_usage_error(capsys, ["train", "--model", "resnet20", "--dataset", "digits", "--epochs", "1",
                                "--out", str(run_dir)], "--resume")


def test_python_dash_m_exit_status_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "attnlab", "train", "--model", "nope", "--dataset", "digits",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_sigint_finishes_the_step_writes_a_checkpoint_and_says_how_to_resume(tmp_path):
    import signal
    import time

    from attnlab.io.checkpoint import list_checkpoints, load_checkpoint

    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "attnlab", "train", "--model", "resnet20", "--dataset", "digits",
                             "--epochs", "200", "--threads", "1", "--checkpoint-every-steps", "2", "--out", str(run_dir),
                             "--no-progress"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not list_checkpoints(run_dir) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "--resume" in err and "Traceback" not in err, err
    latest = load_checkpoint(run_dir)
    assert latest.state["step"] > 0 and str(latest.path) in err


def test_the_command_takes_process_settings_that_main_as_a_library_call_does_not(monkeypatch, capsys):
    from attnlab import cli
    from attnlab.train import process

    applied = []
    monkeypatch.setattr(process, "keep_freed_memory", lambda: applied.append(True) or True)
    assert cli.main(["list", "attention"]) == 0 and applied == []
    assert cli.console_main.__module__ == "attnlab.cli"
    monkeypatch.setattr(sys, "argv", ["attnlab", "list", "attention"])
    assert cli.console_main() == 0 and applied == [True]
    assert "se" in capsys.readouterr().out.split()


@pytest.mark.parametrize("command, target, error", [
    (["compare", "--seeds", "0", "--epochs", "1"], "attnlab.study.run_compare", "RunWriteError"),
    (["compare", "--seeds", "0", "--epochs", "1"], "attnlab.study.run_compare", "NonFiniteLossError"),
    (["report", "."], "attnlab.report.builder.read_run_folder", "OSError"),
])
def test_a_failure_while_writing_or_training_is_one_line_with_status_1(monkeypatch, tmp_path, capsys, command,
                                                                        target, error):
    import errno

    from attnlab import cli
    from attnlab.io.checkpoint import RunWriteError
    from attnlab.train.trainer import NonFiniteLossError

    raised = {"RunWriteError": RunWriteError("cannot write checkpoint ckpt-000000010 in x: No space left on device "
                                             "(errno 28); files written there before are intact", errno.ENOSPC),
              "NonFiniteLossError": NonFiniteLossError("loss is nan at step 3"),
              "OSError": OSError(errno.ENOSPC, "No space left on device")}[error]

    def fail(*args, **kwargs):
        raise raised
    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(__import__(module, fromlist=[name]), name, fail)
    monkeypatch.chdir(tmp_path)
    assert cli.main(command) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0] and str(raised).split(":")[0].split("]")[-1].strip() in err[0]
