"""Import of bottom-up .npz / MCR .pth features, and refusal of pickles that would run code."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from mmss_lib.errors import DataError
from mmss_lib.features.importers import cli_main, import_features, safe_load_pth
from mmss_lib.features.store import FeatureStore, read_regions

DIM = 16


def _record(rng, n, h=480, w=640):
    x1y1 = rng.random((n, 2)) * [w / 2, h / 2]
    bbox = np.c_[x1y1, x1y1 + rng.random((n, 2)) * [w / 2, h / 2]]
    return {
        "x": rng.random((n, DIM)).astype(np.float32),
        "bbox": bbox.astype(np.float32),
        "num_bbox": np.int64(n),
        "image_h": np.int64(h),
        "image_w": np.int64(w),
    }


@pytest.fixture
def records():
    rng = np.random.default_rng(0)
    return {"p1": [_record(rng, 10), _record(rng, 12, 100, 50)], "p2": [_record(rng, 40)]}


def _check_store(store, records):
    for item, recs in records.items():
        got = store.get(item)
        np.testing.assert_array_equal(got["x"], np.concatenate([r["x"] for r in recs]).astype(np.float16))
        exp = np.concatenate([r["bbox"] / np.array([r["image_w"], r["image_h"]] * 2, dtype=np.float64) for r in recs])
        np.testing.assert_allclose(got["boxes"], exp, rtol=1e-6)
        np.testing.assert_array_equal(got["image"], np.concatenate([[j] * len(r["x"]) for j, r in enumerate(recs)]))


def test_import_mcr_pth_round_trip(tmp_path, records):
    for item, recs in records.items():
        (tmp_path / "src" / item).mkdir(parents=True)
        torch.save(recs, tmp_path / "src" / item / f"{item}.pth")
    rep = import_features(tmp_path / "src", tmp_path / "store", item_ids=["p1", "p0", "p2"])
    assert rep["items"] == 3 and rep["items_without_features"] == 1 and rep["regions"] == 62
    store = FeatureStore(tmp_path / "store")
    assert store.dim == DIM and store.ids == ["p1", "p0", "p2"]
    assert store.manifest["source_format"] == "MCR packed .pth" and store.manifest["random_weights"] is False
    _check_store(store, records)
    x, b = read_regions(store, "p0")
    assert x.shape == (0, DIM) and b.shape == (0, 4)
    assert len(read_regions(store, "p2")[0]) == 32  # MCR cap per image


def test_import_plain_pickle_pth(tmp_path, records):
    (tmp_path / "src" / "p1").mkdir(parents=True)
    with open(tmp_path / "src" / "p1" / "p1.pth", "wb") as f:
        pickle.dump(records["p1"], f, protocol=2)
    import_features(tmp_path / "src", tmp_path / "store")
    _check_store(FeatureStore(tmp_path / "store"), {"p1": records["p1"]})


def test_import_bottom_up_npz_cli(tmp_path, records, capsys):
    for item, recs in records.items():
        (tmp_path / "src" / item).mkdir(parents=True)
        for j, r in enumerate(recs):
            np.savez(tmp_path / "src" / item / f"img{j:02d}.npz", **r)
    assert cli_main(["--from", str(tmp_path / "src"), "--out", str(tmp_path / "store")], prog="t") == 0
    assert "imported 2 items" in capsys.readouterr().out
    store = FeatureStore(tmp_path / "store")
    assert store.manifest["source_format"] == "bottom-up .npz"
    _check_store(store, records)


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling would create the marker file


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pth_is_refused(tmp_path, writer):
    marker = tmp_path / "pwned.txt"
    payload = [{"x": np.zeros((1, DIM), np.float32), "evil": _Evil(marker)}]
    f = tmp_path / "src" / "p1" / "p1.pth"
    f.parent.mkdir(parents=True)
    if writer == "torch":
        torch.save(payload, f)
    else:
        f.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError, match=r"p1\.pth: refused: .*open.*arbitrary code"):
        safe_load_pth(f)
    with pytest.raises(DataError, match="refused"):
        import_features(tmp_path / "src", tmp_path / "store")
    assert not marker.exists()
    assert not (tmp_path / "store" / "manifest.json").exists()


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda r: r.update(x=np.full_like(r["x"], np.nan)), "NaN"),
        (lambda r: r.update(x=r["x"][:, :5]), r"'x' has shape \(10, 5\), expected \(N, 16\)"),
        (lambda r: r.update(bbox=r["bbox"][:, :3]), "'bbox' has shape"),
        (lambda r: r.update(num_bbox=np.int64(3)), "'num_bbox' is 3"),
        (lambda r: r.pop("image_w"), "'image_w' missing"),
    ],
)
def test_bad_npz_is_refused_naming_item(tmp_path, records, bad, match):
    recs = [dict(r) for r in records["p1"]]
    (tmp_path / "src" / "ok").mkdir(parents=True)
    np.savez(tmp_path / "src" / "ok" / "a.npz", **records["p2"][0])
    bad(recs[0])
    (tmp_path / "src" / "p1").mkdir(parents=True)
    np.savez(tmp_path / "src" / "p1" / "a.npz", **recs[0])
    with pytest.raises(DataError, match=r"item 'p1': .*a\.npz: .*" + match):
        import_features(tmp_path / "src", tmp_path / "store", fmt="npz")


def test_npz_with_pickled_object_is_refused(tmp_path):
    (tmp_path / "src" / "p1").mkdir(parents=True)
    np.savez(tmp_path / "src" / "p1" / "a.npz", x=np.array([_Evil(tmp_path / "m")], dtype=object))
    with pytest.raises(DataError, match=r"a\.npz: not a readable \.npz"):
        import_features(tmp_path / "src", tmp_path / "store", fmt="npz")
    assert not (tmp_path / "m").exists()
