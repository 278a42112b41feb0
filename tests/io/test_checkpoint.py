"""Checkpoints: round trip, atomic writes, rotation, and refusal of truncated / flipped / swapped /
mismatched files with a message naming the previous good one; records that name a file outside
their folder or have the wrong shape; a full disk; the run folder's lock and its metrics log."""
from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attnlab.io import checkpoint as ck
from attnlab.io.checkpoint import NEEDS, CheckpointError, list_checkpoints, save_checkpoint
from attnlab.io.run_folder import LOCK_NAME, RunFolderInUse, lock_run_folder, read_metrics
from attnlab.train import load_checkpoint   # a run's reader: the file's checks and the config as a TrainConfig


def write(directory, step, acc=0.5, config=None):
    state = {"epoch": step, "rng": {"numpy": np.random.RandomState(step).get_state(), "torch": torch.get_rng_state()},
             "optimizer": {"state": {0: {"momentum_buffer": torch.full((3,), float(step))}},
                           "param_groups": [{"lr": 0.1, "params": [0]}]},
             "metrics": {"test_acc": acc}, "config": config or {"model": "resnet20", "lr": 0.1}}
    return save_checkpoint(directory, step, state, {"fc.weight": torch.full((2, 2), float(step))})


def test_round_trip_restores_types(tmp_path):
    path = write(tmp_path, 7)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.path == path and torch.equal(ckpt.model_state()["fc.weight"], torch.full((2, 2), 7.0))
    assert torch.equal(ckpt.state["optimizer"]["state"][0]["momentum_buffer"], torch.full((3,), 7.0))
    numpy_state = ckpt.state["rng"]["numpy"]
    assert isinstance(numpy_state, tuple) and numpy_state[1].dtype == np.uint32
    rs = np.random.RandomState()
    rs.set_state(numpy_state)
    assert rs.randint(1000) == np.random.RandomState(7).randint(1000)
    assert set(ckpt.tensors) >= {"model.fc.weight"}
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "swap", "json"])
def test_damaged_checkpoint_refused_naming_previous_good(tmp_path, damage):
    good = write(tmp_path, 1)
    other = write(tmp_path, 2)
    bad = write(tmp_path, 3)
    tensors = bad.with_suffix(".safetensors")
    if damage == "truncate":
        tensors.write_bytes(tensors.read_bytes()[:-50])
    elif damage == "bitflip":
        blob = bytearray(tensors.read_bytes())
        blob[-3] ^= 0x10
        tensors.write_bytes(bytes(blob))
    elif damage == "swap":
        tensors.write_bytes(other.with_suffix(".safetensors").read_bytes())
    else:
        record = json.loads(bad.read_text())
        record["state"]["epoch"] = 99
        bad.write_text(json.dumps(record))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    assert str(bad) in str(err.value) and str(other) in str(err.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before      # nothing overwritten
    assert load_checkpoint(good).state["epoch"] == 1


def test_config_mismatch_refused(tmp_path):
    write(tmp_path, 1, config={"model": "resnet20", "lr": 0.1, "epochs": 5})
    with pytest.raises(CheckpointError, match="lr: checkpoint 0.1 vs now 0.2"):
        load_checkpoint(tmp_path, expect_config={"model": "resnet20", "lr": 0.2, "epochs": 5})
    ok = load_checkpoint(tmp_path, expect_config={"model": "resnet20", "lr": 0.1, "epochs": 9},
                         ignore_fields=("epochs",))
    assert ok.state["epoch"] == 1


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    ck.atomic_write(path, b"old")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        ck.atomic_write(path, b"new")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_rotation_keeps_last_k_and_best(tmp_path):
    for step, acc in [(1, 0.2), (2, 0.9), (3, 0.3), (4, 0.4), (5, 0.5)]:
        write(tmp_path, step, acc)
    ck.rotate_checkpoints(tmp_path, keep_last=2)
    kept = [int(p.stem.split("-")[1]) for p in list_checkpoints(tmp_path)]
    assert kept == [2, 4, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"ckpt-{s:09d}.{e}" for s in (2, 4, 5) for e in ("json", "safetensors")])


def test_missing_checkpoint_is_clear(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "ckpt-000000001.json")


def test_checkpoint_with_a_familys_old_parameter_names_evaluates(tmp_path, shufflenet_v2_old_keys):
    # ShuffleNet v2 branches were nested conv-norm-act blocks (branch2.1.conv.weight), now flat
    # (branch2.3.weight): a run saved before still evaluates, with the same numbers.
    from attnlab.data.datasets import load_dataset
    from attnlab.train import Trainer, TrainConfig, load_trained

    cfg = TrainConfig(model="shufflenet_v2_x0_5_small", dataset="digits", epochs=1, batch_size=256,
                      channels_last=False)
    Trainer(cfg, tmp_path / "new", progress=False, data=load_dataset("digits")).fit()
    model, _ = load_trained(tmp_path / "new")
    ckpt = load_checkpoint(tmp_path / "new")
    old_names = shufflenet_v2_old_keys(ckpt.model_state())
    assert old_names.keys() != ckpt.model_state().keys()
    save_checkpoint(tmp_path / "old" / "checkpoints", 1, ckpt.state, old_names)
    old_model, _ = load_trained(tmp_path / "old")
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(old_model(x), model(x), rtol=0, atol=0)


# ---------------------------------------------------------------------------- records that name other files
def rehash(json_path, change) -> None:
    """Apply `change(record)` (returns the new record) and write it back with a matching record hash:
    the hash has no key, so anyone who edits a record can do this."""
    record = json.loads(json_path.read_text())
    record.pop("record_sha256")
    record = change(record)
    if isinstance(record, dict):
        record.pop("record_sha256", None)
        record["record_sha256"] = hashlib.sha256(ck._canonical(record)).hexdigest()
    json_path.write_text(json.dumps(record))


@pytest.fixture
def reads(monkeypatch):
    """The files the checkpoint loader actually read (opened and read to the end)."""
    done = []
    real = ck.read_regular_file

    def spy(path):
        data = real(path)
        done.append(Path(path))
        return data

    monkeypatch.setattr(ck, "read_regular_file", spy)
    return done


def test_a_record_naming_a_tensor_file_elsewhere_is_refused_before_reading_it(tmp_path, reads):
    folder = tmp_path / "run" / "checkpoints"
    path = write(folder, 1)
    outside = tmp_path / "outside"
    outside.mkdir()
    # A complete, hash-valid tensor file outside the folder: the old loader took it.
    shutil.copy(path.with_suffix(".safetensors"), outside / "x.safetensors")
    (folder / "sub").mkdir()
    shutil.copy(path.with_suffix(".safetensors"), folder / "sub" / "x.safetensors")
    (folder / "dir.safetensors").mkdir()
    os.symlink(outside / "x.safetensors", folder / "link.safetensors")
    os.mkfifo(folder / "fifo.safetensors")
    names = {"../../outside/x.safetensors": "no folder", str(outside / "x.safetensors"): "no folder",
             "/etc/passwd": "no folder", "sub/x.safetensors": "no folder", "..": "no folder",
             "": "no folder", "ckpt-000000001.json": "no folder", "link.safetensors": "symbolic link",
             "dir.safetensors": "not a plain file", "fifo.safetensors": "not a plain file", 7: "must be a string"}
    original = json.loads(path.read_text())
    for name, expected in names.items():
        path.write_text(json.dumps(original))
        rehash(path, lambda record: {**record, "tensors_file": name})
        reads.clear()
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        message = str(err.value)
        assert str(path) in message and expected in message, (name, message)
        assert reads == [path], (name, reads)       # only the record itself was read


def test_a_symlinked_record_in_a_run_folder_is_refused(tmp_path):
    real = write(tmp_path / "elsewhere", 1)
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    os.symlink(real, folder / "ckpt-000000001.json")
    with pytest.raises(CheckpointError, match="symbolic link"):
        load_checkpoint(tmp_path / "run")


# ---------------------------------------------------------------------------- records of the wrong shape
def run_state() -> tuple[dict, dict]:
    """(state, model state) of a small finished run, as the Trainer writes them."""
    import random

    from attnlab.models import create_model

    model = create_model("resnet_cifar", depth=8, width=4, num_classes=10, in_chans=1)
    state = {"epoch": 1, "batch_in_epoch": 0, "step": 5, "bad_steps": 0, "seconds": 1.5, "best_acc": 0.5,
             "steps_per_epoch": 5, "world_size": 1, "epoch_sums": {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0},
             "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}, "scaler": None,
             "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                     "augment": torch.Generator().get_state()},
             "config": {"model": "resnet_cifar", "model_kwargs": {"depth": 8, "width": 4}, "dataset": "digits"},
             "metrics": {"test_acc": 0.5},
             "data": {"name": "digits", "num_classes": 10, "in_chans": 1, "image_size": [8, 8], "mean": [0.3],
                      "std": [0.4], "num_train": 1437, "classes": [str(i) for i in range(10)]},
             "params": 1}
    return state, model.state_dict()


def _load_record_editor():
    """tools/bad_inputs_checkpoint.py's `_edit` (one record editor for the tests and the bad-input table)."""
    path = Path(__file__).resolve().parents[2] / "tools" / "bad_inputs_checkpoint.py"
    spec = importlib.util.spec_from_file_location("attnlab_bad_inputs_checkpoint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._edit


_set = _load_record_editor()   # _set("state", "epoch", value=...) / _set(..., delete=True): a record change


MALFORMED = [  # (what, change to the record, needs, words the message must hold)
    ("record is a list", lambda r: [r], "tensors", "a JSON list, expected an object"),
    ("state is a list", _set("state", value=[1, 2]), "tensors", "field record.state must be an object, got list"),
    ("no tensors_file", _set("tensors_file", delete=True), "tensors", "field record.tensors_file is missing"),
    ("step is a string", _set("step", value="5"), "tensors", "field record.step must be an integer, got str"),
    ("hash is not hex", _set("tensors_sha256", value="zz"), "tensors", "field record.tensors_sha256 must be 64"),
    ("a tensor the file lacks", _set("state", "rng", "torch", value={"__tensor__": "state.nowhere"}), "tensors",
     "field state.rng.torch refers to tensor 'state.nowhere'"),
    ("bad numpy dtype", _set("state", "rng", "numpy", "__tuple__", 1, "dtype", value="int99"), "tensors",
     "field state.rng.numpy.1.dtype"),
    ("no config", _set("state", "config", delete=True), "run", "field state.config is missing"),
    ("config is a list", _set("state", "config", value=["resnet20"]), "run", "field state.config must be an object"),
    ("config field of the wrong type", _set("state", "config", "epochs", value="ten"), "run", "field state.config:"),
    ("config field unknown", _set("state", "config", "epoch", value=3), "run", "field state.config: unknown"),
    ("data.num_classes a string", _set("state", "data", "num_classes", value="10"), "run",
     "field state.data.num_classes must be an integer"),
    ("no data.in_chans", _set("state", "data", "in_chans", delete=True), "run", "field state.data.in_chans is missing"),
    ("data.mean a number", _set("state", "data", "mean", value=0.5), "run", "field state.data.mean must be a list"),
    ("no optimizer groups", _set("state", "optimizer", "param_groups", delete=True), "resume",
     "field state.optimizer.param_groups is missing"),
    ("negative epoch", _set("state", "epoch", value=-1), "resume", "field state.epoch must be >= 0"),
    ("python rng a list", _set("state", "rng", "python", value=[3]), "resume", "field state.rng.python must be a tuple"),
    ("epoch_sums a number", _set("state", "epoch_sums", value=0), "resume", "field state.epoch_sums must be an object"),
]


@pytest.mark.parametrize("what,change,needs,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_record_of_the_wrong_shape_names_the_file_and_the_field(tmp_path, capsys, what, change, needs, words):
    from attnlab.cli import main
    from attnlab.train import load_trained

    state, model_state = run_state()
    path = save_checkpoint(tmp_path / "run" / "checkpoints", 5, state, model_state)
    load_checkpoint(path, needs="resume")        # the unchanged record passes every level
    rehash(path, change)
    levels = NEEDS[NEEDS.index(needs):]
    for level in levels:                            # refused at its level and every stricter one
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path, needs=level)
        assert str(path) in str(err.value) and words in str(err.value), str(err.value)
    if "run" in levels:
        with pytest.raises(CheckpointError, match=re.escape(words)):
            load_trained(tmp_path / "run")
        capsys.readouterr()
        for argv in (["eval", "--checkpoint", str(path)],
                     ["explain", "--checkpoint", str(path), "--out", str(tmp_path / "figs")]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and words in err and "Traceback" not in err, err


# ---------------------------------------------------------------------------- a full disk
def _fail_regular_fsync(monkeypatch, which: int) -> None:
    """os.fsync of the `which`-th regular file (1-based) raises ENOSPC, as a full disk does."""
    real, count = os.fsync, [0]

    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            count[0] += 1
            if count[0] == which:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("which,step", [(1, 2), (2, 2), (2, 1)], ids=["tensors", "record", "same step again"])
def test_disk_full_keeps_the_previous_checkpoint_and_leaves_nothing_half_written(tmp_path, monkeypatch, which, step):
    write(tmp_path, 1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    _fail_regular_fsync(monkeypatch, which)
    with pytest.raises(ck.RunWriteError) as err:
        write(tmp_path, step)
    message = str(err.value)
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
    assert f"in {tmp_path}:" in message and os.strerror(errno.ENOSPC) in message and "\n" not in message
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    if step == 1:   # the same step written again: withdrawn (its record first), never mismatched
        assert after == {} and list_checkpoints(tmp_path) == []
    else:
        assert after == before and load_checkpoint(tmp_path).state["epoch"] == 1


def test_disk_full_during_training_is_one_line_and_the_last_checkpoint_loads(tmp_path, capsys, monkeypatch):
    from attnlab.cli import main

    real, calls = ck.atomic_write, [0]

    def full_disk(path, data):      # the second checkpoint (writes 3 and 4) finds the disk full
        calls[0] += 1
        if calls[0] == 3:
            ck.temporary_path(path).write_bytes(data[: len(data) // 2])   # as far as it got
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, data)

    monkeypatch.setattr(ck, "atomic_write", full_disk)
    run = tmp_path / "run"
    code = main(["train", "--model", "resnet_cifar", "--model-kwargs", '{"depth": 8, "width": 4}', "--dataset",
                 "digits", "--epochs", "2", "--batch-size", "256", "--checkpoint-every", "1", "--out", str(run),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(run / "checkpoints") in err and os.strerror(errno.ENOSPC) in err
    monkeypatch.undo()
    assert load_checkpoint(run, needs="resume").state["epoch"] == 1
    assert [p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith(".")] == [
        "ckpt-000000005.json", "ckpt-000000005.safetensors"]


def test_temporaries_of_a_killed_writer_are_removed_at_the_next_start(tmp_path):
    from attnlab.data.datasets import load_dataset
    from attnlab.train import Trainer, TrainConfig

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    stale = [run / "checkpoints" / f".ckpt-000000004.safetensors.tmp-{dead}",
             run / "checkpoints" / f".ckpt-000000004.json.tmp-{dead}",
             run / f".metrics.jsonl.tmp-{dead}", run / f".config.yaml.tmp-{dead}"]
    others = [run / f".notes.txt.tmp-{dead}",                                   # not a file the writer writes
              run / "checkpoints" / f".ckpt-000000004.json.tmp-{os.getppid()}",   # a live process's
              run / f"final.json.tmp-{dead}", run / "data.tmp-1"]                 # not the temporary pattern
    for path in stale + others:
        path.write_bytes(b"partial")
    target = tmp_path / "keep.txt"
    target.write_text("not the writer's")
    os.symlink(target, run / f".final.json.tmp-{dead}")                          # a link, not a file it wrote
    cfg = TrainConfig(model="resnet_cifar", model_kwargs={"depth": 8, "width": 4}, dataset="digits", epochs=1,
                      batch_size=256, channels_last=False)
    Trainer(cfg, run, progress=False, data=load_dataset("digits")).fit()
    assert not [p for p in stale if p.exists()]
    assert all(p.exists() for p in others) and (run / f".final.json.tmp-{dead}").is_symlink()
    assert target.read_text() == "not the writer's"


# ---------------------------------------------------------------------------- metrics.jsonl
def test_read_metrics_drops_a_cut_last_line_and_names_other_damage(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"epoch": e, "test_acc": 0.1 * e}) for e in (1, 2)]
    path.write_text("\n".join(rows) + "\n" + rows[1][:11])
    assert [r["epoch"] for r in read_metrics(path)] == [1, 2]
    path.write_text("\n".join(rows))                              # complete last line without a newline
    assert [r["epoch"] for r in read_metrics(path)] == [1, 2]
    path.write_text(rows[0] + "\n" + rows[1][:11] + "\n" + rows[1] + "\n")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))}, line 2: not a JSON record"):
        read_metrics(path)
    path.write_text(rows[0] + "\n[1, 2]\n" + rows[1] + "\n")
    with pytest.raises(CheckpointError, match="line 2: a JSON list, expected an object"):
        read_metrics(path)
    assert read_metrics(tmp_path / "absent.jsonl") == []


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    from attnlab.data.datasets import load_dataset
    from attnlab.train import Trainer

    data = load_dataset("digits")
    run = tmp_path_factory.mktemp("metrics") / "run"
    Trainer(_tiny(1), run, progress=False, data=data).fit()
    return run, data


def _tiny(epochs):
    from attnlab.train import TrainConfig

    return TrainConfig(model="resnet_cifar", model_kwargs={"depth": 8, "width": 4}, dataset="digits", epochs=epochs,
                       batch_size=256, channels_last=False)


def test_resume_tolerates_a_cut_last_metrics_line(one_epoch_run, tmp_path):
    from attnlab.train import Trainer

    source, data = one_epoch_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    metrics = run / "metrics.jsonl"
    with open(metrics, "a") as fh:          # a kill during the append of epoch 2's line
        fh.write('{"epoch": 2, "step": 10, "lr": 0.0')
    Trainer(_tiny(2), run, progress=False, data=data).fit(resume=True)
    assert [r["epoch"] for r in read_metrics(metrics)] == [1, 2]
    assert metrics.read_text().count("\n") == 2 and metrics.read_text().endswith("\n")


def test_resume_refuses_a_damaged_metrics_line_that_is_not_the_last(one_epoch_run, tmp_path):
    from attnlab.train import Trainer

    source, data = one_epoch_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    metrics = run / "metrics.jsonl"
    metrics.write_text('{"epoch": 1, "te\n' + metrics.read_text())
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(metrics))}, line 1: not a JSON record"):
        Trainer(_tiny(2), run, progress=False, data=data).fit(resume=True)
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert {k: v for k, v in after.items() if k.name != LOCK_NAME} == \
        {k: v for k, v in before.items() if k.name != LOCK_NAME}


# ---------------------------------------------------------------------------- one writer per run folder
HOLD = ("import sys; from attnlab.io.run_folder import lock_run_folder; lock = lock_run_folder(sys.argv[1]); "
        "print('held', flush=True); sys.stdin.read()")


def test_a_second_writer_of_a_run_folder_is_refused_naming_the_holder(one_epoch_run, tmp_path):
    from attnlab.train import Trainer

    _, data = one_epoch_run
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p.name: p.read_bytes() for p in run.iterdir()}
        argv = ["train", "--model", "resnet_cifar", "--model-kwargs", '{"depth": 8, "width": 4}', "--dataset",
                "digits", "--epochs", "1", "--batch-size", "256", "--out", str(run), "--no-progress"]
        second = subprocess.run([sys.executable, "-m", "attnlab", *argv], capture_output=True, text=True, timeout=300)
        assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
        assert f"pid {holder.pid} on host {socket.gethostname()}" in second.stderr and str(run) in second.stderr
        with pytest.raises(RunFolderInUse, match=f"pid {holder.pid}"):
            Trainer(_tiny(1), run, progress=False, data=data).fit()
        assert {p.name: p.read_bytes() for p in run.iterdir()} == before       # nothing written
    finally:
        holder.kill()            # SIGKILL: the operating system releases the lock
        holder.wait()
    Trainer(_tiny(1), run, progress=False, data=data).fit()
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock_run_folder(run).release()      # released at the end of fit
