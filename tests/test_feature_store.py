"""Feature store: round trips, resume after an interrupted run, read-time caps and masks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmss_lib.errors import FeatureStoreError
from mmss_lib.features.store import (
    FeatureStore,
    FeatureStoreWriter,
    cap_regions,
    feature_dirs,
    pad_items,
    read_regions,
    read_text,
    write_store,
)


def _text_items(rng, n=7, dim=8):
    return {f"t{i}": {"x": rng.standard_normal((int(rng.integers(1, 9)), dim))} for i in range(n)}


def _region_items(rng, dim=16):
    items = {}
    for i, counts in enumerate([[3, 2], [], [40, 5, 100], [1]]):
        n = sum(counts)
        items[f"r{i}"] = {
            "x": rng.standard_normal((n, dim)),
            "boxes": np.sort(rng.random((n, 4)), axis=1).astype(np.float32),
            "image": np.repeat(np.arange(len(counts)), counts),
        }
    return items


def test_feature_dirs():
    d = feature_dirs("/f", "amazon", "home")
    assert set(d) == {"text_prd", "text_rvw", "region_prd", "region_rvw"}
    assert str(d["region_rvw"]) == "/f/amazon/home/region_rvw"


def test_text_round_trip_across_shards(tmp_path):
    rng = np.random.default_rng(0)
    items = _text_items(rng)
    store = write_store(tmp_path / "t", items, kind="text", manifest={"encoder": "x"}, shard_size=3)
    assert len(store.manifest["shards"]) == 3
    assert store.dim == 8 and len(store) == 7 and store.ids == list(items)
    assert "t3" in store and "nope" not in store
    assert store.manifest["encoder"] == "x" and store.manifest["n_items"] == 7
    for k, v in items.items():
        got = store.get(k)["x"]
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, v["x"].astype(np.float16))
        assert isinstance(got, np.memmap) or isinstance(got.base, np.memmap)
    np.testing.assert_array_equal(read_text(store, "t0", max_len=1), store.get("t0")["x"][:1])
    with pytest.raises(FeatureStoreError, match="'nope'"):
        store.get("nope")
    with pytest.raises(FeatureStoreError, match="read_regions"):
        read_regions(store, "t0")


def test_region_round_trip_and_empty_item(tmp_path):
    rng = np.random.default_rng(1)
    items = _region_items(rng)
    store = write_store(tmp_path / "r", items, kind="region", shard_size=2)
    for k, v in items.items():
        got = store.get(k)
        np.testing.assert_array_equal(got["x"], v["x"].astype(np.float16))
        np.testing.assert_array_equal(got["boxes"], v["boxes"])
        np.testing.assert_array_equal(got["image"], v["image"])
    empty = store.get("r1")
    assert empty["x"].shape == (0, 16) and empty["boxes"].shape == (0, 4)
    x, b = read_regions(store, "r1")
    assert x.shape == (0, 16) and b.shape == (0, 4)


def test_read_time_caps_match_reference(tmp_path):
    rng = np.random.default_rng(2)
    items = _region_items(rng)
    store = write_store(tmp_path / "r", items, kind="region")
    # r2: images of 40, 5, 100 regions -> 32 + 5 + 32 = 69 (< 128)
    x, b = read_regions(store, "r2")
    ref = np.r_[np.arange(32), 40 + np.arange(5), 45 + np.arange(32)]
    assert len(x) == 69
    np.testing.assert_array_equal(x, items["r2"]["x"][ref].astype(np.float16))
    np.testing.assert_array_equal(b, items["r2"]["boxes"][ref])
    x, _ = read_regions(store, "r2", max_per_image=100, max_per_item=128)
    np.testing.assert_array_equal(x, items["r2"]["x"][:128].astype(np.float16))
    x, _ = read_regions(store, "r2", max_per_image=None, max_per_item=None)
    assert len(x) == 145


@pytest.mark.parametrize("seed", range(5))
def test_cap_regions_against_loop(seed):
    rng = np.random.default_rng(seed)
    image = np.sort(rng.integers(0, 6, size=int(rng.integers(0, 60))))
    per_img, per_item = int(rng.integers(1, 10)), int(rng.integers(1, 40))
    ref, count = [], {}
    for r, i in enumerate(image):
        count[i] = count.get(i, 0) + 1
        if count[i] <= per_img:
            ref.append(r)
    assert cap_regions(image, per_img, per_item).tolist() == ref[:per_item]


def test_pad_items_masks():
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    p, m = pad_items([a, np.zeros((0, 2)), a[:1]])
    assert p.shape == (3, 3, 2) and p.dtype == np.float32
    assert m.tolist() == [[True] * 3, [False] * 3, [True, False, False]]
    np.testing.assert_array_equal(p[0], a)
    assert not p[1].any() and not p[2, 1:].any()
    p, m = pad_items([np.zeros((0, 2)), np.zeros((0, 2))])
    assert p.shape == (2, 1, 2) and not m.any()  # min_len 1 keeps shapes valid
    p, m = pad_items([a], max_len=2)
    assert p.shape == (1, 2, 2) and m.all()


def test_resume_after_interrupted_run(tmp_path):
    rng = np.random.default_rng(3)
    items = list(_text_items(rng, n=10).items())
    chunks = [items[i : i + 4] for i in range(0, 10, 4)]
    path = tmp_path / "t"
    w = FeatureStoreWriter(path, kind="text", dim=8, shard_size=4, plan={"encoder": "a"})
    w.write_shard(0, chunks[0])
    # a crash while writing shard 1: a half-written hidden temp directory is left behind
    half = path / ".shard_00001.crash"
    half.mkdir()
    (half / "ids.json").write_text("[")
    with pytest.raises(FeatureStoreError, match="manifest.json missing"):
        FeatureStore(path)  # unfinished: refused
    # re-run: finished shard 0 is kept (not recomputed), the rest is written
    w2 = FeatureStoreWriter(path, kind="text", dim=8, shard_size=4, plan={"encoder": "a"})
    assert not half.exists()
    computed = []
    for k, chunk in enumerate(chunks):
        if w2.has_shard(k, [i for i, _ in chunk]):
            continue
        computed.append(k)
        w2.write_shard(k, chunk)
    w2.close()
    assert computed == [1, 2]
    store = FeatureStore(path)
    assert store.ids == [i for i, _ in items]
    for k, v in items:
        np.testing.assert_array_equal(store.get(k)["x"], v["x"].astype(np.float16))


def test_resume_with_other_settings_is_refused(tmp_path):
    FeatureStoreWriter(tmp_path / "t", kind="text", dim=8, plan={"encoder": "a"})
    with pytest.raises(FeatureStoreError, match="encoder"):
        FeatureStoreWriter(tmp_path / "t", kind="text", dim=8, plan={"encoder": "b"})
    FeatureStoreWriter(tmp_path / "t", kind="text", dim=8, plan={"encoder": "b"}, overwrite=True)


def test_bad_items_are_refused(tmp_path):
    w = FeatureStoreWriter(tmp_path / "r", kind="region", dim=4)
    with pytest.raises(FeatureStoreError, match="'bad'.*NaN"):
        w.write_shard(0, [("bad", {"x": np.full((1, 4), np.nan), "boxes": np.zeros((1, 4)), "image": [0]})])
    with pytest.raises(FeatureStoreError, match=r"'bad'.*shape \(2, 3\)"):
        w.write_shard(0, [("bad", {"x": np.zeros((2, 3))})])
    with pytest.raises(FeatureStoreError, match="'bad'.*normalised"):
        w.write_shard(0, [("bad", {"x": np.zeros((1, 4)), "boxes": np.full((1, 4), 5.0), "image": [0]})])
    with pytest.raises(FeatureStoreError, match="'bad'.*float16"):
        w.write_shard(0, [("bad", {"x": np.full((1, 4), 1e6), "boxes": np.zeros((1, 4)), "image": [0]})])
    assert not any((tmp_path / "r").glob("shard_*"))


def test_corrupt_shard_is_reported(tmp_path):
    store = write_store(tmp_path / "t", {"a": {"x": np.ones((2, 4))}}, kind="text")
    np.save(store.path / "shard_00000" / "offsets.npy", np.array([0, 5]))
    with pytest.raises(FeatureStoreError, match="shard_00000.*inconsistent"):
        FeatureStore(tmp_path / "t")
    (tmp_path / "t" / "manifest.json").write_text("{not json")
    with pytest.raises(FeatureStoreError, match="corrupt manifest"):
        FeatureStore(tmp_path / "t")


def test_manifest_is_json_and_written_last(tmp_path):
    w = FeatureStoreWriter(tmp_path / "t", kind="text", dim=2, shard_size=1, manifest={"encoder": "e"})
    w.add("a", np.ones((1, 2)))
    assert (tmp_path / "t" / "shard_00000").is_dir()
    assert not (tmp_path / "t" / "manifest.json").exists()
    w.close()
    m = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert m["kind"] == "text" and m["dim"] == 2 and m["n_rows"] == 1 and "created" in m


# ---- the extraction driver writes and resumes the four stores (data layer replaced by frames) ----


@pytest.fixture
def tiny_category(tmp_path, monkeypatch):
    import pandas as pd
    from PIL import Image

    from mmss_lib.features import extract

    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray((rng.random((40 + 10 * k, 50, 3)) * 255).astype(np.uint8)).save(img_dir / f"{k}.png")
    (img_dir / "bad.jpg").write_bytes(b"garbage")
    products = pd.DataFrame(
        {
            "product_id": ["p1", "p2"],
            "text": ["a good shirt", "kitchen pan"],
            "image_files": [[str(img_dir / "0.png"), str(img_dir / "1.png")], []],
        }
    )
    reviews = pd.DataFrame(
        {
            "review_id": [f"r{i}" for i in range(5)],
            "product_id": ["p1"] * 3 + ["p2"] * 2,
            "text": ["love it", "", None, "broke after one use", "great"],
            "image_files": [[str(img_dir / "2.png")], [], [str(img_dir / "bad.jpg")], [], []],
        }
    )
    monkeypatch.setattr(extract, "load_category_items", lambda root, ds, cat: (products, reviews))
    return tmp_path


def _run(root, bert, **kw):
    from mmss_lib.features.extract import extract_category

    return extract_category(
        root / "data",
        "demo",
        "home",
        root / "feats",
        text_model=str(bert),
        allow_random_weights=True,
        detector_min_size=64,
        detector_max_size=64,
        image_batch_size=2,
        progress=False,
        shard_size=2,
        device="cpu",
        detector_options={"min_boxes": 10, "max_boxes": 12},
        **kw,
    )


def test_extract_category_writes_and_resumes(tiny_category, tiny_bert_dir):
    rep = _run(tiny_category, tiny_bert_dir)
    dirs = feature_dirs(tiny_category / "feats", "demo", "home")
    assert rep["random_weights"] is True
    assert rep["text"]["text_rvw"]["empty"] == 2 and rep["images"]["region_rvw"]["bad_images"] == 1
    t = FeatureStore(dirs["text_rvw"])
    assert t.ids == [f"r{i}" for i in range(5)] and t.dim == 32 and t.get("r1")["x"].shape == (1, 32)
    assert t.manifest["encoder"] == str(tiny_bert_dir) and t.manifest["weights_fingerprint"]
    r = FeatureStore(dirs["region_prd"])
    assert r.manifest["random_weights"] is True and r.dim == 2048
    assert set(r.get("p1")["image"].tolist()) == {0, 1} and r.get("p2")["x"].shape == (0, 2048)
    assert FeatureStore(dirs["region_rvw"]).get("r2")["x"].shape == (0, 2048)  # undecodable image
    before = (dirs["region_rvw"] / "shard_00000" / "x.npy").stat().st_mtime_ns
    x_before = np.array(FeatureStore(dirs["region_rvw"]).get("r0")["x"])
    # a complete store with the same settings is left alone
    rep2 = _run(tiny_category, tiny_bert_dir)
    assert all(e["shards_written"] == 0 for e in rep2["stores"].values())
    # crash simulation: lose the manifest and the last shard of region_rvw; only that shard is redone
    (dirs["region_rvw"] / "manifest.json").unlink()
    import shutil

    shutil.rmtree(dirs["region_rvw"] / "shard_00002")
    rep3 = _run(tiny_category, tiny_bert_dir, stores=("region_rvw",))
    assert rep3["stores"]["region_rvw"]["shards_written"] == 1
    assert rep3["stores"]["region_rvw"]["shards_skipped"] == 2
    assert (dirs["region_rvw"] / "shard_00000" / "x.npy").stat().st_mtime_ns == before
    s = FeatureStore(dirs["region_rvw"])
    assert s.ids == [f"r{i}" for i in range(5)]
    np.testing.assert_array_equal(s.get("r0")["x"], x_before)
    # other settings -> refused instead of mixing features
    with pytest.raises(FeatureStoreError, match="other settings"):
        _run(tiny_category, tiny_bert_dir, stores=("text_rvw",), text_max_len=8)
