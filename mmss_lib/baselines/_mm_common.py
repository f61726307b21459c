"""Pieces shared by the four multimodal comparison systems (SSE-Cross, D&R Net, MCR, MCL).

Everything here is mask-aware: a mask is boolean with ``True`` = a real token/region, and an item
without images has an all-``False`` region row. The helpers never attend to padding, and rows
that are entirely padding give exact zeros (never NaN, in forward or backward):

- :func:`masked_softmax` - softmax over the real positions only; an all-masked row -> all zeros.
- :func:`masked_mean`, :func:`masked_max` - pooling over real positions; empty rows -> zeros.
- :class:`CrossAttention` - multi-head scaled dot-product attention of queries over masked keys.
- :class:`TransformerBlock` - a pre-LayerNorm self-attention block built on it.
- :class:`AttentionPool` - attention pooling with a learned query, optionally conditioned on a
  "claim" vector (MCR's product-as-claim pooling).
- :class:`InputEncoder` - the shared input stage: store token features (``text_dim``) and RoI
  features (``region_dim``, plus normalised boxes when the batch has them) -> width ``d``.
- :class:`ScoreHead` - the MLP that maps a fused representation to the ranking score (B,).
- :func:`check_batch` - clear :class:`~mmss_lib.errors.DataError` on inputs a model cannot use.

Worked example (an all-masked row pools to zeros)::

    >>> import torch
    >>> x = torch.ones(2, 3, 4); m = torch.tensor([[True, False, False], [False] * 3])
    >>> masked_mean(x, m)[:, 0].tolist()
    [1.0, 0.0]
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmss_lib.batch import Batch
from mmss_lib.errors import DataError

__all__ = [
    "masked_softmax", "masked_mean", "masked_max", "has_any", "zero_padding",
    "CrossAttention", "TransformerBlock", "AttentionPool", "InputEncoder", "ScoreHead",
    "check_batch",
]


# --------------------------------------------------------------------------- masked primitives


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax of ``scores`` over ``dim`` restricted to ``mask`` (True = real; broadcastable).

    Masked positions get weight exactly 0; a slice with no real position gets all zeros (not NaN).
    The max-shift uses only real positions, so the result is independent of padded values.
    """
    mask = mask.expand_as(scores)
    s = scores.masked_fill(~mask, float("-inf"))
    shift = s.amax(dim=dim, keepdim=True).detach()
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    e = torch.exp(s - shift) * mask  # exp(-inf) = 0 at padding
    return e / e.sum(dim=dim, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` (B, L, d) over the real positions of ``mask`` (B, L) -> (B, d); empty -> 0."""
    m = mask.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """Max of ``x`` (B, L, d) over the real positions of ``mask`` (B, L) -> (B, d); empty -> 0."""
    filled = x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min)
    out = filled.amax(dim=1)  # (B, d)
    return torch.where(mask.any(1, keepdim=True), out, torch.zeros_like(out))


def has_any(mask: Tensor) -> Tensor:
    """(B, L) mask -> (B,) bool: the item has at least one real position (e.g. has images)."""
    return mask.any(dim=1)


def zero_padding(x: Tensor, mask: Tensor) -> Tensor:
    """Replace padded positions of ``x`` (B, L, d) by exact zeros (robust to any padded value)."""
    return x.masked_fill(~mask.unsqueeze(-1), 0.0)


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
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                             dropout_p=self.dropout if self.training else 0.0)
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
        self.ff = nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_mult * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.ln1(x)
        x = x + self.drop(self.attn(h, h, mask))
        x = x + self.drop(self.ff(self.ln2(x)))
        return zero_padding(x, mask)


class AttentionPool(nn.Module):
    """Attention pooling (B, L, d) -> (B, d): weights = masked softmax of an MLP score per position.

    With ``claim_dim`` > 0 the score of each position also sees a per-sample claim vector
    (B, claim_dim), concatenated to it: MCR's "product as claim" reasoning attention.
    """

    def __init__(self, d: int, *, claim_dim: int = 0, hidden: int = 64):
        super().__init__()
        self.claim_dim = claim_dim
        self.score = nn.Sequential(nn.Linear(d + claim_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: Tensor, mask: Tensor, claim: Optional[Tensor] = None) -> Tensor:
        if self.claim_dim:
            assert claim is not None, "this AttentionPool was built with a claim: pass claim=(B, claim_dim)"
            x_in = torch.cat([x, claim[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)  # (B, L, d + c)
        else:
            x_in = x
        w = masked_softmax(self.score(x_in).squeeze(-1), mask, dim=-1)  # (B, L)
        return (w.unsqueeze(-1) * x).sum(1)  # (B, d)


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

    def __init__(self, *, text_dim: int, region_dim: int, d: int, dropout: float = 0.1,
                 use_boxes: bool = True, type_embeddings: bool = False):
        super().__init__()
        self.text_dim, self.region_dim, self.use_boxes = text_dim, region_dim, use_boxes
        self.text = nn.Sequential(nn.Linear(text_dim, d), nn.LayerNorm(d), nn.GELU(), nn.Dropout(dropout))
        self.region = nn.Linear(region_dim, d)
        self.box = nn.Linear(5, d) if use_boxes else None
        self.region_out = nn.Sequential(nn.LayerNorm(d), nn.GELU(), nn.Dropout(dropout))
        self.type_emb = nn.Parameter(torch.randn(4, d) * 0.02) if type_embeddings else None

    def _regions(self, x: Tensor, mask: Tensor, boxes: Optional[Tensor]) -> Tensor:
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
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))

    def forward(self, z: Tensor) -> Tensor:
        return self.mlp(z).squeeze(-1)  # (B,)


def check_batch(batch: Batch, *, text_dim: int, region_dim: int, system: str) -> None:
    """Raise :class:`DataError` naming the field when ``batch`` does not fit a model's input sizes."""
    if batch.pt is None or batch.rt is None:
        raise DataError(
            f"{system}: batch fields 'pt'/'rt' are None (fine-tuning mode with token ids); the "
            f"comparison systems read token features: extract them into the feature store first")
    for name, dim, what in (("pt", text_dim, "text_dim"), ("rt", text_dim, "text_dim"),
                            ("pv", region_dim, "region_dim"), ("rv", region_dim, "region_dim")):
        x, m = getattr(batch, name), getattr(batch, f"{name}_mask")
        if x.dim() != 3 or x.shape[-1] != dim:
            raise DataError(f"{system}: batch field {name!r} has shape {tuple(x.shape)}; expected "
                            f"(B, L, {dim}) for the model's {what}={dim}")
        if m.shape != x.shape[:2] or m.dtype != torch.bool:
            raise DataError(f"{system}: batch field '{name}_mask' has shape {tuple(m.shape)} and dtype "
                            f"{m.dtype}; expected a bool mask of shape {tuple(x.shape[:2])}")
