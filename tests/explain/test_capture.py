"""attnlab.capture and override_gates: what is recorded, where, and that nothing leaks outside."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import attnlab
from attnlab.attention import CBAM, EfficientChannelAttention, GlobalContextBlock, SqueezeExcite
from attnlab.attention.base import AttentionModule
from attnlab.explain.capture import Recording, capture, override_gates

C = 16




class QueryProbe(AttentionModule):
    """A stand-in for the affinity modules: records the query points its recorder carries."""

    observables = ("points",)

    def forward(self, x):
        self.check_input(x)
        if self.recorder is not None:
            points = getattr(self.recorder, "query_points", None) or [(0.5, 0.5)]
            self.observe("points", torch.tensor(points).expand(x.shape[0], -1, -1))
        return x


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, C, 3, padding=1),
        nn.Sequential(SqueezeExcite(C, reduction=4), EfficientChannelAttention(C)),
        CBAM(C, reduction=4),
        GlobalContextBlock(C, reduction=4),
        QueryProbe(C),
    )


def _attention_modules(model):
    return [m for m in model.modules() if isinstance(m, AttentionModule)]


def test_capture_records_names_and_shapes_concatenated_over_calls():
    model = _model()
    with attnlab.capture(model) as rec:
        model(torch.randn(2, 3, 7, 5))
        model(torch.randn(3, 3, 7, 5))
    assert isinstance(rec, Recording)
    assert rec.paths() == ["1.0", "1.1", "2", "3", "4"]  # forward order
    assert len(rec) == 5
    assert rec.modules["1.0"] == "SqueezeExcite" and rec.modules["2"] == "CBAM"
    assert rec.modules["3"] == "GlobalContextBlock"
    shapes = {path: {name: tuple(v.shape) for name, v in values.items()} for path, values in rec.items()}
    assert shapes == {
        "1.0": {"gate": (5, C, 1, 1)},
        "1.1": {"gate": (5, C, 1, 1)},
        "2": {"channel_gate": (5, C, 1, 1), "spatial_gate": (5, 1, 7, 5)},
        "3": {"context_weights": (5, 1, 7, 5), "transform": (5, C, 1, 1)},
        "4": {"points": (5, 1, 2)},
    }
    for path, values in rec.items():
        assert set(values) <= set(_model_observables(model, path))
        for value in values.values():
            assert not value.requires_grad and value.device.type == "cpu"
    # softmax pooling weights sum to one per sample; gates lie in (0, 1)
    torch.testing.assert_close(rec["3"]["context_weights"].sum((1, 2, 3)), torch.ones(5))
    assert ((rec["1.0"]["gate"] > 0) & (rec["1.0"]["gate"] < 1)).all()
    assert [c.shape[0] for c in rec.chunks("1.0", "gate")] == [2, 3]


def _model_observables(model, path):
    return dict(model.named_modules())[path].observables


def test_recorded_gate_is_the_one_applied():
    model = _model()
    x = torch.randn(2, 3, 6, 6)
    with capture(model, modules="1.0") as rec:
        model(x)
    se = model[1][0]
    features = model[0](x)
    torch.testing.assert_close(se(features), features * rec["1.0"]["gate"])


def test_nothing_recorded_or_attached_outside_the_context():
    model = _model()
    with capture(model) as rec:
        model(torch.randn(1, 3, 4, 4))
    assert all(m.recorder is None for m in _attention_modules(model))
    before = {p: [c.clone() for c in rec.chunks(p, n)] for p in rec.paths() for n in rec.names(p)}
    model(torch.randn(4, 3, 4, 4))
    after = {p: rec.chunks(p, n) for p in rec.paths() for n in rec.names(p)}
    assert {p: [c.shape for c in v] for p, v in before.items()} == {p: [c.shape for c in v] for p, v in after.items()}
    assert rec["1.0"]["gate"].shape[0] == 1


def test_recorders_removed_after_an_exception():
    model = _model()
    with pytest.raises(RuntimeError, match="boom"):
        with capture(model):
            model(torch.randn(1, 3, 4, 4))
            raise RuntimeError("boom")
    assert all(m.recorder is None for m in _attention_modules(model))


def test_nested_captures_restore_the_outer_recorder():
    model = _model()
    with capture(model) as outer:
        model(torch.randn(1, 3, 4, 4))
        with capture(model, modules=["2"]) as inner:
            model(torch.randn(2, 3, 4, 4))
        model(torch.randn(3, 3, 4, 4))
    assert inner.paths() == ["2"] and inner["2"]["channel_gate"].shape[0] == 2
    assert outer["2"]["channel_gate"].shape[0] == 1 + 3  # the inner capture had taken its place
    assert outer["1.0"]["gate"].shape[0] == 1 + 2 + 3  # not watched by the inner one
    assert all(m.recorder is None for m in _attention_modules(model))


def test_module_patterns_select_paths_and_bad_patterns_fail():
    model = _model()
    with capture(model, modules=["1.*"]) as rec:
        model(torch.randn(1, 3, 4, 4))
    assert rec.paths() == ["1.0", "1.1"]
    with pytest.raises(ValueError, match=r"'layer9\.\*' matches no attention module.*'1\.0'"):
        with capture(model, modules="layer9.*"):
            pass
    assert all(m.recorder is None for m in _attention_modules(model))


def test_query_points_reach_the_modules_and_are_validated():
    model = _model()
    points = [(0.0, 1.0), (0.25, 0.5)]
    with capture(model, query_points=points, modules="4") as rec:
        model(torch.randn(2, 3, 4, 4))
    assert rec.query_points == points
    torch.testing.assert_close(rec["4"]["points"], torch.tensor(points).expand(2, -1, -1))
    for bad in ([(0.5, 1.5)], [(0.5,)], "centre", [], [(True, 0.5)]):
        with pytest.raises(ValueError, match="query"):
            with capture(model, query_points=bad):
                pass


def test_different_map_sizes_stay_available_call_by_call():
    model = _model()
    with capture(model, modules="2") as rec:
        model(torch.randn(1, 3, 4, 4))
        model(torch.randn(1, 3, 6, 5))
    assert rec["2"]["channel_gate"].shape == (2, C, 1, 1)  # same trailing shape: concatenated
    with pytest.raises(ValueError, match=r"different shapes.*rec\.chunks"):
        rec["2"]["spatial_gate"]
    assert [tuple(c.shape) for c in rec.chunks("2", "spatial_gate")] == [(1, 1, 4, 4), (1, 1, 6, 5)]
    with pytest.raises(KeyError, match="'9'"):
        rec["9"]


def test_capture_is_free_of_cost_outside_and_refuses_non_modules():
    assert attnlab.capture is capture
    with pytest.raises(TypeError, match="nn.Module"):
        with capture("not a model"):
            pass


def test_override_gate_one_makes_se_the_identity():
    torch.manual_seed(1)
    se = SqueezeExcite(C, reduction=4)
    model = nn.Sequential(nn.Identity(), se)
    x = torch.randn(2, C, 5, 3)
    assert not torch.allclose(model(x), x)
    with override_gates(model, {"1": {"gate": 1.0}}):
        torch.testing.assert_close(model(x), x, atol=0, rtol=0)
        with capture(model) as rec:  # the computed gate is still recorded, the override applied
            torch.testing.assert_close(model(x), x, atol=0, rtol=0)
    assert rec["1"]["gate"].shape == (2, C, 1, 1) and not torch.allclose(rec["1"]["gate"], torch.ones(1))
    assert se.gate_override is None
    assert not torch.allclose(model(x), x)


def test_override_zero_transform_removes_gc_and_batch_means_freeze_gates():
    torch.manual_seed(2)
    model = _model()
    gc = model[3]
    torch.nn.init.normal_(gc.transform.fc2.weight)  # leave the identity start
    x = torch.randn(4, 3, 5, 5)
    features = model[2](model[1](model[0](x)))
    assert not torch.allclose(gc(features), features)
    with override_gates(model, {"3": {"transform": 0.0}}):
        torch.testing.assert_close(gc(features), features, atol=0, rtol=0)
    with capture(model) as rec:
        model(x)
    means = rec.batch_means(names=["gate"])
    assert set(means) == {"1.0", "1.1"} and means["1.0"]["gate"].shape == (1, C, 1, 1)
    with override_gates(model, means):
        frozen = model[1](model[0](x))
    mean_gate_se, mean_gate_eca = means["1.0"]["gate"], means["1.1"]["gate"]
    torch.testing.assert_close(frozen, model[0](x) * mean_gate_se * mean_gate_eca)


def test_override_gates_rejects_bad_paths_names_and_values_and_restores():
    model = _model()
    with pytest.raises(ValueError, match=r"'0' is not an attention module"):
        with override_gates(model, {"0": {"gate": 1.0}}):
            pass
    with pytest.raises(ValueError, match=r"SqueezeExcite at '1\.0' observes 'gate'; got 'mask'"):
        with override_gates(model, {"1.0": {"mask": 1.0}}):
            pass
    with pytest.raises(TypeError, match="number or a tensor"):
        with override_gates(model, {"1.0": {"gate": "one"}}):
            pass
    with pytest.raises(RuntimeError, match="boom"):
        with override_gates(model, {"1.0": {"gate": 1.0}}):
            raise RuntimeError("boom")
    assert all(m.gate_override is None for m in _attention_modules(model))
