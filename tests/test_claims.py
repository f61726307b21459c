"""mmss bench claims (issue 27): the generator's text weight, the data-size design, the pruner's
warm-up, and the benchmark's refusals. The long runs themselves are measured, not tested."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmss_lib.data.mrhp import SPLITS, load_mrhp
from mmss_lib.data.synthetic import cli_main as make_demo_cli
from mmss_lib.data.synthetic import load_cues, make_demo
from mmss_lib.errors import DataError
from mmss_lib.model_selection.folds import write_resplit
from studies import claims as C
from studies import powered as P


def _labels_and_cues(root, category="home"):
    frames = []
    for s in SPLITS:
        _, rvw = load_mrhp(root, "demo", category, s)
        cues = load_cues(root, category, s)
        frames.append(rvw[["review_id", "label"]].merge(cues, on="review_id"))
    return pd.concat(frames, ignore_index=True)


def test_text_weight_default_is_the_old_generator(tmp_path):
    make_demo(tmp_path / "a", n_products=12, categories=("home",), images=False)
    make_demo(tmp_path / "b", n_products=12, categories=("home",), images=False, text_weight=1.0)
    for f in sorted((tmp_path / "a" / "demo" / "home").glob("home.*")):
        assert f.read_bytes() == (tmp_path / "b" / "demo" / "home" / f.name).read_bytes(), f.name


def test_text_weight_zero_leaves_the_images_alone(tmp_path):
    """t = 0: the label no longer depends on the text cues (match, detail) but still on the image
    cues; texts, cues and splits are those of t = 1; the label's mean stays about where it was."""
    kw = dict(n_products=400, categories=("home",), images=False)
    make_demo(tmp_path / "t1", **kw)
    make_demo(tmp_path / "t0", text_weight=0.0, **kw)
    one, zero = _labels_and_cues(tmp_path / "t1"), _labels_and_cues(tmp_path / "t0")
    assert one["review_id"].tolist() == zero["review_id"].tolist()
    assert one[["match", "detail", "img_match"]].equals(zero[["match", "detail", "img_match"]])
    assert one["label"].corr(one["match"]) > 0.3
    assert abs(zero["label"].corr(zero["match"])) < 0.08 and abs(zero["label"].corr(zero["detail"])) < 0.08
    with_img = zero[zero["has_images"] == 1]
    assert with_img["label"].corr(with_img["img_match"]) > 0.15
    assert abs(zero["label"].mean() - one["label"].mean()) < 0.4
    assert json.loads((tmp_path / "t0" / "demo" / "make_demo.json").read_text())["text_weight"] == 0.0


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_text_weight_refused(tmp_path, value):
    with pytest.raises(DataError, match="--text-weight"):
        make_demo_cli(["--out", str(tmp_path), "--text-weight", value, "--no-images"])
    with pytest.raises(DataError, match="text_weight"):
        make_demo(tmp_path, text_weight=float(value))
    assert not (tmp_path / "demo").exists()


@pytest.fixture
def small_powered(tmp_path, monkeypatch):
    """The powered layout at a tiny size: 60 products of "home", 10 train / 10 dev / 40 test."""
    monkeypatch.setattr(P, "CATEGORY", "home")
    monkeypatch.setattr(C, "SIZES", (5, 10, 20, 30))
    monkeypatch.setattr(C, "SIZE_EXTRA", 20)
    root = P.data_root(tmp_path, P.MAIN_WEIGHT)
    make_demo(root, n_products=60, categories=("home",), images=False, test_frac=40 / 60, dev_frac=0.5)
    return tmp_path, root


def test_size_design_nested_and_same_items(small_powered):
    from mmss_lib.features.fingerprint import category_frames, content_fingerprint

    out, src = small_powered
    d = C.size_design(src)
    every = set().union(*(set(load_mrhp(src, "demo", "home", s)[0]["product_id"]) for s in SPLITS))
    common, dev = set(d["common"]), set(d["dev"])
    assert len(common) == 20 and not common & dev
    prev = set()
    for n in C.SIZES:
        train, test = set(d[f"train{n}"]), set(d[f"test{n}"])
        assert len(train) == n and prev <= train  # nested
        assert not train & (dev | test) and train | dev | test == every and common <= test
        prev = train
    want = {"train": d["train30"], "dev": d["dev"], "test": d["test30"]}
    write_resplit(src, out / "sub", "demo", "home", want)
    frames = {s: load_mrhp(out / "sub", "demo", "home", s) for s in SPLITS}
    assert sorted(frames["train"][0]["product_id"]) == sorted(want["train"])
    # the same items in all: the feature stores' content fingerprints match
    src_frames = {s: load_mrhp(src, "demo", "home", s) for s in SPLITS}
    for kind, side in (("text", 0), ("region", 0), ("text", 1), ("region", 1)):
        col = "product_id" if side == 0 else "review_id"
        assert content_fingerprint(kind, category_frames(frames)[side], col) == content_fingerprint(
            kind, category_frames(src_frames)[side], col
        )
    # the cues follow the reviews of each split
    for s in SPLITS:
        assert set(load_cues(out / "sub", "home", s)["review_id"]) == set(frames[s][1]["review_id"])


def test_pruner_judges_from_prune_from():
    """The median pruner never stops a trial before epoch ``prune_from``, and does from then on."""
    import optuna

    from mmss_lib.model_selection.search import _pruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=_pruner(4))
    for _ in range(3):
        t = study.ask()
        for step in range(1, 7):
            t.report(0.8, step)
        study.tell(t, 0.8)
    bad = study.ask()
    judged = []
    for step in range(1, 6):
        bad.report(0.1, step)
        judged.append(bad.should_prune())
    assert judged == [False, False, False, True, True]


def test_prune_from_refused(tmp_path):
    from mmss_lib.errors import TuneError
    from mmss_lib.model_selection.search import cli_main

    with pytest.raises(TuneError, match="--prune-from 0"):
        cli_main(
            [
                "--data-root",
                str(tmp_path),
                "--dataset",
                "demo",
                "--categories",
                "home",
                "--features",
                str(tmp_path),
                "--out",
                str(tmp_path / "t"),
                "--systems",
                "bimpm",
                "--prune-from",
                "0",
            ]
        )


def test_claims_report_only_refuses_an_empty_folder(tmp_path):
    with pytest.raises(DataError, match="nothing to report"):
        C.main(["--out", str(tmp_path / "none"), "--report-only"])
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="a file, not a folder"):
        C.main(["--out", str(tmp_path / "f")])


def test_size_curve_on_common_products(small_powered, monkeypatch):
    """The size table compares every size on the common test products only, with MM-SS - BiMPM's
    paired interval (runs faked by their per-product score files)."""
    out, src = small_powered
    d = C.size_design(src)
    rows = []
    rng = np.random.default_rng(0)
    for n in C.SIZES:
        test = d[f"test{n}"]
        for system in ("bimpm", "mmss"):
            for p in test:
                rows.append(
                    {
                        "dataset": "demo",
                        "category": "home",
                        "system": system,
                        "variant": "full",
                        "seed": 0,
                        "product_id": p,
                        "AP": 0.5 + rng.normal(0, 0.01) + (0.01 * n if system == "mmss" else 0.0),
                        "NDCG@3": 0.5,
                        "NDCG@5": 0.5,
                        "RR": 0.5,
                        "ceiling_while_improving": 0,
                        "n": n,
                    }
                )
    per = pd.DataFrame(rows)

    def fake_finished(out_, tag):
        n = 200 if tag == "main" else int(tag.removeprefix("size"))
        n = {200: 10}.get(n, n)
        return per[per["n"] == n].drop(columns="n")

    monkeypatch.setattr(C, "finished", fake_finished)
    monkeypatch.setattr(C, "SIZES", (5, 200, 20, 30))
    monkeypatch.setattr(C, "size_design", lambda src_: d)
    curve = C.size_curve(out)
    assert list(curve["train_products"]) == [5, 200, 20, 30]
    assert (curve["n_products"] == len(d["common"])).all()
    assert curve["MM-SS - BiMPM"].iloc[-1] > curve["MM-SS - BiMPM"].iloc[0]
    assert (curve["MM-SS - BiMPM lo"] <= curve["MM-SS - BiMPM"]).all()


def test_magazine_folds_as_datasets(amazon2018_sample, tmp_path):
    """Phase magazine's data: the real sample built once, each of the five folds written as a
    dataset whose splits are the fold's (no cues files: real data), every product a test product
    of exactly one fold, and the same items in every fold (one feature store serves all)."""
    from studies import magazine as M

    folds = M.make_data(tmp_path, amazon2018_sample)
    assert len(folds) == M.K
    seen = []
    for f, fold in enumerate(folds):
        got = {s: set(load_mrhp(M.fold_root(tmp_path, f), M.DATASET, M.CATEGORY, s)[0]["product_id"]) for s in SPLITS}
        assert got == {s: set(fold[s]) for s in SPLITS}
        assert not list((M.fold_root(tmp_path, f) / M.DATASET / M.CATEGORY).glob("*.cues.*"))
        seen += fold["test"]
    assert len(seen) == len(set(seen)) == 85
    stamp = M.fold_root(tmp_path, 0) / M.DATASET / "fold.json"
    before = stamp.stat().st_mtime_ns
    M.make_data(tmp_path, amazon2018_sample)  # a rerun reuses what is there
    assert stamp.stat().st_mtime_ns == before
    with pytest.raises(DataError, match="Magazine_Subscriptions"):
        M.make_data(tmp_path / "other", tmp_path / "nowhere")


def test_magazine_table_against_length():
    """The Magazine table: per length and setting, every system's MAP over all products and its
    paired difference to Length; the tuned rows are compared with the same (untuned) floor runs."""
    from studies import magazine as M

    rng = np.random.default_rng(0)
    rows = []
    for setting, systems in (("untuned", ("length", "random", "bimpm", "mmss")), ("tuned", ("bimpm",))):
        for s in systems:
            for p in range(40):
                ap = {"length": 0.8, "random": 0.5, "mmss": 0.75, "bimpm": 0.7 if setting == "untuned" else 0.9}[s]
                rows.append(
                    {
                        "dataset": "amazon",
                        "category": "magazine",
                        "system": s,
                        "variant": "full",
                        "seed": 0,
                        "product_id": f"P{p}",
                        "AP": ap + rng.normal(0, 0.01),
                        "NDCG@3": 0.5,
                        "NDCG@5": 0.5,
                        "RR": 0.5,
                        "ceiling_while_improving": 0,
                        "length": 256,
                        "setting": setting,
                        "cv_fold": 0,
                        "run_dir": f"{setting}/{s}",
                        "seconds": 90.0,
                    }
                )
    t = M.table(pd.DataFrame(rows)).set_index(["setting", "system"])
    assert t.loc[("untuned", "bimpm"), "minus_Length"] == pytest.approx(-10, abs=1)
    assert t.loc[("tuned", "bimpm"), "minus_Length"] == pytest.approx(10, abs=1)
    assert t.loc[("tuned", "bimpm"), "lo"] > 0 and ("tuned", "length") not in t.index
    assert t.loc[("tuned", "bimpm"), "minus_untuned"] == pytest.approx(20, abs=1)
    assert t.loc[("tuned", "bimpm"), "untuned_lo"] > 15 and pd.isna(t.loc[("untuned", "bimpm"), "minus_untuned"])
    assert (t["n_products"] == 40).all()
    assert t.loc[("untuned", "mmss"), "minus_BiMPM"] == pytest.approx(5, abs=1)
    assert t.loc[("untuned", "mmss"), "bimpm_lo"] > 3 and pd.isna(t.loc[("untuned", "bimpm"), "minus_BiMPM"])
    assert "minus_BiMPM" not in t.loc[("tuned", "bimpm")].dropna().index  # no tuned MM-SS to compare
    assert (t["run_min"] == 1.5).all()  # one run of 90 s each, however many products it scored


def test_magazine_results_keep_only_folds_every_system_finished(monkeypatch, tmp_path):
    """An interrupted Magazine phase: a fold enters the table only where every system of its
    setting finished, so the paired comparisons see the same products."""
    import mmss_lib.training.run_folder
    from studies import magazine as M

    done = {
        (64, "untuned", 0): ("random", "length", "bimpm", "mmss"),
        (64, "untuned", 1): ("random", "length", "bimpm"),
        (256, "tuned", 0): ("bimpm", "mmss"),
        (256, "tuned", 1): ("bimpm",),
    }

    def finished(root, dataset, category):
        key = next((k for k in done if root == M.runs_root(tmp_path, *k)), None)
        return pd.DataFrame({"system": list(done[key]), "seed": 0}) if key else pd.DataFrame()

    monkeypatch.setattr(mmss_lib.training.run_folder, "finished_results", finished)
    got = M.results(tmp_path)
    assert sorted(set(zip(got["length"], got["setting"], got["cv_fold"], strict=True))) == [
        (64, "untuned", 0),
        (256, "tuned", 0),
    ]


def test_magazine_folds_option_runs_those_folds_only_in_order(monkeypatch, tmp_path):
    """``--folds`` shares the Magazine phase between processes: each step of the phase visits the
    given folds only, in the given order; a bad fold, or --folds outside the phase, is refused."""
    import mmss_lib.model_selection.search
    import mmss_lib.model_selection.sweeps
    from studies import magazine as M

    calls = []
    monkeypatch.setattr(M, "make_data", lambda out, src: None)
    monkeypatch.setattr(M, "extract", lambda out: None)
    monkeypatch.setattr(
        mmss_lib.model_selection.sweeps,
        "run_experiment",
        lambda runs_root, **kw: calls.append(("run", Path(runs_root).relative_to(M.root(tmp_path)).parts)),
    )
    monkeypatch.setattr(
        mmss_lib.model_selection.search,
        "tune",
        lambda tune_root, system, parallel, n_jobs, **kw: calls.append(("tune", system, parallel, n_jobs)),
    )
    M.run(tmp_path, tmp_path, 1, seeds=(0,), folds=[4, 1, 4])
    runs = [c[1][1:4] for c in calls if c[0] == "run"]
    assert runs == [
        ("L64", "untuned", "fold4"),
        ("L64", "untuned", "fold1"),
        ("L256", "untuned", "fold4"),
        ("L256", "untuned", "fold1"),
        ("L256", "tuned", "fold4"),
        ("L256", "tuned", "fold1"),
        ("L512", "untuned", "fold4"),
        ("L512", "untuned", "fold1"),
    ]
    assert [c[1] for c in calls if c[0] == "tune"] == ["bimpm", "mmss"] * 2
    # the studies' batch size is their budget's, not --n-jobs: a finished study continues with any
    assert {c[2:] for c in calls if c[0] == "tune"} == {(M.TUNE_PARALLEL, 1)}
    calls.clear()
    M.run(tmp_path, tmp_path, 1, seeds=(0,))
    assert len([c for c in calls if c[0] == "run"]) == 4 * M.K
    for bad in ([M.K], [-1], []):
        with pytest.raises(DataError, match="magazine folds"):
            M.run(tmp_path, tmp_path, 1, folds=bad)
    with pytest.raises(DataError, match="only with --phases magazine"):
        C.main(["--out", str(tmp_path), "--phases", "size", "--folds", "1"])


def test_magazine_studies_table_reads_each_folds_choice(tmp_path):
    """The Magazine studies table: one row per fold and system whose study wrote its best.json, with
    the chosen trial, its dev MAP next to the untuned first trial's and the chosen settings; folds
    without a finished study are absent, and the report writes the table beside the MAP table."""
    from mmss_lib.training.run_folder import study_dir_for
    from studies import magazine as M

    for f, system, dev in ((0, "bimpm", 0.8), (0, "mmss", 0.7), (2, "mmss", 0.9)):
        d = study_dir_for(M.tune_root(tmp_path, 256, f), M.DATASET, M.CATEGORY, system, "full")
        d.mkdir(parents=True)
        (d / "best.json").write_text(
            json.dumps(
                {
                    "trial": 3,
                    "dev_MAP": dev,
                    "base_dev_MAP": dev - 0.1,
                    "params": {"lr": 0.00123456, "n_neg": 3},
                    "n_complete": 4,
                    "n_pruned": 1,
                    "wall_seconds": 600.0,
                }
            )
        )
    st = M.studies(tmp_path)
    assert list(zip(st["fold"], st["system"], strict=True)) == [(0, "bimpm"), (0, "mmss"), (2, "mmss")]
    assert st["dev_MAP"].tolist() == pytest.approx([80, 70, 90])
    assert (st["dev_MAP"] - st["untuned_dev_MAP"]).tolist() == pytest.approx([10, 10, 10])
    assert st["settings"].iloc[0] == "lr=0.00123, n_neg=3" and (st["trials_wall_min"] == 10).all()
    lines = M.study_lines(tmp_path, tmp_path)
    assert (tmp_path / "claims_magazine_studies.csv").exists() and any("lr=0.00123" in line for line in lines)
    assert M.study_lines(tmp_path / "none", tmp_path) == []


def _random_stores(out):
    """Random-feature stores of every item of the powered data under ``out`` (instead of MiniLM and
    MobileNet: the phases are what is tested here, not the features)."""
    from mmss_lib.features.store import feature_dirs, write_store

    rng = np.random.default_rng(0)
    items = {k: {} for k in ("text_prd", "text_rvw", "region_prd", "region_rvw")}
    root = P.data_root(out, P.MAIN_WEIGHT)
    for split in SPLITS:
        products, reviews = load_mrhp(root, "demo", P.CATEGORY, split)
        for side, ids in (("prd", products["product_id"]), ("rvw", reviews["review_id"])):
            for i in ids:
                items[f"text_{side}"][i] = {"x": rng.normal(size=(4, 8))}
                k = int(rng.integers(0, 3))
                items[f"region_{side}"][i] = {
                    "x": rng.random((k, 12)),
                    "boxes": np.tile([0, 0, 1, 1], (k, 1)),
                    "image": np.zeros(k, np.int32),
                }
    for kind, path in feature_dirs(out / "features", "demo", P.CATEGORY).items():
        write_store(path, items[kind], kind=kind.split("_")[0], dim=12 if "region" in kind else 8)


@pytest.mark.slow
def test_claims_phases_end_to_end(tmp_path, monkeypatch):
    """Every generated-data phase of mmss bench claims at a tiny size: the studies, the tuned runs
    (which record the study they took), images alone and text alone, the data sizes; the report
    has each section, and a rerun trains nothing."""
    from mmss_lib.training.run_folder import load_run_config

    # the category of the study itself (electronics): the report notebook runs in a kernel of its own,
    # which reads the runs under the study's category (sizes and budgets come from the runs' records)
    monkeypatch.setattr(P, "N_PRODUCTS", 36)
    monkeypatch.setattr(P, "TEST_FRAC", 0.5)
    monkeypatch.setattr(P, "DEV_FRAC", 0.3)
    monkeypatch.setattr(P, "TRAIN", {**P.TRAIN, "batch_size": 16, "eval_batch_size": 64})
    monkeypatch.setattr(P, "extract", _random_stores)
    monkeypatch.setattr(C, "TUNE_TRIALS", 2)
    monkeypatch.setattr(C, "TUNE_EPOCHS", 1)
    monkeypatch.setattr(C, "FINAL_EPOCHS", 1)
    monkeypatch.setattr(C, "BASE_SIZE", 12)  # split_sizes(36, test 0.5, dev 0.3): 12 train
    monkeypatch.setattr(C, "SIZES", (6, 12))
    monkeypatch.setattr(C, "SIZE_EXTRA", 3)
    monkeypatch.setattr(C, "SIZE_SEEDS", {6: (0,)})
    argv = [
        "--out",
        str(tmp_path),
        "--phases",
        "tune",
        "tuned",
        "alone",
        "fix",
        "size",
        "--seeds",
        "0",
        "--n-jobs",
        "1",
    ]
    assert C.main(argv) == 0
    text = (tmp_path / "CLAIMS.md").read_text()
    for section in (
        "## Studies",
        "## Tuned comparison",
        "### Paired differences",
        "## Images alone",
        "## Text alone",
        "## Data size",
        "### Where MM-SS takes its signal from (main)",
        "### Where MM-SS takes its signal from (images alone)",
        "## Fix tried for the image pathway",
        "Do the frozen features hold the image cues?",
        "## Measured time",
    ):
        assert section in text, section
    cfg = load_run_config(C.runs_root(tmp_path, "main") / "demo" / P.CATEGORY / "mmss__wo_d" / "seed0")
    assert cfg.tuned_from and cfg.tuned_from.endswith("mmss/best.json")  # the ablation takes MM-SS's study
    assert cfg.epochs == C.FINAL_EPOCHS and cfg.ssp_scale == "common"
    fix = load_run_config(C.runs_root(tmp_path, "images_alone") / "demo" / P.CATEGORY / "mmss__match" / "seed0")
    full = load_run_config(C.runs_root(tmp_path, "images_alone") / "demo" / P.CATEGORY / "mmss" / "seed0")
    assert (
        fix.model_options == {**full.model_options, **C.FIX[2]} and fix.tuned_from == full.tuned_from
    )  # MM-SS's settings
    assert set(pd.read_csv(tmp_path / "tables" / "claims_fix.csv")["data"]) == set(C.FIX_DESIGNS)
    assert "MM-SS+match - MM-SS" in set(
        pd.read_csv(tmp_path / "tables" / "claims_images_alone_claims.csv")["comparison"]
    )
    size = pd.read_csv(tmp_path / "tables" / "claims_size.csv")
    assert list(size["train_products"]) == [6, 12] and size["n_products"].nunique() == 1
    stamp = (tmp_path / "runs_tuned").rglob("metrics.json")
    before = {p: p.stat().st_mtime_ns for p in stamp}
    assert C.main(argv) == 0  # resumable: nothing retrained
    assert {p: p.stat().st_mtime_ns for p in before} == before

    # carried to another folder without checkpoints (how outputs/powered travels in git): the runs
    # are found finished there (tuned_from names the old folder) and the report is written again
    import shutil

    moved = tmp_path.parent / (tmp_path.name + "_moved")
    shutil.copytree(tmp_path, moved, ignore=shutil.ignore_patterns("*.pt"))
    argv_moved = ["--out", str(moved)] + argv[2:]
    assert C.main(argv_moved) == 0
    assert {p: p.stat().st_mtime_ns for p in (moved / "runs_tuned").rglob("metrics.json")} == {
        moved / p.relative_to(tmp_path): t for p, t in before.items()
    }
    assert not list(moved.rglob("*.pt"))  # nothing trained again
    again = (moved / "CLAIMS.md").read_text().replace(str(moved), str(tmp_path))  # the figure's path aside
    assert again.split("## Measured time")[0] == text.split("## Measured time")[0]

    # every finished run keeps its per-product ranking record (what git carries instead of the scores)
    for mp in (tmp_path / "runs_tuned").rglob("metrics.json"):
        assert (mp.parent / "ranking_test.csv.gz").exists() and (mp.parent / "ranking_dev.csv.gz").exists(), mp


@pytest.mark.slow
@pytest.mark.smoke
def test_claims_profile_regenerates_the_report_from_the_records(tmp_path, monkeypatch):
    """``mmss reproduce --profile claims`` (papermill, the report notebook) on a tiny study folder
    as git carries it (no scores, data, features, checkpoints or trial folders) writes the same
    CLAIMS.md and tables as the runner wrote from the full folder."""
    from mmss_lib.reproduce import plan, reproduce
    from studies.records import without_scores

    monkeypatch.setattr(P, "N_PRODUCTS", 36)
    monkeypatch.setattr(P, "TEST_FRAC", 0.5)
    monkeypatch.setattr(P, "DEV_FRAC", 0.3)
    monkeypatch.setattr(P, "TRAIN", {**P.TRAIN, "batch_size": 16, "eval_batch_size": 64})
    monkeypatch.setattr(P, "extract", _random_stores)
    monkeypatch.setattr(C, "TUNE_TRIALS", 2)
    monkeypatch.setattr(C, "TUNE_EPOCHS", 1)
    monkeypatch.setattr(C, "FINAL_EPOCHS", 1)
    monkeypatch.setattr(C, "BASE_SIZE", 12)
    monkeypatch.setattr(C, "SIZES", (6, 12))
    monkeypatch.setattr(C, "SIZE_EXTRA", 3)
    monkeypatch.setattr(C, "SIZE_SEEDS", {6: (0,)})
    monkeypatch.setattr(C, "SEEDS", (0,))
    full = tmp_path / "full"
    assert C.main(["--out", str(full), "--phases", "tune", "tuned", "size", "--seeds", "0", "--n-jobs", "1"]) == 0
    want = (full / "CLAIMS.md").read_text()
    # runs finished before the per-run records existed: the one-time migration writes them, and checks
    # that the report from the records alone is the report from the scores
    from studies.records import migrate

    for old in [
        *full.rglob("ranking_*.csv.gz"),
        *full.rglob("cue_sensitivity_test.json"),
        full / "runs_tuned" / C.SIZE_DESIGN,
    ]:
        old.unlink()
    assert migrate(full) + "\n" == want
    assert list(full.rglob("ranking_test.csv.gz")) and (full / "runs_tuned" / C.SIZE_DESIGN).exists()
    bare = without_scores(full, tmp_path / "bare")
    assert not list(bare.rglob("scores_*.csv")) and not (bare / "data").exists()
    for t in (bare / "tables").glob("*.csv"):
        if not t.name.startswith("claims_main_diagnosis"):  # the diagnosis is cached: it needs the checkpoint
            t.unlink()
    (bare / "CLAIMS.md").unlink()
    p = plan("claims", out_dir=bare)
    assert p["stages"] == ["claims"] and p["parameters"]["claims"] == {"out": str(bare)}
    lines: list[str] = []
    res = reproduce("claims", out_dir=bare, progress="cells", log=lines.append)
    assert [r.status for r in res] == ["ran"]
    assert (bare / "executed" / "claims" / "claims.ipynb").exists()
    assert any("cell 4/" in ln and "studies_lines" in ln for ln in lines), lines
    got = (bare / "CLAIMS.md").read_text().replace(str(bare), str(full))
    assert got == want
    for t in (full / "tables").glob("*.csv"):
        assert (bare / "tables" / t.name).read_bytes() == t.read_bytes(), t.name
    for section in ("## Studies", "## Tuned comparison", "## Data size", "## Measured time"):
        assert section in got, section


def test_a_second_process_waits_for_the_data_build(tmp_path):
    """Two studies on one folder do not build the same data at once: the second waits on
    ``{out}/.build.lock`` until the first is done (the kernel drops a dead holder's lock)."""
    import subprocess
    import sys

    from studies import build_lock

    child = [
        sys.executable,
        "-c",
        f"from studies import build_lock\nwith build_lock({str(tmp_path)!r}):\n    print('built')",
    ]
    with build_lock(tmp_path):
        proc = subprocess.Popen(child, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=3)  # held here: the child waits
    out, _ = proc.communicate(timeout=60)
    assert "waiting" in out and out.strip().endswith("built")
