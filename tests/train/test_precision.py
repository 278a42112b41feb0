"""train.precision: what `auto` picks on each kind of hardware, and what the Trainer records."""
import json

import pytest
import torch
import yaml

from attnlab.data import load_dataset
from attnlab.train import Trainer
from attnlab.train.config import TrainConfig
from attnlab.train.precision import PROBE_MIN_SPEEDUP, cpu_bf16_flags, resolve_precision


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _never(device):
    raise AssertionError("the probe must not run")


def test_auto_keeps_fp32_on_a_cpu_without_bf16_instructions_and_does_not_probe():
    choice = resolve_precision("auto", "cpu", probe=_never, cpu_flags=lambda: False)
    assert choice.name == "fp32" and not choice.needs_scaler and "no bf16" in choice.reason


@pytest.mark.parametrize("speedup,expected", [(1.75, "bf16"), (PROBE_MIN_SPEEDUP, "bf16"), (1.05, "fp32"),
                                              (0.01, "fp32")])
def test_auto_on_a_cpu_with_bf16_instructions_trusts_the_probe_not_the_flag(speedup, expected):
    choice = resolve_precision("auto", "cpu", probe=lambda d: speedup, cpu_flags=lambda: True)
    assert choice.name == expected and f"{speedup:.2f}x" in choice.reason


def test_unknown_flags_leave_the_decision_to_the_probe():
    assert resolve_precision("auto", "cpu", probe=lambda d: 2.0, cpu_flags=lambda: None).name == "bf16"
    assert resolve_precision("auto", "cpu", probe=lambda d: 0.5, cpu_flags=lambda: None).name == "fp32"


def test_explicit_choices_are_honoured_and_fp16_scales_the_loss():
    for name in ("fp32", "bf16", "fp16"):
        choice = resolve_precision(name, "cpu", probe=_never, cpu_flags=lambda: False)
        assert choice.name == name and choice.needs_scaler == (name == "fp16")
    with pytest.raises(ValueError, match="'half'"):
        resolve_precision("half", "cpu")


def test_cpu_flags_read_this_machine():
    flags = cpu_bf16_flags()
    assert flags in (True, False, None)


def test_autocast_context_matches_the_choice():
    bf16 = resolve_precision("bf16", "cpu")
    with bf16.autocast():
        y = torch.nn.functional.linear(torch.randn(2, 3), torch.randn(4, 3))
    assert y.dtype == torch.bfloat16
    with resolve_precision("fp32", "cpu").autocast():
        assert torch.nn.functional.linear(torch.randn(2, 3), torch.randn(4, 3)).dtype == torch.float32


def _config(**kw):
    base = dict(model="resnet_cifar", model_kwargs={"depth": 8, "width": 8}, dataset="digits", epochs=1,
                batch_size=128, threads=1)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_trainer_trains_and_records_its_precision(digits, tmp_path, precision):
    result = Trainer(_config(precision=precision, epochs=3, batch_size=64), tmp_path, progress=False,
                     data=digits).fit()
    assert result["precision"] == precision and result["test_acc"] > 0.5
    final = json.loads((tmp_path / "final.json").read_text())
    assert final["precision"] == precision and final["precision_reason"]
    text = (tmp_path / "config.yaml").read_text()
    assert text.startswith(f"# precision: {precision} (")
    assert yaml.safe_load(text)["precision"] == precision
    record = json.loads((tmp_path / "test_predictions.json").read_text())
    labels, predicted = record["labels"], record["predictions"]
    assert labels == digits.test_y.tolist() and len(predicted) == len(labels)
    assert sum(p == t for p, t in zip(predicted, labels)) / len(labels) == pytest.approx(final["test_acc"])


def test_auto_is_written_as_the_precision_it_chose_and_resume_keeps_it(digits, tmp_path, monkeypatch):
    import attnlab.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "resolve_precision",
                        lambda requested, device: resolve_precision(requested, device, probe=lambda d: 3.0,
                                                                    cpu_flags=lambda: True))
    Trainer(_config(epochs=1), tmp_path, progress=False, data=digits).fit()
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["precision"] == "bf16"
    # The machine changes: auto would now choose fp32, but the resumed run keeps bf16.
    monkeypatch.setattr(trainer_module, "resolve_precision",
                        lambda requested, device: resolve_precision(requested, device, probe=_never,
                                                                    cpu_flags=lambda: False))
    result = Trainer(_config(epochs=2), tmp_path, progress=False, data=digits).fit(resume=True)
    assert result["precision"] == "bf16" and result["epochs"] == 2
    # An explicit, different precision is a different run: refused.
    from attnlab.io.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="precision"):
        Trainer(_config(epochs=3, precision="fp32"), tmp_path, progress=False, data=digits).fit(resume=True)
