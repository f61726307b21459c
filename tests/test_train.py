"""The trainer on small synthetic feature stores: learning, resume, reproducibility, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mmss_lib.data.mrhp import SPLITS
from mmss_lib.errors import CheckpointError, TrainingError
from mmss_lib.evaluation.summary import per_run_per_product
from mmss_lib.features.loader import MRHPSplitData
from mmss_lib.features.store import write_store
from mmss_lib.model_selection import sweeps as E
from mmss_lib.training import trainer as T

DT, DR = 8, 12
TH = 2.0  # only labels 3 and 4 are relevant: MAP does not saturate on these tiny products
TINY = {"d": 16, "n_heads": 2, "ff_dim": 32, "head_hidden": 8, "dropout": 0.1}


def make_synthetic(root, *, n_products=(10, 6, 6), per_product=6, seed=0):
    """Three splits whose review text features carry the label (plus noise), four small stores.
    Dev/test have a single-review product and one whose labels are all equal."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=DT)
    items = {k: {} for k in ("text_prd", "text_rvw", "region_prd", "region_rvw")}
    frames = {}
    for split, n_prod in zip(SPLITS, n_products, strict=True):
        rows, prods = [], []
        for p in range(n_prod):
            pid = f"{split}{p}"
            prods.append({"product_id": pid, "text": "product"})
            n = 1 if (split != "train" and p == 0) else per_product
            labels = rng.integers(0, 5, size=n)
            if split != "train" and p == 1:
                labels[:] = 2
            items["text_prd"][pid] = {"x": rng.normal(size=(3, DT))}
            k = int(rng.integers(0, 4))
            items["region_prd"][pid] = {
                "x": rng.random((k, DR)),
                "boxes": np.tile([0, 0, 1, 1], (k, 1)),
                "image": np.zeros(k, np.int32),
            }
            for j, y in enumerate(labels):
                rid = f"{pid}-{j}"
                rows.append({"review_id": rid, "product_id": pid, "label": int(y), "text": "review"})
                L = int(rng.integers(2, 6))
                x = rng.normal(size=(L, DT)) * 0.5
                x[0] += (y - 2) * direction  # the [CLS] row carries the label
                items["text_rvw"][rid] = {"x": x}
                k = int(rng.integers(0, 3))
                items["region_rvw"][rid] = {
                    "x": rng.random((k, DR)),
                    "boxes": np.tile([0, 0, 1, 1], (k, 1)),
                    "image": np.zeros(k, np.int32),
                }
        frames[split] = (pd.DataFrame(prods), pd.DataFrame(rows))
    stores = {
        kind: write_store(root / kind, its, kind=kind.split("_")[0], dim=DR if "region" in kind else DT)
        for kind, its in items.items()
    }
    return {s: MRHPSplitData(frames[s][1], frames[s][0], stores, training=(s == "train"), name=s) for s in SPLITS}


@pytest.fixture(scope="module")
def big_splits(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("stores"))


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    """Smaller: for the mechanics (resume, seeds, errors)."""
    return make_synthetic(tmp_path_factory.mktemp("small"), n_products=(5, 4, 4), per_product=5, seed=1)


def cfg(**kw):
    base = dict(
        system="mmss",
        model_options=TINY,
        epochs=3,
        batch_size=32,
        lr=3e-3,
        patience=10,
        seed=0,
        device="cpu",
        eval_batch_size=32,
        n_neg=3,
    )
    base.update(kw)
    return T.TrainConfig(**base)


def fit(c, splits, run_dir):
    return T.fit(c, splits, run_dir, threshold=TH, progress=False, run_info={"dataset": "syn", "category": "c"})


def _strip_seconds(history):
    return [{k: v for k, v in h.items() if "seconds" not in k} for h in history]


def test_training_beats_untrained_and_random(big_splits, tmp_path):
    from mmss_lib.metrics.ranking import ranking_metrics

    splits = big_splits
    c = cfg(epochs=4)
    torch.manual_seed(0)
    model = T.build_model(c, DT, DR)
    untrained = T.evaluate(model, splits["dev"], c, torch.device("cpu"), TH).metrics["MAP"]
    dev = splits["dev"]
    rng = np.random.default_rng(0)
    random_map = np.mean(
        [ranking_metrics(dev.product_ids, dev.labels, rng.random(dev.n), threshold=TH)["MAP"] for _ in range(20)]
    )
    m = fit(c, splits, tmp_path / "run")
    assert m["dev"]["MAP"] > untrained + 0.05
    assert m["dev"]["MAP"] > random_map + 0.05
    # files of a run
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    rec1 = np.load(tmp_path / "run" / "ssp" / "epoch001.npz")
    assert np.all(rec1["offset_ptrt"] == 0.0)  # Eq. 12: y_s = y_g after epoch 1
    # SSP health per epoch in history.json, equal to the epoch's record
    rec4 = np.load(tmp_path / "run" / "ssp" / "epoch004.npz")
    h4 = hist[3]["ssp"]["ptrt"]
    seen = rec4["seen"]
    assert h4["share_up"] == pytest.approx(float((rec4["offset_ptrt"][seen] > 0).mean()))
    assert h4["share_down"] == pytest.approx(float((rec4["offset_ptrt"][seen] < 0).mean()))
    fresh = seen & np.isfinite(rec4["chi_g"])  # stale samples (not visited in epoch 4): NaN
    assert int(fresh.sum()) == int(seen.sum()) - h4["n_stale"] and h4["sqrt_s"] > 0
    assert h4["mean_chi_g"] == pytest.approx(float(rec4["chi_g"][fresh].mean()), rel=1e-5)
    assert hist[0]["ssp"]["ptrt"]["mean_change"] == 0.0 and hist[1]["ssp"]["ptrt"]["mean_change"] > 0.0
    assert m["dev"]["MAP"] == pytest.approx(max(h["dev"]["MAP"] for h in hist))
    assert m["best_epoch"] == 1 + int(np.argmax([h["dev"]["MAP"] for h in hist]))
    scores = pd.read_csv(tmp_path / "run" / "scores_test.csv", dtype={"product_id": str})
    assert list(scores.columns[:4]) == ["review_id", "product_id", "label", "score"]
    assert "score_ptrt" in scores.columns
    assert len(scores) == splits["test"].n and "test0" in set(scores["product_id"])  # single-review product scored
    rec = np.load(tmp_path / "run" / "ssp" / "epoch002.npz")
    assert rec["label_ptrt"].shape == (splits["train"].n,) and int(rec["epoch"]) == 2
    for f in ("config.json", "best.pt", "last.pt", "scores_dev.csv", "metrics.json"):
        assert (tmp_path / "run" / f).exists()


def test_resume_equals_uninterrupted(splits, tmp_path):
    straight = fit(cfg(epochs=4), splits, tmp_path / "a")
    fit(cfg(epochs=2), splits, tmp_path / "b")
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["epochs_run"] == 2
    resumed = fit(cfg(epochs=4), splits, tmp_path / "b")
    assert resumed["epochs_run"] == 4
    assert resumed["dev"] == straight["dev"] and resumed["test"] == straight["test"]
    ha = json.loads((tmp_path / "a" / "history.json").read_text())
    hb = json.loads((tmp_path / "b" / "history.json").read_text())
    assert _strip_seconds(ha) == _strip_seconds(hb)
    a = pd.read_csv(tmp_path / "a" / "scores_test.csv")
    b = pd.read_csv(tmp_path / "b" / "scores_test.csv")
    pd.testing.assert_frame_equal(a, b)


def test_fixed_seed_rerun_identical_and_other_seed_differs(splits, tmp_path):
    m1 = fit(cfg(epochs=2), splits, tmp_path / "a")
    m2 = fit(cfg(epochs=2), splits, tmp_path / "b")
    fit(cfg(epochs=2, seed=1), splits, tmp_path / "c")
    assert m1["dev"] == m2["dev"] and m1["test"] == m2["test"]
    s1 = pd.read_csv(tmp_path / "a" / "scores_dev.csv")["score"]
    s3 = pd.read_csv(tmp_path / "c" / "scores_dev.csv")["score"]
    assert not np.allclose(s1, s3)


def test_finished_run_is_skipped(splits, tmp_path, monkeypatch):
    m = fit(cfg(epochs=1), splits, tmp_path / "r")
    monkeypatch.setattr(T, "train_step", lambda *a, **k: pytest.fail("a finished run must not train again"))
    assert fit(cfg(epochs=1), splits, tmp_path / "r") == m


def test_checkpoint_from_other_config_refused(splits, tmp_path):
    fit(cfg(epochs=1), splits, tmp_path / "r")
    with pytest.raises(CheckpointError, match=r"lr \(checkpoint 0.003, now 0.01\)"):
        fit(cfg(epochs=2, lr=1e-2), splits, tmp_path / "r")


def test_nan_loss_stops_with_epoch_and_batch(splits, tmp_path, monkeypatch):
    fit(cfg(epochs=1), splits, tmp_path / "r")
    orig = T.target_loss
    monkeypatch.setattr(T, "target_loss", lambda *a: orig(*a) * float("nan"))
    with pytest.raises(TrainingError, match=r"epoch 2, batch 1/"):
        fit(cfg(epochs=2), splits, tmp_path / "r")
    ck = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert ck["state"]["epoch"] == 1


def test_early_stopping_stops_after_patience(splits, tmp_path):
    m = fit(cfg(epochs=6, lr=0.0, patience=2), splits, tmp_path / "r")  # lr 0: dev MAP never improves
    assert m["epochs_run"] == 3 and m["best_epoch"] == 1 and m["stopped_early"]


def test_no_subtask_variant_and_label_gap(splits, tmp_path):
    m = fit(cfg(epochs=1, model_options={**TINY, "use_module_d": False}, loss="label_gap"), splits, tmp_path / "r")
    assert not (tmp_path / "r" / "ssp").exists()
    assert 0.0 <= m["test"]["MAP"] <= 1.0


def test_run_experiment_summarize_and_per_product(splits, tmp_path, monkeypatch):
    monkeypatch.setattr(E, "load_splits", lambda *a, **k: splits)
    base = cfg(epochs=1, threshold=1.0)
    res = E.run_experiment(
        data_root=tmp_path,
        dataset="syn",
        categories=["c"],
        features_root=tmp_path,
        runs_root=tmp_path / "runs",
        systems=["mmss", ("mmss", "wo_d", {"use_module_d": False})],
        seeds=(0, 1),
        base_config=base,
        progress=False,
    )
    assert len(res) == 4 and set(res["variant"]) == {"full", "wo_d"}
    assert (tmp_path / "runs" / "syn" / "c" / "mmss__wo_d" / "seed1" / "metrics.json").exists()
    summ = E.summarize(res)
    row = summ[summ["variant"] == "full"].iloc[0]
    assert row["n_seeds"] == 2
    assert row["MAP_mean"] == pytest.approx(res[res["variant"] == "full"]["MAP"].mean())
    pp = per_run_per_product(res[res["variant"] == "full"])
    ap = pp.groupby("product_id")["AP"].mean()  # each product over seeds
    assert len(ap) == 4
    assert ap.mean() == pytest.approx(row["MAP_mean"])


def test_config_roundtrip_and_validation():
    c = cfg()
    assert T.TrainConfig.from_json(c.to_json()) == c
    with pytest.raises(Exception, match="pair_scheme"):
        T.TrainConfig(pair_scheme="bogus")
    assert T.run_name("mmss", "full") == "mmss" and T.run_name("mmss", "wo_b") == "mmss__wo_b"


def _demo_with_random_stores(root):
    """A tiny demo dataset on disk (no images) and random-feature stores for all of its items."""
    from conftest import write_tiny_demo

    write_tiny_demo(root)


def test_run_experiment_parallel_jobs_match_sequential(tmp_path):
    """n_jobs=2 (spawned worker processes) gives the same results as one process."""
    _demo_with_random_stores(tmp_path)
    base = cfg(epochs=2, num_threads=1, model_options={})
    kw = dict(
        data_root=tmp_path / "data",
        dataset="demo",
        categories=["home"],
        features_root=tmp_path / "features",
        systems=[("mmss", "full", TINY), "egcnn"],
        seeds=(0, 1),
        base_config=base,
        progress=False,
    )
    seq = E.run_experiment(runs_root=tmp_path / "seq", **kw)
    par = E.run_experiment(runs_root=tmp_path / "par", n_jobs=2, **kw)
    assert len(seq) == len(par) == 4
    cols = ["system", "seed", "MAP", "NDCG@3", "NDCG@5", "dev_MAP", "best_epoch"]
    pd.testing.assert_frame_equal(seq[cols], par[cols])


def test_subtask_objective_starts_in_epoch_two(splits, tmp_path):
    """Eq. 12/14: in epoch 1 all subtask weights are 0, so the learned log-variances of Eq. 15
    must not move (no loss term drives them); from epoch 2 on they do."""
    import torch

    def log_vars(run_dir):
        state = torch.load(run_dir / "last.pt", weights_only=False)["model"]
        return torch.cat([v.flatten() for k, v in state.items() if k.startswith("uncertainty.")])

    fit(cfg(epochs=1), splits, tmp_path / "one")
    assert torch.count_nonzero(log_vars(tmp_path / "one")) == 0
    fit(cfg(epochs=3), splits, tmp_path / "three")
    assert torch.count_nonzero(log_vars(tmp_path / "three")) > 0


@pytest.mark.parametrize("reading", ["rms", "common"])
def test_another_scale_reading_recomputed_from_a_runs_records(splits, tmp_path, reading):
    """Issue 18: the records keep the raw sqrt(s_k) per task, so the offsets of another reading of
    Eq. 18's scale can be recomputed from a run's record and match a run made with that reading
    (epochs 1-2: the subtask objective starts in epoch 3, so both runs have the same features)."""
    from mmss_lib.ssp.label import recompute_reading
    from mmss_lib.ssp.records import load_ssp_history

    fit(cfg(epochs=2, ssp_scale="mean"), splits, tmp_path / "mean")
    fit(cfg(epochs=2, ssp_scale=reading), splits, tmp_path / reading)
    hist = json.loads((tmp_path / "mean" / "history.json").read_text())
    assert all(h["ssp"][s]["sqrt_s"] > 0 for h in hist for s in h["ssp"])  # raw scale per epoch
    other = load_ssp_history(tmp_path / reading)
    for e in (1, 2):
        with np.load(tmp_path / "mean" / "ssp" / f"epoch{e:03d}.npz") as z:
            rec = {k: z[k] for k in z.files}
        got = recompute_reading(rec, reading)
        for s in other.subtasks:
            np.testing.assert_allclose(got[f"offset_{s}"], other.offsets[s][e - 1], rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(got[f"chi_{s}"], other.chi[s][e - 1], rtol=1e-4, atol=1e-5)
    assert np.abs(other.offsets["ptrt"][1]).max() > 0  # epoch 2 moved the labels


def test_every_config_field_reaches_mmss_train(capsys):
    """`mmss train --help` lists every TrainConfig field: its own option (derived from the field:
    name, type, default, help), or the option that sets it (--systems, --seeds, --option, --no-amp,
    --tuned); values are checked by TrainConfig before any run starts."""
    import dataclasses

    from mmss_lib.model_selection.sweeps import base_config_from_args, build_parser
    from mmss_lib.training.config import TrainConfig

    ap = build_parser("mmss train")
    ap.print_help()
    help_text = capsys.readouterr().out
    via = {
        "system": "--systems",
        "variant": "--systems",
        "model_options": "--option",
        "seed": "--seeds",
        "amp": "--no-amp",
        "tuned_from": "--tuned",
    }
    for f in dataclasses.fields(TrainConfig):
        assert via.get(f.name, "--" + f.name.replace("_", "-")) in help_text, f.name
    req = ["--data-root", "d", "--dataset", "demo", "--categories", "home", "--features", "f", "--runs", "r"]
    args = ap.parse_args(
        req
        + [
            "--ssp-scale",
            "rms",
            "--max-regions-per-image",
            "10",
            "--no-eval-test",
            "--grad-clip",
            "none",
            "--ssp-record-seeds",
            "0",
            "1",
        ]
    )
    cfg = base_config_from_args(args)
    assert (cfg.ssp_scale, cfg.max_regions_per_image, cfg.eval_test, cfg.grad_clip, cfg.ssp_record_seeds) == (
        "rms",
        10,
        False,
        None,
        [0, 1],
    )
    assert base_config_from_args(ap.parse_args(req)) == TrainConfig()  # the defaults are the config's
    with pytest.raises(Exception, match="ssp_scale"):
        base_config_from_args(ap.parse_args(req + ["--ssp-scale", "median"]))


def test_bad_model_option_refused_before_any_run_folder(tiny_demo, tmp_path, capsys):
    """`--option d=notjson` (a bare word where the option is an integer): one line naming it, before
    any run starts (no empty seed0/ with a .lock left behind)."""
    from mmss_lib.cli import main

    rc = main(
        [
            "train",
            "--data-root",
            str(tiny_demo / "data"),
            "--dataset",
            "demo",
            "--categories",
            "home",
            "--features",
            str(tiny_demo / "features"),
            "--runs",
            str(tmp_path / "runs"),
            "--systems",
            "length",
            "mmss",
            "--seeds",
            "0",
            "--option",
            "d=notjson",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "--option d='notjson'" in err and "expects an integer" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_plan_sweep_plans_every_run_before_any_work(tmp_path):
    """plan_sweep: one job per (category, system/variant, seed), extra runs after the returned ones,
    run folders by the run folder's layout; nothing written; a duplicate is refused at planning."""
    from mmss_lib.errors import DataError
    from mmss_lib.model_selection.sweeps import plan_sweep
    from mmss_lib.training.run_folder import run_dir_for

    kw = dict(data_root=tmp_path / "data", dataset="demo", features_root=tmp_path / "f", runs_root=tmp_path / "runs")
    plan = plan_sweep(
        categories=["home", "clothing"],
        systems=["bimpm", ("mmss", "wo_d", {"use_module_d": False})],
        seeds=[0, 1],
        extra_runs=[("home", "mmss", "wo_b", {"use_module_b": False})],
        **kw,
    )
    (step,) = plan.steps
    assert step.fold is None and step.n_main == 8 and len(step.jobs) == 10
    category, cfg, rd = step.jobs[3]
    assert (category, cfg.system, cfg.variant, cfg.seed) == ("home", "mmss", "wo_d", 1)
    assert cfg.model_options == {"use_module_d": False}
    assert rd == run_dir_for(tmp_path / "runs", "demo", "home", "mmss", "wo_d", 1)
    assert [j[1].variant for j in step.jobs[8:]] == ["wo_b", "wo_b"]
    assert not (tmp_path / "runs").exists()
    with pytest.raises(DataError):
        plan_sweep(categories=["home"], systems=["bimpm", "bimpm"], seeds=[0], **kw)
