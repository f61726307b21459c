"""Text encoded on the fly: Eq. 2's token features computed inside the training step.

Three text modes (``TrainConfig.text_mode``):

- ``cached``: token features read from the ``text_prd`` / ``text_rvw`` feature stores (written by
  ``mmss extract`` with a frozen encoder). Cheap per step, but the cache of BERT-base features at
  up to 512 tokens is ~180 KB per review at float16: ~250 GB for Amazon-MRHP alone. For CPU work
  and the demo.
- ``frozen``: no text stores; each batch's product and review texts are tokenised by the loader
  (:meth:`mmss_lib.features.loader.MRHPSplitData.collate_tokens`) and run through the encoder, without
  gradients, on the run's device. Same features as ``cached`` (up to the stores' float16
  rounding), paid in encoder forward passes instead of disk.
- ``finetune``: as ``frozen`` but the encoder is trained with the system ("trained end-to-end",
  App. A.2), at its own learning rate ``lr_text`` (5e-5 for BERT, 1e-4 for the rest).

The wrapper of :func:`on_the_fly_text` wraps any system of :mod:`mmss_lib.models.registry`: it fills ``batch.pt`` /
``batch.rt`` from ``batch.pt_ids`` / ``batch.rt_ids`` and calls the system, so every system runs
unchanged in every mode. Eq. 2 as the cached stores hold it: [CLS] + word pieces, the [SEP]
position dropped from the feature mask (it is still attended to inside the encoder, exactly as
in :class:`mmss_lib.features.text.TextEncoder`). Product texts repeat within a batch (pairs are
drawn inside one product), so each distinct product text is encoded once per batch and its
features are gathered for every sample (gradients flow through the gather).

Frozen encoders are not submodules: they are in neither ``parameters()`` nor ``state_dict()``
(checkpoints hold only the system; the encoder is reloaded by name), but they follow
``.to(device)``. A fine-tuned encoder is a submodule ``encoder`` (saved with the system).
Attributes the wrapper does not have (``subtasks``, ``feature_dims``, ``uncertainty``, ...) are
those of the wrapped system.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from mmss_lib.errors import DataError, ModelNotAvailableError

TEXT_MODES = ("cached", "frozen", "finetune")


def load_text_model(name: str | os.PathLike) -> tuple[Any, Any]:
    """``(tokenizer, model)`` of a Hugging Face encoder by name or local folder (offline rules
    and aliases as in :class:`mmss_lib.features.text.TextEncoder`); clear error when missing."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from mmss_lib.features.text import hf_offline, resolve_text_model

    source = resolve_text_model(name)
    local = Path(source).is_dir()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tok = AutoTokenizer.from_pretrained(source, local_files_only=hf_offline() or local)
        model = AutoModel.from_pretrained(source, local_files_only=hf_offline() or local)
    except (OSError, ValueError) as exc:
        raise ModelNotAvailableError(
            f"text model {str(name)!r} is not available offline: pass a local folder holding config.json, "
            f"the weights and the tokenizer files, or put it in the Hugging Face cache "
            f"[{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}]"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if not getattr(tok, "is_fast", False):
        raise ModelNotAvailableError(f"text model {str(name)!r}: a fast (Rust) tokenizer is required")
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit:  # the tokenizer's own limit may be unset (1e30): never give the encoder more positions
        tok.model_max_length = int(min(tok.model_max_length or limit, limit))
    return tok, model


def _build_class():
    import torch
    import torch.nn as nn

    class _OnTheFlyText(nn.Module):
        """A system whose text features are computed from token ids in ``forward`` (module docstring)."""

        def __init__(self, system: nn.Module, encoder: nn.Module, tokenizer=None, *, trainable: bool):
            super().__init__()
            self.system = system
            self.trainable = bool(trainable)
            self.tokenizer = tokenizer
            if self.trainable:
                self.encoder = encoder
            else:
                encoder.requires_grad_(False)
                encoder.eval()
                object.__setattr__(self, "_frozen_encoder", encoder)  # not a submodule (no state_dict)
            cfg = encoder.config
            self.dim = int(cfg.hidden_size)
            self.max_len = int(getattr(cfg, "max_position_embeddings", 512) or 512)
            self.sep_id = getattr(tokenizer, "sep_token_id", None) if tokenizer is not None else None

        # ---- the encoder, wherever it lives
        @property
        def text_encoder_module(self) -> nn.Module:
            return self.encoder if self.trainable else self.__dict__["_frozen_encoder"]

        def _apply(self, fn, *args, **kwargs):
            super()._apply(fn, *args, **kwargs)
            if not self.trainable:
                self.__dict__["_frozen_encoder"]._apply(fn, *args, **kwargs)
            return self

        def train(self, mode: bool = True):
            super().train(mode)
            if not self.trainable:
                self.__dict__["_frozen_encoder"].eval()
            return self

        def __getattr__(self, name: str):
            try:
                return super().__getattr__(name)
            except AttributeError:
                system = self.__dict__.get("_modules", {}).get("system")
                if system is None:
                    raise
                return getattr(system, name)

        def param_groups(self, lr: float = 1e-4, lr_text: float = 5e-5) -> list[dict]:
            """The system's groups at ``lr`` plus, when fine-tuned, the encoder at ``lr_text``."""
            groups = [{"params": [p for p in self.system.parameters() if p.requires_grad], "lr": lr, "name": "system"}]
            if self.trainable:
                groups.append({"params": list(self.encoder.parameters()), "lr": lr_text, "name": "text_encoder"})
            return groups

        # ---- Eq. 2 on the fly
        def encode(self, ids, mask):
            """Token features (B, L, dt) float32 of token ids (B, L) with attention mask (B, L), each
            distinct row encoded once; returns (features, feature mask without [SEP])."""
            enc = self.text_encoder_module
            b = ids.shape[0]
            uniq, inv = torch.unique(ids, dim=0, return_inverse=True)  # (U, L), (B,)
            first = torch.full((uniq.shape[0],), b, dtype=torch.long, device=ids.device)
            first = first.scatter_reduce(0, inv, torch.arange(b, device=ids.device), reduce="amin")
            umask = mask[first]  # (U, L)
            grad = self.trainable and torch.is_grad_enabled()
            with torch.set_grad_enabled(grad):
                h = enc(input_ids=uniq, attention_mask=umask.long()).last_hidden_state  # (U, L, dt)
            h = h.float()[inv]  # (B, L, dt)
            keep = mask.bool()
            if self.sep_id is not None:
                keep = keep & (ids != self.sep_id)
            return h, keep

        def forward(self, batch):
            if batch.pt_ids is None or batch.rt_ids is None:
                raise DataError(
                    "on-the-fly text needs batch.pt_ids and batch.rt_ids (token ids); build the "
                    "batches with MRHPSplitData.collate_tokens (text_mode frozen/finetune)"
                )
            pt, pt_mask = self.encode(batch.pt_ids, batch.pt_mask)
            rt, rt_mask = self.encode(batch.rt_ids, batch.rt_mask)
            return self.system(replace(batch, pt=pt, pt_mask=pt_mask, rt=rt, rt_mask=rt_mask))

    return _OnTheFlyText


_CLASS = None


def on_the_fly_text(system, encoder, tokenizer=None, *, trainable: bool):
    """Wrap ``system`` so that it encodes ``batch.pt_ids`` / ``batch.rt_ids`` with ``encoder``
    (fine-tuned when ``trainable``, else frozen and left out of the checkpoint)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _build_class()
    return _CLASS(system, encoder, tokenizer, trainable=trainable)
