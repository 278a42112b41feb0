"""Explanation figures (a)-(e) on tiny models: every figure is written, non-empty and decodes;
the class-specificity number and the reliance study checked against what they must give."""
import json

import pytest
import torch
from PIL import Image

import attnlab
from attnlab.attention.base import CHANNEL, AttentionModule, Signal
from attnlab.explain import explain_model
from attnlab.explain.figures import class_specificity, excitation_figure, reliance, seed_figure
from attnlab.explain.capture import capture, override_gates




def _data(n=12, size=12, classes=3):
    gen = torch.Generator().manual_seed(0)
    raw = torch.rand(n, 1, size, size, generator=gen)
    return (raw - 0.5) / 0.25, torch.arange(n) % classes, raw


def _decodes(path):
    assert path.is_file() and path.stat().st_size > 2000
    with Image.open(path) as img:
        img.load()
        assert img.size[0] > 50 and img.size[1] > 50


def test_every_figure_of_a_model_with_cbam_nonlocal_and_stn(tmp_path):
    torch.manual_seed(0)
    model = attnlab.create_model("resnet_cifar", depth=8, width=4, in_chans=1, num_classes=3, attention="cbam",
                                 attention_kwargs={"reduction": 2}, nonlocal_stages=[2], spatial_transformer=True).eval()
    x, y, raw = _data()
    paths = explain_model(model, x, y, raw, tmp_path, classes=["a", "b", "c"])
    names = sorted(p.name for p in paths)
    assert names == ["a_seed_picture.png", "b_nonlocal_affinity.png", "c_excitation_per_class.png",
                     "d_spatial_maps.png", "d_spatial_transformer.png", "e_reliance.png"]
    for p in paths:
        _decodes(p)
    summary = json.loads((tmp_path / "summary.json").read_text())
    # one CBAM channel gate per stage is an excitation signal with a specificity in [0, 1]
    assert [r["module"] for r in summary["class_specificity"]] == ["model.layer1.0.attention", "model.layer2.0.attention",
                                                                  "model.layer3.0.attention"]
    assert all(0.0 <= r["specificity"] <= 1.0 for r in summary["class_specificity"])
    stages = [s["stage"] for s in summary["reliance"]["stages"]]
    assert stages[0] == "spatial_transformer" and "layer2" in stages and stages[-1] == "all"


def test_model_without_attention_gets_the_seed_picture_and_no_attention_figures(tmp_path):
    model = attnlab.create_model("resnet_cifar", depth=8, width=4, in_chans=1, num_classes=3).eval()
    x, y, raw = _data()
    paths = explain_model(model, x, y, raw, tmp_path)
    assert [p.name for p in paths] == ["a_seed_picture.png"]
    _decodes(paths[0])


def test_seed_picture_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="images"):
        seed_figure(torch.rand(1, 8, 8), tmp_path / "x.png")


def test_class_specificity_by_hand():
    labels = torch.tensor([0, 0, 1, 1])
    # the class fixes the value: all variance is between classes
    assert class_specificity(torch.tensor([[1.0], [1.0], [3.0], [3.0]]), labels) == pytest.approx(1.0)
    # both classes have mean 2: no variance between classes
    assert class_specificity(torch.tensor([[1.0], [3.0], [1.0], [3.0]]), labels) == pytest.approx(0.0)
    # values 0, 2 | 4, 4: grand mean 2.5; between = 2 (1 - 2.5)^2 + 2 (4 - 2.5)^2 = 9;
    # total = 6.25 + 0.25 + 2.25 + 2.25 = 11
    two = torch.tensor([[0.0, 5.0], [2.0, 5.0], [4.0, 5.0], [4.0, 5.0]])  # 2nd channel constant: skipped
    assert class_specificity(two, labels) == pytest.approx(9 / 11)
    with pytest.raises(ValueError, match="expected values"):
        class_specificity(torch.zeros(4), labels)


def test_reliance_on_modules_that_start_as_identity():
    # GC (zero-initialised last conv: transform = 0) and the STN (identity warp) start neutral, so
    # replacing their outputs by the neutral value or by the data mean changes no prediction
    torch.manual_seed(0)
    model = attnlab.create_model("resnet_cifar", depth=8, width=4, in_chans=1, num_classes=3, attention="gc",
                                 attention_kwargs={"reduction": 2}, spatial_transformer=True).eval()
    x, y, _ = _data()
    with torch.no_grad(), capture(model) as rec:
        model(x)
    result = reliance(model, x, y, rec)
    assert result["images"] == 12
    for stage in result["stages"]:
        assert stage["removed"] == pytest.approx(result["accuracy"])
        assert stage["mean"] == pytest.approx(result["accuracy"])


def test_reliance_detects_a_gate_the_network_needs():
    # an SE block whose gate is far from 1: removing it (gate = 1) changes the logits
    torch.manual_seed(0)
    model = attnlab.create_model("resnet_cifar", depth=8, width=4, in_chans=1, num_classes=3, attention="se",
                                 attention_kwargs={"reduction": 2}).eval()
    x, y, _ = _data(n=30)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels = the model's own predictions: intact accuracy is 1
        for m in model.modules():
            if isinstance(m, attnlab.attention.SqueezeExcite):
                for p in m.parameters():
                    p.mul_(0)  # gate = sigmoid(0) = 0.5 everywhere
                    break
        y = model(x).argmax(1)
    with torch.no_grad(), capture(model) as rec:
        model(x)
    result = reliance(model, x, y, rec)
    assert result["accuracy"] == 1.0
    by_stage = {s["stage"]: s for s in result["stages"]}
    assert set(by_stage) == {"layer1", "layer2", "layer3", "all"}
    assert by_stage["all"]["removed"] < 1.0 or by_stage["all"]["mean"] <= 1.0


class _ChannelScale(AttentionModule):
    """A user's mechanism observing a name no figure knows: its declared kind and neutral value
    are what put it into the excitation figure and the reliance study."""

    signals = {"weights": Signal(CHANNEL, neutral=1.0)}

    def __init__(self, channels):
        super().__init__(channels)
        self.fc = torch.nn.Linear(channels, channels)

    def forward(self, x):
        return x * self.observe("weights", torch.sigmoid(self.fc(x.mean((2, 3))))[:, :, None, None])


def test_figures_read_kind_and_neutral_value_from_the_module(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), _ChannelScale(4), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    x, y, _ = _data()
    with torch.no_grad(), capture(model) as rec:
        model(x)
    assert rec.signal("1", "weights") == _ChannelScale.signals["weights"] and rec.names_of("1", CHANNEL) == ["weights"]
    _, records = excitation_figure(rec, y, ["a", "b", "c"], tmp_path / "c.png")
    assert [(r["module"], r["signal"]) for r in records] == [("1", "weights")]
    result = reliance(model, x, y, rec)
    assert [s["modules"] for s in result["stages"]] == [["1"]]
    with torch.no_grad(), override_gates(model, {"1": {"weights": 1.0}}):
        removed = float((model(x).argmax(1) == y).float().mean())
    assert result["stages"][0]["removed"] == removed
