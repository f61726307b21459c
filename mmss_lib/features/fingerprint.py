"""Content fingerprints of feature stores: which texts and image files a store was built from.

A store's fingerprint (``content_fingerprint`` in its ``plan.json`` and ``manifest.json``) is a
digest over its items, sorted by item id, of

- text stores (``text_prd`` / ``text_rvw``): the item id and the item's text (the ``text`` column
  of :func:`mmss_lib.data.mrhp.load_mrhp`: product name + description, review text);
- region stores (``region_prd`` / ``region_rvw``): the item id and, per local image file in
  order, its file name (not its folder), its size in bytes and a digest of its first 4 KiB.

Labels are not part of it (datasets that differ only in labels share one store), nor are the
folders the files lie in (a copied dataset keeps its fingerprint). An image edited in place that
keeps its exact size and its first 4 KiB goes unnoticed (the price of not reading every image
at every training start). The check costs one ``stat`` per image at every split load and a read
of its first 4 KiB once per process (kept by path, size and modification time).

- ``mmss extract`` rerun on changed inputs (a text edited, an image replaced, added or removed)
  refuses with a message naming ``--overwrite`` (which rebuilds the store); unchanged inputs skip
  the store as before.
- Training (:func:`mmss_lib.training.trainer.load_splits`) refuses a store whose fingerprint differs from the
  data it loads (:class:`~mmss_lib.errors.FeatureStoreError` naming the store, the category and
  ``mmss extract --overwrite``). A store written before fingerprints existed (no
  ``content_fingerprint`` in its manifest) is accepted with a warning (once per store and
  process) saying it cannot be checked; re-extract it with ``--overwrite`` to record one.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

FINGERPRINT_VERSION = "content-v1"
IMAGE_HEAD_BYTES = 4096

_warned: set = set()


_heads: dict = {}  # (path, size, mtime_ns) -> digest of the first bytes (runs of one process share it)


def _file_part(path: str) -> str:
    p = Path(path)
    try:
        st = p.stat()
        key = (str(p), st.st_size, st.st_mtime_ns)
        head = _heads.get(key)
        if head is None:
            with open(p, "rb") as fh:
                head = hashlib.blake2b(fh.read(IMAGE_HEAD_BYTES), digest_size=8).hexdigest()
            if len(_heads) < 2_000_000:
                _heads[key] = head
        size = st.st_size
    except OSError:
        size, head = -1, "missing"
    return f"{p.name}\x1f{size}\x1f{head}"


def _item_parts(kind: str, frame, id_col: str) -> Iterable[tuple[str, str]]:
    ids = [str(i) for i in frame[id_col].tolist()]
    if kind == "text":  # a missing text (NaN, None) counts as its repr
        return zip(ids, [t if isinstance(t, str) else repr(t) for t in frame["text"].tolist()], strict=True)
    files = frame["image_files"].tolist() if "image_files" in frame.columns else [[]] * len(ids)
    return (
        (i, "\x1e".join(_file_part(f) for f in (fs if isinstance(fs, (list, tuple)) else [])))
        for i, fs in zip(ids, files, strict=True)
    )


def content_fingerprint(kind: str, frame, id_col: str) -> str:
    """The fingerprint of a store of ``kind`` ("text" | "region") holding the items of ``frame``
    (products with ``product_id`` or reviews with ``review_id``; duplicate ids count once)."""
    items = dict(_item_parts(kind, frame, id_col))
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{FINGERPRINT_VERSION}\x1d{kind}\x1d".encode())
    for item_id in sorted(items):
        h.update(item_id.encode("utf-8", "surrogatepass") + b"\x1d")
        h.update(items[item_id].encode("utf-8", "surrogatepass") + b"\x1c")
    return f"{FINGERPRINT_VERSION}:{h.hexdigest()}"


def category_frames(frames: Mapping[str, tuple[Any, Any]]):
    """``{split: (products, reviews)}`` -> (all products, all reviews) as ``extract`` sees them."""
    import pandas as pd

    products = pd.concat([p for p, _ in frames.values()], ignore_index=True)
    reviews = pd.concat([r for _, r in frames.values()], ignore_index=True)
    products = products.assign(product_id=products["product_id"].astype(str))
    products = products.drop_duplicates("product_id", keep="first").reset_index(drop=True)
    return products, reviews


def check_features_match(stores: Mapping[str, Any], frames: Mapping[str, tuple[Any, Any]], *, where: str) -> None:
    """Refuse opened ``stores`` (name -> FeatureStore) whose content fingerprint differs from the
    texts / image files of ``frames`` (``{split: (products, reviews)}`` of the category ``where``);
    warn (once) about stores without a fingerprint. See the module docstring."""
    from mmss_lib.errors import FeatureStoreError

    products, reviews = category_frames(frames)
    for name, store in stores.items():
        manifest = getattr(store, "manifest", None) or {}
        kind, side = name.split("_")
        recorded = manifest.get("content_fingerprint")
        path = getattr(store, "path", name)
        if not recorded:
            key = str(path)
            if key not in _warned:
                _warned.add(key)
                warnings.warn(
                    f"{path}: this feature store records no content fingerprint (extracted before "
                    "fingerprints existed), so stale features cannot be detected; re-extract with "
                    "`mmss extract --overwrite` to record one",
                    UserWarning,
                    stacklevel=3,
                )
            continue
        frame, id_col = (products, "product_id") if side == "prd" else (reviews, "review_id")
        now = content_fingerprint(kind, frame, id_col)
        if now != recorded:
            what = "texts" if kind == "text" else "image files"
            raise FeatureStoreError(
                f"{path}: stale features: the {what} of {where} changed since this store was extracted "
                f"(content fingerprint {recorded}, the data now {now}); re-extract with "
                "`mmss extract ... --overwrite` (or point --features at the store of this data)"
            )


# ------------------------------------------------------------------------------------ a store's identity

# what of a store's manifest says which features it holds (not when or where it was written)
IDENTITY_MANIFEST_FIELDS = ("content_fingerprint", "kind", "dim", "dtype", "n_items", "n_rows")
# what of its plan.json (the extraction settings) does not: the ids are the content fingerprint's
_PLAN_NOT_SETTINGS = ("ids", "n_items", "content", "format", "kind", "dim", "shard_size")


def store_identity(manifest: Mapping[str, Any] | None, plan: Mapping[str, Any] | None = None) -> dict:
    """Which features a store holds, for a run's or a study's identity: the manifest's content
    fingerprint (the texts / image files), kind, dim, dtype, item and row counts, and the
    extraction settings of its ``plan.json`` (text encoder and ``max_len``, detector options) under
    ``"settings"``. Two stores of one data at other ``--text-max-len`` share a content fingerprint
    but not an identity (their settings and row counts differ)."""
    manifest = dict(manifest or {})
    out = {k: manifest[k] for k in IDENTITY_MANIFEST_FIELDS if k in manifest}
    if plan:
        out["settings"] = {k: v for k, v in dict(plan).items() if k not in _PLAN_NOT_SETTINGS}
    return json.loads(json.dumps(out, sort_keys=True, default=str))


def read_store_identity(path) -> dict:
    """:func:`store_identity` of the store at ``path`` (its ``manifest.json`` and ``plan.json``;
    a store without a plan, e.g. one written by an importer, has no ``settings``)."""
    path = Path(path)
    manifest = _read_json_or_none(path / "manifest.json")
    if manifest is None:
        from mmss_lib.errors import FeatureStoreError

        raise FeatureStoreError(f"{path}: no readable manifest.json; the store is incomplete (run mmss extract)")
    return store_identity(manifest, _read_json_or_none(path / "plan.json"))


def identity_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two store identities, as ``field old -> new`` phrases (settings by name);
    fields one side does not record (a run recorded before settings were) are not compared."""
    out = []
    for key in sorted(set(old) & set(new)):
        a, b = old[key], new[key]
        if key == "settings" and isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if a.get(k) != b.get(k):
                    out.append(f"{k} {a.get(k)!r} -> {b.get(k)!r}")
        elif a != b:
            if key == "content_fingerprint":
                out.append("content (texts / image files)")
            else:
                out.append(f"{key} {a!r} -> {b!r}")
    return out


def _read_json_or_none(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
