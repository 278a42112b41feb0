"""Checkpoints: round trip, atomic writes, rotation, and refusal of truncated / flipped / swapped /
mismatched files with a message naming the previous good one."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from attnlab.train import checkpoint as ck
from attnlab.train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint


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
