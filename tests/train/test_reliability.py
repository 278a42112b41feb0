"""Training that goes wrong stops cleanly: a learning rate that blows a real network up stops
with the step and a hint and leaves only finite checkpoints; `max_bad_steps` skips bad batches;
a run refuses to resume from another run's checkpoint, naming the good one, overwriting nothing."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from attnlab.data.datasets import load_dataset
from attnlab.train import NonFiniteLossError, Trainer, TrainConfig
from attnlab.io.checkpoint import CheckpointError, list_checkpoints, load_checkpoint


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def config(**changes) -> TrainConfig:
    settings = dict(model="resnet_cifar", model_kwargs={"depth": 8, "width": 4}, dataset="digits", epochs=1,
                    batch_size=64, lr=0.05, channels_last=False, checkpoint_every_steps=2, keep_checkpoints=50)
    settings.update(changes)
    return TrainConfig(**settings)


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted((folder / "checkpoints").iterdir())}


def test_learning_rate_that_blows_up_stops_with_step_hint_and_finite_checkpoints(digits, tmp_path):
    trainer = Trainer(config(lr=1e4), tmp_path, progress=False, data=digits)
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit()
    message = str(err.value)
    assert re.search(r"non-finite (loss|weights).* step \d+", message) and "Hint: lower the learning rate" in message
    named = Path(re.search(r"last good checkpoint: (\S+?\.json)", message).group(1))
    assert named == list_checkpoints(tmp_path)[-1]
    for path in list_checkpoints(tmp_path):                   # every checkpoint left behind is usable
        for name, value in load_checkpoint(path).model_state().items():
            assert not value.is_floating_point() or bool(torch.isfinite(value).all()), (path.name, name)


class NaNOnSomeBatches(nn.Module):
    """A small conv net whose training forward returns NaN logits on every 5th call."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc, self.calls = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4, 10), 0

    def forward(self, x):
        logits = self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))
        if self.training:
            self.calls += 1
            if self.calls % 5 == 0:
                return logits * float("nan")
        return logits


@pytest.mark.parametrize("budget, completes", [(4, True), (3, False)])
def test_max_bad_steps_budget_skips_bad_batches(digits, budget, completes):
    model = NaNOnSomeBatches()                                 # 22 steps: calls 5, 10, 15, 20 are bad
    trainer = Trainer(config(model="tiny", max_bad_steps=budget, optimizer="adamw", lr=0.01), None,
                      progress=False, data=digits, model=model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    if completes:
        result = trainer.fit()
        assert result["bad_steps"] == 4 and result["steps"] == 22
        assert all(bool(torch.isfinite(v).all()) for v in model.state_dict().values())
        assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    else:
        with pytest.raises(NonFiniteLossError, match=r"step 20 \(epoch 1, batch 19\); 4 bad step\(s\), budget "
                                                     r"max_bad_steps=3"):
            trainer.fit()


@pytest.fixture(scope="module")
def two_runs(digits, tmp_path_factory):
    """Two finished runs in separate folders, differing only in lr."""
    root = tmp_path_factory.mktemp("runs")
    for name, lr in (("a", 0.05), ("b", 0.1)):
        Trainer(config(lr=lr, checkpoint_every_steps=10), root / name, progress=False, data=digits).fit()
    return root


def fresh_copy(two_runs, tmp_path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", two_runs / "b"
    shutil.copytree(two_runs / "a", a)
    return a, b


def test_resume_refuses_another_runs_checkpoint_named_as_its_own(digits, two_runs, tmp_path):
    run, other = fresh_copy(two_runs, tmp_path)
    newest = list_checkpoints(run)[-1]
    for suffix in (".json", ".safetensors"):                  # the whole pair swapped: hashes verify
        shutil.copy(list_checkpoints(other)[-1].with_suffix(suffix), newest.with_suffix(suffix))
    before = snapshot(run)
    with pytest.raises(CheckpointError, match=r"different run configuration \(lr: checkpoint 0.1 vs now 0.05\)"):
        Trainer(config(lr=0.05, epochs=2, checkpoint_every_steps=10), run, progress=False, data=digits).fit(resume=True)
    assert snapshot(run) == before


def test_resume_refuses_a_swapped_tensor_file_and_names_the_previous_good(digits, two_runs, tmp_path):
    run, other = fresh_copy(two_runs, tmp_path)
    *older, newest = list_checkpoints(run)
    shutil.copy(list_checkpoints(other)[-1].with_suffix(".safetensors"), newest.with_suffix(".safetensors"))
    before = snapshot(run)
    with pytest.raises(CheckpointError) as err:
        Trainer(config(lr=0.05, epochs=2, checkpoint_every_steps=10), run, progress=False, data=digits).fit(resume=True)
    assert "SHA-256 does not match" in str(err.value) and f"previous good checkpoint is {older[-1]}" in str(err.value)
    assert snapshot(run) == before
