"""The feature store: ragged per-item arrays in float16 shards, read through memory maps.

Layout of one store (e.g. ``{features_root}/amazon/clothing/text_rvw/``)::

    manifest.json                 kind, dim, encoder/detector, fingerprint, policy, shards, created
    plan.json                     written when an extraction starts: the settings it must resume with
    shard_00000/                  one finished shard (a directory renamed into place atomically)
        ids.json                  item ids of the shard, in order
        offsets.npy               (n_items + 1,) int64: rows of item i are x[offsets[i]:offsets[i+1]]
        x.npy                     (n_rows, dim) float16 (token features, or RoI features)
        boxes.npy                 (n_rows, 4) float32 normalised x1 y1 x2 y2   (region stores only)
        image.npy                 (n_rows,) int32 image index within the item  (region stores only)

A text store holds, per item, the token-level last hidden states with ``[CLS]`` first (Eq. 2):
(n_tokens, dt). A region store holds, per item, the RoI features of all of the item's images
concatenated in image order: (n_regions, 2048), with their boxes and image indices; an item
without images has n = 0 rows.

Atomicity and resume: a shard is written into a hidden temporary directory and renamed onto
``shard_NNNNN`` only when complete, so a reader never sees a half-written shard and a re-run
after a crash keeps every finished shard (:meth:`FeatureStoreWriter.has_shard`) and rewrites
only the missing ones. ``manifest.json`` is written last; a store without it is unfinished
and :class:`FeatureStore` refuses to open it.

Bad stores (a :class:`~mmss_lib.errors.FeatureStoreError` naming the shard): a deleted or
truncated shard, a shard file holding pickled objects (arrays are read with
``allow_pickle=False``, so no code from a shared store runs), a manifest ``dim`` that disagrees
with the shards. Writers refuse NaN / infinite features.

Read-time caps follow MCR (docs/MRHP.md section 3): at most 32 regions per image and 128 per
item, both configurable; the padding masks are explicit (:func:`pad_items`) instead of MCR's
16 zero regions that attention treats as real.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmss_lib.errors import FeatureStoreError
from mmss_lib.utils import atomic_write_json

__all__ = [
    "STORE_NAMES",
    "KINDS",
    "DEFAULT_SHARD_SIZE",
    "MAX_REGIONS_PER_IMAGE",
    "MAX_REGIONS_PER_ITEM",
    "feature_dirs",
    "FeatureStore",
    "FeatureStoreWriter",
    "write_store",
    "read_text",
    "read_regions",
    "cap_regions",
    "pad_items",
    "is_complete",
    "store_size_bytes",
]

STORE_NAMES = ("text_prd", "text_rvw", "region_prd", "region_rvw")
KINDS = ("text", "region")
FORMAT_VERSION = 1
DEFAULT_SHARD_SIZE = 1024
MAX_REGIONS_PER_IMAGE = 32  # MCR's read-time cap per image
MAX_REGIONS_PER_ITEM = 128  # MCR's read-time cap per item (over all its images)
_SHARD_PREFIX = "shard_"


def feature_dirs(features_root: str | os.PathLike, dataset: str, category: str) -> dict[str, Path]:
    """The four stores of one dataset/category: ``{features_root}/{dataset}/{category}/{name}``.

    >>> sorted(feature_dirs("f", "demo", "home"))
    ['region_prd', 'region_rvw', 'text_prd', 'text_rvw']
    """
    base = Path(features_root) / dataset / category
    return {name: base / name for name in STORE_NAMES}


def _shard_name(index: int) -> str:
    return f"{_SHARD_PREFIX}{index:05d}"


def is_complete(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a finished store (its manifest exists)."""
    return (Path(path) / "manifest.json").is_file()


def store_size_bytes(path: str | os.PathLike) -> int:
    """Bytes on disk of all files of a store (for reports)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


class FeatureStore:
    """A finished store, opened read-only through memory maps.

    >>> store = FeatureStore(path)                      # doctest: +SKIP
    >>> store.get("B00X-1")["x"].shape                  # doctest: +SKIP
    (37, 768)

    Attributes: ``manifest`` (dict), ``kind`` ("text" | "region"), ``dim`` (int), ``ids``
    (list[str], shard order). ``get`` returns views into the memory maps (read-only float16);
    copy or cast them before modifying.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not mpath.is_file():
            hint = (
                "it looks like an unfinished extraction: re-run it to resume"
                if self.path.is_dir()
                else "run `mmss extract` or `mmss import-features` first"
            )
            raise FeatureStoreError(f"{self.path}: no feature store here (manifest.json missing); {hint}")
        try:
            self.manifest: dict[str, Any] = json.loads(mpath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FeatureStoreError(f"{mpath}: corrupt manifest ({exc})") from None
        for key in ("kind", "dim", "shards"):
            if key not in self.manifest:
                raise FeatureStoreError(f"{mpath}: manifest lacks the field {key!r}")
        self.kind: str = self.manifest["kind"]
        if self.kind not in KINDS:
            raise FeatureStoreError(f"{mpath}: field 'kind' is {self.kind!r}, expected one of {KINDS}")
        self.dim: int = int(self.manifest["dim"])
        self._x: list[np.ndarray] = []
        self._boxes: list[np.ndarray] = []
        self._image: list[np.ndarray] = []
        self._offsets: list[np.ndarray] = []
        self.ids: list[str] = []
        self._where: dict[str, tuple[int, int]] = {}
        for s, name in enumerate(self.manifest["shards"]):
            self._open_shard(s, self.path / name)

    def _open_shard(self, s: int, d: Path) -> None:
        try:
            ids = json.loads((d / "ids.json").read_text(encoding="utf-8"))
            offsets = np.load(d / "offsets.npy", allow_pickle=False)  # never unpickle from a store
            x = np.load(d / "x.npy", mmap_mode="r", allow_pickle=False)
            if self.kind == "region":
                boxes = np.load(d / "boxes.npy", mmap_mode="r", allow_pickle=False)
                image = np.load(d / "image.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise FeatureStoreError(f"{d}: cannot read shard ({exc}); delete the store and re-extract") from None
        n_rows = int(offsets[-1]) if len(offsets) else -1
        if (
            len(offsets) != len(ids) + 1
            or offsets[0] != 0
            or np.any(np.diff(offsets) < 0)
            or x.ndim != 2
            or x.shape != (n_rows, self.dim)
        ):
            raise FeatureStoreError(
                f"{d}: inconsistent shard (ids {len(ids)}, offsets {offsets.shape}, x {x.shape}, "
                f"dim {self.dim}); delete the store and re-extract"
            )
        if self.kind == "region" and (boxes.shape != (n_rows, 4) or image.shape != (n_rows,)):
            raise FeatureStoreError(f"{d}: boxes {boxes.shape} / image {image.shape} do not match x {x.shape}")
        for i, item_id in enumerate(ids):
            if item_id in self._where:
                raise FeatureStoreError(f"{d}: item id {item_id!r} appears twice in the store")
            self._where[item_id] = (s, i)
        self.ids.extend(ids)
        self._offsets.append(offsets)
        self._x.append(x)
        if self.kind == "region":
            self._boxes.append(boxes)
            self._image.append(image)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._where

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, kind={self.kind!r}, items={len(self)}, dim={self.dim})"

    def n_rows(self, item_id: str) -> int:
        """Number of tokens / regions stored for ``item_id`` (before any read-time cap)."""
        s, i = self._locate(item_id)
        off = self._offsets[s]
        return int(off[i + 1] - off[i])

    def _locate(self, item_id: str) -> tuple[int, int]:
        try:
            return self._where[item_id]
        except KeyError:
            raise FeatureStoreError(
                f"{self.path}: item {item_id!r} is not in this store ({len(self)} items); "
                "was it extracted from the same dataset/category?"
            ) from None

    def get(self, item_id: str) -> dict[str, np.ndarray]:
        """``{"x": (n, dim) float16}``, plus ``"boxes"`` (n, 4) float32 and ``"image"`` (n,) int
        for region stores. ``n`` is 0 for an item without images."""
        s, i = self._locate(item_id)
        a, b = int(self._offsets[s][i]), int(self._offsets[s][i + 1])
        out = {"x": self._x[s][a:b]}
        if self.kind == "region":
            out["boxes"] = self._boxes[s][a:b]
            out["image"] = self._image[s][a:b]
        return out


def read_text(store: FeatureStore, item_id: str, max_len: int | None = None) -> np.ndarray:
    """Token features of one text, ``[CLS]`` first: (n, dim) float16, truncated to ``max_len``."""
    if store.kind != "text":
        raise FeatureStoreError(f"{store.path}: read_text on a {store.kind!r} store")
    x = store.get(item_id)["x"]
    return x if max_len is None else x[:max_len]


def cap_regions(
    image: np.ndarray,
    max_per_image: int | None = MAX_REGIONS_PER_IMAGE,
    max_per_item: int | None = MAX_REGIONS_PER_ITEM,
) -> np.ndarray:
    """Row indices kept by MCR's caps: the first ``max_per_image`` regions of each image (in
    stored order, i.e. by detector confidence), images concatenated in order, then the first
    ``max_per_item`` of those. ``None`` disables a cap.

    >>> cap_regions(np.array([0, 0, 0, 1, 1, 2]), max_per_image=2, max_per_item=4).tolist()
    [0, 1, 3, 4]
    """
    image = np.asarray(image)
    n = len(image)
    if max_per_image is not None and n:
        # rank of each row within its image, vectorised: rows of one image are contiguous
        starts = np.r_[0, np.flatnonzero(np.diff(image)) + 1]
        run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
        keep = np.flatnonzero(np.arange(n) - run_start < max_per_image)
    else:
        keep = np.arange(n)
    if max_per_item is not None:
        keep = keep[:max_per_item]
    return keep


def read_regions(
    store: FeatureStore,
    item_id: str,
    max_per_image: int | None = MAX_REGIONS_PER_IMAGE,
    max_per_item: int | None = MAX_REGIONS_PER_ITEM,
) -> tuple[np.ndarray, np.ndarray]:
    """RoI features and normalised boxes of one item after MCR's read-time caps:
    ``(x (n, dim) float16, boxes (n, 4) float32)``; n = 0 for an item without images."""
    if store.kind != "region":
        raise FeatureStoreError(f"{store.path}: read_regions on a {store.kind!r} store")
    item = store.get(item_id)
    keep = cap_regions(item["image"], max_per_image, max_per_item)
    if len(keep) == len(item["image"]):
        return item["x"], item["boxes"]
    return item["x"][keep], item["boxes"][keep]


def pad_items(
    arrays: Sequence[np.ndarray], min_len: int = 1, max_len: int | None = None, dtype: Any = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Stack ragged (n_i, d) arrays into ``padded (B, L, d)`` and ``mask (B, L)`` (True = real row).

    ``L = max(min_len, max n_i)`` (capped at ``max_len``), so an item with n = 0 (no images)
    still gets one padded, all-False column and shapes stay valid, as the Batch contract asks.

    >>> p, m = pad_items([np.ones((2, 3)), np.zeros((0, 3))])
    >>> p.shape, m.tolist()
    ((2, 2, 3), [[True, True], [False, False]])
    """
    if not len(arrays):
        raise ValueError("pad_items needs at least one array")
    d = arrays[0].shape[1:]
    lens = [min(len(a), max_len) if max_len is not None else len(a) for a in arrays]
    length = max([min_len, *lens])
    if max_len is not None:
        length = min(length, max(max_len, min_len))
    padded = np.zeros((len(arrays), length, *d), dtype=dtype)
    mask = np.zeros((len(arrays), length), dtype=bool)
    for b, (a, n) in enumerate(zip(arrays, lens, strict=True)):
        if a.shape[1:] != d:
            raise ValueError(f"pad_items: array {b} has trailing shape {a.shape[1:]}, expected {d}")
        padded[b, :n] = a[:n]
        mask[b, :n] = True
    return padded, mask


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


class FeatureStoreWriter:
    """Writes a store shard by shard; resumable.

    Two ways to use it:

    * streaming: ``add(item_id, x, boxes=None, image=None)`` buffers items and writes a shard
      every ``shard_size`` items; ``close()`` flushes the rest and writes the manifest.
    * planned (the extraction driver): split the ordered item ids into chunks of ``shard_size``;
      for chunk k skip it when ``has_shard(k, ids)``, else compute it and ``write_shard(k, items)``;
      then ``close()``. Finished shards of an interrupted run are kept and never re-read half-written.

    ``plan`` (a JSON-able dict of the settings that determine the features) is recorded in
    ``plan.json`` when the store is started; resuming with different settings raises
    :class:`FeatureStoreError` (pass ``overwrite=True`` to start over instead).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        kind: str,
        dim: int,
        manifest: Mapping[str, Any] | None = None,
        shard_size: int = DEFAULT_SHARD_SIZE,
        plan: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.path = Path(path)
        self.kind, self.dim, self.shard_size = kind, int(dim), int(shard_size)
        self.manifest_extra = dict(manifest or {})
        plan_full = self.make_plan(kind=kind, dim=self.dim, shard_size=self.shard_size, plan=plan)
        if overwrite and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.glob(f".{_SHARD_PREFIX}*"):  # half-written shards of a crash
            shutil.rmtree(stale, ignore_errors=True)
        ppath = self.path / "plan.json"
        if ppath.is_file():
            old = json.loads(ppath.read_text(encoding="utf-8"))
            if old != plan_full:
                diff = sorted(k for k in set(old) | set(plan_full) if old.get(k) != plan_full.get(k))
                raise FeatureStoreError(
                    f"{self.path}: an existing store was made with other settings ({', '.join(diff)} "
                    "differ); delete it or pass overwrite to start over"
                )
        else:
            if any(self.path.glob(f"{_SHARD_PREFIX}*")) or is_complete(self.path):
                raise FeatureStoreError(f"{self.path}: holds shards but no plan.json; delete it and re-run")
            atomic_write_json(ppath, plan_full)
        if is_complete(self.path):  # re-opened to extend: the manifest is rewritten at close
            (self.path / "manifest.json").unlink()
        self._buffer: list[tuple[str, dict[str, np.ndarray]]] = []
        self._next_shard = 0
        self._written: set[int] = set()
        self.skipped_shards = 0
        self.closed = False

    @staticmethod
    def make_plan(*, kind: str, dim: int, shard_size: int, plan: Mapping[str, Any] | None = None) -> dict:
        """The normalised content of ``plan.json`` for these settings."""
        full = {
            "format": FORMAT_VERSION,
            "kind": kind,
            "dim": int(dim),
            "shard_size": int(shard_size),
            **dict(plan or {}),
        }
        return json.loads(json.dumps(full, sort_keys=True, default=str))

    @classmethod
    def is_finished(
        cls,
        path: str | os.PathLike,
        *,
        kind: str,
        dim: int,
        shard_size: int = DEFAULT_SHARD_SIZE,
        plan: Mapping[str, Any] | None = None,
    ) -> bool:
        """True when ``path`` is a complete store made with exactly these settings (nothing to do)."""
        path = Path(path)
        if not (is_complete(path) and (path / "plan.json").is_file()):
            return False
        try:
            old = json.loads((path / "plan.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return False
        return old == cls.make_plan(kind=kind, dim=dim, shard_size=shard_size, plan=plan)

    # -- planned interface --------------------------------------------------------------------
    def shard_dir(self, index: int) -> Path:
        return self.path / _shard_name(index)

    def has_shard(self, index: int, ids: Sequence[str] | None = None) -> bool:
        """True when shard ``index`` is finished (and, if ``ids`` is given, holds exactly them)."""
        d = self.shard_dir(index)
        if not (d / "ids.json").is_file():
            return False
        if ids is not None and json.loads((d / "ids.json").read_text(encoding="utf-8")) != list(ids):
            return False
        self._written.add(index)
        return True

    def write_shard(self, index: int, items: Sequence[tuple[str, Mapping[str, np.ndarray]]]) -> Path:
        """Validate and write one shard atomically (temporary directory, then rename)."""
        ids, xs, boxes, images = [], [], [], []
        for item_id, item in items:
            x, b, im = self._check_item(item_id, item)
            ids.append(str(item_id))
            xs.append(x)
            boxes.append(b)
            images.append(im)
        if len(set(ids)) != len(ids):
            raise FeatureStoreError(f"{self.path}: duplicate item ids in shard {index}")
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(x) for x in xs])
        final = self.shard_dir(index)
        tmp = Path(tempfile.mkdtemp(prefix=f".{_shard_name(index)}.", dir=self.path))
        try:
            (tmp / "ids.json").write_text(json.dumps(ids), encoding="utf-8")
            np.save(tmp / "offsets.npy", offsets)
            np.save(tmp / "x.npy", _concat(xs, (0, self.dim), np.float16))
            if self.kind == "region":
                np.save(tmp / "boxes.npy", _concat(boxes, (0, 4), np.float32))
                np.save(tmp / "image.npy", _concat(images, (0,), np.int32))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self._written.add(index)
        return final

    def _check_item(self, item_id: str, item: Mapping[str, np.ndarray]):
        where = f"{self.path}: item {item_id!r}"
        if "x" not in item:
            raise FeatureStoreError(f"{where}: no 'x' array")
        x = np.asarray(item["x"])
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise FeatureStoreError(f"{where}: x has shape {x.shape}, expected (n, {self.dim})")
        with np.errstate(over="ignore", invalid="ignore"):
            x16 = x.astype(np.float16)
        if not np.isfinite(x16).all():
            raise FeatureStoreError(f"{where}: x holds NaN or infinite values (or values beyond float16 range)")
        if self.kind == "text":
            if len(x) == 0:
                raise FeatureStoreError(f"{where}: a text item needs at least the [CLS] token")
            return x16, None, None
        n = len(x)
        b = (
            np.asarray(item.get("boxes", np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4)
            if n
            else np.zeros((0, 4), np.float32)
        )
        if b.shape != (n, 4):
            raise FeatureStoreError(f"{where}: boxes has shape {b.shape}, expected ({n}, 4)")
        if n and (not np.isfinite(b).all() or b.min() < -1e-4 or b.max() > 1 + 1e-4):
            raise FeatureStoreError(f"{where}: boxes must be finite and normalised to [0, 1]")
        im = np.asarray(item.get("image", np.zeros(n)), dtype=np.int32).reshape(-1)
        if im.shape != (n,):
            raise FeatureStoreError(f"{where}: image has shape {im.shape}, expected ({n},)")
        if n and (im.min() < 0 or np.any(np.diff(im) < 0)):
            raise FeatureStoreError(f"{where}: image indices must be >= 0 and grouped in image order")
        return x16, b, im

    # -- streaming interface ------------------------------------------------------------------
    def add(
        self, item_id: str, x: np.ndarray, boxes: np.ndarray | None = None, image: np.ndarray | None = None
    ) -> None:
        """Buffer one item; a full buffer is written as the next shard."""
        if self.closed:
            raise FeatureStoreError(f"{self.path}: writer already closed")
        item = {"x": x}
        if boxes is not None:
            item["boxes"] = boxes
        if image is not None:
            item["image"] = image
        self._buffer.append((str(item_id), item))
        if len(self._buffer) >= self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            while self._next_shard in self._written:
                self._next_shard += 1
            self.write_shard(self._next_shard, self._buffer)
            self._buffer = []

    def close(self) -> Path:
        """Flush, check the shards (no duplicate ids, no gap) and write ``manifest.json`` last."""
        if self.closed:
            return self.path
        self._flush()
        names = sorted(p.name for p in self.path.glob(f"{_SHARD_PREFIX}*") if p.is_dir())
        expected = [_shard_name(i) for i in range(len(names))]
        if names != expected:
            raise FeatureStoreError(f"{self.path}: shards {names} are not contiguous; the run did not finish")
        n_items = n_rows = 0
        seen: set[str] = set()
        for name in names:
            ids = json.loads((self.path / name / "ids.json").read_text(encoding="utf-8"))
            dup = seen.intersection(ids)
            if dup:
                raise FeatureStoreError(
                    f"{self.path}/{name}: item id {sorted(dup)[0]!r} is already in an earlier shard"
                )
            seen.update(ids)
            n_items += len(ids)
            n_rows += int(np.load(self.path / name / "offsets.npy", allow_pickle=False)[-1])
        manifest = {
            **self.manifest_extra,
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "dtype": "float16",
            "shards": names,
            "n_items": n_items,
            "n_rows": n_rows,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_json(self.path / "manifest.json", manifest)
        self.closed = True
        return self.path

    def __enter__(self) -> FeatureStoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def _concat(arrays: list, empty_shape: tuple, dtype) -> np.ndarray:
    arrays = [a for a in arrays if a is not None and len(a)]
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(empty_shape, dtype)


def write_store(
    path: str | os.PathLike,
    items: Mapping[str, Mapping[str, np.ndarray]] | Iterable[tuple[str, Mapping[str, np.ndarray]]],
    *,
    kind: str,
    manifest: Mapping[str, Any] | None = None,
    dim: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    overwrite: bool = True,
) -> FeatureStore:
    """Write a whole store from ``{item_id: {"x": (n, d)[, "boxes": (n, 4), "image": (n,)]}}``
    and return it opened. Convenient for tests and small imports.

    >>> s = write_store(tmp / "t", {"a": {"x": np.ones((3, 8))}}, kind="text")   # doctest: +SKIP
    >>> s.get("a")["x"].shape                                                    # doctest: +SKIP
    (3, 8)
    """
    pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
    if dim is None:
        if not pairs:
            raise ValueError("write_store: pass dim= for an empty store")
        dim = int(np.asarray(pairs[0][1]["x"]).shape[-1])
    w = FeatureStoreWriter(path, kind=kind, dim=dim, manifest=manifest, shard_size=shard_size, overwrite=overwrite)
    for item_id, item in pairs:
        w.add(item_id, item["x"], item.get("boxes"), item.get("image"))
    w.close()
    return FeatureStore(path)
