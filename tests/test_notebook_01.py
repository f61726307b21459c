"""notebooks/01_extract_features.ipynb under papermill, smoke configuration: a tiny demo made by
the notebook itself, the tiny random BERT, a random detector with tiny sizes."""

from __future__ import annotations

import json

import nbformat
import numpy as np
import pytest

from mmss_lib.features.store import FeatureStore, feature_dirs, read_regions

NOTEBOOK = "notebooks/01_extract_features.ipynb"


def test_notebook_committed_clean(repo_root):
    nb = nbformat.read(repo_root / NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.execution_count is None and not c.outputs, "commit the notebook without outputs"


@pytest.mark.slow
def test_notebook_01_smoke(repo_root, tmp_path, tiny_bert_dir):
    import papermill as pm

    params = {
        "data_root": str(tmp_path / "data"),
        "dataset": "demo",
        "categories": ["home"],
        "text_model": str(tiny_bert_dir),
        "text_max_len": 64,
        "allow_random_weights": True,
        "features_root": str(tmp_path / "features"),
        "figures_dir": str(tmp_path / "figures"),
        "tables_dir": str(tmp_path / "tables"),
        "text_batch_size": 16,
        "image_batch_size": 4,
        "device": "cpu",
        "detector_min_size": 64,
        "detector_max_size": 64,
        "shard_size": 32,
        "make_demo_if_missing": True,
        "demo_products": 5,
        "n_boxes_drawn": 5,
    }
    out = tmp_path / "executed.ipynb"
    pm.execute_notebook(
        str(repo_root / NOTEBOOK),
        str(out),
        parameters=params,
        kernel_name="python3",
        cwd=str(repo_root),
        progress_bar=False,
    )
    dirs = feature_dirs(tmp_path / "features", "demo", "home")
    from mmss_lib.features.extract import load_category_items

    products, reviews = load_category_items(tmp_path / "data", "demo", "home")
    text = FeatureStore(dirs["text_rvw"])
    assert text.ids == reviews["review_id"].tolist() and text.dim == 32
    region = FeatureStore(dirs["region_rvw"])
    assert region.manifest["random_weights"] is True and region.dim == 2048
    for rid, files in zip(reviews["review_id"], reviews["image_files"], strict=True):
        x, boxes = read_regions(region, rid)
        assert (len(x) == 0) == (len(files) == 0)
        assert np.isfinite(x).all() and (boxes >= 0).all() and (boxes <= 1).all()
    assert FeatureStore(dirs["region_prd"]).ids == products["product_id"].tolist()
    png = tmp_path / "figures" / "01_boxes_demo_home_prd.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "tables" / "01_features_demo.csv").read_text()
    assert "region_rvw" in table and (tmp_path / "tables" / "01_features_demo.md").exists()
    rep = json.loads((tmp_path / "features" / "demo" / "home" / "extract_report.json").read_text())
    assert rep["random_weights"] is True
    assert "RANDOMLY INITIALISED" in out.read_text()
