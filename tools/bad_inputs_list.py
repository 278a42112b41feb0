"""Bad inputs of the front door (`attnlab list`, the flags with a fixed set of values); loaded by
tools/bad_inputs.py beside the cases of the other areas."""
from __future__ import annotations

from pathlib import Path


def cases(tmp: Path, Case) -> list:
    out = tmp / "run"
    train = ["train", "--model", "resnet20", "--dataset", "digits", "--epochs", "1", "--out", out]
    from attnlab.measure.bench import run_bench
    from attnlab.study import run_compare

    return [
        Case("api", "run_bench: progress that is not a function", lambda: run_bench(models=["resnet20"],
                                                                                     reference=False,
                                                                                     progress="yes")),
        Case("api", "run_compare: progress that is not a function",
             lambda: run_compare(progress="yes", out_root=tmp / "runs")),
        Case("cli", "list: a typo of a kind alone", ["list", "modelz"]),
        Case("cli", "list: a typo of a kind before a pattern", ["list", "atention", "se"]),
        Case("cli", "list: a bare word that matches no name", ["list", "models", "zzz"]),
        Case("cli", "list: a glob that matches nothing of any kind", ["list", "*nothing-like-this*"]),
        Case("cli", "train: optimizer outside its choices", [*train, "--optimizer", "adam"]),
        Case("cli", "train: schedule outside its choices", [*train, "--schedule", "linear"]),
    ]
