"""The contract between data loading and every model (MM-SS and the eight comparison systems).

A :class:`Batch` holds B review samples, each with its product. Masks are boolean with
``True`` = a real token/region; padding and empty image sets are ``False`` and must never be
attended to. An item without images has an all-``False`` row in its region mask (its region
tensor still has at least one padded column so shapes stay valid).

Every model is an ``nn.Module`` whose ``forward(batch: Batch) -> ModelOutput``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import Tensor


@dataclass
class Batch:
    # Product text token features incl. [CLS] at position 0: (B, Lp, dt), float32
    pt: Tensor | None
    pt_mask: Tensor  # (B, Lp) bool
    # Review text token features incl. [CLS]: (B, Lr, dt)
    rt: Tensor | None
    rt_mask: Tensor  # (B, Lr) bool
    # Product image regions over all its images: (B, Np, dr) with dr = 2048 by default
    pv: Tensor
    pv_mask: Tensor  # (B, Np) bool; all False for a product without images
    # Review image regions: (B, Nr, dr)
    rv: Tensor
    rv_mask: Tensor  # (B, Nr) bool; all False for a review without images
    label: Tensor  # (B,) float32, human helpfulness label 0..4 (y_g)
    index: Tensor  # (B,) int64, stable sample index into the training set; -1 outside it
    product: Tensor  # (B,) int64, product group id (reviews of one product share it)
    # Normalised box coordinates (x1, y1, x2, y2 in [0, 1]) of the regions, when available.
    pv_boxes: Tensor | None = None  # (B, Np, 4)
    rv_boxes: Tensor | None = None  # (B, Nr, 4)
    # Fine-tuning mode: token ids for an encoder inside the model (then pt / rt are None).
    pt_ids: Tensor | None = None  # (B, Lp) int64
    rt_ids: Tensor | None = None  # (B, Lr) int64

    def to(self, device, non_blocking: bool = False) -> Batch:
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            kw[f.name] = v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v
        return Batch(**kw)

    def __len__(self) -> int:
        return int(self.label.shape[0])


@dataclass
class ModelOutput:
    score: Tensor  # (B,) predicted helpfulness (y_hat_g)
    aux_loss: Tensor | None = None  # a system's own extra loss (scalar), if any
    sub_scores: dict[str, Tensor] = field(default_factory=dict)  # MM-SS subtask outputs (B,)
    features: dict[str, Tensor] = field(default_factory=dict)  # "g" and subtasks: (B, d) reps


def random_batch(
    batch_size: int = 4,
    *,
    text_dim: int = 32,
    region_dim: int = 2048,
    lp: int = 7,
    lr: int = 5,
    np_: int = 6,
    nr: int = 3,
    empty_review_images: bool = True,
    seed: int = 0,
) -> Batch:
    """A small random batch for tests: variable lengths, and (optionally) a review without images."""
    g = torch.Generator().manual_seed(seed)

    def lengths(n_max: int, min_len: int) -> Tensor:
        return torch.randint(min_len, n_max + 1, (batch_size,), generator=g)

    def mask(lens: Tensor, n_max: int) -> Tensor:
        return torch.arange(n_max)[None, :] < lens[:, None]

    rv_len = lengths(nr, 1)
    if empty_review_images and batch_size > 1:
        rv_len[0] = 0
    return Batch(
        pt=torch.randn(batch_size, lp, text_dim, generator=g),
        pt_mask=mask(lengths(lp, 1), lp),
        rt=torch.randn(batch_size, lr, text_dim, generator=g),
        rt_mask=mask(lengths(lr, 1), lr),
        pv=torch.randn(batch_size, np_, region_dim, generator=g).abs(),
        pv_mask=mask(lengths(np_, 1), np_),
        rv=torch.randn(batch_size, nr, region_dim, generator=g).abs(),
        rv_mask=mask(rv_len, nr),
        label=torch.randint(0, 5, (batch_size,), generator=g).float(),
        index=torch.arange(batch_size),
        product=torch.arange(batch_size) // 2,
        pv_boxes=torch.rand(batch_size, np_, 4, generator=g).sort(-1).values,
        rv_boxes=torch.rand(batch_size, nr, 4, generator=g).sort(-1).values,
    )
