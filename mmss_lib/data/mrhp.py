"""MRHP datasets on disk: loader, writer, statistics (paper Table 3) and ``mmss stats``.

The released Amazon-MRHP and Lazada-MRHP datasets (docs/MRHP.md section 1) are pandas
``DataFrame.to_json()`` dumps in the default column orientation, ``{"column": {"row": value}}``,
three files per split::

    {root}/{dataset}/{category}/{category}.prd.{split}   product_id, name, description, img_url, keyword, brand_name
    {root}/{dataset}/{category}/{category}.rvw.{split}   product_id, review_id, title, content, img_url (+ time)
    {root}/{dataset}/{category}/{category}.rel.{split}   product_id, review_id, upvotes (+ rating on Lazada)

:func:`load_mrhp` reads every field variant and returns one normalised schema
(docs/ARCHITECTURE.md):

- ``products``: ``product_id, name, text, img_urls, image_files``
- ``reviews``:  ``review_id, product_id, text, label, img_urls, image_files``

Field variants handled (detected per value, not per dataset name):

- ``img_url``: a list of URLs (Amazon), a JSON string holding such a list (Lazada products), a
  JSON string of a list of ``{"url": ...}`` dicts (Lazada reviews), or null / ``""`` (no images).
- ``description``: a list of strings (Amazon; empty strings dropped, the rest joined by a space),
  a string, or null.
- ids written as JSON numbers are read as strings.

Model text (docs/MRHP.md section 1): product = ``name + " " + description`` (Lazada clothing:
``name`` only); review = ``content`` (the review ``title`` is not used).

Labels (``rel.upvotes``) must be integers in 0..4. Raw vote counts are binned only when the
caller asks (``bin_votes=True``) with the published binning ``>=16 -> 4, 8..15 -> 3, 4..7 -> 2,
2..3 -> 1, 1 -> 0``; reviews with 0 votes are then dropped and the number dropped is recorded in
``reviews.attrs["dropped_zero_votes"]``.

Policies for bad input (each a :class:`~mmss_lib.errors.DataError` naming the file and the row
or field): a missing split file, a truncated / non-JSON file, a missing column, columns whose
row indices differ, a review whose product is not in the product file, a review without a
relation row (and vice versa), duplicate review or product ids, a non-string text or one that
shows nothing (only whitespace, control characters such as NUL, or zero-width characters),
a label that is not an integer, labels outside 0..4 (without ``bin_votes``), an id that is
not ASIN- or number-based (path separators, ``..``, NUL or control characters, empty:
:func:`check_item_id`), a file in another JSON orientation (``orient='index'`` is named as such),
a JSON object key given twice (a row key in a column: ``json`` would keep the last entry and lose
a row), a label too large to be a vote count (``1e300``). A product without any review is counted
and named in a warning (once per file; ``attrs["without_reviews"]`` of the products frame).
Texts are not length-limited here (a 10 MB review loads as is); encoders truncate them to their
maximum length (:mod:`mmss_lib.features.text`).

Local images (optional): ``{root}/{dataset}/{category}/images/{prd|rvw}/{item_id}/*.{jpg,jpeg,png,webp}``,
sorted by file name. Items without images are normal; ``attrs["image_counts"]`` of each frame
says how many items have local image files and how many do not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mmss_lib.errors import DataError
from mmss_lib.utils import atomic_path

SPLITS: tuple[str, ...] = ("train", "dev", "test")
KINDS: tuple[str, ...] = ("prd", "rvw", "rel")
CATEGORIES: tuple[str, ...] = ("clothing", "electronics", "home")
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp")
LABELS: tuple[int, ...] = (0, 1, 2, 3, 4)

PRODUCT_COLUMNS: tuple[str, ...] = ("product_id", "name", "text", "img_urls", "image_files")
REVIEW_COLUMNS: tuple[str, ...] = ("review_id", "product_id", "text", "label", "img_urls", "image_files")

# Columns the loader needs in each released file (others are ignored).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "prd": ("product_id", "name", "description", "img_url"),
    "rvw": ("product_id", "review_id", "content", "img_url"),
    "rel": ("product_id", "review_id", "upvotes"),
}

_THRESHOLDS = {"amazon": 1, "demo": 1, "lazada": 0}


def default_threshold(dataset: str) -> int:
    """Relevance threshold of the evaluation protocol: a review is relevant when ``label > th``.

    >>> default_threshold("amazon"), default_threshold("demo"), default_threshold("lazada")
    (1, 1, 0)
    """
    try:
        return _THRESHOLDS[dataset]
    except KeyError:
        raise DataError(f"unknown dataset {dataset!r}: expected one of {', '.join(_THRESHOLDS)}") from None


def bin_votes(votes: int) -> int:
    """The published binning of raw helpful-vote counts into the 0..4 label.

    ``>=16 -> 4, 8..15 -> 3, 4..7 -> 2, 2..3 -> 1, 1 -> 0``; 0 votes has no label (the review
    is dropped by the dataset construction), so it raises ``ValueError``.

    >>> [bin_votes(v) for v in (1, 2, 3, 4, 7, 8, 15, 16, 1000)]
    [0, 1, 1, 2, 2, 3, 3, 4, 4]
    """
    if votes >= 16:
        return 4
    if votes >= 8:
        return 3
    if votes >= 4:
        return 2
    if votes >= 2:
        return 1
    if votes == 1:
        return 0
    raise ValueError(f"a review with {votes} votes has no helpfulness label (needs >= 1 vote)")


def split_file(root: str | os.PathLike, dataset: str, category: str, kind: str, split: str) -> Path:
    """Path of ``{root}/{dataset}/{category}/{category}.{kind}.{split}``."""
    return Path(root) / dataset / category / f"{category}.{kind}.{split}"


def image_dir(root: str | os.PathLike, dataset: str, category: str, kind: str) -> Path:
    """Folder holding one sub-folder of local images per item: ``.../images/{prd|rvw}``."""
    return Path(root) / dataset / category / "images" / kind


def split_sizes(n_products: int, *, test_frac: float = 0.2, dev_frac: float = 0.2) -> dict[str, int]:
    """Products per split that :func:`split_by_product` gives ``n_products`` products: ``ceil(test_frac
    * n)`` to test, ``ceil(dev_frac * rest)`` of the rest to dev, the remainder to train. Callers
    that write a dataset check every count is >= 1 before writing (``mmss make-demo``).

    >>> split_sizes(40), split_sizes(40, dev_frac=0.99)
    ({'train': 25, 'dev': 7, 'test': 8}, {'train': 0, 'dev': 32, 'test': 8})
    """
    n_test = math.ceil(test_frac * n_products) if n_products else 0
    rest = n_products - n_test
    n_dev = math.ceil(dev_frac * rest) if rest else 0
    return {"train": rest - n_dev, "dev": n_dev, "test": n_test}


def split_by_product(
    product_ids: Sequence[str], *, seed: int = 0, test_frac: float = 0.2, dev_frac: float = 0.2
) -> dict[str, str]:
    """Product-level split (docs/MRHP.md section 1): ``test_frac`` of the products to test, then
    ``dev_frac`` of the rest to dev, the remainder to train (counts: :func:`split_sizes`).

    Each step follows scikit-learn's ``train_test_split(ids, test_size=frac, random_state=seed)``
    (a ``RandomState(seed).permutation``; the first ``ceil(frac * n)`` permuted items are held
    out), so it is deterministic in ``seed`` and the order of ``product_ids``.
    Returns ``{product_id: "train"|"dev"|"test"}``.
    """
    import numpy as np

    ids = list(product_ids)
    if len(set(ids)) != len(ids):
        raise DataError("split_by_product: product ids must be unique")
    sizes = split_sizes(len(ids), test_frac=test_frac, dev_frac=dev_frac)

    def _hold_out(items: list[str], n_out: int) -> tuple[list[str], list[str]]:
        perm = np.random.RandomState(seed).permutation(len(items))
        return [items[i] for i in perm[n_out:]], [items[i] for i in perm[:n_out]]

    rest, test = _hold_out(ids, sizes["test"])
    train, dev = _hold_out(rest, sizes["dev"])
    out = {p: "train" for p in train}
    out.update({p: "dev" for p in dev})
    out.update({p: "test" for p in test})
    return out


# ----------------------------------------------------------------------------- reading


_WARNED_NO_REVIEWS: set = set()  # product files warned about (once per process)


def _unique_keys(path: Path):
    """``object_pairs_hook`` of the split files: a key given twice in one JSON object (a row key in a
    column, or a column) is a :class:`DataError` naming the file and the key; ``json`` kept the last
    entry, so a review vanished without a word."""

    def hook(pairs):
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set = set()
            dup = next(k for k, _ in pairs if k in seen or seen.add(k))
            where = "row key" if all(not isinstance(v, dict) for _, v in pairs) else "column"
            raise DataError(
                f"{path}: {where} {dup!r} appears twice in one JSON object (the last entry would silently "
                "replace the first: a row lost); give every row its own key"
            )
        return obj

    return hook


def _read_column_json(path: Path, required: Iterable[str]) -> tuple[list[str], dict[str, list[Any]]]:
    """Read a ``to_json()`` column-oriented file -> (row keys in file order, {column: values}).

    Rows are ordered by the integer value of their index when every index is an integer (the
    released files), else kept in file order. Every column must hold the same row indices.
    """
    if not path.exists():
        folder = path.parent
        present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        hint = (
            f" (the folder holds: {', '.join(present[:12])})" if present else f" (folder {folder} is missing or empty)"
        )
        raise DataError(f"{path}: split file not found{hint}")
    try:
        with open(path, "rb") as fh:
            obj = json.load(fh, object_pairs_hook=_unique_keys(path))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: not valid JSON (truncated or corrupt file?) at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason}); expected a pandas to_json() dump") from None
    if not isinstance(obj, dict) or not all(isinstance(v, dict) for v in obj.values()):
        raise DataError(
            f"{path}: expected a pandas to_json() dump in column orientation "
            '({"column": {"row": value}}), got ' + type(obj).__name__
        )
    missing = [c for c in required if c not in obj]
    if missing:
        inner = next(iter(obj.values()), {})
        if obj and all(c in inner for c in required):  # rows outside, columns inside
            raise DataError(
                f'{path}: looks like a pandas to_json(orient=\'index\') dump ({{"row": {{"column": '
                f'value}}}}); expected the default column orientation ({{"column": {{"row": value}}}}): '
                f"write it with DataFrame.to_json() without orient"
            )
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found: {', '.join(obj) or 'none'}")
    cols = list(required)
    keys = list(obj[cols[0]].keys())
    key_set = set(keys)
    for c in cols[1:]:
        if set(obj[c].keys()) != key_set:
            diff = sorted(set(obj[c].keys()) ^ key_set)[:5]
            raise DataError(
                f"{path}: column {c!r} and column {cols[0]!r} hold different rows "
                f"(e.g. row {', '.join(diff)}); expected one value per row in every column"
            )
    try:
        keys.sort(key=int)
    except ValueError:
        pass  # non-integer row labels: keep file order
    return keys, {c: [obj[c][k] for k in keys] for c in cols}


def _claim_id(seen: dict, item_id: str, path, row: str, field: str) -> None:
    """Record ``item_id`` as read at ``row``; a second occurrence is a DataError naming both rows."""
    if item_id in seen:
        raise DataError(f"{path}: duplicate {field} {item_id!r} in rows {seen[item_id]} and {row}")
    seen[item_id] = row


def check_item_id(value: Any, *, file: Any, row: Any, field: str) -> str:
    """Validate one item id as read from ``file`` (row ``row``, field ``field``); return it as a string.

    MRHP ids are ASIN- or number-based (``B00X1234``, ``B00X1234-3``, ``17``), and they name
    folders (``images/{prd|rvw}/{item_id}/``, importer sources), so an id is refused with a
    :class:`DataError` naming the file, row and field when it is not a string or an integer
    (JSON numbers with an integral value count as integers), or when it is empty, ``.`` or
    contains a path separator (``/`` or ``\\``), ``..``, a NUL or any other control character.
    Policy documented here; callers: :func:`load_mrhp` (prd/rvw/rel ids),
    :mod:`mmss_lib.data.amazon2018` (``asin``), :mod:`mmss_lib.predict` (``review_id`` of the input)
    and :mod:`mmss_lib.features.importers` (item ids).

    >>> check_item_id(17.0, file="x.rel.train", row="0", field="review_id")
    '17'
    >>> check_item_id("../etc", file="x.rvw.train", row="3", field="review_id")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mmss_lib.errors.DataError: x.rvw.train: row 3, field 'review_id': id '../etc' contains '/' ...
    """
    where = f"{file}: row {row}, field {field!r}"
    if (
        isinstance(value, bool)
        or value is None
        or (isinstance(value, float) and not value.is_integer())
        or not isinstance(value, (str, int, float))
    ):
        raise DataError(f"{where}: expected an id (string or integer), got {type(value).__name__} {value!r:.60}")
    if isinstance(value, float):
        value = int(value)
    s = str(value)
    if not s.strip():
        raise DataError(f"{where}: empty id; expected an ASIN- or number-based id")
    for bad, what in (("/", "'/'"), ("\\", "'\\'"), ("..", "'..'")):
        if bad in s:
            raise DataError(
                f"{where}: id {s[:60]!r} contains {what} (a path separator or parent reference); "
                f"expected an ASIN- or number-based id (ids name image folders)"
            )
    ctrl = next((c for c in s if ord(c) < 32 or 127 <= ord(c) < 160), None)
    if ctrl is not None:
        raise DataError(
            f"{where}: id {s[:60]!r} contains the control character {ctrl!r}; expected an ASIN- or number-based id"
        )
    if s == ".":
        raise DataError(f"{where}: id '.' names the current folder; expected an ASIN- or number-based id")
    return s


def _as_id(value: Any, path: Path, row: str, field: str) -> str:
    return check_item_id(value, file=path, row=row, field=field)


def _as_text(value: Any, path: Path, row: str, field: str) -> str:
    if not isinstance(value, str):
        raise DataError(
            f"{path}: row {row}, field {field!r}: expected a non-empty string, got {type(value).__name__} {value!r:.60}"
        )
    if not visible_text(value):
        raise DataError(
            f"{path}: row {row}, field {field!r}: empty text (only whitespace, control or "
            "invisible characters); every item needs a non-empty text"
        )
    return value


# characters that print nothing: zero-width space / joiners, word joiner, BOM, soft hyphen, and
# every control character (C0 incl. NUL, DEL, C1; tab and newlines are whitespace as well)
_INVISIBLE = dict.fromkeys(
    [*map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), *range(0x20), 0x7F, *range(0x80, 0xA0)], None
)


def visible_text(value: str) -> str:
    """``value`` without whitespace, control characters (NUL, ESC, ...) and invisible characters
    (zero-width space, BOM, ...): empty for a text that shows nothing. The loader and ``mmss
    predict`` refuse such texts alike."""
    return value.translate(_INVISIBLE).strip()


def check_disjoint_splits(
    root: str | os.PathLike, dataset: str, category: str, ids: dict[str, tuple[Sequence[str], Sequence[str]]]
) -> None:
    """Leakage check of the released splits: ``ids`` maps split -> (product ids, review ids); a
    product id or a review id found in two splits is a :class:`DataError` naming the ids (up to 5)
    and both split files."""
    names = list(ids)
    for col, kind, what in ((0, "prd", "product id"), (1, "rvw", "review id")):
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                both = sorted(set(map(str, ids[a][col])) & set(map(str, ids[b][col])))
                if both:
                    shown = ", ".join(repr(x) for x in both[:5]) + (
                        f" and {len(both) - 5} more" if len(both) > 5 else ""
                    )
                    raise DataError(
                        f"{split_file(root, dataset, category, kind, a)} and {split_file(root, dataset, category, kind, b)}: "
                        f"{len(both)} {what}(s) in both the {a} and the {b} split ({shown}); the splits must be "
                        "disjoint (leakage between training and evaluation): remove them from one split"
                    )


def _description_text(value: Any, path: Path, row: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return " ".join(v.strip() for v in value if v.strip())
    raise DataError(
        f"{path}: row {row}, field 'description': expected a list of strings, a string or null, got {value!r:.80}"
    )


def parse_img_urls(value: Any, *, where: str = "img_url") -> list[str]:
    """Normalise every ``img_url`` variant to a list of URL strings (see the module docstring).

    >>> parse_img_urls('[{"url": "http://x/1.jpg"}]'), parse_img_urls(["a", "b"]), parse_img_urls(None)
    (['http://x/1.jpg'], ['a', 'b'], [])
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        s = value.strip()
        if not s:
            return []
        if s[0] in "[{":
            try:
                value = json.loads(s)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{where}: a JSON-encoded image list that does not parse ({exc.msg}): {s[:80]!r}"
                ) from None
        else:
            return [s]  # a single bare URL
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise DataError(f"{where}: expected a list of URLs, a JSON string of one, or null; got {value!r:.80}")
    out = []
    for v in value:
        if isinstance(v, dict):
            v = v.get("url")
        if not isinstance(v, str):
            raise DataError(f'{where}: expected URL strings or {{"url": ...}} dicts, got {v!r:.80}')
        if v:
            out.append(v)
    return out


def _local_images(root: Path, dataset: str, category: str, kind: str, item_ids: list[str]) -> list[list[str]]:
    """Absolute paths of each item's local image files (sorted by name; [] when none)."""
    base = image_dir(root, dataset, category, kind)
    if not base.is_dir():
        return [[] for _ in item_ids]
    with os.scandir(base) as it:
        present = {e.name for e in it if e.is_dir()}
    out = []
    for item in item_ids:
        if item not in present:
            out.append([])
            continue
        d = base / item
        files = sorted(
            e.name for e in os.scandir(d) if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
        )
        out.append([str((d / f).resolve()) for f in files])
    return out


def _image_counts(files: pd.Series) -> dict[str, int]:
    n_with = int(sum(1 for f in files if len(f) > 0))
    return {"with_images": n_with, "without_images": int(len(files) - n_with)}


def _parse_label(value: Any, path: Path, row: str, review_id: str) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and value.is_integer():
        value, ok = int(value), True
    if not ok:
        raise DataError(
            f"{path}: row {row} (review {review_id}), field 'upvotes': expected an integer "
            f"label, got {type(value).__name__} {value!r:.40}"
        )
    if not -(2**53) <= value <= 2**53:  # 1e300 overflowed pandas' int64 with a traceback
        raise DataError(
            f"{path}: row {row} (review {review_id}), field 'upvotes': label {value:.3g} is out of range; "
            "expected a label 0..4 (or a vote count, with bin_votes)"
        )
    return value


def load_mrhp(
    root: str | os.PathLike, dataset: str, category: str, split: str, *, bin_votes: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load one split of an MRHP dataset -> ``(products, reviews)`` in the normalised schema.

    ``root/dataset/category/category.{prd,rvw,rel}.split`` are read (see the module docstring
    for the field variants and the bad-input policies). ``bin_votes=True`` treats ``upvotes``
    as raw vote counts and bins them (:func:`bin_votes`), dropping 0-vote reviews.

    Rows keep file order (by row index). ``image_files`` lists local images found under
    ``root/dataset/category/images/{prd|rvw}/{item_id}/``; ``attrs["image_counts"]`` counts the
    items with and without them.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    root = Path(root)
    paths = {k: split_file(root, dataset, category, k, split) for k in KINDS}
    name_only = dataset == "lazada" and category == "clothing"

    # --- products
    p_path = paths["prd"]
    p_rows, p = _read_column_json(p_path, REQUIRED_COLUMNS["prd"])
    prod_ids, names, texts, p_urls = [], [], [], []
    seen: dict[str, str] = {}
    for i, row in enumerate(p_rows):
        pid = _as_id(p["product_id"][i], p_path, row, "product_id")
        _claim_id(seen, pid, p_path, row, "product_id")
        name = p["name"][i]
        if name is None:
            name = ""
        if not isinstance(name, str):
            raise DataError(f"{p_path}: row {row}, field 'name': expected a string, got {name!r:.60}")
        name = name.strip()
        text = (
            name if name_only else " ".join(t for t in (name, _description_text(p["description"][i], p_path, row)) if t)
        )
        _as_text(text, p_path, row, "name" if name_only else "name + description")
        prod_ids.append(pid)
        names.append(name)
        texts.append(text)
        p_urls.append(parse_img_urls(p["img_url"][i], where=f"{p_path}: row {row}, field 'img_url'"))
    products = pd.DataFrame({"product_id": prod_ids, "name": names, "text": texts, "img_urls": p_urls})
    products["image_files"] = _local_images(root, dataset, category, "prd", prod_ids)

    # --- relation (labels)
    l_path = paths["rel"]
    l_rows, rel = _read_column_json(l_path, REQUIRED_COLUMNS["rel"])
    label_of: dict[str, tuple[int, str, str]] = {}
    for i, row in enumerate(l_rows):
        rid = _as_id(rel["review_id"][i], l_path, row, "review_id")
        if rid in label_of:
            raise DataError(f"{l_path}: duplicate review_id {rid!r} in rows {label_of[rid][2]} and {row}")
        label_of[rid] = (
            _parse_label(rel["upvotes"][i], l_path, row, rid),
            _as_id(rel["product_id"][i], l_path, row, "product_id"),
            row,
        )

    # --- reviews
    r_path = paths["rvw"]
    r_rows, r = _read_column_json(r_path, REQUIRED_COLUMNS["rvw"])
    rev_ids, rev_prod, rev_text, rev_label, rev_urls = [], [], [], [], []
    seen_r: dict[str, str] = {}
    for i, row in enumerate(r_rows):
        rid = _as_id(r["review_id"][i], r_path, row, "review_id")
        _claim_id(seen_r, rid, r_path, row, "review_id")
        pid = _as_id(r["product_id"][i], r_path, row, "product_id")
        if pid not in seen:
            raise DataError(f"{r_path}: row {row}, review {rid!r}: product_id {pid!r} is not in {p_path.name}")
        if rid not in label_of:
            raise DataError(f"{r_path}: row {row}, review {rid!r} has no label row in {l_path.name}")
        label, rel_pid, rel_row = label_of[rid]
        if rel_pid != pid:
            raise DataError(
                f"{l_path}: row {rel_row}, review {rid!r}: product_id {rel_pid!r} differs from {pid!r} in {r_path.name}"
            )
        rev_ids.append(rid)
        rev_prod.append(pid)
        rev_text.append(_as_text(r["content"][i], r_path, row, "content"))
        rev_label.append(label)
        rev_urls.append(parse_img_urls(r["img_url"][i], where=f"{r_path}: row {row}, field 'img_url'"))
    orphans = [rid for rid in label_of if rid not in seen_r]
    if orphans:
        raise DataError(
            f"{l_path}: {len(orphans)} label row(s) name reviews that are not in {r_path.name} "
            f"(e.g. {orphans[0]!r}, row {label_of[orphans[0]][2]})"
        )

    reviews = pd.DataFrame(
        {
            "review_id": rev_ids,
            "product_id": rev_prod,
            "text": rev_text,
            "label": pd.Series(rev_label, dtype="int64"),
            "img_urls": rev_urls,
        }
    )
    dropped = 0
    if bin_votes:
        neg = reviews["label"] < 0
        if neg.any():
            raise DataError(
                f"{l_path}: {int(neg.sum())} row(s) with negative vote counts "
                f"(e.g. review {reviews.loc[neg, 'review_id'].iloc[0]!r})"
            )
        zero = reviews["label"] == 0
        dropped = int(zero.sum())
        reviews = reviews.loc[~zero].reset_index(drop=True)
        reviews["label"] = reviews["label"].map(bin_votes_fn).astype("int64")
    else:
        bad = ~reviews["label"].between(0, 4)
        if bad.any():
            ex = reviews.loc[bad].iloc[0]
            raise DataError(
                f"{l_path}: {int(bad.sum())} of {len(reviews)} row(s) have a label outside 0..4 "
                f"(e.g. review {ex['review_id']!r}: {ex['label']}); if these are raw vote counts, "
                f"load with bin_votes=True to apply the documented binning"
            )
    reviews["image_files"] = _local_images(root, dataset, category, "rvw", list(reviews["review_id"]))

    lonely = sorted(set(map(str, products["product_id"])) - set(map(str, reviews["product_id"])))
    products.attrs.update(
        source=str(p_path), image_counts=_image_counts(products["image_files"]), without_reviews=len(lonely)
    )
    if lonely and str(p_path) not in _WARNED_NO_REVIEWS:
        import warnings

        _WARNED_NO_REVIEWS.add(str(p_path))
        warnings.warn(
            f"{p_path}: {len(lonely)} of {len(products)} product(s) have no review in {r_path.name} (e.g. "
            f"{lonely[0]!r}): counted among the products, but there is nothing of theirs to rank",
            UserWarning,
            stacklevel=2,
        )
    reviews.attrs.update(
        source=str(r_path), image_counts=_image_counts(reviews["image_files"]), dropped_zero_votes=dropped
    )
    return products, reviews


bin_votes_fn = bin_votes  # alias: ``load_mrhp``'s keyword shadows the function name inside it


# ----------------------------------------------------------------------------- writing


def _row_index(df: pd.DataFrame, what: str) -> pd.Index:
    idx = df.index
    if not idx.is_unique:
        raise DataError(f"write_mrhp: the {what} frame's row index has duplicates")
    return idx


def _check_write_args(
    variant: str | None, dataset: str, split: str, products: pd.DataFrame, reviews: pd.DataFrame
) -> str:
    """The variant (``dataset``'s own when None) after refusing an unknown variant or split and
    frames that lack a required column."""
    variant = variant or ("lazada" if dataset == "lazada" else "amazon")
    if variant not in ("amazon", "lazada"):
        raise DataError(f"write_mrhp: unknown variant {variant!r}: expected 'amazon' or 'lazada'")
    if split not in SPLITS:
        raise DataError(f"write_mrhp: unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    for col in ("product_id", "name"):
        if col not in products.columns:
            raise DataError(f"write_mrhp: products frame lacks column {col!r}")
    for col in ("review_id", "product_id", "label"):
        if col not in reviews.columns:
            raise DataError(f"write_mrhp: reviews frame lacks column {col!r}")
    return variant


def _frame_urls(df: pd.DataFrame) -> list[list[str]]:
    """Each row's image URL list from ``img_urls`` (or ``img_url``); empty lists without either column."""
    col = "img_urls" if "img_urls" in df.columns else ("img_url" if "img_url" in df.columns else None)
    if col is None:
        return [[] for _ in range(len(df))]
    return [parse_img_urls(v, where=f"write_mrhp: {col}") for v in df[col]]


def _descriptions(products: pd.DataFrame, variant: str, name_only: bool) -> list:
    """The ``description`` column: given, or ``text`` minus the leading name (Lazada clothing:
    empty, and a ``text`` other than the name is refused)."""
    if "description" in products.columns:
        return list(products["description"])
    if "text" not in products.columns:
        raise DataError("write_mrhp: products frame needs a 'description' or a 'text' column")
    descriptions = []
    for pid, name, text in zip(products["product_id"], products["name"], products["text"], strict=True):
        if name_only:
            if text != name:
                raise DataError(
                    f"write_mrhp: product {pid!r}: Lazada clothing uses the name as the "
                    f"model text, but text differs from name"
                )
            descriptions.append("")
        elif text == name:
            descriptions.append([] if variant == "amazon" else "")
        elif text.startswith(name + " ") or not name:
            rest = text[len(name) + 1 :] if name else text
            descriptions.append([rest] if variant == "amazon" else rest)
        else:
            raise DataError(
                f"write_mrhp: product {pid!r}: text does not start with its name; give a 'description' column instead"
            )
    return descriptions


def _prd_frame(products: pd.DataFrame, descriptions: list, variant: str, p_idx: pd.Index) -> pd.DataFrame:
    """The ``prd`` file's frame; Lazada writes the image URL list as a JSON string."""
    p_urls = _frame_urls(products)
    if variant == "lazada":
        p_img = [json.dumps(u) for u in p_urls]
    else:
        p_img = p_urls
    return pd.DataFrame(
        {
            "product_id": [str(x) for x in products["product_id"]],
            "name": list(products["name"]),
            "description": descriptions,
            "img_url": p_img,
            "keyword": list(products["keyword"]) if "keyword" in products.columns else [None] * len(products),
            "brand_name": list(products["brand_name"]) if "brand_name" in products.columns else [None] * len(products),
        },
        index=p_idx,
    )


def _rvw_frame(reviews: pd.DataFrame, variant: str, r_idx: pd.Index) -> pd.DataFrame:
    """The ``rvw`` file's frame; Lazada writes the image URLs as a JSON string of ``{"url": ...}`` dicts."""
    text_col = "text" if "text" in reviews.columns else "content"
    if text_col not in reviews.columns:
        raise DataError("write_mrhp: reviews frame needs a 'text' or a 'content' column")
    r_urls = _frame_urls(reviews)
    if variant == "lazada":
        r_img = [json.dumps([{"url": u} for u in urls]) for urls in r_urls]
    else:
        r_img = r_urls
    rvw = pd.DataFrame(
        {
            "product_id": [str(x) for x in reviews["product_id"]],
            "review_id": [str(x) for x in reviews["review_id"]],
            "title": list(reviews["title"]) if "title" in reviews.columns else [""] * len(reviews),
            "content": list(reviews[text_col]),
            "img_url": r_img,
        },
        index=r_idx,
    )
    if "time" in reviews.columns:
        rvw["time"] = list(reviews["time"])
    return rvw


def _int_labels(reviews: pd.DataFrame) -> list[int]:
    """The ``label`` column as ints; a value that is not a whole number is refused."""
    labels = []
    for rid, v in zip(reviews["review_id"], reviews["label"], strict=True):
        try:
            iv = int(v)
            if iv != v:
                raise ValueError
        except (TypeError, ValueError):
            raise DataError(f"write_mrhp: review {rid!r}: label {v!r} is not an integer") from None
        labels.append(iv)
    return labels


def _rel_frame(reviews: pd.DataFrame, rvw: pd.DataFrame, variant: str, r_idx: pd.Index) -> pd.DataFrame:
    """The ``rel`` file's frame (ids and integer ``upvotes``; Lazada adds ``rating``)."""
    labels = _int_labels(reviews)
    rel = pd.DataFrame(
        {
            "product_id": rvw["product_id"],
            "review_id": rvw["review_id"],
            "upvotes": pd.Series(labels, index=r_idx, dtype="int64"),
        },
        index=r_idx,
    )
    if variant == "lazada":
        rel["rating"] = list(reviews["rating"]) if "rating" in reviews.columns else [None] * len(reviews)
    return rel


def _write_split_files(
    root: str | os.PathLike, dataset: str, category: str, split: str, frames: dict[str, pd.DataFrame]
) -> dict[str, Path]:
    """Write each frame atomically to its split file (``prd``, ``rvw``, ``rel``); the paths written."""
    out = {}
    for kind, df in frames.items():
        path = split_file(root, dataset, category, kind, split)
        with atomic_path(path) as tmp:
            df.to_json(tmp)  # default orient="columns" for a DataFrame
        out[kind] = path
    return out


def write_mrhp(
    root: str | os.PathLike,
    dataset: str,
    category: str,
    split: str,
    products: pd.DataFrame,
    reviews: pd.DataFrame,
    *,
    variant: str | None = None,
) -> dict[str, Path]:
    """Write one split in the released format (pandas ``to_json()``, default column orientation).

    ``products`` needs ``product_id, name`` and either ``description`` (list of strings or a
    string) or ``text`` (then the description is ``text`` minus the leading ``name + " "``);
    optional ``img_urls`` (or ``img_url``), ``keyword``, ``brand_name``. ``reviews`` needs
    ``review_id, product_id, label`` and ``text`` (or ``content``); optional ``img_urls``,
    ``title``, ``time`` (Amazon), ``rating`` (Lazada). The frames' row indices become the
    JSON row indices (non-contiguous indices are fine; rvw and rel share the review index).

    ``variant`` (default: ``"lazada"`` for the lazada dataset, else ``"amazon"``) picks the
    field encoding: Amazon writes image lists as JSON arrays; Lazada writes product
    ``img_url`` as a JSON string of a URL list, review ``img_url`` as a JSON string of
    ``{"url": ...}`` dicts, and a ``rating`` column in ``rel``. For Lazada clothing the model
    text is the name only, so a ``text`` that differs from ``name`` is refused.

    ``load_mrhp`` of the written split returns the same products and reviews. Returns the
    three written paths. Writes are atomic.
    """
    variant = _check_write_args(variant, dataset, split, products, reviews)
    p_idx, r_idx = _row_index(products, "products"), _row_index(reviews, "reviews")
    descriptions = _descriptions(products, variant, name_only=dataset == "lazada" and category == "clothing")
    prd = _prd_frame(products, descriptions, variant, p_idx)
    rvw = _rvw_frame(reviews, variant, r_idx)
    rel = _rel_frame(reviews, rvw, variant, r_idx)
    return _write_split_files(root, dataset, category, split, {"prd": prd, "rvw": rvw, "rel": rel})


# ----------------------------------------------------------------------------- statistics


def available_categories(root: str | os.PathLike, dataset: str) -> list[str]:
    """Categories of ``root/dataset`` that hold a train product file, in the paper's order first."""
    base = Path(root) / dataset
    if not base.is_dir():
        raise DataError(f"{base}: dataset folder not found")
    found = [d.name for d in sorted(base.iterdir()) if (d / f"{d.name}.prd.train").exists()]
    return [c for c in CATEGORIES if c in found] + [c for c in found if c not in CATEGORIES]


def dataset_stats(root: str | os.PathLike, dataset: str, categories: Sequence[str] | None = None) -> pd.DataFrame:
    """Products and reviews per split (the layout of the paper's Table 3) plus label counts.

        One row per category: ``dataset, category, {split}_products, {split}_reviews`` for the
        three splits, ``label_0 .. label_4`` (all splits together), and the number of reviews /
        products with local images (``reviews_with_images``, ``products_with_images``). A product or review id
        in two splits is flagged: a warning naming the files and ids (:func:`check_disjoint_splits`, which
    ``mmss train`` refuses), and ``attrs["ids_in_two_splits"]`` counts such ids per category.
    """
    cats = list(categories) if categories else available_categories(root, dataset)
    rows = []
    overlap: dict[str, int] = {}
    for cat in cats:
        row: dict[str, Any] = {"dataset": dataset, "category": cat}
        counts = {k: 0 for k in LABELS}
        r_img = p_img = 0
        ids = {}
        for split in SPLITS:
            prd, rvw = load_mrhp(root, dataset, cat, split)
            ids[split] = (prd["product_id"].tolist(), rvw["review_id"].tolist())
            row[f"{split}_products"] = len(prd)
            row[f"{split}_reviews"] = len(rvw)
            for k, n in rvw["label"].value_counts().items():
                counts[int(k)] += int(n)
            r_img += rvw.attrs["image_counts"]["with_images"]
            p_img += prd.attrs["image_counts"]["with_images"]
        try:  # a product or review in two splits: flagged (mmss train refuses such data)
            check_disjoint_splits(root, dataset, cat, ids)
        except DataError as exc:
            import warnings

            overlap[cat] = sum(
                len(set(map(str, ids[a][c])) & set(map(str, ids[b][c])))
                for c in (0, 1)
                for i, a in enumerate(SPLITS)
                for b in SPLITS[i + 1 :]
            )
            warnings.warn(f"{exc}; counted in each split here, and mmss train refuses it", UserWarning, stacklevel=2)
        row.update({f"label_{k}": counts[k] for k in LABELS})
        row["products_with_images"] = p_img
        row["reviews_with_images"] = r_img
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs["ids_in_two_splits"] = overlap
    return out


def stats_markdown(stats: pd.DataFrame) -> str:
    """Render :func:`dataset_stats` as the paper's Table 3 (``#P/#R`` per split) and a label table."""
    lines = [
        "| Dataset | Cate | Train (#P/#R) | Dev (#P/#R) | Test (#P/#R) | With >= 1 local image (#P / #R) |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in stats.iterrows():
        cells = [f"{r[f'{s}_products']:,}/{r[f'{s}_reviews']:,}" for s in SPLITS]
        n_p, n_r = (sum(int(r[f"{s}_{k}"]) for s in SPLITS) for k in ("products", "reviews"))
        p_i, r_i = int(r["products_with_images"]), int(r["reviews_with_images"])
        cov = f"{p_i:,}/{n_p:,} ({100 * p_i / max(n_p, 1):.1f}%) / {r_i:,}/{n_r:,} ({100 * r_i / max(n_r, 1):.1f}%)"
        lines.append(f"| {r['dataset']} | {r['category']} | " + " | ".join(cells) + f" | {cov} |")
    lines += [
        "",
        "| Dataset | Cate | " + " | ".join(f"label {k}" for k in LABELS) + " | reviews with images |",
        "|---|---|" + "---|" * (len(LABELS) + 1),
    ]
    for _, r in stats.iterrows():
        total = sum(int(r[f"label_{k}"]) for k in LABELS) or 1
        cells = [f"{int(r[f'label_{k}']):,} ({100 * int(r[f'label_{k}']) / total:.1f}%)" for k in LABELS]
        lines.append(
            f"| {r['dataset']} | {r['category']} | " + " | ".join(cells) + f" | {int(r['reviews_with_images']):,} |"
        )
    return "\n".join(lines)


def cli_main(argv: list[str], prog: str = "mmss stats") -> int:
    """``mmss stats --root R --dataset D [--categories ...] [--csv PATH]``."""
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Dataset statistics in the layout of the paper's "
        "Table 3 (products/reviews per split) and the label distribution.",
    )
    ap.add_argument("--root", required=True, help="data root holding {dataset}/{category}/...")
    ap.add_argument("--dataset", required=True, help="amazon, lazada or demo (or any folder name)")
    ap.add_argument("--categories", nargs="*", default=None, help="default: every category found")
    ap.add_argument("--csv", default=None, help="also write the statistics as CSV to this path")
    a = ap.parse_args(argv)
    stats = dataset_stats(a.root, a.dataset, a.categories)
    print(stats_markdown(stats))
    if a.csv:
        with atomic_path(a.csv) as tmp:
            stats.to_csv(tmp, index=False)
    return 0
