"""Every attention module declares what it observes (`signals`: kind and neutral value of each
name), and its neutral values mean what they claim: put in place of what the module computed,
they give the output of the module removed."""
from __future__ import annotations

import pytest
import torch

from attnlab.attention import create_attention, list_attention
from attnlab.attention.base import AFFINITY, CHANNEL, POOLING, RESPONSE, SPATIAL, WARP, Signal
from attnlab.attention.cbam import ChannelAttention, SpatialAttention
from attnlab.models.ran import ResidualAttentionModule

KINDS = {CHANNEL, SPATIAL, POOLING, AFFINITY, RESPONSE, WARP}
C = 8
# Settings under which no module starts as the identity (so that removing it changes the output).
VARIANTS = {
    "se": {"reduction": 2}, "eca": {}, "cbam": {"reduction": 2},
    "gc": {"reduction": 2, "zero_init": False}, "gc-mul-avg": {"reduction": 2, "fusion": "mul", "pool": "avg"},
    "non_local": {"zero_init": False}, "mhsa": {"num_heads": 2, "zero_init": False},
    "qkv": {"zero_init": False}, "stn": {"zero_init": False},
    "stn-projective": {"zero_init": False, "transform": "projective"},
}


def _build(variant: str):
    torch.manual_seed(0)
    module = create_attention(variant.split("-")[0], C, **VARIANTS[variant]).eval()
    for name, p in module.named_parameters():
        if name.endswith("bn.weight"):          # the residual modules' output BN: away from 0
            p.data.fill_(1.0)
    return module


def _observed(module, x):
    seen = {}
    module.recorder = lambda _module, name, value: seen.__setitem__(name, value.detach())
    try:
        with torch.no_grad():
            module(x)
    finally:
        module.recorder = None
    return seen


def test_the_variants_cover_every_registered_mechanism():
    assert {v.split("-")[0] for v in VARIANTS} == set(list_attention())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_observed_tensor_is_declared_with_its_kind(variant):
    module = _build(variant)
    seen = _observed(module, torch.randn(2, C, 6, 5))
    assert seen and set(seen) == set(module.observables) == set(module.signals)
    for name, signal in module.signals.items():
        assert isinstance(signal, Signal) and signal.kind in KINDS, (variant, name)
    assert any(s.neutral is not None for s in module.signals.values()), variant


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_neutral_values_remove_the_module(variant):
    module = _build(variant)
    x = torch.randn(2, C, 6, 5)
    seen = _observed(module, x)
    with torch.no_grad():
        assert not torch.allclose(module(x), x, atol=1e-3)          # the module does something ...
        module.gate_override = {name: module.signals[name].neutral_for(value) for name, value in seen.items()
                                if module.signals[name].neutral is not None}
        out = module(x)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)             # ... and nothing at its neutral values


@pytest.mark.parametrize("half", [lambda: ChannelAttention(C, reduction=2), lambda: SpatialAttention(C)],
                         ids=["channel", "spatial"])
def test_cbam_halves_alone_declare_their_gate(half):
    torch.manual_seed(0)
    module = half().eval()
    x = torch.randn(2, C, 4, 4)
    seen = _observed(module, x)
    assert set(seen) == set(module.signals)
    module.gate_override = {name: module.signals[name].neutral_for(v) for name, v in seen.items()}
    with torch.no_grad():
        assert torch.equal(module(x), x)


@pytest.mark.parametrize("naive", [False, True], ids=["attention-residual", "naive"])
def test_residual_attention_mask_at_its_neutral_value_leaves_the_trunk(naive):
    torch.manual_seed(0)
    module = ResidualAttentionModule(C, mask_depth=1, naive=naive).eval()
    x = torch.randn(2, C, 6, 6)
    seen = _observed(module, x)
    assert set(seen) == set(module.signals) == {"mask"} and module.signals["mask"].kind == SPATIAL
    module.gate_override = {"mask": module.signals["mask"].neutral_for(seen["mask"])}
    with torch.no_grad():
        torch.testing.assert_close(module(x), module.post(module.trunk(module.pre(x))))


def test_the_soft_mask_branch_observes_nothing():
    branch = ResidualAttentionModule(C, mask_depth=1).mask_branch
    assert branch.signals == {} and branch.observables == ()
