"""SE, ECA, CBAM and GC: shapes, gradients, identity at init, closed-form sizes, errors, switches."""
from __future__ import annotations

import pytest
import torch

from attnlab.attention import (CBAM, ChannelAttention, EfficientChannelAttention, GlobalContextBlock,
                               SpatialAttention, SqueezeExcite, eca_kernel_size)

C = 32


SIZES = [(1, 1), (7, 5), (4, 9), (2, 2)]

FACTORIES = {
    "se": lambda: SqueezeExcite(C, reduction=4),
    "se-max-tanh": lambda: SqueezeExcite(C, reduction=4, pool="max", gate="tanh"),
    "se-relu": lambda: SqueezeExcite(C, reduction=4, gate="relu"),
    "se-unfused": lambda: SqueezeExcite(C, reduction=4, fused=False),
    "eca": lambda: EfficientChannelAttention(C),
    "eca-k5": lambda: EfficientChannelAttention(C, kernel_size=5),
    "cbam": lambda: CBAM(C, reduction=4),
    "cbam-spatial-first": lambda: CBAM(C, reduction=4, order="spatial_first"),
    "cbam-parallel-bn": lambda: CBAM(C, reduction=4, order="parallel", spatial_norm=True, spatial_kernel=3),
    "channel-attention": lambda: ChannelAttention(C, reduction=4),
    "spatial-attention": lambda: SpatialAttention(C),
    "gc": lambda: GlobalContextBlock(C, reduction=4, zero_init=False),
    "gc-mul-avg": lambda: GlobalContextBlock(C, reduction=4, fusion="mul", pool="avg", zero_init=False),
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(FACTORIES))
def test_shape_any_size_and_layout(name, size):
    torch.manual_seed(0)
    module = FACTORIES[name]()
    x = torch.randn(3, C, *size)
    y = module(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    assert not torch.allclose(y, x)  # the module does act on its input
    # channels_last input: same numbers, layout kept
    y_cl = module(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y_cl, y, atol=1e-5, rtol=1e-5)
    if size != (1, 1):
        assert y_cl.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_gradients_reach_every_parameter_and_the_input(name):
    torch.manual_seed(1)
    module = FACTORIES[name]()
    x = torch.randn(4, C, 5, 6, requires_grad=True)
    module(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in module.named_parameters():
        assert p.grad is not None, pname
        if pname == "attention_logits.bias":
            # softmax over positions is unchanged by a constant shift of its logits, so this bias
            # (kept for the official code's 1x1 conv) gets a zero gradient, up to rounding
            assert p.grad.abs().max() < 1e-5, pname
        else:
            assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("gate", ["sigmoid", "tanh", "relu"])
def test_se_fused_path_matches_plain_autograd(gate):
    torch.manual_seed(2)
    fused = SqueezeExcite(C, reduction=8, gate=gate)
    plain = SqueezeExcite(C, reduction=8, gate=gate, fused=False)
    plain.load_state_dict(fused.state_dict())
    x1 = torch.randn(3, C, 5, 7, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y1, y2 = fused(x1), plain(x2)
    torch.testing.assert_close(y1, y2, atol=0, rtol=0)
    grad = torch.randn_like(y1)
    y1.backward(grad)
    y2.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-6, rtol=1e-5)
    for (n, p1), p2 in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, atol=1e-6, rtol=1e-5, msg=n)


def test_eca_fused_path_matches_observed_path():
    """With a capture active ECA takes the plain path; both give the same values and gradients."""
    torch.manual_seed(3)
    eca = EfficientChannelAttention(C)
    x1 = torch.randn(2, C, 4, 3, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y1 = eca(x1)
    y1.sum().backward()
    g1 = eca.conv.weight.grad.clone()
    eca.zero_grad()
    eca.recorder = lambda module, name, value: None
    y2 = eca(x2)
    eca.recorder = None
    y2.sum().backward()
    torch.testing.assert_close(y1, y2, atol=0, rtol=0)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g1, eca.conv.weight.grad, atol=1e-5, rtol=1e-5)


def test_se_computes_the_paper_equations():
    """Eqs. 2-4 written out: s = sigmoid(W2 relu(W1 z + b1) + b2), z = spatial mean, y = s * x."""
    torch.manual_seed(4)
    se = SqueezeExcite(C, reduction=4)
    x = torch.randn(2, C, 3, 5)
    z = x.reshape(2, C, -1).sum(-1) / 15
    s = torch.sigmoid(torch.relu(z @ se.fc1.weight.T + se.fc1.bias) @ se.fc2.weight.T + se.fc2.bias)
    torch.testing.assert_close(se(x), x * s[:, :, None, None])
    # max squeeze and the tanh / relu gates of the ablations
    se_max = SqueezeExcite(C, reduction=4, pool="max", gate="tanh")
    se_max.load_state_dict(se.state_dict())
    zm = x.reshape(2, C, -1).max(-1).values
    sm = torch.tanh(torch.relu(zm @ se.fc1.weight.T + se.fc1.bias) @ se.fc2.weight.T + se.fc2.bias)
    torch.testing.assert_close(se_max(x), x * sm[:, :, None, None])


def test_cbam_orders_compose_the_two_halves():
    torch.manual_seed(5)
    x = torch.randn(2, C, 6, 4)
    blocks = {order: CBAM(C, reduction=4, order=order) for order in ("channel_first", "spatial_first", "parallel")}
    state = blocks["channel_first"].state_dict()
    for block in blocks.values():
        block.load_state_dict(state)
    ca, sa = ChannelAttention(C, reduction=4), SpatialAttention(C)
    ca.load_state_dict(blocks["channel_first"].channel.state_dict())
    sa.load_state_dict(blocks["channel_first"].spatial.state_dict())
    torch.testing.assert_close(blocks["channel_first"](x), sa(ca(x)))
    torch.testing.assert_close(blocks["spatial_first"](x), ca(sa(x)))
    torch.testing.assert_close(blocks["parallel"](x), x * ca.compute_gate(x) * sa.compute_gate(x))
    # Eq. 2: one shared MLP over the average- and max-pooled vectors, summed before the sigmoid
    mlp = lambda v: torch.relu(v @ ca.fc1.weight.T + ca.fc1.bias) @ ca.fc2.weight.T + ca.fc2.bias
    expected = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))
    torch.testing.assert_close(ca.compute_gate(x)[:, :, 0, 0], expected)
    # Eq. 3: [avg; max] over channels -> 7x7 conv -> sigmoid
    pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
    expected = torch.sigmoid(torch.nn.functional.conv2d(pooled, sa.conv.weight, sa.conv.bias, padding=3))
    torch.testing.assert_close(sa.compute_gate(x), expected)


def test_cbam_spatial_norm_switch():
    paper, official = CBAM(C), CBAM(C, spatial_norm=True)
    assert paper.spatial.conv.bias is not None and isinstance(paper.spatial.norm, torch.nn.Identity)
    assert official.spatial.conv.bias is None and isinstance(official.spatial.norm, torch.nn.BatchNorm2d)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gc_is_identity_at_init(layout):
    torch.manual_seed(6)
    gc = GlobalContextBlock(64)
    x = torch.randn(2, 64, 7, 5).contiguous(memory_format=layout)
    torch.testing.assert_close(gc(x), x, atol=1e-6, rtol=0)
    # multiplicative fusion with the same zero start: the constant gate sigmoid(0) = 1/2
    gc_mul = GlobalContextBlock(64, fusion="mul")
    torch.testing.assert_close(gc_mul(x), x / 2, atol=1e-6, rtol=0)


def test_gc_attention_pooling_and_transform_follow_the_paper():
    torch.manual_seed(7)
    gc = GlobalContextBlock(C, reduction=4, zero_init=False)
    x = torch.randn(2, C, 3, 4)
    logits = torch.einsum("nchw,c->nhw", x, gc.attention_logits.weight[0, :, 0, 0]).reshape(2, -1)
    alpha = torch.softmax(logits, dim=1)
    context = torch.einsum("ncs,ns->nc", x.reshape(2, C, -1), alpha)
    t = gc.transform
    hidden = torch.relu(torch.nn.functional.layer_norm(context @ t.fc1.weight.T + t.fc1.bias, (gc.hidden_channels,),
                                                       t.norm.weight, t.norm.bias))
    term = hidden @ t.fc2.weight.T + t.fc2.bias
    torch.testing.assert_close(gc(x), x + term[:, :, None, None], atol=1e-5, rtol=1e-5)


def test_eca_kernel_sizes_follow_the_formula():
    # k = t if t odd else t + 1, t = int(|log2(C) / 2 + 1 / 2|):
    #   C=64:   log2 = 6,  6/2 + 0.5 = 3.5 -> t = 3 (odd)  -> 3
    #   C=256:  log2 = 8,  8/2 + 0.5 = 4.5 -> t = 4 (even) -> 5
    #   C=512:  log2 = 9,  9/2 + 0.5 = 5.0 -> t = 5 (odd)  -> 5
    #   C=1024: log2 = 10, 10/2 + 0.5 = 5.5 -> t = 5 (odd) -> 5
    #   C=2048: log2 = 11, 11/2 + 0.5 = 6.0 -> t = 6 (even) -> 7
    expected = {64: 3, 256: 5, 512: 5, 1024: 5, 2048: 7}
    for channels, k in expected.items():
        assert eca_kernel_size(channels) == k, channels
        eca = EfficientChannelAttention(channels)
        assert eca.kernel_size == k and eca.conv.weight.numel() == k
    # other constants: gamma=1, b=0 on C=64: t = int(6) = 6 -> 7; C=4 (paper formula, no clamp): 1
    assert eca_kernel_size(64, gamma=1, b=0) == 7
    assert eca_kernel_size(4) == 1
    assert EfficientChannelAttention(64, kernel_size=9).kernel_size == 9


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_closed_forms():
    c, r = 256, 16
    h = c // r  # 16
    # SE: W1 (h x C) + b1 (h) + W2 (C x h) + b2 (C) = 2 C h + h + C = 8192 + 16 + 256
    assert _count(SqueezeExcite(c)) == 2 * c * h + h + c == 8464
    # CBAM: the same MLP, plus the 7x7 conv over 2 maps with a bias (paper, no BN): 2*49 + 1
    assert _count(CBAM(c)) == (2 * c * h + h + c) + (2 * 7 * 7 + 1) == 8563
    # with the official BN: conv without bias (98) + BN scale and shift (2)
    assert _count(CBAM(c, spatial_norm=True)) == (2 * c * h + h + c) + (2 * 7 * 7 + 2) == 8564
    # GC: W_k (C + 1) + W_v1 (C h + h) + LayerNorm (2 h) + W_v2 (h C + C)
    assert _count(GlobalContextBlock(c)) == (c + 1) + (c * h + h) + 2 * h + (h * c + c) == 8753
    # GC with average pooling has no W_k
    assert _count(GlobalContextBlock(c, pool="avg")) == (c * h + h) + 2 * h + (h * c + c)
    # ECA: k weights only, k = 5 for C = 256
    assert _count(EfficientChannelAttention(c)) == 5


def test_bottleneck_width_floor_and_minimum():
    assert SqueezeExcite(16, reduction=16).hidden_channels == 1
    assert SqueezeExcite(8, reduction=4.5).hidden_channels == 1  # floor(8 / 4.5) = 1
    for module in (SqueezeExcite, GlobalContextBlock, CBAM):  # C / r < 1: an error, not a silent 1 unit
        with pytest.raises(ValueError, match=r"reduction 16 is larger than the 8 channels"):
            module(8, reduction=16)
    assert SqueezeExcite(64, reduction=16, min_channels=8).hidden_channels == 8  # timm-like rounding
    assert GlobalContextBlock(100, reduction=16).hidden_channels == 6
    assert CBAM(48, reduction=8).channel.hidden_channels == 6


ERROR_FACTORIES = {"se": lambda: SqueezeExcite(C), "eca": lambda: EfficientChannelAttention(C),
                   "cbam": lambda: CBAM(C), "gc": lambda: GlobalContextBlock(C)}


@pytest.mark.parametrize("bad_shape", [(2, C + 1, 4, 4), (2, C, 4), (2, C, 0, 4), (2, C, 4, 0)])
@pytest.mark.parametrize("name", list(ERROR_FACTORIES))
def test_bad_input_names_module_expected_and_received_shape(name, bad_shape):
    module = ERROR_FACTORIES[name]()
    with pytest.raises(ValueError) as err:
        module(torch.randn(bad_shape))
    message = str(err.value)
    assert type(module).__name__ in message
    assert f"(N, {C}, H, W)" in message
    assert str(tuple(bad_shape)) in message


@pytest.mark.parametrize("factory, words", [
    (lambda: SqueezeExcite(C, reduction=0), ["SqueezeExcite", "reduction", "0"]),
    (lambda: SqueezeExcite(C, pool="min"), ["SqueezeExcite", "pool", "'min'", "'avg'", "'max'"]),
    (lambda: SqueezeExcite(C, gate="softmax"), ["SqueezeExcite", "gate", "'softmax'", "'sigmoid'"]),
    (lambda: SqueezeExcite(0), ["SqueezeExcite", "channels", "0"]),
    (lambda: EfficientChannelAttention(C, kernel_size=4), ["EfficientChannelAttention", "odd", "4"]),
    (lambda: EfficientChannelAttention(C, gamma=0), ["gamma", "0"]),
    (lambda: CBAM(C, order="sideways"), ["CBAM", "order", "'sideways'", "'channel_first'"]),
    (lambda: CBAM(C, spatial_kernel=6), ["SpatialAttention", "odd", "6"]),
    (lambda: GlobalContextBlock(C, fusion="concat"), ["GlobalContextBlock", "fusion", "'concat'", "'add'"]),
    (lambda: GlobalContextBlock(C, pool="max"), ["GlobalContextBlock", "pool", "'max'", "'attention'"]),
    (lambda: GlobalContextBlock(C, min_channels=0), ["GlobalContextBlock", "min_channels", "0"]),
    (lambda: GlobalContextBlock(C, norm_eps=0), ["GlobalContextBlock", "norm_eps", "positive", "0"]),
    (lambda: CBAM(C, spatial_norm=True, spatial_norm_momentum=1.5),
     ["SpatialAttention", "norm_momentum", "[0, 1]", "1.5"]),
])
def test_bad_arguments_raise_early_with_the_value(factory, words):
    with pytest.raises(ValueError) as err:
        factory()
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_fused_se_refuses_double_backward_and_plain_supports_it():
    torch.manual_seed(8)
    x = torch.randn(2, C, 3, 3, requires_grad=True)
    fused = SqueezeExcite(C, reduction=4)
    (g,) = torch.autograd.grad(fused(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()
    plain = SqueezeExcite(C, reduction=4, fused=False)
    (g,) = torch.autograd.grad(plain(x).square().sum(), x, create_graph=True)
    g.sum().backward()
    assert plain.fc1.weight.grad is not None


def test_no_grad_gives_the_values_of_the_fused_training_path():
    torch.manual_seed(9)
    se, x = SqueezeExcite(C, reduction=4), torch.randn(2, C, 4, 4)
    y = se(x.requires_grad_())  # fused path
    assert y.grad_fn is not None
    with torch.no_grad():
        torch.testing.assert_close(se(x), y.detach(), atol=0, rtol=0)


def assert_lean_path_matches_observed_path(module):
    """Run `module` on a channels_last map without a capture (its lean backward) and with a
    recorder set (plain autograd): same outputs, input and parameter gradients; the lean path's
    input gradient stays channels_last."""
    x1 = torch.randn(3, C, 6, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    grad = torch.randn(3, C, 6, 5)
    y1 = module(x1)
    y1.backward(grad)
    lean_grads = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    module.recorder = lambda mod, name, value: None
    y2 = module(x2)
    module.recorder = None
    y2.backward(grad)
    torch.testing.assert_close(y1, y2, atol=0, rtol=0)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=1e-5)
    assert x1.grad.is_contiguous(memory_format=torch.channels_last)
    for g1, (name, p) in zip(lean_grads, module.named_parameters()):
        assert p.grad.abs().sum() > 0, name
        torch.testing.assert_close(g1, p.grad, atol=1e-5, rtol=1e-5, msg=name)
    return y1


@pytest.mark.parametrize("factory", [lambda: CBAM(C, reduction=4), lambda: CBAM(C, reduction=4, order="spatial_first"),
                                     lambda: ChannelAttention(C, reduction=4), lambda: SpatialAttention(C)],
                         ids=["cbam", "cbam-spatial-first", "channel", "spatial"])
def test_cbam_lean_backward_matches_the_observed_plain_path(factory):
    """No capture: gate_scale's one-pass backward; with a recorder: plain autograd. Same numbers."""
    torch.manual_seed(10)
    assert_lean_path_matches_observed_path(factory())


def test_gate_gradient_in_chunks_equals_the_whole_product_sum():
    from attnlab.attention._gating import _product_sum

    torch.manual_seed(11)
    a, b = torch.randn(7, 5, 4, 3), torch.randn(7, 5, 4, 3)
    for over_channels, dims in ((False, (2, 3)), (True, (1,))):
        whole = (a * b).sum(dims, keepdim=True)
        torch.testing.assert_close(_product_sum(a, b, over_channels, chunk_elements=100), whole)  # 2 samples a chunk
        torch.testing.assert_close(_product_sum(a, b, over_channels), whole)
