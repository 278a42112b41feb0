"""Multi-head self-attention over the positions of a feature map, bottleneck-transformer style.

Srinivas, Lin, Parmar, Shlens, Abbeel, Vaswani, "Bottleneck Transformers for Visual Recognition",
CVPR 2021 (BoTNet), Figure 4: all-to-all multi-head self-attention over the H*W positions with
2-D relative position logits. Per head h (d = C / heads):

    q, k, v = W_q x, W_k x, W_v x                       (one 1x1 conv, C -> 3C, split by head)
    logit(i, j) = q_i . k_j / sqrt(d)  +  q_i . (r^H[y_j - y_i] + r^W[x_j - x_i])
    y_i = sum_j softmax_j(logit(i, j)) v_j
    z   = x + BN(W_o concat_h(y))                       (this module's residual wrapper, below)

In the words of qkv.py: `scaled_dot` scores per head, plus a content-position term q . r, where r
depends only on the offset between key and query (Shaw et al. 2018; Bello et al. 2019 in 2-D).
r^H and r^W are learned d-wide embeddings of a row offset and a column offset, shared by the
heads (as in the official BoTNet code); the relative term is not divided by sqrt(d) (also as
there).

Any resolution (no fixed feat_size)
-----------------------------------
The official code sizes its tables for one feature size (2H - 1 and 2W - 1 rows). Here each
table holds the offsets -R..R, R = `max_relative_distance` (default 63: exact for maps up to 64x64,
e.g. the 64x64 c5 map of BoTNet's 1024x1024 detection input), and for the given H, W the
embeddings are *looked up* by offset; offsets beyond R are clipped to +-R (Shaw et al. 2018:
"relative positions beyond k are clipped"), so distant positions share the edge embedding. The
same module therefore runs at 7x7, 14x14 or 9x23, with identical logits for identical offsets,
which interpolating a table between sizes would not give.

Computation: scaled_dot_product_attention with the relative logits as an additive float bias
(attn_mask). The bias is an (N, heads, HW, HW) tensor, so with `pos_embed='relative'` memory is
quadratic in H*W, like the attention matrix of the paper; `pos_embed='none'` has no bias and
runs in SDPA's fused linear-memory kernel. `use_sdpa=False` computes the weights explicitly (the
reference for the test that both paths agree).

Deviations from the paper, and why
----------------------------------
* BoTNet's MHSA *replaces* the 3x3 conv inside a ResNet bottleneck and has no output projection
  (the block's next 1x1 conv plays that part). attnlab inserts attention modules into existing
  networks, so this module is a residual block of its own: z = x + BN(W_o y), with W_o a 1x1
  conv and a BN whose scale starts at 0 (`zero_init=True`: identity at init, as the last BN of a
  ResNet/BoTNet block is zero-initialised). Consequence: at init, gradients reach only that BN.
* Relative tables sized for a maximum offset with clipping (above), instead of a fixed size.
* `qkv_bias=False` by default (the official code has no bias in the q/k/v projection).
* Initialisation: the relative tables N(0, d^-1/2) as in the official code; convolutions take
  PyTorch's defaults.

Observables: 'response' (N, C, H, W) = BN(W_o y), the term added to x; 'affinity' (N, Q, H, W):
the attention weights of Q query points (recorder.query_points), averaged over the heads,
computed only while a recorder is attached, for those Q rows only.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_choice, check_int, check_positive_int
from .base import upcast, AFFINITY, RESPONSE, AttentionModule, Signal, float32_math
from .qkv import query_positions

POSITION_EMBEDDINGS = ("relative", "none")


class MultiHeadSelfAttention2d(AttentionModule):
    """z = x + BN(W_o MHSA(x)); MHSA with 2-D relative position logits at any H, W (BoTNet).

    Args:
        channels: C, divisible by num_heads.
        num_heads: attention heads (default 4, as in BoTNet).
        qkv_bias: bias in the q/k/v 1x1 conv (default False).
        pos_embed: 'relative' (default) or 'none'.
        zero_init: BN after W_o starts with scale 0 (identity at init; default True).
        max_relative_distance: R, the largest row/column offset with its own embedding.
        use_sdpa: fused scaled_dot_product_attention (default) or the explicit weight matrix.
    """

    signals = {"response": Signal(RESPONSE, neutral=0.0), "affinity": Signal(AFFINITY)}

    def __init__(self, channels: int, num_heads: int = 4, qkv_bias: bool = False, pos_embed: str = "relative",
                 zero_init: bool = True, max_relative_distance: int = 63, use_sdpa: bool = True):
        super().__init__(channels)
        owner = type(self).__name__
        check_positive_int(owner, "num_heads", num_heads)
        if channels % num_heads != 0:
            raise ValueError(f"{owner}: num_heads must be a positive int dividing channels={channels}, "
                             f"got {num_heads!r}")
        check_choice(owner, "pos_embed", pos_embed, POSITION_EMBEDDINGS)
        check_int(owner, "max_relative_distance", max_relative_distance, 0)
        self.num_heads = num_heads
        self.head_channels = d = channels // num_heads
        self.pos_embed = pos_embed
        self.max_relative_distance = max_relative_distance
        self.use_sdpa = bool(use_sdpa)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=qkv_bias)
        if pos_embed == "relative":
            table_rows = 2 * max_relative_distance + 1
            self.height_offsets = nn.Parameter(torch.randn(table_rows, d) * d ** -0.5)
            self.width_offsets = nn.Parameter(torch.randn(table_rows, d) * d ** -0.5)
        else:
            self.height_offsets = self.width_offsets = None
        self.W_o = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        if zero_init:
            nn.init.zeros_(self.bn.weight)

    def _split_heads(self, x: torch.Tensor):
        """q, k, v as contiguous (N, heads, HW, d) tensors (contiguous: SDPA's fused CPU kernel)."""
        n, _, height, width = x.shape
        qkv = self.qkv(x).reshape(n, 3, self.num_heads, self.head_channels, height * width)
        queries, keys, values = qkv.unbind(1)  # unpacked: torch.fx traces an unpacking, not a loop
        return [t.transpose(-1, -2).contiguous() for t in (queries, keys, values)]

    def _offset_embeddings(self, table: torch.Tensor, query_coords: torch.Tensor, size: int) -> torch.Tensor:
        """(Q, size, d): the embedding of offset (key - query) along one axis, clipped to +-R."""
        key_coords = torch.arange(size, device=query_coords.device)
        offsets = (key_coords[None, :] - query_coords[:, None]).clamp(-self.max_relative_distance,
                                                                     self.max_relative_distance)
        return table[offsets + self.max_relative_distance]

    def relative_logits(self, queries: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                        height: int, width: int) -> torch.Tensor:
        """q_i . (r^H[y_j - y_i] + r^W[x_j - x_i]) for queries (N, heads, Q, d) at (rows, cols):
        (N, heads, Q, height * width)."""
        along_height = torch.einsum("nhqd,qkd->nhqk", queries,
                                    self._offset_embeddings(self.height_offsets, rows, height))
        along_width = torch.einsum("nhqd,qkd->nhqk", queries,
                                   self._offset_embeddings(self.width_offsets, cols, width))
        return (along_height.unsqueeze(-1) + along_width.unsqueeze(-2)).flatten(-2)

    def _logit_bias(self, queries: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                    height: int, width: int) -> Optional[torch.Tensor]:
        if self.pos_embed == "none":
            return None
        return self.relative_logits(queries, rows, cols, height, width)

    def _weights(self, queries, keys, bias) -> torch.Tensor:
        """Explicit softmax weights (N, heads, Q, HW)."""
        logits = (queries @ keys.transpose(-1, -2)) * self.head_channels ** -0.5
        return (logits if bias is None else logits + bias).softmax(dim=-1)

    def _all_positions(self, height: int, width: int, device):
        grid_rows, grid_cols = torch.meshgrid(torch.arange(height, device=device),
                                              torch.arange(width, device=device), indexing="ij")
        return grid_rows.flatten(), grid_cols.flatten()

    def affinity(self, x: torch.Tensor) -> torch.Tensor:
        """The full weight matrix (N, heads, HW, HW), explicitly (quadratic memory)."""
        self.check_input(x)
        height, width = x.shape[-2:]
        queries, keys, _ = self._split_heads(x)
        rows, cols = self._all_positions(height, width, x.device)
        return self._weights(queries, keys, self._logit_bias(queries, rows, cols, height, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        n, channels, height, width = x.shape
        queries, keys, values = self._split_heads(x)
        with float32_math(x):   # scores, softmax and weighted sum in float32 under autocast
            queries, keys, values = upcast(queries), upcast(keys), upcast(values)
            if self.recorder is not None:
                rows, cols = query_positions(self.recorder, height, width, x.device)
                picked = queries[:, :, rows * width + cols]
                weights = self._weights(picked, keys, self._logit_bias(picked, rows, cols, height, width))
                self.observe("affinity", weights.mean(dim=1).reshape(n, -1, height, width))
            rows, cols = self._all_positions(height, width, x.device)
            bias = self._logit_bias(queries, rows, cols, height, width)
            if self.use_sdpa:
                attended = F.scaled_dot_product_attention(queries, keys, values, attn_mask=bias,
                                                          scale=self.head_channels ** -0.5)
            else:
                attended = self._weights(queries, keys, bias) @ values      # (N, heads, HW, d)
        attended = attended.to(x.dtype).transpose(-1, -2).reshape(n, channels, height, width)
        response = self.observe("response", self.bn(self.W_o(attended)))
        return x + response
