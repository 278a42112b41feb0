"""Validation behind the commands: TrainConfig checks types (from its annotations) before values,
the same way for the Python API, a YAML file and the CLI flags; a run that fails in a compare
worker process reaches the caller as the same exception (and the CLI as the same one line) as in
one process; and a command refused by validation leaves no new folder behind."""
from __future__ import annotations

import dataclasses
import math

import pytest

from attnlab import study
from attnlab.cli import main
from attnlab.data.datasets import DatasetError
from attnlab.study.workers import portable_error
from attnlab.train.config import TrainConfig, _describe, _field_types, _type_ok
from attnlab.train.trainer import TrainingInterrupted


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def one_line_error(capsys, *argv) -> str:
    status, _, err = run(capsys, *argv)
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err, (status, err)
    return err.strip()


# ------------------------------------------------------------------ TrainConfig: one validation
def test_every_field_annotation_is_understood_and_its_default_passes():
    hints = _field_types()
    assert list(hints) == [f.name for f in dataclasses.fields(TrainConfig)]
    for field in dataclasses.fields(TrainConfig):
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        assert _type_ok(default, hints[field.name]), field.name
        assert "typing" not in _describe(hints[field.name]) and "[" not in _describe(hints[field.name])


@pytest.mark.parametrize("field,value,error", [
    ("epochs", "three", TypeError), ("epochs", True, TypeError), ("seed", [1], TypeError),
    ("attention", 5, TypeError), ("augment", 5, TypeError), ("max_bad_steps", "many", TypeError),
    ("nesterov", 1, TypeError), ("lr", [0.1], TypeError), ("milestones", 5, TypeError),
    ("lr", math.nan, ValueError), ("warmup_epochs", math.inf, ValueError), ("gamma", math.nan, ValueError),
    ("seed", 2**32, ValueError), ("seed", 2**63, ValueError),
])
def test_api_and_yaml_refuse_the_same_field_with_the_same_message(tmp_path, field, value, error):
    import yaml

    with pytest.raises(error) as direct:
        TrainConfig(**{field: value})
    assert f"TrainConfig.{field} = " in str(direct.value)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({field: value}))
    with pytest.raises(error) as from_file:
        TrainConfig.from_yaml(path)
    assert str(from_file.value) == str(direct.value)


def test_types_are_checked_before_values():
    # lr = -1 is a bad value, epochs = "x" a bad type of a later field: the type is named first
    with pytest.raises(TypeError, match="epochs"):
        TrainConfig(lr=-1.0, epochs="x")


def test_a_valid_seed_range_edge_and_tuples_and_paths_are_accepted(tmp_path):
    config = TrainConfig(seed=2**32 - 1, milestones=(2, 4), image_size=(8, 8), data_dir=tmp_path)
    assert config.milestones == [2, 4] and config.image_size == [8, 8] and config.data_dir == str(tmp_path)


@pytest.mark.parametrize("flags,needle", [
    (["--lr", "nan"], "TrainConfig.lr = nan"), (["--seed", str(2**63)], "2**32 - 1"),
    (["--warmup-epochs", "inf"], "TrainConfig.warmup_epochs = inf"),
    (["--device", "nonsense"], "available: auto, cpu"),
    (["--device", "cpu:1"], "the CPU is one device"),
    (["--epochs", "2", "--warmup-epochs", "3"], "at most epochs (2)"),
])
def test_cli_flags_go_through_the_same_checks(capsys, tmp_path, flags, needle):
    line = one_line_error(capsys, "train", "--model", "resnet20", "--dataset", "digits", "--out", tmp_path / "run",
                          *flags)
    assert needle in line


# ------------------------------------------------------------------ compare: errors of worker processes
@pytest.fixture
def plan_whose_runs_fail(tmp_path):
    """A validated quick plan of two runs, then pointed at a dataset folder without the data, so
    that each run fails when it loads its data (in this process or in a worker)."""
    plan = study.plan_compare(attentions=["none", "se"], seeds=[0], epochs=1)
    empty = tmp_path / "no-data"
    empty.mkdir()
    plan.dataset, plan.data_dir, plan.explain, plan.workers = "cifar10", str(empty), False, 2
    return plan


def test_a_worker_error_reaches_the_caller_as_the_same_exception(tmp_path, plan_whose_runs_fail):
    with pytest.raises(DatasetError) as alone:
        study.run_compare(plan=plan_whose_runs_fail, out_root=tmp_path / "alone", workers=1, progress=False)
    with pytest.raises(DatasetError) as pooled:
        study.run_compare(plan=plan_whose_runs_fail, out_root=tmp_path / "pooled", workers=2, progress=False)
    assert str(pooled.value) == str(alone.value) and "cifar10" in str(alone.value)


def test_cli_prints_a_worker_error_as_the_one_line_of_one_process(capsys, monkeypatch, tmp_path,
                                                                  plan_whose_runs_fail):
    with pytest.raises(DatasetError) as alone:
        study.run_compare(plan=plan_whose_runs_fail, out_root=tmp_path / "alone", workers=1, progress=False)
    monkeypatch.setattr(study, "plan_compare", lambda **_: plan_whose_runs_fail)   # workers=2 in the plan
    line = one_line_error(capsys, "compare", "--out", tmp_path / "cli", "--no-progress")
    assert line == "attnlab: error: " + " ".join(str(alone.value).split())


def test_an_exception_that_cannot_cross_processes_is_sent_as_its_type_and_message():
    kept = DatasetError("no data here")
    assert portable_error(kept) is kept
    sent = portable_error(TrainingInterrupted("stopped at step 3", None))   # its constructor needs 2 arguments
    assert type(sent) is RuntimeError and str(sent) == "TrainingInterrupted: stopped at step 3"


def test_compare_refuses_a_missing_dataset_before_making_any_folder(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_line_error(capsys, "compare", "--preset", "cifar10-se", "--data-dir", empty,
                          "--out", tmp_path / "runs")
    assert "cifar10" in line and str(empty) in line
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ no folder left behind
TRAIN = ["train", "--model", "resnet20", "--dataset", "digits", "--epochs", "1", "--no-progress"]


@pytest.mark.parametrize("flags", [
    ["--lr", "-1"],                                            # a TrainConfig value
    ["--device", "cuda:99"],                                   # a device that is not present
    ["--model", "cnn_mnist"],                                  # a model too small for 8 px digits
    ["--dataset", "cifar10", "--data-dir", "{empty}"],         # data missing: found when the Trainer loads it
], ids=["value", "device", "model-shape", "missing-data"])
def test_a_refused_train_leaves_no_new_out_folder(capsys, tmp_path, flags):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "new" / "run"
    one_line_error(capsys, *TRAIN, "--out", out, *[f.replace("{empty}", str(empty)) for f in flags])
    assert not out.exists() and not out.parent.exists()


def test_a_refused_train_keeps_a_folder_that_existed(capsys, tmp_path):
    out = tmp_path / "kept"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    one_line_error(capsys, *TRAIN, "--out", out, "--lr", "nan")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


def test_out_below_a_file_is_refused_without_making_anything(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = one_line_error(capsys, *TRAIN, "--out", blocker / "x" / "y")
    assert "not a folder" in line and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
