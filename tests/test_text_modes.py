"""Text modes (cached / frozen / finetune): on-the-fly encoding equals the cached features, the
wrapper's parameters and checkpoints, and whole training runs that checkpoint and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmss_lib.features.loader import MRHPSplitData
from mmss_lib.features.store import feature_dirs, write_store
from mmss_lib.models.online_text import load_text_model, on_the_fly_text

DR = 12
TINY = {"d": 16, "n_heads": 2, "ff_dim": 32, "head_hidden": 8, "dropout": 0.1}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory, tiny_bert_dir):
    """A small demo category (no images) with region stores only, plus cached text stores made
    by the tiny BERT (for the equivalence test) in a second features root."""
    from mmss_lib.data.synthetic import make_demo
    from mmss_lib.features.extract import load_category_items
    from mmss_lib.features.text import TextEncoder

    root = tmp_path_factory.mktemp("textmodes")
    make_demo(root / "data", n_products=6, categories=["home"], images=False)
    products, reviews = load_category_items(root / "data", "demo", "home")
    rng = np.random.default_rng(0)

    def regions(n):
        k = int(rng.integers(0, 4)) if n else 0
        return {
            "x": rng.random((k, DR)),
            "boxes": np.tile([0.0, 0.0, 1.0, 1.0], (k, 1)),
            "image": np.zeros(k, np.int32),
        }

    for feats in ("regions_only", "cached"):
        dirs = feature_dirs(root / feats, "demo", "home")
        rng = np.random.default_rng(0)  # the same region features in both roots
        write_store(dirs["region_prd"], {p: regions(1) for p in products["product_id"]}, kind="region", dim=DR)
        write_store(dirs["region_rvw"], {r: regions(1) for r in reviews["review_id"]}, kind="region", dim=DR)
    enc = TextEncoder(str(tiny_bert_dir), max_len=512, device="cpu")
    dirs = feature_dirs(root / "cached", "demo", "home")
    for kind, frame, col in (("text_prd", products, "product_id"), ("text_rvw", reviews, "review_id")):
        xs = enc.encode(frame["text"].tolist())
        write_store(dirs[kind], {i: {"x": x} for i, x in zip(frame[col], xs, strict=True)}, kind="text", dim=enc.dim)
    return root


def test_regions_only_split_and_clear_errors(demo_root, tiny_bert_dir):
    from mmss_lib.errors import FeatureStoreError

    with pytest.raises(FeatureStoreError, match="text_prd not found"):
        MRHPSplitData.from_disk(demo_root / "data", "demo", "home", demo_root / "regions_only")
    split = MRHPSplitData.from_disk(demo_root / "data", "demo", "home", demo_root / "regions_only", keep_texts=True)[
        "train"
    ]
    assert split.text_dim is None and set(split.stores) == {"region_prd", "region_rvw"}
    with pytest.raises(FeatureStoreError, match="collate_tokens"):
        split.collate([0, 1])
    tok, _ = load_text_model(str(tiny_bert_dir))
    b = split.collate_tokens(np.arange(split.n), tok)
    # product texts tokenised once per product and gathered: same rows for reviews of one product
    same = split.product_ids[:, None] == split.product_ids[None, :]
    rows_equal = (b.pt_ids[:, None, :] == b.pt_ids[None, :, :]).all(-1).numpy()
    assert (rows_equal >= same).all() and b.pt is None and b.rt is None


def test_frozen_on_the_fly_equals_cached_features(demo_root, tiny_bert_dir):
    """Eq. 2 on the fly ([CLS] + word pieces, [SEP] masked) = the stored features of TextEncoder:
    the same MM-SS scores up to the stores' float16 rounding."""
    from mmss_lib.models.mmss import MMSS

    cached = MRHPSplitData.from_disk(demo_root / "data", "demo", "home", demo_root / "cached")["dev"]
    onfly = MRHPSplitData.from_disk(demo_root / "data", "demo", "home", demo_root / "regions_only", keep_texts=True)[
        "dev"
    ]
    tok, enc = load_text_model(str(tiny_bert_dir))
    torch.manual_seed(0)
    system = MMSS(text_dim=32, region_dim=DR, **TINY).eval()
    wrapped = on_the_fly_text(system, enc, tok, trainable=False).eval()
    idx = np.arange(cached.n)
    with torch.no_grad():
        a = system(cached.collate(idx)).score
        b = wrapped(onfly.collate_tokens(idx, tok, max_len=wrapped.max_len)).score
    assert torch.allclose(a, b, atol=2e-2), (a - b).abs().max()
    assert not torch.allclose(a, torch.zeros_like(a))


def test_wrapper_parameters_groups_and_state(tiny_bert_dir):
    from mmss_lib.models.mmss import MMSS

    tok, enc = load_text_model(str(tiny_bert_dir))
    system = MMSS(text_dim=32, region_dim=DR, **TINY)
    frozen = on_the_fly_text(system, enc, tok, trainable=False)
    assert not any(k.startswith("encoder") for k in frozen.state_dict())
    assert {id(p) for p in frozen.parameters()} == {id(p) for p in system.parameters()}
    assert frozen.subtasks == system.subtasks and frozen.feature_dims() == system.feature_dims()
    frozen.train()
    assert not frozen.text_encoder_module.training  # a frozen encoder stays in eval mode
    frozen.to(torch.float64)
    assert next(frozen.text_encoder_module.parameters()).dtype == torch.float64  # follows .to()

    _, enc2 = load_text_model(str(tiny_bert_dir))
    tuned = on_the_fly_text(MMSS(text_dim=32, region_dim=DR, **TINY), enc2, tok, trainable=True)
    groups = tuned.param_groups(lr=1e-4, lr_text=5e-5)
    assert [(g["name"], g["lr"]) for g in groups] == [("system", 1e-4), ("text_encoder", 5e-5)]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in enc2.parameters()}
    assert any(k.startswith("encoder.") for k in tuned.state_dict())


# ------------------------------------------------------------------------------------ trainer


def _cfg(tiny_bert_dir, mode, **kw):
    from mmss_lib.training.trainer import TrainConfig

    base = dict(
        system="mmss",
        model_options=TINY,
        epochs=2,
        batch_size=8,
        eval_batch_size=16,
        lr=3e-3,
        patience=10,
        seed=0,
        device="cpu",
        n_neg=2,
        threshold=1.0,
        max_text_len=32,
        text_mode=mode,
        text_model=str(tiny_bert_dir),
    )
    base.update(kw)
    return TrainConfig(**base)


def _strip_seconds(history):
    return [{k: v for k, v in h.items() if "seconds" not in k} for h in history]


def test_text_mode_config(tiny_bert_dir):
    from mmss_lib.errors import DataError
    from mmss_lib.training.trainer import TrainConfig, build_model, build_optimizer

    c = _cfg(tiny_bert_dir, "finetune")
    assert c.effective_text_mode == "finetune"
    assert TrainConfig.from_json(c.to_json()) == c
    # baselines read the encoder frozen unless listed in finetune_systems
    assert _cfg(tiny_bert_dir, "finetune", system="mcr").effective_text_mode == "frozen"
    assert _cfg(tiny_bert_dir, "finetune", system="mcr", finetune_systems=["mcr"]).effective_text_mode == "finetune"
    old = {k: v for k, v in TrainConfig(text_model=str(tiny_bert_dir)).to_json().items()}  # a run recorded with
    assert TrainConfig.from_json({**old, "fine_tune_text": True}).text_mode == "finetune"  # the retired switch
    from mmss_lib.training.run_folder import same_run

    assert same_run({"config": {**old, "fine_tune_text": False}, "run": {}}, old, {})
    with pytest.raises(DataError, match="text_mode"):
        TrainConfig(text_mode="online")
    with pytest.raises(DataError, match="text_model"):
        TrainConfig(text_mode="frozen")
    model = build_model(c, None, DR)
    opt = build_optimizer(model, c)
    assert [(g["name"], g["lr"]) for g in opt.param_groups] == [("system", c.lr), ("text_encoder", c.lr_text)]
    frozen = build_model(_cfg(tiny_bert_dir, "frozen"), None, DR)
    assert len(build_optimizer(frozen, c).param_groups) == 1


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_train_run_on_the_fly_checkpoints_and_resumes(mode, demo_root, tiny_bert_dir, tmp_path):
    """A whole run from region stores only: trains, writes last.pt/best.pt (the encoder inside
    only when fine-tuned), and 1 epoch resumed to 2 equals 2 straight epochs (the subtask
    objective and the SSP-Label state start in epoch 2)."""
    from mmss_lib.models.online_text import load_text_model
    from mmss_lib.training.trainer import train_run

    common = dict(
        data_root=demo_root / "data",
        dataset="demo",
        category="home",
        features_root=demo_root / "regions_only",
        progress=False,
    )
    straight = train_run(_cfg(tiny_bert_dir, mode), run_dir=tmp_path / "a", **common)
    # run b also checks ssp_record_seeds: seed 0 is not listed, so it writes no per-review SSP records
    train_run(_cfg(tiny_bert_dir, mode, epochs=1, ssp_record_seeds=[5]), run_dir=tmp_path / "b", **common)
    ck = torch.load(tmp_path / "b" / "last.pt", map_location="cpu", weights_only=True)
    assert ck["state"]["epoch"] == 1
    enc_keys = [k for k in ck["model"] if k.startswith("encoder.")]
    assert bool(enc_keys) == (mode == "finetune")
    resumed = train_run(_cfg(tiny_bert_dir, mode, ssp_record_seeds=[5]), run_dir=tmp_path / "b", **common)
    assert resumed["dev"] == straight["dev"] and resumed["test"] == straight["test"]
    assert resumed["epochs_run"] == straight["epochs_run"] == 2
    ha = json.loads((tmp_path / "a" / "history.json").read_text())
    hb = json.loads((tmp_path / "b" / "history.json").read_text())
    assert _strip_seconds(ha) == _strip_seconds(hb)
    assert ha[-1]["loss"] < ha[0]["loss"] or ha[-1]["dev"]["MAP"] != ha[0]["dev"]["MAP"]  # it trained
    best = torch.load(tmp_path / "a" / "best.pt", map_location="cpu", weights_only=True)
    assert best["text_dim"] == 32
    if mode == "finetune":  # the encoder moved away from its pretrained weights
        _, pretrained = load_text_model(str(tiny_bert_dir))
        w0 = pretrained.state_dict()["embeddings.word_embeddings.weight"]
        w1 = best["model"]["encoder.embeddings.word_embeddings.weight"]
        assert not torch.allclose(w0, w1)
    assert not (demo_root / "regions_only" / "demo" / "home" / "text_rvw").exists()
    assert len(list((tmp_path / "a" / "ssp").glob("epoch*.npz"))) == 2 and not (tmp_path / "b" / "ssp").exists()


# ------------------------------------------------------------------------------------ CUDA (skipped without a GPU)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_cuda_fp32_run_matches_cpu_and_bf16_agrees(mode, demo_root, tiny_bert_dir, tmp_path):
    """On the GPU: fp32 (amp off) and bf16 autocast runs of the same seed train with finite losses,
    and bf16's dev MAP is within 0.1 of fp32's (the dropout streams are the GPU's, so the CPU run
    is only a sanity reference: valid metrics, same epochs)."""
    from mmss_lib.training.trainer import train_run

    common = dict(
        data_root=demo_root / "data",
        dataset="demo",
        category="home",
        features_root=demo_root / "regions_only",
        progress=False,
    )
    cpu = train_run(_cfg(tiny_bert_dir, mode), run_dir=tmp_path / "cpu", **common)
    fp32 = train_run(_cfg(tiny_bert_dir, mode, device="cuda", amp=False), run_dir=tmp_path / "fp32", **common)
    bf16 = train_run(_cfg(tiny_bert_dir, mode, device="cuda", amp=True), run_dir=tmp_path / "bf16", **common)
    assert fp32["epochs_run"] == cpu["epochs_run"]
    for k in ("MAP", "NDCG@3", "NDCG@5", "MRR"):
        assert 0.0 <= fp32["dev"][k] <= 1.0 and 0.0 <= bf16["dev"][k] <= 1.0
    assert abs(bf16["dev"]["MAP"] - fp32["dev"]["MAP"]) <= 0.1
    hist = json.loads((tmp_path / "bf16" / "history.json").read_text())
    assert all(np.isfinite(h["loss"]) for h in hist)


@cuda
def test_cuda_wrapper_moves_frozen_encoder(tiny_bert_dir):
    from mmss_lib.models.mmss import MMSS

    tok, enc = load_text_model(str(tiny_bert_dir))
    m = on_the_fly_text(MMSS(text_dim=32, region_dim=DR, **TINY), enc, tok, trainable=False).to("cuda")
    assert next(m.text_encoder_module.parameters()).is_cuda and next(m.system.parameters()).is_cuda


def test_cli_text_mode_frozen(demo_root, tiny_bert_dir, tmp_path, capsys):
    from mmss_lib.model_selection.sweeps import cli_main

    rc = cli_main(
        [
            "--data-root",
            str(demo_root / "data"),
            "--dataset",
            "demo",
            "--categories",
            "home",
            "--features",
            str(demo_root / "regions_only"),
            "--runs",
            str(tmp_path),
            "--systems",
            "egcnn",
            "--seeds",
            "0",
            "--epochs",
            "1",
            "--max-text-len",
            "32",
            "--device",
            "cpu",
            "--no-progress",
            "--text-mode",
            "frozen",
            "--text-model",
            str(tiny_bert_dir),
        ]
    )
    assert rc == 0
    cfg = json.loads((tmp_path / "demo" / "home" / "egcnn" / "seed0" / "config.json").read_text())["config"]
    assert cfg["text_mode"] == "frozen" and cfg["text_model"] == str(tiny_bert_dir)


@pytest.mark.parametrize("mode", ["cached", "frozen", "finetune"])
def test_predict_and_case_study_on_runs_of_every_text_mode(mode, demo_root, tiny_bert_dir, tmp_path):
    """`mmss predict` and the case study score a run of any text mode like the trainer did: the
    test split's scores of the run come back (frozen/finetune: the run's own encoder reads the raw
    texts; cached: the text stores' encoder, here the same tiny BERT)."""
    import shutil

    import pandas as pd

    from mmss_lib.data.mrhp import load_mrhp
    from mmss_lib.evaluation.case_study import CaseStudy
    from mmss_lib.features.extract import load_category_items
    from mmss_lib.features.text import TextEncoder
    from mmss_lib.predict import predict
    from mmss_lib.training.trainer import train_run

    # region stores without regions (predict is given no images), text stores for the cached mode
    feats = tmp_path / "feats"
    dirs, src = feature_dirs(feats, "demo", "home"), feature_dirs(demo_root / "cached", "demo", "home")
    all_products, all_reviews = load_category_items(demo_root / "data", "demo", "home")
    none = {"x": np.zeros((0, DR)), "boxes": np.zeros((0, 4)), "image": np.zeros(0, np.int32)}
    write_store(dirs["region_prd"], {p: none for p in all_products["product_id"]}, kind="region", dim=DR)
    write_store(dirs["region_rvw"], {r: none for r in all_reviews["review_id"]}, kind="region", dim=DR)
    if mode == "cached":
        for kind in ("text_prd", "text_rvw"):
            shutil.copytree(src[kind], dirs[kind])
    run = tmp_path / "run"
    train_run(
        _cfg(tiny_bert_dir, mode, epochs=1),
        data_root=demo_root / "data",
        dataset="demo",
        category="home",
        features_root=feats,
        run_dir=run,
        progress=False,
    )
    ref = pd.read_csv(run / "scores_test.csv", dtype={"review_id": str, "product_id": str}).set_index("review_id")
    products, reviews = load_mrhp(demo_root / "data", "demo", "home", "test")
    pid = reviews["product_id"].value_counts().index[0]  # the test product with most reviews
    prod = products[products["product_id"] == pid].iloc[0]
    revs = reviews[reviews["product_id"] == pid]
    items = [{"review_id": r.review_id, "text": r.text, "image_files": []} for r in revs.itertuples()]
    encoder = TextEncoder(str(tiny_bert_dir), max_len=512, device="cpu") if mode == "cached" else None
    df = predict(run, {"text": prod["text"], "image_files": []}, items, encoder=encoder).set_index("review_id")
    # predict has no region features for the items (no images given); the demo here has none either
    np.testing.assert_allclose(df["score"].to_numpy(), ref.loc[df.index, "score"].to_numpy(), rtol=1e-4, atol=1e-4)
    cs = CaseStudy(demo_root / "data", feats, "demo", "home", figures_dir=tmp_path / "figs", tag="t", splits=("test",))
    got = cs.predict(run, "test", list(revs["review_id"]))
    np.testing.assert_allclose(got["score"], ref.loc[list(revs["review_id"]), "score"].to_numpy(), rtol=1e-4, atol=1e-4)
    assert "score_ptrt" in got
