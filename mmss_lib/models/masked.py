"""Masked building blocks of MM-SS and of every comparison system: the one home of masked
softmax, masked pooling and attention pooling.

A mask is boolean with ``True`` = a real token/region (the :class:`mmss_lib.data.batch.Batch`
convention); an item without images has an all-``False`` region row. Every block obeys two
invariants that ``tests/test_masked.py`` checks:

* **padding never counts**: the result does not change when padded positions hold other values
  (garbage, inf or NaN) or when more padded positions are appended;
* **empty is safe**: a row whose mask is all ``False`` gives finite zeros, with finite
  gradients, instead of NaN from ``softmax([-inf, ...])`` or ``max`` over nothing.
  :func:`soft_pool` is the exception: it needs a real position per row, which
  :func:`guard_empty` provides.

Masks: :func:`has_any`, :func:`lengths_from_mask`, :func:`guard_empty`, :func:`zero_padding`.
Pooling: :func:`masked_mean`, :func:`masked_max`, :func:`soft_pool`. Attention:
:func:`masked_softmax` (two numerics, ``method="fused"`` / ``"shifted"``), :func:`masked_attention`,
:class:`AttentionPool`.

Worked example (an all-padding row pools to zeros)::

    >>> x = torch.ones(2, 3, 4); m = torch.tensor([[True, False, False], [False] * 3])
    >>> masked_mean(x, m)[:, 0].tolist()
    [1.0, 0.0]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmss_lib.errors import DataError

__all__ = [
    "has_any",
    "lengths_from_mask",
    "guard_empty",
    "zero_padding",
    "masked_mean",
    "masked_max",
    "soft_pool",
    "masked_softmax",
    "masked_attention",
    "AttentionPool",
]

SOFTMAX_METHODS = ("fused", "shifted")


# ----------------------------------------------------------------------------- masks


def has_any(mask: Tensor) -> Tensor:
    """(B, L) mask -> (B,) bool: the row has at least one real position (e.g. the item has images)."""
    return mask.any(dim=1)


def lengths_from_mask(mask: Tensor, *, name: str = "mask") -> Tensor:
    """Lengths (B,) of prefix masks; raises :class:`DataError` when a row is not ``1..1 0..0``.

    Sequence encoders (LSTM, n-gram windows) need real tokens first and padding after.
    """
    mask = mask.bool()
    lengths = mask.sum(1)
    prefix = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]
    if not torch.equal(prefix, mask):
        bad = int((prefix != mask).any(1).nonzero()[0, 0])
        raise DataError(f"{name}: row {bad} is not a prefix mask (real tokens first, then padding)")
    return lengths


def guard_empty(mask: Tensor) -> tuple[Tensor, Tensor]:
    """(any_real (B,), safe_mask (B, L)): rows without a real position get position 0 unmasked,
    so attention and pooling over ``safe_mask`` stay finite; the caller replaces those rows'
    results (``any_real`` False)."""
    any_real = mask.any(dim=1)
    safe = mask.clone()
    safe[:, 0] |= ~any_real
    return any_real, safe


def zero_padding(x: Tensor, mask: Tensor) -> Tensor:
    """Replace padded positions of ``x`` (B, L, d) by exact zeros (whatever they held, inf and NaN included)."""
    return x.masked_fill(~mask.unsqueeze(-1), 0.0)


# ----------------------------------------------------------------------------- pooling


def masked_mean(x: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """Mean of ``x`` over the real positions of ``dim`` (``mask`` has ``x``'s shape without the
    last axis); zeros for a row with none. Padded values are multiplied by 0, so they must be
    finite (:func:`zero_padding` first when they may not be).

    >>> masked_mean(torch.tensor([[[1.], [3.], [100.]]]), torch.tensor([[True, True, False]]))
    tensor([[2.]])
    """
    m = mask.to(x.dtype).unsqueeze(-1)  # (B, L, 1)
    return (x * m).sum(dim) / m.sum(dim).clamp_min(1.0)


def masked_max(x: Tensor, mask: Tensor, dim: int = 1, *, ties: str = "split") -> Tensor:
    """Max of ``x`` over the real positions of ``dim`` (``mask`` has ``x``'s shape without the
    last axis); zeros for a row with none.

    ``ties``: where the gradient of a maximum reached at several real positions goes: ``"split"``
    evenly between them (``amax``) or ``"first"`` all to the first of them (``max(dim).values``).
    The values are the same; ties are frequent in bfloat16 (8-bit mantissa).

    >>> masked_max(torch.tensor([[[1.], [-3.], [100.]]]), torch.tensor([[True, True, False]]))
    tensor([[1.]])
    """
    m = mask.unsqueeze(-1)  # (B, L, 1)
    filled = x.masked_fill(~m, torch.finfo(x.dtype).min)
    if ties == "split":
        out = filled.amax(dim)
    elif ties == "first":
        out = filled.max(dim).values
    else:
        raise ValueError(f"masked_max: ties must be 'split' or 'first', got {ties!r}")
    return torch.where(m.any(dim), out, torch.zeros_like(out))


def soft_pool(x: Tensor, mask: Tensor) -> Tensor:
    """SoftPool over positions (Stergiou et al.), per feature dimension, masked.

    For each feature c: w_lc = exp(x_lc) / sum_{l' real} exp(x_l'c), output_c = sum_l w_lc x_lc.
    ``x`` (B, L, d), ``mask`` (B, L) bool with at least one ``True`` per row (see
    :func:`guard_empty`) -> (B, d); a row without one gives zeros.
    Example: one feature with real values [0, ln 3] gives weights [1/4, 3/4] and 0.75 * ln 3.
    """
    m = mask.unsqueeze(-1)  # (B, L, 1)
    w = masked_softmax(x, m, dim=1)  # (B, L, d)
    return (w * x.masked_fill(~m, 0.0)).sum(dim=1)  # (B, d)


# ----------------------------------------------------------------------------- attention


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1, *, method: str = "fused") -> Tensor:
    """Softmax of ``scores`` over the real positions along ``dim`` (``mask`` broadcasts to ``scores``).

    Padded positions get exactly 0 and their values never matter; a slice with no real position
    gets all zeros (not NaN), with finite gradients. The two methods compute the same function and
    differ in rounding:

    * ``"fused"``: ``torch.softmax`` of the scores with padded positions set to the dtype's lowest
      finite value, then padded weights zeroed. One fused kernel; under autocast it computes and
      returns float32 (autocast runs softmax in float32).
    * ``"shifted"``: ``exp(s - max)`` over the real positions divided by its sum, the max (a
      constant of the gradient: detached) taken over real positions only, in the scores' dtype.
      A slice whose real scores are all ``-inf`` also gets zeros.
    """
    mask = mask.expand_as(scores)
    if method == "fused":
        filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        return torch.softmax(filled, dim=dim) * mask.to(scores.dtype)
    if method == "shifted":
        s = scores.masked_fill(~mask, float("-inf"))
        shift = s.amax(dim=dim, keepdim=True).detach()
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        e = torch.exp(s - shift) * mask  # exp(-inf) = 0 at padding
        return e / e.sum(dim=dim, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)
    raise ValueError(f"masked_softmax: method must be one of {SOFTMAX_METHODS}, got {method!r}")


def masked_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    key_mask: Tensor,
    *,
    scale: float | None = None,
    return_weights: bool = False,
):
    """Dot-product attention of ``query`` (B, Lq, d) over ``key``/``value`` (B, Lk, d) / (B, Lk, dv).

    ``key_mask`` (B, Lk) marks the real keys; queries whose keys are all padding get zero vectors.
    ``scale`` multiplies the scores, default ``1/sqrt(d)`` (``1.0``: plain or bilinear scores).
    Weights by :func:`masked_softmax` (``"fused"``). Returns (B, Lq, dv) [and the weights (B, Lq, Lk)].
    """
    if scale is None:
        scale = query.shape[-1] ** -0.5
    scores = torch.einsum("bqd,bkd->bqk", query, key) * scale  # (B, Lq, Lk)
    weights = masked_softmax(scores, key_mask[:, None, :], dim=-1)  # (B, Lq, Lk)
    out = torch.einsum("bqk,bkd->bqd", weights, value)  # (B, Lq, dv)
    return (out, weights) if return_weights else out


class AttentionPool(nn.Module):
    """Attention pooling (B, L, d) + mask (B, L) -> (B, d); an all-padding row pools to zeros.

    ``e_i = u^T act(W [h_i; c] + b) (+ b_u)``, ``a = masked_softmax(e)``, ``r = sum_i a_i h_i``
    with ``W``: ``proj`` (Linear(d + claim_dim, hidden), ``hidden`` defaults to d), ``u``: ``context``
    (Linear(hidden, 1), bias ``b_u`` when ``score_bias``). With ``claim_dim`` > 0 every position
    also sees a per-sample claim vector ``c`` (B, claim_dim) (MCR's product-as-claim pooling).
    Defaults: the additive attention ``u^T tanh(W h_i + b)``.

    ``softmax``: the :func:`masked_softmax` method. ``weighted_sum``: ``"matmul"`` (one batched
    matrix product) or ``"broadcast"`` (elementwise products, then a sum over positions); equal
    up to rounding.

    Loads state dicts written when the score network was ``score = Sequential(Linear, act, Linear)``
    (keys ``score.0.*``, ``score.2.*``).
    """

    ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu}

    def __init__(
        self,
        dim: int,
        *,
        hidden: int | None = None,
        claim_dim: int = 0,
        activation: str = "tanh",
        score_bias: bool = False,
        softmax: str = "fused",
        weighted_sum: str = "matmul",
    ):
        super().__init__()
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"AttentionPool: activation must be one of {list(self.ACTIVATIONS)}, got {activation!r}")
        if softmax not in SOFTMAX_METHODS:
            raise ValueError(f"AttentionPool: softmax must be one of {SOFTMAX_METHODS}, got {softmax!r}")
        if weighted_sum not in ("matmul", "broadcast"):
            raise ValueError(f"AttentionPool: weighted_sum must be 'matmul' or 'broadcast', got {weighted_sum!r}")
        hidden = hidden or dim
        self.claim_dim, self.activation, self.softmax, self.weighted_sum = claim_dim, activation, softmax, weighted_sum
        self.proj = nn.Linear(dim + claim_dim, hidden)
        self.context = nn.Linear(hidden, 1, bias=score_bias)

    def forward(self, h: Tensor, mask: Tensor, claim: Tensor | None = None) -> Tensor:
        if self.claim_dim:
            if claim is None:
                raise ValueError("this AttentionPool was built with a claim: pass claim=(B, claim_dim)")
            x_in = torch.cat([h, claim[:, None, :].expand(-1, h.shape[1], -1)], dim=-1)  # (B, L, d + c)
        else:
            x_in = h
        act = self.ACTIVATIONS[self.activation]
        logits = self.context(act(self.proj(x_in))).squeeze(-1)  # (B, L)
        weights = masked_softmax(logits, mask, dim=-1, method=self.softmax)  # (B, L)
        if self.weighted_sum == "matmul":
            return torch.einsum("bl,bld->bd", weights, h)  # (B, d)
        return (weights.unsqueeze(-1) * h).sum(1)  # (B, d)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for old, new in (("score.0.", "proj."), ("score.2.", "context.")):
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"claim_dim={self.claim_dim}, activation={self.activation!r}, softmax={self.softmax!r}, "
            f"weighted_sum={self.weighted_sum!r}"
        )
