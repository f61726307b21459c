"""End to end on the demo data: make_demo -> extract (tiny BERT) -> `mmss train` -> `mmss predict`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mmss_lib.errors import CheckpointError, DataError, ModelNotAvailableError

TINY_OPTS = ["--option", "d=16", "--option", "n_heads=2", "--option", "ff_dim=32", "--option", "head_hidden=8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    from mmss_lib.cli import main
    from mmss_lib.data.synthetic import make_demo
    from mmss_lib.features.extract import extract_category

    root = tmp_path_factory.mktemp("demo")
    make_demo(root / "data", n_products=10, categories=["home"], images=False)
    extract_category(
        root / "data",
        "demo",
        "home",
        root / "feats",
        text_model=str(tiny_bert_dir),
        allow_random_weights=True,
        detector_min_size=64,
        detector_max_size=64,
        progress=False,
        device="cpu",
        text_max_len=32,
    )
    rc = main(
        [
            "train",
            "--data-root",
            str(root / "data"),
            "--dataset",
            "demo",
            "--categories",
            "home",
            "--features",
            str(root / "feats"),
            "--runs",
            str(root / "runs"),
            "--systems",
            "mmss",
            "--seeds",
            "0",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--no-progress",
            "--lr",
            "1e-3",
            *TINY_OPTS,
        ]
    )
    assert rc == 0
    return root, root / "runs" / "demo" / "home" / "mmss" / "seed0"


def test_cli_train_writes_run(trained):
    root, run = trained
    m = json.loads((run / "metrics.json").read_text())
    assert m["epochs_run"] == 2 and m["threshold"] == 1
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["model_options"]["d"] == 16
    assert cfg["features"]["text_rvw"]["encoder"]


def test_predict_matches_training_scores(trained, tiny_bert_dir):
    """Features extracted on the fly + the loader give the scores the run wrote for the test split."""
    from mmss_lib.data.mrhp import load_mrhp
    from mmss_lib.predict import predict

    root, run = trained
    products, reviews = load_mrhp(root / "data", "demo", "home", "test")
    pid = products["product_id"].iloc[0]
    prod = products[products["product_id"] == pid].iloc[0]
    revs = reviews[reviews["product_id"] == pid]
    items = [{"review_id": r.review_id, "text": r.text, "image_files": []} for r in revs.itertuples()]
    df = predict(run, {"text": prod["text"], "image_files": []}, items, allow_random_weights=True)
    assert df["rank"].tolist() == list(range(1, len(items) + 1))
    assert np.all(np.diff(df["score"].to_numpy()) <= 0)
    ref = pd.read_csv(run / "scores_test.csv", dtype={"review_id": str}).set_index("review_id")
    got = df.set_index("review_id")["score"]
    np.testing.assert_allclose(got.to_numpy(), ref.loc[got.index, "score"].to_numpy(), rtol=1e-4, atol=1e-4)
    assert "score_ptrt" in df.columns


def test_predict_cli_with_images(trained, tmp_path, capsys):
    from PIL import Image

    from mmss_lib.cli import main

    root, run = trained
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "r.png")
    spec = {
        "product": {"text": "a small kitchen pan", "image_files": ["p.png"]},
        "reviews": [
            {"review_id": "a", "text": "great pan, good quality", "image_files": ["r.png"]},
            {"review_id": "b", "text": "bad", "image_files": []},
            {"review_id": "c", "text": "it works", "image_files": []},
        ],
    }
    (tmp_path / "in.json").write_text(json.dumps(spec))
    rc = main(
        [
            "predict",
            "--run",
            str(run),
            "--input",
            str(tmp_path / "in.json"),
            "--allow-random-weights",
            "--csv",
            str(tmp_path / "out.csv"),
        ]
    )
    assert rc == 0
    out = pd.read_csv(tmp_path / "out.csv")
    assert sorted(out["review_id"]) == ["a", "b", "c"] and out["rank"].tolist() == [1, 2, 3]
    assert "review_id" in capsys.readouterr().out


def test_predict_errors(trained, tmp_path):
    from mmss_lib.predict import predict

    root, run = trained
    with pytest.raises(CheckpointError, match="best.pt"):
        predict(tmp_path, {"text": "x"}, [{"text": "y"}])
    with pytest.raises(DataError, match="given twice"):
        predict(run, {"text": "x"}, [{"review_id": "a", "text": "y"}, {"review_id": "a", "text": "z"}])
    with pytest.raises(DataError, match="does not exist"):
        predict(run, {"text": "x"}, [{"text": "y", "image_files": [str(tmp_path / "missing.png")]}])
    with pytest.raises(ModelNotAvailableError, match="not the encoder"):
        predict(run, {"text": "x"}, [{"text": "y"}], text_model="all-MiniLM-L6-v2")


def test_predict_in_batches_equals_one_batch(trained, tmp_path, monkeypatch):
    """Reviews are encoded and scored ``batch_size`` at a time (memory flat in the number of
    reviews): every forward pass sees at most that many, and the scores equal one batch's."""
    from PIL import Image

    import mmss_lib.training.trainer
    from mmss_lib.data.mrhp import load_mrhp
    from mmss_lib.predict import predict

    root, run = trained
    products, reviews = load_mrhp(root / "data", "demo", "home", "test")
    pid = reviews["product_id"].value_counts().index[0]  # the test product with most reviews
    prod = products[products["product_id"] == pid].iloc[0]
    revs = reviews[reviews["product_id"] == pid]
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "r.png")
    items = [
        {"review_id": r.review_id, "text": r.text, "image_files": [str(tmp_path / "r.png")] if i % 3 == 1 else []}
        for i, r in enumerate(revs.itertuples())
    ]
    assert len(items) >= 5
    from conftest import counting_build_model

    seen: list[int] = []
    monkeypatch.setattr(
        mmss_lib.training.trainer, "build_model", counting_build_model(seen)
    )  # reviews per forward pass
    kw = {"allow_random_weights": True}
    one = predict(run, {"text": prod["text"], "image_files": []}, items, batch_size=len(items), **kw)
    assert seen == [len(items)]
    seen.clear()
    batched = predict(run, {"text": prod["text"], "image_files": []}, items, batch_size=2, **kw)
    assert seen == [2] * (len(items) // 2) + [1] * (len(items) % 2)
    pd.testing.assert_frame_equal(batched, one)  # the same ranking and scores, bit for bit
    with pytest.raises(DataError, match=r"batch_size=0 \(--batch-size\): expected an integer >= 1"):
        predict(run, {"text": "x"}, [{"text": "y"}], batch_size=0)
