"""Explanation figures (a)-(f) on tiny models: every figure is written, non-empty and decodes;
every module has its panel; the rendered figures have no overprinted text and no blank band;
summary.json is strict JSON; the class-specificity number, the query dependence of non-local
maps and the reliance study checked against what they must give; the class-evidence figure has
a row per chosen image and a column per map, and only modules with a map over the positions get one."""
import json
import math

import pytest
import torch
from matplotlib import image as mpimg
from PIL import Image

import attnlab
from attnlab.attention.base import CHANNEL, AttentionModule, Signal
from attnlab.explain import explain_model
from attnlab.explain import figures as figures_module
from attnlab.explain.evidence import evidence_maps
from attnlab.explain.figures import (class_specificity, evidence_figure, evidence_rows, excitation_figure, reliance,
                                     seed_figure)
from attnlab.explain.metrics import rank_correlation
from attnlab.explain.capture import capture, override_gates
from attnlab.explain.plotting import overlapping_texts


def _data(n=12, size=12, classes=3):
    gen = torch.Generator().manual_seed(0)
    raw = torch.rand(n, 1, size, size, generator=gen)
    return (raw - 0.5) / 0.25, torch.arange(n) % classes, raw


@pytest.fixture
def rendered(monkeypatch):
    """{file name: figure} of every figure the explanation functions save, kept for measuring."""
    figures = {}
    save = figures_module.save_figure

    def keep(fig, path, **kw):
        figures[path.name] = fig
        return save(fig, path, **kw)

    monkeypatch.setattr(figures_module, "save_figure", keep)
    return figures


def _decodes(path):
    assert path.is_file() and path.stat().st_size > 2000
    with Image.open(path) as img:
        img.load()
        assert img.size[0] > 50 and img.size[1] > 50


def test_every_figure_of_a_model_with_cbam_nonlocal_and_stn(rendered, tmp_path):
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
    # laid out without overprinted text (module names are long inside the transformer's
    # wrapper: 'model.layer1.0.attention') and without a blank band under the title (the
    # non-local figure, 4 rows, had ~130 px)
    for name, fig in rendered.items():
        assert overlapping_texts(fig) == [], name
        if fig._suptitle is not None:
            assert 0 <= _title_gap(fig) < 0.25 * fig.dpi, name
    reliance_fig = rendered["e_reliance.png"]
    renderer = reliance_fig.canvas.get_renderer()
    legend = reliance_fig.legends[0].get_window_extent(renderer)
    assert not legend.overlaps(reliance_fig.axes[0].get_window_extent(renderer))   # not over the bars


def _title_gap(fig) -> float:
    """Pixels between the bottom of the figure's title and the top of its highest axes (with the
    axes' own titles), as last drawn."""
    renderer = fig.canvas.get_renderer()
    top = max(ax.get_tightbbox(renderer).y1 for ax in fig.axes if ax.get_visible())
    return fig._suptitle.get_window_extent(renderer).y0 - top


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


# --------------------------------------------------------------------------------------------- layout

def _panel_titles(fig, path: str) -> int:
    """Axes of `fig` whose title or row label names module `path`."""
    return sum(1 for ax in fig.axes if ax.get_title().startswith(f"{path}:") or ax.get_ylabel().startswith(f"{path}\n"))


def _attention_paths(model):
    """Paths of the attention modules of `model` that are not part of another (CBAM's channel
    and spatial halves belong to their CBAM)."""
    paths = [p for p, m in model.named_modules() if isinstance(m, AttentionModule)]
    return [p for p in paths if not any(p.startswith(q + ".") for q in paths)]


def test_every_module_gets_its_panel(rendered, tmp_path):
    # ResNet-20: nine blocks, nine CBAM modules (the excitation figure used to keep 8 of 9 and
    # the spatial figure 4 of 9)
    torch.manual_seed(0)
    model = attnlab.create_model("resnet_cifar", depth=20, width=4, in_chans=1, num_classes=3, attention="cbam",
                                 attention_kwargs={"reduction": 2}).eval()
    modules = _attention_paths(model)
    assert len(modules) == 9
    x, y, raw = _data()
    explain_model(model, x, y, raw, tmp_path, illustration=False)
    for name in ("c_excitation_per_class.png", "d_spatial_maps.png"):
        assert [_panel_titles(rendered[name], p) for p in modules] == [1] * 9, name
        assert overlapping_texts(rendered[name]) == []


def test_more_modules_than_a_figure_holds_go_into_further_figures(rendered, tmp_path, monkeypatch):
    monkeypatch.setattr(figures_module, "PANELS_PER_FIGURE", 4)
    torch.manual_seed(0)
    model = attnlab.create_model("resnet_cifar", depth=20, width=4, in_chans=1, num_classes=3, attention="se",
                                 attention_kwargs={"reduction": 2}).eval()
    x, y, raw = _data()
    paths = explain_model(model, x, y, raw, tmp_path, illustration=False)
    parts = ["c_excitation_per_class.png", "c_excitation_per_class_2.png", "c_excitation_per_class_3.png"]
    assert [p.name for p in paths if p.name.startswith("c_")] == parts
    panels = [sum(_panel_titles(rendered[name], p) for name in parts) for p in _attention_paths(model)]
    assert panels == [1] * 9                       # 4 + 4 + 1, each module once
    assert "(part 2 of 3)" in rendered[parts[1]]._suptitle.get_text()


def test_a_constant_gate_has_no_specificity_and_strict_json(rendered, tmp_path):
    # GC starts with its last convolution at zero: its transform is 0 for every image, so no
    # share of its variance can lie between classes
    torch.manual_seed(0)
    model = attnlab.create_model("resnet_cifar", depth=8, width=4, in_chans=1, num_classes=3, attention="gc",
                                 attention_kwargs={"reduction": 2}).eval()
    x, y, raw = _data()
    explain_model(model, x, y, raw, tmp_path, illustration=False)
    assert overlapping_texts(rendered["d_spatial_maps.png"]) == []   # GC's long signal names

    def no_constant(name):
        raise AssertionError(f"summary.json holds {name}")

    summary = json.loads((tmp_path / "summary.json").read_text(), parse_constant=no_constant)
    assert len(summary["class_specificity"]) == 3
    for record in summary["class_specificity"]:
        assert record["specificity"] is None
        assert record["specificity_note"] == "gate constant over the inputs: specificity undefined"
    titles = [ax.get_title() for ax in rendered["c_excitation_per_class.png"].axes]
    assert all(t.endswith("class specificity undefined (constant gate)") for t in titles)
    assert not any("nan" in t for t in titles)


def test_the_summary_refuses_to_write_nan(tmp_path):
    with pytest.raises(ValueError, match="summary.json"):
        figures_module._write_summary({"x": float("nan")}, tmp_path / "summary.json")
    assert not (tmp_path / "summary.json").exists()


def test_query_difference_by_hand():
    same = torch.tensor([[0.1, 0.2, 0.3, 0.4]]).expand(2, 3, 4).reshape(2, 3, 2, 2)
    assert figures_module.query_difference(same) == 0.0
    # input 0: rows (0.5, 0.5, 0, 0) and (0.5, 0.3, 0.2, 0): largest gap 0.2 at positions 1 and 2,
    # peak 0.5 -> 0.4; input 1: identical rows -> 0; the maximum over inputs is 0.4
    rows = torch.tensor([[[0.5, 0.5, 0.0, 0.0], [0.5, 0.3, 0.2, 0.0]],
                         [[0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25]]]).reshape(2, 2, 2, 2)
    assert figures_module.query_difference(rows) == pytest.approx(0.4)
    assert math.isnan(figures_module.query_difference(rows[:, :1]))
    with pytest.raises(ValueError, match="affinity"):
        figures_module.query_difference(torch.zeros(2, 4))


def _nonlocal_model():
    torch.manual_seed(0)
    return attnlab.create_model("resnet_cifar", depth=8, width=4, in_chans=1, num_classes=3,
                                nonlocal_stages=[2, 3]).eval()


def test_a_nonlocal_block_attending_alike_from_every_query_is_noted(rendered, tmp_path):
    model = _nonlocal_model()
    blocks = [p for p, m in model.named_modules() if isinstance(m, attnlab.attention.NonLocalBlock)]
    with torch.no_grad():
        model.get_submodule(blocks[1]).theta.weight.zero_()   # the query no longer depends on the position
    x, y, raw = _data(size=16)
    explain_model(model, x, y, raw, tmp_path, illustration=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    verdict = {r["module"]: r["query_independent"] for r in summary["affinity"]}
    assert verdict == {blocks[0]: False, blocks[1]: True}
    assert summary["affinity"][1]["max_query_difference"] < 1e-6
    title = rendered["b_nonlocal_affinity.png"]._suptitle.get_text()
    assert f"{blocks[1]}: the same map for every query point" in title and blocks[0] + ":" not in title


def test_the_illustration_can_be_left_out(tmp_path):
    torch.manual_seed(0)
    model = attnlab.create_model("resnet_cifar", depth=8, width=4, in_chans=1, num_classes=3, attention="se",
                                 attention_kwargs={"reduction": 2}).eval()
    x, y, raw = _data()
    paths = explain_model(model, x, y, raw, tmp_path, illustration=False)
    assert "a_seed_picture.png" not in [p.name for p in paths] and not (tmp_path / "a_seed_picture.png").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["figures"] == [p.name for p in paths]
    with pytest.raises(TypeError, match="illustration"):
        explain_model(model, x, y, raw, tmp_path, illustration="no")


# --------------------------------------------------------------------------------------------- class evidence

def test_evidence_rows_take_one_image_per_class_first():
    labels = torch.tensor([2, 2, 0, 1, 0, 1])
    assert evidence_rows(labels, 4) == [2, 3, 0, 1]          # classes 0, 1, 2 first, then the next image
    assert evidence_rows(labels, 2) == [2, 3]
    assert evidence_rows(torch.tensor([1, 1, 1]), 4) == [0, 1, 2]
    with pytest.raises(ValueError, match="rows must be an int >= 1, got 0"):
        evidence_rows(labels, 0)


def test_the_evidence_figure_has_a_row_per_image_and_a_column_per_map(rendered, tmp_path):
    # SE gates have no map over the positions; the non-local block between the blocks of stage 2 has one
    torch.manual_seed(0)
    model = attnlab.create_model("resnet_cifar", depth=8, width=4, in_chans=1, num_classes=3, attention="se",
                                 attention_kwargs={"reduction": 2}, nonlocal_stages=[2]).eval()
    x, y, raw = _data(n=6, size=8)
    maps = evidence_maps(model, x, y)
    name = "f_evidence_layer2_0_nonlocal_affinity.png"
    shapes = {}
    for rows, difference in ((2, False), (3, True)):
        written = evidence_figure(maps, raw, y, ["a", "b", "c"], tmp_path / f"{rows}{difference}", rows, difference)
        assert [p.name for p in written] == [name]
        shapes[rows] = mpimg.imread(written[0]).shape[:2]
    # one more image: a row more; the difference: a column more (a panel is about as high as wide)
    column = shapes[3][1] / 5
    assert shapes[3][0] - shapes[2][0] == pytest.approx(column, rel=0.25)
    assert shapes[3][1] - shapes[2][1] == pytest.approx(column, rel=0.25)
    fig = rendered[name]                                                       # the last: 3 rows
    assert len(fig.axes) == 3 * 5                 # input, module map, Grad-CAM, Ablation-CAM, difference
    assert overlapping_texts(fig) == []
    module_map = maps.maps["layer2.0_nonlocal:affinity"]
    for row, image in enumerate(evidence_rows(y, 3)):
        rho = rank_correlation(maps.maps["grad_cam@layer2.0_nonlocal"][image:image + 1], module_map[image:image + 1])
        assert f"ρ {rho[0]:.2f}," in fig.axes[row * 5 + 2].get_title()


def test_a_model_without_maps_over_the_positions_gets_no_evidence_figure(tmp_path):
    torch.manual_seed(0)
    model = attnlab.create_model("resnet_cifar", depth=8, width=4, in_chans=1, num_classes=3, attention="se",
                                 attention_kwargs={"reduction": 2}).eval()
    x, y, raw = _data(n=4, size=8)
    assert evidence_figure(evidence_maps(model, x, y), raw, y, ["a", "b", "c"], tmp_path) == []
    assert list(tmp_path.iterdir()) == []
