"""The embedded synthetic demo dataset (``dataset = "demo"``): ``mmss make-demo``.

A deterministic, MRHP-format dataset (Amazon field format, English) in three categories
(``clothing``, ``electronics``, ``home``) with real PNG images under the local image layout
``{root}/demo/{category}/images/{prd|rvw}/{item_id}/{j}.png``. It is small enough that the whole
pipeline (feature extraction, training several systems) runs in minutes on a CPU, and it
exercises every path the real data does: reviews and products without images, image URLs
without a local file, single-review products, non-contiguous row indices.

Generative process (per category, all draws from one ``numpy`` generator seeded by
``(seed, category index)``):

1. **Products.** Each product has a latent *kind* = (colour, object) drawn from a small
   vocabulary (8 colours x 6 objects per category). The kind is rendered into the product
   text (name ``"<Colour> <material> <object>"`` plus description sentences naming the colour and
   the object) and into its 0-3 images (a shape specific to the object, filled with the colour,
   on a light background with jitter). Products get 1 to 15 reviews (a few exactly one).
2. **Reviews.** Each review draws independent latent cues:
   - ``match`` (p = 0.6): the review text describes the product's kind; otherwise it describes
     another kind (a different colour and/or object) -> signal in product text-review text and
     product image-review text;
   - ``detail`` k in 0..3: the number of informative detail sentences (about the described kind:
     material, fit/size, use, durability), the rest being uninformative filler -> signal in the
     review text alone;
   - images (p ~ 0.5, 1-2 images): each image shows the kind the text describes with p = 0.5
     (``agree``), else the product's kind when the text does not describe it (p = 0.5), else a
     random kind. ``agree`` -> signal in review text-review image; ``img_match`` (the images
     show the product's kind) -> signal in product image-review image and product text-review
     image.
3. **Label.** ``s = 1.1 * match + 0.9 * k / 3 + has_images * w * (agree + img_match - 0.5)
   + N(0, 0.45^2)``, binned by fixed cut points into 0..4; ``w`` = ``image_weight``, 0.6 by default
   (``0.6 * agree + 0.6 * img_match - 0.3``; 0: the images carry nothing). No single cue decides the label
   (each shifts ``s`` by at most 1.1 of a range of about 3.5) and labels spread within a product.
   The text cues have a weight too, ``t`` = ``text_weight`` (1 by default, the formula above): their
   part becomes ``t * (1.1 * match + 0.9 * k / 3) + (1 - t) * 1.11``, 1.11 being that part's expected
   value under the draws (``1.1 * 0.6 + 0.9 * 0.5``), so the label's mean, and with it the share of
   relevant reviews, stays where it is; ``t = 0``: only the images and their agreement carry the
   label (the "images alone" setting of the claims study, ``studies/claims.py``).

Latent cues. Next to each split the generator writes the cues it drew,
``{root}/demo/{category}/{category}.cues.{split}``, in the layout of the other MRHP files (pandas
``DataFrame.to_json()``, default column orientation, the rvw file's row index), with columns
``review_id, match, detail, has_images, agree, img_match`` (0/1; ``detail`` 0..3; ``agree`` and
``img_match`` NaN for a review without images). No model, loader or extractor reads them; they
are the ground truth for analyses (e.g. :mod:`mmss_lib.evaluation.ssp_analysis`). Which MM-SS interaction
(Sec. 4.2) each cue feeds, by construction of the text and images:

- ``match`` -> ptrt (product text-review text) and pvrt (product image-review text): the review
  text names the product's colour and object or another kind's;
- ``img_match`` -> pvrv (product image-review image) and ptrv (product text-review image): the
  review images show the product's kind or not;
- ``agree`` -> rtrv (review text-review image): the review images show the kind the text names;
- ``detail`` -> the review text alone (informative sentences; no interaction of its own);
- ``has_images`` -> whether the image cues exist at all (+0.6 agree + 0.6 img_match - 0.3).

Images carry signal the text cannot (the design of the ``benchmark`` profile, fixed before any
of its results was seen; issue 10). ``agree`` and ``img_match`` move the label by 0.6 each, and
nothing of them is written into any text: the review text names the kind it describes, never the
kind its images show. A text-only system can use ``match`` and ``detail`` only; the image cues are
visible only to a system that compares the review images with the review text (``agree``) or with
the product's text or images (``img_match``). ``notebooks/params/benchmark.yaml`` generates this
process unchanged at ``SIZES["benchmark"]`` products per category (700 test products per category,
enough for a 95% interval of a paired MAP difference of about +-1.5 points; the computation is in
that file).

The demo's relevance threshold is 1 (:func:`mmss_lib.data.mrhp.default_threshold`), as for Amazon.
Same seed -> byte-identical files (PNG written without timestamps or metadata).
"""

from __future__ import annotations

import argparse
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmss_lib.data.mrhp import CATEGORIES, SPLITS, image_dir, split_by_product, split_file, split_sizes, write_mrhp
from mmss_lib.errors import DataError
from mmss_lib.utils import atomic_path, atomic_write_json

DATASET = "demo"
SIZES: dict[str, int] = {"small": 40, "medium": 500, "benchmark": 3500, "large": 6500}  # products per category
DEFAULT_PRODUCTS = SIZES["small"]
IMAGE_WEIGHT = 0.6  # weight of the image cues in the label (step 3 of the module docstring)
TEXT_WEIGHT = 1.0  # weight of the text cues in the label (step 3)
TEXT_MEAN = 1.1 * 0.6 + 0.9 * 1.5 / 3  # expected value of the text cues' part of s (match p 0.6, k uniform 0..3)
MAX_SEED = 2**32 - 1  # numpy's RandomState (the product split) takes seeds 0 .. 2**32 - 1

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 70, 200),
    "yellow": (230, 200, 30),
    "purple": (130, 50, 170),
    "orange": (240, 130, 20),
    "black": (25, 25, 25),
    "white": (245, 245, 245),
}
# object -> shape drawn in its images
OBJECTS: dict[str, dict[str, str]] = {
    "clothing": {
        "shirt": "square",
        "dress": "triangle",
        "scarf": "stripes",
        "hat": "circle",
        "jacket": "cross",
        "sock": "diamond",
    },
    "electronics": {
        "phone": "square",
        "speaker": "circle",
        "cable": "stripes",
        "charger": "cross",
        "headset": "ring",
        "keyboard": "grid",
    },
    "home": {
        "lamp": "triangle",
        "vase": "diamond",
        "pan": "circle",
        "towel": "stripes",
        "clock": "ring",
        "shelf": "grid",
    },
}
MATERIALS: dict[str, tuple[str, ...]] = {
    "clothing": ("cotton", "wool", "linen", "denim"),
    "electronics": ("wireless", "compact", "portable", "smart"),
    "home": ("ceramic", "steel", "bamboo", "glass"),
}
_DETAILS = (
    "The {colour} colour of this {object} is exactly as shown and did not fade after washing.",
    "I measured the {object}: the size matches the chart and the {colour} finish is even.",
    "After three weeks of daily use the {object} still works and looks like new.",
    "Compared with my old {object}, this {colour} one is sturdier and better made.",
    "The {object} arrived well packed; the {colour} surface had no scratches at all.",
    "Tip: the {colour} {object} pairs well with neutral items, and cleaning it is easy.",
    "Weight and build of the {object} feel solid, the seams and edges are neat.",
)
_FILLER = (
    "I bought this last month.",
    "Delivery was on time.",
    "It is okay.",
    "Nothing special to say.",
    "My friend recommended it.",
    "Will see how it goes.",
    "Ordered it on a whim.",
    "Fine I guess.",
)
_HEADLINE = (
    "Got the {colour} {object}.",
    "This {colour} {object} is what I ordered.",
    "About the {colour} {object}:",
    "Review of my {colour} {object}.",
)
_TITLES = ("Great", "Okay", "Not bad", "Disappointed", "As expected", "Love it", "Meh")
_CUTS = (0.55, 1.15, 1.75, 2.35)  # s -> label 0..4 (np.digitize)


# ----------------------------------------------------------------------------- images


def _png_bytes(pixels: np.ndarray) -> bytes:
    """Encode a (H, W), (H, W, 3) or (H, W, 4) uint8 array as a PNG (no metadata, deterministic)."""
    if pixels.ndim == 2:
        color_type, arr = 0, pixels[:, :, None]
    else:
        color_type, arr = {3: 2, 4: 6}[pixels.shape[2]], pixels
    h, w, c = arr.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), arr.reshape(h, w * c)], axis=1)  # filter byte 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def render_kind(colour: str, shape: str, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """Draw ``shape`` filled with ``colour`` on a light, noisy background -> (size, size, 3) uint8."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # (S, S) each
    bg = rng.integers(170, 235, size=3).astype(np.float32)
    img = np.empty((size, size, 3), np.float32)
    img[:] = bg
    cx, cy = rng.uniform(0.4, 0.6, size=2)
    r = rng.uniform(0.22, 0.32)
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        mask = dx**2 + dy**2 < r**2
    elif shape == "ring":
        d2 = dx**2 + dy**2
        mask = (d2 < r**2) & (d2 > (0.55 * r) ** 2)
    elif shape == "square":
        mask = (np.abs(dx) < r) & (np.abs(dy) < r)
    elif shape == "diamond":
        mask = np.abs(dx) + np.abs(dy) < 1.2 * r
    elif shape == "triangle":
        mask = (dy > -r) & (dy < r) & (np.abs(dx) < (dy + r) / 2)
    elif shape == "cross":
        mask = ((np.abs(dx) < r / 3) & (np.abs(dy) < r)) | ((np.abs(dy) < r / 3) & (np.abs(dx) < r))
    elif shape == "stripes":
        mask = (np.abs(dy) < 1.1 * r) & (np.abs(dx) < 1.3 * r) & ((yy * size // 6) % 2 == 0)
    elif shape == "grid":
        mask = (np.abs(dx) < r) & (np.abs(dy) < r) & (((xx * size // 5) + (yy * size // 5)) % 2 == 0)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    img[mask] = np.asarray(COLOURS[colour], np.float32)
    img += rng.normal(0.0, 6.0, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _variant(img: np.ndarray, mode: str) -> np.ndarray:
    """RGB -> "L" (grayscale, (H, W)) or "RGBA" for realism; "RGB" unchanged."""
    if mode == "L":
        return (img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
    if mode == "RGBA":
        return np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=2)
    return img


# ----------------------------------------------------------------------------- text


def _product_text(colour: str, obj: str, material: str, brand: str, rng: np.random.Generator) -> tuple[str, list[str]]:
    name = f"{colour.capitalize()} {material} {obj}"
    desc = [
        f"A {colour} {obj} made by {brand}.",
        f"This {material} {obj} comes in {colour}.",
        rng.choice(
            [
                "Everyday quality at a fair price.",
                "Designed for daily use.",
                "Easy to care for.",
                "A customer favourite.",
            ]
        ),
    ]
    return name, [str(s) for s in desc]


def _review_text(colour: str, obj: str, k: int, rng: np.random.Generator) -> str:
    sents = [str(rng.choice(_HEADLINE)).format(colour=colour, object=obj)]
    details = rng.choice(len(_DETAILS), size=k, replace=False) if k else []
    body = [_DETAILS[i].format(colour=colour, object=obj) for i in details]
    body += [str(s) for s in rng.choice(_FILLER, size=int(rng.integers(1, 4)) if k < 2 else 1, replace=False)]
    order = rng.permutation(len(body))
    return " ".join(sents + [body[i] for i in order])


# ----------------------------------------------------------------------------- generator


def _other_kind(
    kind: tuple[str, str], colours: Sequence[str], objects: Sequence[str], rng: np.random.Generator
) -> tuple[str, str]:
    while True:
        cand = (str(rng.choice(colours)), str(rng.choice(objects)))
        if cand != kind:
            return cand


def _category(
    out_root: Path,
    category: str,
    cat_index: int,
    n_products: int,
    seed: int,
    images: bool,
    image_weight: float = IMAGE_WEIGHT,
    test_frac: float = 0.2,
    dev_frac: float = 0.2,
    text_weight: float = TEXT_WEIGHT,
) -> dict[str, Any]:
    rng = np.random.default_rng([seed, cat_index])
    colours, objects = list(COLOURS), list(OBJECTS[category])
    prod_rows, rev_rows, img_jobs = [], [], []
    prefix = category[:2].upper()
    for p in range(n_products):
        pid = f"D{prefix}{p:06d}"
        kind = (str(rng.choice(colours)), str(rng.choice(objects)))
        material = str(rng.choice(MATERIALS[category]))
        brand = f"Brand{int(rng.integers(1, 20)):02d}"
        name, desc = _product_text(kind[0], kind[1], material, brand, rng)
        n_pimg = int(rng.integers(0, 4)) if rng.random() < 0.9 else 0
        p_urls = [f"https://demo.invalid/{category}/prd/{pid}/{j}.png" for j in range(n_pimg)]
        p_local = rng.random() > 0.05  # a few products: URLs but no downloaded files
        for j in range(n_pimg if p_local else 0):
            img_jobs.append(("prd", pid, j, kind, "RGB"))
        prod_rows.append(
            {
                "product_id": pid,
                "name": name,
                "description": desc,
                "img_urls": p_urls,
                "keyword": [category, kind[1]],
                "brand_name": brand,
                "_kind": kind,
            }
        )
        n_rev = 1 if rng.random() < 0.12 else int(rng.integers(2, 16))
        for n in range(n_rev):
            rid = f"{pid}-{n}"
            match = rng.random() < 0.6
            text_kind = kind if match else _other_kind(kind, colours, objects, rng)
            k = int(rng.integers(0, 4))
            n_img = int(rng.integers(1, 3)) if rng.random() < 0.5 else 0
            agree = img_match = False
            if n_img:
                if rng.random() < 0.5:
                    img_kind = text_kind
                elif not match and rng.random() < 0.5:
                    img_kind = kind
                else:
                    img_kind = _other_kind(text_kind, colours, objects, rng)
                agree, img_match = img_kind == text_kind, img_kind == kind
                mode = str(rng.choice(["RGB", "RGB", "RGB", "RGB", "L", "RGBA"]))
                if rng.random() > 0.05:
                    for j in range(n_img):
                        img_jobs.append(("rvw", rid, j, img_kind, mode))
            text_part = 1.1 * match + 0.9 * k / 3  # ptrt / pvrt, review text
            if text_weight != TEXT_WEIGHT:
                text_part = text_weight * text_part + (1.0 - text_weight) * TEXT_MEAN
            s = (
                text_part
                + (image_weight * (agree + img_match - 0.5) if n_img else 0.0)  # rtrv; pvrv / ptrv
                + rng.normal(0.0, 0.45)
            )
            label = int(np.digitize(s, _CUTS))
            rev_rows.append(
                {
                    "review_id": rid,
                    "product_id": pid,
                    "title": str(rng.choice(_TITLES)),
                    "text": _review_text(text_kind[0], text_kind[1], k, rng),
                    "label": label,
                    "img_urls": [f"https://demo.invalid/{category}/rvw/{rid}/{j}.png" for j in range(n_img)],
                    "time": f"2019-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}",
                    "match": match,
                    "detail": k,
                    "agree": agree,
                    "img_match": img_match,
                }
            )

    if images:
        for kind_dir, item, j, (colour, obj), mode in img_jobs:
            size = 64 + 16 * (j % 3)
            pix = _variant(render_kind(colour, OBJECTS[category][obj], rng, size=size), mode)
            path = image_dir(out_root, DATASET, category, kind_dir) / item / f"{j}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_bytes(_png_bytes(pix))

    prd = pd.DataFrame(prod_rows)
    rvw = pd.DataFrame(rev_rows)
    # Non-contiguous row indices as in the released files (a global index, split by product).
    prd.index = np.arange(len(prd)) * 3 + 1
    rvw.index = np.arange(len(rvw)) * 2 + 5
    split_of = split_by_product(list(prd["product_id"]), seed=seed, test_frac=test_frac, dev_frac=dev_frac)
    report: dict[str, Any] = {}
    for split in SPLITS:
        ps = prd[prd["product_id"].map(split_of) == split]
        rs = rvw[rvw["product_id"].map(split_of) == split]
        write_mrhp(
            out_root,
            DATASET,
            category,
            split,
            ps.drop(columns="_kind"),
            rs[["review_id", "product_id", "title", "text", "label", "img_urls", "time"]],
        )
        report[split] = {"products": int(len(ps)), "reviews": int(len(rs))}
        # The latent cues drawn per review (never read by a model; for analyses and tests).
        cues = rs[["review_id"]].copy()
        cues["match"] = rs["match"].astype("int64")
        cues["detail"] = rs["detail"].astype("int64")
        has_img = rs["img_urls"].map(len) > 0
        cues["has_images"] = has_img.astype("int64")
        for cue in ("agree", "img_match"):  # no images: no image cue (NaN)
            cues[cue] = rs[cue].astype("float64").where(has_img)
        with atomic_path(split_file(out_root, DATASET, category, "cues", split)) as tmp:
            cues.to_json(tmp)  # the MRHP layout: default orient="columns", the rvw file's row index
    report["labels"] = {int(k): int(v) for k, v in sorted(rvw["label"].value_counts().items())}
    report["reviews_with_image_urls"] = int((rvw["img_urls"].map(len) > 0).sum())
    report["images_written"] = len(img_jobs) if images else 0
    return report


CUE_COLUMNS = ("review_id", "match", "detail", "has_images", "agree", "img_match")
# interaction (subtask) -> the planted cue that feeds it (module docstring)
SUBTASK_CUES: dict[str, str] = {
    "ptrt": "match",
    "pvrt": "match",
    "pvrv": "img_match",
    "ptrv": "img_match",
    "rtrv": "agree",
}


def load_cues(root: str | os.PathLike, category: str, split: str) -> pd.DataFrame:
    """The latent cues of one demo split (``{category}.cues.{split}``, written by :func:`make_demo`)
    as a frame with :data:`CUE_COLUMNS`, in file order. Raises :class:`DataError` naming the file
    when it is missing or lacks a column."""
    path = split_file(root, DATASET, category, "cues", split)
    if not path.exists():
        raise DataError(
            f"{path}: no cues file; make the demo data again with `mmss make-demo` "
            f"(cues exist for the demo dataset only)"
        )
    try:
        df = pd.read_json(path, dtype={"review_id": str})
    except ValueError as exc:
        raise DataError(f"{path}: not a JSON cues file ({exc})") from exc
    missing = [c for c in CUE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: column(s) {missing} missing; expected {list(CUE_COLUMNS)}")
    df = df[list(CUE_COLUMNS)].copy()
    df["review_id"] = df["review_id"].astype(str)
    _check_cue_values(df, path)
    return df


_CUE_RANGES = {"match": (0, 1), "detail": (0, 3), "has_images": (0, 1), "agree": (0, 1), "img_match": (0, 1)}


def _check_cue_values(df: pd.DataFrame, path: Path) -> None:
    """Every cue a number in its range; ``agree`` / ``img_match`` may be missing (NaN) only for a
    review without images (``has_images`` 0): a missing or corrupt cue is refused naming the file,
    row and column, never read as 0."""
    for col, (lo, hi) in _CUE_RANGES.items():
        v = pd.to_numeric(df[col], errors="coerce")
        optional = col in ("agree", "img_match")
        missing = v.isna() & ~(optional & (pd.to_numeric(df["has_images"], errors="coerce") == 0))
        bad = missing | (v.notna() & ((v < lo) | (v > hi) | (v != v.round())))
        if bad.any():
            row = df.index[bad.to_numpy()][0]
            what = "a review with images needs it" if optional else "every review needs it"
            raise DataError(
                f"{path}: row {row} (review_id {df.at[row, 'review_id']!r}), column {col!r}: "
                f"{df.at[row, col]!r}; expected an integer from {lo} to {hi} ({what}; "
                f"{int(bad.sum())} such row(s))"
            )


def empty_splits(n_products: int, test_frac: float, dev_frac: float) -> str:
    """The counts per split (``"0 train, 4 dev, 36 test products"``) when the product split of
    ``n_products`` products (:func:`mmss_lib.data.mrhp.split_sizes`) leaves a split without products,
    for the error that refuses it (such a dataset cannot be trained or evaluated on, and writing
    it would only be noticed at training time); an empty string when every split has some."""
    sizes = split_sizes(n_products, test_frac=test_frac, dev_frac=dev_frac)
    if all(sizes[s] >= 1 for s in SPLITS):
        return ""
    return ", ".join(f"{sizes[s]} {s}" for s in SPLITS) + " products"


def make_demo(
    out_root: str | os.PathLike,
    *,
    n_products: int = DEFAULT_PRODUCTS,
    seed: int = 0,
    categories: Sequence[str] = CATEGORIES,
    images: bool = True,
    image_weight: float = IMAGE_WEIGHT,
    test_frac: float = 0.2,
    dev_frac: float = 0.2,
    text_weight: float = TEXT_WEIGHT,
) -> dict[str, Any]:
    """Write the demo dataset under ``out_root/demo/{category}/`` and return a report dict
    (per category: products/reviews per split, label counts, images written).

    ``n_products`` products per category (default 40: about 300-350 reviews per category);
    ``images=False`` skips the PNG files (image URLs are still written), for large scale sets.
    ``image_weight`` is the weight w of the image cues in the label (module docstring, step 3:
    ``w * (agree + img_match - 0.5)`` for a review with images; 0 = the images carry nothing,
    :data:`IMAGE_WEIGHT` = 0.6 the demo's own); ``text_weight`` the weight t of the text cues (step 3;
    0: the images alone carry the label, 1 the default). Both change the labels only: every random
    draw, text, image and split is the same for every w and t, so feature stores of one serve all.
    ``test_frac`` / ``dev_frac``: the product split (:func:`mmss_lib.data.mrhp.split_by_product`;
    e.g. a large test split for powered comparisons); shares that leave a split without products
    are refused before anything is written (:func:`empty_splits`). ``seed``: 0 .. :data:`MAX_SEED`.
    Deterministic: the same arguments give byte-identical files.
    """
    if n_products < 5:
        raise DataError(f"make_demo: n_products must be >= 5 (three splits need products), got {n_products}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise DataError(f"make_demo: seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    if not (np.isfinite(image_weight) and image_weight >= 0):
        raise DataError(f"make_demo: image_weight must be a finite number >= 0, got {image_weight!r}")
    if not (np.isfinite(text_weight) and text_weight >= 0):
        raise DataError(f"make_demo: text_weight must be a finite number >= 0, got {text_weight!r}")
    for name, frac in (("test_frac", test_frac), ("dev_frac", dev_frac)):
        if not (np.isfinite(frac) and 0 < frac < 1):
            raise DataError(f"make_demo: {name} must lie strictly between 0 and 1, got {frac!r}")
    unknown = [c for c in categories if c not in OBJECTS]
    if unknown:
        raise DataError(f"make_demo: unknown categories {unknown}: expected some of {', '.join(OBJECTS)}")
    empty = empty_splits(n_products, test_frac, dev_frac)
    if empty:
        raise DataError(
            f"make_demo: test_frac={test_frac!r}, dev_frac={dev_frac!r} with n_products={n_products}: "
            f"{empty}; every split needs at least one product"
        )
    out_root = Path(out_root)
    report: dict[str, Any] = {"dataset": DATASET, "seed": seed, "n_products": n_products, "categories": {}}
    if image_weight != IMAGE_WEIGHT or (test_frac, dev_frac) != (0.2, 0.2):  # the default report is unchanged
        report.update(image_weight=float(image_weight), test_frac=float(test_frac), dev_frac=float(dev_frac))
    if text_weight != TEXT_WEIGHT:
        report.update(text_weight=float(text_weight))
    for cat in categories:
        report["categories"][cat] = _category(
            out_root,
            cat,
            CATEGORIES.index(cat),
            n_products,
            seed,
            images,
            image_weight,
            test_frac,
            dev_frac,
            text_weight,
        )
    atomic_write_json(out_root / DATASET / "make_demo.json", report)
    return report


def cli_main(argv: list[str], prog: str = "mmss make-demo") -> int:
    """``mmss make-demo --out ROOT [--size small|medium|large | --products-per-category N] [--seed 0]``."""
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Write the deterministic synthetic MRHP-format demo dataset (three categories, PNG images).",
    )
    ap.add_argument("--out", required=True, help="data root; files go to OUT/demo/{category}/")
    g = ap.add_mutually_exclusive_group()
    g.add_argument(
        "--size",
        choices=list(SIZES),
        default=None,
        help="products per category: " + ", ".join(f"{k}={v}" for k, v in SIZES.items()),
    )
    g.add_argument("--products-per-category", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=list(CATEGORIES))
    ap.add_argument("--no-images", action="store_true", help="skip PNG files (URLs are still written)")
    ap.add_argument(
        "--image-weight",
        type=float,
        default=IMAGE_WEIGHT,
        help="weight w of the image cues in the label (0: the images carry nothing; default 0.6)",
    )
    ap.add_argument(
        "--text-weight",
        type=float,
        default=TEXT_WEIGHT,
        help="weight t of the text cues in the label (0: the images alone carry it; default 1)",
    )
    ap.add_argument("--test-frac", type=float, default=0.2, help="share of the products in test (default 0.2)")
    ap.add_argument("--dev-frac", type=float, default=0.2, help="share of the other products in dev (default 0.2)")
    a = ap.parse_args(argv)
    import math

    from mmss_lib.errors import DataError

    if a.products_per_category is not None and a.products_per_category < 5:
        raise DataError(
            f"--products-per-category {a.products_per_category}: expected an integer >= 5 (the three "
            "splits need products)"
        )
    for opt, v, lo, hi in (
        ("--test-frac", a.test_frac, 0, 1),
        ("--dev-frac", a.dev_frac, 0, 1),
        ("--image-weight", a.image_weight, 0, math.inf),
        ("--text-weight", a.text_weight, 0, math.inf),
    ):
        weight = opt.endswith("-weight")
        if not (math.isfinite(v) and lo <= v and (v < hi or hi == math.inf)) or (not weight and v <= 0):
            raise DataError(
                f"{opt} {v!r}: expected " + ("a number >= 0" if weight else "a share strictly between 0 and 1")
            )
    if not 0 <= a.seed <= MAX_SEED:
        raise DataError(f"--seed {a.seed}: expected an integer from 0 to {MAX_SEED} (numpy's seeds)")
    if len(set(a.categories)) != len(a.categories):
        raise DataError(f"--categories {' '.join(a.categories)}: a category given more than once")
    n = a.products_per_category if a.products_per_category is not None else SIZES[a.size or "small"]
    empty = empty_splits(n, a.test_frac, a.dev_frac)
    if empty:  # refused before anything is written
        raise DataError(
            f"--test-frac {a.test_frac!r} --dev-frac {a.dev_frac!r} with {n} products per category give "
            f"{empty}; every split needs at least one product: lower --test-frac / --dev-frac or "
            "raise --products-per-category"
        )
    rep = make_demo(
        a.out,
        n_products=n,
        seed=a.seed,
        categories=a.categories,
        images=not a.no_images,
        image_weight=a.image_weight,
        test_frac=a.test_frac,
        dev_frac=a.dev_frac,
        text_weight=a.text_weight,
    )
    for cat, r in rep["categories"].items():
        splits = ", ".join(f"{s} {r[s]['products']}/{r[s]['reviews']}" for s in SPLITS)
        print(f"{cat}: {splits} (#P/#R); labels {r['labels']}; {r['images_written']} images")
    print(f"wrote {Path(a.out) / DATASET}")
    return 0
