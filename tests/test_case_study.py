"""Notebook helpers of the library: the case study (notebook 04), reading finished runs and the
reference configuration (notebooks 02/03), on a tiny demo category trained for one epoch."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mmss_lib.errors import DataError

DT, DR = 8, 12
TINY = {"d": 16, "n_heads": 2, "ff_dim": 32, "head_hidden": 8}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Demo category "home" (no images) with random-feature stores; MM-SS full and wo_d, seed 0, one epoch."""
    from conftest import write_tiny_demo

    from mmss_lib.model_selection.sweeps import run_experiment
    from mmss_lib.models.mmss import ABLATIONS
    from mmss_lib.training.config import TrainConfig

    root = write_tiny_demo(tmp_path_factory.mktemp("case"))
    base = TrainConfig(epochs=1, device="cpu", num_threads=1, model_options=dict(TINY))
    results = run_experiment(
        data_root=root / "data",
        dataset="demo",
        categories=["home"],
        features_root=root / "features",
        runs_root=root / "runs",
        systems=[("mmss", v, ABLATIONS[v]) for v in ("full", "wo_d")],
        seeds=(0,),
        base_config=base,
        progress=False,
    )
    return root, base, results


def test_load_run_config_history_and_reference_config(trained, tmp_path):
    from mmss_lib.model_selection.sweeps import reference_config
    from mmss_lib.training.run_folder import load_history, load_run_config, run_dir_for
    from mmss_lib.training.trainer import TrainConfig

    root, base, results = trained
    full = run_dir_for(root / "runs", "demo", "home", "mmss", "full", 0)
    cfg = load_run_config(full)
    assert cfg.system == "mmss" and cfg.variant == "full" and cfg.model_options["d"] == 16
    assert load_run_config(tmp_path) is None
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(DataError, match="config.json"):
        load_run_config(tmp_path)
    hist = load_history(full)
    assert [h["epoch"] for h in hist] == [1] and "MAP" in hist[0]["dev"]
    with pytest.raises(DataError, match="history"):
        load_history(tmp_path)

    fallback = TrainConfig(epochs=7)
    got, source = reference_config(root / "runs", "demo", "home", [3, 0], fallback)  # seed 3 has no run
    assert source == full / "config.json"
    assert (
        got.seed == 3 and got.variant == "full" and got.epochs == cfg.epochs and got.model_options == cfg.model_options
    )
    got, source = reference_config(root / "runs", "demo", "other", [0], fallback)
    assert got is fallback and source is None


def test_case_study_predicts_like_the_trainer_and_writes_figures(trained, tmp_path, capsys):
    from mmss_lib.evaluation.case_study import CaseStudy
    from mmss_lib.training.run_folder import run_dir_for

    root, _, _ = trained
    full = run_dir_for(root / "runs", "demo", "home", "mmss", "full", 0)
    case = CaseStudy(root / "data", root / "features", "demo", "home", figures_dir=tmp_path, tag="t")
    st = pd.read_csv(full / "scores_test.csv", dtype={"review_id": str, "product_id": str})
    ids = list(st["review_id"][:3])
    got = case.predict(full, "test", ids)
    # the checkpoint's scores equal those the trainer wrote for the test split
    np.testing.assert_allclose(got["score"], st["score"][:3].to_numpy(), rtol=1e-5, atol=1e-6)
    assert case.predict(tmp_path, "test", ids) is None
    assert "no trained model" in capsys.readouterr().out
    with pytest.raises(DataError, match="no review"):
        case.predict(full, "test", ["nope"])

    subtasks = [c[len("score_") :] for c in st.columns if c.startswith("score_")]
    (pick,) = case.test_cases(st, subtasks)
    spread = np.abs(st[[f"score_{s}" for s in subtasks]].to_numpy() - st[["score"]].to_numpy()).mean(axis=1)
    assert pick == st["review_id"].iloc[int(np.argmax(spread))]  # no images in this demo: largest spread

    row = case.show("test", pick, {"H": 3.0, "M": 0.5, "O": None}, "subtask outputs")
    assert (tmp_path / f"fig4_case_test_t_{pick}.png").stat().st_size > 0
    assert row["review_id"] == pick and row["H"] == 3.0 and np.isnan(row["O"])
    assert row["product_id"] == st.set_index("review_id").loc[pick, "product_id"]


def test_plain_table_and_csv_round_trip(tmp_path):
    from mmss_lib.evaluation import tables

    df = pd.DataFrame({"a": ["x", "y"], "v": [0.12345, 2.0], "n": [1, 2]})
    csv, md = tables.save_plain_table(df, tmp_path / "t")
    pd.testing.assert_frame_equal(pd.read_csv(csv), df)
    assert md.read_text() == "| a | v | n |\n|---|---|---|\n| x | 0.123 | 1 |\n| y | 2.000 | 2 |\n"
    _, md = tables.save_plain_table(df, tmp_path / "u", markdown="custom")
    assert md.read_text() == "custom\n"
    p = tables.save_csv(df, tmp_path / "r.csv")
    assert p.read_text().splitlines()[0] == "a,v,n"
    assert json.loads(pd.read_csv(p).to_json())["v"]["0"] == 0.12345
