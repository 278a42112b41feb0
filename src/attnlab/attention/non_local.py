"""Non-local block: Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018.

The response at a position is a weighted sum of (embedded) features at all positions (eq. 1-2),
added back to the input through W_z (eq. 6):

    y_i = 1/C(x) * sum_j f(x_i, x_j) g(x_j),      g(x_j) = W_g x_j  (1x1 conv, C -> C/2)
    z_i = x_i + BN(W_z y_i)                        W_z: 1x1 conv C/2 -> C; BN scale starts at 0

In the words of qkv.py (textbook attention): q = theta(x), k = phi(x), v = g(x). The four
instantiations of f and C(x) (section 3.2), selected by `mode`:

    embedded_gaussian  f = exp(theta_i . phi_j),  C = sum_j f  ->  softmax_j(theta_i . phi_j)
    gaussian           f = exp(x_i . x_j),        C = sum_j f  ->  softmax_j(x_i . x_j) (no theta/phi)
    dot_product        f = theta_i . phi_j,       C = N        ->  theta_i . phi_j / N
    concatenation      f = ReLU(w_f^T [theta_i, phi_j]), C = N

N is the number of positions summed over (the key positions, after sub-sampling), so the
dot-product and concatenation responses are averages. theta, phi, g have C/2 channels
(`inner_channels`); with `subsample=True` phi and g are max-pooled 2x2 (stride 2), which cuts the
pairwise work by 4 (section 3.3, "Implementation of Non-local Blocks").

How it is computed (memory linear in H*W where the mathematics allows)
------------------------------------------------------------------------
* softmax modes (embedded Gaussian, Gaussian), `use_sdpa=True` (default):
  torch.nn.functional.scaled_dot_product_attention, whose fused kernels never form the
  (HW x HkWk) matrix. The tokens are made contiguous (N, 1, L, d) tensors: handed the natural
  `flatten(2).transpose(1, 2)` views, SDPA on CPU silently falls back to the math kernel, which
  does form it (measured: ~790 MB instead of ~16 MB extra at 64x64, batch 4, d 32).
* dot product, `use_sdpa=True`: there is no softmax, so the product is associative:
  y = theta (phi^T g) / N, a (d x d) matrix in between; linear in H*W, exact.
* concatenation: ReLU sits between the pair terms, so the (HW x HkWk) matrix must be formed
  (w_f^T [theta_i, phi_j] = w_theta . theta_i + w_phi . phi_j is computed as an outer sum of two
  vectors, but ReLU of it is a genuine pairwise matrix): always the explicit path, quadratic.
* `use_sdpa=False`: the explicit path for every mode (forms the matrix; the reference for the
  test that both paths agree, and what `affinity(x)` returns in full).

Deviations from the paper and the official code (facebookresearch/video-nonlocal-net), and why
------------------------------------------------------------------------------------------------
* `scale`: the paper's embedded Gaussian has no 1/sqrt(d) factor and that is the default
  (`scale=False`); the official code (USE_SCALE) and many re-implementations multiply
  theta . phi by d^-1/2 (`scale=True`), or pass a float. Only meaningful for the softmax modes;
  elsewhere a ValueError.
* Sub-sampling position: the paper adds the max pooling *after* phi and g (default); the official
  code pools the input x *before* the phi and g convolutions (`pool_before_projection=True`;
  cheaper, not equivalent since max does not commute with a linear map).
* Pooling uses ceil_mode, so odd sizes keep their last row/column and a 1-pixel side stays 1.
* 2-D images, not space-time video: the block of the paper is 3-D (T x H x W); this is its
  spatial (C2D-style, T = 1) form.
* Initialisation: PyTorch's defaults for the convolutions (the official code draws N(0, 0.01));
  W_z has no bias (the BN that follows has one; the official conv has a redundant bias).
* The BN after W_z is a plain BatchNorm2d: in training mode it needs more than one value per
  channel (N*H*W > 1), as any BatchNorm.

Observables: 'response' (N, C, H, W) = BN(W_z y), the term added to x (override by 0 to remove
the block); 'affinity' (N, Q, Hk, Wk) = the weights f/C of Q query points (recorder.query_points),
computed only while a recorder is attached, for those Q rows only.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_bool, check_choice
from .base import upcast, AFFINITY, RESPONSE, AttentionModule, Signal, float32_math
from .qkv import attention_scores, check_inner_channels, map_to_tokens, query_token_indices, tokens_to_map

MODES = ("embedded_gaussian", "gaussian", "dot_product", "concatenation")
SOFTMAX_MODES = ("embedded_gaussian", "gaussian")


class NonLocalBlock(AttentionModule):
    """z = x + BN(W_z y), y_i = sum_j f(x_i, x_j) g(x_j) / C(x) (Wang et al. 2018).

    Args:
        channels: C.
        mode: 'embedded_gaussian' (default), 'gaussian', 'dot_product' or 'concatenation'.
        inner_channels: width of theta, phi and g (default C // 2).
        subsample: 2x2 max pooling of phi and g (default True).
        zero_init: BN after W_z starts with scale 0, so the block is the identity (default True).
        use_sdpa: the linear-memory path where the mode allows it (default True).
        scale: False (paper), True (d^-1/2, official code) or a positive float multiplying the
            score theta . phi before the softmax.
        pool_before_projection: pool x before phi and g (official code) instead of after (paper).
    """

    signals = {"response": Signal(RESPONSE, neutral=0.0), "affinity": Signal(AFFINITY)}

    def __init__(self, channels: int, mode: str = "embedded_gaussian", inner_channels: Optional[int] = None,
                 subsample: bool = True, zero_init: bool = True, use_sdpa: bool = True,
                 scale: bool | float = False, pool_before_projection: bool = False):
        super().__init__(channels)
        owner = type(self).__name__
        self.mode = check_choice(owner, "mode", mode, MODES)
        for name, value in (("subsample", subsample), ("zero_init", zero_init), ("use_sdpa", use_sdpa),
                            ("pool_before_projection", pool_before_projection)):
            check_bool(owner, name, value)
        self.inner_channels = d = check_inner_channels("NonLocalBlock", inner_channels, max(1, channels // 2))
        self.subsample = subsample
        self.use_sdpa = use_sdpa
        self.pool_before_projection = pool_before_projection
        embedded = mode != "gaussian"
        self.key_channels = d if embedded else channels
        self.theta = nn.Conv2d(channels, d, 1) if embedded else None
        self.phi = nn.Conv2d(channels, d, 1) if embedded else None
        self.g = nn.Conv2d(channels, d, 1)
        # w_f of the concatenation mode: the first d weights act on theta_i, the last d on phi_j.
        self.concat_project = nn.Linear(2 * d, 1, bias=False) if mode == "concatenation" else None
        self.W_z = nn.Conv2d(d, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        if zero_init:
            nn.init.zeros_(self.bn.weight)
        self.score_scale = self._resolve_scale(scale)

    def _resolve_scale(self, scale) -> float:
        if isinstance(scale, bool):
            if scale and self.mode not in SOFTMAX_MODES:
                raise ValueError(f"NonLocalBlock: scale applies to the softmax modes {SOFTMAX_MODES}, "
                                 f"not to mode {self.mode!r}; got scale={scale!r}")
            return 1.0 / math.sqrt(self.key_channels) if scale else 1.0
        if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"NonLocalBlock: scale must be a bool or a positive float, got {scale!r}")
        if self.mode not in SOFTMAX_MODES:
            raise ValueError(f"NonLocalBlock: scale applies to the softmax modes {SOFTMAX_MODES}, "
                             f"not to mode {self.mode!r}; got scale={scale!r}")
        return float(scale)

    def _pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        if not self.subsample:
            return feature_map
        return F.max_pool2d(feature_map, kernel_size=2, stride=2, ceil_mode=True)

    def _embed(self, x: torch.Tensor):
        """Queries (N, HW, dk), keys (N, L, dk), values (N, L, d) and the key map's (Hk, Wk)."""
        if self.mode == "gaussian":
            query_map = x
            key_map = self._pool(x)
            value_map = self.g(key_map) if self.pool_before_projection else self._pool(self.g(x))
        elif self.pool_before_projection:
            query_map = self.theta(x)
            pooled = self._pool(x)
            key_map, value_map = self.phi(pooled), self.g(pooled)
        else:
            query_map = self.theta(x)
            key_map, value_map = self._pool(self.phi(x)), self._pool(self.g(x))
        key_height, key_width = key_map.shape[-2:]  # unpacked, not tuple(): torch.fx traces an unpacking
        return map_to_tokens(query_map), map_to_tokens(key_map), map_to_tokens(value_map), (key_height, key_width)

    def _pairwise(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """The explicit weights f(x_i, x_j) / C(x): (N, Q, dk) x (N, L, dk) -> (N, Q, L), in float32."""
        with float32_math(queries):
            return self._pairwise_weights(upcast(queries), upcast(keys))

    def _pairwise_weights(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        num_keys = keys.shape[-2]
        if self.mode in SOFTMAX_MODES:
            return (attention_scores(queries, keys, "dot") * self.score_scale).softmax(dim=-1)
        if self.mode == "dot_product":
            return attention_scores(queries, keys, "dot") / num_keys
        w_theta, w_phi = self.concat_project.weight[0].split(self.inner_channels)
        pair_logits = (queries @ w_theta).unsqueeze(-1) + (keys @ w_phi).unsqueeze(-2)
        return F.relu(pair_logits) / num_keys

    def _attend(self, queries, keys, values) -> torch.Tensor:
        """y (N, HW, d) = the weighted sum of the values, by the cheapest exact path allowed; in
        float32 under autocast (the softmax of HW scores loses too much in bf16), cast back."""
        with float32_math(values):
            return self._attend_float(upcast(queries), upcast(keys), upcast(values)).to(values.dtype)

    def _attend_float(self, queries, keys, values) -> torch.Tensor:
        if self.use_sdpa and self.mode in SOFTMAX_MODES:
            # (N, 1, L, d) contiguous tensors: SDPA's fused CPU kernel (linear memory).
            out = F.scaled_dot_product_attention(queries.unsqueeze(1), keys.unsqueeze(1), values.unsqueeze(1),
                                                 scale=self.score_scale)
            return out.squeeze(1)
        if self.use_sdpa and self.mode == "dot_product":
            return queries @ ((keys.transpose(1, 2) @ values) / keys.shape[-2])
        return self._pairwise(queries, keys) @ values

    def affinity(self, x: torch.Tensor) -> torch.Tensor:
        """The full weight matrix f/C (N, H*W, Hk*Wk), explicitly (quadratic memory)."""
        self.check_input(x)
        queries, keys, _, _ = self._embed(x)
        return self._pairwise(queries, keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        height, width = x.shape[-2:]
        queries, keys, values, (key_height, key_width) = self._embed(x)
        if self.recorder is not None:
            rows = query_token_indices(self.recorder, height, width, x.device)
            weights = self._pairwise(queries[:, rows], keys)
            self.observe("affinity", weights.reshape(x.shape[0], -1, key_height, key_width))
        attended = self._attend(queries, keys, values)
        response = self.observe("response", self.bn(self.W_z(tokens_to_map(attended, height, width))))
        return x + response
