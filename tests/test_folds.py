"""mmss_lib.model_selection.folds: the K-fold design over a category's products (issue 10)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmss_lib.errors import DataError
from mmss_lib.model_selection.folds import (
    assignment_path,
    fold_splits,
    folds_tag,
    pooled_products,
    write_or_check_assignment,
)


def _released(n_train=40, n_dev=7, n_test=9):
    ids = [f"P{i:03d}" for i in range(n_train + n_dev + n_test)]
    return {"train": ids[:n_train], "dev": ids[n_train : n_train + n_dev], "test": ids[n_train + n_dev :]}


def _reference(released, k, seed, dev_fraction):
    """The module docstring's rule, written out with plain loops."""
    pooled = released["train"] + released["dev"] + released["test"]
    order = list(np.random.default_rng(seed).permutation(len(pooled)))
    fold_of = {}
    for j, i in enumerate(order):
        fold_of[pooled[i]] = j % k
    folds = []
    for f in range(k):
        rest = [p for p in pooled if fold_of[p] != f]
        n_dev = min(max(int(round(dev_fraction * len(rest))), 1), len(rest) - 1)
        perm = list(np.random.default_rng([seed, f]).permutation(len(rest)))
        dev = {rest[i] for i in perm[:n_dev]}
        folds.append(
            {
                "train": [p for p in rest if p not in dev],
                "dev": [p for p in rest if p in dev],
                "test": [p for p in pooled if fold_of[p] == f],
            }
        )
    return folds


@pytest.mark.parametrize("k,seed,frac", [(5, 0, 0.125), (3, 7, 0.2), (10, 1, 0.1), (2, 0, 0.5)])
def test_fold_splits_partition_and_reference(k, seed, frac):
    rel = _released()
    folds = fold_splits(rel, k, seed=seed, dev_fraction=frac)
    assert folds == _reference(rel, k, seed, frac)
    pooled = pooled_products(rel)
    assert len(folds) == k
    # every product in exactly one test fold; sizes differ by at most one
    tests = [p for f in folds for p in f["test"]]
    assert sorted(tests) == sorted(pooled) and len(set(tests)) == len(pooled)
    sizes = [len(f["test"]) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    for f in folds:
        parts = [set(f[s]) for s in ("train", "dev", "test")]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert parts[0] | parts[1] | parts[2] == set(pooled)
        rest = len(pooled) - len(f["test"])
        assert len(f["dev"]) == min(max(round(frac * rest), 1), rest - 1) >= 1
        for s in ("train", "dev", "test"):  # pooled order kept inside each part
            pos = [pooled.index(p) for p in f[s]]
            assert pos == sorted(pos)


def test_fold_splits_deterministic_and_seeded():
    rel = _released()
    assert fold_splits(rel, 5, seed=3) == fold_splits(rel, 5, seed=3)
    assert fold_splits(rel, 5, seed=3) != fold_splits(rel, 5, seed=4)
    # a shuffle, not the released order cut into blocks
    first = fold_splits(rel, 5, seed=0)[0]["test"]
    assert first != pooled_products(rel)[: len(first)]


def test_fold_splits_dev_fraction_default_gives_70_10_20():
    rel = _released(70, 10, 20)
    for f in fold_splits(rel, 5):
        assert (len(f["train"]), len(f["dev"]), len(f["test"])) == (70, 10, 20)


def test_fold_splits_rejects_bad_input():
    rel = _released(4, 1, 1)
    with pytest.raises(ValueError, match="k must be"):
        fold_splits(rel, 1)
    with pytest.raises(ValueError, match="dev_fraction"):
        fold_splits(rel, 3, dev_fraction=0.0)
    with pytest.raises(DataError, match="cannot fill 7 test folds"):
        fold_splits(rel, 7)
    with pytest.raises(DataError, match="too few"):
        fold_splits({"train": ["a"], "dev": [], "test": ["b"]}, 2)
    with pytest.raises(DataError, match="'a' appears in the train and the test split"):
        fold_splits({"train": ["a", "b"], "dev": ["c"], "test": ["a"]}, 2)
    with pytest.raises(DataError, match="no 'dev' split"):
        fold_splits({"train": ["a", "b"], "test": ["c"]}, 2)


def test_assignment_file_written_once_and_checked(tmp_path):
    rel = _released()
    folds = fold_splits(rel, 5, seed=0)
    p = write_or_check_assignment(tmp_path, "amazon", "mags", folds, k=5, seed=0, dev_fraction=0.125)
    assert p == assignment_path(tmp_path, "amazon", "mags", 5, 0) == tmp_path / "amazon" / "mags" / "folds5.json"
    rec = json.loads(p.read_text())
    assert rec["k"] == 5 and rec["folds"] == folds
    # the same design again: accepted, file unchanged
    before = p.read_text()
    write_or_check_assignment(tmp_path, "amazon", "mags", folds, k=5, seed=0, dev_fraction=0.125)
    assert p.read_text() == before
    # another dev fraction, or other products, under the same tag: refused
    with pytest.raises(DataError, match="dev_fraction"):
        write_or_check_assignment(
            tmp_path, "amazon", "mags", fold_splits(rel, 5, dev_fraction=0.2), k=5, seed=0, dev_fraction=0.2
        )
    with pytest.raises(DataError, match="folds"):
        write_or_check_assignment(
            tmp_path, "amazon", "mags", fold_splits(_released(41), 5), k=5, seed=0, dev_fraction=0.125
        )
    assert folds_tag(5) == "folds5" and folds_tag(5, 2) == "folds5_fs2"


# ------------------------------------------------------------------ mmss train --folds on real data


@pytest.mark.slow
def test_train_folds_on_amazon2018_sample_covers_every_product(tmp_path, amazon2018_sample, tiny_bert_dir, capsys):
    """The shared Magazine sample -> dataset -> tiny-BERT features (no images) -> 5-fold
    cross-validation of the two floors and a tiny MM-SS: every product is a test product exactly
    once, the summary CSV is written with the documented columns, a rerun skips every run."""
    import pandas as pd

    from mmss_lib.cli import main
    from mmss_lib.model_selection.folds import pooled_products, released_products

    data, feats, runs = tmp_path / "data", tmp_path / "features", tmp_path / "runs"
    assert (
        main(
            [
                "build-amazon2018",
                "--reviews",
                str(amazon2018_sample / "Magazine_Subscriptions_5.json.gz"),
                "--meta",
                str(amazon2018_sample / "meta_Magazine_Subscriptions.json.gz"),
                "--out",
                str(data),
                "--category",
                "magazines",
                "--min-review-chars",
                "16",
                "--min-reviews",
                "3",
                "--min-top-votes",
                "2",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "extract",
                "--data-root",
                str(data),
                "--dataset",
                "amazon",
                "--categories",
                "magazines",
                "--features",
                str(feats),
                "--text-model",
                str(tiny_bert_dir),
                "--text-max-len",
                "32",
                "--allow-random-weights",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    train = [
        "train",
        "--data-root",
        str(data),
        "--dataset",
        "amazon",
        "--categories",
        "magazines",
        "--features",
        str(feats),
        "--runs",
        str(runs),
        "--systems",
        "random",
        "length",
        "mmss",
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--patience",
        "1",
        "--folds",
        "5",
        "--max-text-len",
        "32",
        "--option",
        "d=8",
        "--device",
        "cpu",
        "--num-threads",
        "1",
    ]
    assert main(train + ["--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "95% bootstrap interval" in out and "summary_folds5.csv" in out

    products = pooled_products(released_products(data, "amazon", "magazines"))
    cat = runs / "amazon" / "magazines"
    # pooled per-product test metrics: each product exactly once per system, from the 5 fold runs
    for system in ("random", "length", "mmss"):
        seen = []
        for f in range(5):
            scores = pd.read_csv(
                cat / system / "folds5" / f"fold{f}" / "seed0" / "scores_test.csv", dtype={"product_id": str}
            )
            seen += list(dict.fromkeys(scores["product_id"]))
        assert sorted(seen) == sorted(products)
    summary = pd.read_csv(cat / "summary_folds5.csv")
    for col in (
        "system",
        "variant",
        "MAP",
        "NDCG@3",
        "NDCG@5",
        "MAP_lo",
        "MAP_hi",
        "NDCG@3_lo",
        "NDCG@3_hi",
        "NDCG@5_lo",
        "NDCG@5_hi",
        "n_products",
        "rival",
        "MAP_p",
        "NDCG@3_p",
        "NDCG@5_p",
    ):
        assert col in summary.columns, col
    assert list(summary["system"]) == ["random", "length", "mmss"]
    assert (summary["n_products"] == len(products)).all() and (summary["folds"] == 5).all()
    assert ((summary["MAP_lo"] <= summary["MAP"]) & (summary["MAP"] <= summary["MAP_hi"])).all()
    # a rerun trains nothing
    assert main(train) == 0
    assert capsys.readouterr().out.count("skipped (finished before)") == 15
