"""`mmss build-amazon --format 2014|2023`: the builder on small hand-written files of the 2014 and
2023 Amazon releases, their fields' odd cases, and the same MRHP layout as the 2018 builder."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from mmss_lib.data.amazon2018 import FORMATS, build_amazon, cli_main, parse_helpful_2014
from mmss_lib.data.mrhp import SPLITS, load_mrhp
from mmss_lib.errors import DataError

LONG = "A long enough review text about this product, its build quality, and how it held up. "


def _lines(path: Path, lines: list[str], gz: bool = False) -> Path:
    text = "".join(line + "\n" for line in lines)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _load_all(root: Path, dataset: str, category: str):
    out = {}
    for split in SPLITS:
        p, r = load_mrhp(root, dataset, category, split)
        out[split] = (p, r)
    return out


# ----------------------------------------------------------------------------- 2023


def _rev2023(parent, n, votes, **extra):
    rec = {
        "rating": 4.0,
        "title": f"title {n}",
        "text": LONG + str(n),
        "images": [],
        "asin": f"{parent}V{n % 2}",  # a variant of the product: the product is parent_asin
        "parent_asin": parent,
        "user_id": f"U{n}",
        "timestamp": 1588687728923 + n,
        "verified_purchase": True,
    }
    if votes is not None:
        rec["helpful_vote"] = votes
    rec.update(extra)
    return json.dumps(rec)


def _files2023(tmp_path, extra_reviews=(), gz=True):
    img = {
        "small_image_url": "https://m.media-amazon.com/images/I/71a._SL256_.jpg",
        "medium_image_url": "https://m.media-amazon.com/images/I/71a._SL800_.jpg",
        "large_image_url": "https://m.media-amazon.com/images/I/71a.jpg",
        "attachment_type": "IMAGE",
    }
    video = {"large_image_url": "https://m.media-amazon.com/v/1.mp4", "attachment_type": "VIDEO"}
    revs, n = [], 0
    for parent in ("B0A", "B0B", "B0C", "B0D", "B0E"):
        for v in (3, 1, 2):
            revs.append(_rev2023(parent, n, v, images=[img, video] if parent == "B0A" and v == 3 else []))
            n += 1
        revs.append(_rev2023(parent, n, None))  # no helpful_vote: 0 votes
        n += 1
        revs.append(_rev2023(parent, n, 0))
        n += 1
    revs.append(_rev2023("B0A", 0, 3, images=[img, video]))  # an exact duplicate of the first review
    revs.append(_rev2023("B0F", 99, 1))  # too few reviews
    revs += list(extra_reviews)
    meta = [
        json.dumps(
            {
                "main_category": "All Beauty",
                "title": "Hair &amp; Scalp <b>Serum</b>",
                "description": [],
                "features": ["Nourishing", "Light"],
                "images": [
                    {
                        "thumb": "https://m.media-amazon.com/images/I/41x._SS40_.jpg",
                        "large": "https://m.media-amazon.com/images/I/41x.jpg",
                        "variant": "MAIN",
                        "hi_res": None,
                    },
                    {
                        "thumb": "https://m.media-amazon.com/images/I/51y._SS40_.jpg",
                        "large": "https://m.media-amazon.com/images/I/51y.jpg",
                        "variant": "PT01",
                        "hi_res": "https://m.media-amazon.com/images/I/51y._SL1500_.jpg",
                    },
                ],
                "parent_asin": "B0A",
                "details": {"Brand": "X"},
            }
        ),
        json.dumps({"title": "repeated B0A (ignored)", "description": ["x"], "parent_asin": "B0A"}),
        json.dumps({"title": "Shampoo", "description": ["For dry hair."], "images": [], "parent_asin": "B0B"}),
        json.dumps({"title": "Comb", "description": "A single string", "parent_asin": "B0C"}),
        json.dumps({"title": '<span class="a-size-medium"', "description": [], "features": [], "parent_asin": "B0D"}),
        json.dumps({"title": "Brush", "description": ["Soft."], "images": None, "parent_asin": "B0E"}),
        json.dumps({"title": "unrelated", "description": ["z"], "parent_asin": "B0Z"}),
    ]
    ext = ".jsonl.gz" if gz else ".jsonl"
    return _lines(tmp_path / f"All_Beauty{ext}", revs, gz), _lines(tmp_path / f"meta_All_Beauty{ext}", meta, gz)


def test_2023_builds_the_mrhp_layout(tmp_path):
    r, m = _files2023(tmp_path)
    rep = build_amazon(r, m, tmp_path / "out", "beauty", format="2023", min_reviews=3, dataset="amazon2023")
    assert rep["format"] == "2023"
    assert rep["reviews_read"] == 27 and rep["products_read"] == 6
    assert rep["removed_reviews"]["min_votes"] == 10  # the 5 without helpful_vote and the 5 with 0
    assert rep["removed_reviews"]["duplicate"] == 1
    assert rep["removed_products"] == {
        "no_qualifying_review": 0,
        "min_reviews": 1,  # B0F
        "min_top_votes": 0,
        "no_metadata": 0,
        "no_text": 1,  # B0D: an HTML-only title and no description or features
        "fell_below_after_dedup": 0,
    }
    assert rep["products_kept"] == 4 and rep["reviews_kept"] == 12
    data = _load_all(tmp_path / "out", "amazon2023", "beauty")
    prd = {pid: row for _, (p, _) in data.items() for pid, row in p.set_index("product_id").iterrows()}
    rvw = {rid: row for _, (_, r) in data.items() for rid, row in r.set_index("review_id").iterrows()}
    assert set(prd) == {"B0A", "B0B", "B0C", "B0E"}
    # metadata: HTML stripped and unescaped, features when the description is empty, hi_res > large
    assert prd["B0A"]["name"] == "Hair & Scalp Serum"
    assert prd["B0A"]["text"] == "Hair & Scalp Serum Nourishing Light"
    assert prd["B0A"]["img_urls"] == [
        "https://m.media-amazon.com/images/I/41x.jpg",
        "https://m.media-amazon.com/images/I/51y.jpg",
    ]
    assert prd["B0C"]["text"] == "Comb A single string" and prd["B0E"]["img_urls"] == []
    # review images: the large URL, the video skipped; review id <parent_asin>-<n>; labels binned
    first = rvw["B0A-0"]
    assert first["img_urls"] == ["https://m.media-amazon.com/images/I/71a.jpg"]
    assert first["label"] == 1 and rvw["B0A-1"]["label"] == 0 and rvw["B0A-2"]["label"] == 1
    assert first["text"].startswith(LONG)
    raw = json.loads((tmp_path / "out" / "amazon2023" / "beauty" / "beauty.rvw.train").read_text())
    times = set(raw["time"].values())
    assert times <= {"2020-05-05"}  # the timestamp (ms) as a UTC date


def test_2023_odd_votes_are_errors_naming_the_line(tmp_path):
    for bad, why in ((2.7, "2.7"), (-5, "-5"), ("-5", "'-5'"), ({"n": 3}, "{'n': 3}"), (True, "True")):
        r, m = _files2023(tmp_path, [_rev2023("B0A", 500, bad)], gz=False)
        with pytest.raises(
            DataError, match=rf"line 28: field 'helpful_vote' = {__import__('re').escape(why)} is not a vote count"
        ):
            build_amazon(r, m, tmp_path / "out", "beauty", format="2023", min_reviews=3)
    r, m = _files2023(tmp_path, [json.dumps({"asin": "X", "text": LONG, "helpful_vote": 1})], gz=False)
    with pytest.raises(DataError, match="line 28: field 'parent_asin' missing or not a string"):
        build_amazon(r, m, tmp_path / "out", "beauty", format="2023", min_reviews=3)
    r, m = _files2023(tmp_path, [_rev2023("../../etc", 600, 4)], gz=False)
    with pytest.raises(DataError, match=r"row 28, field 'parent_asin': id '\.\./\.\./etc' contains '/'"):
        build_amazon(r, m, tmp_path / "out", "beauty", format="2023", min_reviews=3)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- 2014


def _rev2014(asin, n, helpful, text=LONG):
    rec = {
        "reviewerID": f"R{n}",
        "asin": asin,
        "reviewerName": "J. Doe",
        "reviewText": text + str(n),
        "overall": 5.0,
        "summary": f"summary {n}",
        "unixReviewTime": 1400000000 + n,
        "reviewTime": "05 13, 2014",
    }
    if helpful is not None:
        rec["helpful"] = helpful
    return json.dumps(rec)


def _files2014(tmp_path, extra_reviews=(), extra_meta=()):
    revs, n = [], 0
    for asin in ("0000031852", "0000031853", "B00004U9V2", "B00005N7P0"):
        for h in ([3, 4], [1, 1], [2, 9]):
            revs.append(_rev2014(asin, n, h))
            n += 1
        revs.append(_rev2014(asin, n, [0, 5]))  # 5 votes, none helpful: 0 upvotes
        n += 1
        revs.append(_rev2014(asin, n, None))
        n += 1
    revs.append(_rev2014("B00005N7P0", 70, [8, 8], text="short"))  # too short
    revs += list(extra_reviews)
    # the 2014 metadata files are Python dict literals, not JSON
    meta = [
        "{'asin': '0000031852', 'title': 'Girls Ballet Tutu Zebra Hot Pink', 'price': 3.17, "
        "'imUrl': 'http://ecx.images-amazon.com/images/I/51fAmVkTbyL._SY300_.jpg', "
        "'related': {'also_bought': ['B00JHONN1S']}, 'salesRank': {'Toys & Games': 211836}, "
        "'brand': 'Coxlures', 'categories': [['Sports & Outdoors', 'Dance']]}",
        "{'asin': '0000031853', 'description': \"It's a \\\"tutu\\\" & more\", "
        "'imUrl': 'http://ecx.images-amazon.com/images/I/41x.jpg'}",  # no title: the description alone
        json.dumps({"asin": "B00004U9V2", "title": "A JSON line", "description": "Also accepted"}),
        "{'asin': 'B00005N7P0', 'related': {'bought_together': ['X']}}",  # no text at all
        "{'asin': 'B00004U9V2', 'title': 'repeated (ignored)'}",
        *extra_meta,
    ]
    return _lines(tmp_path / "reviews_Toys_5.json", revs), _lines(tmp_path / "meta_Toys.json.gz", meta, gz=True)


def test_2014_builds_the_mrhp_layout(tmp_path, capsys):
    r, m = _files2014(tmp_path)
    argv = ["--format", "2014", "--reviews", str(r), "--meta", str(m), "--out", str(tmp_path / "out")]
    argv += ["--category", "toys", "--min-reviews", "3"]
    assert cli_main(argv, prog="mmss build-amazon") == 0
    assert "kept 3 products / 9 reviews" in capsys.readouterr().out
    rep = json.loads((tmp_path / "out" / "amazon" / "toys" / "build_report.json").read_text())
    assert rep["format"] == "2014" and rep["reviews_read"] == 21
    assert rep["removed_reviews"]["min_votes"] == 8 and rep["removed_reviews"]["min_review_chars"] == 1
    assert rep["removed_products"]["no_text"] == 1 and rep["meta_repeated_asins_ignored"] == 1
    data = _load_all(tmp_path / "out", "amazon", "toys")
    prd = {pid: row for _, (p, _) in data.items() for pid, row in p.set_index("product_id").iterrows()}
    rvw = {rid: row for _, (_, r) in data.items() for rid, row in r.set_index("review_id").iterrows()}
    assert prd["0000031852"]["name"] == "Girls Ballet Tutu Zebra Hot Pink"
    assert prd["0000031852"]["img_urls"] == ["http://ecx.images-amazon.com/images/I/51fAmVkTbyL.jpg"]  # full size
    assert prd["0000031853"]["name"] == "" and prd["0000031853"]["text"] == 'It\'s a "tutu" & more'
    assert prd["B00004U9V2"]["text"] == "A JSON line Also accepted"
    # votes = the helpful count (the first of [helpful, total]); no review images in 2014
    assert rvw["0000031852-0"]["label"] == 1 and rvw["0000031852-1"]["label"] == 0
    assert rvw["0000031852-2"]["label"] == 1
    assert all(row["img_urls"] == [] for row in rvw.values())


def test_2014_odd_fields_are_errors(tmp_path):
    for bad in ([3, 2], [1], "2/3", [-1, 3], [1.5, 3]):
        r, m = _files2014(tmp_path, [_rev2014("0000031852", 900, bad)])
        with pytest.raises(
            DataError, match=r"line 22: field 'helpful' = .* is not a vote count .*not \[helpful votes, total votes\]"
        ):
            build_amazon(r, m, tmp_path / "out", "toys", format="2014", min_reviews=3)
    r, m = _files2014(tmp_path, extra_meta=["{'asin': '0000031852', 'title': os.system('echo hi')}"])
    # a line that is neither JSON nor a Python literal (here: code) is an error, and never runs
    with pytest.raises(DataError, match=r"meta_Toys\.json\.gz: line 6 is not valid JSON"):
        build_amazon(r, m, tmp_path / "out", "toys", format="2014", min_reviews=3)
    # the 2018 reader does not accept Python literals
    r, m = _files2014(tmp_path)
    with pytest.raises(DataError):
        build_amazon(r, m, tmp_path / "out", "toys", format="2018", min_reviews=3)


def test_parse_helpful_2014_and_formats():
    assert parse_helpful_2014([0, 0]) == 0 and parse_helpful_2014([7, 10]) == 7 and parse_helpful_2014(None) == 0
    for bad in ([True, 1], [2, 1], [1, 2, 3], (1, 2), "1"):
        with pytest.raises(ValueError):
            parse_helpful_2014(bad)
    assert set(FORMATS) == {"2014", "2018", "2023"}


def test_unknown_format_and_generic_command_needs_format(tmp_path, capsys):
    r, m = _files2014(tmp_path)
    with pytest.raises(DataError, match="format '2020'"):
        build_amazon(r, m, tmp_path / "out", "toys", format="2020")
    with pytest.raises(SystemExit):
        cli_main(
            ["--reviews", str(r), "--meta", str(m), "--out", str(tmp_path), "--category", "t"], prog="mmss build-amazon"
        )
    assert "--format" in capsys.readouterr().err
