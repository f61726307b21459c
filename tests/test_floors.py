"""mmss_lib.models.floors and training.floors: the random floor's exact expectations, the length floor, floor run folders."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from mmss_lib.errors import DataError
from mmss_lib.metrics.ranking import per_product_metrics, product_metrics_reference
from mmss_lib.models.floors import LengthFloor, RandomFloor, expected_random_per_product, length_scores
from mmss_lib.models.registry import BASELINES, FLOORS, SYSTEMS, build_system, is_floor
from mmss_lib.training.floors import per_product_for_run, run_floor


def brute_force_expectation(labels, threshold):
    """Mean of the reference metrics over every permutation of one product's reviews."""
    perms = list(itertools.permutations(range(len(labels))))
    acc = None
    for perm in perms:
        scores = np.empty(len(labels))
        scores[list(perm)] = -np.arange(len(labels), dtype=float)  # review perm[i] at rank i
        m = product_metrics_reference(labels, scores, threshold=threshold)
        acc = m if acc is None else {k: acc[k] + m[k] for k in acc}
    return {k: v / len(perms) for k, v in acc.items()}


@pytest.mark.parametrize(
    "labels,threshold",
    [
        ([3, 0, 2, 1, 4], 1),
        ([0, 0, 1], 1),
        ([4], 1),
        ([2], 1),
        ([1, 1, 1, 0], 0),
        ([2, 2, 2, 2, 0, 0], 1),
        ([4, 3, 2, 1, 0, 0, 2], 1),
        ([0, 4], 1),
    ],
)
def test_expected_random_equals_mean_over_all_permutations(labels, threshold):
    pp = expected_random_per_product(["p"] * len(labels), labels, threshold=threshold)
    want = brute_force_expectation(labels, threshold)
    row = pp.iloc[0]
    assert row["n_reviews"] == len(labels)
    for k in ("AP", "NDCG@3", "NDCG@5", "RR"):
        assert row[k] == pytest.approx(want[k], abs=1e-12), k


def test_expected_random_layout_and_monte_carlo():
    rng = np.random.default_rng(0)
    pids = np.repeat([f"p{i}" for i in range(40)], rng.integers(1, 30, size=40))
    labels = rng.integers(0, 5, size=len(pids))
    pp = expected_random_per_product(pids, labels, threshold=1)
    ref = per_product_metrics(pids, labels, np.zeros(len(pids)), threshold=1)
    assert list(pp.columns) == list(ref.columns)
    assert list(pp["product_id"]) == list(ref["product_id"])
    assert (pp["n_reviews"].to_numpy() == ref["n_reviews"].to_numpy()).all()
    # many random rankings converge to the expectation (3 standard errors)
    draws = [per_product_metrics(pids, labels, rng.random(len(pids)), threshold=1)["AP"].mean() for _ in range(400)]
    assert abs(np.mean(draws) - pp["AP"].mean()) < 3 * np.std(draws) / np.sqrt(len(draws))
    with pytest.raises(DataError, match="same length"):
        expected_random_per_product(["a", "b"], [1], threshold=1)


def test_length_floor_ranks_by_characters_with_stable_ties():
    texts = ["abc", "a", "abcdef", "xyz", None]
    assert length_scores(texts).tolist() == [3.0, 1.0, 6.0, 3.0, 0.0]
    s = LengthFloor().score(review_ids=list("abcde"), product_ids=["p"] * 5, texts=texts)
    pp = LengthFloor().per_product(["p"] * 5, [0, 4, 3, 2, 0], s, threshold=1)
    # ranking: "abcdef"(3), "abc"(0), "xyz"(2) (tie: file order), "a"(4), None(0)
    assert pp["AP"].iloc[0] == pytest.approx(product_metrics_reference([3, 0, 2, 4, 0], [5, 4, 3, 2, 1])["AP"])


def test_registry():
    assert FLOORS == ["random", "length"] and all(SYSTEMS[f].kind == "floor" for f in FLOORS)
    assert "random" not in BASELINES and "mmss" not in BASELINES and "bimpm" in BASELINES
    assert is_floor("length") and not is_floor("mmss") and not is_floor("nope")
    f = build_system("random", text_dim=8, region_dim=4)
    assert isinstance(f, RandomFloor) and f.needs_training is False
    with pytest.raises(DataError, match="no options"):
        build_system("length", text_dim=8, d=3)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    from mmss_lib.data.synthetic import make_demo

    root = tmp_path_factory.mktemp("floors_data")
    make_demo(root, n_products=12, seed=0, categories=("home",), images=False)
    return root


def _cfg(system, seed=0):
    from mmss_lib.training.trainer import TrainConfig

    return TrainConfig(system=system, seed=seed)


def test_run_floor_writes_the_run_folder_contract(demo_root, tmp_path):
    from mmss_lib.data.mrhp import load_mrhp

    rd = tmp_path / "runs" / "demo" / "home" / "length" / "seed0"
    m = run_floor(_cfg("length"), data_root=demo_root, dataset="demo", category="home", run_dir=rd, threshold=1.0)
    for f in ("config.json", "history.json", "metrics.json", "scores_dev.csv", "scores_test.csv"):
        assert (rd / f).exists(), f
    assert json.loads((rd / "config.json").read_text())["config"]["system"] == "length"
    assert json.loads((rd / "history.json").read_text()) == []
    _, rv = load_mrhp(demo_root, "demo", "home", "test")
    sc = pd.read_csv(rd / "scores_test.csv", dtype={"review_id": str, "product_id": str})
    assert list(sc["review_id"]) == list(rv["review_id"])
    assert sc["score"].tolist() == [float(len(t)) for t in rv["text"]]
    pp = per_product_for_run(rd)
    assert m["test"]["MAP"] == pytest.approx(pp["AP"].mean())
    assert m["test"]["NDCG@5"] == pytest.approx(pp["NDCG@5"].mean())
    assert m["threshold"] == 1.0 and m["epochs_run"] == 0
    # finished run with the same configuration: skipped (files untouched)
    stamp = (rd / "metrics.json").stat().st_mtime_ns
    assert (
        run_floor(_cfg("length"), data_root=demo_root, dataset="demo", category="home", run_dir=rd, threshold=1.0) == m
    )
    assert (rd / "metrics.json").stat().st_mtime_ns == stamp


def test_run_random_floor_is_exact_and_seed_independent(demo_root, tmp_path):
    ms, scores = [], []
    for seed in (0, 1):
        rd = tmp_path / f"seed{seed}"
        ms.append(
            run_floor(
                _cfg("random", seed), data_root=demo_root, dataset="demo", category="home", run_dir=rd, threshold=1.0
            )
        )
        scores.append(pd.read_csv(rd / "scores_test.csv")["score"].to_numpy())
        pp = per_product_for_run(rd)
        sc = pd.read_csv(rd / "scores_test.csv", dtype={"product_id": str})
        want = expected_random_per_product(sc["product_id"], sc["label"], threshold=1.0)
        assert np.allclose(pp["AP"], want["AP"]) and ms[-1]["test"]["MAP"] == pytest.approx(want["AP"].mean())
        # per_product_for_run gives the expectation, not the metrics of the written realisation
        real = per_product_metrics(sc["product_id"], sc["label"], sc["score"], threshold=1.0)
        assert not np.allclose(pp["AP"], real["AP"])
    assert ms[0]["test"] == ms[1]["test"] and ms[0]["dev"] == ms[1]["dev"]
    assert not np.array_equal(scores[0], scores[1])  # realisations differ by seed
    # a threshold override recomputes the expectation
    assert not np.allclose(per_product_for_run(tmp_path / "seed0", threshold=0.0)["AP"], pp["AP"])


def test_run_floor_with_given_splits_looks_up_texts(demo_root, tmp_path):
    from mmss_lib.data.mrhp import load_mrhp

    class Split:  # what a cross-validation fold hands in: ids and labels, no texts
        def __init__(self, rv):
            self.review_ids = rv["review_id"].to_numpy()
            self.product_ids = rv["product_id"].to_numpy()
            self.labels = rv["label"].to_numpy()
            self.n = len(rv)

    frames = {s: load_mrhp(demo_root, "demo", "home", s)[1] for s in ("train", "dev", "test")}
    # a fold: test = the original train split, train = the original test split
    splits = {"train": Split(frames["test"]), "dev": Split(frames["dev"]), "test": Split(frames["train"])}
    rd = tmp_path / "fold"
    m = run_floor(
        _cfg("length"),
        data_root=demo_root,
        dataset="demo",
        category="home",
        run_dir=rd,
        threshold=1.0,
        splits=splits,
        run_info={"dataset": "demo", "category": "home", "fold": 0},
    )
    sc = pd.read_csv(rd / "scores_test.csv", dtype={"review_id": str})
    assert list(sc["review_id"]) == list(frames["train"]["review_id"])
    assert sc["score"].tolist() == [float(len(t)) for t in frames["train"]["text"]]
    assert m["n_train"] == len(frames["test"])
    bad = dict(splits)
    frames_bad = frames["test"].assign(review_id="nope")
    bad["test"] = Split(frames_bad)
    with pytest.raises(DataError, match="not in the dataset files"):
        run_floor(
            _cfg("length"),
            data_root=demo_root,
            dataset="demo",
            category="home",
            run_dir=tmp_path / "bad",
            threshold=1.0,
            splits=bad,
        )


def test_train_run_and_run_experiment_treat_floors_like_systems(demo_root, tmp_path):
    """The trainer's no-training path: no feature stores exist here, floors need none."""
    from mmss_lib.evaluation.summary import per_run_per_product
    from mmss_lib.model_selection.sweeps import run_experiment
    from mmss_lib.training.run_folder import run_dir_for
    from mmss_lib.training.trainer import TrainConfig, train_run

    runs = tmp_path / "runs"
    m = train_run(
        TrainConfig(system="length"),
        data_root=demo_root,
        dataset="demo",
        category="home",
        features_root=tmp_path / "no_features",
        run_dir=run_dir_for(runs, "demo", "home", "length", "full", 0),
    )
    assert m["floor"] == "length" and m["threshold"] == 1.0
    res = run_experiment(
        data_root=demo_root,
        dataset="demo",
        categories=["home"],
        features_root=tmp_path / "none",
        runs_root=runs,
        systems=["random", "length"],
        seeds=[0, 1],
        progress=False,
    )
    assert sorted(res["system"]) == ["length", "length", "random", "random"]
    # attrs hold file paths only (pandas compares attrs when frames are combined, as notebook 03 does)
    assert res.attrs["summary_paths"] and all(isinstance(p, str) for p in res.attrs["summary_paths"])
    assert len(pd.concat([res, res.copy()], ignore_index=True)) == 2 * len(res)
    assert res[res.system == "length"]["MAP"].tolist() == [m["test"]["MAP"]] * 2
    pp = per_run_per_product(res)  # what notebook 02 reads
    ap = pp[pp.system == "random"].groupby("product_id")["AP"].mean()  # each product over seeds
    assert ap.mean() == pytest.approx(res[res.system == "random"]["MAP"].iloc[0])
    want = per_product_for_run(run_dir_for(runs, "demo", "home", "random", "full", 0)).set_index("product_id")
    assert np.allclose(ap.loc[want.index], want["AP"])


# ------------------------------------------------------------------ ceilings (generated data)
def test_ceilings_fit_on_train_and_dev_cues_only(demo_root, tmp_path):
    from mmss_lib.data.mrhp import load_mrhp
    from mmss_lib.data.synthetic import load_cues
    from mmss_lib.models.floors import CEILINGS, cue_design, floor_system

    assert is_floor("ceiling_text") and SYSTEMS["ceiling_all"].kind == "ceiling" and "ceiling_all" not in BASELINES
    fit_rows = []
    for s in ("train", "dev"):
        _, rv = load_mrhp(demo_root, "demo", "home", s)
        fit_rows.append(rv[["review_id", "label"]].merge(load_cues(demo_root, "home", s), on="review_id"))
    fit_df = pd.concat(fit_rows)
    _, test_rv = load_mrhp(demo_root, "demo", "home", "test")
    test_cues = test_rv[["review_id"]].merge(load_cues(demo_root, "home", "test"), on="review_id")
    for name in CEILINGS:
        rd = tmp_path / name
        run_floor(_cfg(name), data_root=demo_root, dataset="demo", category="home", run_dir=rd, threshold=1.0)
        coef = np.linalg.lstsq(cue_design(fit_df, CEILINGS[name]), fit_df["label"].to_numpy(float), rcond=None)[0]
        sc = pd.read_csv(rd / "scores_test.csv", dtype={"review_id": str, "product_id": str})
        np.testing.assert_allclose(sc["score"], cue_design(test_cues, CEILINGS[name]) @ coef, rtol=1e-9)
        # test labels play no part: the same fit whatever they are
        f = floor_system(name).fit(
            pd.concat([load_cues(demo_root, "home", s) for s in ("train", "dev", "test")]),
            fit_df["review_id"],
            fit_df["label"],
        )
        np.testing.assert_allclose(f.coef, coef)
    text_cols = cue_design(fit_df, CEILINGS["ceiling_text"]).shape[1]
    assert text_cols == 3 and cue_design(fit_df, CEILINGS["ceiling_all"]).shape[1] == 6


def test_ceilings_refused_without_cues(tmp_path, demo_root):
    import shutil

    from mmss_lib.model_selection.sweeps import run_experiment

    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    for p in (root / "demo" / "home").glob("home.cues.*"):
        p.unlink()
    with pytest.raises(DataError, match=r"ceiling_all needs the generator's planted cues.*home\.cues\.train"):
        run_experiment(
            data_root=root,
            dataset="demo",
            categories=["home"],
            features_root=tmp_path / "f",
            runs_root=tmp_path / "runs",
            systems=["length", "ceiling_all"],
            seeds=[0],
            progress=False,
        )
    assert not (tmp_path / "runs").exists()  # refused before any run started
    with pytest.raises(DataError, match="'amazon' is not generated data"):
        run_floor(
            _cfg("ceiling_text"),
            data_root=root,
            dataset="amazon",
            category="home",
            run_dir=tmp_path / "r",
            threshold=1.0,
        )


def test_ceilings_are_never_the_rival(demo_root, tmp_path):
    from mmss_lib.evaluation.summary import read_summaries
    from mmss_lib.model_selection.sweeps import run_experiment

    res = run_experiment(
        data_root=demo_root,
        dataset="demo",
        categories=["home"],
        features_root=tmp_path / "f",
        runs_root=tmp_path / "runs",
        systems=["random", "length", "ceiling_text", "ceiling_all"],
        seeds=[0],
        progress=False,
    )
    summ = read_summaries(res)
    summ = summ if isinstance(summ, pd.DataFrame) else pd.concat(list(summ.values()))
    assert set(summ["rival"]) <= {"random", "length"}
    assert set(summ["system"]) == {"random", "length", "ceiling_text", "ceiling_all"}
