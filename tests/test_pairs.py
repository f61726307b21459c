"""mmss_lib.data.pairs.sample_pairs: hand examples, invariants against brute force, determinism,
the (1 - label frequency) weighting."""

from __future__ import annotations

from collections import Counter
from itertools import product as cartesian

import numpy as np
import pandas as pd
import pytest

from mmss_lib.data.pairs import sample_pairs
from mmss_lib.errors import DataError


def random_reviews(seed, n_products=25, max_reviews=15):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_reviews + 1, n_products)
    prod = np.repeat(np.arange(n_products) * 7 + 3, sizes)  # int product ids
    rng.shuffle(prod)
    label = rng.integers(0, 5, len(prod))
    return prod, label


def brute_all(prod, label):
    return sorted(
        (i, j) for i, j in cartesian(range(len(prod)), repeat=2) if prod[i] == prod[j] and label[i] > label[j]
    )


def brute_mcr_candidates(prod, label):
    """positive index -> set of candidate negatives, straight from docs/MRHP.md section 5."""
    out = {}
    for p in set(prod):
        idx = [i for i in range(len(prod)) if prod[i] == p]
        levels = sorted({label[i] for i in idx})
        for i in idx:
            if label[i] not in levels[:2]:
                out[i] = {j for j in idx if label[j] <= label[i] - 2}
    return out


def test_hand_example_all():
    pairs = sample_pairs(list("aaabb"), [2, 0, 1, 3, 3], scheme="all")
    assert pairs.tolist() == [[0, 1], [0, 2], [2, 1]]
    assert pairs.dtype == np.int64


def test_hand_example_mcr():
    # product a: levels {0, 1, 2}; only review 0 (label 2) is positive, only review 1 (label 0)
    # is 2 lower. Product b: all labels equal -> nothing.
    pairs = sample_pairs(list("aaabb"), [2, 0, 1, 3, 3], n_neg=4, rng=np.random.default_rng(0))
    assert pairs.tolist() == [[0, 1]] * 4


def test_mcr_two_levels_give_no_pairs_and_edge_cases():
    rng = np.random.default_rng(0)
    assert sample_pairs(["a"] * 4, [0, 4, 0, 4], rng=rng).shape == (0, 2)  # two levels only
    assert sample_pairs(["a", "b", "c"], [0, 4, 2], rng=rng).shape == (0, 2)  # single-review products
    assert sample_pairs(["a", "b", "c"], [0, 4, 2], scheme="all").shape == (0, 2)
    assert sample_pairs([], [], rng=rng).shape == (0, 2)
    assert sample_pairs(["a"] * 3, [1, 1, 1], scheme="all").shape == (0, 2)


@pytest.mark.parametrize("seed", range(8))
def test_all_scheme_equals_brute_force(seed):
    prod, label = random_reviews(seed)
    pairs = sample_pairs(prod, label, scheme="all")
    assert [tuple(p) for p in pairs.tolist()] == brute_all(prod, label)


@pytest.mark.parametrize("seed", range(8))
def test_mcr_invariants(seed):
    prod, label = random_reviews(seed)
    n_neg = 1 + seed % 7
    pairs = sample_pairs(prod, label, n_neg=n_neg, rng=np.random.default_rng(seed))
    cand = brute_mcr_candidates(list(prod), list(label))
    positives = [i for i in sorted(cand) if cand[i]]
    assert all(cand[i] for i in cand)  # integer labels: every positive has candidates
    assert len(pairs) == n_neg * len(positives)
    assert pairs[:, 0].tolist() == [i for i in positives for _ in range(n_neg)]  # ordered by positive
    assert np.all(prod[pairs[:, 0]] == prod[pairs[:, 1]])  # same product
    assert np.all(label[pairs[:, 0]] - label[pairs[:, 1]] >= 2)  # label gap >= 2
    for i, j in pairs.tolist():
        assert j in cand[i]


def test_determinism_and_fresh_draws():
    prod, label = random_reviews(5, n_products=40)
    a = sample_pairs(prod, label, rng=np.random.default_rng(123))
    b = sample_pairs(prod, label, rng=np.random.default_rng(123))
    c = sample_pairs(prod, label, rng=np.random.default_rng(124))
    np.testing.assert_array_equal(a, b)
    assert a.shape == c.shape and not np.array_equal(a, c)  # a new epoch redraws negatives
    np.testing.assert_array_equal(a[:, 0], c[:, 0])  # ... of the same positives
    np.testing.assert_array_equal(a, sample_pairs(prod, label, rng=123))  # int seed accepted


def test_input_types_and_string_ids():
    prod, label = random_reviews(2)
    sprod = np.array([f"B00{p}" for p in prod])
    base = sample_pairs(prod, label, rng=np.random.default_rng(9))
    np.testing.assert_array_equal(base, sample_pairs(list(sprod), list(label), rng=np.random.default_rng(9)))
    np.testing.assert_array_equal(
        base, sample_pairs(pd.Series(sprod), pd.Series(label.astype(float)), rng=np.random.default_rng(9))
    )


def test_negatives_follow_one_minus_label_frequency():
    # one product of 10 reviews, labels: 0 x6, 1 x1, 2 x2, 4 x1 -> levels {0, 1, 2, 4}.
    # Positives: the two label-2 reviews (candidates: label 0) and the label-4 review (candidates:
    # labels <= 2, i.e. every other review). Weights 1 - freq: label 0 -> 0.4 (x6 = 2.4),
    # label 1 -> 0.9, label 2 -> 0.8 (x2 = 1.6); total 4.9.
    label = np.array([4, 0, 0, 0, 0, 0, 0, 1, 2, 2])
    pairs = sample_pairs(["x"] * 10, label, n_neg=20000, rng=np.random.default_rng(0))
    assert set(pairs[:, 0].tolist()) == {0, 8, 9}
    assert set(label[pairs[pairs[:, 0] == 8, 1]].tolist()) == {0}
    drawn = Counter(label[pairs[pairs[:, 0] == 0, 1]].tolist())
    for lab, p in {0: 2.4 / 4.9, 1: 0.9 / 4.9, 2: 1.6 / 4.9}.items():
        # binomial standard error with 20000 draws is < 0.0036; allow ~4 of them
        assert drawn[lab] / 20000 == pytest.approx(p, abs=0.015)
    # within label 0 the six reviews are equally likely
    per_review = Counter(pairs[pairs[:, 0] == 0, 1].tolist())
    assert max(per_review[j] for j in range(1, 7)) - min(per_review[j] for j in range(1, 7)) < 400


def test_non_integer_labels_skip_positives_without_candidates():
    # levels {0, 0.5, 1.5}: 1.5 is a positive but nothing is <= -0.5 -> no pairs
    assert sample_pairs(["a"] * 3, [0.0, 0.5, 1.5], rng=0).shape == (0, 2)
    pairs = sample_pairs(["a"] * 4, [0.0, 0.5, 1.5, 2.5], rng=0, n_neg=3)
    assert set(pairs[:, 0].tolist()) == {3} and set(pairs[:, 1].tolist()) <= {0, 1}


def test_errors():
    with pytest.raises(DataError, match="same length"):
        sample_pairs(["a", "b"], [1], rng=0)
    with pytest.raises(DataError, match="non-finite value at position 1"):
        sample_pairs(["a", "a"], [1, np.nan], rng=0)
    with pytest.raises(ValueError, match="scheme"):
        sample_pairs(["a"], [1], scheme="listwise", rng=0)
    with pytest.raises(ValueError, match="pass rng"):
        sample_pairs(["a"], [1])
    with pytest.raises(ValueError, match="n_neg"):
        sample_pairs(["a"], [1], n_neg=0, rng=0)


def test_scale_smoke():
    """Smoke test (no timing assert): 100,000 reviews in 5,000 products, both schemes."""
    rng = np.random.default_rng(0)
    prod = rng.integers(0, 5000, 100_000)
    label = rng.integers(0, 5, 100_000)
    pairs = sample_pairs(prod, label, rng=rng)
    assert len(pairs) > 0 and np.all(prod[pairs[:, 0]] == prod[pairs[:, 1]])
    assert np.all(label[pairs[:, 0]] - label[pairs[:, 1]] >= 2)
