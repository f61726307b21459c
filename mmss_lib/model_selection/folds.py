"""K-fold cross-validation over the products of one category (``mmss train --folds K``).

Small real categories (e.g. the Amazon 2018 Magazine sample: 87 products, 18 in its released
test split) give test metrics whose 95% interval is wider than any difference between systems.
Cross-validation evaluates every product once instead:

1. Pool the products of the three released splits (train, dev, test, each in file order; a
   product in two splits is an error). Pooled position = order of this concatenation.
2. Shuffle the pooled products with ``numpy.random.default_rng(seed).permutation`` and deal
   them round-robin into K test folds: the product at shuffled position j is in test fold
   ``j % K``. Every product is in exactly one test fold; fold sizes differ by at most one.
3. Fold f: test = test fold f; the other products ("rest") are split into a dev part and a
   training part. The dev part is the first ``n_dev`` products of a permutation of the rest
   drawn with ``numpy.random.default_rng([seed, f])``, ``n_dev = round(dev_fraction * len(rest))``
   (Python rounding, half to even) clipped to ``1 .. len(rest) - 1`` (``0 < dev_fraction < 1``);
   training = the remaining products. Dev serves early stopping and checkpoint choice only (as
   the released dev split does).
4. Within each part products keep their pooled order, and reviews keep their order in the
   dataset files (train file, then dev, then test), so a fold's splits are a deterministic
   function of the dataset, K, ``seed`` and ``dev_fraction``.

The default ``dev_fraction`` is 0.125 of the non-test products: with K = 5 this gives
70% training, 10% dev and 20% test products per fold, close to the released 8:1:1 splits'
train/dev ratio. Products are not stratified (the categories have one label scale and products
differ mainly in their number of reviews; a plain shuffle keeps the design simple to check).

Runs of fold f live in ``{runs_root}/{dataset}/{category}/{system}[__{variant}]/{tag}/fold{f}/seed{n}/``
with ``tag`` = :func:`folds_tag` (``folds5``; ``folds5_fs{seed}`` for a fold seed other than 0).
The assignment is written once to ``{runs_root}/{dataset}/{category}/{tag}.json``
(:func:`write_or_check_assignment`); a later call with other products, another ``dev_fraction``
or another assignment is refused, so runs of different fold designs never mix in one folder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mmss_lib.data.mrhp import SPLITS
from mmss_lib.errors import DataError

DEFAULT_DEV_FRACTION = 0.125


def folds_tag(k: int, seed: int = 0) -> str:
    """Folder/file tag of a K-fold design: ``folds5``, or ``folds5_fs3`` for fold seed 3."""
    return f"folds{int(k)}" if int(seed) == 0 else f"folds{int(k)}_fs{int(seed)}"


def pooled_products(products_by_split: Mapping[str, Sequence[str]]) -> list[str]:
    """The products of the released splits in pooled order (train, dev, test; file order within);
    a product listed twice (within or across splits) is a :class:`DataError`."""
    pooled: list[str] = []
    where: dict[str, str] = {}
    for split in SPLITS:
        if split not in products_by_split:
            raise DataError(f"fold_splits: no {split!r} split given (expected the keys {SPLITS})")
        for p in products_by_split[split]:
            p = str(p)
            if p in where:
                raise DataError(
                    f"fold_splits: product {p!r} appears in the {where[p]} and the {split} split; "
                    f"cross-validation needs every product once"
                )
            where[p] = split
            pooled.append(p)
    extra = sorted(set(products_by_split) - set(SPLITS))
    if extra:
        raise DataError(f"fold_splits: unknown split name(s) {extra}; expected {SPLITS}")
    return pooled


def fold_splits(
    products_by_split: Mapping[str, Sequence[str]], k: int, *, seed: int = 0, dev_fraction: float = DEFAULT_DEV_FRACTION
) -> list[dict[str, list[str]]]:
    """K folds over the pooled products of a category (see the module docstring for the rule).

    ``products_by_split``: ``{"train": [...], "dev": [...], "test": [...]}`` product ids of the
    released splits. Returns a list of K dicts ``{"train": ids, "dev": ids, "test": ids}``, each
    list in pooled order.
    """
    if int(k) != k or k < 2:
        raise ValueError(f"fold_splits: k must be an integer >= 2 (k <= 1 means the released splits), got {k!r}")
    k = int(k)
    if not 0.0 < float(dev_fraction) < 1.0:
        raise ValueError(
            f"fold_splits: dev_fraction must lie in (0, 1) (every fold needs a dev part for "
            f"early stopping), got {dev_fraction!r}"
        )
    pooled = pooled_products(products_by_split)
    n = len(pooled)
    if n < k:
        raise DataError(f"fold_splits: {n} product(s) cannot fill {k} test folds; use at most {n} folds")
    order = np.random.default_rng(int(seed)).permutation(n)
    fold_of = np.empty(n, dtype=np.int64)
    fold_of[order] = np.arange(n) % k
    out = []
    for f in range(k):
        test = np.flatnonzero(fold_of == f)
        rest = np.flatnonzero(fold_of != f)
        if len(rest) < 2:
            raise DataError(
                f"fold_splits: fold {f} leaves {len(rest)} product(s) for training and dev; "
                f"{n} products are too few for {k} folds"
            )
        n_dev = min(max(int(round(float(dev_fraction) * len(rest))), 1), len(rest) - 1)
        perm = np.random.default_rng([int(seed), f]).permutation(len(rest))
        dev_mask = np.zeros(len(rest), dtype=bool)
        dev_mask[perm[:n_dev]] = True
        out.append(
            {
                "train": [pooled[i] for i in rest[~dev_mask]],
                "dev": [pooled[i] for i in rest[dev_mask]],
                "test": [pooled[i] for i in test],
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# on disk: the assignment file and the fold's split data
# --------------------------------------------------------------------------------------------


def released_products(data_root, dataset: str, category: str) -> dict[str, list[str]]:
    """Product ids of the released splits (file order), read with :func:`mmss_lib.data.mrhp.load_mrhp`."""
    from mmss_lib.data.mrhp import load_mrhp

    return {s: load_mrhp(data_root, dataset, category, s)[0]["product_id"].astype(str).tolist() for s in SPLITS}


def write_resplit(src_root, dst_root, dataset: str, category: str, products: Mapping[str, Sequence[str]]) -> Path:
    """Write ``dst_root/dataset/category/`` as a dataset whose split ``s`` holds the products
    ``products[s]`` of the dataset under ``src_root`` (from any of its splits), every row unchanged
    (the released layout: ``prd``, ``rvw``, ``rel`` and, where present, the demo's ``cues``, which
    follow the reviews' rows); its ``images`` folder is a link to the source's. A fold (or any other
    re-split) becomes data that every command reads as released splits, e.g. ``mmss tune`` on a
    fold's train and dev parts; the feature stores of the source serve it when it holds the same
    items (their content fingerprints ignore splits and folders). Returns the category folder."""
    from mmss_lib.data.mrhp import split_file
    from mmss_lib.utils import atomic_write_text

    kinds = [k for k in ("prd", "rvw", "rel", "cues") if split_file(src_root, dataset, category, k, "train").exists()]
    tables = {k: [json.loads(split_file(src_root, dataset, category, k, s).read_text()) for s in SPLITS] for k in kinds}
    merged = {k: {col: {r: v for t in ts for r, v in t[col].items()} for col in ts[0]} for k, ts in tables.items()}
    wanted = set().union(*(set(map(str, ids)) for ids in products.values()))
    known = set(map(str, merged["prd"]["product_id"].values()))
    if wanted - known:
        raise DataError(
            f"write_resplit: product(s) {sorted(wanted - known)[:3]} not in {src_root}/{dataset}/{category}"
        )
    for split, ids in products.items():
        keep = set(map(str, ids))
        rows = {k: {r for r, p in merged[k]["product_id"].items() if str(p) in keep} for k in kinds if k != "cues"}
        rows["cues"] = rows["rvw"]
        for k in kinds:
            path = split_file(dst_root, dataset, category, k, split)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                path,
                json.dumps({col: {r: v for r, v in vals.items() if r in rows[k]} for col, vals in merged[k].items()}),
            )
    src_img, img = Path(src_root) / dataset / category / "images", Path(dst_root) / dataset / category / "images"
    if src_img.is_dir() and not img.exists():
        img.symlink_to(src_img.resolve(), target_is_directory=True)
    return Path(dst_root) / dataset / category


def assignment_path(runs_root, dataset: str, category: str, k: int, seed: int = 0) -> Path:
    return Path(runs_root) / dataset / category / f"{folds_tag(k, seed)}.json"


def write_or_check_assignment(
    runs_root, dataset: str, category: str, folds: list[dict], *, k: int, seed: int, dev_fraction: float
) -> Path:
    """Write the fold design to ``{runs_root}/{dataset}/{category}/{tag}.json`` (atomically), or,
    when it exists, check that it is the same design; a different one is a :class:`DataError`."""
    from mmss_lib.utils import atomic_write_json

    path = assignment_path(runs_root, dataset, category, k, seed)
    record = {"k": int(k), "seed": int(seed), "dev_fraction": float(dev_fraction), "folds": folds}
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc}); remove it to write the fold assignment again") from None
        if old != record:
            what = [key for key in ("k", "seed", "dev_fraction") if old.get(key) != record[key]] or ["folds"]
            raise DataError(
                f"{path}: the runs under this root used another fold design ({', '.join(what)} "
                f"differ: the dataset or the options changed); use another --runs root or remove "
                f"the {folds_tag(k, seed)} runs and this file"
            )
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)
    return path


def fold_split_data(
    data_root,
    dataset: str,
    category: str,
    features_root,
    fold: Mapping[str, Sequence[str]],
    *,
    caps=None,
    keep_texts: bool = False,
    stores=None,
    frames=None,
) -> dict:
    """The three :class:`~mmss_lib.features.loader.MRHPSplitData` of one fold: the reviews of the fold's
    products from all released split files (train, dev, test file order), sharing the feature
    stores (which hold every item of the category). ``frames``: optional ``(products, reviews)``
    already pooled by :func:`pooled_frames` (shared across folds)."""
    from mmss_lib.features.loader import MRHPSplitData, run_stores

    products, reviews = frames if frames is not None else pooled_frames(data_root, dataset, category)
    if stores is None:
        stores = run_stores(features_root, dataset, category, keep_texts=keep_texts)
    pid = reviews["product_id"].astype(str)
    ppid = products["product_id"].astype(str)
    out = {}
    for split in SPLITS:
        members = set(map(str, fold[split]))
        rv = reviews[pid.isin(members)].reset_index(drop=True)
        pr = products[ppid.isin(members)].reset_index(drop=True)
        out[split] = MRHPSplitData(
            rv,
            pr,
            stores,
            training=(split == "train"),
            caps=caps,
            keep_texts=keep_texts,
            name=f"{dataset}/{category}/fold:{split}",
        )
    return out


def pooled_frames(data_root, dataset: str, category: str):
    """``(products, reviews)`` of the three released splits concatenated (train, dev, test)."""
    import pandas as pd

    from mmss_lib.data.mrhp import load_mrhp

    parts = [load_mrhp(data_root, dataset, category, s) for s in SPLITS]
    products = pd.concat([p for p, _ in parts], ignore_index=True)
    reviews = pd.concat([r for _, r in parts], ignore_index=True)
    return products, reviews


# --------------------------------------------------------------------------------------------
# what run_experiment needs
# --------------------------------------------------------------------------------------------


def design_folds(
    data_root,
    dataset: str,
    categories: Sequence[str],
    runs_root,
    k: int,
    *,
    seed: int = 0,
    dev_fraction: float = DEFAULT_DEV_FRACTION,
) -> dict[str, list[dict]]:
    """``{category: folds}`` (:func:`fold_splits` of the released products), each design written
    to / checked against its assignment file under ``runs_root``."""
    out = {}
    for category in categories:
        folds = fold_splits(released_products(data_root, dataset, category), k, seed=seed, dev_fraction=dev_fraction)
        write_or_check_assignment(runs_root, dataset, category, folds, k=k, seed=seed, dev_fraction=dev_fraction)
        out[category] = folds
    return out


class PlainSplit:
    """Ids, labels and texts of one fold part: what a floor reads (no feature stores)."""

    def __init__(self, reviews):
        self.review_ids = reviews["review_id"].astype(str).to_numpy(dtype=object)
        self.product_ids = reviews["product_id"].astype(str).to_numpy(dtype=object)
        self.labels = reviews["label"].to_numpy().astype(np.int64)
        self.texts = reviews["text"].astype(str).to_numpy(dtype=object) if "text" in reviews.columns else None
        self.n = len(self.review_ids)


def splits_for_run(cfg, *, data_root, dataset: str, category: str, features_root, fold: Mapping[str, Sequence[str]]):
    """The train/dev/test splits of one fold for the run ``cfg``: :class:`PlainSplit` objects for a
    floor (no features needed), else :func:`fold_split_data` with the read caps and text mode of
    ``cfg`` (as :func:`mmss_lib.training.trainer.load_splits` does for the released splits)."""
    from mmss_lib.models.registry import is_floor

    frames = pooled_frames(data_root, dataset, category)
    if is_floor(cfg.system):
        reviews = frames[1]
        pid = reviews["product_id"].astype(str)
        return {s: PlainSplit(reviews[pid.isin(set(map(str, fold[s])))].reset_index(drop=True)) for s in SPLITS}
    from mmss_lib.features.loader import ReadCaps

    on_the_fly = getattr(cfg, "text_mode", "cached") != "cached"
    return fold_split_data(
        data_root, dataset, category, features_root, fold, caps=ReadCaps.of(cfg), keep_texts=on_the_fly, frames=frames
    )
