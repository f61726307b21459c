"""From an MRHP split and its four feature stores to :class:`mmss_lib.data.batch.Batch` objects.

:class:`MRHPSplitData` holds, for one dataset/category/split, only small per-sample arrays
(review ids, product ids, labels, product group codes, the stable sample index) and handles to
the four memory-mapped feature stores (``text_prd``, ``text_rvw``, ``region_prd``,
``region_rvw``). Features stay on disk: :meth:`MRHPSplitData.collate` gathers exactly the rows a
batch needs, so resident memory does not grow with the number of training reviews beyond those
arrays.

Padding follows the Batch contract: masks are ``True`` for real tokens/regions; an item without
images gets an all-``False`` mask row, and every padded tensor keeps at least one column so shapes
stay valid. Features are stored as float16 and converted to float32 here.

The sample index (``Batch.index``) is the review's row position in the split file, 0..N-1; for
the training split it keys the SSP-Label banks, for dev/test it is ``-1`` (no pseudo labels exist
outside the training set).

On-the-fly text (:meth:`MRHPSplitData.collate_tokens`, text modes ``frozen`` / ``finetune`` of
:mod:`mmss_lib.models.online_text`): the product and review texts are tokenised with the text model's
tokenizer into ``pt_ids`` / ``rt_ids`` (``pt``/``rt`` are None; each distinct product text is
tokenised once per batch); regions still come from the stores. In this mode the text stores are
not needed at all: a split built with ``keep_texts=True`` and only the two region stores has
``text_dim = None`` (the encoder decides it).

Bad stores (:func:`open_stores`): a missing store, a store whose manifest names another
dataset/category (a features folder copied from another category), a split item absent from a
store, and an item whose stored features hold NaN or infinite values (checked per batch as rows
are read) are each a :class:`~mmss_lib.errors.FeatureStoreError` naming the store path and the item.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmss_lib.errors import DataError, FeatureStoreError

STORE_KINDS = ("text_prd", "text_rvw", "region_prd", "region_rvw")
TEXT_KINDS = ("text_prd", "text_rvw")
REGION_KINDS = ("region_prd", "region_rvw")


def _store_name(store: Any) -> str:
    path = getattr(store, "path", None)
    return str(path) if path is not None else repr(store)


def _check_item(store: Any, kind: str, item_id: str) -> None:
    if item_id not in store:
        raise FeatureStoreError(
            f"feature store {kind} ({_store_name(store)}) has no item {item_id!r}; "
            f"run `mmss extract` for this dataset/category (all splits) before training"
        )


def _finite(x: np.ndarray, store: Any, kind: str, item_id: str) -> np.ndarray:
    """``x`` when every value is finite; else a FeatureStoreError naming the store and the item (the
    writers refuse NaN, so a NaN here means a store edited or damaged after it was written)."""
    if x.size and not np.isfinite(x).all():
        raise FeatureStoreError(
            f"feature store {kind} ({_store_name(store)}): item {item_id!r} holds NaN or infinite features; "
            f"the store was damaged after extraction: delete it and re-run `mmss extract`"
        )
    return x


@dataclass
class ReadCaps:
    """Read-time caps on the stored features (docs/MRHP.md section 3: MCR's caps)."""

    max_text_len: int | None = 512  # tokens kept per text, [CLS] included (None = all)
    max_regions_per_image: int = 32  # first regions of each image
    max_regions_per_item: int = 128  # regions of all images of one item

    @classmethod
    def of(cls, cfg) -> ReadCaps:
        """The caps a run's configuration (:class:`~mmss_lib.training.config.TrainConfig`) sets."""
        return cls(cfg.max_text_len, cfg.max_regions_per_image, cfg.max_regions_per_item)


def pad_rows(rows: Sequence[np.ndarray], dim: int, *, min_len: int = 1):
    """Stack variable-length ``(n_i, dim)`` arrays into ``(B, L, dim)`` float32 plus a ``(B, L)``
    bool mask, ``L = max(max n_i, min_len)``; rows with ``n_i = 0`` get an all-False mask row.

    >>> x, m = pad_rows([np.ones((2, 3)), np.zeros((0, 3))], 3)
    >>> x.shape, m.tolist()
    ((2, 2, 3), [[True, True], [False, False]])
    """
    b = len(rows)
    length = max([min_len] + [int(r.shape[0]) for r in rows])
    out = np.zeros((b, length, dim), dtype=np.float32)
    mask = np.zeros((b, length), dtype=bool)
    for i, r in enumerate(rows):
        n = int(r.shape[0])
        if n:
            out[i, :n] = r  # float16 -> float32 on assignment
            mask[i, :n] = True
    return out, mask


class MRHPSplitData:
    """One dataset/category/split: per-sample arrays plus handles to the four feature stores.

    ``reviews`` / ``products``: the DataFrames of :func:`mmss_lib.data.mrhp.load_mrhp` (or any frames
    with columns ``review_id, product_id, label`` and ``product_id``; ``text`` columns are kept
    only when ``keep_texts`` is true, for the fine-tuning mode). ``stores``: a mapping with the
    keys of :data:`STORE_KINDS` to opened :class:`~mmss_lib.features.store.FeatureStore` objects.
    ``training``: whether this is the training split (then ``Batch.index`` is the sample index,
    else -1).

    Attributes: ``review_ids``, ``product_ids`` (object arrays), ``labels`` (int64),
    ``product_codes`` (int64 group ids, 0..P-1 in order of first appearance), ``n`` (samples),
    ``text_dim``, ``region_dim``.
    """

    def __init__(
        self,
        reviews,
        products,
        stores: Mapping[str, Any],
        *,
        training: bool = False,
        caps: ReadCaps | None = None,
        keep_texts: bool = False,
        name: str = "split",
        check: bool = True,
    ):
        text_stores = all(k in stores for k in TEXT_KINDS)
        missing = [k for k in (STORE_KINDS if (text_stores or not keep_texts) else REGION_KINDS) if k not in stores]
        if missing:
            raise FeatureStoreError(f"{name}: feature stores missing: {', '.join(missing)}")
        for col in ("review_id", "product_id", "label"):
            if col not in reviews.columns:
                raise DataError(f"{name}: reviews have no column {col!r} (expected review_id, product_id, label)")
        self.name = name
        self.training = training
        self.caps = caps or ReadCaps()
        self.stores = dict(stores)
        self.review_ids = np.asarray(reviews["review_id"].astype(str).to_numpy(), dtype=object)
        self.product_ids = np.asarray(reviews["product_id"].astype(str).to_numpy(), dtype=object)
        labels = reviews["label"].to_numpy()
        if len(labels) and (not np.all(np.isfinite(labels.astype(float))) or labels.min() < 0 or labels.max() > 4):
            bad = int(np.flatnonzero(~((labels >= 0) & (labels <= 4)))[0])
            raise DataError(
                f"{name}: review {self.review_ids[bad]} (row {bad}) has label {labels[bad]!r}; expected an integer 0..4"
            )
        self.labels = labels.astype(np.int64)
        _, first, codes = np.unique(self.product_ids, return_index=True, return_inverse=True)
        # renumber groups in order of first appearance so codes are stable and readable
        order = np.argsort(first, kind="stable")
        remap = np.empty_like(order)
        remap[order] = np.arange(len(order))
        self.product_codes = remap[codes].astype(np.int64)
        self.n = len(self.review_ids)
        self.has_text_stores = text_stores
        self.text_dim = int(self.stores["text_rvw"].dim) if text_stores else None
        self.region_dim = int(self.stores["region_rvw"].dim)
        if (text_stores and int(self.stores["text_prd"].dim) != self.text_dim) or int(
            self.stores["region_prd"].dim
        ) != self.region_dim:
            raise FeatureStoreError(
                f"{name}: product and review stores disagree on feature sizes: text "
                f"{self.stores['text_prd'].dim if text_stores else '-'} vs {self.text_dim}, region "
                f"{self.stores['region_prd'].dim} vs {self.region_dim}; re-extract with one setting"
            )
        self.product_texts: dict[str, str] | None = None
        self.review_texts: np.ndarray | None = None
        if keep_texts:
            if "text" not in reviews.columns or "text" not in products.columns:
                raise DataError(f"{name}: fine-tuning needs a 'text' column in reviews and products")
            self.review_texts = np.asarray(reviews["text"].astype(str).to_numpy(), dtype=object)
            self.product_texts = dict(
                zip(products["product_id"].astype(str), products["text"].astype(str), strict=True)
            )
        if check:
            self.check_stores()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_disk(
        cls,
        data_root,
        dataset: str,
        category: str,
        features_root,
        *,
        caps: ReadCaps | None = None,
        keep_texts: bool = False,
        stores: Mapping[str, Any] | None = None,
    ) -> dict[str, MRHPSplitData]:
        """The three splits of a released dataset/category, sharing one set of opened stores
        (:func:`run_stores`; ``stores`` may pass them already opened): the one place a run's data is
        assembled from disk. Refuses splits that share a product or review
        (:func:`mmss_lib.data.mrhp.check_disjoint_splits`) and stores extracted from other texts or
        images (:func:`mmss_lib.features.fingerprint.check_features_match`)."""
        from mmss_lib.data.mrhp import SPLITS, check_disjoint_splits, load_mrhp
        from mmss_lib.features.fingerprint import check_features_match

        if stores is None:
            stores = run_stores(features_root, dataset, category, keep_texts=keep_texts)
        frames = {s: load_mrhp(data_root, dataset, category, s) for s in SPLITS}  # (products, reviews)
        check_disjoint_splits(
            data_root,
            dataset,
            category,
            {
                s: (p["product_id"].astype(str).tolist(), r["review_id"].astype(str).tolist())
                for s, (p, r) in frames.items()
            },
        )
        check_features_match(stores, frames, where=f"{dataset}/{category}")
        return {
            s: cls(
                frames[s][1],
                frames[s][0],
                stores,
                training=(s == "train"),
                caps=caps,
                keep_texts=keep_texts,
                name=f"{dataset}/{category}/{s}",
            )
            for s in SPLITS
        }

    def check_stores(self) -> None:
        """Every review and product of the split has an item in each store (clear error otherwise)."""
        for kind, ids in (
            ("text_rvw", self.review_ids),
            ("region_rvw", self.review_ids),
            ("text_prd", np.unique(self.product_ids)),
            ("region_prd", np.unique(self.product_ids)),
        ):
            if kind not in self.stores:
                continue  # on-the-fly text: no text stores
            store = self.stores[kind]
            for item in ids:
                _check_item(store, kind, item)

    # ------------------------------------------------------------------ per-sample reads
    def _text(self, kind: str, item_id: str) -> np.ndarray:
        from mmss_lib.features.store import read_text

        store = self.stores[kind]
        _check_item(store, kind, item_id)
        return _finite(read_text(store, item_id, max_len=self.caps.max_text_len), store, kind, item_id)

    def _regions(self, kind: str, item_id: str):
        from mmss_lib.features.store import read_regions

        store = self.stores[kind]
        _check_item(store, kind, item_id)
        x, boxes = read_regions(
            store, item_id, max_per_image=self.caps.max_regions_per_image, max_per_item=self.caps.max_regions_per_item
        )
        return _finite(x, store, kind, item_id), boxes

    def _regions_part(self, indices: np.ndarray, products: np.ndarray) -> dict[str, Any]:
        """Region tensors of a batch: product regions read once per distinct product."""
        import torch

        uniq, inv = np.unique(products, return_inverse=True)
        prd = [self._regions("region_prd", p) for p in uniq]
        rvw = [self._regions("region_rvw", self.review_ids[i]) for i in indices]
        pv, pv_mask = pad_rows([prd[j][0] for j in inv], self.region_dim)  # (B, Np, dr)
        pvb, _ = pad_rows([prd[j][1] for j in inv], 4)  # (B, Np, 4)
        rv, rv_mask = pad_rows([r[0] for r in rvw], self.region_dim)  # (B, Nr, dr)
        rvb, _ = pad_rows([r[1] for r in rvw], 4)  # (B, Nr, 4)
        return dict(
            pv=torch.from_numpy(pv),
            pv_mask=torch.from_numpy(pv_mask),
            rv=torch.from_numpy(rv),
            rv_mask=torch.from_numpy(rv_mask),
            pv_boxes=torch.from_numpy(pvb),
            rv_boxes=torch.from_numpy(rvb),
        )

    def _meta_part(self, indices: np.ndarray) -> dict[str, Any]:
        import torch

        index = indices.astype(np.int64) if self.training else np.full(len(indices), -1, dtype=np.int64)
        return dict(
            label=torch.from_numpy(self.labels[indices].astype(np.float32)),
            index=torch.from_numpy(index),
            product=torch.from_numpy(self.product_codes[indices]),
        )

    def _as_indices(self, indices) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise DataError(f"{self.name}: cannot collate an empty batch")
        if idx.min() < 0 or idx.max() >= self.n:
            raise DataError(
                f"{self.name}: sample index out of range 0..{self.n - 1}: {int(idx.min())}..{int(idx.max())}"
            )
        return idx

    # ------------------------------------------------------------------ batches
    def collate(self, indices) -> Batch:  # noqa: F821
        """The :class:`~mmss_lib.data.batch.Batch` of samples ``indices`` (positions in this split)."""
        import torch

        from mmss_lib.data.batch import Batch

        if not self.has_text_stores:
            raise FeatureStoreError(
                f"{self.name}: no text feature stores (on-the-fly text); build the "
                "batches with collate_tokens, or extract the text stores for cached text"
            )
        idx = self._as_indices(indices)
        products = self.product_ids[idx]
        uniq, inv = np.unique(products, return_inverse=True)
        ptext = [self._text("text_prd", p) for p in uniq]  # once per distinct product
        pt, pt_mask = pad_rows([ptext[j] for j in inv], self.text_dim)  # (B, Lp, dt)
        rt, rt_mask = pad_rows([self._text("text_rvw", self.review_ids[i]) for i in idx], self.text_dim)  # (B, Lr, dt)
        return Batch(
            pt=torch.from_numpy(pt),
            pt_mask=torch.from_numpy(pt_mask),
            rt=torch.from_numpy(rt),
            rt_mask=torch.from_numpy(rt_mask),
            **self._regions_part(idx, products),
            **self._meta_part(idx),
        )

    def collate_tokens(self, indices, tokenizer, *, max_len: int | None = None) -> Batch:  # noqa: F821
        """Fine-tuning mode: token ids of the raw texts (``pt_ids``/``rt_ids``, masks from the
        tokenizer's attention mask); ``pt``/``rt`` are None. Needs ``keep_texts=True``."""
        import torch

        from mmss_lib.data.batch import Batch

        if self.review_texts is None or self.product_texts is None:
            raise DataError(f"{self.name}: collate_tokens needs the raw texts (build with keep_texts=True)")
        idx = self._as_indices(indices)
        products = self.product_ids[idx]
        max_len = max_len or self.caps.max_text_len or 512

        def encode(texts):
            enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            return enc["input_ids"].long(), enc["attention_mask"].bool()

        uniq, inv = np.unique(products, return_inverse=True)
        pt_ids, pt_mask = encode(self.product_texts[p] for p in uniq)  # (P, Lp), each product once
        inv_t = torch.from_numpy(inv.reshape(-1).astype(np.int64))
        pt_ids, pt_mask = pt_ids[inv_t], pt_mask[inv_t]  # (B, Lp)
        rt_ids, rt_mask = encode(self.review_texts[idx])  # (B, Lr)
        return Batch(
            pt=None,
            pt_mask=pt_mask,
            rt=None,
            rt_mask=rt_mask,
            pt_ids=pt_ids,
            rt_ids=rt_ids,
            **self._regions_part(idx, products),
            **self._meta_part(idx),
        )

    def iter_batches(self, indices=None, batch_size: int = 64, *, collate=None) -> Iterator[tuple[np.ndarray, Batch]]:  # noqa: F821
        """Yield ``(indices, Batch)`` over ``indices`` (default: all samples in order) in chunks."""
        idx = np.arange(self.n) if indices is None else np.asarray(indices, dtype=np.int64)
        collate = collate or self.collate
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            yield chunk, collate(chunk)

    def __len__(self) -> int:
        return self.n


def run_stores(features_root, dataset: str, category: str, *, keep_texts: bool = False) -> dict[str, Any]:
    """The stores a run reads: all four, or with ``keep_texts`` (a run that encodes its texts
    itself, text modes ``frozen`` / ``finetune``) the region stores only."""
    return open_stores(features_root, dataset, category, kinds=REGION_KINDS if keep_texts else STORE_KINDS)


def open_stores(features_root, dataset: str, category: str, *, kinds: Sequence[str] = STORE_KINDS) -> dict[str, Any]:
    """Open the stores ``kinds`` (default all four) of a dataset/category (clear error when one is
    missing); on-the-fly text needs only :data:`REGION_KINDS`."""
    from mmss_lib.features.store import FeatureStore, feature_dirs

    dirs = feature_dirs(features_root, dataset, category)
    out = {}
    for kind in kinds:
        path = Path(dirs[kind])
        if not path.exists():
            raise FeatureStoreError(
                f"feature store {kind} not found at {path}; run `mmss extract --dataset {dataset} "
                f"--category {category}` first (features root {os.fspath(features_root)})"
            )
        store = FeatureStore(path)
        made_for = (store.manifest.get("dataset"), store.manifest.get("category"))
        if made_for[1] is not None and made_for != (dataset, category):
            raise FeatureStoreError(
                f"feature store {kind} at {path} was extracted for {made_for[0]}/{made_for[1]}, not "
                f"{dataset}/{category} (its manifest.json says so); point the features root at this "
                f"category's features or run `mmss extract --dataset {dataset} --category {category}`"
            )
        out[kind] = store
    return out
