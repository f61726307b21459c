"""MRHPSplitData: gathering Batches from memory-mapped feature stores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mmss_lib.errors import DataError, FeatureStoreError
from mmss_lib.features.loader import MRHPSplitData, ReadCaps, pad_rows
from mmss_lib.features.store import write_store

DT, DR = 6, 10


def _text(n, v):
    return {"x": np.full((n, DT), v, dtype=np.float32)}


def _regions(per_image, v):
    n = sum(per_image)
    return {
        "x": np.full((n, DR), v, dtype=np.float32) + np.arange(n)[:, None],
        "boxes": np.tile(np.array([0.1, 0.2, 0.3, 0.4], np.float32), (n, 1)),
        "image": np.repeat(np.arange(len(per_image)), per_image).astype(np.int32),
    }


@pytest.fixture
def split(tmp_path):
    products = pd.DataFrame({"product_id": ["P1", "P2"], "text": ["good shirt", "phone"]})
    reviews = pd.DataFrame(
        {
            "review_id": ["P1-0", "P1-1", "P2-0"],
            "product_id": ["P1", "P1", "P2"],
            "label": [3, 0, 1],
            "text": ["great", "bad", "ok"],
        }
    )
    stores = {
        "text_prd": write_store(tmp_path / "text_prd", {"P1": _text(4, 1.0), "P2": _text(2, 2.0)}, kind="text"),
        "text_rvw": write_store(
            tmp_path / "text_rvw", {"P1-0": _text(3, 3.0), "P1-1": _text(1, 4.0), "P2-0": _text(5, 5.0)}, kind="text"
        ),
        # P2 has no images; P1 has two images of 3 and 2 regions
        "region_prd": write_store(
            tmp_path / "region_prd", {"P1": _regions([3, 2], 1.0), "P2": _regions([], 0.0)}, kind="region", dim=DR
        ),
        "region_rvw": write_store(
            tmp_path / "region_rvw",
            {"P1-0": _regions([2], 7.0), "P1-1": _regions([], 0.0), "P2-0": _regions([], 0.0)},
            kind="region",
            dim=DR,
        ),
    }
    return products, reviews, stores


def test_collate_shapes_masks_and_values(split):
    products, reviews, stores = split
    data = MRHPSplitData(reviews, products, stores, training=True)
    assert data.n == 3 and data.text_dim == DT and data.region_dim == DR
    assert data.product_codes.tolist() == [0, 0, 1]
    b = data.collate([2, 0])
    assert b.pt.dtype == torch.float32 and b.pv.dtype == torch.float32
    assert b.pt.shape == (2, 4, DT) and b.pt_mask.sum(1).tolist() == [2, 4]
    assert b.rt.shape == (2, 5, DT) and b.rt_mask.sum(1).tolist() == [5, 3]
    assert torch.all(b.rt[1, :3] == 3.0) and torch.all(b.rt[1, 3:] == 0.0)
    # product without images: an all-False mask row; regions of P1 in stored order
    assert b.pv.shape == (2, 5, DR) and b.pv_mask.sum(1).tolist() == [0, 5]
    assert b.pv[1, :, 0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert b.pv_boxes.shape == (2, 5, 4)
    assert b.rv.shape == (2, 2, DR) and b.rv_mask.sum(1).tolist() == [0, 2]
    assert b.label.tolist() == [1.0, 3.0] and b.index.tolist() == [2, 0] and b.product.tolist() == [1, 0]


def test_all_empty_regions_keep_one_padded_column(split):
    products, reviews, stores = split
    b = MRHPSplitData(reviews, products, stores).collate([1, 2])
    assert b.rv.shape == (2, 1, DR) and not b.rv_mask.any()
    assert b.index.tolist() == [-1, -1]  # not the training split: no SSP index


def test_read_caps(split):
    products, reviews, stores = split
    data = MRHPSplitData(
        reviews, products, stores, caps=ReadCaps(max_text_len=2, max_regions_per_image=1, max_regions_per_item=8)
    )
    b = data.collate([0])
    assert b.pt.shape[1] == 2 and b.rt_mask.sum().item() == 2
    # first region of each of P1's two images: rows 0 and 3
    assert b.pv_mask.sum().item() == 2 and b.pv[0, :, 0].tolist() == [1.0, 4.0]


def test_product_read_once_per_batch(split, monkeypatch):
    products, reviews, stores = split
    data = MRHPSplitData(reviews, products, stores)
    calls = []
    orig = data._text
    monkeypatch.setattr(data, "_text", lambda kind, item: calls.append((kind, item)) or orig(kind, item))
    data.collate([0, 1, 0])
    assert sorted(c for c in calls if c[0] == "text_prd") == [("text_prd", "P1")]


def test_missing_item_names_store_and_item(split, tmp_path):
    products, reviews, stores = split
    stores = dict(stores)
    stores["text_rvw"] = write_store(tmp_path / "partial", {"P1-0": _text(1, 0.0)}, kind="text")
    with pytest.raises(FeatureStoreError, match=r"text_rvw.*'P1-1'"):
        MRHPSplitData(reviews, products, stores)


def test_bad_label_and_index(split):
    products, reviews, stores = split
    bad = reviews.assign(label=[3, 9, 1])
    with pytest.raises(DataError, match="P1-1"):
        MRHPSplitData(bad, products, stores)
    data = MRHPSplitData(reviews, products, stores)
    with pytest.raises(DataError, match="out of range"):
        data.collate([5])


def test_iter_batches_covers_all(split):
    products, reviews, stores = split
    data = MRHPSplitData(reviews, products, stores)
    seen = [i for idx, b in data.iter_batches(batch_size=2) for i in idx.tolist()]
    assert seen == [0, 1, 2]


def test_collate_tokens(split, tiny_bert_dir):
    from transformers import AutoTokenizer

    products, reviews, stores = split
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    data = MRHPSplitData(reviews, products, stores, keep_texts=True)
    b = data.collate_tokens([0, 2], tok)
    assert b.pt is None and b.rt is None
    assert b.pt_ids.shape == b.pt_mask.shape and b.pt_ids.dtype == torch.int64
    assert b.pt_ids[0, 0].item() == tok.cls_token_id
    assert b.rv_mask.sum(1).tolist() == [2, 0]
    with pytest.raises(DataError, match="keep_texts"):
        MRHPSplitData(reviews, products, stores).collate_tokens([0], tok)


def test_pad_rows_min_len():
    x, m = pad_rows([np.zeros((0, 3)), np.zeros((0, 3))], 3)
    assert x.shape == (2, 1, 3) and not m.any()
