"""Shared fixtures. Tests run offline, on CPU, with tiny random-init models."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


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
    words = ("the a and is it this to of for with not very good bad great poor quality product "
             "review price size color fits works broke love hate use one two battery screen "
             "fabric kitchen pan phone shirt cable light heavy small large").split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'") + words
    vocab += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    (d / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tok = BertTokenizerFast(vocab=str(d / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(d)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(d)
    return d
