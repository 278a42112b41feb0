"""The Trainer: loss falls, resume is bit-identical, non-finite loss is caught, config is validated."""
from __future__ import annotations

import json
import math
import signal

import pytest
import torch
from torch import nn

from attnlab.data.datasets import load_dataset
from attnlab.io.checkpoint import load_checkpoint, save_checkpoint
from attnlab.train import NonFiniteLossError, Trainer, TrainConfig, TrainingInterrupted, evaluate
from attnlab import create_model
from attnlab.train.optim import LRSchedule, parameter_groups


class TinyNet(nn.Module):
    """A few hundred parameters: fast enough for many steps in a test."""

    def __init__(self, with_localisation: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)
        self.loc = nn.Linear(2, 2) if with_localisation else None

    def localisation_parameters(self):
        return list(self.loc.parameters()) if self.loc is not None else []

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def make(config_kw, digits, out_dir=None, seed=0):
    torch.manual_seed(seed)
    cfg = TrainConfig(model="tiny", dataset="digits", batch_size=128, optimizer="adamw", lr=0.02,
                      weight_decay=0.0, channels_last=False, **config_kw)
    return Trainer(cfg, out_dir, progress=False, data=digits, model=TinyNet())


def stop_during_step(trainer, n: int):
    """`trainer`, made to behave as if SIGTERM arrived during its step `n` (it finishes the step,
    writes a checkpoint and raises TrainingInterrupted)."""
    step = trainer.train_step
    calls = {"n": 0}

    def counted(xb, yb):
        calls["n"] += 1
        if calls["n"] == n:
            trainer._stop_signal = signal.SIGTERM
        return step(xb, yb)

    trainer.train_step = counted
    return trainer


def test_loss_falls_and_files_are_written(digits, tmp_path):
    trainer = make({"epochs": 3, "schedule": "constant"}, digits, tmp_path)
    before = evaluate(trainer.model, digits.test_x, digits.test_y, 512, "cpu", digits.mean, digits.std)
    result = trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] and result["test_loss"] < before["loss"]
    assert 0 <= result["test_acc"] <= 1 and result["test_acc"] > before["acc"]
    final = json.loads((tmp_path / "final.json").read_text())
    for key in ("test_acc", "test_loss", "params", "epochs", "seconds", "seed", "model", "attention", "history"):
        assert key in final
    assert (tmp_path / "config.yaml").exists() and final["steps"] == 3 * (1437 // 128)
    assert set(rows[0]) >= {"epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds",
                            "images_per_s"}


def test_resume_after_interrupt_is_bit_identical(digits, tmp_path):
    cfg = {"epochs": 2, "deterministic": True, "checkpoint_every_steps": 4, "augment": {"crop_padding": 1}}
    reference = make(cfg, digits, tmp_path / "ref")
    reference.fit()

    interrupted = stop_during_step(make(cfg, digits, tmp_path / "run"), 15)
    with pytest.raises(TrainingInterrupted, match="--resume") as err:
        interrupted.fit()
    assert err.value.checkpoint is not None

    resumed = make(cfg, digits, tmp_path / "run", seed=123)   # different init: the checkpoint must win
    result = resumed.fit(resume=True)
    assert result["steps"] == reference.global_step
    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert "device_changes" not in result


@pytest.mark.parametrize("stored_device", ["cuda", None])   # None: a checkpoint older than the field
def test_resume_from_another_device_type_restarts_the_augmentation_stream(digits, tmp_path, stored_device):
    # A CUDA augmentation generator's state (16 bytes of Philox) does not fit a CPU generator: the
    # resume must go on with a fresh stream and say so, not stop with a size error.
    cfg = {"epochs": 2, "checkpoint_every_steps": 4, "augment": {"crop_padding": 1}}
    interrupted = stop_during_step(make(cfg, digits, tmp_path), 6)
    with pytest.raises(TrainingInterrupted) as err:
        interrupted.fit()
    ckpt = load_checkpoint(err.value.checkpoint, needs="resume")
    state = dict(ckpt.state)
    state["rng"] = {**state["rng"], "augment": torch.arange(16, dtype=torch.uint8)}
    if stored_device is None:
        state.pop("device")
    else:
        assert state["device"] == "cpu"
        state["device"] = stored_device
    save_checkpoint(tmp_path / "checkpoints", state["step"], state, ckpt.model_state())

    # resumed here, cut again, resumed on the same device: the change stays on record
    with pytest.raises(TrainingInterrupted):
        stop_during_step(make(cfg, digits, tmp_path), 4).fit(resume=True)
    result = make(cfg, digits, tmp_path).fit(resume=True)
    expected = [{"from": stored_device or "another device type", "to": "cpu", "at_step": 6}]
    assert result["device_changes"] == expected
    assert json.loads((tmp_path / "final.json").read_text())["device_changes"] == expected
    assert result["steps"] == 2 * (1437 // 128) and math.isfinite(result["test_loss"])


def test_refuses_to_overwrite_a_run_without_resume(digits, tmp_path):
    make({"epochs": 1}, digits, tmp_path).fit()
    with pytest.raises(ValueError, match="resume"):
        make({"epochs": 1}, digits, tmp_path).fit()


def test_non_finite_loss_stops_with_step_and_hint(digits):
    trainer = make({"epochs": 1, "max_bad_steps": 1}, digits)
    with torch.no_grad():
        trainer.model.fc.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"step 2 .*batch 1.*lower the learning rate"):
        trainer.fit()
    assert trainer.bad_steps == 2


def test_schedules():
    cfg = TrainConfig(epochs=10, lr=1.0, warmup_epochs=1, schedule="cosine")
    s = LRSchedule(cfg, steps_per_epoch=10)
    assert s.lr(0) == pytest.approx(0.1) and s.lr(9) == pytest.approx(1.0)
    assert s.lr(99) < 0.01 and s.lr(54) == pytest.approx(0.5, abs=0.03)
    step = LRSchedule(TrainConfig(epochs=10, lr=1.0, schedule="step", milestones=[5, 8], gamma=0.1), 10)
    assert step.lr(49) == 1.0 and step.lr(50) == pytest.approx(0.1) and step.lr(80) == pytest.approx(0.01)


def test_no_decay_on_norms_and_biases_and_small_stn_lr():
    groups = {g["group_name"]: g for g in parameter_groups(TinyNet(with_localisation=True), 5e-4, stn_lr_scale=0.1)}
    assert groups["main/decay"]["weight_decay"] == 5e-4 and groups["main/no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in groups["main/decay"]["params"])
    assert groups["localisation/decay"]["lr_scale"] == 0.1 and groups["main/decay"]["lr_scale"] == 1.0



@pytest.mark.parametrize("kwargs", [{"spatial_transformer": True}, {"attention": "stn", "attention_stages": [1, 2]}],
                         ids=["in front", "in blocks"])
def test_every_spatial_transformer_learns_at_the_scaled_rate(kwargs):
    """The localisation nets of 'stn' attention modules inside the blocks are scaled as the one in
    front of the backbone is (the optimizer once looked only at the top-level model)."""
    model = create_model("resnet_cifar", depth=8, width=8, num_classes=10, in_chans=1, **kwargs)
    expected = {id(p) for name, p in model.named_parameters() if ".localisation." in f".{name}"
                or ".regression." in f".{name}"}
    groups = parameter_groups(model, 5e-4, stn_lr_scale=0.1)
    scaled = {id(p) for g in groups if g["lr_scale"] == 0.1 for p in g["params"]}
    assert expected and scaled == expected
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
@pytest.mark.parametrize("bad, match", [
    ({"epochs": -1}, "epochs"), ({"optimizer": "adam"}, "sgd, adamw"), ({"lr": 0}, "lr"),
    ({"schedule": "poly"}, "cosine"), ({"dataset": "mnistt"}, "unknown dataset"),
    ({"augment": {"crop": 4}}, "crop_padding"), ({"batch_size": 0}, "batch_size"),
    ({"label_smoothing": 1.0}, "label_smoothing"), ({"milestones": [5, 2]}, "increasing"),
])
def test_config_validation_names_the_field(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TrainConfig.from_dict(bad)


def test_config_round_trip_and_unknown_field():
    cfg = TrainConfig.from_dict({"model": "resnet20", "attention": "se", "milestones": [3, 6]})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})


class TinyRGBNet(TinyNet):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)


def test_lazily_decoded_image_folder_trains_through_a_dataloader(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 2)):
        for label, cls in enumerate(("dark", "light")):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 100, (12, 12, 3)) + 150 * label
                Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    data = load_dataset("imagefolder", data_dir=tmp_path, image_size=8)
    cfg = TrainConfig(model="tiny", dataset="imagefolder", epochs=2, batch_size=4, optimizer="adamw", lr=0.05,
                      num_workers=0, channels_last=False)
    trainer = Trainer(cfg, tmp_path / "run", progress=False, data=data, model=TinyRGBNet())
    result = trainer.fit()
    assert result["steps"] == 2 * (16 // 4) and 0 <= result["test_acc"] <= 1
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] + 0.5 and math.isfinite(rows[-1]["test_loss"])
