"""MRHP ranking metrics (MAP, NDCG@k, MRR), per-product metrics, paired significance tests and
percentile bootstrap intervals over products (:func:`bootstrap_interval`, :func:`bootstrap_difference`).

The protocol is the one shared by every system of this line of work (docs/MRHP.md section 4),
which produced every number of the paper's Tables 1, 2 and 4:

- Per product, its reviews are ranked by predicted score, descending, with a *stable* sort:
  tied scores keep the input order (``ties="stable"``, the default and the protocol).
- With a relevance threshold ``th`` (1 for Amazon-MRHP and the demo set, 0 for Lazada-MRHP; see
  ``mmss_lib.data.mrhp.default_threshold``), a review is *relevant* when ``label > th``.
- AP: walk the ranked list; at each 1-based position i holding a relevant review, count it and
  add count / i; AP = sum / count, and 0 for a product without relevant reviews (such products
  are *not* skipped).
- DCG@k = sum over the first k ranked reviews (i 0-based) of gain / log2(2 + i), with
  gain = 2^label - 1 for a relevant review and 0 otherwise (a review with 0 < label <= th has
  gain 0). NDCG@k = DCG@k / DCG@k of the ideal order of the same product, 0 when the ideal DCG
  is 0. (Any base of the logarithm gives the same NDCG: it cancels in the ratio.)
- RR: 1 / rank of the first relevant review, 0 if there is none (MRR is its mean).
- MAP, NDCG@k and MRR are unweighted means over all products of the split (single-review
  products and products without relevant reviews included).

Everything is vectorised with numpy: a stable argsort by -score followed by a stable radix sort
by product code (together a sort by (product, -score, input position)), group offsets, and
per-product sums with ``np.bincount(..., weights=...)``; the ideal DCG comes from per-product
label-level counts without a sort. There is no Python loop over products. ``mmss bench metrics`` measures it against a pandas
groupby-apply of a per-product Python function (:func:`product_metrics_reference`).

Worked example (threshold 1)::

    >>> m = ranking_metrics(["a", "a", "a", "b", "b"], [3, 0, 2, 0, 4],
    ...                     [0.9, 0.8, 0.1, 0.7, 0.2], threshold=1)
    >>> {k: round(v, 4) for k, v in m.items()}
    {'MAP': 0.6667, 'NDCG@3': 0.7934, 'NDCG@5': 0.7934, 'MRR': 0.75}

Product a ranks labels (3, 0, 2): AP = (1/1 + 2/3) / 2 = 0.8333, RR = 1, DCG = 7 + 3/log2(4)
= 8.5, ideal (3, 2, 0) DCG = 7 + 3/log2(3) = 8.8928, NDCG = 0.9558. Product b ranks (0, 4):
AP = 1/2, RR = 1/2, NDCG = (15/log2(3)) / 15 = 0.6309. MAP = (0.8333 + 0.5) / 2.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from mmss_lib.errors import DataError

TIE_POLICIES = ("stable", "pessimistic", "optimistic")
# The metrics of every table, summary and run (defined here once): the names in metrics.json and
# the tables, the per-product column each is the mean of, and those with a paired test.
METRIC_NAMES = ("MAP", "NDCG@3", "NDCG@5", "MRR")
PER_PRODUCT_COLUMN = {"MAP": "AP", "NDCG@3": "NDCG@3", "NDCG@5": "NDCG@5", "MRR": "RR"}
TESTED_METRICS = ("MAP", "NDCG@3", "NDCG@5")
DEFAULT_KS = (3, 5)


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------


def as_1d(x: Any, name: str) -> np.ndarray:
    """A 1-d numpy array from a list, numpy array, pandas Series or torch tensor."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    elif hasattr(x, "to_numpy"):  # pandas Series / Index
        x = x.to_numpy()
    arr = np.asarray(x)
    if arr.ndim == 0:
        raise DataError(f"ranking metrics: {name} must be a 1-d sequence, got a scalar {arr!r}")
    if arr.ndim != 1:
        raise DataError(f"ranking metrics: {name} must be 1-d, got shape {arr.shape}")
    return arr


def as_numeric(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` as float64; a non-numeric dtype or a NaN is refused, naming ``name`` and the first position."""
    try:
        out = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"ranking metrics: {name} must be numeric, got dtype {arr.dtype} ({exc})") from None
    bad = np.flatnonzero(np.isnan(out))
    if bad.size:
        raise DataError(
            f"ranking metrics: {name} has {bad.size} NaN value(s), first at position "
            f"{int(bad[0])}; every review needs a finite {name[:-1] if name.endswith('s') else name}"
        )
    return out


def _prepare(product_ids, labels, scores, threshold, ties):
    """Validate inputs; return (codes, uniques, labels f64, scores f64) with codes in
    first-appearance order of the products."""
    import pandas as pd

    if ties not in TIE_POLICIES:
        raise ValueError(f"ranking metrics: ties must be one of {TIE_POLICIES}, got {ties!r}")
    if threshold is None or not np.isfinite(float(threshold)):
        raise ValueError(f"ranking metrics: threshold must be a finite number, got {threshold!r}")
    pid = as_1d(product_ids, "product_ids")
    lab = as_1d(labels, "labels")
    sco = as_1d(scores, "scores")
    if not (len(pid) == len(lab) == len(sco)):
        raise DataError(
            f"ranking metrics: product_ids, labels and scores must have the same length, "
            f"got {len(pid)}, {len(lab)} and {len(sco)}"
        )
    lab = as_numeric(lab, "labels")
    sco = as_numeric(sco, "scores")
    if np.isinf(lab).any():
        raise DataError(
            f"ranking metrics: labels must be finite, first infinite at position "
            f"{int(np.flatnonzero(np.isinf(lab))[0])}"
        )
    if pid.dtype.kind == "O" and pd.isna(pid).any():
        raise DataError(
            f"ranking metrics: product_ids has a missing value at position {int(np.flatnonzero(pd.isna(pid))[0])}"
        )
    codes, uniques = pd.factorize(pid, sort=False)  # codes 0..G-1 in first-appearance order
    return codes.astype(np.int64), np.asarray(uniques), lab, sco


def _stable_argsort_codes(codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Stable argsort of dense group codes 0..n_groups-1 by LSD radix passes of 16 bits (numpy
    runs a linear-time radix sort for 16-bit keys; a generic stable sort is ~6x slower)."""
    if n_groups <= 1 << 16:
        return np.argsort(codes.astype(np.uint16), kind="stable")
    if n_groups <= 1 << 32:
        p1 = np.argsort((codes & 0xFFFF).astype(np.uint16), kind="stable")  # low digit
        p2 = np.argsort((codes[p1] >> 16).astype(np.uint16), kind="stable")  # high digit, stable
        return p1[p2]
    return np.argsort(codes, kind="stable")


def _rank_order(codes: np.ndarray, labels: np.ndarray, scores: np.ndarray, ties: str, n_groups: int) -> np.ndarray:
    """Permutation sorting by product, then score descending, then the tie key.

    ``stable``: input position (the protocol); ``pessimistic``: lower labels first among equal
    scores (the worst case for AP and NDCG alike), then input position; ``optimistic``: higher
    labels first. Two stable passes: by the within-product key, then by product.
    """
    if ties == "stable":
        by_score = np.argsort(-scores, kind="stable")  # ties keep the input order
    else:
        tie_key = labels if ties == "pessimistic" else -labels
        by_score = np.lexsort((tie_key, -scores))  # lexsort is stable: then input order
    return by_score[_stable_argsort_codes(codes[by_score], n_groups)]


def _prefix_discounts(m: int) -> np.ndarray:
    """D[j] = sum_{i<j} 1 / log2(2 + i) for j = 0..m (cumulative DCG discounts)."""
    return np.concatenate(([0.0], np.cumsum(1.0 / np.log2(np.arange(m) + 2.0))))


def _ideal_dcg(
    codes: np.ndarray, labels: np.ndarray, threshold: float, n_groups: int, counts: np.ndarray, ks: Sequence[int]
) -> dict[int, np.ndarray]:
    """DCG@k of the ideal order (gains descending) of every product; it does not depend on the
    predicted order, so it works on the unsorted inputs.

    With few distinct relevant label levels (MRHP: at most 4) no sort is needed: level j,
    counted from the top, fills ideal ranks [C_{j-1}, C_j) of its product (C = cumulative counts
    of the higher levels), so it adds gain_j * (D[min(C_j, k)] - D[min(C_{j-1}, k)]) with D the
    prefix sums of the discounts. Many levels (e.g. continuous labels) fall back to sorting the
    gains within each product.
    """
    rel = labels > threshold
    disc_prefix = _prefix_discounts(max(ks))
    out = {k: np.zeros(n_groups) for k in ks}
    above = np.zeros(n_groups, dtype=np.int64)  # C_{j-1}: ideal ranks already taken

    def add_level(level: float, cnt: np.ndarray) -> None:
        g = 2.0**level - 1.0  # Eq. of DCG: gain 2^label - 1
        for k in ks:
            out[k] += g * (disc_prefix[np.minimum(above + cnt, k)] - disc_prefix[np.minimum(above, k)])
        above[:] += cnt

    rel_lab = labels[rel]
    if not rel_lab.size:
        return out
    lo, hi = float(rel_lab.min()), float(rel_lab.max())
    if hi - lo <= 64 and np.array_equal(rel_lab, np.round(rel_lab)):
        # integer labels: one bincount gives the (G, levels) count matrix
        n_lv = int(hi - lo) + 1
        key = codes[rel] * n_lv + (rel_lab - lo).astype(np.int64)
        mat = np.bincount(key, minlength=n_groups * n_lv).reshape(n_groups, n_lv)  # (G, levels)
        for j in range(n_lv - 1, -1, -1):
            if mat[:, j].any():
                add_level(lo + j, mat[:, j])
        return out
    levels = np.unique(rel_lab)[::-1]  # relevant levels, descending
    if len(levels) <= 32:
        for level in levels:
            add_level(float(level), np.bincount(codes[labels == level], minlength=n_groups))
        return out
    gain = np.where(rel, np.exp2(labels) - 1.0, 0.0)
    ideal_gain = gain[np.lexsort((-gain, codes))]  # (n,) gains descending per product
    starts = np.cumsum(counts) - counts
    rank0 = np.arange(len(codes)) - np.repeat(starts, counts)  # (n,) 0-based ideal rank
    disc = 1.0 / np.log2(rank0 + 2.0)
    return {k: np.add.reduceat(np.where(rank0 < k, ideal_gain * disc, 0.0), starts) for k in ks}


def _group_metrics(codes, labels, scores, threshold, ties, ks) -> dict[str, np.ndarray]:
    """Per-product AP, NDCG@k for k in ``ks``, RR and review counts (arrays indexed by code).

    After ranking, only the relevant reviews contribute to any metric, so everything below
    works on the R ranked positions holding a relevant review (``pos``), grouped by product
    with per-group offsets, and per-product sums are ``np.bincount(..., weights=...)``.
    """
    n = len(codes)
    n_groups = int(codes.max()) + 1 if n else 0
    if n == 0:
        empty = np.zeros(0)
        return {"n_reviews": np.zeros(0, dtype=np.int64), "AP": empty, "RR": empty, **{f"NDCG@{k}": empty for k in ks}}
    order = _rank_order(codes, labels, scores, ties, n_groups)  # (n,) ranked, grouped by product
    counts = np.bincount(codes, minlength=n_groups)  # (G,) reviews per product
    starts = np.cumsum(counts) - counts  # (G,) first ranked position of each
    lab = labels[order]  # (n,) labels in ranked order
    pos = np.flatnonzero(lab > threshold)  # (R,) ranked positions, relevant only
    grp = np.repeat(np.arange(n_groups), counts)[pos]  # (R,) their product, non-decreasing
    rank0 = pos - starts[grp]  # (R,) 0-based rank within the product
    first = np.flatnonzero(np.r_[True, grp[1:] != grp[:-1]]) if len(pos) else pos  # first relevant per product
    n_rel_first = np.diff(np.r_[first, len(pos)])  # relevant reviews of those products

    # AP: the j-th relevant review of its product at rank i adds j / i
    hits = np.arange(len(pos)) - np.repeat(first, n_rel_first) + 1  # (R,) j = relevant count so far
    ap_sum = np.bincount(grp, weights=hits / (rank0 + 1.0), minlength=n_groups)
    n_rel = np.bincount(grp, minlength=n_groups)
    ap = np.divide(ap_sum, n_rel, out=np.zeros(n_groups), where=n_rel > 0)

    # RR: 1 / rank of the first relevant review (0 without one)
    rr = np.zeros(n_groups)
    rr[grp[first]] = 1.0 / (rank0[first] + 1.0)

    # NDCG@k: gain 2^label - 1 of relevant reviews (others 0), discount 1 / log2(2 + i)
    weighted = (np.exp2(lab[pos]) - 1.0) / np.log2(rank0 + 2.0)  # (R,) discounted gains
    ideal = _ideal_dcg(codes, labels, threshold, n_groups, counts, ks)
    out = {"n_reviews": counts.astype(np.int64), "AP": ap, "RR": rr}
    for k in ks:
        top = rank0 < k
        dcg = np.bincount(grp[top], weights=weighted[top], minlength=n_groups)
        out[f"NDCG@{k}"] = np.divide(dcg, ideal[k], out=np.zeros(n_groups), where=ideal[k] > 0)
    return out


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ranking metrics: ks must be positive cut-offs, got {ks}")
    return ks


def per_product_metrics(
    product_ids, labels, scores, *, threshold: float = 1, ties: str = "stable", ks: Sequence[int] = DEFAULT_KS
):
    """One row per product (first-appearance order) with ``product_id``, ``n_reviews``, ``AP``,
    ``NDCG@k`` for each k in ``ks`` (default 3 and 5) and ``RR`` — the inputs of
    :func:`paired_test` and of the significance markers of Tables 1-2.

    ``product_ids`` (strings or ints), ``labels`` (numeric, e.g. 0..4) and ``scores`` (numeric,
    no NaN) are equally long lists, numpy arrays, pandas Series or tensors, one entry per review.
    """
    import pandas as pd

    ks = _check_ks(ks)
    codes, uniques, lab, sco = _prepare(product_ids, labels, scores, threshold, ties)
    g = _group_metrics(codes, lab, sco, float(threshold), ties, ks)
    cols = {"product_id": uniques, "n_reviews": g["n_reviews"], "AP": g["AP"]}
    cols.update({f"NDCG@{k}": g[f"NDCG@{k}"] for k in ks})
    cols["RR"] = g["RR"]
    return pd.DataFrame(cols)


def ranking_metrics(
    product_ids, labels, scores, *, threshold: float = 1, ties: str = "stable", ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """MAP, NDCG@k (k in ``ks``, default 3 and 5) and MRR of one split: unweighted means of the
    per-product values over all products (see the module docstring for the protocol).

    ``threshold``: relevance threshold (label > threshold is relevant); pass
    ``mmss_lib.data.mrhp.default_threshold(dataset)`` (amazon/demo 1, lazada 0). ``ties``:
    ``"stable"`` (the protocol: tied scores keep the input order), ``"pessimistic"`` (lower
    labels first among ties) or ``"optimistic"`` (higher labels first). Returns floats; with no
    reviews at all every metric is NaN.
    """
    ks = _check_ks(ks)
    codes, _, lab, sco = _prepare(product_ids, labels, scores, threshold, ties)
    g = _group_metrics(codes, lab, sco, float(threshold), ties, ks)

    def mean(a: np.ndarray) -> float:
        return float(a.mean()) if a.size else float("nan")

    out = {"MAP": mean(g["AP"])}
    out.update({f"NDCG@{k}": mean(g[f"NDCG@{k}"]) for k in ks})
    out["MRR"] = mean(g["RR"])
    return out


# --------------------------------------------------------------------------------------------
# significance
# --------------------------------------------------------------------------------------------


def paired_test(a, b, *, alternative: str = "two-sided") -> dict[str, float]:
    """Paired significance test of two systems over the same products (Tables 1-2 "∗" markers).

    ``a`` and ``b`` are per-product values of one metric (e.g. the ``AP`` columns of
    :func:`per_product_metrics` of two systems on the same test products). Two pandas Series
    are aligned on their index (which must hold the same products); other inputs are paired by
    position. Returns ``t_stat``, ``t_p`` (scipy.stats.ttest_rel), ``wilcoxon_stat``,
    ``wilcoxon_p`` (scipy.stats.wilcoxon on a - b), ``mean_diff`` (mean of a - b) and ``n``.
    When every difference is zero both tests report statistic 0 and p = 1 (no evidence of a
    difference); with fewer than two pairs the p-values are NaN.
    """
    from scipy import stats

    if hasattr(a, "index") and hasattr(b, "index") and hasattr(a, "reindex"):
        if len(a) != len(b) or not a.index.sort_values().equals(b.index.sort_values()):
            missing = sorted(set(a.index) ^ set(b.index), key=str)[:5]
            raise DataError(
                f"paired_test: the two systems were evaluated on different products "
                f"(e.g. {missing}); pair them on the same test products"
            )
        b = b.reindex(a.index)
    x = as_numeric(as_1d(a, "a"), "a")
    y = as_numeric(as_1d(b, "b"), "b")
    if len(x) != len(y):
        raise DataError(
            f"paired_test: a and b must have the same length (one value per product), got {len(x)} and {len(y)}"
        )
    d = x - y
    n = int(len(d))
    out = {
        "t_stat": float("nan"),
        "t_p": float("nan"),
        "wilcoxon_stat": float("nan"),
        "wilcoxon_p": float("nan"),
        "mean_diff": float(d.mean()) if n else float("nan"),
        "n": n,
    }
    if n == 0:
        return out
    if np.all(d == 0):
        out.update(t_stat=0.0, t_p=1.0, wilcoxon_stat=0.0, wilcoxon_p=1.0)
        return out
    if n < 2:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant non-zero differences: t = +-inf
        t = stats.ttest_rel(x, y, alternative=alternative)
        try:
            w = stats.wilcoxon(d, alternative=alternative)
            out.update(wilcoxon_stat=float(w.statistic), wilcoxon_p=float(w.pvalue))
        except ValueError:  # scipy refuses some degenerate inputs; leave NaN
            pass
    out.update(t_stat=float(t.statistic), t_p=float(t.pvalue))
    return out


# --------------------------------------------------------------------------------------------
# bootstrap intervals over products
# --------------------------------------------------------------------------------------------

_BOOT_CELLS = 1 << 22  # resample indices held at once (n_boot rows are drawn in chunks of this size)


def _check_boot_args(n_boot: int, level: float, who: str) -> None:
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"{who}: n_boot must be a positive integer, got {n_boot!r}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"{who}: level must lie strictly between 0 and 1, got {level!r}")


def bootstrap_means(values, *, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the mean of ``values`` (one value per product).

    Replicate b is the mean of ``values[idx[b]]`` where ``idx`` is the ``(n_boot, n)`` matrix of
    ``numpy.random.default_rng(seed).integers(0, n, size=(rows, n))`` drawn in consecutive row
    chunks of at most ``2**22 // n`` rows (so memory stays bounded for large ``n``; the chunking
    depends on ``n`` only, so the result is a deterministic function of values, n_boot and seed).
    """
    x = as_numeric(as_1d(values, "values"), "values")
    _check_boot_args(n_boot, 0.5, "bootstrap_means")
    n = len(x)
    if n == 0:
        raise DataError("bootstrap_means: no values (one per product) to resample")
    rng = np.random.default_rng(seed)
    rows = max(1, _BOOT_CELLS // n)
    out = np.empty(int(n_boot))
    for start in range(0, int(n_boot), rows):
        stop = min(int(n_boot), start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = x[idx].mean(axis=1)
    return out


def bootstrap_interval(values, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval ``(lo, hi)`` of the mean of ``values`` over products.

    Products are resampled with replacement (:func:`bootstrap_means`); ``lo`` and ``hi`` are the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles (numpy's default linear interpolation)
    of the ``n_boot`` replicate means. Deterministic for a given ``seed``. A single product or
    constant values give ``lo == hi`` (no spread to resample).
    """
    _check_boot_args(n_boot, level, "bootstrap_interval")
    means = bootstrap_means(values, n_boot=n_boot, seed=seed)
    alpha = (1.0 - float(level)) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_difference(a, b, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Paired percentile bootstrap of the difference of two systems on the same products.

    ``a`` and ``b`` are per-product values of one metric; two pandas Series are aligned on their
    index (which must hold the same products), other inputs are paired by position. The products
    are resampled together (the same index draws for both systems), which is the bootstrap of the
    per-product differences ``a - b``. Returns ``(mean_diff, lo, hi)``; an interval that excludes
    0 says the difference is significant at ``1 - level`` (two-sided).
    """
    _check_boot_args(n_boot, level, "bootstrap_difference")
    if hasattr(a, "index") and hasattr(b, "index") and hasattr(a, "reindex"):
        if len(a) != len(b) or not a.index.sort_values().equals(b.index.sort_values()):
            missing = sorted(set(a.index) ^ set(b.index), key=str)[:5]
            raise DataError(
                f"bootstrap_difference: the two systems were evaluated on different products "
                f"(e.g. {missing}); pair them on the same products"
            )
        b = b.reindex(a.index)
    x = as_numeric(as_1d(a, "a"), "a")
    y = as_numeric(as_1d(b, "b"), "b")
    if len(x) != len(y):
        raise DataError(
            f"bootstrap_difference: a and b must have the same length (one value per product), "
            f"got {len(x)} and {len(y)}"
        )
    d = x - y
    lo, hi = bootstrap_interval(d, n_boot=n_boot, level=level, seed=seed)
    return float(d.mean()) if len(d) else float("nan"), lo, hi


# --------------------------------------------------------------------------------------------
# reference implementation (per product, plain Python; the baseline of ``mmss bench metrics``)
# --------------------------------------------------------------------------------------------


def product_metrics_reference(
    labels: Sequence[float], scores: Sequence[float], threshold: float = 1, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """The protocol for ONE product, written as a plain loop (the benchmark's baseline)."""
    ranked = [lab for _, _, lab in sorted(zip((-float(s) for s in scores), range(len(labels)), labels, strict=True))]
    count, total, rr = 0, 0.0, 0.0
    for i, lab in enumerate(ranked, start=1):
        if lab > threshold:
            count += 1
            total += count / i
            if count == 1:
                rr = 1.0 / i
    out = {"AP": total / count if count else 0.0}

    def dcg(seq, k):
        return sum((2.0**lab - 1.0) / np.log2(2 + i) for i, lab in enumerate(seq[:k]) if lab > threshold)

    ideal = sorted(ranked, reverse=True)
    for k in ks:
        best = dcg(ideal, k)
        out[f"NDCG@{k}"] = dcg(ranked, k) / best if best > 0 else 0.0
    out["RR"] = rr
    return out
