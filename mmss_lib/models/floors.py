"""The systems that need no training: two floors and two ceilings, run and reported like every
trained system (their runs: :func:`mmss_lib.training.floors.run_floor`).

A floor tells a reader whether a trained system beats a trivial ranking. Both run through the
run-folder contract of the trainer (``{runs_root}/{dataset}/{category}/{system}/seed{n}/`` with
``config.json``, ``history.json`` (empty: no epochs), ``scores_{dev,test}.csv``, ``metrics.json``),
so ``run_experiment``, the comparison tables, the significance tests and the cross-validation
treat them like any system (:func:`mmss_lib.training.floors.run_floor` is what ``train_run`` calls for them).

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
  (:func:`mmss_lib.training.floors.per_product_for_run`); ``scores_{split}.csv`` holds one seeded random ranking (a
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
file (:func:`mmss_lib.training.floors.check_ceiling_data`, called before any run of an experiment starts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmss_lib.errors import DataError
from mmss_lib.metrics.ranking import DEFAULT_KS, as_1d, as_numeric, per_product_metrics

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
    pid = as_1d(product_ids, "product_ids")
    lab = as_numeric(as_1d(labels, "labels"), "labels")
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
