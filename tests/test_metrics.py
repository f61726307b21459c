"""mmss_lib.metrics.ranking: hand-computed cases, a plain per-product reference on random cases,
sklearn on the cases where the conventions agree, paired tests, bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mmss_lib.errors import DataError, MMSSError
from mmss_lib.metrics.ranking import (
    bootstrap_difference,
    bootstrap_interval,
    paired_test,
    per_product_metrics,
    ranking_metrics,
)

L3 = math.log2(3)


# ------------------------------------------------------------------ reference (docs/MRHP.md section 4)


def ref_product(labels, scores, th, ties="stable", ks=(3, 5)):
    """Literal transcription of docs/MRHP.md section 4 for one product."""
    idx = list(range(len(labels)))
    if ties == "stable":
        key = lambda i: (-scores[i], i)  # noqa: E731
    elif ties == "pessimistic":
        key = lambda i: (-scores[i], labels[i], i)  # noqa: E731
    else:
        key = lambda i: (-scores[i], -labels[i], i)  # noqa: E731
    ranked = [labels[i] for i in sorted(idx, key=key)]
    count, s, rr = 0, 0.0, 0.0
    for i, lab in enumerate(ranked):
        if lab > th:
            count += 1
            s += count / (i + 1)
            if rr == 0.0:
                rr = 1.0 / (i + 1)
    out = {"AP": s / count if count else 0.0, "RR": rr}

    def dcg(seq, k):
        tot = 0.0
        for i, lab in enumerate(seq[:k]):
            if lab > th:
                tot += (2**lab - 1) / math.log(2 + i)  # natural log: the base cancels
        return tot

    for k in ks:
        ideal = dcg(sorted(labels, reverse=True), k)
        out[f"NDCG@{k}"] = dcg(ranked, k) / ideal if ideal > 0 else 0.0
    return out


def ref_all(pids, labels, scores, th, ties="stable"):
    groups: dict = {}
    for p, lab, s in zip(pids, labels, scores, strict=True):
        groups.setdefault(p, ([], []))
        groups[p][0].append(lab)
        groups[p][1].append(s)
    rows = [dict(product_id=p, n_reviews=len(ls), **ref_product(ls, ss, th, ties)) for p, (ls, ss) in groups.items()]
    return pd.DataFrame(rows)


def random_split(seed, *, n_products=None, max_reviews=12, tie_decimals=1, float_labels=False):
    rng = np.random.default_rng(seed)
    n_products = n_products or int(rng.integers(1, 30))
    sizes = rng.integers(1, max_reviews + 1, n_products)
    pids = np.repeat([f"P{seed}_{i}" for i in range(n_products)], sizes)
    rng.shuffle(pids)  # products interleaved in the input
    n = len(pids)
    labels = rng.uniform(0, 4, n) if float_labels else rng.integers(0, 5, n)
    scores = np.round(rng.normal(size=n), tie_decimals)  # coarse rounding: many ties
    return pids, labels, scores


# ------------------------------------------------------------------ hand-computed cases

HAND_PIDS = ["p1", "p2", "p1", "p3", "p1", "p3", "p1", "p3"]
HAND_LABELS = [0, 4, 3, 1, 2, 1, 4, 0]
HAND_SCORES = [0.9, 0.3, 0.5, 0.8, 0.7, 0.6, 0.1, 0.2]
# p1: scores 0.9 (0), 0.5 (3), 0.7 (2), 0.1 (4) -> ranked labels (0, 2, 3, 4); relevant = label > 1
#     AP = (1/2 + 2/3 + 3/4) / 3;  RR = 1/2
#     DCG@3 = 0 + 3/log2(3) + 7/log2(4);  ideal (4, 3, 2, 0): 15 + 7/log2(3) + 3/2
#     DCG@5 = DCG@3 + 15/log2(5);          ideal@5 = ideal@3 (the 4th ideal gain is 0)
# p2: one review with label 4 -> AP = NDCG = RR = 1
# p3: labels (1, 1, 0): nothing > 1 -> AP = NDCG = RR = 0 (kept in the means, not skipped)
P1_AP = (1 / 2 + 2 / 3 + 3 / 4) / 3
P1_N3 = (3 / L3 + 7 / 2) / (15 + 7 / L3 + 3 / 2)
P1_N5 = (3 / L3 + 7 / 2 + 15 / math.log2(5)) / (15 + 7 / L3 + 3 / 2)


def test_hand_computed_per_product():
    df = per_product_metrics(HAND_PIDS, HAND_LABELS, HAND_SCORES, threshold=1)
    assert list(df.columns) == ["product_id", "n_reviews", "AP", "NDCG@3", "NDCG@5", "RR"]
    assert list(df["product_id"]) == ["p1", "p2", "p3"]  # first-appearance order
    assert list(df["n_reviews"]) == [4, 1, 3]
    np.testing.assert_allclose(df["AP"], [P1_AP, 1, 0])
    np.testing.assert_allclose(df["NDCG@3"], [P1_N3, 1, 0])
    np.testing.assert_allclose(df["NDCG@5"], [P1_N5, 1, 0])
    np.testing.assert_allclose(df["RR"], [0.5, 1, 0])
    assert P1_AP == pytest.approx(0.6388889, abs=1e-7) and P1_N3 == pytest.approx(5.392789 / 20.916508, abs=1e-6)


def test_hand_computed_means():
    m = ranking_metrics(HAND_PIDS, HAND_LABELS, HAND_SCORES, threshold=1)
    assert set(m) == {"MAP", "NDCG@3", "NDCG@5", "MRR"}
    assert m["MAP"] == pytest.approx((P1_AP + 1 + 0) / 3)
    assert m["NDCG@3"] == pytest.approx((P1_N3 + 1 + 0) / 3)
    assert m["NDCG@5"] == pytest.approx((P1_N5 + 1 + 0) / 3)
    assert m["MRR"] == pytest.approx((0.5 + 1 + 0) / 3)


def test_threshold_zero_makes_label_one_relevant():
    # Lazada threshold 0: p3's labels (1, 1, 0) ranked by 0.8, 0.6, 0.2 -> (1, 1, 0): AP = 1, NDCG = 1
    df = per_product_metrics(HAND_PIDS, HAND_LABELS, HAND_SCORES, threshold=0).set_index("product_id")
    assert df.loc["p3", "AP"] == pytest.approx(1.0)
    assert df.loc["p3", "NDCG@3"] == pytest.approx(1.0)
    # p1 at threshold 0: ranked (0, 2, 3, 4), same relevant set as at 1
    assert df.loc["p1", "AP"] == pytest.approx(P1_AP)


def test_ties_policies_hand():
    # all scores tied; input labels (0, 2, 3): stable keeps (0, 2, 3), pessimistic (0, 2, 3),
    # optimistic (3, 2, 0). Stable AP = (1/2 + 2/3)/2; optimistic AP = 1.
    pids, labels, scores = ["t"] * 3, [0, 2, 3], [0.5, 0.5, 0.5]
    stable = ranking_metrics(pids, labels, scores, threshold=1)
    assert stable["MAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert stable["NDCG@3"] == pytest.approx((3 / L3 + 7 / 2) / (7 + 3 / L3))
    assert ranking_metrics(pids, labels, scores, ties="pessimistic")["MAP"] == pytest.approx(stable["MAP"])
    assert ranking_metrics(pids, labels, scores, ties="optimistic")["MAP"] == pytest.approx(1.0)
    # reversing the input order changes the stable result (ties keep the input order) ...
    rev = ranking_metrics(pids, labels[::-1], scores, threshold=1)
    assert rev["MAP"] == pytest.approx(1.0)
    # ... but not the pessimistic one
    assert ranking_metrics(pids, labels[::-1], scores, ties="pessimistic")["MAP"] == pytest.approx(stable["MAP"])


# ------------------------------------------------------------------ reference on random cases


@pytest.mark.parametrize("seed", range(40))
def test_against_reference_random(seed):
    pids, labels, scores = random_split(seed)
    th = seed % 2  # both thresholds
    ties = ("stable", "pessimistic", "optimistic")[seed % 3]
    got = per_product_metrics(pids, labels, scores, threshold=th, ties=ties)
    want = ref_all(pids, labels, scores, th, ties)
    assert list(got["product_id"]) == list(want["product_id"])
    assert list(got["n_reviews"]) == list(want["n_reviews"])
    for col in ["AP", "NDCG@3", "NDCG@5", "RR"]:
        np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(), rtol=1e-12, atol=1e-12, err_msg=col)
    m = ranking_metrics(pids, labels, scores, threshold=th, ties=ties)
    assert m["MAP"] == pytest.approx(want["AP"].mean())
    assert m["MRR"] == pytest.approx(want["RR"].mean())


@pytest.mark.parametrize("seed", range(6))
def test_against_reference_non_integer_labels(seed):
    # continuous labels exercise the sorted ideal-DCG path (> 32 levels); halves the level path
    pids, labels, scores = random_split(100 + seed, float_labels=True)
    if seed % 2:
        labels = np.round(labels * 2) / 2
    got = per_product_metrics(pids, labels, scores, threshold=1, ks=(1, 3, 10))
    want = ref_all(pids, labels, scores, 1)
    want_k = pd.DataFrame(
        [ref_product(list(labels[pids == p]), list(scores[pids == p]), 1, ks=(1, 10)) for p in want["product_id"]]
    )
    np.testing.assert_allclose(got["AP"], want["AP"], atol=1e-12)
    np.testing.assert_allclose(got["NDCG@3"], want["NDCG@3"], atol=1e-12)
    np.testing.assert_allclose(got["NDCG@1"], want_k["NDCG@1"], atol=1e-12)
    np.testing.assert_allclose(got["NDCG@10"], want_k["NDCG@10"], atol=1e-12)


def test_permutation_invariance_without_ties_and_means_of_per_product():
    pids, labels, scores = random_split(7, n_products=20, tie_decimals=12)
    perm = np.random.default_rng(1).permutation(len(pids))
    a = ranking_metrics(pids, labels, scores)
    b = ranking_metrics(pids[perm], labels[perm], scores[perm])
    assert a == pytest.approx(b)
    per = per_product_metrics(pids, labels, scores)
    assert a["NDCG@5"] == pytest.approx(per["NDCG@5"].mean())
    # scores that sort the labels perfectly give NDCG = 1 wherever a relevant review exists
    perfect = per_product_metrics(pids, labels, labels)  # ties only among equal labels
    has_rel = perfect["AP"] > 0
    assert has_rel.any()
    np.testing.assert_allclose(perfect.loc[has_rel, ["AP", "NDCG@3", "NDCG@5", "RR"]], 1.0)
    assert (perfect.loc[~has_rel, ["AP", "NDCG@3", "NDCG@5", "RR"]] == 0).all().all()


# ------------------------------------------------------------------ sklearn where the conventions agree


@pytest.mark.parametrize("seed", range(10))
def test_ndcg_matches_sklearn_on_agreeing_cases(seed):
    """sklearn.metrics.ndcg_score uses linear gains, averages tied scores and refuses one-document
    queries. It agrees with the protocol when: the relevance passed to it is the protocol's
    gain (2^label - 1 if label > th else 0), the scores of one product are distinct (no
    tie handling), and every product has >= 2 reviews. A product with no relevant review is
    0 in both."""
    from sklearn.metrics import average_precision_score, ndcg_score

    rng = np.random.default_rng(seed)
    pids, labels, scores = random_split(200 + seed, tie_decimals=12)
    sizes = pd.Series(pids).value_counts()
    keep = np.isin(pids, sizes[sizes >= 2].index)
    pids, labels, scores = pids[keep], labels[keep], scores[keep]
    if len(pids) == 0:
        pytest.skip("no product with two reviews")
    th = int(rng.integers(0, 2))
    per = per_product_metrics(pids, labels, scores, threshold=th).set_index("product_id")
    for p in per.index:
        m = pids == p
        gains = np.where(labels[m] > th, 2.0 ** labels[m] - 1, 0.0)
        for k in (3, 5):
            assert per.loc[p, f"NDCG@{k}"] == pytest.approx(ndcg_score([gains], [scores[m]], k=k), abs=1e-12)
        rel = labels[m] > th
        if rel.any():  # sklearn's AP (no ties) = the protocol's AP when a relevant review exists
            assert per.loc[p, "AP"] == pytest.approx(average_precision_score(rel, scores[m]), abs=1e-12)


def test_sklearn_disagrees_on_ties():
    # the protocol keeps the input order among ties; sklearn averages over the tied group
    from sklearn.metrics import ndcg_score

    labels, scores = np.array([0, 4, 0]), np.array([1.0, 1.0, 0.0])
    ours = per_product_metrics(["x"] * 3, labels, scores)["NDCG@3"].iloc[0]
    assert ours == pytest.approx(1 / L3)  # label 4 at rank 2
    theirs = ndcg_score([np.where(labels > 1, 2.0**labels - 1, 0)], [scores], k=3)
    assert theirs == pytest.approx((1 + 1 / L3) / 2)  # average of ranks 1 and 2
    assert ours != pytest.approx(theirs)


# ------------------------------------------------------------------ inputs and errors


def test_input_types_agree():
    pids, labels, scores = random_split(3)
    base = ranking_metrics(pids, labels, scores)
    int_ids = pd.factorize(pids)[0] + 1000
    assert ranking_metrics(list(pids), list(labels), list(scores)) == pytest.approx(base)
    assert ranking_metrics(pd.Series(pids), pd.Series(labels), pd.Series(scores)) == pytest.approx(base)
    assert ranking_metrics(int_ids, labels.astype(np.float32), scores) == pytest.approx(base)
    torch = pytest.importorskip("torch")
    assert ranking_metrics(
        torch.tensor(int_ids), torch.tensor(labels), torch.tensor(scores, dtype=torch.float64)
    ) == pytest.approx(base)


def test_errors():
    with pytest.raises(DataError, match="same length.*3, 2 and 3"):
        ranking_metrics(["a", "a", "b"], [1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="scores has 1 NaN.*position 1"):
        ranking_metrics(["a", "a"], [1, 2], [0.1, float("nan")])
    with pytest.raises(DataError, match="labels has 1 NaN"):
        per_product_metrics(["a", "a"], [1, np.nan], [0.1, 0.2])
    with pytest.raises(DataError, match="numeric"):
        ranking_metrics(["a"], ["high"], [0.1])
    with pytest.raises(ValueError, match="ties must be one of"):
        ranking_metrics(["a"], [1], [0.1], ties="random")
    with pytest.raises(ValueError, match="ks"):
        ranking_metrics(["a"], [1], [0.1], ks=(0,))
    assert issubclass(DataError, MMSSError)


def test_empty_input():
    m = ranking_metrics([], [], [])
    assert all(math.isnan(v) for v in m.values())
    assert len(per_product_metrics([], [], [])) == 0


# ------------------------------------------------------------------ paired tests


def test_paired_test_matches_scipy():
    from scipy import stats

    rng = np.random.default_rng(0)
    a = rng.uniform(size=200)
    b = np.clip(a - 0.05 + rng.normal(0, 0.1, 200), 0, 1)
    r = paired_test(a, b)
    t = stats.ttest_rel(a, b)
    w = stats.wilcoxon(a - b)
    assert r["n"] == 200
    assert r["mean_diff"] == pytest.approx(np.mean(a - b))
    assert r["t_stat"] == pytest.approx(t.statistic) and r["t_p"] == pytest.approx(t.pvalue)
    assert r["wilcoxon_stat"] == pytest.approx(w.statistic) and r["wilcoxon_p"] == pytest.approx(w.pvalue)
    assert r["t_p"] < 0.01 and r["t_stat"] > 0
    assert paired_test(b, a)["t_stat"] == pytest.approx(-r["t_stat"])


def test_paired_test_degenerate_cases():
    same = np.array([0.2, 0.5, 1.0, 0.0])
    r = paired_test(same, same.copy())
    assert (r["t_stat"], r["t_p"], r["wilcoxon_stat"], r["wilcoxon_p"], r["mean_diff"]) == (0.0, 1.0, 0.0, 1.0, 0.0)
    one = paired_test([0.5], [0.2])
    assert one["n"] == 1 and math.isnan(one["t_p"]) and one["mean_diff"] == pytest.approx(0.3)
    const = paired_test([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])  # constant non-zero difference
    assert const["mean_diff"] == pytest.approx(0.1) and const["n"] == 3
    with pytest.raises(DataError, match="same length"):
        paired_test([0.1, 0.2], [0.1])


def test_paired_test_aligns_series_on_products():
    a = pd.Series([0.9, 0.1, 0.5], index=["x", "y", "z"])
    b = pd.Series([0.5, 0.1, 0.9], index=["z", "y", "x"])  # same values per product, other order
    assert paired_test(a, b)["mean_diff"] == 0.0
    with pytest.raises(DataError, match="different products"):
        paired_test(a, pd.Series([0.1, 0.2, 0.3], index=["x", "y", "w"]))


# ------------------------------------------------------------------ benchmark (smoke)


def test_bench_metrics_smoke(capsys):
    """Smoke test: a tiny run of `mmss bench metrics` agrees with its groupby-apply baseline."""
    from mmss_lib.bench.metrics import bench_metrics

    assert bench_metrics(["--reviews", "3000", "--products", "200", "--repeats", "1"], prog="t") == 0
    out = capsys.readouterr().out
    assert "speed-up" in out and "results agree: True" in out


def test_docstring_examples():
    """The worked example in the module docstring prints exactly what it says."""
    import doctest

    import mmss_lib.metrics.ranking

    result = doctest.testmod(mmss_lib.metrics.ranking)
    assert result.attempted >= 2 and result.failed == 0


# ------------------------------------------------------------------ bootstrap intervals (issue 10)


def _ref_quantile(sorted_vals, q):
    """numpy's default ('linear') quantile, written out."""
    pos = q * (len(sorted_vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (pos - lo) * (sorted_vals[hi] - sorted_vals[lo])


def _ref_bootstrap(values, n_boot, level, seed, rows):
    """Brute force: the documented index draws, one replicate mean at a time in Python."""
    rng = np.random.default_rng(seed)
    n = len(values)
    means = []
    done = 0
    while done < n_boot:
        take = min(rows, n_boot - done)
        idx = rng.integers(0, n, size=(take, n))
        for row in idx:
            means.append(sum(values[int(i)] for i in row) / n)
        done += take
    means.sort()
    alpha = (1 - level) / 2
    return _ref_quantile(means, alpha), _ref_quantile(means, 1 - alpha)


@pytest.mark.parametrize("n,n_boot,level,cells", [(7, 500, 0.95, None), (30, 333, 0.9, None), (11, 250, 0.95, 11 * 40)])
def test_bootstrap_interval_matches_brute_force(monkeypatch, n, n_boot, level, cells):
    import mmss_lib.metrics.ranking as M

    if cells is not None:  # force several row chunks
        monkeypatch.setattr(M, "_BOOT_CELLS", cells)
    vals = list(np.random.default_rng(n).random(n))
    rows = max(1, M._BOOT_CELLS // n)
    lo, hi = M.bootstrap_interval(vals, n_boot=n_boot, level=level, seed=3)
    rlo, rhi = _ref_bootstrap(vals, n_boot, level, 3, rows)
    assert lo == pytest.approx(rlo, abs=1e-12) and hi == pytest.approx(rhi, abs=1e-12)
    assert lo < float(np.mean(vals)) < hi


def test_bootstrap_interval_against_exact_bootstrap_distribution():
    """n = 5: all 5^5 equally likely resamples give the exact bootstrap distribution of the mean;
    the Monte-Carlo percentile bounds must sit at its 2.5% / 97.5% points."""
    import itertools

    vals = np.array([0.1, 0.35, 0.5, 0.8, 1.0])
    exact = np.sort(np.array([vals[list(ix)].mean() for ix in itertools.product(range(5), repeat=5)]))
    lo, hi = bootstrap_interval(vals, n_boot=40000, seed=1)
    cdf = lambda t: np.searchsorted(exact, t + 1e-12, side="right") / len(exact)  # noqa: E731
    assert abs(cdf(lo) - 0.025) < 0.01
    assert abs(cdf(hi) - 0.975) < 0.01


def test_bootstrap_interval_known_cases():
    assert bootstrap_interval([0.7] * 9) == (0.7, 0.7)
    assert bootstrap_interval([0.3]) == (0.3, 0.3)
    x = np.random.default_rng(0).normal(0.5, 0.2, size=400)
    lo, hi = bootstrap_interval(x, n_boot=4000)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))  # normal-theory half width
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.12)
    assert (lo + hi) / 2 == pytest.approx(x.mean(), abs=0.25 * half)
    # deterministic by seed, different with another seed, narrower at a lower level
    assert bootstrap_interval(x, seed=5) == bootstrap_interval(x, seed=5)
    assert bootstrap_interval(x, seed=5) != bootstrap_interval(x, seed=6)
    lo90, hi90 = bootstrap_interval(x, level=0.9)
    assert hi90 - lo90 < hi - lo


def test_bootstrap_interval_rejects_bad_input():
    with pytest.raises(DataError, match="no values"):
        bootstrap_interval([])
    with pytest.raises(DataError, match="NaN"):
        bootstrap_interval([0.1, float("nan")])
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval([0.1, 0.2], level=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_interval([0.1, 0.2], n_boot=0)


def test_bootstrap_difference_paired():
    rng = np.random.default_rng(2)
    a = rng.random(50)
    # a constant shift: every resample has the same difference
    d, lo, hi = bootstrap_difference(a + 0.1, a)
    assert d == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    # paired = bootstrap of the per-product differences with the same draws
    b = a + rng.normal(0.02, 0.05, size=50)
    d, lo, hi = bootstrap_difference(b, a, seed=4)
    assert d == pytest.approx(float(np.mean(b - a)))
    assert (lo, hi) == bootstrap_interval(b - a, seed=4)
    assert lo < d < hi
    # the paired interval is much narrower than the difference of unpaired intervals would suggest
    alo, ahi = bootstrap_interval(a)
    assert hi - lo < (ahi - alo) / 2


def test_bootstrap_difference_aligns_series_on_products():
    ids = [f"p{i}" for i in range(20)]
    rng = np.random.default_rng(8)
    a = pd.Series(rng.random(20), index=ids)
    b = pd.Series(rng.random(20), index=ids)
    shuffled = b.sample(frac=1.0, random_state=1)
    assert bootstrap_difference(a, shuffled) == bootstrap_difference(a, b)
    with pytest.raises(DataError, match="different products"):
        bootstrap_difference(a, b.rename(index={"p0": "zz"}))
    with pytest.raises(DataError, match="same length"):
        bootstrap_difference([0.1, 0.2], [0.1])
