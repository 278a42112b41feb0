"""Textbook attention over the positions of a feature map: queries, keys, values.

The reference the other self-attention modules (non_local.py, mhsa.py) are explained against.

The idea in three lines
-----------------------
Every position i of the map asks a question, its *query* q_i; every position n offers a *key*
k_n (what it is about) and a *value* v_n (what it would hand over). Position i receives the
average of the values, weighted by how well its query matches each key:

    w_in = softmax_n( f(q_i, k_n) )          (the weights of one query sum to 1 over n)
    y_i  = sum_n w_in v_n
    z_i  = x_i + W_o y_i                      (the output of QKVAttention)

Here q = W_q x, k = W_k x and v = W_v x are learned 1x1 convolutions (linear maps applied at
each position), so a position attends to another because of *what it contains*, wherever it
is: the operation is global and content-based, unlike a convolution (local, fixed weights).

The scoring function f (Luong et al. 2015, "Effective approaches to attention-based neural
machine translation", eq. 8; Bahdanau et al. 2015, appendix A.1.2; Vaswani et al. 2017,
"Attention is all you need", eq. 1):

    dot          f(q, k) = q . k
    scaled_dot   f(q, k) = q . k / sqrt(d)    d = the query/key width. For random q, k of
                                              unit variance, q . k has variance d; dividing by
                                              sqrt(d) keeps the softmax out of saturation.
    general      f(q, k) = q^T W k            a learned d x d matrix W (bilinear; Luong)
    additive     f(q, k) = v_a^T tanh(W_q' q + W_k' k)
                                              a one-hidden-layer network on the pair
                                              (Bahdanau's "concat" score; hidden width a = d)

How the other modules map onto this file
----------------------------------------
* Non-local block (Wang et al. 2018): q = theta(x), k = phi(x), v = g(x); embedded Gaussian is
  `dot` with a softmax, Gaussian is `dot` on x itself, dot product drops the softmax and
  divides by the number of positions; W_o is W_z followed by BN.
* Bottleneck-transformer MHSA (Srinivas et al. 2021): `scaled_dot` per head, plus a relative
  position term q . r added to the score before the softmax.

Cost: the explicit weight matrix has (H*W)^2 entries per image (times the hidden width a for
the additive score), so this module is for small maps and for teaching; NonLocalBlock computes
the same weighted sum without forming the matrix (scaled_dot_product_attention).

Deviations and choices (none of these papers defines an image module of exactly this form)
--------------------------------------------------------------------------------------------
* Residual form and identity at init: the output is x + W_o y with W_o (a 1x1 conv) zero-
  initialised (weight and bias), so the module is the identity when created and can be dropped
  into a trained network. `zero_init=False` gives W_o PyTorch's default initialisation.
  Consequence: at init no gradient reaches W_q, W_k, W_v (they sit behind a zero W_o).
* The `general` matrix W starts as the identity (so `general` starts equal to `dot`) and the
  `additive` parameters W_q', W_k' (no bias) and v_a start from PyTorch's default / N(0, 1/a).
  W and W_q', W_k' are mathematically redundant with W_q and W_k (a product of linear maps is a
  linear map); they are kept because they are the textbook definitions of these scores.
* The query, key and value convolutions have no bias (q = W_q x as written above).
* inner_channels (d) defaults to `channels`.

Observables (explain/capture.py): 'response' (N, C, H, W) = W_o y, the term added to x (override
it by 0 to remove the attention); 'affinity' (N, Q, H, W) = the weights w_in of Q query points
(`recorder.query_points`, fractions (fy, fx) of the height and width; default the centre).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from ..checks import check_choice, check_positive_int
from .base import upcast, AFFINITY, RESPONSE, AttentionModule, Signal, float32_math

SCORES = ("dot", "scaled_dot", "general", "additive")
DEFAULT_QUERY_POINTS = ((0.5, 0.5),)


def attention_scores(q: torch.Tensor, k: torch.Tensor, score: str = "scaled_dot", *,
                     bilinear_weight: Optional[torch.Tensor] = None,
                     additive_query_weight: Optional[torch.Tensor] = None,
                     additive_key_weight: Optional[torch.Tensor] = None,
                     additive_vector: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The raw scores f(q_i, k_n), before the softmax: (..., Q, d) x (..., K, d) -> (..., Q, K).

    Leading dimensions (batch, heads) broadcast. `score` is one of SCORES; 'general' needs
    `bilinear_weight` (d, d); 'additive' needs `additive_query_weight` (a, d),
    `additive_key_weight` (a, d) and `additive_vector` (a,).
    """
    check_choice("attention_scores", "score", score, SCORES)
    if not isinstance(q, torch.Tensor) or not isinstance(k, torch.Tensor):
        raise TypeError(f"attention_scores: q and k must be tensors, got {type(q).__name__}, {type(k).__name__}")
    if q.dim() < 2 or k.dim() < 2 or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"attention_scores: expected q (..., Q, d) and k (..., K, d) with the same d, "
                         f"got q {tuple(q.shape)} and k {tuple(k.shape)}")
    d = q.shape[-1]
    if score == "dot":
        return q @ k.transpose(-1, -2)
    if score == "scaled_dot":
        return (q @ k.transpose(-1, -2)) / math.sqrt(d)
    if score == "general":
        if bilinear_weight is None or tuple(bilinear_weight.shape) != (d, d):
            got = None if bilinear_weight is None else tuple(bilinear_weight.shape)
            raise ValueError(f"attention_scores: 'general' needs bilinear_weight of shape ({d}, {d}), got {got}")
        return (q @ bilinear_weight) @ k.transpose(-1, -2)
    # additive: v_a^T tanh(W_q' q_i + W_k' k_n), a pairwise (Q, K, a) tensor.
    parts = (additive_query_weight, additive_key_weight, additive_vector)
    if any(p is None for p in parts):
        raise ValueError("attention_scores: 'additive' needs additive_query_weight, additive_key_weight "
                         "and additive_vector")
    a = additive_vector.shape[0]
    if additive_vector.dim() != 1 or tuple(additive_query_weight.shape) != (a, d) \
            or tuple(additive_key_weight.shape) != (a, d):
        raise ValueError(f"attention_scores: 'additive' expects weights ({a}, {d}), ({a}, {d}) and vector ({a},), "
                         f"got {tuple(additive_query_weight.shape)}, {tuple(additive_key_weight.shape)} "
                         f"and {tuple(additive_vector.shape)}")
    query_part = q @ additive_query_weight.T          # (..., Q, a)
    key_part = k @ additive_key_weight.T              # (..., K, a)
    hidden = torch.tanh(query_part.unsqueeze(-2) + key_part.unsqueeze(-3))  # (..., Q, K, a)
    return hidden @ additive_vector


def attention_weights(q: torch.Tensor, k: torch.Tensor, score: str = "scaled_dot", **score_params) -> torch.Tensor:
    """w_in = softmax_n f(q_i, k_n): (..., Q, d) x (..., K, d) -> (..., Q, K), rows summing to 1.

    The pure function the explanations call; see `attention_scores` for `score` and its
    parameters.
    """
    return attention_scores(q, k, score, **score_params).softmax(dim=-1)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H*W, C), contiguous (row-major positions: index = y * W + x).

    Contiguous on purpose: scaled_dot_product_attention on CPU falls back to the quadratic-
    memory math kernel when handed the transposed view.
    """
    return x.flatten(2).transpose(1, 2).contiguous()


def tokens_to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, H*W, C) -> (N, C, H, W); the inverse of `map_to_tokens`."""
    n, _, c = tokens.shape
    return tokens.transpose(1, 2).reshape(n, c, height, width)


def query_positions(recorder, height: int, width: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns (two int64 tensors of length Q) of the recorder's query points.

    `recorder.query_points` (default the centre) is a list of (fy, fx) fractions in [0, 1] of
    the height and width; each is mapped to the position whose cell contains it.
    """
    points = getattr(recorder, "query_points", None)
    points = DEFAULT_QUERY_POINTS if points is None else points
    rows, cols = [], []
    for point in points:
        if not isinstance(point, Sequence) or len(point) != 2 \
                or not all(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in point):
            raise ValueError(f"query_points: expected (fy, fx) pairs of fractions in [0, 1], got {point!r}")
        fy, fx = point
        rows.append(min(int(fy * height), height - 1))
        cols.append(min(int(fx * width), width - 1))
    if not rows:
        raise ValueError("query_points: expected at least one (fy, fx) pair, got an empty list")
    return (torch.tensor(rows, dtype=torch.long, device=device),
            torch.tensor(cols, dtype=torch.long, device=device))


def query_token_indices(recorder, height: int, width: int, device=None) -> torch.Tensor:
    """Token indices (y * W + x) of the recorder's query points; see `query_positions`."""
    rows, cols = query_positions(recorder, height, width, device)
    return rows * width + cols


def check_inner_channels(module_name: str, inner_channels, default: int) -> int:
    """`inner_channels` validated (a positive int), or `default` when None."""
    if inner_channels is None:
        return default
    return check_positive_int(module_name, "inner_channels", inner_channels)


class QKVAttention(AttentionModule):
    """z = x + W_o sum_n softmax_n(f(q_i, k_n)) v_n over all positions; f from SCORES.

    Args:
        channels: C, the input and output channels.
        score: 'scaled_dot' (default), 'dot', 'general' or 'additive' (see the module docstring).
        inner_channels: d, the width of q, k and v (default C).
        zero_init: W_o starts at zero, so the module is the identity at init (default True).
    """

    signals = {"response": Signal(RESPONSE, neutral=0.0), "affinity": Signal(AFFINITY)}

    def __init__(self, channels: int, score: str = "scaled_dot", inner_channels: Optional[int] = None,
                 zero_init: bool = True):
        super().__init__(channels)
        self.score = check_choice(type(self).__name__, "score", score, SCORES)
        self.inner_channels = d = check_inner_channels("QKVAttention", inner_channels, channels)
        self.query = nn.Conv2d(channels, d, 1, bias=False)
        self.key = nn.Conv2d(channels, d, 1, bias=False)
        self.value = nn.Conv2d(channels, d, 1, bias=False)
        self.bilinear_weight = nn.Parameter(torch.eye(d)) if score == "general" else None
        if score == "additive":
            self.additive_query = nn.Linear(d, d, bias=False)
            self.additive_key = nn.Linear(d, d, bias=False)
            self.additive_vector = nn.Parameter(torch.randn(d) / math.sqrt(d))
        else:
            self.additive_query = self.additive_key = self.additive_vector = None
        self.output = nn.Conv2d(d, channels, 1)
        if zero_init:
            nn.init.zeros_(self.output.weight)
            nn.init.zeros_(self.output.bias)

    def score_params(self) -> dict:
        """The learned parameters of the scoring function, as `attention_scores` takes them."""
        if self.score == "general":
            return {"bilinear_weight": self.bilinear_weight}
        if self.score == "additive":
            return {"additive_query_weight": self.additive_query.weight,
                    "additive_key_weight": self.additive_key.weight,
                    "additive_vector": self.additive_vector}
        return {}

    def affinity(self, x: torch.Tensor) -> torch.Tensor:
        """The full weight matrix w (N, H*W, H*W): row i = the weights of query position i."""
        self.check_input(x)
        return self._weights(x)

    def _weights(self, x: torch.Tensor) -> torch.Tensor:
        """(N, HW, HW) softmax weights, in float32 under autocast."""
        queries, keys = map_to_tokens(self.query(x)), map_to_tokens(self.key(x))
        with float32_math(x):
            return attention_weights(upcast(queries), upcast(keys), self.score, **self.score_params())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        height, width = x.shape[-2:]
        weights = self._weights(x)                                    # (N, HW, HW)
        if self.recorder is not None:
            rows = query_token_indices(self.recorder, height, width, x.device)
            self.observe("affinity", weights[:, rows].reshape(x.shape[0], -1, height, width))
        attended = weights.to(x.dtype) @ map_to_tokens(self.value(x))   # (N, HW, d)
        response = self.observe("response", self.output(tokens_to_map(attended, height, width)))
        return x + response
