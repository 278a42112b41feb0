"""Bad inputs made of combinations: a flag that the rest of the command makes ineffective, a YAML
file giving a key twice or a null, torchrun's variables half set, an export file named for the
other format, sizes that do not fit in memory, and a refused run into a folder that holds a run.
Each gets exit 2, one line on stderr naming the value and what was expected, and nothing written.
Only the run-folder case trains (one epoch of a tiny model, once for the module)."""
from __future__ import annotations

import hashlib

import pytest
import torch

from attnlab.cli import main
from attnlab.study import list_presets, load_preset
from attnlab.study.presets import PRESET_DIR
from attnlab.train.config import TrainConfig, read_yaml_mapping
from attnlab.train.distributed import check_launch_environment

TINY = ["--model", "resnet_cifar", "--model-kwargs", '{"depth": 8, "width": 4}', "--dataset", "digits",
        "--epochs", "1", "--no-progress"]
TRAIN = ["train", *TINY, "--out", "out"]
COMPARE = ["compare", "--models", "resnet_cifar", "--attentions", "none", "--seeds", "0", "--epochs", "1",
           "--dataset", "digits", "--out", "cmp", "--no-progress"]


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def refused(capsys, folder, monkeypatch, argv) -> str:
    """Run `attnlab ARGV` in `folder`; assert the one-line refusal and that nothing there changed."""
    monkeypatch.chdir(folder)
    before = snapshot(folder)
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert status == 2 and err.count("\n") == 1 and err.startswith("attnlab") and "Traceback" not in err, (status, err)
    assert out == "" and snapshot(folder) == before
    return err


# ---------------------------------------------------------------- flags that have no effect
INEFFECTIVE = [
    (["--attention-kwargs", '{"reduction": 8}'], "--attention-kwargs {\"reduction\": 8}", "no attention"),
    (["--attention-stages", "1"], "--attention-stages 1", "no attention"),
    (["--attention-position", "pre"], "--attention-position pre", "no attention"),
    (["--attention", "none", "--attention-stages", "2"], "--attention-stages 2", "no attention"),
    (["--milestones", "1"], "--milestones 1.0", "step schedule"),
    (["--gamma", "0.5"], "--gamma 0.5", "step schedule"),
    (["--schedule", "constant", "--gamma", "0.1"], "--gamma 0.1", "step schedule"),   # the default value, typed
    (["--optimizer", "adamw", "--nesterov"], "--nesterov", "only SGD"),
    (["--optimizer", "adamw", "--no-nesterov"], "--no-nesterov", "only SGD"),
    (["--optimizer", "adamw", "--momentum", "0.5"], "--momentum 0.5", "only SGD"),
    (["--amp", "--device", "cpu"], "--amp", "CUDA only"),
    (["--amp", "--precision", "bf16"], "--amp", "precision 'bf16'"),
    (["--stn-lr-scale", "0.5"], "--stn-lr-scale 0.5", "no spatial transformer"),
]


@pytest.mark.parametrize("extra, named, why", INEFFECTIVE, ids=[" ".join(c[0]) for c in INEFFECTIVE])
def test_a_flag_without_effect_is_refused(capsys, tmp_path, monkeypatch, extra, named, why):
    err = refused(capsys, tmp_path, monkeypatch, [*TRAIN, *extra])
    assert f"{named} has no effect" in err and why in err


def test_a_config_key_without_effect_is_refused_unless_it_holds_the_default(capsys, tmp_path, monkeypatch):
    (tmp_path / "c.yaml").write_text("gamma: 0.5\n")
    err = refused(capsys, tmp_path, monkeypatch, [*TRAIN, "--config", "c.yaml"])
    assert "key gamma: 0.5 has no effect" in err and "c.yaml" in err
    # a file holding a full recipe (the default gamma beside cosine) is fine: refused here only by --epochs -1
    (tmp_path / "c.yaml").write_text("gamma: 0.1\nmomentum: 0.9\nstn_lr_scale: 0.1\n")
    err = refused(capsys, tmp_path, monkeypatch, [*TRAIN, "--config", "c.yaml", "--epochs", "-1"])
    assert "epochs" in err and "no effect" not in err


def test_unused_settings_follow_the_other_fields():
    config = TrainConfig(schedule="step", milestones=[1.0], gamma=0.5, optimizer="sgd")
    assert not {"milestones", "gamma", "momentum", "nesterov"} & set(config.unused_settings())
    assert {"milestones", "gamma"} <= set(config.replace(schedule="cosine").unused_settings())
    assert {"momentum", "nesterov"} <= set(config.replace(optimizer="adamw", nesterov=False).unused_settings())
    assert "amp" in TrainConfig(amp=True, precision="fp32").unused_settings()


@pytest.mark.parametrize("preset", list_presets())
def test_shipped_presets_set_nothing_without_effect(preset):
    # the presets' train recipes hold only settings their schedule, optimizer and precision use
    # (or the defaults), so a study runs the recipe it names
    train = load_preset(preset)["train"]
    config = TrainConfig.from_dict(train)
    defaults = TrainConfig()
    wasted = {k: why for k, why in config.unused_settings().items()
              if k in train and k != "amp" and train[k] != getattr(defaults, k)}
    assert not wasted, wasted
    assert not (train.get("amp") and train.get("precision", "auto") != "auto")


# ---------------------------------------------------------------- YAML: keys twice, nulls
@pytest.mark.parametrize("text, named", [
    ("epochs: 1\nepochs: 2\n", "'epochs' is given twice (lines 1 and 2)"),
    ("augment: {flip: true, flip: false}\n", "'flip' is given twice"),
    ("dataset: null\n", "dataset = None"),
    ("model: null\n", "model = None"),
    ("epochs: three\n", "epochs = 'three'"),
])
def test_config_file_keys_twice_and_nulls_are_refused_naming_file_and_key(capsys, tmp_path, monkeypatch, text, named):
    (tmp_path / "c.yaml").write_text(text)
    err = refused(capsys, tmp_path, monkeypatch, [*TRAIN, "--config", "c.yaml"])   # flags set model and dataset
    assert named in err and "c.yaml" in err


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    (tmp_path / "m.yaml").write_text("base: &b {lr: 0.1, epochs: 1}\nrun: {<<: *b, lr: 0.2}\n")
    assert read_yaml_mapping(tmp_path / "m.yaml")["run"] == {"lr": 0.2, "epochs": 1}


@pytest.mark.parametrize("path", sorted(PRESET_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_have_no_key_twice(path):
    assert read_yaml_mapping(path, "preset")


# ---------------------------------------------------------------- torchrun's variables
ENVS = [({"RANK": "1"}, "WORLD_SIZE, LOCAL_RANK"), ({"RANK": "abc", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "'abc'"),
        ({"RANK": "0", "WORLD_SIZE": "0", "LOCAL_RANK": "0"}, "WORLD_SIZE=0"),
        ({"RANK": "3", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK=3"),
        ({"RANK": "0", "WORLD_SIZE": "-1", "LOCAL_RANK": "0"}, "WORLD_SIZE=-1")]


@pytest.mark.parametrize("command", [TRAIN, COMPARE], ids=["train", "compare"])
@pytest.mark.parametrize("env, named", ENVS, ids=[" ".join(f"{k}={v}" for k, v in e.items()) for e, _ in ENVS])
def test_bad_torchrun_variables_are_refused_by_train_and_compare(capsys, tmp_path, monkeypatch, command, env, named):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    err = refused(capsys, tmp_path, monkeypatch, command)
    assert "torchrun environment" in err and named in err
    with pytest.raises(ValueError):
        check_launch_environment()


def test_no_torchrun_variables_mean_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert check_launch_environment() is None
    monkeypatch.setenv("RANK", "1"), monkeypatch.setenv("WORLD_SIZE", "2"), monkeypatch.setenv("LOCAL_RANK", "0")
    assert check_launch_environment() == (1, 2, 0)


# ---------------------------------------------------------------- outputs: a run folder, export files, memory
@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *TINY, "--out", str(folder)]) == 0
    return folder


def test_a_refused_train_into_a_run_leaves_its_lock_file_as_it_was(capsys, run_folder, monkeypatch):
    lock = run_folder / ".attnlab-run.lock"
    digest = hashlib.md5(lock.read_bytes()).hexdigest()
    err = refused(capsys, run_folder.parent, monkeypatch, ["train", *TINY, "--out", "run"])
    assert "already holds a run's checkpoints" in err and hashlib.md5(lock.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("fmt, name, suffix", [("torch-export", "m.onnx", ".onnx"), ("onnx", "m.pt2", ".pt2")])
def test_export_refuses_a_file_named_for_the_other_format(capsys, run_folder, monkeypatch, fmt, name, suffix):
    if fmt == "onnx":
        pytest.importorskip("onnx"), pytest.importorskip("onnxruntime")
    err = refused(capsys, run_folder.parent, monkeypatch, ["export", "--checkpoint", "run", "--format", fmt,
                                                           "--out", name])
    assert f"{name!r} ends in {suffix}" in err and fmt in err


def test_export_names_a_batch_that_does_not_fit_in_memory(capsys, run_folder, monkeypatch):
    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(torch, "randn", no_memory)
    err = refused(capsys, run_folder.parent, monkeypatch, ["export", "--checkpoint", "run", "--format",
                                                           "torch-export", "--out", "m.pt2", "--batch", "1000000"])
    assert "--batch 1000000 (an input of shape (1000000, 1, 8, 8)" in err and "does not fit in memory" in err
