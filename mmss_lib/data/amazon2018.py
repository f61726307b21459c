"""Build an Amazon-MRHP-style dataset from the Amazon review data: 2018 (Ni, Li, McAuley 2019),
and the 2014 and 2023 releases.

``mmss build-amazon2018 --reviews R --meta M --out ROOT --category NAME`` reads one category's
review file and metadata file (JSON lines, gzipped or not) and writes the three splits in the
released MRHP format (:func:`mmss_lib.data.mrhp.write_mrhp`), following the construction of
Amazon-MRHP. ``mmss build-amazon --format {2014,2018,2023}`` does the same for any release: one
command and one code path, so that the rules, the report and the errors are the same whichever
dump a user has; only the field names differ (:data:`FORMATS`):

- 2018: ``vote`` (a string such as ``"1,234"``), ``reviewText``, ``summary``, review ``image``
  (URLs); metadata ``title``, ``description`` / ``feature``, ``image`` or ``imageURL(HighRes)``;
- 2014: ``helpful: [helpful votes, total votes]`` (the first is the count), no review images;
  metadata ``imUrl`` (one URL) and ``description`` (a string); the metadata lines are Python dict
  literals (``{'asin': ...}``), read with ``ast.literal_eval`` (no code runs) where not JSON;
- 2023: ``helpful_vote``, ``text``, ``title``; reviews join the metadata by ``parent_asin`` (the
  product), review ``images`` are dicts of several sizes (the largest URL kept, videos skipped);
  metadata ``title``, ``description`` / ``features``, ``images`` dicts (``hi_res``, else
  ``large``, else ``thumb``); the review time is the ``timestamp`` (ms) as a UTC date.

The rules:

- a review qualifies with ``vote >= min_votes`` (default 1; absent = 0; a negative or
  fractional vote is an error) and ``len(reviewText) >= min_review_chars`` (default 64);
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from mmss_lib.data.mrhp import SPLITS, bin_votes, check_item_id, split_by_product, write_mrhp
from mmss_lib.errors import DataError
from mmss_lib.utils import atomic_write_json

_TAG_RE = re.compile(r"<[^>]*(?:>|$)")
_THUMB_RE = re.compile(r"\._[A-Za-z0-9,_]+_?\.(jpg|jpeg|png|gif|webp)$", re.IGNORECASE)
_WS_RE = re.compile(r"\s+")


# ----------------------------------------------------------------------------- field helpers


def parse_vote(value: Any) -> int:
    """``"1,234"`` -> 1234; absent / empty / None -> 0; ints pass through. A negative count, a
    fraction (``2.7``) or anything else that is not a count raises ValueError.

    >>> parse_vote("1,234"), parse_vote(None), parse_vote(7), parse_vote(3.0)
    (1234, 0, 7, 3)
    """
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise ValueError(f"vote {value!r} is not a count")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"vote {value!r} is not a whole number")
        value = int(value)
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        n = int(value.replace(",", "").strip())
    else:
        raise TypeError(f"vote {value!r} is not a count")
    if n < 0:
        raise ValueError(f"vote {value!r} is negative")
    return n


def parse_helpful_2014(value: Any) -> int:
    """2014 ``helpful: [yes, total]`` -> yes (the helpful votes); absent -> 0.

    >>> parse_helpful_2014([2, 3]), parse_helpful_2014(None)
    (2, 0)
    """
    if value is None:
        return 0
    if (
        not isinstance(value, list)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value)
        or value[0] > value[1]
    ):
        raise ValueError(f"{value!r} is not [helpful votes, total votes]")
    return value[0]


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


def _dict_urls(value: Any, keys: tuple[str, ...]) -> list[str]:
    """URLs of a list of image dicts (2023): per dict the first of ``keys`` that holds a URL;
    dicts of another ``attachment_type`` than IMAGE (videos) are skipped."""
    if not isinstance(value, list):
        return []
    urls = []
    for d in value:
        if not isinstance(d, dict) or str(d.get("attachment_type", "IMAGE")).upper() != "IMAGE":
            continue
        u = next((d[k] for k in keys if isinstance(d.get(k), str) and d[k].strip()), None)
        if u is not None:
            urls.append(u)
    return _url_list(urls)


def _iso_day(ms: Any) -> str:
    """2023 ``timestamp`` (milliseconds since 1970) -> ``YYYY-MM-DD`` (UTC); other values -> ``""``."""
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0 <= ms < 1e14:
        return ""
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


class AmazonFormat(NamedTuple):
    """How one release of the Amazon review data names the fields the builder reads."""

    name: str
    key: str  # product id in reviews and metadata
    vote_field: str
    votes: Callable[[Any], int]  # the vote field's value -> count (ValueError / TypeError when bad)
    text: str
    summary: str
    review_images: Callable[[dict], list[str]]
    review_time: Callable[[dict], str]
    reviewer: str
    unix_time: str
    meta_title: str
    meta_description: Callable[[dict], list[str]]
    meta_images: Callable[[dict], list[str]]
    python_literals: bool = False  # metadata lines may be Python dict literals (the 2014 files)


FORMATS: dict[str, AmazonFormat] = {
    # Ni, Li, McAuley 2019: vote "1,234", review image [urls], metadata image / imageURL(HighRes)
    "2018": AmazonFormat(
        "2018",
        "asin",
        "vote",
        parse_vote,
        "reviewText",
        "summary",
        lambda r: _url_list(r.get("image")),
        lambda r: str(r.get("reviewTime") or ""),
        "reviewerID",
        "unixReviewTime",
        "title",
        lambda m: _text_list(m.get("description")) or _text_list(m.get("feature")),
        _meta_images,
    ),
    # McAuley et al. 2015/2016: helpful [yes, total], no review images, metadata imUrl (one URL);
    # the metadata files are Python dict literals ({'asin': ...}), not JSON
    "2014": AmazonFormat(
        "2014",
        "asin",
        "helpful",
        parse_helpful_2014,
        "reviewText",
        "summary",
        lambda r: [],
        lambda r: str(r.get("reviewTime") or ""),
        "reviewerID",
        "unixReviewTime",
        "title",
        lambda m: _text_list(m.get("description")),
        lambda m: _url_list(m.get("imUrl")),
        python_literals=True,
    ),
    # Hou et al. 2024 (Amazon Reviews 2023): helpful_vote, parent_asin joins the metadata, review
    # images as dicts of several sizes, metadata images as dicts (hi_res / large / thumb)
    "2023": AmazonFormat(
        "2023",
        "parent_asin",
        "helpful_vote",
        parse_vote,
        "text",
        "title",
        lambda r: _dict_urls(r.get("images"), ("large_image_url", "medium_image_url", "small_image_url")),
        lambda r: _iso_day(r.get("timestamp")),
        "user_id",
        "timestamp",
        "title",
        lambda m: _text_list(m.get("description")) or _text_list(m.get("features")),
        lambda m: _dict_urls(m.get("images"), ("hi_res", "large", "thumb")),
    ),
}


def _key_re(fmt: AmazonFormat) -> re.Pattern:
    """A regex that reads the product id of a line without decoding it."""
    if fmt.python_literals:
        return re.compile(r"""["']""" + fmt.key + r"""["']:\s*["']([^"'\\]*)["']""")
    return re.compile(r'"' + fmt.key + r'":\s*"([^"\\]*)"')


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


def _decode(line: str, path: Path, n: int, python_literals: bool = False) -> dict:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        rec = _literal(line) if python_literals else None
        if rec is not None:
            return rec
        raise DataError(
            f"{path}: line {n} is not valid JSON ({exc.msg} at column {exc.colno}); expected one "
            f"JSON object per line (truncated or wrong file?)"
        ) from None
    if not isinstance(rec, dict):
        raise DataError(f"{path}: line {n}: expected a JSON object, got {type(rec).__name__}")
    return rec


def _literal(line: str) -> dict | None:
    """A Python dict literal (the 2014 metadata lines), read without running code; None if not one."""
    import ast

    try:
        rec = ast.literal_eval(line.strip())
    except (ValueError, SyntaxError, RecursionError, MemoryError, TypeError):
        return None
    return rec if isinstance(rec, dict) else None


def _looks_like_object(line: str) -> bool:
    s = line.strip()
    return s.startswith("{") and s.endswith("}")


def _review_fields(rec: dict, path: Path, n: int, fmt: AmazonFormat = FORMATS["2018"]) -> tuple[str, int, str]:
    asin = rec.get(fmt.key)
    if not isinstance(asin, str) or not asin:
        raise DataError(f"{path}: line {n}: field {fmt.key!r} missing or not a string")
    check_item_id(asin, file=path, row=n, field=fmt.key)  # row = line number
    try:
        votes = fmt.votes(rec.get(fmt.vote_field))
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{path}: line {n}: field {fmt.vote_field!r} = {rec.get(fmt.vote_field)!r:.60} is not a vote count ({exc}); "
            + (
                "expected [helpful votes, total votes], whole numbers, helpful <= total"
                if fmt.votes is parse_helpful_2014
                else "expected a whole number >= 0" + (" or a string such as '1,234'" if fmt.name == "2018" else "")
            )
        ) from None
    text = rec.get(fmt.text)
    return asin, votes, text if isinstance(text, str) else ""


class _ReviewCounts(NamedTuple):
    """What pass 1 keeps of the review file: totals and per-asin counters of qualifying reviews."""

    reviews: int  # non-blank lines
    products: int  # distinct asins
    low_votes: int  # reviews removed by min_votes
    short: int  # reviews removed by min_review_chars
    qualifying: dict[str, int]  # asin -> qualifying reviews
    top: dict[str, int]  # asin -> highest vote among its qualifying reviews


def check_folder_name(value: Any, option: str) -> str:
    """A dataset or category name that is one plain folder (no ``/``, ``.``, ``..`` or hidden
    name: the output stays inside the data root); else a DataError naming ``option``."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
        raise DataError(
            f"{option} {value!r}: use letters, digits, '_', '-' or '.', starting with a letter or digit "
            "(it becomes one folder name under the data root)"
        )
    return value


def _check_options(min_votes: int, category: str, **ints: int) -> None:
    """Refuse a ``min_votes`` below 1, negative thresholds, and names that cannot be folder names."""
    if isinstance(min_votes, bool) or not isinstance(min_votes, int) or min_votes < 1:
        raise DataError(f"min_votes must be >= 1 (a review with 0 votes has no helpfulness label), got {min_votes}")
    for name, (value, low) in ints.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise DataError(f"{name} (--{name.replace('_', '-')}) must be an integer >= {low}, got {value!r}")
    check_folder_name(category, "category")


def _count_reviews(
    reviews_path: Path, min_votes: int, min_review_chars: int, fmt: AmazonFormat = FORMATS["2018"]
) -> _ReviewCounts:
    """Pass 1: per-asin counters of qualifying reviews; an empty review file is an error."""
    token, key_re = f'"{fmt.vote_field}"', _key_re(fmt)
    n_reviews = low_votes = short = 0
    count: dict[str, int] = defaultdict(int)
    top: dict[str, int] = defaultdict(int)
    all_asins: set[str] = set()
    for n, line in open_lines(reviews_path):
        if not line.strip():
            continue
        n_reviews += 1
        if token not in line and token.replace('"', "'") not in line:
            # no vote key -> 0 votes -> cannot qualify (min_votes >= 1)
            if not _looks_like_object(line):
                _decode(line, reviews_path, n)  # raises with the line number
            m = key_re.search(line)
            if m:
                all_asins.add(m.group(1))
            else:
                all_asins.add(_review_fields(_decode(line, reviews_path, n), reviews_path, n, fmt)[0])
            low_votes += 1
            continue
        asin, votes, text = _review_fields(_decode(line, reviews_path, n, fmt.python_literals), reviews_path, n, fmt)
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
    meta_path: Path, candidates: set[str], fmt: AmazonFormat = FORMATS["2018"]
) -> tuple[dict[str, tuple[str, list[str], list[str]]], int, int]:
    """Pass 2: (name, description, image URLs) of each candidate asin's first metadata record,
    the number of records and of repeated records ignored; an empty metadata file is an error."""
    meta: dict[str, tuple[str, list[str], list[str]]] = {}
    meta_dups = meta_lines = 0
    key_re = _key_re(fmt)
    for n, line in open_lines(meta_path):
        if not line.strip():
            continue
        meta_lines += 1
        m = key_re.search(line)
        if m and m.group(1) not in candidates:
            if not _looks_like_object(line):
                _decode(line, meta_path, n, fmt.python_literals)
            continue
        rec = _decode(line, meta_path, n, fmt.python_literals)
        asin = rec.get(fmt.key)
        if asin not in candidates:
            continue
        if asin in meta:
            meta_dups += 1
            continue
        meta[asin] = (clean_html(rec.get(fmt.meta_title)), fmt.meta_description(rec), fmt.meta_images(rec))
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
    reviews_path: Path, kept: set[str], min_votes: int, min_review_chars: int, fmt: AmazonFormat = FORMATS["2018"]
) -> tuple[dict[str, list[tuple]], int]:
    """Pass 3: per kept asin, (text, votes, summary, image URLs, review time) of its qualifying
    reviews in file order, exact duplicates dropped; and the number of duplicates."""
    rows: dict[str, list[tuple]] = defaultdict(list)
    seen: set[tuple] = set()
    dups = 0
    token, key_re = f'"{fmt.vote_field}"', _key_re(fmt)
    for n, line in open_lines(reviews_path):
        if token not in line and token.replace('"', "'") not in line:
            continue
        m = key_re.search(line)
        if m and m.group(1) not in kept:
            continue
        rec = _decode(line, reviews_path, n, fmt.python_literals)
        asin, votes, text = _review_fields(rec, reviews_path, n, fmt)
        if asin not in kept or votes < min_votes or len(text) < min_review_chars:
            continue
        key = (rec.get(fmt.reviewer), asin, rec.get(fmt.unix_time), text)
        if key in seen:
            dups += 1
            continue
        seen.add(key)
        summary = rec.get(fmt.summary)
        rows[asin].append(
            (text, votes, summary if isinstance(summary, str) else "", fmt.review_images(rec), fmt.review_time(rec))
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


def build_amazon(
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
    format: str = "2018",
) -> dict[str, Any]:
    """Build ``out_root/dataset/category/`` (three splits) from the files of one Amazon release
    (``format``: a key of :data:`FORMATS`) and return the report dict.

    See the module docstring for the rules; the thresholds default to the published ones.
    Raises :class:`DataError` on bad options, malformed input or when no product survives the rules.
    """
    if format not in FORMATS:
        raise DataError(f"format {format!r} (--format): expected one of {', '.join(FORMATS)}")
    fmt = FORMATS[format]
    _check_options(
        min_votes,
        category,
        min_review_chars=(min_review_chars, 0),
        min_reviews=(min_reviews, 1),
        min_top_votes=(min_top_votes, 0),
        seed=(seed, 0),
    )
    check_folder_name(dataset, "dataset")
    reviews_path, meta_path, out_root = Path(reviews_path), Path(meta_path), Path(out_root)
    t0 = time.perf_counter()

    counts = _count_reviews(reviews_path, min_votes, min_review_chars, fmt)  # pass 1
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
    report["format"] = fmt.name
    if not candidates:
        raise _nothing_left(report, "the review and product rules")

    meta, meta_lines, meta_dups = _read_metadata(meta_path, candidates, fmt)  # pass 2
    kept = _match_metadata(report, candidates, meta, counts.qualifying, meta_lines, meta_dups)
    if not kept:
        raise _nothing_left(report, "matching the metadata")

    rows, dups = _read_kept_reviews(reviews_path, kept, min_votes, min_review_chars, fmt)  # pass 3
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


def build_amazon2018(reviews_path, meta_path, out_root, category: str, **kw) -> dict[str, Any]:
    """:func:`build_amazon` on the Amazon Review Data 2018 files (``format="2018"``)."""
    return build_amazon(reviews_path, meta_path, out_root, category, **kw)


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
    """``mmss build-amazon --format {2014,2018,2023}`` and ``mmss build-amazon2018`` (format 2018)."""
    generic = not prog.endswith("2018")
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Build an Amazon-MRHP-style dataset (three splits) from one category of the Amazon "
        + ("review data of 2014, 2018 or 2023 (--format)." if generic else "Review Data 2018."),
    )
    ap.add_argument(
        "--format",
        choices=tuple(FORMATS),
        required=generic,
        default=None if generic else "2018",
        help="release of the files: 2014 (helpful [yes, total], imUrl), 2018 (vote, image), "
        "2023 (helpful_vote, parent_asin, image dicts)",
    )
    ap.add_argument("--reviews", required=True, help="the category's review file (JSON lines, .gz or not)")
    ap.add_argument("--meta", required=True, help="the category's metadata file (JSON lines, .gz or not)")
    ap.add_argument("--out", required=True, help="data root; writes OUT/DATASET/CATEGORY/")
    ap.add_argument("--category", required=True, help="category folder name, e.g. clothing")
    ap.add_argument("--dataset", default="amazon", help="dataset folder name under --out (default amazon)")
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
        format=a.format,
    )
    print(format_report(rep))
    return 0
