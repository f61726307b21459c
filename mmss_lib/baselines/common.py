"""Masked building blocks shared by the comparison systems (text-only ones and, if wanted, the rest).

Every helper takes boolean masks with ``True`` = a real token/region (the :class:`mmss_lib.batch.Batch`
convention) and obeys two invariants that the tests check:

* **padding never counts**: the result does not change when padded positions hold other values
  or when more padded positions are appended;
* **empty is safe**: a row whose mask is all ``False`` (an empty text, an item without images)
  gives finite zeros, with finite gradients, instead of NaN from ``softmax([-inf, ...])`` or
  ``max`` over nothing.

Pooling: :func:`masked_mean`, :func:`masked_max`. Attention: :func:`masked_softmax`,
:func:`masked_attention`, :class:`AttentionPool`. Sequence encoders that respect lengths:
:class:`MaskedBiLSTM` (a BiLSTM whose backward direction starts at the last *real* token) and :class:`NGramConv` (n-gram windows starting at real tokens). Input checks:
:func:`text_inputs`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmss_lib.errors import DataError

__all__ = [
    "text_inputs",
    "lengths_from_mask",
    "masked_mean",
    "masked_max",
    "masked_softmax",
    "masked_attention",
    "AttentionPool",
    "MaskedBiLSTM",
    "NGramConv",
]


# ----------------------------------------------------------------------------- input checks

def text_inputs(batch, text_dim: int, *, system: str, fields: tuple[str, ...] = ("pt", "rt")) -> list[tuple[Tensor, Tensor]]:
    """Return ``[(x, mask), ...]`` for the named text fields of ``batch``, after checking them.

    ``x`` is ``(B, L, text_dim)`` float and ``mask`` ``(B, L)`` bool. Raises :class:`DataError`
    naming the field when the batch carries token ids instead of features (fine-tuning mode, which
    the comparison systems do not support), or when a shape does not match the model.
    """
    out = []
    for name in fields:
        x = getattr(batch, name)
        mask = getattr(batch, f"{name}_mask")
        if x is None:
            raise DataError(
                f"{system}: batch.{name} is None (token ids only?); this system reads token features "
                f"from the feature store: build the batch with text features of size {text_dim}")
        if x.dim() != 3 or x.shape[-1] != text_dim:
            raise DataError(
                f"{system}: batch.{name} has shape {tuple(x.shape)}, expected (B, L, {text_dim}) "
                f"(text_dim of the model); rebuild the model with the feature store's dim")
        if mask.shape != x.shape[:2]:
            raise DataError(
                f"{system}: batch.{name}_mask has shape {tuple(mask.shape)}, expected {tuple(x.shape[:2])}")
        out.append((x.float(), mask.bool()))
    return out


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


# ----------------------------------------------------------------------------- pooling

def masked_mean(x: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """Mean of ``x`` over the real positions of ``dim``; zeros for an all-padding row.

    >>> masked_mean(torch.tensor([[[1.], [3.], [100.]]]), torch.tensor([[True, True, False]]))
    tensor([[2.]])
    """
    m = mask.to(x.dtype).unsqueeze(-1)                       # (B, L, 1)
    total = (x * m).sum(dim)
    count = m.sum(dim).clamp_min(1.0)
    return total / count


def masked_max(x: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """Max of ``x`` over the real positions of ``dim``; zeros for an all-padding row.

    >>> masked_max(torch.tensor([[[1.], [-3.], [100.]]]), torch.tensor([[True, True, False]]))
    tensor([[1.]])
    """
    m = mask.unsqueeze(-1)                                   # (B, L, 1)
    filled = x.masked_fill(~m, torch.finfo(x.dtype).min)
    out = filled.max(dim).values
    any_real = m.any(dim)
    return torch.where(any_real, out, torch.zeros_like(out))


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax of ``scores`` over the real positions along ``dim`` (``mask`` broadcasts to scores).

    Padded positions get exactly 0; a slice with no real position gets all zeros (not NaN), so an
    attention over it returns a zero vector and passes finite gradients.
    """
    mask = mask.expand_as(scores)
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(filled, dim=dim)
    return weights * mask.to(scores.dtype)


def masked_attention(query: Tensor, key: Tensor, value: Tensor, key_mask: Tensor,
                     *, scale: float | None = None, return_weights: bool = False):
    """Scaled dot-product attention of ``query`` (B, Lq, d) over ``key``/``value`` (B, Lk, d).

    ``key_mask`` (B, Lk) marks the real keys; queries whose keys are all padding get zero vectors.
    ``scale`` defaults to ``1/sqrt(d)``. Returns (B, Lq, dv) [and the weights (B, Lq, Lk)].
    """
    if scale is None:
        scale = query.shape[-1] ** -0.5
    scores = torch.einsum("bqd,bkd->bqk", query, key) * scale       # (B, Lq, Lk)
    weights = masked_softmax(scores, key_mask[:, None, :], dim=-1)   # (B, Lq, Lk)
    out = torch.einsum("bqk,bkd->bqd", weights, value)               # (B, Lq, dv)
    return (out, weights) if return_weights else out


class AttentionPool(nn.Module):
    """Additive self-attention pooling: ``a_i = softmax_i(u^T tanh(W h_i))``, ``r = sum_i a_i h_i``.

    (B, L, d) + mask (B, L) -> (B, d); an all-padding row pools to zeros.
    """

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim
        self.proj = nn.Linear(dim, hidden)
        self.context = nn.Linear(hidden, 1, bias=False)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        logits = self.context(torch.tanh(self.proj(h))).squeeze(-1)  # (B, L)
        weights = masked_softmax(logits, mask, dim=-1)               # (B, L)
        return torch.einsum("bl,bld->bd", weights, h)                # (B, d)


# ----------------------------------------------------------------------------- sequence encoders

class MaskedBiLSTM(nn.Module):
    """A bidirectional LSTM that only reads the real tokens of each row.

    ``forward(x (B, L, d_in), mask (B, L)) -> (B, L, 2*hidden)``: the forward direction's
    states in ``[..., :hidden]``, the backward direction's in ``[..., hidden:]``; padded positions
    are zero. The backward direction runs over each row reversed *within its length* (real tokens
    last-to-first, then the padding), so it starts at the last real token and appended padding
    cannot change any real state; the forward direction reads the padding only after the real
    tokens. This is what a packed BiLSTM computes, but it runs the fused unpacked kernel, whose
    CPU backward is several times faster than the packed one. An empty row gives zeros. Use
    :meth:`last_forward` / :meth:`last_backward` for the final states.
    """

    def __init__(self, input_dim: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.forward_lstm = nn.LSTM(input_dim, hidden, batch_first=True)
        self.backward_lstm = nn.LSTM(input_dim, hidden, batch_first=True)

    @staticmethod
    def reverse_within_length(x: Tensor, lengths: Tensor) -> Tensor:
        """Reverse each row's first ``lengths[b]`` steps, keep the rest in place: (B, L, d) -> (B, L, d).

        Its own inverse.
        """
        L = x.shape[1]
        t = torch.arange(L, device=x.device)[None, :]                    # (1, L)
        idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, L)
        return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        lengths = lengths_from_mask(mask, name="MaskedBiLSTM mask")
        m = mask.unsqueeze(-1).to(x.dtype)                               # (B, L, 1)
        x = x * m                                                        # zero the padding
        h_fwd, _ = self.forward_lstm(x)                                  # (B, L, h)
        h_bwd, _ = self.backward_lstm(self.reverse_within_length(x, lengths))
        h_bwd = self.reverse_within_length(h_bwd, lengths)               # (B, L, h)
        return torch.cat([h_fwd, h_bwd], dim=-1) * m                     # (B, L, 2h)

    def last_forward(self, h: Tensor, mask: Tensor) -> Tensor:
        """Forward direction's state at the last real token: (B, L, 2h) -> (B, h); zeros if empty."""
        last = (mask.sum(1) - 1).clamp_min(0)                           # (B,)
        idx = last[:, None, None].expand(-1, 1, self.hidden)            # (B, 1, h)
        return h[..., : self.hidden].gather(1, idx).squeeze(1)          # (B, h)

    def last_backward(self, h: Tensor, mask: Tensor) -> Tensor:
        """Backward direction's final state, i.e. its output at position 0: (B, h); zeros if empty."""
        return h[:, 0, self.hidden:]


class NGramConv(nn.Module):
    """Convolution over n-grams that start at real tokens (width ``n``, ``channels`` filters).

    ``forward(x (B, L, d_in), mask (B, L)) -> (B, L, channels)``: position ``i`` holds the filter
    response of the window ``i .. i+n-1`` where tokens past the end of the text count as zeros
    (so a text shorter than ``n`` still has windows); positions with ``mask`` False are zero.
    Padding is zeroed before the convolution, so its values and its amount never matter.
    """

    def __init__(self, input_dim: int, channels: int, n: int, *, activation: str = "relu"):
        super().__init__()
        assert n >= 1, "n-gram width must be >= 1"
        self.n = n
        self.conv = nn.Conv1d(input_dim, channels, kernel_size=n)
        self.act = {"relu": F.relu, "tanh": torch.tanh, "none": lambda t: t}[activation]

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x * mask.unsqueeze(-1).to(x.dtype)                           # (B, L, d)
        x = F.pad(x.transpose(1, 2), (0, self.n - 1))                    # (B, d, L + n - 1)
        y = self.act(self.conv(x)).transpose(1, 2)                       # (B, L, C)
        return y * mask.unsqueeze(-1).to(y.dtype)
