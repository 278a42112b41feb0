"""Bad inputs of checkpoints, pretrained weight files and run folders (loaded by tools/bad_inputs.py).

The checkpoint records here are hand-edited the way anyone can edit one: the record's SHA-256 has
no key, so each edit is followed by a matching hash (`_forge`), and only the structure checks and
the tensor-file rule stand between the file and the loader.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch


def _run_state() -> dict:
    """The state of a small finished run, shaped as the Trainer writes it."""
    return {"epoch": 1, "batch_in_epoch": 0, "step": 5, "bad_steps": 0, "seconds": 1.0, "best_acc": 0.5,
            "steps_per_epoch": 5, "epoch_sums": {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0},
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                    "augment": torch.Generator().get_state()},
            "config": {"model": "resnet_cifar", "model_kwargs": {"depth": 8, "width": 4}, "dataset": "digits",
                       "epochs": 1, "batch_size": 256, "channels_last": False},
            "metrics": {"test_acc": 0.5},
            "data": {"num_classes": 10, "in_chans": 1, "mean": [0.3], "std": [0.4], "image_size": [8, 8]}}


def _forge(json_path: Path, change) -> Path:
    """Apply `change(record)` (returns the record) and rewrite it with a matching record hash."""
    from attnlab.io import checkpoint as ck

    record = json.loads(json_path.read_text())
    record.pop("record_sha256")
    record = change(record)
    if isinstance(record, dict):
        record["record_sha256"] = hashlib.sha256(ck._canonical(record)).hexdigest()
    json_path.write_text(json.dumps(record))
    return json_path


def _edit(*keys, value=None, delete=False):
    def change(record):
        target = record
        for key in keys[:-1]:
            target = target[key]
        if delete:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
        return record
    return change


def cases(tmp: Path, Case) -> list:
    from attnlab import create_model
    from attnlab.io.checkpoint import save_checkpoint
    from attnlab.io.run_folder import read_metrics
    from attnlab.train import load_checkpoint, load_trained

    weights = create_model("resnet_cifar", depth=8, width=4, num_classes=10, in_chans=1).state_dict()

    def run(name: str, change=None) -> Path:
        """A run folder <tmp>/<name> holding one checkpoint, its record changed by `change`."""
        path = save_checkpoint(tmp / name / "checkpoints", 5, _run_state(), weights)
        if change is not None:
            _forge(path, change)
        return tmp / name

    outside = tmp / "outside.safetensors"          # complete and hash-valid: only the rule refuses it
    escaping = run("escaping")
    shutil.copy(next((escaping / "checkpoints").glob("*.safetensors")), outside)
    _forge(next((escaping / "checkpoints").glob("*.json")), _edit("tensors_file", value="../../outside.safetensors"))
    passwd = run("passwd", _edit("tensors_file", value="/etc/passwd"))
    linked = run("linked")
    os.symlink(outside, linked / "checkpoints" / "link.safetensors")
    _forge(next((linked / "checkpoints").glob("*.json")), _edit("tensors_file", value="link.safetensors"))
    a_list = run("list", lambda record: [record])
    no_file = run("no_file", _edit("tensors_file", delete=True))
    lost_tensor = run("lost_tensor", _edit("state", "rng", "torch", value={"__tensor__": "state.gone"}))
    no_config = run("no_config", _edit("state", "config", delete=True))
    classes_text = run("classes_text", _edit("state", "data", "num_classes", value="10"))
    no_chans = run("no_chans", _edit("state", "data", "in_chans", delete=True))
    no_groups = run("no_groups", _edit("state", "optimizer", "param_groups", delete=True))

    empty_pth = tmp / "empty.pth"
    empty_pth.write_bytes(b"")
    whole = tmp / "whole.pth"
    torch.save(create_model("resnet20").state_dict(), whole)
    cut_pth = tmp / "cut.pth"
    cut_pth.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    deeper = tmp / "resnet32.pth"
    torch.save(create_model("resnet32").state_dict(), deeper)
    metrics = tmp / "metrics.jsonl"
    metrics.write_text('{"epoch": 1, "test_acc": 0.5}\n{"epoch": 2, "te\n{"epoch": 3, "test_acc": 0.7}\n')

    resume = ["train", "--model", "resnet_cifar", "--model-kwargs", '{"depth": 8, "width": 4}', "--dataset", "digits",
              "--epochs", "1", "--batch-size", "256", "--no-progress", "--resume", "--out"]
    api = [
        ("load_checkpoint: the record names a tensor file outside its folder (../../x.safetensors)",
         lambda: load_checkpoint(escaping)),
        ("load_checkpoint: the record names /etc/passwd as its tensor file", lambda: load_checkpoint(passwd)),
        ("load_checkpoint: the tensor file is a symbolic link to a file elsewhere", lambda: load_checkpoint(linked)),
        ("load_checkpoint: the record is a JSON list", lambda: load_checkpoint(a_list)),
        ("load_checkpoint: the record has no tensors_file", lambda: load_checkpoint(no_file)),
        ("load_checkpoint: the state refers to a tensor the file lacks", lambda: load_checkpoint(lost_tensor)),
        ("load_checkpoint: needs='everything'", lambda: load_checkpoint(escaping, needs="everything")),
        ("load_checkpoint(needs='resume'): optimizer without param_groups",
         lambda: load_checkpoint(no_groups, needs="resume")),
        ("load_trained: a checkpoint without its run's config", lambda: load_trained(no_config)),
        ("load_trained: data.num_classes given as a string", lambda: load_trained(classes_text)),
        ("create_model: pretrained= a checkpoint folder whose record names a file elsewhere",
         lambda: create_model("resnet_cifar", depth=8, width=4, num_classes=10, in_chans=1, pretrained=str(escaping))),
        ("create_model: pretrained= an empty (0-byte) .pth", lambda: create_model("resnet20", pretrained=str(empty_pth))),
        ("create_model: pretrained= a .pth cut in half", lambda: create_model("resnet20", pretrained=str(cut_pth))),
        ("create_model: pretrained= resnet32 weights into resnet20 (extra blocks)",
         lambda: create_model("resnet20", pretrained=str(deeper))),
        ("create_model: pretrained_strict='no'",
         lambda: create_model("resnet20", pretrained=str(whole), pretrained_strict="no")),
        ("read_metrics: a damaged line that is not the last", lambda: read_metrics(metrics)),
    ]
    cli = [
        ("eval: the record names a tensor file outside its folder", ["eval", "--checkpoint", escaping]),
        ("explain: the record names /etc/passwd as its tensor file",
         ["explain", "--checkpoint", passwd, "--out", tmp / "figures"]),
        ("eval: the tensor file is a symbolic link", ["eval", "--checkpoint", linked]),
        ("eval: a checkpoint without its run's config", ["eval", "--checkpoint", no_config]),
        ("eval: a checkpoint without data.in_chans", ["eval", "--checkpoint", no_chans]),
        ("explain: the record is a JSON list", ["explain", "--checkpoint", a_list, "--out", tmp / "figures"]),
        ("train --resume: the record names a tensor file outside its folder", [*resume, escaping]),
        ("train --resume: optimizer without param_groups", [*resume, no_groups]),
    ]
    return ([Case("api", what, call) for what, call in api]
            + [Case("cli", what, [str(a) for a in argv]) for what, argv in cli])
