"""Floors: two rankings that need no training, run and reported like every trained system.

A floor tells a reader whether a trained system beats a trivial ranking. Both run through the
run-folder contract of the trainer (``{runs_root}/{dataset}/{category}/{system}/seed{n}/`` with
``config.json``, ``history.json`` (empty: no epochs), ``scores_{dev,test}.csv``, ``metrics.json``),
so ``run_experiment``, the comparison tables, the significance tests and the cross-validation
treat them like any system (:func:`run_floor` is what ``train_run`` calls for them).

- ``random`` — the *expected* metrics of a uniformly random ranking of each product's reviews,
  computed exactly (no sampling, hence deterministic and the same for every seed). For a product
  with n reviews of which R are relevant (label > threshold):

  * AP. A relevant review sits at position p (uniform on 1..n); the other R - 1 relevant reviews
    fill the other n - 1 positions uniformly, so (p - 1)(R - 1)/(n - 1) of them lie above it on
    average, and its precision has expectation
    (1/n) sum_p [1 + (p - 1)(R - 1)/(n - 1)] / p = (1/n) [H_n + (R - 1)/(n - 1) (n - H_n)]
    with H_n the n-th harmonic number (n = 1: AP = 1). AP is the mean over the R relevant
    reviews, each with this expectation; 0 when R = 0 (the protocol's convention).
  * NDCG@k. Each position holds each review with probability 1/n, so
    E[DCG@k] = mean gain * sum_{i < min(k, n)} 1/log2(2 + i) with gain 2^label - 1 for a relevant
    review and 0 otherwise; the ideal DCG does not depend on the order, so
    E[NDCG@k] = E[DCG@k] / IDCG@k (0 when IDCG@k = 0).
  * RR. The first relevant review is at position r with probability C(n - r, R - 1) / C(n, R),
    r = 1..n - R + 1; E[RR] = sum_r P(r) / r.

  The per-product expected values are what enter the per-product tables and the paired tests
  (:func:`per_product_for_run`); ``scores_{split}.csv`` holds one seeded random ranking (a
  realisation, for anything that needs scores), and ``metrics.json`` the expected metrics.
- ``length`` — reviews ranked by the length of their text in characters (the ``text`` field of
  :func:`mmss_lib.data.mrhp.load_mrhp`), longest first; equal lengths keep the file order (the
  protocol's stable ties). Its per-product metrics are those of :func:`per_product_metrics` on
  these scores.

Ceilings (generated data only: the demo generator's planted cues, :func:`mmss_lib.data.synthetic.load_cues`).
Where floors say what a trivial ranking gets, ceilings say what a ranker that saw the generator's
latent cues perfectly gets, so a table shows how much room there is and how much of it a system
takes. Both are a least-squares fit (with intercept) of the label on cues, fitted on the train and
dev reviews' cues and labels only (never on test labels), and rank every review by the fitted
value (ties keep the file order, as for every system):

- ``ceiling_text`` — the cues a text can show: ``match`` and ``detail / 3`` (the review text names
  the product's kind or not; how many informative sentences it has);
- ``ceiling_all`` — every cue: also ``has_images``, ``agree`` and ``img_match`` (0 for a review
  without images, so the fit can represent the generator's ``has_images * w * (agree + img_match
  - 0.5)`` exactly).

The label is the binned noisy score, so neither is an upper bound in the strict sense: a fit of the
*expected label* on the cues is what "perfect use of the cues" means here. On data without a cues
file (every real dataset) both are refused with a :class:`~mmss_lib.errors.DataError` naming the
file (:func:`check_ceiling_data`, called before any run of an experiment starts).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmss_lib.data.mrhp import SPLITS
from mmss_lib.errors import DataError
from mmss_lib.metrics.ranking import DEFAULT_KS, PER_PRODUCT_COLUMN, _as_1d, _numeric, per_product_metrics
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

# ceiling -> the planted cues its least-squares fit uses (module docstring)
CEILINGS: dict[str, tuple[str, ...]] = {
    "ceiling_text": ("match", "detail"),
    "ceiling_all": ("match", "detail", "has_images", "agree", "img_match"),
}
NO_TRAINING = ("random", "length") + tuple(CEILINGS)  # the systems run_floor runs (mmss_lib.models.registry.is_floor)


# --------------------------------------------------------------------------------------------
# the random floor: exact expectations
# --------------------------------------------------------------------------------------------


def _expected_ap(n: int, r: int) -> float:
    if r == 0:
        return 0.0
    if n == 1:
        return 1.0
    h = float(np.sum(1.0 / np.arange(1, n + 1)))
    return (h + (r - 1) / (n - 1) * (n - h)) / n


def _expected_rr(n: int, r: int) -> float:
    if r == 0:
        return 0.0
    # P(first relevant at position p) = C(n - p, r - 1) / C(n, r), p = 1..n - r + 1, built as
    # P(1) = r / n and P(p + 1) = P(p) * (n - p - r + 1) / (n - p)
    m = n - r + 1
    p = np.arange(1, m + 1, dtype=np.float64)
    ratios = np.ones(m)
    ratios[1:] = (n - p[:-1] - r + 1) / (n - p[:-1])
    probs = (r / n) * np.cumprod(ratios)
    return float(np.sum(probs / p))


def expected_random_per_product(product_ids, labels, *, threshold: float = 1, ks: Sequence[int] = DEFAULT_KS):
    """Per-product expected AP, NDCG@k and RR of a uniformly random ranking (exact; see the module
    docstring), in the layout of :func:`mmss_lib.metrics.ranking.per_product_metrics`: one row per product
    in first-appearance order with ``product_id, n_reviews, AP, NDCG@k..., RR``."""
    import pandas as pd

    if threshold is None or not np.isfinite(float(threshold)):
        raise ValueError(f"random floor: threshold must be a finite number, got {threshold!r}")
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"random floor: ks must be positive cut-offs, got {ks}")
    pid = _as_1d(product_ids, "product_ids")
    lab = _numeric(_as_1d(labels, "labels"), "labels")
    if len(pid) != len(lab):
        raise DataError(
            f"random floor: product_ids and labels must have the same length, got {len(pid)} and {len(lab)}"
        )
    codes, uniques = pd.factorize(pid, sort=False)
    g = len(uniques)
    th = float(threshold)
    rows = {
        "product_id": np.asarray(uniques),
        "n_reviews": np.bincount(codes, minlength=g).astype(np.int64),
        "AP": np.zeros(g),
        **{f"NDCG@{k}": np.zeros(g) for k in ks},
        "RR": np.zeros(g),
    }
    order = np.argsort(codes, kind="stable")
    bounds = np.r_[0, np.cumsum(rows["n_reviews"])]
    for j in range(g):
        y = lab[order[bounds[j] : bounds[j + 1]]]
        n = len(y)
        rel = y > th
        r = int(rel.sum())
        rows["AP"][j] = _expected_ap(n, r)
        rows["RR"][j] = _expected_rr(n, r)
        gain = np.where(rel, np.exp2(y) - 1.0, 0.0)
        ideal = np.sort(gain)[::-1]
        for k in ks:
            disc = 1.0 / np.log2(np.arange(min(k, n)) + 2.0)
            idcg = float(np.sum(ideal[: len(disc)] * disc))
            rows[f"NDCG@{k}"][j] = float(gain.mean() * disc.sum()) / idcg if idcg > 0 else 0.0
    return pd.DataFrame(rows)


def length_scores(texts) -> np.ndarray:
    """Text length in characters per review (float64), the ``length`` floor's score."""
    return np.asarray([len(t) if isinstance(t, str) else 0 for t in texts], dtype=np.float64)


# --------------------------------------------------------------------------------------------
# the floors as system classes (mmss_lib.models.registry registry)
# --------------------------------------------------------------------------------------------


class _Floor:
    """A system that needs no training: :meth:`score` ranks reviews, :meth:`per_product` gives the
    per-product metrics that enter tables and tests. ``text_dim`` / ``region_dim`` are accepted
    (the registry's constructor contract) and ignored."""

    name = ""
    needs_training = False

    def __init__(self, *, text_dim: int | None = None, region_dim: int | None = None, **options: Any):
        if options:
            raise DataError(f"floor {self.name!r} takes no options, got {sorted(options)}")

    def score(self, *, review_ids, product_ids, texts, seed: int = 0) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def per_product(self, product_ids, labels, scores, *, threshold: float):
        return per_product_metrics(product_ids, labels, scores, threshold=threshold)


class RandomFloor(_Floor):
    """``random``: expected metrics of a uniformly random ranking (exact)."""

    name = "random"

    def score(self, *, review_ids, product_ids, texts=None, seed: int = 0) -> np.ndarray:
        """One random ranking (i.i.d. uniform scores from a generator seeded by ``seed``): a
        realisation written to ``scores_{split}.csv``; the metrics are the expectations."""
        return np.random.default_rng(int(seed)).random(len(review_ids))

    def per_product(self, product_ids, labels, scores=None, *, threshold: float):
        return expected_random_per_product(product_ids, labels, threshold=threshold)


class LengthFloor(_Floor):
    """``length``: reviews ranked by text length in characters, stable ties."""

    name = "length"

    def score(self, *, review_ids, product_ids, texts, seed: int = 0) -> np.ndarray:
        if texts is None:
            raise DataError("length floor: the review texts are needed")
        return length_scores(texts)


def cue_design(cues, names: Sequence[str]) -> np.ndarray:
    """The ceilings' design matrix: an intercept column, then one column per cue of ``names``
    (``detail`` divided by 3; ``agree`` / ``img_match`` 0 where a review has no images) -> (n, 1 + k)."""
    cols = [np.ones(len(cues))]
    for c in names:
        v = cues[c].to_numpy(dtype=np.float64)
        v = np.where(np.isnan(v), 0.0, v)
        cols.append(v / 3.0 if c == "detail" else v)
    return np.stack(cols, axis=1)


class CeilingFloor(_Floor):
    """``ceiling_text`` / ``ceiling_all``: rank by a least-squares fit of the label on planted cues
    (module docstring). :meth:`fit` on train+dev, then :meth:`score`."""

    cues: tuple[str, ...] = ()

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.coef: np.ndarray | None = None
        self.lookup = None

    def fit(self, cues, review_ids, labels) -> CeilingFloor:
        """Fit on the reviews ``review_ids`` (their ``labels``), reading their cues from ``cues``
        (a frame of :data:`mmss_lib.data.synthetic.CUE_COLUMNS` covering at least those reviews)."""
        self.lookup = cues.drop_duplicates("review_id").set_index("review_id")
        x = cue_design(self._rows(review_ids, "fit"), self.cues)
        y = np.asarray(labels, dtype=np.float64)
        if len(y) == 0:
            raise DataError(f"{self.name}: no train/dev reviews to fit the cues on")
        self.coef = np.linalg.lstsq(x, y, rcond=None)[0]
        return self

    def _rows(self, review_ids, what: str):
        ids = [str(r) for r in review_ids]
        missing = [r for r in ids if r not in self.lookup.index]
        if missing:
            raise DataError(
                f"{self.name}: review(s) {missing[:3]} ({len(missing)} in all) have no planted cues "
                f"({what}); the cues files do not match the dataset: make the demo data again"
            )
        return self.lookup.loc[ids]

    def score(self, *, review_ids, product_ids, texts=None, seed: int = 0) -> np.ndarray:
        if self.coef is None:
            raise DataError(f"{self.name}: fit() the cues before scoring")
        return cue_design(self._rows(review_ids, "scoring"), self.cues) @ self.coef


class CeilingText(CeilingFloor):
    """``ceiling_text``: the fit on the cues a text can show."""

    name, cues = "ceiling_text", CEILINGS["ceiling_text"]


class CeilingAll(CeilingFloor):
    """``ceiling_all``: the fit on every planted cue."""

    name, cues = "ceiling_all", CEILINGS["ceiling_all"]


def floor_system(name: str) -> _Floor:
    if name == "random":
        return RandomFloor()
    if name == "length":
        return LengthFloor()
    if name == "ceiling_text":
        return CeilingText()
    if name == "ceiling_all":
        return CeilingAll()
    raise KeyError(f"unknown floor {name!r}; known: {', '.join(NO_TRAINING)}")


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
                    lookup.update(zip(d.review_ids, d.texts))
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
