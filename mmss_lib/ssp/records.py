"""SSP-Label records on disk, one home for their format: the trainer's writer and every reader.

At the end of each epoch the trainer writes ``{run_dir}/ssp/epoch{i:03d}.npz``
(:func:`write_record`): the review ids of the training split in sample-index order and the record
``SSPLabel.record`` returns (per review: ``y_g``, ``seen``, ``chi_g``, and per subtask
``label_{s}``, ``offset_{s}``, ``estimate_{s}``, ``chi_{s}``; per task ``sqrt_s_{k}``; the health
scalars; see :mod:`mmss_lib.ssp.label`). Plain arrays only: readers load them with
``allow_pickle=False``, so a shared run folder runs no code. Readers: :func:`load_ssp_history`
(every epoch stacked, :class:`SSPHistory`), :class:`SSPRecords` (lazy: a key of an epoch file read
on first use, for the explorer), :func:`largest_offset_reviews`; the health table and
the cue association are :mod:`mmss_lib.evaluation.ssp_analysis`, the interactive view :mod:`mmss_lib.explore.explorer`.
No torch here: the records are read where torch is not needed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from mmss_lib.errors import DataError
from mmss_lib.utils import atomic_path

RECORD_DIR = "ssp"
_EPOCH_FILE = re.compile(r"^epoch(\d+)\.npz$")  # the lazy reader's file names (SSPRecords)


def record_path(run_dir: str | os.PathLike, epoch: int) -> Path:
    """``{run_dir}/ssp/epoch{epoch:03d}.npz``."""
    return Path(run_dir) / RECORD_DIR / f"epoch{int(epoch):03d}.npz"


def write_record(run_dir: str | os.PathLike, epoch: int, review_ids, record: dict) -> Path:
    """Write one epoch's record atomically (compressed ``.npz`` of plain arrays) and return its path."""
    path = record_path(run_dir, epoch)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, review_id=np.asarray(review_ids).astype(str), **record)
    return path


class SSPHistory:
    """The SSP-Label records of one MM-SS run (``{run_dir}/ssp/epoch{i:03d}.npz``), stacked.

    Attributes: ``epochs`` (E,), ``review_id`` (N,) training reviews in sample-index order,
    ``y_g`` (N,), ``seen`` (E, N) bool, ``chi_g`` (E, N), and per subtask ``labels[s]``,
    ``offsets[s]`` (= y_s - y_g, Eq. 21's delta_gs), ``estimates[s]`` (the raw Eq. 21 estimate
    before the EWMA), ``chi[s]`` (E, N) (Eq. 18).
    """

    def __init__(self, epochs, review_id, y_g, seen, chi_g, labels, offsets, estimates, chi):
        self.epochs, self.review_id, self.y_g, self.seen, self.chi_g = epochs, review_id, y_g, seen, chi_g
        self.labels, self.offsets, self.estimates, self.chi = labels, offsets, estimates, chi

    @property
    def subtasks(self) -> list[str]:
        return list(self.labels)

    def index_of(self, review_id: str) -> int:
        hits = np.flatnonzero(self.review_id == str(review_id))
        if not hits.size:
            raise DataError(
                f"review {review_id!r} is not a training review of this run "
                f"(pseudo labels exist for training reviews only)"
            )
        return int(hits[0])

    def final(self, i: int) -> dict[str, float]:
        """The last epoch's pseudo label of review index ``i`` per subtask."""
        return {s: float(self.labels[s][-1, i]) for s in self.subtasks}


def load_ssp_history(run_dir: str | os.PathLike) -> SSPHistory:
    """Read and stack every ``ssp/epoch*.npz`` of a run (written by the trainer at each epoch
    end from ``SSPLabel.record``). Raises :class:`DataError` naming the file when one is missing
    a key or disagrees with the others on the reviews."""
    d = Path(run_dir) / "ssp"
    files = sorted(d.glob("epoch*.npz"))
    if not files:
        raise DataError(f"{d}: no SSP-Label records (epoch*.npz); train the full MM-SS model first")
    recs = []
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as z:  # no pickled objects: a shared run runs no code
                recs.append({k: z[k] for k in z.files})
        except Exception as exc:  # corrupt, truncated, or holding pickled objects
            raise DataError(
                f"{f}: not a readable SSP-Label record ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); expected an .npz of plain "
                f"arrays written by mmss train"
            ) from None
    first = recs[0]
    for k in ("review_id", "y_g", "seen", "chi_g"):
        if k not in first:
            raise DataError(f"{files[0]}: key {k!r} missing; keys: {sorted(first)}")
    subtasks = [k[len("label_") :] for k in first if k.startswith("label_")]
    for f, r in zip(files, recs, strict=True):
        if not np.array_equal(r.get("review_id"), first["review_id"]):
            raise DataError(f"{f}: its training reviews differ from those of {files[0]}")
        missing = [f"{p}_{s}" for s in subtasks for p in ("label", "offset", "estimate", "chi") if f"{p}_{s}" not in r]
        if missing:
            raise DataError(f"{f}: key(s) {missing} missing")

    def stack(key):
        return np.stack([np.asarray(r[key], dtype=float) for r in recs])

    epochs = np.array([int(r["epoch"]) if "epoch" in r else int(f.stem[5:]) for f, r in zip(files, recs, strict=True)])
    return SSPHistory(
        epochs=epochs,
        review_id=np.asarray(first["review_id"]).astype(str),
        y_g=np.asarray(first["y_g"], dtype=float),
        seen=np.stack([r["seen"].astype(bool) for r in recs]),
        chi_g=stack("chi_g"),
        labels={s: stack(f"label_{s}") for s in subtasks},
        offsets={s: stack(f"offset_{s}") for s in subtasks},
        estimates={s: stack(f"estimate_{s}") for s in subtasks},
        chi={s: stack(f"chi_{s}") for s in subtasks},
    )


class SSPRecords:
    """The SSP-Label records of one run (``ssp/epoch{i:03d}.npz``, written by the trainer from
    ``SSPLabel.record``), read lazily: a key of an epoch file is decompressed only when asked
    for, and kept. Extra keys in a record are ignored; a missing key or an unreadable file is a
    :class:`DataError` naming the file."""

    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir) / RECORD_DIR
        files = []
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                m = _EPOCH_FILE.match(p.name)
                if m:
                    files.append((int(m.group(1)), p))
        files.sort()
        self.epochs = [e for e, _ in files]
        self.files = [p for _, p in files]
        self._cache: dict[tuple[int, str], np.ndarray] = {}
        self._index: dict[str, int] | None = None
        self._ids = None
        self._subtasks: list[str] | None = None

    def __bool__(self) -> bool:
        return bool(self.files)

    def _read(self, j: int, key: str, *also: str) -> np.ndarray:
        """``key`` of epoch file ``j``; the keys ``also`` are read in the same opening of the file."""
        want = [k for k in (key, *also) if (j, k) not in self._cache]
        if want:
            f = self.files[j]
            try:
                with np.load(f, allow_pickle=False) as z:  # no pickled objects: a shared run runs no code
                    for k in want:
                        if k not in z.files:
                            raise DataError(
                                f"{f}: key {k!r} missing (keys: {', '.join(sorted(z.files)[:12])} ...); "
                                "not an SSP-Label record of this version"
                            )
                        self._cache[(j, k)] = np.asarray(z[k])
            except DataError:
                raise
            except Exception as exc:  # noqa: BLE001 - corrupt, truncated, pickled: one sentence for the view
                first = str(exc).splitlines()[0][:160] if str(exc) else ""
                raise DataError(f"{f}: not a readable SSP-Label record ({type(exc).__name__}: {first})") from None
        return self._cache[(j, key)]

    @property
    def subtasks(self) -> list[str]:
        if self._subtasks is None:
            f = self.files[-1]
            try:
                with np.load(f, allow_pickle=False) as z:
                    keys = list(z.files)
            except Exception as exc:  # noqa: BLE001
                raise DataError(f"{f}: not a readable SSP-Label record ({type(exc).__name__})") from None
            self._subtasks = [k[len("label_") :] for k in keys if k.startswith("label_")]
        return self._subtasks

    def index(self) -> dict[str, int]:
        """review_id -> sample index (the order of the records' arrays), from the last record."""
        if self._index is None:
            ids = self._read(len(self.files) - 1, "review_id").astype(str)
            self._index = {r: i for i, r in enumerate(ids)}
        return self._index

    def positions(self, review_ids) -> np.ndarray:
        """Sample index of each review id, -1 where a review has no record (vectorised)."""
        import pandas as pd

        if self._ids is None:
            self._ids = pd.Index(self._read(len(self.files) - 1, "review_id").astype(str))
        return self._ids.get_indexer(pd.Index(review_ids, dtype=object).astype(str))

    def last(self, key: str, *also: str) -> np.ndarray:
        """``key`` of the last epoch's record, (N,) (``also``: keys read in the same opening)."""
        return self._read(len(self.files) - 1, key, *also)

    def series(self, keys: list[str], i: int) -> dict[str, np.ndarray]:
        """Each of ``keys`` of sample ``i`` in every epoch's record, (E,) per key (each epoch file
        opened once for all of them, each key read once per run)."""
        cols = {k: np.empty(len(self.files)) for k in keys}
        for j in range(len(self.files)):
            for k in keys:
                cols[k][j] = float(self._read(j, k, *keys)[i])
        return cols

    def mean_abs_offset(self) -> np.ndarray:
        """(N,) mean over subtasks of |y_s - y_g| after the last epoch; NaN for unseen reviews."""
        keys = [f"offset_{s}" for s in self.subtasks]
        self.last("seen", *keys)
        off = np.mean([np.abs(self.last(k).astype(float)) for k in keys], axis=0)
        seen = self.last("seen").astype(bool)
        return np.where(seen, off, np.nan)


def largest_offset_reviews(hist: SSPHistory, n: int = 1, *, candidates: np.ndarray | None = None) -> list[int]:
    """Indices of the ``n`` training reviews whose last-epoch offsets are largest (mean over
    subtasks of |y_s - y_g|), among ``candidates`` (a boolean mask, e.g. reviews with images)
    and the reviews SSP-Label has seen. Ties: the lower index first."""
    score = np.mean([np.abs(hist.offsets[s][-1]) for s in hist.subtasks], axis=0)
    ok = hist.seen[-1].copy()
    if candidates is not None:
        ok &= np.asarray(candidates, dtype=bool)
    if not ok.any():
        ok = hist.seen[-1].copy()
    idx = np.flatnonzero(ok)
    order = idx[np.lexsort((idx, -score[idx]))]
    return [int(i) for i in order[:n]]
