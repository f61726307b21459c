"""Import region features extracted elsewhere (docs/MRHP.md section 3) into a region store.

Two source layouts under ``--from DIR`` (one folder per item, named by the item id):

* MCR packed: ``DIR/{item_id}/{item_id}.pth``, a pickled list with one dict per image,
  in image order;
* bottom-up per image: ``DIR/{item_id}/*.npz`` (files sorted by name = image order).

Each per-image record holds ``x`` (N, 2048), ``bbox`` (N, 4) in pixels x1 y1 x2 y2, ``num_bbox``,
``image_h``, ``image_w``; boxes are normalised by the image size on import.

Safety: a ``.pth`` is loaded with ``torch.load(weights_only=True)`` and a short allow-list of
numpy globals (array reconstruction, dtypes, scalars); a plain pickle (not a torch zip) goes
through a restricted unpickler with the same allow-list. Any other global (``os.system``,
``builtins.open``, a custom class...) is refused with :class:`DataError` before anything runs.

Policy for bad records (refused with a :class:`DataError` naming item, file and field): a
missing field, ``x`` not 2-D or of another width than the store's, ``bbox`` not (N, 4), a
``num_bbox`` that disagrees with N, NaN or infinite values, a non-positive image size.
Boxes slightly outside the image are clipped (counted).
"""

from __future__ import annotations

import argparse
import os
import pickle
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmss_lib.errors import DataError

__all__ = ["safe_load_pth", "load_npz_record", "normalise_record", "import_features", "cli_main"]

_NUMPY_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


def _resolve_numpy_global(module: str, name: str):
    import codecs

    if (module, name) == ("_codecs", "encode"):
        return codecs.encode
    if name == "ndarray":
        return np.ndarray
    if name == "dtype":
        return np.dtype
    from numpy._core import multiarray  # numpy >= 2; pickles written by numpy 1 name numpy.core

    return getattr(multiarray, name)


class _RestrictedUnpickler(pickle.Unpickler):
    """A pickle reader that only resolves the numpy globals an array list needs."""

    def __init__(self, f, where: str):
        super().__init__(f)
        self.where = where

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            return _resolve_numpy_global(module, name)
        raise DataError(
            f"{self.where}: refused: the pickle references {module}.{name}, which is not an "
            "array type (loading it could run arbitrary code); re-export the features as .npz"
        )

    def persistent_load(self, pid):
        raise DataError(f"{self.where}: refused: unexpected persistent id in a plain pickle")


def safe_load_pth(path: str | os.PathLike) -> Any:
    """Load an MCR ``.pth`` without executing pickle code (see the module docstring)."""
    import torch

    path = Path(path)
    if zipfile.is_zipfile(path):
        import numpy._core.multiarray as ma

        allowed = [
            (ma._reconstruct, "numpy.core.multiarray._reconstruct"),
            (ma.scalar, "numpy.core.multiarray.scalar"),
            ma._reconstruct,
            ma.scalar,
            np.ndarray,
            np.dtype,
            *{type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFD"},
        ]
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            msg = str(exc)
            glob = msg.split("Unsupported global: GLOBAL ")[-1].split(" ")[0] if "Unsupported global" in msg else None
            what = f"it references {glob}, which is not an array type" if glob else msg.splitlines()[0][:200]
            raise DataError(
                f"{path}: refused: {what} (loading it could run arbitrary code); re-export the features as .npz"
            ) from None
        except Exception as exc:
            raise DataError(
                f"{path}: cannot read this .pth ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            ) from None
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, str(path)).load()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable .pth or pickle ({type(exc).__name__}: {exc})") from None


def load_npz_record(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """One bottom-up per-image ``.npz`` (no pickled objects allowed)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from None


def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def normalise_record(rec: Any, where: str, dim: int | None = None, stats: dict | None = None):
    """Validate one per-image record; return ``(x (N, d) float32, boxes (N, 4) normalised)``."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a dict with x, bbox, image_h, image_w; got {type(rec).__name__}")
    for key in ("x", "bbox", "image_h", "image_w"):
        if key not in rec:
            raise DataError(f"{where}: field {key!r} missing (expected x, bbox, num_bbox, image_h, image_w)")
    x = _to_numpy(rec["x"]).astype(np.float32)
    bbox = _to_numpy(rec["bbox"]).astype(np.float64)
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        raise DataError(f"{where}: field 'x' has shape {x.shape}, expected (N, {dim or 'd'})")
    n = len(x)
    if bbox.shape != (n, 4):
        raise DataError(f"{where}: field 'bbox' has shape {bbox.shape}, expected ({n}, 4)")
    if "num_bbox" in rec and int(_to_numpy(rec["num_bbox"]).reshape(-1)[0]) != n:
        raise DataError(
            f"{where}: field 'num_bbox' is {int(_to_numpy(rec['num_bbox']).reshape(-1)[0])} but x has {n} rows"
        )
    if not (np.isfinite(x).all() and np.isfinite(bbox).all()):
        raise DataError(f"{where}: NaN or infinite values in 'x' or 'bbox'")
    h, w = float(_to_numpy(rec["image_h"]).reshape(-1)[0]), float(_to_numpy(rec["image_w"]).reshape(-1)[0])
    if not (h > 0 and w > 0):
        raise DataError(f"{where}: image_h / image_w must be positive, got {h} x {w}")
    boxes = bbox / np.array([w, h, w, h])
    clipped = np.clip(boxes, 0.0, 1.0)
    if stats is not None and not np.array_equal(clipped, boxes):
        stats["clipped_images"] = stats.get("clipped_images", 0) + 1
    return x, clipped.astype(np.float32)


def _detect_format(src: Path) -> str:
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        if (d / f"{d.name}.pth").is_file():
            return "pth"
        if any(d.glob("*.npz")):
            return "npz"
    raise DataError(f"{src}: no item folders with {{item_id}}/{{item_id}}.pth or {{item_id}}/*.npz found")


def _item_records(src: Path, item_id: str, fmt: str) -> Iterator[tuple[str, Any]]:
    d = src / item_id
    if fmt == "pth":
        f = d / f"{item_id}.pth"
        if not f.is_file():
            return
        recs = safe_load_pth(f)
        if isinstance(recs, dict):
            recs = [recs]
        if not isinstance(recs, (list, tuple)):
            raise DataError(f"{f}: expected a list of per-image dicts, got {type(recs).__name__}")
        for j, r in enumerate(recs):
            yield f"{f} [image {j}]", r
    else:
        for f in sorted(d.glob("*.npz")) if d.is_dir() else []:
            yield str(f), load_npz_record(f)


def import_features(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    fmt: str = "auto",
    item_ids: Sequence[str] | None = None,
    shard_size: int = 1024,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Convert a folder of per-item bottom-up / MCR features into a region store.

    ``item_ids`` (e.g. every product or review id of a category) also gives items without a
    feature folder, stored with zero regions; by default the item folders found are imported.
    Returns a report dict (counts; the store is at ``out``).
    """
    from mmss_lib.features.store import FeatureStoreWriter

    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: source folder does not exist")
    fmt = _detect_format(src) if fmt == "auto" else fmt
    if fmt not in ("pth", "npz"):
        raise ValueError(f"fmt must be auto, pth or npz, got {fmt!r}")
    found = sorted(p.name for p in src.iterdir() if p.is_dir())
    ids = list(item_ids) if item_ids is not None else found
    from mmss_lib.data.mrhp import check_item_id

    ids = [
        check_item_id(i, file=src if item_ids is None else "item_ids", row=k, field="item_id")
        for k, i in enumerate(ids)
    ]
    stats: dict[str, Any] = {
        "items": len(ids),
        "items_without_features": 0,
        "images": 0,
        "regions": 0,
        "clipped_images": 0,
    }
    writer = None
    dim = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ids), desc=f"import {src.name}", unit="item")
    manifest = {
        "source": str(src.resolve()),
        "source_format": {"pth": "MCR packed .pth", "npz": "bottom-up .npz"}[fmt],
        "detector": "bottom-up-attention Faster R-CNN (imported)",
        "random_weights": False,
        "weights_fingerprint": "imported",
        "boxes": "x1 y1 x2 y2 normalised",
    }
    pending: list = []  # items before the dimension is known (leading items without features)
    for item_id in ids:
        xs, bs, ims = [], [], []
        for j, (where, rec) in enumerate(_item_records(src, item_id, fmt)):
            x, b = normalise_record(rec, f"item {item_id!r}: {where}", dim, stats)
            dim = dim or x.shape[1]
            xs.append(x)
            bs.append(b)
            ims.append(np.full(len(x), j, np.int32))
        if not xs:
            stats["items_without_features"] += 1
        stats["images"] += len(xs)
        item = {
            "x": np.concatenate(xs) if xs else None,
            "boxes": np.concatenate(bs) if bs else None,
            "image": np.concatenate(ims) if ims else None,
        }
        pending.append((item_id, item))
        if dim is not None:
            if writer is None:
                writer = FeatureStoreWriter(
                    out,
                    kind="region",
                    dim=dim,
                    manifest=manifest,
                    shard_size=shard_size,
                    plan={"source": manifest["source"], "ids": len(ids)},
                    overwrite=overwrite,
                )
            for pid, it in pending:
                if it["x"] is None:
                    it = {
                        "x": np.zeros((0, dim), np.float32),
                        "boxes": np.zeros((0, 4), np.float32),
                        "image": np.zeros(0, np.int32),
                    }
                stats["regions"] += len(it["x"])
                writer.add(pid, it["x"], it["boxes"], it["image"])
            pending = []
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if writer is None:
        raise DataError(f"{src}: none of the {len(ids)} items has features to import")
    writer.close()
    stats["dim"] = dim
    stats["store"] = str(out)
    return stats


def cli_main(argv: list[str], prog: str = "mmss import-features") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="src", required=True, help="folder of {item_id}/ sub-folders (.pth or .npz)")
    p.add_argument("--out", required=True, help="region store to write")
    p.add_argument("--format", default="auto", choices=["auto", "pth", "npz"])
    p.add_argument(
        "--data-root",
        help="with --dataset/--category/--side: include every item id of the "
        "category (items without features get zero regions)",
    )
    p.add_argument("--dataset")
    p.add_argument("--category")
    p.add_argument("--side", choices=["prd", "rvw"], default="rvw")
    p.add_argument("--shard-size", type=int, default=1024)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    ids = None
    if a.data_root:
        if not (a.dataset and a.category):
            p.error("--data-root needs --dataset and --category")
        from mmss_lib.data.mrhp import load_mrhp

        ids = []
        for split in ("train", "dev", "test"):
            prd, rvw = load_mrhp(a.data_root, a.dataset, a.category, split)
            col = "product_id" if a.side == "prd" else "review_id"
            ids += (prd if a.side == "prd" else rvw)[col].astype(str).tolist()
        ids = list(dict.fromkeys(ids))
    rep = import_features(
        a.src, a.out, fmt=a.format, item_ids=ids, shard_size=a.shard_size, overwrite=a.overwrite, progress=True
    )
    print(
        f"imported {rep['items']} items ({rep['items_without_features']} without features), "
        f"{rep['images']} images, {rep['regions']} regions of dim {rep['dim']} -> {rep['store']}"
        + (f"; {rep['clipped_images']} images had boxes clipped to the image" if rep["clipped_images"] else "")
    )
    return 0
