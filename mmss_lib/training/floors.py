"""The runs of the systems without training (:mod:`mmss_lib.models.floors`): :func:`run_floor` writes a
floor's or ceiling's run folder through the trainer's contract (``config.json``, an empty
``history.json``, ``scores_{dev,test}.csv``, ``metrics.json``), :func:`check_ceiling_data` refuses a
ceiling on data without planted cues before any run starts, and :func:`per_product_for_run` reads the
per-product metrics of any finished run (the random floor's: its exact expectations)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmss_lib.data.mrhp import SPLITS
from mmss_lib.errors import DataError
from mmss_lib.metrics.ranking import PER_PRODUCT_COLUMN, per_product_metrics
from mmss_lib.models.floors import expected_random_per_product, floor_system
from mmss_lib.models.registry import is_ceiling
from mmss_lib.training.run_folder import (
    CONFIG,
    HISTORY,
    METRICS,
    finished_metrics,
    ranking_path,
    read_ranking,
    scores_path,
    write_rankings,
)


def load_all_cues(data_root, dataset: str, category: str, system: str = "ceiling"):
    """The planted cues of every split of a generated category, one frame (for the ceilings);
    a :class:`DataError` naming the missing file and the system when there are none."""
    import pandas as pd

    from mmss_lib.data.synthetic import load_cues

    if dataset != "demo":
        raise DataError(
            f"{system} needs the generator's planted cues ({{root}}/demo/{{category}}/{{category}}"
            f".cues.{{split}}); dataset {dataset!r} is not generated data (only 'demo' has cues)"
        )
    frames = []
    for s in SPLITS:
        try:
            frames.append(load_cues(data_root, category, s))
        except DataError as exc:
            raise DataError(
                f"{system} needs the generator's planted cues, only generated data has them: {exc}"
            ) from None
    return pd.concat(frames, ignore_index=True)


def check_ceiling_data(system: str, data_root, dataset: str, category: str) -> None:
    """Refuse a ceiling on data without cues files before any run starts (no-op for other systems)."""
    if is_ceiling(system):
        load_all_cues(data_root, dataset, category, system)


def summary_metrics(per_product) -> dict[str, float]:
    """MAP, NDCG@3, NDCG@5, MRR: unweighted means of per-product values over all products."""
    out = {}
    for name, col in PER_PRODUCT_COLUMN.items():
        v = per_product[col].to_numpy(dtype=np.float64)
        out[name] = float(v.mean()) if v.size else float("nan")
    return out


# --------------------------------------------------------------------------------------------
# per-product metrics of any run folder
# --------------------------------------------------------------------------------------------


def per_product_for_run(run_dir, split: str = "test", threshold: float | None = None):
    """Per-product metrics (layout of :func:`mmss_lib.metrics.ranking.per_product_metrics`, a
    ``product_id`` column) of the run in ``run_dir`` on ``split``: from ``scores_{split}.csv``,
    where it is absent from the run's ranking record ``ranking_{split}.csv.gz`` (the same numbers,
    :func:`mmss_lib.training.run_folder.read_ranking`), and for the ``random`` floor the exact
    expectations from its labels. The threshold defaults to the one recorded in the run's
    ``metrics.json``. Use this, not ``per_product_metrics`` on the scores file, wherever runs of
    any system are read."""
    import pandas as pd

    rd = Path(run_dir)
    path = scores_path(rd, split)
    if not path.exists() and ranking_path(rd, split).exists():
        df = read_ranking(rd, split)
    elif not path.exists():
        raise DataError(f"{path}: no scores (nor {ranking_path(rd, split).name}) for this run; train it first")
    else:
        df = pd.read_csv(path, dtype={"review_id": str, "product_id": str})
    for col in ("product_id", "label", "score"):
        if col not in df.columns:
            raise DataError(f"{path}: column {col!r} missing; expected review_id, product_id, label, score")
    th = threshold
    if th is None:
        mp = rd / METRICS
        if not mp.exists():
            raise DataError(f"{mp}: missing; it records the run's relevance threshold (or pass threshold=)")
        th = json.loads(mp.read_text(encoding="utf-8"))["threshold"]
    system = None
    cp = rd / CONFIG
    if cp.exists():
        system = json.loads(cp.read_text(encoding="utf-8")).get("config", {}).get("system")
    if system == "random":
        return expected_random_per_product(df["product_id"].to_numpy(), df["label"].to_numpy(), threshold=th)
    return per_product_metrics(
        df["product_id"].to_numpy(), df["label"].to_numpy(), df["score"].to_numpy(), threshold=th
    )


# --------------------------------------------------------------------------------------------
# one floor run (the trainer's "no training" path)
# --------------------------------------------------------------------------------------------


class _Split:
    """review_ids, product_ids, labels (+ texts) of one split."""

    def __init__(self, review_ids, product_ids, labels, texts=None):
        self.review_ids = np.asarray(review_ids, dtype=object)
        self.product_ids = np.asarray(product_ids, dtype=object)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.texts = None if texts is None else np.asarray(texts, dtype=object)
        self.n = len(self.review_ids)


def _splits_from_disk(data_root, dataset: str, category: str, *, disjoint: bool = True) -> dict[str, _Split]:
    """The three released splits of a category. ``disjoint``: refuse a product or review id in two
    splits (:func:`mmss_lib.data.mrhp.check_disjoint_splits`, the check trained systems make in
    :func:`mmss_lib.training.trainer.load_splits`): a floor or ceiling on leaked splits would be compared
    with systems that refuse them."""
    from mmss_lib.data.mrhp import check_disjoint_splits, load_mrhp

    frames = {s: load_mrhp(data_root, dataset, category, s) for s in SPLITS}  # (products, reviews)
    if disjoint:
        check_disjoint_splits(
            data_root,
            dataset,
            category,
            {
                s: (p["product_id"].astype(str).tolist(), r["review_id"].astype(str).tolist())
                for s, (p, r) in frames.items()
            },
        )
    return {
        s: _Split(rv["review_id"].astype(str), rv["product_id"].astype(str), rv["label"], rv["text"])
        for s, (_, rv) in frames.items()
    }


def _adopt_splits(splits: dict, data_root, dataset: str, category: str, need_texts: bool) -> dict[str, _Split]:
    """Splits handed in by the caller (e.g. cross-validation folds, as
    :class:`~mmss_lib.features.loader.MRHPSplitData`): their ids and labels, the texts looked up by review id
    in the dataset files when the split objects do not carry them."""
    lookup = None
    out = {}
    for s in SPLITS:
        sp = splits[s]
        texts = getattr(sp, "review_texts", None)
        if texts is None:
            texts = getattr(sp, "texts", None)
        if texts is None and need_texts:
            if lookup is None:
                lookup = {}
                for d in _splits_from_disk(data_root, dataset, category, disjoint=False).values():
                    lookup.update(zip(d.review_ids, d.texts, strict=True))
            missing = [r for r in sp.review_ids if r not in lookup]
            if missing:
                raise DataError(
                    f"{dataset}/{category}: review(s) {missing[:3]} of the {s} split are not in the "
                    f"dataset files under {data_root}; the length floor needs their texts"
                )
            texts = [lookup[r] for r in sp.review_ids]
        out[s] = _Split(sp.review_ids, sp.product_ids, sp.labels, texts)
    return out


def run_floor(
    cfg,
    *,
    data_root,
    dataset: str,
    category: str,
    run_dir,
    threshold: float,
    run_info: dict | None = None,
    splits: dict | None = None,
) -> dict:
    """Score dev and test with floor ``cfg.system`` into ``run_dir`` (the trainer's run-folder
    contract, without checkpoints) and return the metrics.json content.

    ``cfg`` is the :class:`~mmss_lib.training.trainer.TrainConfig` of the run (recorded in config.json; its
    ``seed`` seeds the random floor's written realisation). ``splits``: optional already-made
    ``{"train", "dev", "test"}`` split objects (``review_ids``, ``product_ids``, ``labels``), e.g.
    cross-validation folds; by default the dataset files under ``data_root``, refused like a
    trained system's when a product or review id is in two of them (a :class:`DataError` naming
    the ids and both files, before anything is written). A finished run with the same
    configuration is returned as is.
    """
    from mmss_lib.utils import atomic_path, atomic_write_json

    t0 = time.perf_counter()
    system = floor_system(cfg.system)
    run_dir = Path(run_dir)
    run_info = dict(run_info or {"dataset": dataset, "category": category})
    record = {"config": cfg.to_json(), "run": run_info, "threshold": float(threshold)}
    cfg_path, metrics_path = run_dir / CONFIG, run_dir / METRICS
    done = finished_metrics(run_dir, record["config"], record["run"])
    if done is not None:
        return done
    need_texts = cfg.system == "length"
    if is_ceiling(cfg.system):  # fit on train + dev cues and labels, never on test
        cues = load_all_cues(data_root, dataset, category, cfg.system)
    data = (
        _adopt_splits(splits, data_root, dataset, category, need_texts)
        if splits is not None
        else _splits_from_disk(data_root, dataset, category)
    )  # leaked released splits: refused
    if is_ceiling(cfg.system):
        fit_on = [data["train"], data["dev"]]
        system.fit(cues, np.concatenate([d.review_ids for d in fit_on]), np.concatenate([d.labels for d in fit_on]))
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg_path, {**record, "features": {}, "floor": True})
    atomic_write_json(run_dir / HISTORY, [])
    import pandas as pd

    result: dict[str, Any] = {}
    for s in ("dev", "test"):
        sp = data[s]
        scores = system.score(
            review_ids=sp.review_ids, product_ids=sp.product_ids, texts=sp.texts, seed=int(cfg.seed) * 2 + (s == "test")
        )
        df = pd.DataFrame(
            {"review_id": sp.review_ids, "product_id": sp.product_ids, "label": sp.labels, "score": scores}
        )
        with atomic_path(scores_path(run_dir, s)) as tmp:
            df.to_csv(tmp, index=False)
        result[s] = summary_metrics(system.per_product(sp.product_ids, sp.labels, scores, threshold=threshold))
    write_rankings(run_dir)
    seconds = time.perf_counter() - t0
    metrics = {
        "best_epoch": 0,
        "dev": result["dev"],
        "test": result["test"],
        "epochs_run": 0,
        "stopped_early": False,
        "seconds": seconds,
        "sec_per_epoch": 0.0,
        "train_sec_per_epoch": 0.0,
        "threshold": float(threshold),
        "n_train": int(data["train"].n),
        "floor": cfg.system,
    }
    atomic_write_json(metrics_path, metrics)
    return metrics
