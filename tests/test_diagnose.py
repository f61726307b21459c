"""mmss_lib.diagnose: the interaction knock-out and gradient norms of a trained MM-SS run."""
from __future__ import annotations

import numpy as np
import pytest

from mmss_lib.errors import DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"d": 16, "n_heads": 2, "ff_dim": 32, "head_hidden": 8}


@pytest.fixture(scope="module")
def tiny_run(tiny_demo, tmp_path_factory):
    from mmss_lib.run_config import TrainConfig
    from mmss_lib.train import train_run

    run = tmp_path_factory.mktemp("diag") / "demo" / "home" / "mmss" / "seed0"
    cfg = TrainConfig(system="mmss", epochs=2, patience=5, batch_size=16, n_neg=3, lr=3e-3, device="cpu",
                      num_threads=1, model_options=TINY)
    train_run(cfg, data_root=tiny_demo / "data", dataset="demo", category="home",
              features_root=tiny_demo / "features", run_dir=run, progress=False)
    return run


def test_interaction_knockout(tiny_run, tiny_demo):
    import json

    from mmss_lib.diagnose import interaction_knockout

    ko = interaction_knockout(tiny_run, tiny_demo / "data", tiny_demo / "features", split="dev").set_index("knocked_out")
    assert list(ko.index) == ["none", "ptrt", "pvrv", "ptrv", "pvrt", "rtrv", "image interactions", "all"]
    # as trained: the trainer's own dev MAP of the best epoch
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert ko.loc["none", "MAP"] == pytest.approx(metrics["dev"]["MAP"], abs=1e-6)
    # every interaction at its mean: nothing about the review is left, every score is the same
    assert ko.loc["all", "score_std"] < 1e-5 < ko.loc["none", "score_std"]
    assert np.isfinite(ko["MAP"]).all() and (ko.loc["none", "drop"] == 0)


def test_gradient_norms(tiny_run, tiny_demo):
    from mmss_lib.diagnose import gradient_norms

    g = gradient_norms(tiny_run, tiny_demo / "data", tiny_demo / "features", n_batches=2).set_index("part")
    assert {"text projection", "region projection", "interaction pvrv", "fusion block rtrv"} <= set(g.index)
    assert (g["grad_norm"] > 0).all() and np.isfinite(g["ratio"]).all()


def test_not_an_mmss_run(tmp_path, tiny_demo):
    from mmss_lib.diagnose import interaction_knockout

    with pytest.raises(DataError, match="no trained run"):
        interaction_knockout(tmp_path, tiny_demo / "data", tiny_demo / "features")
