"""A run folder: where one training run (or floor) keeps its files, and the rules that decide
whether a run is finished, may be resumed, or is in use. Every caller (the trainer, the floors,
the sweeps of :mod:`mmss_lib.model_selection.sweeps`, the notebooks and benchmarks that read results) asks
this module.

Layout::

    {runs_root}/{dataset}/{category}/{system}[__{variant}]/seed{n}/            (run_dir_for)
    {runs_root}/{dataset}/{category}/{system}[__{variant}]/{tag}/fold{f}/seed{n}  (fold_run_dir)

    config.json       {"config": TrainConfig.to_json(), "run": {"dataset", "category"}, "threshold",
                       "features": store manifests}; written when the run starts
    history.json      one entry per finished epoch (losses, dev metrics, seconds; [] for floors)
    last.pt / best.pt trainer checkpoints (the last epoch; the best dev-MAP epoch)
    metrics.json      written last: its presence means the run is finished
    scores_{dev,test}.csv, ssp/epochNNN.npz (MM-SS), .lock
    ranking_{dev,test}.csv.gz  per product, its reviews' labels in the order the run ranks them
                      (no review ids): every per-product metric, exactly, where the per-review
                      scores are not kept (results of record in git); written with the scores

Identity. A run is the same run when its ``run`` record (dataset, category) is equal and its
configuration is equal apart from :data:`PLACEMENT_FIELDS` (where it was trained, not what: a run
finished on a GPU, or with another thread count, is finished for every caller) and
:data:`PROVENANCE_FIELDS` (where its settings were read from, not what they are: the settings
themselves are compared, so a study's results moved to another folder still name their runs). A finished run
of the same identity is returned as is; with another identity it is trained again into the folder
(resume rules apply). Resuming from ``last.pt`` additionally tolerates
:data:`RESUME_FREE_FIELDS` (a longer ``epochs``, another ``patience`` or evaluation batch size
continue the same trajectory).

Inputs. A run is also the data and the features it read: ``inputs.json`` (:func:`run_inputs`,
written before training starts) records a sha256 of every split file of its category (products,
reviews, labels, cues: the labels are a property of the data, not of the stores) and the
identity of every feature store it read (:func:`mmss_lib.features.fingerprint.store_identity`:
content fingerprint, extraction settings such as the text ``max_len``, row counts).
:func:`check_run_inputs` compares them with the current inputs before a sweep returns or resumes
a run: a finished or interrupted run on other inputs is refused with one line naming what changed
(labels, reviews, products, a store's settings), never returned; ``mmss train --retrain``
discards it (:func:`discard_run`) and trains it again. A run written before runs recorded their
inputs is accepted with a warning (once per run and process) when its recorded stores match (its
data cannot be checked), and its inputs are recorded from then on.

Lock: :func:`run_lock` (an OS lock on ``.lock`` while a process trains or writes the folder).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from mmss_lib.errors import DataError

CONFIG, HISTORY, METRICS, LAST, BEST, LOCK, INPUTS = (
    "config.json",
    "history.json",
    "metrics.json",
    "last.pt",
    "best.pt",
    ".lock",
    "inputs.json",
)
SCORES = "scores_{split}.csv"  # scores_dev.csv, scores_test.csv


def scores_path(run_dir, split: str) -> Path:
    """``{run_dir}/scores_{split}.csv``: review_id, product_id, label, score (and sub-scores) of a split."""
    return Path(run_dir) / SCORES.format(split=split)


RANKING = "ranking_{split}.csv.gz"  # ranking_dev.csv.gz, ranking_test.csv.gz


def ranking_path(run_dir, split: str) -> Path:
    """``{run_dir}/ranking_{split}.csv.gz``: per product (first-appearance order of the scores
    file) the labels of its reviews in the order the run ranks them (stable ties), space-separated."""
    return Path(run_dir) / RANKING.format(split=split)


def write_rankings(run_dir) -> list[Path]:
    """Write ``ranking_{split}.csv.gz`` from every ``scores_{split}.csv`` of a run folder (the
    per-product record that stays when the per-review scores are not kept: no review ids, a few
    KB); return the files written. Deterministic bytes (gzip without a time stamp), atomic."""
    import gzip

    import numpy as np
    import pandas as pd

    from mmss_lib.utils import atomic_path

    written = []
    for split in ("dev", "test"):
        src = scores_path(run_dir, split)
        if not src.exists():
            continue
        df = pd.read_csv(src, dtype={"review_id": str, "product_id": str})
        for col in ("product_id", "label", "score"):
            if col not in df.columns:
                raise DataError(f"{src}: column {col!r} missing; expected review_id, product_id, label, score")
        labels = df["label"].to_numpy()
        if not np.array_equal(labels, np.round(labels)):
            raise DataError(f"{src}: labels must be integers for a ranking record, got {labels[:3].tolist()}")
        codes, uniques = pd.factorize(df["product_id"], sort=False)
        order = np.lexsort((np.arange(len(df)), -df["score"].to_numpy(np.float64), codes))  # stable ties
        lines = ["product_id,labels"]
        bounds = np.r_[0, np.cumsum(np.bincount(codes, minlength=len(uniques)))]
        ranked = labels[order].astype(np.int64)
        for j, pid in enumerate(uniques):
            lines.append(f"{pid},{' '.join(map(str, ranked[bounds[j] : bounds[j + 1]]))}")
        dst = ranking_path(run_dir, split)
        with atomic_path(dst) as tmp:
            tmp.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), mtime=0))
        written.append(dst)
    return written


def read_ranking(run_dir, split: str):
    """A ranking record as a scores frame (``product_id, label, score``; the score a decreasing
    rank, so any ranking metric of it equals the run's, stable ties included)."""
    import numpy as np
    import pandas as pd

    path = ranking_path(run_dir, split)
    if not path.exists():
        raise DataError(f"{path}: no ranking record for this run; write it from its scores (write_rankings)")
    try:
        rec = pd.read_csv(path, dtype={"product_id": str, "labels": str}, keep_default_na=False)
        if list(rec.columns) != ["product_id", "labels"]:
            raise ValueError(f"columns {list(rec.columns)}, expected product_id, labels")
        per = [np.array(s.split(), dtype=np.int64) for s in rec["labels"]]
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a ranking record written by write_rankings ({exc})") from None
    n = np.array([len(x) for x in per])
    label = np.concatenate(per) if per else np.zeros(0, np.int64)
    return pd.DataFrame(
        {
            "product_id": np.repeat(rec["product_id"].to_numpy(), n),
            "label": label,
            "score": -np.arange(len(label), dtype=np.float64),
        }
    )


# config fields that say where a run was trained, not what
PLACEMENT_FIELDS = ("device", "num_threads")
# config fields that say where a run's settings were read from (the study's best.json), not what they are
PROVENANCE_FIELDS = ("tuned_from",)
# fields that may change between an interrupted run and its resumption
RESUME_FREE_FIELDS = PLACEMENT_FIELDS + PROVENANCE_FIELDS + ("epochs", "patience", "eval_batch_size")


# ------------------------------------------------------------------------------------ layout


def run_name(system: str, variant: str | None = "full") -> str:
    """Folder name of a system/variant: ``mmss``, ``mmss__wo_b``, ``mcr``."""
    return system if variant in (None, "", "full") else f"{system}__{variant}"


def run_dir_for(runs_root, dataset: str, category: str, system: str, variant: str | None, seed: int) -> Path:
    """``{runs_root}/{dataset}/{category}/{system}[__{variant}]/seed{n}``."""
    return Path(runs_root) / dataset / category / run_name(system, variant) / f"seed{int(seed)}"


def fold_run_dir(
    runs_root, dataset: str, category: str, system: str, variant: str | None, tag: str, fold: int, seed: int
) -> Path:
    """``{runs_root}/{dataset}/{category}/{system}[__{variant}]/{tag}/fold{f}/seed{n}``."""
    return (
        Path(runs_root) / dataset / category / run_name(system, variant) / tag / f"fold{int(fold)}" / f"seed{int(seed)}"
    )


def study_dir_for(tune_root, dataset: str, category: str, system: str, variant: str | None = "full") -> Path:
    """An ``mmss tune`` study's folder: ``{tune_root}/{dataset}/{category}/{system}[__{variant}]``."""
    return Path(tune_root) / dataset / category / run_name(system, variant)


def trial_run_dir(study_dir, number: int) -> Path:
    """A study trial's run folder, ``{study_dir}/trials/trial{NNNN}`` (an ordinary run folder: resumable,
    lockable; inside the study's folder, so never one of a sweep's ``seed{n}`` folders)."""
    return Path(study_dir) / "trials" / f"trial{int(number):04d}"


# ------------------------------------------------------------------------------------ identity


def config_diff(a: dict, b: dict, ignore: Iterable[str] = ()) -> list[str]:
    """Sorted names of the fields that differ between two config dicts, ``ignore`` and
    :data:`mmss_lib.training.config.RETIRED_FIELDS` aside."""
    from mmss_lib.training.config import RETIRED_FIELDS

    ignore = set(ignore) | set(RETIRED_FIELDS)
    keys = sorted((set(a) | set(b)) - ignore)
    return [k for k in keys if a.get(k) != b.get(k)]


def same_run(record: dict, config: dict, run_info: dict) -> bool:
    """Whether a config.json ``record`` is the run (``config``, ``run_info``): equal ``run``, equal
    configuration apart from :data:`PLACEMENT_FIELDS` and :data:`PROVENANCE_FIELDS`."""
    return dict(record.get("run") or {}) == dict(run_info or {}) and not config_diff(
        dict(record.get("config") or {}), config, PLACEMENT_FIELDS + PROVENANCE_FIELDS
    )


def resume_mismatch(checkpoint: dict, config: dict, run_info: dict) -> list[str]:
    """What forbids resuming from a checkpoint (its ``config`` and ``run``): the differing fields
    (``RESUME_FREE_FIELDS`` aside), plus ``"run (dataset/category)"`` when the run differs."""
    diff = config_diff(dict(checkpoint.get("config") or {}), config, RESUME_FREE_FIELDS)
    if dict(checkpoint.get("run") or {}) != dict(run_info or {}):
        diff.append("run (dataset/category)")
    return diff


def finished_metrics(run_dir, config: dict, run_info: dict) -> dict | None:
    """metrics.json of the finished run in ``run_dir`` when it is this run (:func:`same_run`),
    else None (not finished, or another configuration)."""
    cp, mp = Path(run_dir) / CONFIG, Path(run_dir) / METRICS
    if not (cp.exists() and mp.exists()):
        return None
    if not same_run(_read_json(cp), config, run_info):
        return None
    return _read_json(mp)


# ------------------------------------------------------------------------------------ inputs

INPUTS_FORMAT = 1
# the data files of a category a run reads (cues: the ceilings' planted cues)
DATA_KINDS = ("prd", "rvw", "rel", "cues")
_WHAT_FILE = {"prd": "products", "rvw": "reviews", "rel": "labels", "cues": "cues"}
_digests: dict = {}  # (path, size, mtime_ns) -> sha256 (a sweep checks many runs of one category)
_warned_legacy: set = set()


class StaleRunError(DataError):
    """A finished or interrupted run whose inputs (data or features) changed since it was trained."""


def _file_sha256(path: Path) -> str:
    import hashlib

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _digests:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _digests[key] = h.hexdigest()
    return _digests[key]


def data_inputs(data_root, dataset: str, category: str, splits: Iterable[str] = ("train", "dev", "test")) -> dict:
    """``{file name: sha256}`` of the category's split files that exist (``{category}.{kind}.{split}``
    for :data:`DATA_KINDS`); a missing file is left to the loader to name."""
    folder = Path(data_root) / dataset / category
    out = {}
    for split in splits:
        for kind in DATA_KINDS:
            path = folder / f"{category}.{kind}.{split}"
            if path.is_file():
                out[path.name] = _file_sha256(path)
    return out


def feature_inputs(features_root, dataset: str, category: str, kinds: Iterable[str]) -> dict:
    """``{store: identity}`` (:func:`mmss_lib.features.fingerprint.read_store_identity`) of the stores
    ``kinds``; a store not on disk is None (the loader names it when the run needs it)."""
    from mmss_lib.features.fingerprint import read_store_identity
    from mmss_lib.features.store import feature_dirs

    dirs = feature_dirs(features_root, dataset, category)
    return {k: (read_store_identity(dirs[k]) if (Path(dirs[k]) / "manifest.json").is_file() else None) for k in kinds}


def stores_read(config: dict) -> tuple[str, ...]:
    """The feature stores a run of ``config`` (a TrainConfig JSON dict) reads: none for a floor or
    ceiling, the region stores when it encodes its texts itself, else all four."""
    from mmss_lib.features.loader import REGION_KINDS, STORE_KINDS
    from mmss_lib.models.registry import is_floor

    if is_floor(str(config.get("system"))):
        return ()
    return REGION_KINDS if config.get("text_mode", "cached") != "cached" else STORE_KINDS


def run_inputs(data_root, dataset: str, category: str, features_root, config: dict) -> dict:
    """What ``inputs.json`` records for a run of ``config`` on this category (module docstring)."""
    return {
        "format": INPUTS_FORMAT,
        "data": data_inputs(data_root, dataset, category),
        "features": feature_inputs(features_root, dataset, category, stores_read(config)),
    }


def input_changes(old: dict, new: dict) -> list[str]:
    """What differs between two inputs records, as phrases (``labels changed (home.rel.train)``,
    ``store text_rvw: max_len 32 -> 64``); what one side does not record is not compared."""
    from mmss_lib.features.fingerprint import identity_changes

    out = []
    if "data" in old and "data" in new:
        a, b = dict(old["data"] or {}), dict(new["data"] or {})
        by_what: dict = {}
        for name in sorted(set(a) | set(b)):
            if a.get(name) != b.get(name):
                kind = name.rsplit(".", 2)[-2] if name.count(".") >= 2 else name
                state = "missing now" if name not in b else "new" if name not in a else "changed"
                by_what.setdefault(_WHAT_FILE.get(kind, kind), []).append(f"{name} {state}")
        out += [f"{what} ({', '.join(files)})" for what, files in by_what.items()]
    a, b = dict(old.get("features") or {}), dict(new.get("features") or {})
    for store in sorted(set(a) & set(b)):
        if a[store] is None or b[store] is None:
            continue
        changed = identity_changes(a[store], b[store])
        if changed:
            out.append(f"feature store {store} ({', '.join(changed)})")
    return out


def _legacy_inputs(run_dir: Path) -> dict:
    """The inputs a run written before ``inputs.json`` existed records: its stores' manifests in
    config.json (no settings, no data)."""
    from mmss_lib.features.fingerprint import store_identity

    if not (run_dir / CONFIG).is_file():
        return {}
    feats = _read_json(run_dir / CONFIG).get("features") or {}
    return {"features": {k: store_identity(v) for k, v in feats.items() if isinstance(v, dict)}}


def check_run_inputs(run_dir, inputs: dict, *, retrain: bool = False) -> str:
    """Compare a run folder's recorded inputs with ``inputs`` (:func:`run_inputs`) before it is
    returned or resumed. Returns ``"fresh"`` (nothing trained there yet), ``"same"``, ``"legacy"``
    (written before runs recorded inputs; its stores match) or ``"discarded"`` (other inputs and
    ``retrain``: :func:`discard_run`); other inputs without ``retrain`` raise
    :class:`StaleRunError` naming what changed."""
    rd = Path(run_dir)
    if not any((rd / f).exists() for f in (CONFIG, METRICS, LAST)):
        return "fresh"
    legacy = not (rd / INPUTS).is_file()
    old = _legacy_inputs(rd) if legacy else _read_json(rd / INPUTS)
    changes = input_changes(old if isinstance(old, dict) else {}, inputs)
    if not changes:
        return "legacy" if legacy else "same"
    if retrain:
        with run_lock(rd, "run"):
            discard_run(rd)
        return "discarded"
    what = "finished run" if (rd / METRICS).exists() else "interrupted run"
    raise StaleRunError(
        f"{rd}: this {what} was trained on other inputs: {'; '.join(changes)}; its results would not "
        "describe the current data, so it is not returned; give another --runs folder, or --retrain "
        "to discard it and train it again"
    )


def record_run_inputs(run_dir, inputs: dict) -> None:
    """Write ``inputs.json`` (before a run trains; :func:`check_run_inputs` reads it)."""
    from mmss_lib.utils import atomic_write_json

    atomic_write_json(Path(run_dir) / INPUTS, inputs)


def adopt_legacy_runs(run_dirs: Iterable, inputs_of: Iterable[dict]) -> None:
    """Runs written before runs recorded their inputs: one warning (once per run and process), and
    their current inputs recorded so that later changes are detected (a read-only folder is left
    as it is)."""
    import warnings

    new = [(Path(rd), inp) for rd, inp in zip(run_dirs, inputs_of, strict=True) if str(Path(rd)) not in _warned_legacy]
    if not new:
        return
    _warned_legacy.update(str(rd) for rd, _ in new)
    warnings.warn(
        f"{len(new)} run(s) ({new[0][0]}{', ...' if len(new) > 1 else ''}) were written before runs "
        "recorded their inputs: their feature stores match, but the data (labels) they were trained on "
        "cannot be checked; taken as they are, and their inputs are recorded now so that later changes "
        "are detected (--retrain trains them again)",
        UserWarning,
        stacklevel=3,
    )
    for rd, inp in new:
        try:
            record_run_inputs(rd, {**inp, "adopted": True})
        except OSError:
            pass


def discard_run(run_dir) -> None:
    """Delete a run's results and checkpoints (``--retrain``): config, history, metrics, inputs,
    ``last.pt`` / ``best.pt``, the score files and SSP records; the folder and its lock stay."""
    import shutil

    rd = Path(run_dir)
    for name in (METRICS, CONFIG, HISTORY, LAST, BEST, INPUTS):
        (rd / name).unlink(missing_ok=True)
    for p in rd.glob(SCORES.format(split="*")):
        p.unlink(missing_ok=True)
    for sub in ("ssp", "ssp_banks"):
        if (rd / sub).is_dir():
            shutil.rmtree(rd / sub)


# ------------------------------------------------------------------------------------ lock

_HELD_LOCKS: set = set()  # run folders this process holds (re-entrant lock)


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, what: str = "run") -> Iterator[Path]:
    """Hold an exclusive OS lock (``fcntl.flock``) on ``{run_dir}/.lock`` while a run trains or
    writes its folder. A second process asking for the same folder is refused at once with a
    :class:`~mmss_lib.errors.RunInUseError` naming the folder and the holder's PID (written into
    the lock file). The kernel drops the lock when its holder exits, however it dies, so a stale
    lock file from a killed process never blocks. Re-entrant within one process (nested calls on
    the same folder). No lock is taken where ``fcntl`` is missing (Windows), in a read-only folder
    (the folder itself not writable, or on a read-only file system: finished runs are only read
    there), or on a file system without locks (with a warning). A ``.lock`` that cannot be opened
    for writing in a writable folder (a folder of that name, a read-only or immutable file) is a
    :class:`~mmss_lib.errors.DataError` naming it: going on unlocked there would let two processes
    train one run at once."""
    run_dir = Path(run_dir)
    key = str(run_dir.resolve())
    if key in _HELD_LOCKS:
        yield run_dir / LOCK
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield run_dir / LOCK
        return
    from mmss_lib.errors import RunInUseError

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    fd = None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        import errno

        writable = exc.errno != errno.EROFS and os.access(run_dir, os.W_OK | os.X_OK)
        if writable and path.is_dir():
            raise DataError(
                f"{path}: the lock file of this {what} is a folder; remove it (rm -r '{path}') and "
                "run again (the lock file only holds the PID of the process that trains or writes "
                "the folder)"
            ) from None
        if writable:
            raise DataError(
                f"{path}: the lock file of this {what} cannot be opened for writing ({exc.strerror}) "
                f"although its folder is writable (a read-only or immutable file); remove it (rm -f "
                f"'{path}', after chattr -i if immutable) and run again; it would not keep two "
                "processes apart"
            ) from None
    if fd is None:  # a read-only folder (finished runs are read there): no lock
        yield path
        return
    try:
        locked = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            except OSError:
                holder = "unknown"
            raise RunInUseError(
                f"{run_dir}: this {what} is in use by another process (PID {holder}) that "
                "trains or writes it now; wait until it has finished (a finished run is then "
                "skipped) or give another " + ("--out" if what.startswith("study") else "runs folder")
            ) from None
        except OSError as exc:  # a file system without locks (ENOLCK): go on unlocked, say so
            import warnings

            warnings.warn(
                f"{run_dir}: cannot lock the run folder ({exc}); two processes on it would not be kept apart",
                RuntimeWarning,
                stacklevel=3,
            )
            locked = False
        if not locked:
            yield path
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD_LOCKS.add(key)
        try:
            yield path
        finally:
            _HELD_LOCKS.discard(key)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------ reading


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path}: not a JSON file written by the trainer ({exc}); delete the run folder to train it again"
        ) from None


def load_history(run_dir) -> list[dict]:
    """A run's ``history.json``: one dict per finished epoch (``epoch``, losses, ``dev`` metrics)."""
    path = Path(run_dir) / HISTORY
    if not path.exists():
        raise DataError(f"{path}: no training history; train this run first")
    return _read_json(path)


def load_run_config(run_dir):
    """The :class:`~mmss_lib.training.trainer.TrainConfig` a run folder's ``config.json`` records (None if absent)."""
    from mmss_lib.training.config import TrainConfig

    path = Path(run_dir) / CONFIG
    if not path.exists():
        return None
    try:
        return TrainConfig.from_json(json.loads(path.read_text(encoding="utf-8"))["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a config.json written by the trainer ({exc})") from None


def finished_results(runs_root, dataset: str, category: str):
    """The results frame of every finished run (a run folder with ``metrics.json``) of a category
    under ``runs_root``, in :func:`mmss_lib.model_selection.sweeps.run_experiment`'s layout (rows sorted by run
    folder): what a report needs when the runs were trained elsewhere or earlier."""
    import pandas as pd

    rows = []
    for mp in sorted((Path(runs_root) / dataset / category).glob(f"*/seed*/{METRICS}")):
        rd = mp.parent
        cfg = _read_json(rd / CONFIG)["config"]
        m = _read_json(mp)
        rows.append(
            {
                "dataset": dataset,
                "category": category,
                "system": cfg["system"],
                "variant": cfg["variant"],
                "seed": int(cfg["seed"]),
                **{k: m["test"][k] for k in ("MAP", "NDCG@3", "NDCG@5", "MRR")},
                "dev_MAP": m["dev"]["MAP"],
                "best_epoch": m["best_epoch"],
                "epochs_run": m["epochs_run"],
                "seconds": m.get("seconds", 0.0),
                "run_dir": str(rd),
            }
        )
    return pd.DataFrame(rows)
