"""Pieces shared by the four text-only comparison systems (BiMPM, EG-CNN, Conv-KNRM, PRH-Net).

Input checks: :func:`text_inputs`. Sequence encoders that respect lengths: :class:`MaskedBiLSTM`
(a BiLSTM whose backward direction starts at the last *real* token) and :class:`NGramConv`
(n-gram windows starting at real tokens). Masks are boolean with ``True`` = a real token; padding
never changes a real position's output and an all-padding row gives zeros. The masked softmax,
pooling and attention they combine with are in :mod:`mmss_lib.models.masked`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmss_lib.errors import DataError
from mmss_lib.models.masked import lengths_from_mask

__all__ = ["text_inputs", "MaskedBiLSTM", "NGramConv"]


# ----------------------------------------------------------------------------- input checks


def text_inputs(
    batch, text_dim: int, *, system: str, fields: tuple[str, ...] = ("pt", "rt")
) -> list[tuple[Tensor, Tensor]]:
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
                f"from the feature store: build the batch with text features of size {text_dim}"
            )
        if x.dim() != 3 or x.shape[-1] != text_dim:
            raise DataError(
                f"{system}: batch.{name} has shape {tuple(x.shape)}, expected (B, L, {text_dim}) "
                f"(text_dim of the model); rebuild the model with the feature store's dim"
            )
        if mask.shape != x.shape[:2]:
            raise DataError(f"{system}: batch.{name}_mask has shape {tuple(mask.shape)}, expected {tuple(x.shape[:2])}")
        out.append((x.float(), mask.bool()))
    return out


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
        t = torch.arange(L, device=x.device)[None, :]  # (1, L)
        idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, L)
        return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        lengths = lengths_from_mask(mask, name="MaskedBiLSTM mask")
        m = mask.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        x = x * m  # zero the padding
        h_fwd, _ = self.forward_lstm(x)  # (B, L, h)
        h_bwd, _ = self.backward_lstm(self.reverse_within_length(x, lengths))
        h_bwd = self.reverse_within_length(h_bwd, lengths)  # (B, L, h)
        return torch.cat([h_fwd, h_bwd], dim=-1) * m  # (B, L, 2h)

    def last_forward(self, h: Tensor, mask: Tensor) -> Tensor:
        """Forward direction's state at the last real token: (B, L, 2h) -> (B, h); zeros if empty."""
        last = (mask.sum(1) - 1).clamp_min(0)  # (B,)
        idx = last[:, None, None].expand(-1, 1, self.hidden)  # (B, 1, h)
        return h[..., : self.hidden].gather(1, idx).squeeze(1)  # (B, h)

    def last_backward(self, h: Tensor, mask: Tensor) -> Tensor:
        """Backward direction's final state, i.e. its output at position 0: (B, h); zeros if empty."""
        return h[:, 0, self.hidden :]


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
        x = x * mask.unsqueeze(-1).to(x.dtype)  # (B, L, d)
        x = F.pad(x.transpose(1, 2), (0, self.n - 1))  # (B, d, L + n - 1)
        y = self.act(self.conv(x)).transpose(1, 2)  # (B, L, C)
        return y * mask.unsqueeze(-1).to(y.dtype)
