"""Shared fixtures. Tests run offline, on CPU, with tiny random-init models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# Under pytest-xdist (`make test`: one worker per core) every worker, and every process it starts
# (notebook kernels, `mmss` subprocesses, worker pools), computes on ONE thread: two workers with
# torch's default of one thread per core oversubscribe the cores, and OpenMP's spinning threads
# then made the suite's notebooks 3-4x slower than alone. Set before torch is first imported.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_var] = "1"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Modules with slow tests first, those with the most slow tests first (the longest runs start at
    once instead of leaving one worker idle at the end); a module's tests stay together, in their
    order. `make test` hands whole modules to the xdist workers (``--dist loadscope``), so every
    module-scoped fixture (a trained run, extracted features, a Ray instance) is built once."""
    modules: dict = {}
    for i, item in enumerate(items):
        key = item.nodeid.split("::", 1)[0]
        slow = 1 if item.get_closest_marker("slow") else 0
        first, n_slow = modules.get(key, (i, 0))
        modules[key] = (first, n_slow + slow)
    items.sort(key=lambda it: (-modules[it.nodeid.split("::", 1)[0]][1], modules[it.nodeid.split("::", 1)[0]][0]))


def _shared_dir() -> Path:
    env = os.environ.get("MMSS_SHARED")
    return Path(env) if env else REPO.parent / "shared"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _shared_dir()


@pytest.fixture(scope="session")
def amazon2018_sample(shared_dir) -> Path:
    """The real Amazon Review Data 2018 sample (../shared/data/amazon2018); skipped when absent."""
    d = shared_dir / "data" / "amazon2018"
    if not (d / "Magazine_Subscriptions_5.json.gz").exists():
        pytest.skip(f"real Amazon 2018 sample not found at {d} (set MMSS_SHARED to the shared folder)")
    return d


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny random-init BERT (hidden 32, 2 layers, 4 heads) with a small word-piece vocab, saved
    as a local folder that `AutoModel.from_pretrained` / `AutoTokenizer.from_pretrained` load."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny-bert")
    words = (
        "the a and is it this to of for with not very good bad great poor quality product "
        "review price size color fits works broke love hate use one two battery screen "
        "fabric kitchen pan phone shirt cable light heavy small large"
    ).split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'") + words
    vocab += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    (d / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tok = BertTokenizerFast(vocab=str(d / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(d)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(cfg).save_pretrained(d)
    return d


TINY_DT, TINY_DR = 8, 12  # feature sizes of the tiny_demo stores


def write_tiny_demo(root: Path, *, n_products: int = 8, images: bool = False) -> Path:
    """A tiny demo category "home" under ``root / "data"`` and random-feature stores of all its items
    under ``root / "features"`` (TINY_DT-d tokens, four per text; 0-2 TINY_DR-d regions per item),
    the same for the same arguments. The one set-up of the tests that train tiny models on disk."""
    import numpy as np

    from mmss_lib.data.mrhp import load_mrhp
    from mmss_lib.data.synthetic import make_demo
    from mmss_lib.features.store import feature_dirs, write_store

    make_demo(root / "data", n_products=n_products, categories=("home",), images=images)
    rng = np.random.default_rng(0)
    items = {k: {} for k in ("text_prd", "text_rvw", "region_prd", "region_rvw")}
    for split in ("train", "dev", "test"):
        products, reviews = load_mrhp(root / "data", "demo", "home", split)
        for side, ids in (("prd", products["product_id"]), ("rvw", reviews["review_id"])):
            for i in ids:
                items[f"text_{side}"][i] = {"x": rng.normal(size=(4, TINY_DT))}
                k = int(rng.integers(0, 3))
                items[f"region_{side}"][i] = {
                    "x": rng.random((k, TINY_DR)),
                    "boxes": np.tile([0, 0, 1, 1], (k, 1)),
                    "image": np.zeros(k, np.int32),
                }
    for kind, path in feature_dirs(root / "features", "demo", "home").items():
        write_store(path, items[kind], kind=kind.split("_")[0], dim=TINY_DR if "region" in kind else TINY_DT)
    return root


def counting_build_model(seen: list):
    """``mmss_lib.training.trainer.build_model`` wrapped: every forward pass of a model it builds appends its
    number of reviews to ``seen`` (patch it in to check how predict batches)."""
    import mmss_lib.training.trainer

    build = mmss_lib.training.trainer.build_model

    def counting_build(*a, **kw):
        model = build(*a, **kw)
        model.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
        return model

    return counting_build


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """A tiny demo category on disk (8 products, no images) with random-feature stores of
    TINY_DT-d tokens and TINY_DR-d regions (:func:`write_tiny_demo`), shared read-only."""
    return write_tiny_demo(tmp_path_factory.mktemp("tiny_demo"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module of tiny models / tensors: fastest, and no spinning on
    a shared CPU (use as ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
