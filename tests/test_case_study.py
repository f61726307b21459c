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


def test_load_scores_and_the_test_case_values(trained, tmp_path, capsys):
    """Notebook 04's test-review values through the run folder: H, M, O and the subtask outputs,
    in that order, read from the runs' scores files; a run without scores shows O as n/a."""
    from mmss_lib.evaluation.case_study import load_scores, values_of_test_cases
    from mmss_lib.training.run_folder import run_dir_for

    root, _, _ = trained
    full = run_dir_for(root / "runs", "demo", "home", "mmss", "full", 0)
    wod = run_dir_for(root / "runs", "demo", "home", "mmss", "wo_d", 0)
    st = load_scores(full, "test")
    assert st.equals(pd.read_csv(full / "scores_test.csv", dtype={"review_id": str, "product_id": str}))
    other = load_scores(wod, "test")
    ids = list(st["review_id"].iloc[[2, 0]])
    subtasks = ["ptrt", "pvrt", "nope"]
    got = values_of_test_cases(st, other, ids, subtasks)
    assert [rid for rid, _ in got] == ids
    for rid, values in got:
        r, o = st.set_index("review_id").loc[rid], other.set_index("review_id").loc[rid]
        assert list(values) == ["H", "M", "O", "yhat_ptrt", "yhat_pvrt"]
        assert values["H"] == r["label"] and values["M"] == r["score"] and values["O"] == o["score"]
        assert values["yhat_pvrt"] == r["score_pvrt"]
    assert load_scores(tmp_path, "test", missing_ok=True) is None
    assert "no scores_test.csv" in capsys.readouterr().out
    assert all(v["O"] is None for _, v in values_of_test_cases(st, None, ids, subtasks))
    with pytest.raises(DataError, match="scores_test.csv"):
        load_scores(tmp_path, "test")
    with pytest.raises(DataError, match="not among the runs' test scores"):
        values_of_test_cases(st, other, ["nope"], subtasks)


def test_index_among_counts_the_true_entries_before():
    from mmss_lib.evaluation.case_study import index_among

    seen = np.array([True, False, True, True, False, True])
    for i in range(len(seen)):
        want = int(np.flatnonzero(np.flatnonzero(seen) == i)[0]) if seen[i] else None  # the notebook's old form
        assert index_among(seen, i) == want
    assert index_among(seen, 3) == 2 and index_among(seen, 4) is None
    with pytest.raises(IndexError, match="outside"):
        index_among(seen, 6)


def test_region_extractor_options_as_notebook_01_built_them():
    from mmss_lib.features.extract import region_extractor_options

    assert region_extractor_options() == {"rpn_post_nms_top_n": 300}
    assert region_extractor_options("grid", "mobilenet_v2", rpn_post_nms_top_n=300, max_boxes=100) == {
        "rpn_post_nms_top_n": 300,
        "region_boxes": "grid",
        "region_backbone": "mobilenet_v2",
    }
    assert region_extractor_options("grid") == {
        "rpn_post_nms_top_n": 300,
        "region_boxes": "grid",
        "region_backbone": "mobilenet_v2",
    }
    assert region_extractor_options(rpn_post_nms_top_n=50, max_boxes=5) == {
        "rpn_post_nms_top_n": 50,
        "max_boxes": 5,
        "min_boxes": 5,
    }
    assert region_extractor_options(max_boxes=36)["min_boxes"] == 10
    for kwargs, match in (
        ({"region_boxes": "boxes"}, "region_boxes"),
        ({"region_backbone": "resnet"}, "region_backbone"),
        ({"max_boxes": 0}, "max_boxes"),
        ({"rpn_post_nms_top_n": 2.5}, "rpn_post_nms_top_n"),
        ({"max_boxes": True}, "max_boxes"),
    ):
        with pytest.raises(ValueError, match=match):
            region_extractor_options(**kwargs)
