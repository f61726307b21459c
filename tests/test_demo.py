"""mmss_lib.data.synthetic: determinism, format, images, and that every cue carries signal."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmss_lib.data.mrhp import SPLITS, load_mrhp
from mmss_lib.data.synthetic import CUE_COLUMNS, _png_bytes, cli_main, load_cues, make_demo
from mmss_lib.errors import DataError


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    make_demo(root, n_products=12, seed=3, categories=("clothing", "home"))
    return root


def test_same_seed_byte_identical(demo_root, tmp_path):
    make_demo(tmp_path, n_products=12, seed=3, categories=("clothing", "home"))
    assert _digest(demo_root) == _digest(tmp_path)
    other = tmp_path / "other"
    make_demo(other, n_products=12, seed=4, categories=("clothing",))
    a = (demo_root / "demo" / "clothing" / "clothing.rvw.train").read_bytes()
    assert a != (other / "demo" / "clothing" / "clothing.rvw.train").read_bytes()


def test_loads_with_expected_structure(demo_root):
    for cat in ("clothing", "home"):
        prods, revs = [], []
        for split in SPLITS:
            p, r = load_mrhp(demo_root, "demo", cat, split)
            assert set(r.product_id) <= set(p.product_id)
            prods.append(p)
            revs.append(r)
        p, r = pd.concat(prods), pd.concat(revs)
        assert len(p) == 12 and p.product_id.is_unique and r.review_id.is_unique
        sizes = r.groupby("product_id").size()
        assert sizes.min() >= 1 and sizes.max() <= 15
        assert r.label.between(0, 4).all()
        # reviews with and without local images; some URLs without a downloaded file is allowed
        n_files = r.image_files.map(len)
        assert (n_files > 0).any() and (n_files == 0).any()
        assert (n_files <= r.img_urls.map(len)).all()
        for files in r.image_files[n_files > 0]:
            for f in files:
                assert Path(f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_single_review_products_and_label_spread(tmp_path):
    make_demo(tmp_path, n_products=40, seed=0, categories=("electronics",), images=False)
    r = pd.concat([load_mrhp(tmp_path, "demo", "electronics", s)[1] for s in SPLITS])
    sizes = r.groupby("product_id").size()
    assert (sizes == 1).any()
    assert set(r.label) == {0, 1, 2, 3, 4}
    assert r[r.product_id.isin(sizes[sizes >= 5].index)].groupby("product_id").label.nunique().mean() >= 2.5
    assert not (tmp_path / "demo" / "electronics" / "images").exists()
    assert 200 <= len(r) <= 450


def _cues_with_labels(root: Path, category: str) -> pd.DataFrame:
    parts = []
    for split in SPLITS:
        cues = load_cues(root, category, split)
        rv = load_mrhp(root, "demo", category, split)[1]
        parts.append(cues.merge(rv[["review_id", "label"]], on="review_id", how="left", validate="1:1"))
    return pd.concat(parts, ignore_index=True)


def test_cues_files_layout(demo_root):
    for split in SPLITS:
        path = demo_root / "demo" / "home" / f"home.cues.{split}"
        raw = json.loads(path.read_text())
        assert list(raw) == list(CUE_COLUMNS)  # default orient="columns"
        rvw = json.loads((demo_root / "demo" / "home" / f"home.rvw.{split}").read_text())
        assert list(raw["review_id"]) == list(rvw["review_id"])  # same (non-contiguous) row index
        assert raw["review_id"] == rvw["review_id"]
        cues = load_cues(demo_root, "home", split)
        assert set(cues["match"]) <= {0, 1} and set(cues["has_images"]) <= {0, 1}
        assert cues["detail"].between(0, 3).all()
        img = cues["has_images"] == 1
        assert cues.loc[~img, ["agree", "img_match"]].isna().all().all()
        assert cues.loc[img, ["agree", "img_match"]].isin([0.0, 1.0]).all().all()
        # has_images: the review has image URLs (the label's has_images term)
        r = load_mrhp(demo_root, "demo", "home", split)[1].set_index("review_id").loc[cues["review_id"]]
        np.testing.assert_array_equal(
            cues["has_images"].to_numpy(), (r["img_urls"].map(len) > 0).astype(int).to_numpy()
        )
    assert not (demo_root / "demo" / "home" / "latent.csv").exists()


def test_cues_reproduce_the_label_formula_order(demo_root):
    """The label is a noisy monotone function of the cues (module docstring): the noise-free part
    s0 = 1.1 match + 0.9 detail/3 + has_images (0.6 agree + 0.6 img_match - 0.3) must rank-correlate
    strongly with the label (noise sd 0.45 against a range of about 3.5)."""
    lat = _cues_with_labels(demo_root, "home")
    s0 = (
        1.1 * lat["match"]
        + 0.9 * lat["detail"] / 3
        + lat["has_images"] * (0.6 * lat["agree"].fillna(0) + 0.6 * lat["img_match"].fillna(0) - 0.3)
    )
    assert s0.corr(lat["label"], method="spearman") > 0.6


def test_load_cues_errors(tmp_path, demo_root):
    with pytest.raises(DataError, match="no cues file"):
        load_cues(tmp_path, "home", "train")
    bad = tmp_path / "demo" / "home" / "home.cues.train"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"review_id": {"1": "a"}, "match": {"1": 1}}))
    with pytest.raises(DataError, match=r"home.cues.train: column\(s\) \['detail'"):
        load_cues(tmp_path, "home", "train")


def test_each_cue_carries_signal_none_decides(tmp_path):
    make_demo(tmp_path, n_products=150, seed=1, categories=("home",), images=False)
    lat = _cues_with_labels(tmp_path, "home")
    lat[["agree", "img_match"]] = lat[["agree", "img_match"]].fillna(0).astype(bool)
    for cue in ("match", "detail", "agree", "img_match"):
        corr = np.corrcoef(lat[cue].astype(float), lat["label"])[0, 1]
        assert 0.1 < corr < 0.8, (cue, corr)
        # no cue decides: for each value of the cue, labels still span at least 3 levels
        for _, g in lat.groupby(cue):
            assert g.label.nunique() >= 3, cue
    # image cues are independent of each other enough to be separable
    assert (lat.agree & ~lat.img_match).any() and (~lat.agree & lat.img_match).any()
    assert len(lat) == len(lat.review_id.unique()) and lat.label.notna().all()


def test_png_encoder_roundtrip():
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    for shape in [(5, 7), (5, 7, 3), (4, 3, 4)]:
        arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
        back = np.asarray(Image.open(io.BytesIO(_png_bytes(arr))))
        np.testing.assert_array_equal(back, arr)


def test_cli(tmp_path, capsys):
    assert (
        cli_main(
            ["--out", str(tmp_path), "--products-per-category", "6", "--categories", "home", "--no-images"],
            prog="mmss make-demo",
        )
        == 0
    )
    assert "home: train" in capsys.readouterr().out
    assert (tmp_path / "demo" / "home" / "home.rel.test").exists()


def test_image_weight_changes_labels_only(tmp_path):
    from mmss_lib.data.mrhp import load_mrhp
    from mmss_lib.data.synthetic import load_cues

    roots = {}
    for w in (0.0, 0.6, 1.5):
        roots[w] = tmp_path / f"w{w}"
        make_demo(roots[w], n_products=40, seed=2, categories=("home",), images=False, image_weight=w)
    base = tmp_path / "default"
    make_demo(base, n_products=40, seed=2, categories=("home",), images=False)
    assert _digest(base) == _digest(roots[0.6])  # 0.6 is the demo's own weight
    frames = {}
    for w, root in roots.items():
        _, rv = load_mrhp(root, "demo", "home", "train")
        cues = load_cues(root, "home", "train")
        frames[w] = rv.merge(cues, on="review_id")
    a, b, c = frames[0.0], frames[0.6], frames[1.5]
    assert list(a["review_id"]) == list(b["review_id"]) == list(c["review_id"])
    assert list(a["text"]) == list(b["text"]) and list(a["img_urls"]) == list(c["img_urls"])
    assert (a["label"] != c["label"]).any()
    # w = 0: the image cues carry nothing (the label is the same for either value of them, given the rest)
    img = a["has_images"] == 1
    for df in (a, c):
        df["good"] = df["agree"].fillna(0) + df["img_match"].fillna(0)
    gain0 = a[img].groupby("good")["label"].mean()
    gain15 = c[img].groupby("good")["label"].mean()
    assert gain15.loc[2] - gain15.loc[0] > gain0.loc[2] - gain0.loc[0] + 1.0


def test_split_fractions_and_bad_parameters(tmp_path):
    rep = make_demo(tmp_path, n_products=60, seed=0, categories=("home",), images=False, test_frac=0.5, dev_frac=0.25)
    r = rep["categories"]["home"]
    assert (r["test"]["products"], r["dev"]["products"], r["train"]["products"]) == (30, 8, 22)
    with pytest.raises(DataError, match="image_weight"):
        make_demo(tmp_path / "x", n_products=10, image_weight=float("nan"))
    with pytest.raises(DataError, match="test_frac"):
        make_demo(tmp_path / "x", n_products=10, test_frac=1.0)
