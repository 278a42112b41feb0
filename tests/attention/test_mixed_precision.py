"""Under autocast the convolutions run in bf16, but the small, sensitive attention math (gates,
softmax weights, the spatial transformer's theta and sampling) stays in float32, and each module
hands back a map in the input's dtype."""
import pytest
import torch
import torch.nn.functional as F

import attnlab

# attention -> the observed tensors that must be computed in float32 under autocast
SENSITIVE = {
    "se": ["gate"], "eca": ["gate"], "cbam": ["channel_gate", "spatial_gate"],
    "gc": ["context_weights", "transform"], "non_local": ["affinity"], "mhsa": ["affinity"],
    "qkv": ["affinity"], "stn": ["theta"],
}


def test_every_registered_attention_is_covered():
    assert sorted(SENSITIVE) == sorted(attnlab.list_attention())


@pytest.mark.parametrize("name", sorted(SENSITIVE))
def test_attention_math_stays_float32_under_bf16_autocast(name):
    torch.manual_seed(0)
    module = attnlab.create_attention(name, 16)
    x = torch.randn(4, 16, 8, 8)
    reference = module(x)
    seen = {}
    module.recorder = lambda m, signal, value: seen.setdefault(signal, value)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = module(x.bfloat16())
    finally:
        module.recorder = None
    for signal in SENSITIVE[name]:
        assert seen[signal].dtype == torch.float32, (name, signal, seen[signal].dtype)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("name", ["non_local", "mhsa"])
def test_fused_attention_path_runs_in_float32_under_autocast(name, monkeypatch):
    """Outside a capture the non-local blocks take SDPA; its inputs must be float32 too."""
    dtypes = []
    original = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        dtypes.append((q.dtype, k.dtype, v.dtype))
        return original(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    module = attnlab.create_attention(name, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(torch.randn(2, 16, 6, 6).bfloat16())
    assert dtypes and all(d == (torch.float32,) * 3 for d in dtypes), dtypes
    assert out.dtype == torch.bfloat16


def test_gates_stay_float32_inside_a_model_trained_under_autocast():
    """A whole SE-ResNet step under bf16 autocast: the loss falls and every gate is float32."""
    torch.manual_seed(0)
    model = attnlab.create_model("resnet_cifar", depth=8, width=16, attention="se", num_classes=3)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 3, (8,))
    gates = []
    for m in model.modules():
        if isinstance(m, attnlab.attention.base.AttentionModule):
            m.recorder = lambda mod, signal, value: gates.append(value.dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x).float(), y)
    loss.backward()
    assert gates and set(gates) == {torch.float32}
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
