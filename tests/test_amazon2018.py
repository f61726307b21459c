"""mmss_lib.data.amazon2018: the builder's rules on hand-made files, bad input, and the real sample."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from mmss_lib.bench.build import generate_reviews
from mmss_lib.data.amazon2018 import build_amazon2018, clean_html, cli_main, full_size_url, parse_vote
from mmss_lib.data.mrhp import SPLITS, load_mrhp
from mmss_lib.errors import DataError

LONG = "This magazine has long, detailed articles and I read every issue cover to cover. "  # > 64 chars


def _review(asin, votes, text=LONG, n=0, **extra):
    rec = {
        "overall": 4.0,
        "verified": True,
        "reviewTime": "01 2, 2015",
        "reviewerID": f"R{n}",
        "asin": asin,
        "reviewText": text + str(n),
        "summary": f"s{n}",
        "unixReviewTime": 1420000000 + n,
    }
    if votes is not None:
        rec["vote"] = votes
    rec.update(extra)
    return rec


def _write_jsonl(path: Path, records, gz=True):
    text = "".join(json.dumps(r) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def _fixture(tmp_path, gz=True):
    """5 products: A, B, C, D qualify (3 reviews with >= 1 vote, one with >= 3); E has too few
    qualifying reviews; F has no review with >= 3 votes; G has no metadata."""
    recs, n = [], 0
    for asin in "ABCD":
        for v in ("1,204", "2", "1"):
            recs.append(_review(asin, v, n=n))
            n += 1
        recs.append(_review(asin, None, n=n))
        n += 1  # no vote -> removed
        recs.append(_review(asin, "5", text="short", n=n))
        n += 1  # too short -> removed
    recs.append(_review("A", "1", n=50))  # a 4th qualifying review of A
    recs += [_review("E", "9", n=100), _review("E", "9", n=101)]
    recs += [_review("F", "2", n=200 + i) for i in range(3)]
    recs += [_review("G", "4", n=300 + i) for i in range(3)]
    recs.append(_review("B", "3", n=1000, image=["https://images-na.ssl-images-amazon.com/images/I/71x._SY88.jpg"]))
    recs.append(
        _review("B", "3", n=1000, image=["https://images-na.ssl-images-amazon.com/images/I/71x._SY88.jpg"])
    )  # duplicate
    thumb = "https://images-na.ssl-images-amazon.com/images/I/51sY._SX38_SY50_CR,0,0,38,50_.jpg"
    meta = [
        {
            "asin": "A",
            "title": '<span class="a-size-medium a-color-secondary"',
            "description": ["Economics &amp; politics.", ""],
            "feature": [],
            "image": [thumb],
        },
        {"asin": "A", "title": "Second record of A (ignored)", "description": ["x"]},
        {
            "asin": "B",
            "title": "Guitar Player",
            "description": [],
            "feature": ["For <b>musicians</b>"],
            "imageURL": [thumb],
            "imageURLHighRes": ["https://images-na.ssl-images-amazon.com/images/I/51sY.jpg"],
        },
        {"asin": "C", "title": "Reason", "description": "A single string"},
        {"asin": "D", "title": "Wired", "description": ["Tech."], "imageURL": ["https://x/i/1._SS40_.jpg"]},
        {"asin": "E", "title": "E", "description": ["e"]},
        {"asin": "F", "title": "F", "description": ["f"]},
        {"asin": "Z", "title": "unrelated", "description": ["z"]},
    ]
    ext = ".json.gz" if gz else ".json"
    r = _write_jsonl(tmp_path / f"reviews{ext}", recs, gz)
    m = _write_jsonl(tmp_path / f"meta{ext}", meta, gz)
    return r, m


def test_field_helpers():
    assert parse_vote("1,234") == 1234 and parse_vote(None) == 0 and parse_vote("") == 0 and parse_vote(3) == 3
    assert full_size_url("https://h/images/I/51sY._SX38_SY50_CR,0,0,38,50_.jpg") == "https://h/images/I/51sY.jpg"
    assert full_size_url("https://h/images/I/71x._SY88.jpg") == "https://h/images/I/71x.jpg"
    assert full_size_url("https://h/images/I/71x.jpg") == "https://h/images/I/71x.jpg"
    assert clean_html('<span class="a-size-medium a-color-secondary"') == ""
    assert clean_html("Arts, Music &amp; <i>Photography</i>") == "Arts, Music & Photography"


@pytest.mark.parametrize("gz", [True, False])
def test_build_rules_and_round_trip(tmp_path, gz):
    r, m = _fixture(tmp_path, gz)
    rep = build_amazon2018(r, m, tmp_path / "out", "mags", min_reviews=3, min_top_votes=3)
    assert rep["removed_reviews"]["min_votes"] == 4 and rep["removed_reviews"]["min_review_chars"] == 4
    assert rep["removed_products"]["min_reviews"] == 1  # E
    assert rep["removed_products"]["min_top_votes"] == 1  # F
    assert rep["removed_products"]["no_metadata"] == 1  # G
    assert rep["removed_reviews"]["duplicate"] == 1
    assert rep["meta_repeated_asins_ignored"] == 1
    assert rep["products_kept"] == 4
    assert sum(s["products"] for s in rep["splits"].values()) == 4
    prods, revs = [], []
    for split in SPLITS:
        p, rv = load_mrhp(tmp_path / "out", "amazon", "mags", split)
        assert len(p) == rep["splits"][split]["products"] and len(rv) == rep["splits"][split]["reviews"]
        prods.append(p)
        revs.append(rv)
    p = pd.concat(prods).set_index("product_id")
    rv = pd.concat(revs).set_index("review_id")
    assert sorted(p.index) == ["A", "B", "C", "D"]
    assert p.loc["A", "name"] == "" and p.loc["A", "text"] == "Economics & politics."  # junk title, entities
    assert p.loc["A", "img_urls"] == ["https://images-na.ssl-images-amazon.com/images/I/51sY.jpg"]
    assert p.loc["B", "text"] == "Guitar Player For musicians"  # feature fallback
    assert p.loc["B", "img_urls"] == ["https://images-na.ssl-images-amazon.com/images/I/51sY.jpg"]  # HighRes first
    assert p.loc["C", "text"] == "Reason A single string"
    assert p.loc["D", "img_urls"] == ["https://x/i/1.jpg"]
    # labels: 1,204 -> 4, 2 -> 1, 1 -> 0, 3 -> 1; review ids in file order within the product
    assert rv.loc["A-0", "label"] == 4 and rv.loc["A-1", "label"] == 1 and rv.loc["A-2", "label"] == 0
    assert rv.loc["A-3", "label"] == 0  # the 4th A review (vote 1)
    assert rv.loc["B-3", "img_urls"] == ["https://images-na.ssl-images-amazon.com/images/I/71x.jpg"]
    assert len(rv) == rep["reviews_kept"] == 14
    assert json.loads((tmp_path / "out" / "amazon" / "mags" / "build_report.json").read_text())["products_kept"] == 4


def test_published_defaults_give_clear_empty_error(tmp_path):
    r, m = _fixture(tmp_path)
    with pytest.raises(DataError, match=r"no product left .*min_reviews=20.*Relax the thresholds"):
        build_amazon2018(r, m, tmp_path / "out", "mags")
    assert not (tmp_path / "out" / "amazon" / "mags").exists()


def test_empty_after_metadata(tmp_path):
    r, _ = _fixture(tmp_path)
    m = _write_jsonl(tmp_path / "meta_other.json", [{"asin": "Q", "title": "q", "description": []}], gz=False)
    with pytest.raises(DataError, match="no product left after matching the metadata"):
        build_amazon2018(r, m, tmp_path / "out", "mags", min_reviews=3)


def test_non_json_line(tmp_path):
    r, m = _fixture(tmp_path, gz=False)
    lines = r.read_text().splitlines(keepends=True)
    lines.insert(3, "this is not json\n")
    r.write_text("".join(lines))
    with pytest.raises(DataError, match=r"reviews\.json: line 4 is not valid JSON"):
        build_amazon2018(r, m, tmp_path / "out", "mags", min_reviews=3)


def test_truncated_gzip(tmp_path):
    r, m = _fixture(tmp_path, gz=True)
    data = r.read_bytes()
    r.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"reviews\.json\.gz: truncated or corrupt gzip"):
        build_amazon2018(r, m, tmp_path / "out", "mags", min_reviews=3)


def test_bad_vote_and_missing_file(tmp_path):
    r, m = _fixture(tmp_path, gz=False)
    r.write_text(r.read_text() + json.dumps(_review("A", "many", n=5000)) + "\n")
    with pytest.raises(DataError, match=r"line \d+: field 'vote' = 'many'"):
        build_amazon2018(r, m, tmp_path / "out", "mags", min_reviews=3)
    with pytest.raises(DataError, match="file not found"):
        build_amazon2018(tmp_path / "nope.json", m, tmp_path / "out", "mags")
    with pytest.raises(DataError, match="min_votes must be >= 1"):
        build_amazon2018(r, m, tmp_path / "out", "mags", min_votes=0)


@pytest.mark.parametrize(
    "vote, why",
    [
        (2.7, r"2\.7 is not a vote count \(vote 2\.7 is not a whole number\)"),
        ("-5", r"'-5' is not a vote count \(vote '-5' is negative\)"),
        (-5, "-5 is not a vote count"),
    ],
)
def test_fractional_and_negative_votes_are_errors(tmp_path, vote, why):
    """Probe AM3 / AM4: a vote 2.7 was read as 2, a vote "-5" counted among the min_votes removals."""
    r, m = _fixture(tmp_path, gz=False)
    n = len(r.read_text().splitlines()) + 1
    r.write_text(r.read_text() + json.dumps(_review("A", vote, n=5000)) + "\n")
    with pytest.raises(DataError, match=rf"line {n}: field 'vote' = {why}"):
        build_amazon2018(r, m, tmp_path / "out", "mags", min_reviews=3)
    assert not (tmp_path / "out").exists()
    assert parse_vote(3.0) == 3  # a JSON number with a whole value is a count


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"min_reviews": -5}, r"min_reviews \(--min-reviews\) must be an integer >= 1, got -5"),
        ({"min_reviews": 0}, r"min_reviews \(--min-reviews\) must be an integer >= 1, got 0"),
        ({"min_review_chars": -1}, r"min_review_chars \(--min-review-chars\) must be an integer >= 0"),
        ({"min_top_votes": -2}, r"min_top_votes \(--min-top-votes\) must be an integer >= 0"),
        ({"category": ".."}, r"category '\.\.': use letters"),
        ({"category": "."}, r"category '\.': use letters"),
        ({"category": ".hidden"}, r"category '\.hidden'"),
        ({"dataset": "../../escaped"}, r"dataset '\.\./\.\./escaped': use letters"),
        ({"dataset": ".."}, r"dataset '\.\.'"),
        ({"dataset": "a/b"}, r"dataset 'a/b'"),
    ],
)
def test_options_and_names_checked_before_reading(tmp_path, kw, match):
    """Probes AM18 (--min-reviews -5 acted as 0), AM20 (--category .. wrote into --out itself) and
    AM21 (--dataset ../../escaped wrote outside --out): each refused before anything is read."""
    r, m = _fixture(tmp_path)
    kw = {"category": "mags", **kw}
    out = tmp_path / "o1" / "o2"
    with pytest.raises(DataError, match=match):
        build_amazon2018(r, m, out, kw.pop("category"), **kw)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "escaped").exists()


def test_cli_refuses_an_escaping_dataset(tmp_path, capsys):
    from mmss_lib.cli import main

    r, m = _fixture(tmp_path)
    argv = ["build-amazon2018", "--reviews", str(r), "--meta", str(m), "--out", str(tmp_path / "a" / "b")]
    assert main([*argv, "--category", "mags", "--dataset", "../../escaped", "--min-reviews", "3"]) == 1
    err = capsys.readouterr().err
    assert "dataset '../../escaped'" in err and len(err.strip().splitlines()) == 1
    assert main([*argv, "--category", "..", "--min-reviews", "3"]) == 1
    assert main([*argv, "--category", "mags", "--min-reviews", "-5"]) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "escaped").exists()


def test_generated_input_builds(tmp_path):
    src = tmp_path / "gen.json.gz"
    gen = generate_reviews(src, 3000, n_products=60, seed=1)
    assert gen["reviews"] == 3000
    rep = build_amazon2018(src, Path(str(src) + ".meta.json.gz"), tmp_path / "out", "gen", min_reviews=5)
    assert rep["reviews_read"] == 3000 and rep["products_kept"] > 5
    assert rep["meta_repeated_asins_ignored"] > 0
    p, rv = load_mrhp(tmp_path / "out", "amazon", "gen", "train")
    assert rv.label.between(0, 4).all() and len(p) > 0


def test_real_sample_builds_and_loads(amazon2018_sample, tmp_path, capsys):
    """Build the real Magazine Subscriptions sample (relaxed --min-reviews 3) and load it back."""
    argv = [
        "--reviews",
        str(amazon2018_sample / "Magazine_Subscriptions_5.json.gz"),
        "--meta",
        str(amazon2018_sample / "meta_Magazine_Subscriptions.json.gz"),
        "--out",
        str(tmp_path),
        "--category",
        "magazines",
        "--min-reviews",
        "3",
    ]
    assert cli_main(argv, prog="mmss build-amazon2018") == 0
    assert "kept" in capsys.readouterr().out
    rep = json.loads((tmp_path / "amazon" / "magazines" / "build_report.json").read_text())
    assert rep["reviews_read"] == 2375
    total = 0
    for split in SPLITS:
        p, rv = load_mrhp(tmp_path, "amazon", "magazines", split)
        assert len(p) > 0 and rv.label.between(0, 4).all()
        assert rv.groupby("product_id").size().min() >= 3
        assert (rv.text.str.len() >= 64).all()
        assert not p.text.str.contains("<span").any()
        total += len(rv)
    assert total == rep["reviews_kept"]
    n = rep["products_kept"]
    assert rep["splits"]["test"]["products"] == -(-n * 2 // 10)  # ceil(0.2 n)
