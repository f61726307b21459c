"""studies.diagnose: the interaction knock-out and gradient norms of a trained MM-SS run."""

from __future__ import annotations

import numpy as np
import pytest

from mmss_lib.errors import DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"d": 16, "n_heads": 2, "ff_dim": 32, "head_hidden": 8}


@pytest.fixture(scope="module")
def tiny_run(tiny_demo, tmp_path_factory):
    from mmss_lib.training.config import TrainConfig
    from mmss_lib.training.trainer import train_run

    run = tmp_path_factory.mktemp("diag") / "demo" / "home" / "mmss" / "seed0"
    cfg = TrainConfig(
        system="mmss",
        epochs=2,
        patience=5,
        batch_size=16,
        n_neg=3,
        lr=3e-3,
        device="cpu",
        num_threads=1,
        model_options=TINY,
    )
    train_run(
        cfg,
        data_root=tiny_demo / "data",
        dataset="demo",
        category="home",
        features_root=tiny_demo / "features",
        run_dir=run,
        progress=False,
    )
    return run


def test_interaction_knockout(tiny_run, tiny_demo):
    import json

    from studies.diagnose import interaction_knockout

    ko = interaction_knockout(tiny_run, tiny_demo / "data", tiny_demo / "features", split="dev").set_index(
        "knocked_out"
    )
    assert list(ko.index) == ["none", "ptrt", "pvrv", "ptrv", "pvrt", "rtrv", "image interactions", "all"]
    # as trained: the trainer's own dev MAP of the best epoch
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert ko.loc["none", "MAP"] == pytest.approx(metrics["dev"]["MAP"], abs=1e-6)
    # every interaction at its mean: nothing about the review is left, every score is the same
    assert ko.loc["all", "score_std"] < 1e-5 < ko.loc["none", "score_std"]
    assert np.isfinite(ko["MAP"]).all() and (ko.loc["none", "drop"] == 0)


def test_gradient_norms(tiny_run, tiny_demo):
    from studies.diagnose import gradient_norms

    g = gradient_norms(tiny_run, tiny_demo / "data", tiny_demo / "features", n_batches=2).set_index("part")
    assert {"text projection", "region projection", "interaction pvrv", "fusion block rtrv"} <= set(g.index)
    assert (g["grad_norm"] > 0).all() and np.isfinite(g["ratio"]).all()


def test_not_an_mmss_run(tmp_path, tiny_demo):
    from studies.diagnose import interaction_knockout

    with pytest.raises(DataError, match="no trained run"):
        interaction_knockout(tmp_path, tiny_demo / "data", tiny_demo / "features")


def _planted_cues(root, rng):
    """Rewrite the tiny demo's cue files: for every review with regions, ``agree`` = whether its
    centred text mean . u and centred region mean . w have the same sign (u, w: each side's first
    principal direction), a bilinear function of the two means; ``img_match`` at random."""
    import pandas as pd

    from mmss_lib.features.store import FeatureStore, feature_dirs

    stores = {k: FeatureStore(v) for k, v in feature_dirs(root / "features", "demo", "home").items()}
    paths = [root / "data" / "demo" / "home" / f"home.cues.{split}" for split in ("train", "dev", "test")]
    frames = [pd.read_json(p) for p in paths]
    means = {}
    for rid in pd.concat(frames)["review_id"]:
        v = stores["region_rvw"].get(rid)["x"].astype(float)
        if len(v):
            means[rid] = (stores["text_rvw"].get(rid)["x"].astype(float).mean(0), v.mean(0))
    t0, v0 = (np.mean([m[i] for m in means.values()], axis=0) for i in (0, 1))
    # u, w: each side's first principal direction (kept by any PCA of the probe)
    u, w = (
        np.linalg.svd(np.stack([m[i] for m in means.values()]) - c, full_matrices=False)[2][0]
        for i, c in ((0, t0), (1, v0))
    )
    for path, cues in zip(paths, frames, strict=True):
        cues["agree"] = [
            float(((means[r][0] - t0) @ u) * ((means[r][1] - v0) @ w) > 0) if r in means else np.nan
            for r in cues["review_id"]
        ]
        cues["img_match"] = [float(rng.random() < 0.5) if r in means else np.nan for r in cues["review_id"]]
        cues.to_json(path)


def test_cue_probes_find_a_planted_bilinear_cue(tmp_path):
    """The bilinear probe separates an ``agree`` that is a bilinear function of the review's text and
    region means (a probe that mixed up reviews or sides could not), and the random ``img_match``
    stays near chance for the cosine probe."""
    from conftest import write_tiny_demo

    from studies.diagnose import cue_probes

    root = write_tiny_demo(tmp_path, n_products=150)
    _planted_cues(root, np.random.default_rng(1))
    probes = cue_probes(root / "data", root / "features", category="home", split="dev").set_index("cue")
    assert list(probes.index) == ["img_match", "agree"]
    assert probes.loc["agree", "n_train"] > 400 and probes.loc["agree", "n_eval"] > 100
    assert probes.loc["agree", "auc"] > 0.8, probes  # a probe that mixed up reviews: about 0.5
    assert 0.2 < probes.loc["img_match", "auc"] < 0.8, probes


def test_cue_probes_need_cue_files(tmp_path, tiny_demo):
    from studies.diagnose import cue_probes

    with pytest.raises(DataError, match="no cue file"):
        cue_probes(tmp_path, tiny_demo / "features", category="home")
