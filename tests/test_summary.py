"""mmss_lib.evaluation.summary: pooled per-product metrics, bootstrap intervals, paired tests, the CSV."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mmss_lib.errors import DataError
from mmss_lib.evaluation.summary import (
    format_summary,
    pooled_per_product,
    product_summary,
    read_summaries,
    summary_path,
    write_summaries,
)
from mmss_lib.metrics.ranking import bootstrap_difference, bootstrap_interval, paired_test, per_product_metrics


def _write_run(rd, system, pids, labels, scores, threshold=1.0):
    rd.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {"review_id": [f"r{i}" for i in range(len(pids))], "product_id": pids, "label": labels, "score": scores}
    ).to_csv(rd / "scores_test.csv", index=False)
    (rd / "metrics.json").write_text(json.dumps({"threshold": threshold}))
    (rd / "config.json").write_text(json.dumps({"config": {"system": system}}))


def _data(n_products=24, seed=0):
    rng = np.random.default_rng(seed)
    pids, labels = [], []
    for p in range(n_products):
        m = int(rng.integers(1, 7))
        pids += [f"p{p:02d}"] * m
        labels += list(rng.integers(0, 5, size=m))
    return np.array(pids), np.array(labels)


def _experiment(tmp_path, folds=0, seeds=(0, 1)):
    """Three systems: 'good' (scores = label + noise), 'bad' (noise), 'random' floor."""
    pids, labels = _data()
    prods = list(dict.fromkeys(pids))
    fold_of = {p: i % max(folds, 1) for i, p in enumerate(prods)}
    rows = []
    for system in ("good", "bad", "random"):
        for seed in seeds:
            rng = np.random.default_rng(100 + seed + 7 * len(system))
            noise = rng.random(len(pids))
            scores = labels + 2 * noise if system == "good" else noise
            for f in range(folds) if folds else [None]:
                mask = np.ones(len(pids), bool) if f is None else np.array([fold_of[p] == f for p in pids])
                rd = tmp_path / system / (f"fold{f}" if f is not None else "") / f"seed{seed}"
                _write_run(rd, system, pids[mask], labels[mask], scores[mask])
                rows.append(
                    {
                        "dataset": "amazon",
                        "category": "mags",
                        "system": system,
                        "variant": "full",
                        "seed": seed,
                        "run_dir": str(rd),
                        **({"fold": f} if f is not None else {}),
                    }
                )
    return pd.DataFrame(rows), pids, labels


def test_summary_means_intervals_and_tests_match_direct_computation(tmp_path):
    results, pids, labels = _experiment(tmp_path)
    pp = pooled_per_product(results)
    summ = product_summary(pp)
    assert list(summ["system"]) == ["good", "bad", "random"]
    # 'good' by hand: per-product AP averaged over the two seeds
    per_seed = []
    for seed in (0, 1):
        df = pd.read_csv(tmp_path / "good" / f"seed{seed}" / "scores_test.csv", dtype={"product_id": str})
        per_seed.append(
            per_product_metrics(df["product_id"], df["label"], df["score"], threshold=1.0).set_index("product_id")
        )
    good = (per_seed[0][["AP", "NDCG@3", "NDCG@5", "RR"]] + per_seed[1][["AP", "NDCG@3", "NDCG@5", "RR"]]) / 2
    row = summ.set_index("system").loc["good"]
    assert row["MAP"] == pytest.approx(100 * good["AP"].mean())
    lo, hi = bootstrap_interval(good["AP"].to_numpy())
    assert (row["MAP_lo"], row["MAP_hi"]) == pytest.approx((100 * lo, 100 * hi))
    assert row["n_products"] == 24 and row["n_seeds"] == 2 and row["folds"] == 0
    # the best system's rival is the runner-up; the others' rival is the best
    ranked = summ.sort_values("MAP", ascending=False)["system"].tolist()
    assert ranked[0] == "good"
    assert row["rival"] == ranked[1]
    for s in ("bad", "random"):
        assert summ.set_index("system").loc[s, "rival"] == "good"
    rival = pp[pp["system"] == ranked[1]].set_index("product_id")
    mine = pp[pp["system"] == "good"].set_index("product_id")
    d, dlo, dhi = bootstrap_difference(mine["NDCG@3"], rival["NDCG@3"])
    assert row["NDCG@3_diff"] == pytest.approx(100 * d)
    assert (row["NDCG@3_diff_lo"], row["NDCG@3_diff_hi"]) == pytest.approx((100 * dlo, 100 * dhi))
    assert row["NDCG@3_p"] == pytest.approx(paired_test(mine["NDCG@3"], rival["NDCG@3"])["t_p"])
    assert row["MAP_p"] < 0.01  # label-driven scores beat noise clearly
    # the random floor enters with its exact expectations (not its written realisation)
    from mmss_lib.models.floors import expected_random_per_product

    exp = expected_random_per_product(pids, labels, threshold=1.0)
    assert summ.set_index("system").loc["random", "MAP"] == pytest.approx(100 * exp["AP"].mean())
    text = format_summary(summ)
    assert "good" in text and "[" in text and "p(MAP)" in text


def test_summary_pools_folds_and_covers_every_product_once(tmp_path):
    results, pids, _ = _experiment(tmp_path, folds=4, seeds=(0,))
    pp = pooled_per_product(results)
    for _system, g in pp.groupby("system"):
        assert sorted(g["product_id"]) == sorted(set(pids))  # every product exactly once
        assert set(g["fold"]) == {0, 1, 2, 3}
    summ = product_summary(pp, folds=4)
    assert (summ["n_products"] == 24).all() and (summ["folds"] == 4).all()
    # a product in two folds' test sets is refused
    extra = tmp_path / "good" / "fold9" / "seed0"
    first = pd.read_csv(tmp_path / "good" / "fold0" / "seed0" / "scores_test.csv", dtype={"product_id": str})
    _write_run(extra, "good", first["product_id"], first["label"], first["score"])
    bad = pd.concat(
        [
            results,
            pd.DataFrame(
                [
                    {
                        "dataset": "amazon",
                        "category": "mags",
                        "system": "good",
                        "variant": "full",
                        "seed": 0,
                        "run_dir": str(extra),
                        "fold": 9,
                    }
                ]
            ),
        ]
    )
    with pytest.raises(DataError, match="several folds"):
        pooled_per_product(bad)


def test_summary_refuses_systems_on_different_products(tmp_path):
    results, _, _ = _experiment(tmp_path, folds=4, seeds=(0,))
    part = results[~((results["system"] == "bad") & (results["fold"] == 2))]
    with pytest.raises(DataError, match="different products"):
        product_summary(pooled_per_product(part))


def test_write_summaries_csv(tmp_path):
    results, _, _ = _experiment(tmp_path / "runs_src")
    written = write_summaries(results, tmp_path / "runs", tag="folds5", folds=5)
    path = summary_path(tmp_path / "runs", "amazon", "mags", "folds5")
    assert list(written) == [path] and path.name == "summary_folds5.csv"
    df = pd.read_csv(path)
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
        assert col in df.columns, col
    assert (df["MAP_lo"] <= df["MAP"]).all() and (df["MAP"] <= df["MAP_hi"]).all()
    assert df["MAP"].between(0, 100).all()
    assert summary_path(tmp_path, "amazon", "mags").name == "summary.csv"


def test_read_summaries_from_results_attrs(tmp_path):
    # run_experiment keeps only the summary paths in attrs (test_floors checks that its results
    # still combine); read_summaries reads the files back
    results, _, _ = _experiment(tmp_path / "runs_src")
    written = write_summaries(results, tmp_path / "runs")
    results.attrs["summary_paths"] = [str(p) for p in written]
    back = read_summaries(results)
    pd.testing.assert_frame_equal(back, pd.read_csv(next(iter(written))))
    assert read_summaries(pd.DataFrame()).empty


def test_pool_folds_gives_product_means_per_seed(tmp_path):
    from mmss_lib.evaluation.summary import pool_folds

    results, pids, labels = _experiment(tmp_path, folds=4, seeds=(0, 1))
    results = results.assign(MAP=0.0, dev_MAP=0.5, best_epoch=1, epochs_run=2, sec_per_epoch=1.0)
    pooled = pool_folds(results)
    assert len(pooled) == 6 and (pooled["n_folds"] == 4).all() and (pooled["n_products"] == 24).all()
    # MAP of one (system, seed) = mean AP over every product of the four fold runs
    aps = []
    for f in range(4):
        df = pd.read_csv(tmp_path / "bad" / f"fold{f}" / "seed1" / "scores_test.csv", dtype={"product_id": str})
        aps += list(per_product_metrics(df["product_id"], df["label"], df["score"], threshold=1.0)["AP"])
    row = pooled[(pooled["system"] == "bad") & (pooled["seed"] == 1)].iloc[0]
    assert row["MAP"] == pytest.approx(np.mean(aps))
    # the seed mean of the pooled MAPs equals the summary's mean over seed-averaged products
    summ = product_summary(pooled_per_product(results)).set_index("system")
    assert 100 * pooled[pooled["system"] == "bad"]["MAP"].mean() == pytest.approx(summ.loc["bad", "MAP"])
    plain = results.drop(columns="fold")
    assert pool_folds(plain) is plain
