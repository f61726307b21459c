"""``mmss predict``: rank the reviews of one product from raw text and images with a trained run.

Features are extracted on the fly with the same settings the run's feature stores were made
with (recorded in ``best.pt`` / ``config.json`` from the store manifests): the text encoder and
its maximum length, the detector's input sizes and box-selection policy. The fingerprints of
the encoder and detector weights are compared with the recorded ones, so a model is never fed
features from another encoder. The features go through small temporary stores and the same
loader as training (same read-time caps, same padding), then the best checkpoint scores them.
Reviews are encoded, stored and scored in batches of ``--batch-size`` (default: the run's
``eval_batch_size``), so memory stays flat in the number of reviews of the product; the scores
are those of one batch.

Input JSON of the CLI::

    {"product": {"text": "...", "image_files": ["a.jpg"]},
     "reviews": [{"review_id": "r1", "text": "...", "image_files": []}, ...]}

The schema is strict: ``product`` a mapping with a non-empty string ``text`` and an optional list
of image paths ``image_files`` (also ``product_id``); ``reviews`` a non-empty list of mappings
with ``text``, optional ``review_id`` and ``image_files``; unknown fields are refused; each
violation is one error naming the field (``reviews[2].image_files``). An image that cannot be
decoded is an error naming the file (extraction skips such images and lists them; here one
dropped image would silently change the ranking of the product it belongs to).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmss_lib.data.mrhp import check_item_id
from mmss_lib.errors import CheckpointError, DataError, ModelNotAvailableError
from mmss_lib.training.checkpoints import load_checkpoint

PRODUCT_FIELDS = ("text", "image_files", "product_id")
REVIEW_FIELDS = ("text", "image_files", "review_id")


def _field_error(where: str, field: str, expected: str, value: Any) -> DataError:
    return DataError(f"{where}: field {field!r}: expected {expected}, got {type(value).__name__} {value!r:.60}")


def _check_schema(product: Any, reviews: Any, where: str = "predict input") -> None:
    """The input schema, strictly: ``product`` a mapping with a non-empty string ``text`` and an
    optional list of image paths ``image_files``; ``reviews`` a non-empty list of mappings, each
    with a non-empty string ``text``, optional ``review_id`` and ``image_files``. Unknown fields
    are refused (a misspelt ``image_file`` would silently drop the images). Each violation is one
    :class:`DataError` naming the field (``product.text``, ``reviews[2].image_files``)."""
    from mmss_lib.data.mrhp import visible_text

    if not isinstance(product, dict):
        raise _field_error(where, "product", 'a mapping {"text": ..., "image_files": [...]}', product)
    if not isinstance(reviews, list) or not reviews:
        raise _field_error(
            where, "reviews", 'a non-empty list of mappings {"review_id", "text", "image_files"}', reviews
        )
    items = [("product", product, PRODUCT_FIELDS)]
    for i, r in enumerate(reviews):
        if not isinstance(r, dict):
            raise _field_error(where, f"reviews[{i}]", 'a mapping {"review_id", "text", "image_files"}', r)
        items.append((f"reviews[{i}]", r, REVIEW_FIELDS))
    for name, item, allowed in items:
        unknown = sorted(str(k) for k in item if k not in allowed)
        if unknown:
            raise DataError(
                f"{where}: {name}: unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(allowed)}"
            )
        if "text" not in item:
            raise DataError(f"{where}: field '{name}.text' is missing; every item needs a non-empty text")
        text = item["text"]
        if not isinstance(text, str) or not visible_text(text):
            raise _field_error(where, f"{name}.text", "a non-empty string", text)
        files = item.get("image_files")
        if files is not None and (not isinstance(files, list) or not all(isinstance(f, str) and f for f in files)):
            raise _field_error(where, f"{name}.image_files", "a list of image file paths (strings)", files)


def _check_images(product: dict, reviews: Sequence[dict]) -> None:
    """Every image file decodes (the extraction's decoder): an undecodable image is an error
    naming the file, not a silent drop that would change the ranking."""
    from mmss_lib.features.regions import RegionReport, load_image

    rep = RegionReport()
    for name, item in [("product", product)] + [(f"reviews[{i}]", r) for i, r in enumerate(reviews)]:
        for f in item.get("image_files") or []:
            if load_image(f, report=rep, item_id=name) is None:
                reason = rep.bad[-1].split(": ", 2)[-1]
                raise DataError(
                    f"predict input: field '{name}.image_files': image {f} cannot be decoded ({reason}); "
                    "give a readable image (JPEG, PNG, ...) or leave the file out"
                )


def _check_inputs(product: dict, reviews: Sequence[dict]) -> None:
    _check_schema(product, reviews)
    seen = set()
    for i, r in enumerate(reviews):
        if not isinstance(r, dict) or "text" not in r:
            raise DataError(f"predict: review {i} must be a dict with 'text' (and optional 'review_id', 'image_files')")
        rid = check_item_id(r.get("review_id", f"r{i}"), file="predict input", row=i, field="review_id")
        if not isinstance(r["text"], str):
            raise DataError(
                f"predict input: row {i} (review {rid}), field 'text': expected a string, got "
                f"{type(r['text']).__name__}"
            )
        if rid in seen:
            raise DataError(f"predict: review_id {rid!r} given twice (review {i})")
        seen.add(rid)
        for f in r.get("image_files") or []:
            if not Path(f).is_file():
                raise DataError(f"predict: review {rid}: image file {f} does not exist")
    for f in product.get("image_files") or []:
        if not Path(f).is_file():
            raise DataError(f"predict: product image file {f} does not exist")


def _text_encoder(ck, path, tman, text_model, encoder, device):
    """The encoder the run's text stores were extracted with (cached text mode), loaded unless
    given, checked by its weights fingerprint and feature size against the checkpoint."""
    if encoder is None:
        from mmss_lib.features.text import TextEncoder

        name = text_model or tman.get("encoder")
        if not name:
            raise ModelNotAvailableError(f"{path}: the run records no text encoder; pass text_model")
        encoder = TextEncoder(name, max_len=int(tman.get("max_len", 512)), device=device)
    if tman.get("weights_fingerprint") and encoder.fingerprint() != tman["weights_fingerprint"]:
        raise ModelNotAvailableError(
            f"text model {encoder.name!r} is not the encoder the run's features were extracted with "
            f"({tman.get('encoder')!r}, fingerprint {tman['weights_fingerprint']}); pass that model"
        )
    if encoder.dim != int(ck["text_dim"]):
        raise ModelNotAvailableError(
            f"text model {encoder.name!r} gives {encoder.dim}-d features, the run "
            f"was trained on {ck['text_dim']}-d ones"
        )
    return encoder


def _region_extractor(rman, extractor, detector_weights, allow_random_weights, device):
    """The region extractor with the detector settings the run's region stores were made with
    (grid boxes + a pooled backbone, or the detector), checked by its weights fingerprint."""
    sel = rman.get("selection", {})
    if extractor is None and sel.get("box") == "grid":  # grid boxes + a pretrained pooled backbone
        from mmss_lib.features.regions import make_region_extractor

        extractor = make_region_extractor(
            None,
            region_boxes="grid",
            device=device,
            min_size=rman.get("min_size"),
            max_size=rman.get("max_size"),
            grid=tuple(sel.get("levels", (1, 2, 3))),
            region_backbone=(rman.get("region_backbone") or {}).get("name", "mobilenet_v2"),
        )
    if extractor is None:
        from mmss_lib.features.regions import RegionExtractor

        opts = {
            k: sel[k]
            for k in ("conf_thresh", "min_boxes", "max_boxes", "nms_thresh", "candidate_thresh", "rpn_post_nms_top_n")
            if k in sel
        }
        extractor = RegionExtractor(
            detector_weights,
            allow_random_weights=allow_random_weights,
            device=device,
            min_size=rman.get("min_size"),
            max_size=rman.get("max_size"),
            **opts,
        )
    if rman.get("weights_fingerprint") and extractor.fingerprint != rman["weights_fingerprint"]:
        raise ModelNotAvailableError(
            f"detector weights {extractor.weights_source} are not those the run's features were extracted "
            f"with ({rman.get('detector_weights')}, fingerprint {rman['weights_fingerprint']})"
        )
    return extractor


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataError(
            f"predict: batch_size={batch_size!r} (--batch-size): expected an integer >= 1 (reviews per forward pass)"
        )
    return int(batch_size)


def predict(
    checkpoint_dir_or_file,
    product: dict,
    reviews: Sequence[dict],
    *,
    text_model: str | None = None,
    detector_weights=None,
    allow_random_weights: bool = False,
    device: str = "cpu",
    encoder=None,
    extractor=None,
    batch_size: int | None = None,
):
    """Rank ``reviews`` of ``product`` with the run's best model; returns a DataFrame sorted by
    score (descending, stable) with ``rank`` (1 = most helpful), ``review_id``, ``score`` and the
    subtask outputs ``score_{s}`` of MM-SS.

    ``text_model`` defaults to the encoder recorded in the run's text store manifest;
    ``detector_weights`` / ``allow_random_weights`` as for ``mmss extract``. ``encoder`` /
    ``extractor`` may pass already loaded :class:`~mmss_lib.features.text.TextEncoder` /
    :class:`~mmss_lib.features.regions.RegionExtractor` objects.

    ``batch_size`` reviews (default: the run's ``eval_batch_size``) at a time are encoded,
    written to the temporary stores and scored, so memory stays flat in the number of reviews
    (one product with 10,000 reviews used to go through one forward pass); a review's score does
    not depend on the other reviews of its batch.
    """
    import pandas as pd
    import torch

    from mmss_lib.features.loader import MRHPSplitData, ReadCaps
    from mmss_lib.features.store import FeatureStore, FeatureStoreWriter
    from mmss_lib.training.trainer import TrainConfig, build_model, collate_for

    _check_inputs(product, reviews)
    _check_images(product, reviews)
    ck, path = load_checkpoint(checkpoint_dir_or_file)
    cfg = TrainConfig.from_json(ck["config"])
    bs = _check_batch_size(cfg.eval_batch_size if batch_size is None else batch_size)
    feats = ck.get("features") or {}
    tman, rman = feats.get("text_rvw", {}), feats.get("region_rvw", {})
    on_the_fly = cfg.text_mode != "cached"  # frozen / finetune: the model encodes the raw texts itself
    rids = [
        str(check_item_id(r.get("review_id", f"r{i}"), file="predict input", row=i, field="review_id"))
        for i, r in enumerate(reviews)
    ]
    texts = [str(r["text"]) for r in reviews]
    if not on_the_fly:
        encoder = _text_encoder(ck, path, tman, text_model, encoder, device)
    image_lists = [list(product.get("image_files") or [])] + [list(r.get("image_files") or []) for r in reviews]
    if any(image_lists):  # region features with the recorded detector settings
        extractor = _region_extractor(rman, extractor, detector_weights, allow_random_weights, device)
    dt, dr = int(ck["text_dim"]), int(ck["region_dim"])
    if not on_the_fly:  # the weights fit the recorded system, before any encoder is loaded
        _load_weights(build_model(TrainConfig.from_json({**ck["config"], "device": "cpu"}), dt, dr), ck, path)
    no_regions = {
        "x": np.zeros((0, dr), np.float16),
        "boxes": np.zeros((0, 4), np.float32),
        "image": np.zeros(0, np.int32),
    }

    def regions(lists, ids):
        return extractor.extract_items(lists, ids) if any(lists) else [no_regions] * len(lists)

    with tempfile.TemporaryDirectory(prefix="mmss-predict-") as tmp:
        tmp = Path(tmp)
        pid = "product"
        kinds = ("region_prd", "region_rvw") if on_the_fly else ("text_prd", "text_rvw", "region_prd", "region_rvw")
        writers = {
            k: FeatureStoreWriter(
                tmp / k, kind=k.split("_")[0], dim=dr if k.startswith("region") else dt, shard_size=bs
            )
            for k in kinds
        }
        if not on_the_fly:
            writers["text_prd"].add(pid, encoder.encode([str(product["text"])])[0])
        writers["region_prd"].add(pid, **regions(image_lists[:1], [pid])[0])
        for a in range(0, len(rids), bs):  # features of one batch of reviews at a time
            ids = rids[a : a + bs]
            if not on_the_fly:
                for r, x in zip(ids, encoder.encode(texts[a : a + bs]), strict=True):
                    writers["text_rvw"].add(r, x)
            for r, item in zip(ids, regions(image_lists[1 + a : 1 + a + bs], ids), strict=True):
                writers["region_rvw"].add(r, **item)
        for w in writers.values():
            w.close()
        stores = {k: FeatureStore(tmp / k) for k in kinds}
        frame = pd.DataFrame({"review_id": rids, "product_id": pid, "label": 0, "text": texts})
        products = pd.DataFrame({"product_id": [pid], "text": [str(product["text"])]})
        split = MRHPSplitData(frame, products, stores, caps=ReadCaps.of(cfg), keep_texts=on_the_fly, name="predict")
        run_cfg = TrainConfig.from_json({**ck["config"], "device": device})
        model = build_model(run_cfg, dt, dr)  # on the fly: with its encoder
        _load_weights(model, ck, path)
        model.eval()
        scores = np.zeros(split.n, dtype=np.float32)
        subs: dict[str, np.ndarray] = {}
        collate = collate_for(split, run_cfg, getattr(model, "tokenizer", None))
        with torch.no_grad():
            for idx, batch in split.iter_batches(None, bs, collate=collate):  # one batch of reviews at a time
                out = model(batch)
                scores[idx] = out.score.float().numpy()
                for s_, v in out.sub_scores.items():
                    subs.setdefault(s_, np.zeros(split.n, dtype=np.float32))[idx] = v.float().numpy()
    df = pd.DataFrame({"review_id": rids, "score": scores})
    for s_, v in subs.items():
        df[f"score_{s_}"] = v
    df = df.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    return df


def _load_weights(model, ck: dict, path) -> None:
    """The checkpoint's weights into ``model``; weights of another system than its config names (an
    edited config, a file of another run) are one line naming the file, not torch's state_dict dump."""
    try:
        model.load_state_dict(ck["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: its weights do not fit the {ck['config'].get('system')!r} model its config names "
            f"({first[:160]}); the file was edited or belongs to another run: pass the run folder that "
            "wrote it"
        ) from None


def _read_input(path: Path) -> tuple[dict, list[dict]]:
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: input file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: a folder, not a JSON input file") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); JSON "
            "input must be UTF-8: save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise DataError(
            f"{path}: JSON nested too deeply (more than Python's {sys.getrecursionlimit()} levels); expected "
            "an object with 'product' and 'reviews'"
        ) from None
    if not isinstance(obj, dict) or "product" not in obj or "reviews" not in obj:
        raise DataError(f"{path}: expected an object with 'product' and 'reviews'")
    _check_schema(obj["product"], obj["reviews"], where=str(path))
    base = Path(path).parent

    def fix(d):  # image paths relative to the input file
        d = dict(d)
        d["image_files"] = [str(f if Path(f).is_absolute() else base / f) for f in d.get("image_files") or []]
        return d

    return fix(obj["product"]), [fix(r) for r in obj["reviews"]]


def cli_main(argv: list[str], prog: str = "mmss predict") -> int:
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Rank the reviews of a product (JSON: product "
        "{text, image_files}, reviews [{review_id, text, image_files}]) with a trained run.",
    )
    ap.add_argument("--run", required=True, help="run folder (holding best.pt) or a best.pt file")
    ap.add_argument("--input", required=True, help="product JSON file")
    ap.add_argument("--text-model", default=None, help="default: the encoder recorded with the run's features")
    ap.add_argument("--detector-weights", default=None)
    ap.add_argument("--allow-random-weights", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--csv", default=None, help="also write the ranking to this CSV file")
    ap.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="reviews encoded and scored at a time (default: the run's eval_batch_size)",
    )
    args = ap.parse_args(argv)
    if args.batch_size is not None:
        _check_batch_size(args.batch_size)
    if args.csv:  # before any scoring: the ranking would be computed, then not written
        csv = Path(args.csv)
        if csv.is_dir():
            raise DataError(f"--csv {args.csv}: a folder; give the path of the CSV file to write")
        up = csv.parent
        while not up.exists() and up != up.parent:
            up = up.parent
        if up.exists() and not up.is_dir():
            raise DataError(f"--csv {args.csv}: {up} is a file, not a folder")
    product, reviews = _read_input(Path(args.input))
    df = predict(
        args.run,
        product,
        reviews,
        text_model=args.text_model,
        detector_weights=args.detector_weights,
        allow_random_weights=args.allow_random_weights,
        device=args.device,
        batch_size=args.batch_size,
    )
    if args.csv:
        from mmss_lib.utils import atomic_path

        with atomic_path(args.csv) as tmp:
            df.to_csv(tmp, index=False)
    print(df[["rank", "review_id", "score"]].to_string(index=False))
    return 0
