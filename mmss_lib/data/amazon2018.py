"""Build an Amazon-MRHP-style dataset from the Amazon Review Data 2018 (Ni, Li, McAuley 2019).

``mmss build-amazon2018 --reviews R --meta M --out ROOT --category NAME`` reads one category's
review file and metadata file (JSON lines, gzipped or not) and writes the three splits in the
released MRHP format (:func:`mmss_lib.data.mrhp.write_mrhp`), following docs/MRHP.md section 2:

- a review qualifies with ``vote >= min_votes`` (default 1; ``vote`` is a string such as
  ``"1,234"``, absent = 0) and ``len(reviewText) >= min_review_chars`` (default 64);
- a product is kept with ``>= min_reviews`` qualifying reviews (default 20) of which at least one
  has ``vote >= min_top_votes`` (default 3, i.e. "more than 2 votes"), and a metadata record
  whose name/description gives a non-empty text;
- exact duplicate reviews (same reviewer, product, time and text, a known artefact of the
  release) are dropped before the product rules are checked;
- label = binned votes (:func:`mmss_lib.data.mrhp.bin_votes`: ``>=16 -> 4, 8..15 -> 3, 4..7 -> 2,
  2..3 -> 1, 1 -> 0``); review id = ``"<asin>-<n>"`` (n = order within the product in the file);
- product-level split, 20% test then 20% of the rest dev, seed 0
  (:func:`mmss_lib.data.mrhp.split_by_product` over the kept asins in sorted order).

Metadata: both schemas (``image``, or the older ``imageURLHighRes`` / ``imageURL``); the first
record of a repeated ``asin`` wins; HTML junk is stripped from titles (many titles are a scraped
``<span class="a-size-medium ...`` fragment, which becomes an empty name) and descriptions, entities
unescaped; ``description`` (falling back to ``feature`` when empty) becomes the product
description; thumbnail suffixes (``._SX38_SY50_CR,0,0,38,50_.jpg``, ``._SY88.jpg``) are stripped
from image URLs to get the full-size image.

Streaming, three passes, memory bounded by what is kept (not by the file sizes):

1. reviews: per-asin counters only (qualifying count, top vote). Lines without a ``"vote"`` key
   cannot qualify and are not JSON-decoded (only checked to look like one JSON object);
2. metadata: only the needed fields of candidate asins (the asin is read with a regex first,
   the line decoded only when it is a candidate);
3. reviews again: only the needed fields of qualifying reviews of candidate products.

A malformed line is an error naming the file and line (an ``asin`` that is not ASIN-like,
e.g. holding ``/`` or ``..``, too: :func:`mmss_lib.data.mrhp.check_item_id`); a truncated gzip file is an error; an
empty result is an error that says which rule removed everything. The report (returned, printed
by the CLI and written to ``{out}/{dataset}/{category}/build_report.json``) counts what each rule
removed.
"""

from __future__ import annotations

import argparse
import gzip
import html
import io
import json
import os
import re
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from mmss_lib.data.mrhp import SPLITS, bin_votes, check_item_id, split_by_product, write_mrhp
from mmss_lib.errors import DataError
from mmss_lib.utils import atomic_write_json

_ASIN_RE = re.compile(r'"asin":\s*"([^"\\]*)"')
_TAG_RE = re.compile(r"<[^>]*(?:>|$)")
_THUMB_RE = re.compile(r"\._[A-Za-z0-9,_]+_?\.(jpg|jpeg|png|gif|webp)$", re.IGNORECASE)
_WS_RE = re.compile(r"\s+")


# ----------------------------------------------------------------------------- field helpers


def parse_vote(value: Any) -> int:
    """``"1,234"`` -> 1234; absent / empty / None -> 0; ints pass through.

    >>> parse_vote("1,234"), parse_vote(None), parse_vote(7)
    (1234, 0, 7)
    """
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise ValueError(f"vote {value!r} is not a count")
    if isinstance(value, (int, float)):
        return int(value)
    return int(str(value).replace(",", "").strip())


def full_size_url(url: str) -> str:
    """Strip Amazon's thumbnail size suffix: ``.../I/51sY._SX38_SY50_CR,0,0,38,50_.jpg`` -> ``.../I/51sY.jpg``."""
    return _THUMB_RE.sub(r".\1", url)


def clean_html(text: Any) -> str:
    """Drop HTML tags (including an unclosed trailing one), unescape entities, squeeze spaces."""
    if not isinstance(text, str):
        return ""
    return _WS_RE.sub(" ", html.unescape(_TAG_RE.sub(" ", text))).strip()


def _url_list(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    out: list[str] = []
    for u in value:
        if isinstance(u, str) and u.strip():
            full = full_size_url(u.strip())
            if full not in out:
                out.append(full)
    return out


def _meta_images(rec: dict) -> list[str]:
    """Image URLs of a metadata record in either schema (newer ``image``; older
    ``imageURLHighRes`` preferred over ``imageURL``), full size, deduplicated."""
    for key in ("image", "imageURLHighRes", "imageURL"):
        urls = _url_list(rec.get(key))
        if urls:
            return urls
    return []


def _text_list(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [t for t in (clean_html(v) for v in value) if t]


# ----------------------------------------------------------------------------- streaming


def open_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line) of a JSON-lines file, gzipped (by magic bytes) or not."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    raw = gzip.open(path, "rb") if gz else open(path, "rb")
    try:
        with io.TextIOWrapper(raw, encoding="utf-8") as fh:
            n = 0
            try:
                for n, line in enumerate(fh, 1):
                    yield n, line
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise DataError(
                    f"{path}: truncated or corrupt gzip data after line {n} ({exc}); re-download the file"
                ) from None
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: line {n + 1} is not UTF-8 text ({exc.reason})") from None
    finally:
        raw.close()


def _decode(line: str, path: Path, n: int) -> dict:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: line {n} is not valid JSON ({exc.msg} at column {exc.colno}); expected one "
            f"JSON object per line (truncated or wrong file?)"
        ) from None
    if not isinstance(rec, dict):
        raise DataError(f"{path}: line {n}: expected a JSON object, got {type(rec).__name__}")
    return rec


def _looks_like_object(line: str) -> bool:
    s = line.strip()
    return s.startswith("{") and s.endswith("}")


def _review_fields(rec: dict, path: Path, n: int) -> tuple[str, int, str]:
    asin = rec.get("asin")
    if not isinstance(asin, str) or not asin:
        raise DataError(f"{path}: line {n}: field 'asin' missing or not a string")
    check_item_id(asin, file=path, row=n, field="asin")  # row = line number
    try:
        votes = parse_vote(rec.get("vote"))
    except (TypeError, ValueError):
        raise DataError(f"{path}: line {n}: field 'vote' = {rec.get('vote')!r} is not a vote count") from None
    text = rec.get("reviewText")
    return asin, votes, text if isinstance(text, str) else ""


class _ReviewCounts(NamedTuple):
    """What pass 1 keeps of the review file: totals and per-asin counters of qualifying reviews."""

    reviews: int  # non-blank lines
    products: int  # distinct asins
    low_votes: int  # reviews removed by min_votes
    short: int  # reviews removed by min_review_chars
    qualifying: dict[str, int]  # asin -> qualifying reviews
    top: dict[str, int]  # asin -> highest vote among its qualifying reviews


def _check_options(min_votes: int, category: str) -> None:
    """Refuse a ``min_votes`` below 1 and a category that cannot be a folder name."""
    if min_votes < 1:
        raise DataError(f"min_votes must be >= 1 (a review with 0 votes has no helpfulness label), got {min_votes}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", category):
        raise DataError(f"category {category!r}: use letters, digits, '_', '-' or '.' (it becomes a folder name)")


def _count_reviews(reviews_path: Path, min_votes: int, min_review_chars: int) -> _ReviewCounts:
    """Pass 1: per-asin counters of qualifying reviews; an empty review file is an error."""
    n_reviews = low_votes = short = 0
    count: dict[str, int] = defaultdict(int)
    top: dict[str, int] = defaultdict(int)
    all_asins: set[str] = set()
    for n, line in open_lines(reviews_path):
        if not line.strip():
            continue
        n_reviews += 1
        if '"vote"' not in line:  # no vote key -> 0 votes -> cannot qualify (min_votes >= 1)
            if not _looks_like_object(line):
                _decode(line, reviews_path, n)  # raises with the line number
            m = _ASIN_RE.search(line)
            if m:
                all_asins.add(m.group(1))
            else:
                all_asins.add(_review_fields(_decode(line, reviews_path, n), reviews_path, n)[0])
            low_votes += 1
            continue
        asin, votes, text = _review_fields(_decode(line, reviews_path, n), reviews_path, n)
        all_asins.add(asin)
        if votes < min_votes:
            low_votes += 1
        elif len(text) < min_review_chars:
            short += 1
        else:
            count[asin] += 1
            if votes > top[asin]:
                top[asin] = votes
    if n_reviews == 0:
        raise DataError(f"{reviews_path}: no reviews (empty file)")
    return _ReviewCounts(n_reviews, len(all_asins), low_votes, short, count, top)


def _start_report(
    reviews_path: Path,
    meta_path: Path,
    dataset: str,
    category: str,
    thresholds: dict[str, int],
    counts: _ReviewCounts,
    few: set[str],
    weak: set[str],
) -> dict[str, Any]:
    """The report after pass 1: the settings, what was read, what the review and product rules removed."""
    return {
        "reviews_path": str(reviews_path),
        "meta_path": str(meta_path),
        "dataset": dataset,
        "category": category,
        "thresholds": thresholds,
        "reviews_read": counts.reviews,
        "products_read": counts.products,
        "removed_reviews": {
            "min_votes": counts.low_votes,
            "min_review_chars": counts.short,
            "min_reviews": sum(counts.qualifying[a] for a in few),
            "min_top_votes": sum(counts.qualifying[a] for a in weak),
        },
        "removed_products": {
            "no_qualifying_review": counts.products - len(counts.qualifying),
            "min_reviews": len(few),
            "min_top_votes": len(weak),
        },
    }


def _nothing_left(report: dict[str, Any], stage: str) -> DataError:
    """The error for an empty result: the stage, the thresholds and what each rule removed."""
    t = report["thresholds"]
    return DataError(
        f"{report['reviews_path']}: no product left after {stage} (min_votes={t['min_votes']}, "
        f"min_review_chars={t['min_review_chars']}, min_reviews={t['min_reviews']}, "
        f"min_top_votes={t['min_top_votes']}); removed: reviews {report['removed_reviews']}, "
        f"products {report['removed_products']}. Relax the thresholds "
        f"(e.g. --min-reviews) for a small category."
    )


def _read_metadata(
    meta_path: Path, candidates: set[str]
) -> tuple[dict[str, tuple[str, list[str], list[str]]], int, int]:
    """Pass 2: (name, description, image URLs) of each candidate asin's first metadata record,
    the number of records and of repeated records ignored; an empty metadata file is an error."""
    meta: dict[str, tuple[str, list[str], list[str]]] = {}
    meta_dups = meta_lines = 0
    for n, line in open_lines(meta_path):
        if not line.strip():
            continue
        meta_lines += 1
        m = _ASIN_RE.search(line)
        if m and m.group(1) not in candidates:
            if not _looks_like_object(line):
                _decode(line, meta_path, n)
            continue
        rec = _decode(line, meta_path, n)
        asin = rec.get("asin")
        if asin not in candidates:
            continue
        if asin in meta:
            meta_dups += 1
            continue
        meta[asin] = (
            clean_html(rec.get("title")),
            _text_list(rec.get("description")) or _text_list(rec.get("feature")),
            _meta_images(rec),
        )
    if meta_lines == 0:
        raise DataError(f"{meta_path}: no metadata records (empty file)")
    return meta, meta_lines, meta_dups


def _match_metadata(
    report: dict[str, Any],
    candidates: set[str],
    meta: dict,
    qualifying: dict[str, int],
    meta_lines: int,
    meta_dups: int,
) -> set[str]:
    """The candidates with a metadata record that gives a text; the removed ones counted in ``report``."""
    no_meta = candidates - set(meta)
    no_text = {a for a, (name, desc, _) in meta.items() if not name and not desc}
    report["meta_records"] = meta_lines
    report["meta_repeated_asins_ignored"] = meta_dups
    report["removed_products"].update(no_metadata=len(no_meta), no_text=len(no_text))
    report["removed_reviews"].update(
        no_metadata=sum(qualifying[a] for a in no_meta), no_text=sum(qualifying[a] for a in no_text)
    )
    return candidates - no_meta - no_text


def _read_kept_reviews(
    reviews_path: Path, kept: set[str], min_votes: int, min_review_chars: int
) -> tuple[dict[str, list[tuple]], int]:
    """Pass 3: per kept asin, (text, votes, summary, image URLs, review time) of its qualifying
    reviews in file order, exact duplicates dropped; and the number of duplicates."""
    rows: dict[str, list[tuple]] = defaultdict(list)
    seen: set[tuple] = set()
    dups = 0
    for n, line in open_lines(reviews_path):
        if '"vote"' not in line:
            continue
        m = _ASIN_RE.search(line)
        if m and m.group(1) not in kept:
            continue
        rec = _decode(line, reviews_path, n)
        asin, votes, text = _review_fields(rec, reviews_path, n)
        if asin not in kept or votes < min_votes or len(text) < min_review_chars:
            continue
        key = (rec.get("reviewerID"), asin, rec.get("unixReviewTime"), text)
        if key in seen:
            dups += 1
            continue
        seen.add(key)
        summary = rec.get("summary")
        rows[asin].append(
            (
                text,
                votes,
                summary if isinstance(summary, str) else "",
                _url_list(rec.get("image")),
                str(rec.get("reviewTime") or ""),
            )
        )
    return rows, dups


def _drop_fallen(
    report: dict[str, Any],
    kept: set[str],
    rows: dict[str, list[tuple]],
    dups: int,
    min_reviews: int,
    min_top_votes: int,
) -> set[str]:
    """The kept asins that still pass the product rules once duplicates are gone; counted in ``report``."""
    fallen = {a for a in kept if len(rows[a]) < min_reviews or max((r[1] for r in rows[a]), default=0) < min_top_votes}
    report["removed_reviews"]["duplicate"] = dups
    report["removed_reviews"]["fell_below_after_dedup"] = sum(len(rows[a]) for a in fallen)
    report["removed_products"]["fell_below_after_dedup"] = len(fallen)
    return kept - fallen


def _frames(asins: list[str], meta: dict, rows: dict[str, list[tuple]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The product and review frames in the MRHP columns, products in ``asins`` order."""
    prd_rows, rvw_rows = [], []
    for asin in asins:
        name, desc, urls = meta[asin]
        prd_rows.append(
            {
                "product_id": asin,
                "name": name,
                "description": desc,
                "img_urls": urls,
                "keyword": None,
                "brand_name": None,
            }
        )
        for i, (text, votes, summary, imgs, rtime) in enumerate(rows[asin]):
            rvw_rows.append(
                {
                    "review_id": f"{asin}-{i}",
                    "product_id": asin,
                    "title": summary,
                    "text": text,
                    "label": bin_votes(votes),
                    "img_urls": imgs,
                    "time": rtime,
                }
            )
    return pd.DataFrame(prd_rows), pd.DataFrame(rvw_rows)


def _write_splits(
    out_root: Path, dataset: str, category: str, prd: pd.DataFrame, rvw: pd.DataFrame, split_of: dict[str, str]
) -> dict[str, dict[str, int]]:
    """Write each split's MRHP files; return products and reviews per split."""
    splits = {}
    for split in SPLITS:
        ps = prd[prd["product_id"].map(split_of) == split]
        rs = rvw[rvw["product_id"].map(split_of) == split]
        write_mrhp(out_root, dataset, category, split, ps, rs, variant="amazon")
        splits[split] = {"products": int(len(ps)), "reviews": int(len(rs))}
    return splits


def build_amazon2018(
    reviews_path: str | os.PathLike,
    meta_path: str | os.PathLike,
    out_root: str | os.PathLike,
    category: str,
    *,
    min_votes: int = 1,
    min_review_chars: int = 64,
    min_reviews: int = 20,
    min_top_votes: int = 3,
    seed: int = 0,
    dataset: str = "amazon",
) -> dict[str, Any]:
    """Build ``out_root/dataset/category/`` (three splits) and return the report dict.

    See the module docstring for the rules; the thresholds default to the published ones.
    Raises :class:`DataError` on malformed input or when no product survives the rules.
    """
    _check_options(min_votes, category)
    reviews_path, meta_path, out_root = Path(reviews_path), Path(meta_path), Path(out_root)
    t0 = time.perf_counter()

    counts = _count_reviews(reviews_path, min_votes, min_review_chars)  # pass 1
    few = {a for a, c in counts.qualifying.items() if c < min_reviews}
    weak = {a for a, c in counts.qualifying.items() if c >= min_reviews and counts.top[a] < min_top_votes}
    candidates = set(counts.qualifying) - few - weak
    thresholds = {
        "min_votes": min_votes,
        "min_review_chars": min_review_chars,
        "min_reviews": min_reviews,
        "min_top_votes": min_top_votes,
        "seed": seed,
    }
    report = _start_report(reviews_path, meta_path, dataset, category, thresholds, counts, few, weak)
    if not candidates:
        raise _nothing_left(report, "the review and product rules")

    meta, meta_lines, meta_dups = _read_metadata(meta_path, candidates)  # pass 2
    kept = _match_metadata(report, candidates, meta, counts.qualifying, meta_lines, meta_dups)
    if not kept:
        raise _nothing_left(report, "matching the metadata")

    rows, dups = _read_kept_reviews(reviews_path, kept, min_votes, min_review_chars)  # pass 3
    # duplicates can push a product below the rules again
    kept = _drop_fallen(report, kept, rows, dups, min_reviews, min_top_votes)
    if not kept:
        raise _nothing_left(report, "removing duplicate reviews")

    asins = sorted(kept)
    split_of = split_by_product(asins, seed=seed)
    prd, rvw = _frames(asins, meta, rows)
    del rows
    report["splits"] = _write_splits(out_root, dataset, category, prd, rvw, split_of)
    report["labels"] = {int(k): int(v) for k, v in sorted(rvw["label"].value_counts().items())}
    report["products_kept"] = len(prd)
    report["reviews_kept"] = len(rvw)
    report["reviews_with_images"] = int((rvw["img_urls"].map(len) > 0).sum())
    report["seconds"] = round(time.perf_counter() - t0, 3)
    report["out"] = str(out_root / dataset / category)
    atomic_write_json(out_root / dataset / category / "build_report.json", report)
    return report


def format_report(rep: dict[str, Any]) -> str:
    """A few readable lines of a build report."""
    lines = [
        f"read {rep['reviews_read']:,} reviews of {rep['products_read']:,} products",
        "reviews removed: " + ", ".join(f"{k} {v:,}" for k, v in rep["removed_reviews"].items()),
        "products removed: " + ", ".join(f"{k} {v:,}" for k, v in rep["removed_products"].items()),
        f"kept {rep['products_kept']:,} products / {rep['reviews_kept']:,} reviews; "
        + "; ".join(f"{s} {v['products']:,}/{v['reviews']:,}" for s, v in rep["splits"].items())
        + " (#P/#R)",
        f"labels {rep['labels']}; reviews with image URLs {rep['reviews_with_images']:,}",
        f"wrote {rep['out']}",
    ]
    return "\n".join(lines)


def cli_main(argv: list[str], prog: str = "mmss build-amazon2018") -> int:
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Build an Amazon-MRHP-style dataset (three splits) "
        "from one category of the Amazon Review Data 2018.",
    )
    ap.add_argument("--reviews", required=True, help="the category's review file (JSON lines, .gz or not)")
    ap.add_argument("--meta", required=True, help="the category's metadata file (JSON lines, .gz or not)")
    ap.add_argument("--out", required=True, help="data root; writes OUT/DATASET/CATEGORY/")
    ap.add_argument("--category", required=True, help="category folder name, e.g. clothing")
    ap.add_argument("--dataset", default="amazon", help="dataset folder name (default amazon)")
    ap.add_argument("--min-votes", type=int, default=1, help="a review needs >= this many votes (default 1)")
    ap.add_argument(
        "--min-review-chars", type=int, default=64, help="a review needs >= this many characters (default 64)"
    )
    ap.add_argument(
        "--min-reviews", type=int, default=20, help="a product needs >= this many qualifying reviews (default 20)"
    )
    ap.add_argument(
        "--min-top-votes",
        type=int,
        default=3,
        help="a product needs a review with >= this many votes (default 3: 'more than 2 votes')",
    )
    ap.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    a = ap.parse_args(argv)
    rep = build_amazon2018(
        a.reviews,
        a.meta,
        a.out,
        a.category,
        min_votes=a.min_votes,
        min_review_chars=a.min_review_chars,
        min_reviews=a.min_reviews,
        min_top_votes=a.min_top_votes,
        seed=a.seed,
        dataset=a.dataset,
    )
    print(format_report(rep))
    return 0
