"""mmss_lib.data.mrhp: loader/writer round trips (Amazon and Lazada variants), bad input, stats."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mmss_lib.data import mrhp as data
from mmss_lib.data.mrhp import (
    bin_votes,
    dataset_stats,
    default_threshold,
    load_mrhp,
    parse_img_urls,
    split_by_product,
    split_file,
    stats_markdown,
    write_mrhp,
)
from mmss_lib.errors import DataError


def _frames():
    products = pd.DataFrame(
        {
            "product_id": ["P1", "P2", "P3"],
            "name": ["Red shirt", "Blue lamp", "Pan"],
            "text": ["Red shirt Soft cotton. Machine washable.", "Blue lamp Bright.", "Pan"],
            "img_urls": [["http://i/p1a.jpg", "http://i/p1b.jpg"], [], ["http://i/p3.jpg"]],
        },
        index=[7, 2, 40],
    )  # non-contiguous, unsorted row indices
    reviews = pd.DataFrame(
        {
            "review_id": ["P1-0", "P1-1", "P2-0", "P3-0", "P3-1"],
            "product_id": ["P1", "P1", "P2", "P3", "P3"],
            "text": ["Great shirt, fits well.", "Faded after one wash.", "Too dim.", "Heats evenly.", "ok"],
            "label": [4, 0, 2, 1, 3],
            "img_urls": [["http://i/r0.jpg"], [], [], ["http://i/r3a.jpg", "http://i/r3b.jpg"], []],
        },
        index=[11, 3, 30, 31, 90],
    )
    return products, reviews


def _sorted(df):
    return df.sort_index().reset_index(drop=True)


@pytest.mark.parametrize("dataset,category", [("amazon", "home"), ("demo", "clothing"), ("lazada", "electronics")])
def test_round_trip(tmp_path, dataset, category):
    products, reviews = _frames()
    write_mrhp(tmp_path, dataset, category, "dev", products, reviews)
    p, r = load_mrhp(tmp_path, dataset, category, "dev")
    assert list(p.columns) == list(data.PRODUCT_COLUMNS)
    assert list(r.columns) == list(data.REVIEW_COLUMNS)
    exp_p, exp_r = _sorted(products), _sorted(reviews)
    pd.testing.assert_frame_equal(p[["product_id", "name", "text", "img_urls"]], exp_p, check_dtype=False)
    pd.testing.assert_frame_equal(
        r[["review_id", "product_id", "text", "label", "img_urls"]],
        exp_r[["review_id", "product_id", "text", "label", "img_urls"]],
        check_dtype=False,
    )
    assert r["label"].dtype == "int64"
    assert r.attrs["image_counts"] == {"with_images": 0, "without_images": 5}
    assert p.image_files.map(len).sum() == 0


def test_lazada_field_encoding(tmp_path):
    products, reviews = _frames()
    reviews["rating"] = [5, 1, 3, 4, 2]
    paths = write_mrhp(tmp_path, "lazada", "home", "train", products, reviews)
    prd = json.loads(paths["prd"].read_text())
    rvw = json.loads(paths["rvw"].read_text())
    rel = json.loads(paths["rel"].read_text())
    assert isinstance(prd["img_url"]["7"], str) and json.loads(prd["img_url"]["7"]) == [
        "http://i/p1a.jpg",
        "http://i/p1b.jpg",
    ]
    assert json.loads(rvw["img_url"]["11"]) == [{"url": "http://i/r0.jpg"}]
    assert rel["rating"] == {"11": 5, "3": 1, "30": 3, "31": 4, "90": 2}
    assert "time" not in rvw


def test_lazada_clothing_uses_name_only(tmp_path):
    products, reviews = _frames()
    # a hand-written Lazada clothing file: description present but not part of the model text
    products = products.assign(description=["Kain katun lembut", "", None], text=products["name"])
    write_mrhp(tmp_path, "lazada", "clothing", "test", products.drop(columns="text"), reviews)
    p, _ = load_mrhp(tmp_path, "lazada", "clothing", "test")
    assert list(p["text"]) == list(_sorted(products)["name"])
    # the same file read as another dataset keeps name + description
    for kind in ("prd", "rvw", "rel"):
        src = split_file(tmp_path, "lazada", "clothing", kind, "test")
        dst = split_file(tmp_path, "amazon", "clothing", kind, "test")
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    p2, _ = load_mrhp(tmp_path, "amazon", "clothing", "test")
    assert p2.set_index("product_id").loc["P1", "text"] == "Red shirt Kain katun lembut"
    # a Lazada clothing text that is not the name cannot be written faithfully
    with pytest.raises(DataError, match="name"):
        write_mrhp(tmp_path, "lazada", "clothing", "dev", _frames()[0], reviews)


def test_amazon_description_list_and_urls(tmp_path):
    products, reviews = _frames()
    products = products.drop(columns="text").assign(description=[["Soft cotton.", "", "Washable."], [], "One string"])
    write_mrhp(tmp_path, "amazon", "home", "train", products, reviews)
    p, _ = load_mrhp(tmp_path, "amazon", "home", "train")
    assert p.set_index("product_id")["text"].to_dict() == {
        "P1": "Red shirt Soft cotton. Washable.",
        "P2": "Blue lamp",
        "P3": "Pan One string",
    }


def test_parse_img_urls_variants():
    assert parse_img_urls(json.dumps(["a", "b"])) == ["a", "b"]
    assert parse_img_urls(json.dumps([{"url": "a"}, {"url": "b"}])) == ["a", "b"]
    assert parse_img_urls([{"url": "a"}]) == ["a"]
    assert parse_img_urls("") == [] and parse_img_urls(float("nan")) == [] and parse_img_urls("[]") == []
    assert parse_img_urls("http://x/1.jpg") == ["http://x/1.jpg"]
    with pytest.raises(DataError, match="does not parse"):
        parse_img_urls('[{"url": ')


def test_local_images_and_counts(tmp_path):
    products, reviews = _frames()
    write_mrhp(tmp_path, "amazon", "home", "train", products, reviews)
    base = tmp_path / "amazon" / "home" / "images"
    for item, names in (("prd/P3", ["b.png", "a.jpg", "notes.txt"]), ("rvw/P1-0", ["1.webp", "0.JPEG"])):
        (base / item).mkdir(parents=True)
        for n in names:
            (base / item / n).write_bytes(b"x")
    (base / "rvw" / "P3-1").mkdir()  # an empty folder: still no images
    p, r = load_mrhp(tmp_path, "amazon", "home", "train")
    files = dict(zip(p.product_id, p.image_files, strict=True))
    assert [f.rsplit("/", 1)[1] for f in files["P3"]] == ["a.jpg", "b.png"]
    assert all(f.startswith("/") for f in files["P3"])
    assert files["P1"] == []
    rfiles = dict(zip(r.review_id, r.image_files, strict=True))
    assert [f.rsplit("/", 1)[1] for f in rfiles["P1-0"]] == ["0.JPEG", "1.webp"]
    assert p.attrs["image_counts"] == {"with_images": 1, "without_images": 2}
    assert r.attrs["image_counts"] == {"with_images": 1, "without_images": 4}


def test_bin_votes_values():
    assert [bin_votes(v) for v in (1, 2, 3, 4, 7, 8, 15, 16, 99)] == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    with pytest.raises(ValueError):
        bin_votes(0)


def test_out_of_range_labels_error_or_explicit_binning(tmp_path):
    products, reviews = _frames()
    reviews["label"] = [40, 1, 0, 9, 5]  # raw vote counts
    write_mrhp(tmp_path, "amazon", "home", "train", products, reviews)
    with pytest.raises(DataError, match=r"3 of 5 row\(s\).*home\.rel\.train.*bin_votes=True|home\.rel\.train.*3 of 5"):
        load_mrhp(tmp_path, "amazon", "home", "train")
    _, r = load_mrhp(tmp_path, "amazon", "home", "train", bin_votes=True)
    assert dict(zip(r.review_id, r.label, strict=True)) == {
        "P1-1": 0,
        "P1-0": 4,
        "P3-0": 3,
        "P3-1": 2,
    }  # P2-0 (0 votes) dropped
    assert r.attrs["dropped_zero_votes"] == 1


def test_default_threshold():
    assert (default_threshold("amazon"), default_threshold("demo"), default_threshold("lazada")) == (1, 1, 0)
    with pytest.raises(DataError):
        default_threshold("yelp")


def test_split_by_product_fractions_and_determinism():
    ids = [f"p{i}" for i in range(100)]
    s = split_by_product(ids, seed=0)
    counts = pd.Series(s).value_counts().to_dict()
    assert counts == {"train": 64, "dev": 16, "test": 20}
    assert s == split_by_product(ids, seed=0)
    assert s != split_by_product(ids, seed=1)


# ----------------------------------------------------------------------------- bad input


def _write(tmp_path, **mutate):
    products, reviews = _frames()
    write_mrhp(tmp_path, "amazon", "home", "train", products, reviews)
    for kind, fn in mutate.items():
        path = split_file(tmp_path, "amazon", "home", kind, "train")
        obj = json.loads(path.read_text())
        fn(obj)
        path.write_text(json.dumps(obj))
    return tmp_path


def test_missing_split_file(tmp_path):
    _write(tmp_path)
    with pytest.raises(DataError, match=r"home\.prd\.dev: split file not found"):
        load_mrhp(tmp_path, "amazon", "home", "dev")


def test_truncated_file(tmp_path):
    _write(tmp_path)
    path = split_file(tmp_path, "amazon", "home", "rvw", "train")
    path.write_text(path.read_text()[:-40])
    with pytest.raises(DataError, match=r"home\.rvw\.train: not valid JSON"):
        load_mrhp(tmp_path, "amazon", "home", "train")


def test_non_json_file(tmp_path):
    _write(tmp_path)
    split_file(tmp_path, "amazon", "home", "prd", "train").write_text("product_id,name\nP1,x\n")
    with pytest.raises(DataError, match=r"home\.prd\.train: not valid JSON"):
        load_mrhp(tmp_path, "amazon", "home", "train")


def test_missing_column(tmp_path):
    _write(tmp_path, rel=lambda o: o.pop("upvotes"))
    with pytest.raises(DataError, match=r"home\.rel\.train: missing column\(s\) upvotes"):
        load_mrhp(tmp_path, "amazon", "home", "train")


def test_unknown_product(tmp_path):
    def f(o):
        o["product_id"]["30"] = "P9"

    _write(tmp_path, rvw=f, rel=f)
    with pytest.raises(DataError, match=r"home\.rvw\.train: row 30, review 'P2-0': product_id 'P9' is not in"):
        load_mrhp(tmp_path, "amazon", "home", "train")


def test_duplicate_review_ids(tmp_path):
    def f(o):
        o["review_id"]["90"] = "P3-0"

    _write(tmp_path, rvw=f)
    with pytest.raises(DataError, match=r"home\.rvw\.train: duplicate review_id 'P3-0' in rows 31 and 90"):
        load_mrhp(tmp_path, "amazon", "home", "train")


@pytest.mark.parametrize(
    "value,what",
    [
        ("", "empty text"),
        ("   ", "empty text"),
        (None, "expected a non-empty string"),
        (3, "expected a non-empty string"),
    ],
)
def test_empty_or_non_string_text(tmp_path, value, what):
    def f(o):
        o["content"]["3"] = value

    _write(tmp_path, rvw=f)
    with pytest.raises(DataError, match=rf"home\.rvw\.train: row 3, field 'content': {what}"):
        load_mrhp(tmp_path, "amazon", "home", "train")


@pytest.mark.parametrize("value", ["helpful", None, 2.5, True])
def test_label_not_a_number(tmp_path, value):
    def f(o):
        o["upvotes"]["31"] = value

    _write(tmp_path, rel=f)
    with pytest.raises(
        DataError, match=r"home\.rel\.train: row 31 \(review P3-0\), field 'upvotes': expected an integer"
    ):
        load_mrhp(tmp_path, "amazon", "home", "train")


def test_review_without_label_row(tmp_path):
    def f(o):
        for col in o.values():
            col.pop("11")

    _write(tmp_path, rel=f)
    with pytest.raises(DataError, match=r"review 'P1-0' has no label row in home\.rel\.train"):
        load_mrhp(tmp_path, "amazon", "home", "train")


def test_ragged_columns(tmp_path):
    _write(tmp_path, prd=lambda o: o["name"].pop("40"))
    with pytest.raises(DataError, match=r"home\.prd\.train: column 'name' .* different rows \(e\.g\. row 40"):
        load_mrhp(tmp_path, "amazon", "home", "train")


# ----------------------------------------------------------------------------- stats


def test_dataset_stats_and_cli(tmp_path, capsys):
    products, reviews = _frames()
    for split, keep in (("train", ["P1", "P3"]), ("dev", ["P2"]), ("test", ["P3"])):
        write_mrhp(
            tmp_path,
            "amazon",
            "home",
            split,
            products[products.product_id.isin(keep)],
            reviews[reviews.product_id.isin(keep)],
        )
    st = dataset_stats(tmp_path, "amazon", ["home"])
    row = st.iloc[0]
    assert (
        row.train_products,
        row.train_reviews,
        row.dev_products,
        row.dev_reviews,
        row.test_products,
        row.test_reviews,
    ) == (2, 4, 1, 1, 1, 2)
    assert [row[f"label_{k}"] for k in range(5)] == [1, 2, 1, 2, 1]
    md = stats_markdown(st)
    assert "| amazon | home | 2/4 | 1/1 | 1/2 |" in md
    assert data.cli_main(["--root", str(tmp_path), "--dataset", "amazon"], prog="mmss stats") == 0
    assert "| amazon | home | 2/4 | 1/1 | 1/2 |" in capsys.readouterr().out
