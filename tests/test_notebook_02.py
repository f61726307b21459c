"""Notebook 02 under papermill on a tiny demo slice (tiny BERT features, 2 systems, 2 epochs, 1 seed)."""

from __future__ import annotations

import json

import pandas as pd
import pytest


@pytest.mark.slow
def test_notebook_02_smoke(tmp_path, tiny_bert_dir, repo_root):
    import papermill as pm

    from mmss_lib.data.synthetic import make_demo
    from mmss_lib.features.extract import extract_category

    make_demo(tmp_path / "data", n_products=8, categories=["home"], images=False)
    extract_category(
        tmp_path / "data",
        "demo",
        "home",
        tmp_path / "feats",
        text_model=str(tiny_bert_dir),
        allow_random_weights=True,
        detector_min_size=64,
        detector_max_size=64,
        progress=False,
        device="cpu",
        text_max_len=32,
    )
    nb = repo_root / "notebooks" / "02_train.ipynb"
    source = json.loads(nb.read_text())
    assert all(
        c.get("outputs", []) == [] and c.get("execution_count") is None
        for c in source["cells"]
        if c["cell_type"] == "code"
    ), "commit the notebook without outputs"
    params = dict(
        dataset="demo",
        categories=["home"],
        data_root=str(tmp_path / "data"),
        features_root=str(tmp_path / "feats"),
        runs_root=str(tmp_path / "runs"),
        tables_dir=str(tmp_path / "tables"),
        figures_dir=str(tmp_path / "figs"),
        systems=["random", "length", "egcnn", "mmss"],
        seeds=[0],
        epochs=2,
        patience=2,
        batch_size=16,
        system_options={"mmss": {"d": 16, "n_heads": 2, "ff_dim": 32, "head_hidden": 8}},
        device="cpu",
        num_threads=0,
    )
    pm.execute_notebook(
        str(nb),
        str(tmp_path / "out.ipynb"),
        parameters=params,
        kernel_name="python3",
        cwd=str(tmp_path),
        progress_bar=False,
    )
    table = pd.read_csv(tmp_path / "tables" / "table_comparison_demo.csv", header=[0, 1], index_col=[0, 1])
    assert len(table) == 4 and [t for t, _ in table.index[:2]] == ["Floor", "Floor"]  # floors first
    assert all(" [" in str(v) and str(v).endswith("]") for v in table.to_numpy().ravel())  # intervals
    md = (tmp_path / "tables" / "table_comparison_demo.md").read_text()
    assert "bootstrap interval" in md and "region features: random-weight Faster R-CNN" in md
    seeds = pd.read_csv(tmp_path / "tables" / "table_comparison_seeds_demo.csv")
    assert set(seeds["system"]) == {"random", "length", "egcnn", "mmss"} and seeds["MAP"].between(0, 1).all()
    assert (tmp_path / "figs" / "fig_learning_curves_demo_home.png").stat().st_size > 0
    pp = pd.read_csv(tmp_path / "tables" / "per_product_demo.csv")
    assert set(pp["system"]) == {"random", "length", "egcnn", "mmss"}
    assert (tmp_path / "runs" / "demo" / "home" / "mmss" / "seed0" / "best.pt").exists()
