"""The pseudo-label explorer's data side: what each view of the explorer shows, read from a runs
folder and the MRHP data, with no widgets (the widgets are :mod:`mmss_lib.explore.app`; the
notebook ``05_explore`` and ``mmss explore`` show them).

What a view needs, per (dataset, category, split):

- the runs of the category (:func:`discover_runs`: ``{runs}/{dataset}/{category}/{system}[__{variant}]/seed{n}/``)
  and what each one holds (:meth:`Explorer.run_status`: finished, still training, with or without
  SSP-Label records, with or without scores for the split);
- the products, with a search and an order (:meth:`Explorer.product_list`: file order, the run's AP
  on each product, or the largest offsets |y_s - y_g| of its reviews);
- one product's reviews as a table ranked by the run beside the human order and, optionally, a
  second run's ranks and where the two differ (:meth:`Explorer.review_table`);
- one review (:meth:`Explorer.review_detail`): for a training review its pseudo labels y_s per
  epoch and subtask (the EWMA of Eq. 11-12), its offsets y_s - y_g (Eq. 21), its distances chi_s
  and chi_g (Eq. 18) and the raw estimate; for a dev/test review the subtask heads' outputs yhat_s
  (Eq. 9, from ``scores_{split}.csv``); the demo's planted cues where a cues file exists.

Where the numbers come from: the trainer saves scores for dev and test only, and SSP-Label
records (``ssp/epoch*.npz``) for training reviews only, so a run's ranking exists on dev/test and
pseudo labels on train; every view says which of the two it lacks instead of failing.

Reading is lazy and cached (a click never reads every record): the MRHP split once per
(dataset, category, split); a run's scores once per (run, split); of the SSP records, the last
epoch's arrays on first use and a per-review trajectory by reading only the needed keys of each
epoch file once per run (:class:`SSPRecords`). Nothing is ever written: the runs folder is
read-only to the explorer (caches live in memory).

Bad input is a :class:`~mmss_lib.errors.DataError` with a sentence for the view (an empty runs
folder, a run without records, a corrupt record or image, a product with one review), never a
traceback in the view: :mod:`mmss_lib.explore.app` shows the message.

Folders under the runs root that cannot be read are skipped when runs are listed (``mmss explore
--runs /`` lists nothing instead of failing on ``/proc``).
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mmss_lib.data.mrhp import SPLITS
from mmss_lib.errors import DataError
from mmss_lib.ssp.records import SSPRecords
from mmss_lib.training.run_folder import CONFIG, HISTORY, METRICS, load_history, scores_path

SORTS = ("file order", "AP: lowest first", "AP: highest first", "largest offsets", "most reviews")
SNIPPET = 160  # characters of a review text shown in the table
THUMB_PX = 72  # thumbnail edge in pixels
_SEED_DIR = re.compile(r"^seed(\d+)$")


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRef:
    """One run folder of the released splits: ``{runs}/{dataset}/{category}/{name}/seed{seed}``."""

    dataset: str
    category: str
    system: str
    variant: str  # "full" when the folder name has no ``__variant`` suffix
    seed: int
    path: Path

    @property
    def name(self) -> str:
        return self.system if self.variant == "full" else f"{self.system}__{self.variant}"

    @property
    def label(self) -> str:
        """What a picker shows: ``mmss seed0``, ``mmss (wo_d) seed0``."""
        v = "" if self.variant == "full" else f" ({self.variant})"
        return f"{self.system}{v} seed{self.seed}"


def _subfolders(folder: Path) -> list[Path]:
    """The sub-folders of ``folder``, sorted; a folder this process may not read (e.g. ``--runs /``
    meets ``/proc/1/cwd``) has none."""

    def is_dir(p: Path) -> bool:
        try:
            return p.is_dir()
        except OSError:
            return False

    try:
        return sorted(p for p in folder.iterdir() if is_dir(p))
    except OSError:
        return []


def discover_runs(runs_root: str | os.PathLike) -> list[RunRef]:
    """Every run folder under ``runs_root`` (released splits; cross-validation folds are not
    listed), sorted by dataset, category, system, variant, seed. An empty or missing folder gives
    ``[]``; only folder names are read, and folders that cannot be read are skipped."""
    root = Path(runs_root)
    out: list[RunRef] = []
    if not root.is_dir():
        return out
    for ds in _subfolders(root):
        for cat in _subfolders(ds):
            for run in _subfolders(cat):
                system, _, variant = run.name.partition("__")
                for sd in _subfolders(run):
                    m = _SEED_DIR.match(sd.name)
                    if m:
                        out.append(RunRef(ds.name, cat.name, system, variant or "full", int(m.group(1)), sd))
    out.sort(key=lambda r: (r.dataset, r.category, r.system, r.variant != "full", r.variant, r.seed))
    return out


@dataclass
class RunStatus:
    """What a run folder holds, and the sentences a view shows about it."""

    finished: bool  # metrics.json present
    epochs: int  # finished epochs recorded in history.json (0 when absent)
    ssp_epochs: list[int]  # epochs with an SSP-Label record
    score_splits: list[str]  # splits with scores_{split}.csv
    notes: list[str] = field(default_factory=list)


@dataclass
class ReviewDetail:
    """Everything the review panel shows about one review under one run."""

    review_id: str
    product_id: str
    split: str
    text: str
    label: int
    image_files: list[str]
    epochs: list[int] = field(default_factory=list)  # record epochs (train)
    trajectory: dict[str, np.ndarray] = field(default_factory=dict)  # s -> (E,) y_s per epoch
    offsets: dict[str, float] = field(default_factory=dict)  # s -> y_s - y_g, last epoch
    estimates: dict[str, float] = field(default_factory=dict)  # s -> Eq. 21 estimate, last epoch
    chi: dict[str, float] = field(default_factory=dict)  # s -> chi_s, and "g" -> chi_g
    heads: dict[str, float] = field(default_factory=dict)  # dev/test: "score" and s -> yhat_s
    cues: dict[str, Any] = field(default_factory=dict)  # demo's planted cues
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def thumbnail(path: str, px: int = THUMB_PX) -> bytes:
    """A PNG thumbnail (longest edge ``px``) of an image file; :class:`DataError` naming the file
    when it is missing or not a readable image. Cached in memory, nothing written."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((px, px))
            buf = io.BytesIO()
            im.save(buf, format="PNG")
    except FileNotFoundError:
        raise DataError(f"image {path} is missing") from None
    except Exception as exc:  # noqa: BLE001 - truncated, not an image
        raise DataError(f"image {path} is not readable ({type(exc).__name__})") from None
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# The explorer's data
# ---------------------------------------------------------------------------------------------


def _rank(values: np.ndarray) -> np.ndarray:
    """1-based ranks, highest value first, ties in the given (file) order (the protocol's stable ties)."""
    order = np.lexsort((np.arange(len(values)), -np.asarray(values, dtype=float)))
    ranks = np.empty(len(values), dtype=int)
    ranks[order] = np.arange(1, len(values) + 1)
    return ranks


class Explorer:
    """Read-only access to one runs folder and the MRHP data its runs were trained on.

    ``data_root``: the MRHP files (``{data_root}/{dataset}/{category}/...``); default: the
    ``data`` folder beside ``runs_root`` (the layout of every profile: ``${out}/data``,
    ``${out}/runs``).
    """

    def __init__(self, runs_root: str | os.PathLike, data_root: str | os.PathLike | None = None):
        self.runs_root = Path(runs_root)
        self.data_root = Path(data_root) if data_root is not None else self.runs_root.parent / "data"
        self._runs: list[RunRef] | None = None
        self._data: dict[tuple, tuple] = {}
        self._scores: dict[tuple, Any] = {}
        self._per_product: dict[tuple, Any] = {}
        self._ssp: dict[Path, SSPRecords] = {}
        self._cues: dict[tuple, Any] = {}
        self._offsets: dict[tuple, np.ndarray | None] = {}

    # ------------------------------------------------------------------ runs
    def runs(self, dataset: str | None = None, category: str | None = None) -> list[RunRef]:
        """The runs of the folder (optionally of one dataset / category). Raises DataError for an
        empty runs folder."""
        if self._runs is None:
            self._runs = discover_runs(self.runs_root)
        if not self._runs:
            raise DataError(
                f"no runs in {self.runs_root}: train some first (`make demo`, `mmss train`) "
                "or point the explorer at another runs folder (--runs)"
            )
        return [
            r
            for r in self._runs
            if (dataset is None or r.dataset == dataset) and (category is None or r.category == category)
        ]

    def refresh(self) -> None:
        """Forget what was read (runs found, scores, records): a run that finished meanwhile shows."""
        self._runs = None
        self._scores.clear()
        self._per_product.clear()
        self._ssp.clear()
        self._offsets.clear()

    def datasets(self) -> list[str]:
        return list(dict.fromkeys(r.dataset for r in self.runs()))

    def categories(self, dataset: str) -> list[str]:
        return list(dict.fromkeys(r.category for r in self.runs(dataset)))

    def run_status(self, run: RunRef) -> RunStatus:
        d = run.path
        epochs = 0
        notes = []
        hp = d / HISTORY
        if hp.exists():
            try:
                epochs = len(load_history(d))
            except (OSError, DataError):
                notes.append(f"{hp} is not readable JSON")
        finished = (d / METRICS).exists()
        rec = self.ssp(run)
        splits = [s for s in ("dev", "test") if scores_path(d, s).exists()]
        if not (d / CONFIG).exists():
            notes.append(f"{d} has no config.json: not a finished or running run folder")
        if not finished:
            notes.append(
                f"{run.label} is still training (or was interrupted): {epochs} epoch(s) finished, "
                "no scores yet; its ranking appears when metrics.json is written"
            )
        if not rec:
            notes.append(
                f"{run.label} has no SSP-Label records ({rec.dir}): only MM-SS with module (d) writes "
                "pseudo labels (and only for the seeds in ssp_record_seeds); baselines and the wo_d "
                "ablation have none"
            )
        return RunStatus(finished, epochs, rec.epochs, splits, notes)

    def ssp(self, run: RunRef) -> SSPRecords:
        if run.path not in self._ssp:
            self._ssp[run.path] = SSPRecords(run.path)
        return self._ssp[run.path]

    # ------------------------------------------------------------------ data
    def data(self, dataset: str, category: str, split: str):
        """(products, reviews) of a split (``load_mrhp``), cached, with ``n_reviews`` per product."""
        key = (dataset, category, split)
        if key not in self._data:
            from mmss_lib.data.mrhp import load_mrhp

            if split not in SPLITS:
                raise DataError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
            try:
                products, reviews = load_mrhp(self.data_root, dataset, category, split)
            except FileNotFoundError as exc:
                raise DataError(
                    f"no MRHP data for {dataset}/{category}/{split} under {self.data_root} ({exc}); "
                    "pass the data folder (--data)"
                ) from None
            products = products.copy()
            counts = reviews.groupby("product_id", sort=False).size()
            products["n_reviews"] = products["product_id"].map(counts).fillna(0).astype(int).to_numpy()
            rows = reviews.groupby("product_id", sort=False).indices  # product_id -> row positions
            self._data[key] = (products.reset_index(drop=True), reviews.reset_index(drop=True), rows)
        return self._data[key]

    def scores(self, run: RunRef, split: str):
        """A run's ``scores_{split}.csv`` indexed by review_id (None when the run has none)."""
        key = (run.path, split)
        if key not in self._scores:
            import pandas as pd

            path = scores_path(run.path, split)
            df = None
            if path.exists():
                try:
                    df = pd.read_csv(path, dtype={"review_id": str, "product_id": str})
                except Exception as exc:  # noqa: BLE001
                    raise DataError(f"{path}: not a readable scores file ({type(exc).__name__})") from None
                if "review_id" not in df.columns or "score" not in df.columns:
                    raise DataError(f"{path}: columns review_id and score expected, got {list(df.columns)}")
                df = df.set_index("review_id")
            self._scores[key] = df
        return self._scores[key]

    def per_product(self, run: RunRef, split: str):
        """Per-product metrics of a run on a dev/test split (``floors.per_product_for_run``), by
        product_id; None without scores."""
        key = (run.path, split)
        if key not in self._per_product:
            pp = None
            if self.scores(run, split) is not None:
                from mmss_lib.training.floors import per_product_for_run

                try:
                    pp = per_product_for_run(run.path, split).set_index("product_id")
                except DataError:
                    pp = None  # e.g. no metrics.json yet: no threshold recorded
            self._per_product[key] = pp
        return self._per_product[key]

    def cues(self, dataset: str, category: str, split: str):
        """The demo's planted cues of a split by review_id (None: not the demo, or no cues file)."""
        key = (dataset, category, split)
        if key not in self._cues:
            cues = None
            if dataset == "demo":
                from mmss_lib.data.synthetic import load_cues

                try:
                    cues = load_cues(self.data_root, category, split).set_index("review_id")
                except DataError:
                    cues = None
            self._cues[key] = cues
        return self._cues[key]

    # ------------------------------------------------------------------ products
    def product_offsets(self, run: RunRef, dataset: str, category: str, split: str):
        """Per product the largest review offset: on train the mean |y_s - y_g| of the last SSP
        record, on dev/test the mean |yhat_s - yhat| of the subtask heads (Series by product_id;
        None when the run has neither)."""
        import pandas as pd

        products, reviews, _ = self.data(dataset, category, split)
        per_review = self.review_offsets(run, dataset, category, split)
        if per_review is None:
            return None
        s = pd.Series(per_review, index=reviews["product_id"].to_numpy())
        return s.groupby(level=0, sort=False).max()

    def review_offsets(self, run: RunRef, dataset: str, category: str, split: str) -> np.ndarray | None:
        """(n_reviews,) of the split: mean |y_s - y_g| (train, SSP records) or mean |yhat_s - yhat|
        (dev/test, the heads' outputs); NaN where a review has none; None when the run has neither.
        Cached per run and split."""
        key = (run.path, dataset, category, split)
        if key not in self._offsets:
            self._offsets[key] = self._review_offsets(run, dataset, category, split)
        return self._offsets[key]

    def _review_offsets(self, run: RunRef, dataset: str, category: str, split: str) -> np.ndarray | None:
        _, reviews, _ = self.data(dataset, category, split)
        if split == "train":
            rec = self.ssp(run)
            if not rec:
                return None
            off, pos = rec.mean_abs_offset(), rec.positions(reviews["review_id"])
            return np.where(pos >= 0, off[np.maximum(pos, 0)], np.nan)
        sc = self.scores(run, split)
        if sc is None:
            return None
        cols = [c for c in sc.columns if c.startswith("score_")]
        if not cols:
            return None
        spread = (sc[cols].sub(sc["score"], axis=0)).abs().mean(axis=1)
        return spread.reindex(reviews["review_id"]).to_numpy(dtype=float)

    def product_list(
        self,
        dataset: str,
        category: str,
        split: str,
        run: RunRef | None = None,
        *,
        query: str = "",
        sort: str = "file order",
        limit: int | None = None,
    ):
        """Products of a split matching ``query`` (case-insensitive, in id, name or text), in the
        order ``sort`` (one of :data:`SORTS`), with ``n_reviews``, ``AP`` (the run's, NaN without
        scores) and ``offset`` (the largest review offset, NaN without). Returns (frame, notes)."""
        if sort not in SORTS:
            raise DataError(f"sort {sort!r}: expected one of {', '.join(SORTS)}")
        products, _, _ = self.data(dataset, category, split)
        df = products[["product_id", "name", "n_reviews"]].copy()
        notes = []
        df["AP"] = np.nan
        df["offset"] = np.nan
        if run is not None:
            pp = self.per_product(run, split)
            if pp is not None:
                df["AP"] = df["product_id"].map(pp["AP"]).to_numpy(dtype=float)
            elif sort.startswith("AP"):
                notes.append(
                    f"{run.label} has no ranking on {split} (scores exist for finished runs on dev and "
                    "test only): products in file order"
                )
            po = self.product_offsets(run, dataset, category, split)
            if po is not None:
                df["offset"] = df["product_id"].map(po).to_numpy(dtype=float)
            elif sort == "largest offsets":
                notes.append(
                    f"{run.label} has no offsets on {split} (pseudo labels: training reviews of MM-SS "
                    "runs; subtask heads: MM-SS scores on dev/test): products in file order"
                )
        q = query.strip().lower()
        if q:
            hit = (
                df["product_id"].str.lower().str.contains(q, regex=False)
                | df["name"].str.lower().str.contains(q, regex=False)
                | products["text"].str.lower().str.contains(q, regex=False)
            )
            df = df[hit.to_numpy()]
        key = {
            "AP: lowest first": ("AP", True),
            "AP: highest first": ("AP", False),
            "largest offsets": ("offset", False),
            "most reviews": ("n_reviews", False),
        }.get(sort)
        if key is not None and df[key[0]].notna().any():
            df = df.sort_values(key[0], ascending=key[1], kind="stable", na_position="last")
        if limit is not None:
            df = df.head(limit)
        return df.reset_index(drop=True), notes

    def product(self, dataset: str, category: str, split: str, product_id: str) -> dict:
        products, _, _ = self.data(dataset, category, split)
        hit = products.index[products["product_id"] == str(product_id)]
        if not len(hit):
            raise DataError(f"product {product_id!r} is not in {dataset}/{category}/{split}")
        return products.iloc[int(hit[0])].to_dict()

    # ------------------------------------------------------------------ reviews
    def review_table(
        self,
        dataset: str,
        category: str,
        split: str,
        product_id: str,
        run: RunRef | None = None,
        other: RunRef | None = None,
        *,
        min_offset: float = 0.0,
    ):
        """One product's reviews, ranked by ``run`` (by the human order where the run has no
        scores on ``split``). Columns: ``review_id``, ``label``, ``human_rank`` (label order, ties
        in file order), ``text`` (a snippet), ``image_files``, ``rank`` / ``score`` of ``run``,
        ``other_rank`` / ``other_score`` / ``rank_diff`` (= other_rank - rank) of ``other``,
        ``offset`` (mean |y_s - y_g| on train, mean |yhat_s - yhat| on dev/test), and per subtask
        ``y_{s}`` (train: the last pseudo label). ``min_offset`` > 0 keeps the reviews whose offset
        reaches it. Returns (frame, notes)."""
        import pandas as pd

        products, reviews, rows = self.data(dataset, category, split)
        if str(product_id) not in rows:
            raise DataError(f"product {product_id!r} has no reviews in {dataset}/{category}/{split}")
        sel = np.sort(rows[str(product_id)])
        rv = reviews.iloc[sel]
        df = pd.DataFrame(
            {
                "review_id": rv["review_id"].to_numpy(),
                "label": rv["label"].to_numpy(),
                "text": [t if len(t) <= SNIPPET else t[: SNIPPET - 3] + "..." for t in rv["text"]],
                "image_files": list(rv["image_files"]),
            }
        )
        df["human_rank"] = _rank(df["label"].to_numpy())
        notes = []
        if len(df) == 1:
            notes.append(f"product {product_id} has one review: there is no ranking to compare")
        for tag, r in (("", run), ("other_", other)):
            df[f"{tag}score"], df[f"{tag}rank"] = np.nan, np.nan
            if r is None:
                continue
            sc = self.scores(r, split)
            if sc is None:
                notes.append(
                    "training reviews have no run scores (the trainer saves scores for dev and test): "
                    "the table is in the human order"
                    if split == "train"
                    else f"{r.label}: no scores on {split} (the trainer saves them when a run finishes)"
                )
                continue
            s = sc["score"].reindex(df["review_id"]).to_numpy(dtype=float)
            if np.isnan(s).any():
                notes.append(f"{r.label}: {int(np.isnan(s).sum())} review(s) of this product have no score")
                continue
            df[f"{tag}score"], df[f"{tag}rank"] = s, _rank(s)
        if other is not None:
            df["rank_diff"] = df["other_rank"] - df["rank"]
        off = self.review_offsets(run, dataset, category, split) if run is not None else None
        df["offset"] = off[sel] if off is not None else np.nan
        if run is not None and split == "train":
            rec = self.ssp(run)
            if rec:
                pos = rec.positions(df["review_id"])
                rec.last(*(f"label_{s}" for s in rec.subtasks))
                for s in rec.subtasks:
                    lab = rec.last(f"label_{s}").astype(float)
                    df[f"y_{s}"] = np.where(pos >= 0, lab[np.maximum(pos, 0)], np.nan)
        if min_offset > 0:
            keep = df["offset"].to_numpy(dtype=float) >= min_offset
            if not keep.any():
                notes.append(f"no review of this product has an offset >= {min_offset:g}")
            df = df[keep]
        by = "rank" if df["rank"].notna().all() and len(df) else "human_rank"
        return df.sort_values(by, kind="stable").reset_index(drop=True), notes

    def ranking_difference(self, table) -> dict | None:
        """Where two runs' rankings of one product differ: ``n``, ``differ`` (positions whose
        rank differs), ``kendall_tau`` (NaN for one review), ``top_same`` (same first review)."""
        if "rank_diff" not in table.columns or table["rank"].isna().any() or table["other_rank"].isna().any():
            return None
        n = len(table)
        tau = float("nan")
        if n > 1:  # Kendall's tau of two rankings without ties: (concordant - discordant) / pairs
            a, b = table["rank"].to_numpy(dtype=float), table["other_rank"].to_numpy(dtype=float)
            sign = np.sign(a[:, None] - a[None, :]) * np.sign(b[:, None] - b[None, :])
            tau = float(sign[np.triu_indices(n, 1)].mean())
        top = table.sort_values("rank").iloc[0]["review_id"] == table.sort_values("other_rank").iloc[0]["review_id"]
        return {"n": n, "differ": int((table["rank_diff"] != 0).sum()), "kendall_tau": tau, "top_same": bool(top)}

    def farthest_reviews(self, dataset: str, category: str, split: str, run: RunRef, n: int = 20):
        """The ``n`` reviews of a split whose offsets are largest (pseudo labels farthest from the
        human label on train; subtask heads farthest from the score on dev/test), with their
        product: a frame ``review_id``, ``product_id``, ``label``, ``offset``."""
        import pandas as pd

        _, reviews, _ = self.data(dataset, category, split)
        off = self.review_offsets(run, dataset, category, split)
        if off is None:
            raise DataError(
                f"{run.label} has no offsets on {split}: pseudo labels exist for the training reviews "
                "of MM-SS runs (with module (d)), subtask heads for MM-SS on dev/test"
            )
        df = pd.DataFrame(
            {
                "review_id": reviews["review_id"],
                "product_id": reviews["product_id"],
                "label": reviews["label"],
                "offset": off,
            }
        )
        return (
            df.dropna(subset=["offset"])
            .sort_values("offset", ascending=False, kind="stable")
            .head(n)
            .reset_index(drop=True)
        )

    def review_detail(
        self, dataset: str, category: str, split: str, review_id: str, run: RunRef | None = None
    ) -> ReviewDetail:
        """One review under ``run``: its trajectory, offsets, distances (train), heads (dev/test), cues."""
        _, reviews, _ = self.data(dataset, category, split)
        hit = np.flatnonzero(reviews["review_id"].to_numpy() == str(review_id))
        if not hit.size:
            raise DataError(f"review {review_id!r} is not in {dataset}/{category}/{split}")
        rv = reviews.iloc[int(hit[0])]
        det = ReviewDetail(
            str(rv["review_id"]),
            str(rv["product_id"]),
            split,
            str(rv["text"]),
            int(rv["label"]),
            list(rv["image_files"]),
        )
        if run is not None and split == "train":
            rec = self.ssp(run)
            i = rec.index().get(det.review_id) if rec else None
            if not rec:
                det.notes.append(f"{run.label} has no SSP-Label records: no pseudo labels to show")
            elif i is None:
                det.notes.append(f"review {det.review_id} is not among the training reviews of {run.label}'s records")
            else:
                det.epochs = list(rec.epochs)
                seen = rec.last("seen").astype(bool)
                if not seen[i]:
                    det.notes.append(
                        "SSP-Label never saw this review (a product with a single label gives no "
                        "training pairs): its pseudo labels stay the human label"
                    )
                traj = rec.series([f"label_{s}" for s in rec.subtasks], i)
                rec.last("chi_g", *(f"{p}_{s}" for s in rec.subtasks for p in ("offset", "estimate", "chi")))
                for s in rec.subtasks:
                    det.trajectory[s] = traj[f"label_{s}"]
                    det.offsets[s] = float(rec.last(f"offset_{s}")[i])
                    det.estimates[s] = float(rec.last(f"estimate_{s}")[i])
                    det.chi[s] = float(rec.last(f"chi_{s}")[i])
                det.chi["g"] = float(rec.last("chi_g")[i])
        elif run is not None:
            sc = self.scores(run, split)
            if sc is None or det.review_id not in sc.index:
                det.notes.append(f"{run.label} has no score for this review on {split}")
            else:
                row = sc.loc[det.review_id]
                det.heads = {
                    "score": float(row["score"]),
                    **{c[len("score_") :]: float(row[c]) for c in sc.columns if c.startswith("score_")},
                }
                if len(det.heads) == 1:
                    det.notes.append(f"{run.label} has no subtask heads (not MM-SS): only its score")
            det.notes.append(
                "pseudo labels exist for training reviews only; on dev/test the subtask heads' "
                "outputs yhat_s (Eq. 9) are shown"
            )
        cues = self.cues(dataset, category, split)
        if cues is not None and det.review_id in cues.index:
            det.cues = {
                k: (None if isinstance(v, float) and np.isnan(v) else v)
                for k, v in cues.loc[det.review_id].to_dict().items()
            }
        return det


# ---------------------------------------------------------------------------------------------
# Figures and HTML (shared by the widgets and the notebook's static snapshot)
# ---------------------------------------------------------------------------------------------


def trajectory_png(det: ReviewDetail, *, dpi: int = 90) -> bytes | None:
    """A PNG of the review's pseudo labels per epoch and subtask (the human label dashed), or of
    its heads' outputs (dev/test); None when there is nothing to draw. Uses a bare matplotlib
    ``Figure`` (no pyplot state, nothing displayed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not det.trajectory and len(det.heads) <= 1:
        return None
    fig = Figure(figsize=(6.4, 3.0))  # fixed margins: a layout engine doubles the drawing time
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.09, right=0.8 if det.trajectory else 0.98, bottom=0.17, top=0.9)
    if det.trajectory:
        x = np.asarray(det.epochs)
        for s, y in det.trajectory.items():
            ax.plot(x, y, marker="o", ms=3, lw=1.4, label=f"y_{s}")
        ax.axhline(det.label, color="black", ls="--", lw=1.0, label=f"y_g = {det.label}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("pseudo label")
        ax.set_title(f"review {det.review_id}: pseudo labels per epoch (Eq. 11-12)", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    else:
        names = list(det.heads)
        vals = [det.heads[k] for k in names]
        ax.bar(range(len(names)), vals, color=["#1f77b4"] + ["#2ca02c"] * (len(names) - 1))
        ax.set_xticks(range(len(names)), ["score"] + [f"yhat_{k}" for k in names[1:]], fontsize=7)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(f"review {det.review_id} (H = {det.label}): score and subtask heads (Eq. 9)", fontsize=9)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def images_html(files, *, max_images: int = 4, px: int = THUMB_PX) -> str:
    """Thumbnails of image files as inline ``<img>`` tags; a missing or unreadable file becomes a
    short note in place of its thumbnail."""
    from html import escape

    parts = []
    for f in list(files)[:max_images]:
        try:
            parts.append(
                f'<img class="mmss-thumb" src="{data_uri(thumbnail(str(f), px))}" '
                f'title="{escape(Path(f).name)}" style="max-height:{px}px;margin:1px">'
            )
        except DataError as exc:
            parts.append(
                f'<span class="mmss-thumb-missing" style="color:#a00;font-size:80%">'
                f"[{escape(str(exc).replace(str(Path(f).parent) + os.sep, ''))}]</span>"
            )
    if len(files) > max_images:
        parts.append(f"<span>+{len(files) - max_images}</span>")
    return "".join(parts) or '<span style="color:#888">no images</span>'


def review_table_html(
    table, *, selected: str | None = None, other_label: str | None = None, split: str = "train"
) -> str:
    """The review table as HTML: run rank, human rank, (second run's rank and its difference),
    label, offset (train: mean |y_s - y_g|; dev/test: mean |yhat_s - yhat|), the last pseudo labels
    (train), text, thumbnails; rows where the two runs disagree are tinted."""
    from html import escape

    has_other = "rank_diff" in table.columns
    sub_cols = [c for c in table.columns if c.startswith("y_")]
    head = (
        ["run rank", "human rank"]
        + ([f"rank ({escape(other_label or 'second run')})", "diff"] if has_other else [])
        + ["review", "H", "mean |y_s − y_g|" if split == "train" else "mean |ŷ_s − ŷ|"]
        + [escape(c) for c in sub_cols]
        + ["text", "images"]
    )
    out = [
        '<table class="mmss-review-table" style="border-collapse:collapse;font-size:12px">',
        "<tr>"
        + "".join(f'<th style="border-bottom:1px solid #999;padding:2px 6px;text-align:left">{h}</th>' for h in head)
        + "</tr>",
    ]

    def num(v, fmt="{:.0f}"):
        return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v)

    for _, r in table.iterrows():
        style = []
        if has_other and not np.isnan(r["rank_diff"]) and r["rank_diff"] != 0:
            style.append("background:#fff3cd")
        if selected is not None and r["review_id"] == selected:
            style.append("outline:2px solid #1f77b4")
        cells = [num(r["rank"]), num(r["human_rank"])]
        if has_other:
            cells += [num(r["other_rank"]), num(r["rank_diff"], "{:+.0f}")]
        cells += [
            f'<span style="white-space:nowrap">{escape(str(r["review_id"]))}</span>',
            str(int(r["label"])),
            num(r["offset"], "{:.2f}"),
        ]
        cells += [num(r[c], "{:.2f}") for c in sub_cols]
        cells += [escape(str(r["text"])), images_html(r["image_files"], max_images=2, px=48)]
        mark = ' data-selected="1"' if selected is not None and r["review_id"] == selected else ""
        out.append(
            f'<tr data-review="{escape(str(r["review_id"]))}"{mark} style="{";".join(style)}">'
            + "".join(f'<td style="padding:2px 6px;vertical-align:top">{c}</td>' for c in cells)
            + "</tr>"
        )
    out.append("</table>")
    return "\n".join(out)


def review_detail_html(det: ReviewDetail) -> str:
    """The review panel's text: label, offsets, distances, heads, cues and notes."""
    from html import escape

    lines = [
        f"<b>review {escape(det.review_id)}</b> (product {escape(det.product_id)}, {det.split}), "
        f"human label H = {det.label}",
        f'<div style="max-width:60em">{escape(det.text)}</div>',
    ]
    if det.offsets:
        rows = "".join(
            f"<tr><td>{escape(s)}</td><td>{det.trajectory[s][-1]:.3f}</td><td>{det.offsets[s]:+.3f}</td>"
            f"<td>{det.estimates[s]:.3f}</td><td>{det.chi[s]:.3f}</td></tr>"
            for s in det.offsets
        )
        lines.append(
            '<table class="mmss-offsets" style="font-size:12px"><tr><th>subtask</th><th>y_s (last)</th>'
            "<th>offset y_s − y_g</th><th>estimate (Eq. 21)</th><th>χ_s</th></tr>" + rows + "</table>"
            f"χ_g = {det.chi['g']:.3f} (Eq. 18; χ_s > χ_g raises the pseudo label)"
        )
    if det.heads:
        lines.append("heads: " + ", ".join(f"{escape(k)} = {v:.3f}" for k, v in det.heads.items()))
    if det.cues:
        lines.append(
            "planted cues (demo): " + ", ".join(f"{escape(str(k))} = {escape(str(v))}" for k, v in det.cues.items())
        )
    lines.append("images: " + images_html(det.image_files))
    for n in det.notes:
        lines.append(f'<i style="color:#666">{escape(n)}</i>')
    return "<br>".join(lines)


def product_html(product: dict) -> str:
    from html import escape

    text = str(product.get("text", ""))
    return (
        f'<div class="mmss-product"><b>{escape(str(product.get("name", "")))}</b> '
        f"({escape(str(product['product_id']))}, {int(product.get('n_reviews', 0))} reviews)<br>"
        f'<div style="max-width:60em;font-size:12px">{escape(text[:600])}{"..." if len(text) > 600 else ""}</div>'
        f"{images_html(product.get('image_files') or [])}</div>"
    )
