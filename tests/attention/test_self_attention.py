"""Self-attention modules: textbook q/k/v (qkv.py), non-local block, bottleneck-transformer MHSA."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnlab.attention import MultiHeadSelfAttention2d, NonLocalBlock, QKVAttention, create_attention
from attnlab.attention.non_local import MODES
from attnlab.attention.qkv import SCORES, attention_scores, attention_weights

C = 8
SIZES = [(1, 1), (1, 7), (6, 1), (5, 3), (7, 9)]


def _factories(zero_init=True):
    out = {f"non_local-{m}": (lambda m=m: NonLocalBlock(C, mode=m, zero_init=zero_init)) for m in MODES}
    out.update({f"qkv-{s}": (lambda s=s: QKVAttention(C, score=s, zero_init=zero_init)) for s in SCORES})
    out["mhsa-relative"] = lambda: MultiHeadSelfAttention2d(C, num_heads=2, zero_init=zero_init,
                                                            max_relative_distance=4)
    out["mhsa-none"] = lambda: MultiHeadSelfAttention2d(C, num_heads=2, pos_embed="none", zero_init=zero_init)
    return out


FACTORIES = _factories()
PERTURBED = _factories(zero_init=False)


class Recorder:
    """A capture stand-in: records what the module observes, at chosen query points."""

    def __init__(self, query_points=None):
        self.query_points = query_points
        self.seen = {}

    def __call__(self, module, name, value):
        self.seen[name] = value.detach().clone()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(FACTORIES))
def test_shape_any_size(name, size):
    torch.manual_seed(0)
    module = PERTURBED[name]()
    x = torch.randn(2, C, *size)
    y = module(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert not torch.allclose(y, x)  # perturbed modules do change the input


@pytest.mark.parametrize("name", list(FACTORIES))
def test_identity_at_init(name):
    torch.manual_seed(1)
    x = torch.randn(2, C, 6, 5)
    torch.testing.assert_close(FACTORIES[name]()(x), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(2)
    module = PERTURBED[name]()
    module(torch.randn(2, C, 5, 6)).square().sum().backward()
    for pname, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("factory", [lambda: NonLocalBlock(C, mode="concatenation"),
                                     lambda: MultiHeadSelfAttention2d(C, num_heads=2)], ids=["non_local", "mhsa"])
def test_zero_bn_scale_lets_gradient_reach_only_that_bn(factory):
    # Everything before the zero-scale BN is multiplied by 0: only the BN's own scale and shift learn
    # at the first step (the scale's gradient is what moves the block away from the identity).
    torch.manual_seed(3)
    module = factory()
    module(torch.randn(2, C, 4, 5)).square().sum().backward()
    for pname, p in module.named_parameters():
        if pname.startswith("bn."):
            assert p.grad.abs().sum() > 0, pname
        else:
            assert p.grad is None or p.grad.abs().sum() == 0, pname


def test_qkv_zero_output_projection_blocks_gradient_to_projections():
    torch.manual_seed(4)
    module = QKVAttention(C)
    module(torch.randn(2, C, 4, 4)).sum().backward()
    assert module.output.weight.grad.abs().sum() > 0
    assert module.query.weight.grad.abs().sum() == 0


@pytest.mark.parametrize("pool_before_projection", [False, True], ids=["pool_after", "pool_before"])
@pytest.mark.parametrize("subsample", [True, False], ids=["subsample", "full"])
@pytest.mark.parametrize("mode", MODES)
def test_non_local_sdpa_and_explicit_paths_agree(mode, subsample, pool_before_projection):
    torch.manual_seed(5)
    module = NonLocalBlock(C, mode=mode, subsample=subsample, zero_init=False,
                           pool_before_projection=pool_before_projection).eval()
    # eval: BN with running statistics (train-mode BN would rescale float32 rounding by 1/std).
    x = (0.5 * torch.randn(2, C, 7, 6)).requires_grad_()
    fast = module(x)
    grad_fast = torch.autograd.grad(fast.square().sum(), x)[0]
    module.use_sdpa = False
    slow = module(x)
    grad_slow = torch.autograd.grad(slow.square().sum(), x)[0]
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad_fast, grad_slow, atol=1e-4, rtol=1e-4)
    weights = module.affinity(x)
    keys = (4 * 3) if subsample else (7 * 6)   # ceil_mode pooling keeps the odd last row
    assert weights.shape == (2, 7 * 6, keys)
    if mode in ("embedded_gaussian", "gaussian"):
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 42))
        assert weights.std() > 1e-3   # not a degenerate (saturated or uniform) test case
    else:
        assert (weights >= 0).all() if mode == "concatenation" else weights.abs().sum() > 0


def test_non_local_sdpa_receives_contiguous_tokens(monkeypatch):
    # Transposed views make CPU SDPA fall back to the quadratic math kernel (see benchmarks/non_local.py).
    calls = []
    original = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        calls.append(all(t.is_contiguous() for t in (q, k, v)))
        return original(q, k, v, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    NonLocalBlock(C)(torch.randn(2, C, 6, 6))
    assert calls == [True]


def test_non_local_scale_switch():
    torch.manual_seed(6)
    x = torch.randn(1, C, 4, 4)
    paper = NonLocalBlock(C, subsample=False)
    scaled = NonLocalBlock(C, subsample=False, scale=True)
    scaled.load_state_dict(paper.state_dict())
    q = paper.theta(x).flatten(2).transpose(1, 2)
    k = paper.phi(x).flatten(2).transpose(1, 2)
    torch.testing.assert_close(paper.affinity(x), (q @ k.transpose(1, 2)).softmax(-1))
    torch.testing.assert_close(scaled.affinity(x), (q @ k.transpose(1, 2) / math.sqrt(C // 2)).softmax(-1))
    with pytest.raises(ValueError, match="scale"):
        NonLocalBlock(C, mode="dot_product", scale=True)


def test_non_local_dot_product_divides_by_number_of_key_positions():
    torch.manual_seed(7)
    module = NonLocalBlock(C, mode="dot_product")
    x = torch.randn(1, C, 4, 6)
    q = module.theta(x).flatten(2).transpose(1, 2)
    k = F.max_pool2d(module.phi(x), 2).flatten(2).transpose(1, 2)
    torch.testing.assert_close(module.affinity(x), q @ k.transpose(1, 2) / 6)


# Hand-computed example: q = [(1, 0), (0, 2)], k = [(1, 1), (2, 0), (0, -1)].
Q = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
K = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [0.0, -1.0]]])
t1, t2, t3 = math.tanh(1), math.tanh(2), math.tanh(3)
HAND_SCORES = {
    "dot": [[1, 2, 0], [2, 0, -2]],
    "scaled_dot": [[1 / math.sqrt(2), 2 / math.sqrt(2), 0], [2 / math.sqrt(2), 0, -2 / math.sqrt(2)]],
    # W swaps the two coordinates: q^T W k = q . (k1, k0).
    "general": [[1, 0, -1], [2, 4, 0]],
    # W_q' = W_k' = I, v_a = (1, -1): tanh(q0 + k0) - tanh(q1 + k1).
    "additive": [[t2 - t1, t3, 2 * t1], [t1 - t3, 0, -t1]],
}
SCORE_PARAMS = {
    "general": {"bilinear_weight": torch.tensor([[0.0, 1.0], [1.0, 0.0]])},
    "additive": {"additive_query_weight": torch.eye(2), "additive_key_weight": torch.eye(2),
                 "additive_vector": torch.tensor([1.0, -1.0])},
}


@pytest.mark.parametrize("score", SCORES)
def test_scoring_functions_hand_computed(score):
    expected = torch.tensor([HAND_SCORES[score]], dtype=torch.float32)
    got = attention_scores(Q, K, score, **SCORE_PARAMS.get(score, {}))
    torch.testing.assert_close(got, expected)
    rows = [[math.exp(s) for s in row] for row in HAND_SCORES[score]]
    expected_weights = torch.tensor([[[e / sum(row) for e in row] for row in rows]])
    torch.testing.assert_close(attention_weights(Q, K, score, **SCORE_PARAMS.get(score, {})), expected_weights)


def test_scoring_function_errors():
    with pytest.raises(ValueError, match="score must be one of"):
        attention_scores(Q, K, "cosine")
    with pytest.raises(ValueError, match=r"bilinear_weight of shape \(2, 2\)"):
        attention_scores(Q, K, "general")
    with pytest.raises(ValueError, match="same d"):
        attention_scores(Q, K[..., :1], "dot")


def test_qkv_module_is_the_textbook_weighted_sum():
    # Identity projections: z_i = x_i + sum_n softmax_n(x_i . x_n / sqrt(2)) x_n, checked by hand.
    module = QKVAttention(2, score="scaled_dot", zero_init=False)
    with torch.no_grad():
        for conv in (module.query, module.key, module.value, module.output):
            conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        module.output.bias.zero_()
    tokens = K[0].tolist()
    x = K[0].T.reshape(1, 2, 1, 3)     # a 1x3 map whose positions are the three keys
    expected = []
    for xi in tokens:
        e = [math.exp((xi[0] * xn[0] + xi[1] * xn[1]) / math.sqrt(2)) for xn in tokens]
        expected.append([xi[c] + sum(w / sum(e) * xn[c] for w, xn in zip(e, tokens)) for c in range(2)])
    torch.testing.assert_close(module(x), torch.tensor(expected).T.reshape(1, 2, 1, 3))


def test_mhsa_same_module_two_resolutions():
    torch.manual_seed(8)
    module = MultiHeadSelfAttention2d(C, num_heads=2, zero_init=False, max_relative_distance=3).eval()
    for size in [(6, 6), (9, 4)]:
        x = torch.randn(2, C, *size)
        y = module(x)
        assert y.shape == x.shape
        module.use_sdpa = False
        torch.testing.assert_close(module(x), y, atol=1e-5, rtol=0)
        module.use_sdpa = True
        torch.testing.assert_close(module.affinity(x).sum(-1), torch.ones(2, 2, size[0] * size[1]))


def test_mhsa_relative_logits_depend_only_on_clipped_offset():
    torch.manual_seed(9)
    module = MultiHeadSelfAttention2d(C, num_heads=2, max_relative_distance=2)
    query = torch.randn(1, 1, 1, C // 2)

    def logit(height, width, query_yx, key_yx):
        rows, cols = torch.tensor([query_yx[0]]), torch.tensor([query_yx[1]])
        return module.relative_logits(query, rows, cols, height, width)[0, 0, 0, key_yx[0] * width + key_yx[1]]

    # Offset (+1, -2) at two resolutions and two places gives the same logit ...
    same = [logit(5, 5, (1, 3), (2, 1)), logit(9, 4, (6, 2), (7, 0))]
    torch.testing.assert_close(same[0], same[1])
    # ... offsets beyond R = 2 are clipped to R, a different offset gives a different logit.
    torch.testing.assert_close(logit(9, 9, (0, 0), (7, 2)), logit(9, 9, (0, 0), (2, 2)))
    assert not torch.allclose(logit(9, 9, (0, 0), (1, 2)), logit(9, 9, (0, 0), (2, 2)))


@pytest.mark.parametrize("name", ["non_local-embedded_gaussian", "qkv-scaled_dot", "mhsa-relative"])
def test_observed_affinity_rows_and_response_override(name):
    torch.manual_seed(10)
    module = PERTURBED[name]().eval()
    x = torch.randn(2, C, 7, 6)
    recorder = Recorder(query_points=[(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)])
    module.recorder = recorder
    y = module(x)
    full = module.affinity(x)
    if full.dim() == 4:            # MHSA: (N, heads, HW, HW), observed as the mean over heads
        full = full.mean(1)
    key_size = (4, 3) if isinstance(module, NonLocalBlock) else (7, 6)
    rows = [0, 3 * 6 + 3, 6 * 6 + 5]   # (0, 0), the centre cell (3, 3) and the last cell (6, 5)
    torch.testing.assert_close(recorder.seen["affinity"], full[:, rows].reshape(2, 3, *key_size))
    torch.testing.assert_close(recorder.seen["response"], y - x)
    module.recorder = None
    module.gate_override = {"response": 0.0}
    torch.testing.assert_close(module(x), x)


def test_default_query_point_is_the_centre():
    module = NonLocalBlock(C, subsample=False)
    module.recorder = Recorder()
    x = torch.randn(1, C, 5, 4)
    module(x)
    torch.testing.assert_close(module.recorder.seen["affinity"], module.affinity(x)[:, [2 * 4 + 2]].reshape(1, 1, 5, 4))
    module.recorder = Recorder(query_points=[(1.5, 0.0)])
    with pytest.raises(ValueError, match="fractions in"):
        module(x)


@pytest.mark.parametrize("name", ["non_local-embedded_gaussian", "qkv-scaled_dot", "mhsa-relative"])
@pytest.mark.parametrize("bad", [(2, C + 1, 4, 4), (C, 4, 4), (2, C, 0, 4)], ids=["channels", "3d", "empty"])
def test_bad_input_names_module_and_shapes(name, bad):
    module = FACTORIES[name]()
    with pytest.raises(ValueError) as info:
        module(torch.randn(*bad))
    message = str(info.value)
    assert type(module).__name__ in message
    assert f"(N, {C}, H, W)" in message and str(tuple(bad)) in message


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="NonLocalBlock: mode"):
        NonLocalBlock(C, mode="softmax")
    with pytest.raises(ValueError, match="inner_channels"):
        NonLocalBlock(C, inner_channels=0)
    with pytest.raises(ValueError, match="QKVAttention: score"):
        QKVAttention(C, score="cosine")
    with pytest.raises(ValueError, match="num_heads"):
        MultiHeadSelfAttention2d(C, num_heads=3)
    with pytest.raises(ValueError, match="pos_embed"):
        MultiHeadSelfAttention2d(C, pos_embed="absolute")


def test_registry_builds_these_modules():
    assert isinstance(create_attention("non_local", C, mode="gaussian"), NonLocalBlock)
    assert isinstance(create_attention("mhsa", C), MultiHeadSelfAttention2d)
    assert isinstance(create_attention("qkv", C, score="additive"), QKVAttention)
