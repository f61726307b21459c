"""Pieces shared by the four multimodal comparison systems (SSE-Cross, D&R Net, MCR, MCL).

Everything here is mask-aware: a mask is boolean with ``True`` = a real token/region, and an item
without images has an all-``False`` region row. The blocks never attend to padding, and rows
that are entirely padding give exact zeros (never NaN, in forward or backward). The masked
softmax, pooling and :class:`~mmss_lib.models.masked.AttentionPool` they combine with are in
:mod:`mmss_lib.models.masked`.

- :class:`CrossAttention` - multi-head scaled dot-product attention of queries over masked keys.
- :class:`TransformerBlock` - a pre-LayerNorm self-attention block built on it.
- :class:`InputEncoder` - the shared input stage: store token features (``text_dim``) and RoI
  features (``region_dim``, plus normalised boxes when the batch has them) -> width ``d``.
- :class:`ScoreHead` - the MLP that maps a fused representation to the ranking score (B,).
- :func:`check_batch` - clear :class:`~mmss_lib.errors.DataError` on inputs a model cannot use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmss_lib.data.batch import Batch
from mmss_lib.errors import DataError
from mmss_lib.models.masked import has_any, zero_padding

__all__ = ["CrossAttention", "TransformerBlock", "InputEncoder", "ScoreHead", "check_batch"]


# --------------------------------------------------------------------------- attention blocks


class CrossAttention(nn.Module):
    """Multi-head scaled dot-product attention of ``query`` (B, Lq, d) over ``context`` (B, Lk, d).

    Keys/values at padded context positions are never attended to: they get an additive bias of
    -1e9, so their softmax weight underflows to exactly 0 whenever the row has a real key. A query
    row whose context is entirely padding (e.g. a review without images) receives a zero vector
    (its uniform weights over padding are multiplied away, so forward and backward stay finite).
    Uses ``F.scaled_dot_product_attention`` (fused on CPU and GPU); ``dropout`` applies to the
    attention weights in training mode (0 by default: it costs a random draw per weight).
    """

    def __init__(self, d: int, *, n_heads: int = 4, dropout: float = 0.0):
        super().__init__()
        assert d % n_heads == 0, f"width d={d} must be divisible by n_heads={n_heads}"
        self.d, self.h, self.dropout = d, n_heads, dropout
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def forward(self, query: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        B, Lq, d = query.shape
        Lk = context.shape[1]
        dh = d // self.h
        q = self.q(query).view(B, Lq, self.h, dh).transpose(1, 2)  # (B, h, Lq, dh)
        k, v = self.kv(context).view(B, Lk, 2, self.h, dh).permute(2, 0, 3, 1, 4)  # 2 x (B, h, Lk, dh)
        bias = torch.zeros(B, 1, 1, Lk, dtype=q.dtype, device=q.device)
        bias = bias.masked_fill(~context_mask[:, None, None, :], -1e9)  # (B, 1, 1, Lk)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0)
        out = self.out(ctx.transpose(1, 2).reshape(B, Lq, d))  # (B, Lq, d)
        # a query with no real context gets exactly zero (not the output bias)
        return out * has_any(context_mask).to(out.dtype)[:, None, None]


class TransformerBlock(nn.Module):
    """Pre-LayerNorm transformer encoder block over a masked sequence (B, L, d) -> (B, L, d).

    Padded positions come out as zeros, so they can never leak into a later un-masked operation.
    """

    def __init__(self, d: int, *, n_heads: int = 4, ff_mult: int = 2, dropout: float = 0.1):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = CrossAttention(d, n_heads=n_heads)
        self.ff = nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_mult * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.ln1(x)
        x = x + self.drop(self.attn(h, h, mask))
        x = x + self.drop(self.ff(self.ln2(x)))
        return zero_padding(x, mask)


# --------------------------------------------------------------------------- inputs and output


class InputEncoder(nn.Module):
    """Shared input stage: store features -> width ``d`` for the four streams pt, rt, pv, rv.

    Text: ``Linear(text_dim, d)`` + LayerNorm + GELU (one projection shared by product and review
    text, as the compared systems share their word embeddings). Regions: ``Linear(region_dim, d)``
    plus, when the batch has boxes and ``use_boxes``, ``Linear(5, d)`` of (x1, y1, x2, y2, area)
    - the usual VisualBERT-style region embedding - then LayerNorm + GELU. Optional learned
    stream-type embeddings mark which of the four streams a position came from.

    Padded inputs are zeroed before projection and outputs are zeroed at padding, so a padded
    position's value (garbage, inf or NaN) cannot influence anything.
    Returns ``{"pt": (x, mask), "rt": ..., "pv": ..., "rv": ...}`` with x (B, L, d).
    """

    STREAMS = ("pt", "rt", "pv", "rv")

    def __init__(
        self,
        *,
        text_dim: int,
        region_dim: int,
        d: int,
        dropout: float = 0.1,
        use_boxes: bool = True,
        type_embeddings: bool = False,
    ):
        super().__init__()
        self.text_dim, self.region_dim, self.use_boxes = text_dim, region_dim, use_boxes
        self.text = nn.Sequential(nn.Linear(text_dim, d), nn.LayerNorm(d), nn.GELU(), nn.Dropout(dropout))
        self.region = nn.Linear(region_dim, d)
        self.box = nn.Linear(5, d) if use_boxes else None
        self.region_out = nn.Sequential(nn.LayerNorm(d), nn.GELU(), nn.Dropout(dropout))
        self.type_emb = nn.Parameter(torch.randn(4, d) * 0.02) if type_embeddings else None

    def _regions(self, x: Tensor, mask: Tensor, boxes: Tensor | None) -> Tensor:
        h = self.region(zero_padding(x, mask))  # (B, N, d)
        if self.box is not None and boxes is not None:
            b = zero_padding(boxes, mask)
            area = ((b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])).unsqueeze(-1)  # (B, N, 1)
            h = h + self.box(torch.cat([b, area], dim=-1))
        return self.region_out(h)

    def forward(self, batch: Batch) -> dict[str, tuple[Tensor, Tensor]]:
        out = {
            "pt": (self.text(zero_padding(batch.pt, batch.pt_mask)), batch.pt_mask),
            "rt": (self.text(zero_padding(batch.rt, batch.rt_mask)), batch.rt_mask),
            "pv": (self._regions(batch.pv, batch.pv_mask, batch.pv_boxes), batch.pv_mask),
            "rv": (self._regions(batch.rv, batch.rv_mask, batch.rv_boxes), batch.rv_mask),
        }
        if self.type_emb is not None:
            out = {k: (x + self.type_emb[i], m) for i, (k, (x, m)) in enumerate(out.items())}
        return {k: (zero_padding(x, m), m) for k, (x, m) in out.items()}


class ScoreHead(nn.Module):
    """Fused representation (B, in_dim) -> ranking score (B,) through a one-hidden-layer MLP."""

    def __init__(self, in_dim: int, hidden: int, *, dropout: float = 0.1):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, z: Tensor) -> Tensor:
        return self.mlp(z).squeeze(-1)  # (B,)


def check_batch(batch: Batch, *, text_dim: int, region_dim: int, system: str) -> None:
    """Raise :class:`DataError` naming the field when ``batch`` does not fit a model's input sizes."""
    if batch.pt is None or batch.rt is None:
        raise DataError(
            f"{system}: batch fields 'pt'/'rt' are None (fine-tuning mode with token ids); the "
            f"comparison systems read token features: extract them into the feature store first"
        )
    for name, dim, what in (
        ("pt", text_dim, "text_dim"),
        ("rt", text_dim, "text_dim"),
        ("pv", region_dim, "region_dim"),
        ("rv", region_dim, "region_dim"),
    ):
        x, m = getattr(batch, name), getattr(batch, f"{name}_mask")
        if x.dim() != 3 or x.shape[-1] != dim:
            raise DataError(
                f"{system}: batch field {name!r} has shape {tuple(x.shape)}; expected "
                f"(B, L, {dim}) for the model's {what}={dim}"
            )
        if m.shape != x.shape[:2] or m.dtype != torch.bool:
            raise DataError(
                f"{system}: batch field '{name}_mask' has shape {tuple(m.shape)} and dtype "
                f"{m.dtype}; expected a bool mask of shape {tuple(x.shape[:2])}"
            )
