"""Bad inputs at the edges of the CLI's value classes: integers too large for the libraries below,
blank strings that would read as "not given", settings the machine or the data cannot take, and
outputs that would land in the checkpoint folder being read. Each gets exit 2, one line on stderr
naming the value, and nothing written. No case trains."""
from __future__ import annotations

import os

import pytest
import torch

from attnlab.cli import main
from attnlab.train.config import COUNT_MAX

HUGE = str(10**23)
TRAIN = ["train", "--model", "resnet_cifar", "--dataset", "digits", "--epochs", "1", "--out", "out", "--no-progress"]
COMPARE = ["compare", "--models", "resnet_cifar", "--attentions", "none", "--seeds", "0", "--out", "cmp",
           "--no-progress"]


def refused(capsys, tmp_path, monkeypatch, argv) -> str:
    """Run `attnlab ARGV` in the empty folder `tmp_path`; assert the refusal and that nothing was written."""
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert status == 2 and err.count("\n") == 1 and err.startswith("attnlab") and "Traceback" not in err, (status, err)
    assert out == "" and sorted(p.name for p in tmp_path.iterdir()) == before
    return err


INT_FLAGS = [(TRAIN, flag) for flag in ("--epochs", "--batch-size", "--eval-batch-size", "--crop-padding",
                                        "--max-bad-steps", "--checkpoint-every", "--checkpoint-every-steps",
                                        "--keep-checkpoints", "--num-workers", "--threads", "--image-size",
                                        "--attention-stages")] + [
    (["eval", "--checkpoint", "ckpt"], "--batch-size"),
    (["export", "--checkpoint", "ckpt", "--format", "onnx", "--out", "m.onnx"], "--batch"),
    (COMPARE, "--jobs"), (COMPARE, "--epochs"),
    (["bench", "--models", "resnet20"], "--repeats"), (["bench", "--models", "resnet20"], "--image-size"),
]


@pytest.mark.parametrize("argv,flag", INT_FLAGS, ids=[f"{a[0]}{f}" for a, f in INT_FLAGS])
def test_an_integer_beyond_what_the_libraries_take_is_refused_at_parse_time(capsys, tmp_path, monkeypatch, argv, flag):
    err = refused(capsys, tmp_path, monkeypatch, [*argv, flag, HUGE])
    assert flag in err and HUGE in err and str(COUNT_MAX) in err


@pytest.mark.parametrize("argv", [[*TRAIN, "--seed", str(2**32)], [*COMPARE, "--seeds", "-1"]])
def test_a_seed_out_of_range_names_the_seed_range(capsys, tmp_path, monkeypatch, argv):
    assert "2**32 - 1" in refused(capsys, tmp_path, monkeypatch, argv)


@pytest.mark.parametrize("text,field", [("augment: {crop_padding: %s}\n" % HUGE, "augment"),
                                        ("checkpoint_every_steps: %s\n" % HUGE, "checkpoint_every_steps"),
                                        ("attention_stages: [1, %s]\n" % HUGE, "attention_stages")])
def test_a_config_file_int_out_of_range_is_named_like_a_flag(capsys, tmp_path, monkeypatch, text, field):
    (tmp_path.parent / f"{tmp_path.name}.yaml").write_text(text)
    err = refused(capsys, tmp_path, monkeypatch, [*TRAIN, "--config", tmp_path.parent / f"{tmp_path.name}.yaml"])
    assert f"TrainConfig.{field}" in err and str(COUNT_MAX) in err


def test_more_threads_than_cpus_is_refused_before_the_run_folder_is_made(capsys, tmp_path, monkeypatch):
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    err = refused(capsys, tmp_path, monkeypatch, [*TRAIN, "--threads", str(cpus + 1)])
    assert f"threads = {cpus + 1}" in err and f"1 .. {cpus}" in err


def test_a_crop_padding_wider_than_the_images_is_refused_before_the_run_folder_is_made(capsys, tmp_path, monkeypatch):
    err = refused(capsys, tmp_path, monkeypatch, [*TRAIN, "--crop-padding", "9"])   # digits are 8x8
    assert "crop_padding = 9" in err and "8x8" in err


BLANK = [
    ([*TRAIN[:-3], "--out", "", "--no-progress"], "--out"), ([*TRAIN, "--config", ""], "--config"),
    ([*TRAIN[:4], " ", *TRAIN[5:]], "--dataset"), ([*TRAIN, "--attention", ""], "--attention"),
    ([*COMPARE[:-3], "--out", "", "--no-progress"], "--out"), ([*COMPARE, "--data-dir", ""], "--data-dir"),
    (["eval", "--checkpoint", "ckpt", "--dataset", ""], "--dataset"), (["eval", "--checkpoint", ""], "--checkpoint"),
    (["explain", "--checkpoint", "ckpt", "--out", ""], "--out"), (["report", ""], "RUN_DIR"),
    (["list", "models", ""], "PATTERN"), (["bench", "--models", "resnet20", "--out", " "], "--out"),
]


@pytest.mark.parametrize("argv,flag", BLANK, ids=[f"{a[0]}{f}" for a, f in BLANK])
def test_a_blank_value_is_refused_instead_of_meaning_the_default(capsys, tmp_path, monkeypatch, argv, flag):
    err = refused(capsys, tmp_path, monkeypatch, argv)
    assert f"{flag} " in err and "is empty" in err


def test_a_json_argument_nested_too_deeply_is_one_line(capsys, tmp_path, monkeypatch):
    err = refused(capsys, tmp_path, monkeypatch, [*TRAIN, "--attention", "se", "--attention-kwargs", "[" * 100_000])
    assert "--attention-kwargs" in err and "nested too deeply" in err


def test_an_out_that_is_a_link_to_nowhere_is_refused(capsys, tmp_path, monkeypatch):
    (tmp_path / "dangling").symlink_to(tmp_path / "missing" / "deeper")
    err = refused(capsys, tmp_path, monkeypatch, [*TRAIN[:-3], "--out", "dangling", "--no-progress"])
    assert "'dangling'" in err and "missing path" in err


@pytest.fixture
def run_checkpoint(tmp_path):
    """A checkpoint record of an untrained digits model (weights as built, no training)."""
    from attnlab import create_model
    from attnlab.io.checkpoint import save_checkpoint
    from attnlab.train import TrainConfig

    config = TrainConfig(model="resnet_cifar", model_kwargs={"depth": 8, "width": 4}, dataset="digits", device="cpu")
    model = create_model("resnet_cifar", depth=8, width=4, in_chans=1, num_classes=10)
    data = {"name": "digits", "num_classes": 10, "in_chans": 1, "image_size": [8, 8], "mean": [0.3], "std": [0.4],
            "num_train": 8, "classes": [str(i) for i in range(10)]}
    state = {"epoch": 1, "step": 1, "config": config.to_dict(), "data": data}
    return save_checkpoint(tmp_path / "run" / "checkpoints", 1, state, model.state_dict())


@pytest.mark.parametrize("command", ["export", "explain"])
@pytest.mark.parametrize("target", ["the record", "beside it"])
def test_an_output_inside_the_checkpoint_folder_read_is_refused(capsys, tmp_path, monkeypatch, run_checkpoint,
                                                                 command, target):
    out = run_checkpoint if target == "the record" else run_checkpoint.parent / "out"
    argv = {"export": ["export", "--checkpoint", run_checkpoint, "--format", "onnx", "--out", out, "--force"],
            "explain": ["explain", "--checkpoint", run_checkpoint, "--out", out]}[command]
    before = {p.name: p.read_bytes() for p in run_checkpoint.parent.iterdir()}
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "inside the checkpoint folder" in err, (status, err)
    assert {p.name: p.read_bytes() for p in run_checkpoint.parent.iterdir()} == before


@pytest.mark.parametrize("kept", [("final.json", "config.yaml", "metrics.jsonl", "test_predictions.json"),
                                  ("config.yaml", "metrics.jsonl")], ids=["finished run", "run cut before a checkpoint"])
def test_train_into_a_folder_holding_another_runs_files_replaces_nothing(capsys, tmp_path, monkeypatch, kept):
    """A run kept without its checkpoints (as a study brought home keeps them) or cut before its
    first one: train refuses to write over its files, naming them, and leaves them as they were."""
    run = tmp_path / "out"
    run.mkdir()
    for name in kept:
        (run / name).write_text(f"kept {name}\n")
    err = refused(capsys, tmp_path, monkeypatch, TRAIN)
    assert "holds another run's files" in err and all(name in err for name in kept)
    assert sorted(p.name for p in run.iterdir()) == sorted(kept)
    assert all((run / name).read_text() == f"kept {name}\n" for name in kept)


def test_the_trainer_refuses_to_replace_a_finished_run(tmp_path):
    from attnlab.io.checkpoint import CheckpointError
    from attnlab.train import Trainer, TrainConfig

    (tmp_path / "final.json").write_text('{"test_acc": 0.5}')
    config = TrainConfig(model="resnet_cifar", model_kwargs={"depth": 8, "width": 4}, dataset="digits", epochs=1)
    with pytest.raises(CheckpointError, match="holds a finished run"):
        Trainer(config, tmp_path, progress=False).fit()
    assert (tmp_path / "final.json").read_text() == '{"test_acc": 0.5}'
    assert not (tmp_path / "config.yaml").exists() and not (tmp_path / "checkpoints").exists()


def test_a_model_too_large_for_memory_is_one_line(capsys, tmp_path, monkeypatch):
    """A width the memory cannot hold fails where torch allocates it (a model built to check the
    data, here); the command says so in one line, with the size asked for, not a traceback."""
    import attnlab.train.loading as loading

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 36000000000000 bytes. Error code 12")

    monkeypatch.setattr(loading, "create_model", no_memory)
    err = refused(capsys, tmp_path, monkeypatch, [*TRAIN, "--model-kwargs", '{"width": 1000000}'])
    assert "do not fit in memory (tried to allocate 36,000.0 GB)" in err


def test_other_runtime_errors_are_not_taken_for_memory(tmp_path, monkeypatch):
    import attnlab.train.loading as loading

    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not a size")

    monkeypatch.setattr(loading, "create_model", broken)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="a bug"):
        main(TRAIN)
