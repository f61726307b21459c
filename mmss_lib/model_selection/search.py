"""``mmss tune``: a hyperparameter search per system x category on the dev split only, with Optuna.

One study = one system (and variant) on one dataset/category, in
``{tune_root}/{dataset}/{category}/{system}[__{variant}]/`` (:func:`mmss_lib.training.run_folder.study_dir_for`)::

    study.journal        Optuna's journal storage (the study: trials, params, dev MAP per epoch)
    trials/trial{NNNN}/  each trial an ordinary run folder (resumable from last.pt, locked while trained)
    best.json            the chosen settings, their dev MAP, the first (base) trial's dev MAP, the budget
                         and the CPU seconds the study took
    trials.csv, trials.md  one row per trial (state, dev MAP, epochs, pruned at, seconds, params)
    history.png, importance.png  Optuna's matplotlib plots (optimisation history, parameter importances)

The search (issue "Every system at its best"):

- **Space**: :data:`mmss_lib.models.registry.SEARCH_SPACES`, declared beside the systems with the reason of
  each range; ``--space NAME=LOW:HIGH`` / ``NAME=A,B,C`` narrows or widens one of them.
- **First trial**: the settings a run gets without tuning (the base configuration: the paper's
  App. A.2 settings or a profile's) are enqueued as trial 0, so the chosen settings are never
  worse on dev than the defaults.
- **Sampler**: TPE with a fixed seed (``constant_liar`` for trials that run at once); the first
  ``n_startup`` trials (a third of the budget, at least 3, the base trial included) are drawn at
  random. The sampler is seeded afresh for every batch from the seed and the number of finished
  trials, so a resumed study asks what an uninterrupted one would have asked.
- **Pruner**: Optuna's median pruner fed the dev MAP after every epoch (no pruning before 3 trials
  have finished). A trial is first judged on its dev MAP after epoch ``prune_from`` (default
  :data:`PRUNE_FROM` = 4, ``--prune-from``; Optuna prunes at steps >= ``n_warmup_steps``): MM-SS's
  subtask objective starts in epoch 3 (the first estimated pseudo labels, :mod:`mmss_lib.training.trainer`),
  so epoch 4 is the first dev MAP of a model trained with all of its losses; the same warm-up for
  every system. (Studies of issue 26 judged from epoch 2, which was harder on MM-SS than on the
  baselines; the warm-up is part of the study's budget, so a study is continued only with its own.)
- **Batches**: ``parallel`` trials are asked, run at once through an executor of
  :mod:`mmss_lib.training.executors` (local worker processes, or Ray tasks on a cluster: the same code path as
  the sweeps), and told together; the pruner sees only trials of earlier batches, so the trials do not
  depend on the executor nor on which trial of a batch finishes first.
- **Dev only**: trials train with ``eval_test=False`` and ``score_test=False``: the test split is never
  scored (no per-epoch test metrics, no ``scores_test.csv``, ``metrics.json`` test None).
- **Budget**: the same ``n_trials`` and epoch ceiling (``epochs``, with ``patience``) for every system;
  the CPU and wall seconds of every trial are recorded (systems differ in cost).
- **On disk**: a killed ``mmss tune`` continues where it stopped (finished trials kept, a trial
  killed mid-way resumed from its ``last.pt``); a finished study is not rerun (its outputs are
  rewritten from the storage). A storage of another study, another dataset, other feature stores
  (its trials would mix two inputs) or other settings is refused, naming it; nothing is deleted.
  ``--trials`` below the finished trials a study holds is refused (best.json would name a budget it
  does not describe). A journal that is truncated or edited is refused naming the file and line
  before Optuna appends to it.
- **Domains**: every ``--space`` range or choice is checked against its parameter's valid domain
  (:data:`mmss_lib.models.registry.PARAM_DOMAINS`: dropout in [0, 1), a learning rate in (0, 1],
  weight decay >= 0, integer counts integral) before any trial; so is every value of a best.json.
- **Transient failures**: a trial that fails on the machine rather than on its settings (disk full,
  a killed worker, out of memory: :attr:`mmss_lib.training.executors.JobResult.transient`) is not
  counted: its settings are enqueued again and the command stops with one line; rerunning it once
  the cause is gone retries them (best.json's ``n_transient`` counts such failures). A trial whose
  settings cannot even be built is told FAIL, never left RUNNING (every rerun failed on it).
- **Shared storage**: one ``mmss tune`` per study. A ``--storage`` records the study folder that
  trains it; another ``--out`` on the same storage (which would train a running trial a second
  time) is refused with one line. More trials at once: ``--parallel`` with local workers or
  ``--executor ray``.

``mmss train --tuned DIR`` (and ``run_experiment(tuned=DIR)``, notebook 02's ``tuned``) takes each
system's ``best.json`` from ``DIR`` (:func:`mmss_lib.model_selection.tuned.apply_tuned`); a variant without its own study (an MM-SS
ablation) takes the full system's (the usual ablation practice); the run records the file in
``TrainConfig.tuned_from``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from mmss_lib.errors import DataError, MMSSError, RunStopped, TuneError
from mmss_lib.model_selection.tuned import BEST_FILE, apply_params, checked_value, data_fingerprint
from mmss_lib.models.registry import SEARCH_SPACES, SYSTEMS, SearchParam
from mmss_lib.training.run_folder import load_history, run_lock, study_dir_for, trial_run_dir
from mmss_lib.utils import atomic_path, atomic_write_json

STUDY_FILE = "study.journal"
FORMAT = 1  # of the study's identity record
PRUNE_STARTUP = 3  # finished trials before any pruning
PRUNE_FROM = 4  # first epoch whose dev MAP can prune a trial (module docstring)


# ------------------------------------------------------------------------------------ the space


def resolve_space(system: str, overrides: Sequence[str] = ()) -> dict[str, SearchParam]:
    """The search space of ``system`` with ``--space`` overrides (``NAME=LOW:HIGH`` for a number,
    ``NAME=A,B,C`` for choices, values as JSON)."""
    if system not in SYSTEMS:
        raise TuneError(f"unknown system {system!r}; known: {', '.join(SYSTEMS)}")
    if system not in SEARCH_SPACES:
        raise TuneError(
            f"system {system!r} is not trained (a floor or ceiling): nothing to tune; "
            f"trained systems: {', '.join(SEARCH_SPACES)}"
        )
    space = {p.name: p for p in SEARCH_SPACES[system]}
    given: dict = {}
    for item in overrides or ():
        if "=" not in item:
            raise TuneError(f"--space {item!r}: expected NAME=LOW:HIGH or NAME=A,B,C")
        name, value = (x.strip() for x in item.split("=", 1))
        if name not in space:
            raise TuneError(
                f"--space {item!r}: {system} has no tuned parameter {name!r}; its parameters: {', '.join(space)}"
            )
        if name in given:
            raise TuneError(f"--space {item!r}: {name} is already given ({given[name]!r}); give each parameter once")
        given[name] = item
        space[name] = _override(space[name], value, item)
        _check_domain(space[name], f"--space {item!r}")
    return space


def _check_domain(p: SearchParam, where: str) -> None:
    """Every value a parameter's range or choices can yield lies in its valid domain
    (:data:`mmss_lib.models.registry.PARAM_DOMAINS`): checked before any trial runs."""
    for v in p.choices if p.kind == "categorical" else (p.low, p.high):
        checked_value(p.name, v, where)


def _json_value(text: str, item: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise TuneError(f"--space {item!r}: {text!r} is not a number or JSON value") from None


def _override(p: SearchParam, value: str, item: str) -> SearchParam:
    if ":" in value:
        if p.kind == "categorical":
            raise TuneError(f"--space {item!r}: {p.name} is a choice among values; give NAME=A,B,C")
        lo, hi = (_json_value(v, item) for v in value.split(":", 1))
        for v in (lo, hi):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TuneError(f"--space {item!r}: {v!r} is not a finite number")
        if lo == hi:
            raise TuneError(
                f"--space {item!r}: empty range ({lo:g}:{hi:g}); give LOW < HIGH (to fix a value, "
                f"set it on the base configuration and leave it out of the search)"
            )
        if lo > hi:
            raise TuneError(f"--space {item!r}: inverted range ({lo:g} > {hi:g}); give LOW:HIGH with LOW < HIGH")
        if p.log and lo <= 0:
            raise TuneError(f"--space {item!r}: {p.name} is searched on a log scale; LOW must be > 0")
        if p.kind == "int" and not (float(lo).is_integer() and float(hi).is_integer()):
            raise TuneError(f"--space {item!r}: {p.name} is an integer; give integer bounds")
        return replace(p, low=lo, high=hi)
    choices = tuple(_json_value(v.strip(), item) for v in value.split(",") if v.strip())
    if not choices:
        raise TuneError(f"--space {item!r}: no value given")
    if p.kind != "categorical":
        if len(choices) == 1:
            raise TuneError(f"--space {item!r}: {p.name} is a range; give NAME=LOW:HIGH")
        raise TuneError(f"--space {item!r}: {p.name} is a range, not a choice; give NAME=LOW:HIGH")
    if len(set(map(repr, choices))) != len(choices):
        raise TuneError(f"--space {item!r}: a value is given twice")
    return replace(p, choices=choices)


def base_values(cfg, space: dict[str, SearchParam]) -> dict:
    """The base configuration's value of every searched parameter (trial 0's settings)."""
    from mmss_lib.training.build import model_option_defaults

    defaults, _ = model_option_defaults(cfg.system)
    out = {}
    for name, p in space.items():
        if p.model_option:
            value = cfg.model_options.get(name, defaults.get(name))
            if value is None or not isinstance(value, (int, float, str, bool)):
                raise TuneError(f"{cfg.system}: tuned model option {name!r} has no default to start from")
        else:
            value = getattr(cfg, name)
        out[name] = value
    return out


def with_base(space: dict[str, SearchParam], base: dict) -> dict[str, SearchParam]:
    """The space with the base value of every categorical among its choices (trial 0 must lie in it);
    a base number outside its range is refused."""
    out = {}
    for name, p in space.items():
        v = base[name]
        if p.kind == "categorical":
            if not any(v == c and type(v) is type(c) for c in p.choices):
                p = replace(
                    p,
                    choices=tuple(sorted(p.choices + (v,), key=float))
                    if _all_numbers(p.choices + (v,))
                    else p.choices + (v,),
                )
        elif not (p.low <= v <= p.high):
            raise TuneError(
                f"the base setting {name}={v!r} lies outside its searched range [{p.low:g}, {p.high:g}]; "
                f"widen it (--space {name}=LOW:HIGH) or change the base setting"
            )
        out[name] = p
    return out


def _all_numbers(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def distributions(space: dict[str, SearchParam]) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for name, p in space.items():
        if p.kind == "float":
            out[name] = FloatDistribution(float(p.low), float(p.high), log=p.log)
        elif p.kind == "int":
            out[name] = IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            out[name] = CategoricalDistribution(list(p.choices))
    return out


# ------------------------------------------------------------------------------------ the study


def check_storage_spec(spec: str) -> None:
    """``--storage`` checked before anything is created: an RDB URL whose dialect SQLAlchemy knows
    (a sqlite file in an existing folder), or a journal file in an existing folder."""
    if "://" in spec:
        try:
            from sqlalchemy.engine import make_url

            url = make_url(spec)
            url.get_dialect()
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy's many error types: one line
            raise TuneError(
                f"--storage {spec!r}: not a database URL Optuna can open ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]}); give sqlite:///PATH, postgresql://..., or a journal file path"
            ) from None
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            folder = Path(url.database).expanduser().parent
            if not folder.is_dir():
                raise TuneError(f"--storage {spec!r}: the folder {folder} of the database file does not exist")
        return
    folder = Path(spec).expanduser().parent
    if not folder.is_dir():
        raise TuneError(f"--storage {spec!r}: the folder {folder} of the journal file does not exist; create it first")
    if Path(spec).is_dir():
        raise TuneError(f"--storage {spec!r}: a folder, not a journal file")


def _check_writable(sdir: Path) -> None:
    """A study folder (or its nearest existing parent) that cannot be written: one line, before
    anything (``train --tuned`` reads a read-only study; tune writes its journal and outputs)."""
    import os

    p = Path(sdir)
    while not p.exists() and p != p.parent:
        p = p.parent
    if p.exists() and not os.access(p, os.W_OK | os.X_OK):
        raise TuneError(
            f"{p}: not writable; mmss tune writes the study's journal and outputs under --out: give a "
            "writable --out (mmss train --tuned reads a read-only study as it is)"
        )


@contextlib.contextmanager
def _study_errors(storage_spec: str, sdir: Path):
    """Errors of the storage and the study folder as one line naming the file: a journal Optuna
    cannot parse (truncated, halved, an edited line), a read-only folder or file system."""
    import errno

    try:
        yield
    except MMSSError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TuneError(
            f"{storage_spec}: the study's journal cannot be read ({type(exc).__name__}: {exc}): a "
            "truncated or edited file; restore it, or give another --out (nothing is deleted)"
        ) from None
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise TuneError(
                f"{exc.filename or sdir}: cannot write ({exc.strerror}); mmss tune writes the study's "
                "journal and outputs under --out: give a writable --out (mmss train --tuned reads a "
                "read-only study as it is)"
            ) from None
        raise


def _check_journal(path: Path) -> None:
    """A study journal read whole before Optuna opens it (and appends to it): every line a JSON
    object and the last line complete; a truncated, halved or edited journal is refused naming the
    file and the line (Optuna skipped a cut last line, then appended its next record to it)."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if not data:
        return
    lines = data.split(b"\n")
    for i, line in enumerate(lines[:-1], 1):
        try:
            ok = isinstance(json.loads(line), dict)
        except ValueError as exc:
            raise TuneError(
                f"{path}: the study's journal cannot be read (line {i}: {exc}): a truncated or edited "
                "file; restore it, or give another --out (nothing is deleted)"
            ) from None
        if not ok:
            raise TuneError(
                f"{path}: the study's journal cannot be read (line {i} is not a JSON object): a truncated "
                "or edited file; restore it, or give another --out (nothing is deleted)"
            )
    if lines[-1].strip():
        raise TuneError(
            f"{path}: the study's journal cannot be read (its last line {len(lines)} is cut off): a "
            "truncated or edited file; restore it, or give another --out (nothing is deleted)"
        )


def _claim_storage(study, sdir: Path, storage_spec: str) -> None:
    """A ``--storage`` shared by two ``mmss tune`` with different ``--out`` would train one trial in
    two folders (each process locks only its own study folder): the study records the folder that
    trains it, and a process with another ``--out`` is refused. Several processes on one study
    (Optuna's distributed pattern) are not supported: one mmss tune per study, ``--parallel`` and
    ``--executor ray`` for more trials at once."""
    here = str(Path(sdir).resolve())
    owner = study.user_attrs.get("study_dir")
    if owner is None:
        study.set_user_attr("study_dir", here)
    elif owner != here:
        raise TuneError(
            f"--storage {storage_spec}: study {study.study_name!r} is trained in {owner}, not {here}; "
            "two mmss tune on one study are not supported (a trial would be trained twice): continue it "
            f"with its own --out, or give another --storage (use --parallel / --executor ray for more "
            "trials at once)"
        )


def _storage(spec: str):
    """Optuna storage: an RDB URL (``sqlite:///...``, ``postgresql://...``) or a journal file path."""
    import optuna

    if "://" in spec:
        return optuna.storages.RDBStorage(spec)
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    return optuna.storages.JournalStorage(JournalFileBackend(spec, lock_obj=JournalFileOpenLock(spec)))


def _pruner(prune_from: int = PRUNE_FROM):
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP, n_warmup_steps=int(prune_from))


def _sampler(seed: int, n_finished: int, n_trials: int):
    import optuna

    return optuna.samplers.TPESampler(
        seed=int(seed) * 100_003 + n_finished, constant_liar=True, n_startup_trials=max(3, n_trials // 3)
    )


def _identity(
    cfg, dataset: str, category: str, fingerprint: str, space: dict, budget: dict, features: dict | None = None
) -> dict:
    from mmss_lib.training.run_folder import PLACEMENT_FIELDS

    config = {
        k: v for k, v in cfg.to_json().items() if k not in PLACEMENT_FIELDS + ("epochs", "patience", "seed")
    }  # those three: in the budget
    return {
        "format": FORMAT,
        "dataset": dataset,
        "category": category,
        "system": cfg.system,
        "variant": cfg.variant,
        "data_sha256": fingerprint,
        "space": {n: json.loads(json.dumps(asdict(p))) for n, p in space.items()},
        "budget": {k: budget[k] for k in ("epochs", "patience", "parallel", "seed", "prune_from")},
        "base_config": config,
        "features": features or {},
    }


def _open_study(storage_spec: str, name: str, identity: dict, base: dict, where: str, sdir=None):
    """Load the study ``name`` from its storage, or create it (base trial enqueued); refuse a storage
    of another study or dataset, or a study made with other settings."""
    import optuna

    if "://" not in storage_spec:
        _check_journal(Path(storage_spec))
    storage = _storage(storage_spec)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if name not in names:
        if names:
            raise TuneError(
                f"{where}: holds study {', '.join(repr(n) for n in names)}, not {name!r}: another "
                "study's storage; give another --out (or --storage)"
            )
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        for k, v in identity.items():
            study.set_user_attr(k, v)
        study.enqueue_trial(base, user_attrs={"base": True})
        return study
    study = optuna.load_study(study_name=name, storage=storage)
    old = study.user_attrs
    if (
        old.get("data_sha256") != identity["data_sha256"]
        or old.get("dataset") != identity["dataset"]
        or old.get("category") != identity["category"]
    ):
        raise TuneError(
            f"{where}: study {name!r} was run on other data ({old.get('dataset')}/{old.get('category')}, "
            f"train+dev sha256 {str(old.get('data_sha256'))[:12]}, now {identity['data_sha256'][:12]}); "
            "give another --out (nothing is deleted)"
        )
    _check_study_features(study, name, identity, where, Path(sdir) if sdir is not None else Path(where).parent)
    differ = sorted(
        k for k in ("format", "system", "variant", "space", "budget", "base_config") if old.get(k) != identity[k]
    )
    if differ:
        detail = []
        for k in differ:
            if isinstance(identity[k], dict) and isinstance(old.get(k), dict):
                keys = sorted(kk for kk in set(identity[k]) | set(old[k]) if identity[k].get(kk) != old[k].get(kk))
                detail.append(f"{k} ({', '.join(keys)})")
            else:
                detail.append(f"{k} ({old.get(k)!r}, now {identity[k]!r})")
        raise TuneError(
            f"{where}: study {name!r} was started with other settings: {'; '.join(detail)}; "
            "give the same settings to continue it, or another --out (nothing is deleted)"
        )
    return study


_warned_legacy_studies: set = set()


def _check_study_features(study, name: str, identity: dict, where: str, sdir: Path) -> None:
    """A study's trials all read the same feature stores: a study continued on other stores (other
    text features, re-extracted images) is refused naming the store and what changed. A study
    started before studies recorded their stores is compared with the stores its trials' config.json
    record (their manifests); when they match it is accepted with one warning and its stores are
    recorded from then on."""
    from mmss_lib.training.run_folder import input_changes

    old = study.user_attrs.get("features")
    legacy = old is None
    if legacy:
        old = {}
        for cp in sorted(sdir.glob("trials/trial*/config.json")):
            try:
                rec = json.loads(cp.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            from mmss_lib.features.fingerprint import store_identity

            old = {k: store_identity(v) for k, v in (rec.get("features") or {}).items() if isinstance(v, dict)}
            break
    changes = input_changes({"features": old}, {"features": identity["features"]})
    if changes:
        raise TuneError(
            f"{where}: study {name!r} was run on other features: {'; '.join(changes)}; its trials would "
            "mix two inputs, so it is not continued; give another --out for a study of these features, "
            "or point --features at the stores it was run on (nothing is deleted)"
        )
    if legacy:
        if str(where) not in _warned_legacy_studies:
            _warned_legacy_studies.add(str(where))
            warnings.warn(
                f"{where}: study {name!r} was started before studies recorded their feature stores; its "
                "trials' recorded stores match these, so it is continued, and the stores are recorded now",
                UserWarning,
                stacklevel=3,
            )
        study.set_user_attr("features", identity["features"])


def _trial_job(spec: dict) -> dict:
    """One trial (a module-level function: worker processes and Ray tasks import it by reference):
    train the run with the trial's settings, report dev MAP after every epoch to the study (the
    pruner may stop it), never score the test split."""
    import optuna

    from mmss_lib.training.config import TrainConfig
    from mmss_lib.training.trainer import train_run

    t0, c0 = time.perf_counter(), time.process_time()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=spec["study"], storage=_storage(spec["storage"]), pruner=_pruner(spec.get("prune_from", PRUNE_FROM))
    )
    trial = optuna.trial.Trial(study, int(spec["trial_id"]))
    cfg = TrainConfig.from_json(spec["config"])
    reported = set(study._storage.get_trial(int(spec["trial_id"])).intermediate_values)  # a resumed trial

    def report(entry: dict) -> None:
        epoch = int(entry["epoch"])
        if epoch not in reported:
            trial.report(float(entry["dev"]["MAP"]), epoch)
        if trial.should_prune():
            raise RunStopped(f"pruned after epoch {epoch} (dev MAP {entry['dev']['MAP']:.4f})")

    run_dir = Path(spec["run_dir"])
    try:
        m = train_run(
            cfg,
            data_root=spec["data_root"],
            dataset=spec["dataset"],
            category=spec["category"],
            features_root=spec["features_root"],
            run_dir=run_dir,
            progress=False,
            on_epoch=report,
            score_test=False,
        )
        out = {
            "state": "complete",
            "value": float(m["dev"]["MAP"]),
            "best_epoch": int(m["best_epoch"]),
            "epochs_run": int(m["epochs_run"]),
            "ceiling_while_improving": bool(m.get("ceiling_while_improving")),
        }
    except RunStopped:
        history = load_history(run_dir)
        out = {
            "state": "pruned",
            "value": float(history[-1]["dev"]["MAP"]),
            "epochs_run": len(history),
            "best_epoch": int(max(history, key=lambda h: h["dev"]["MAP"])["epoch"]),
            "pruned_at": int(history[-1]["epoch"]),
        }
    out.update(wall_seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0)
    return out


def tune(
    *,
    data_root,
    dataset: str,
    category: str,
    features_root,
    tune_root,
    system: str,
    variant: str = "full",
    base_config=None,
    n_trials: int = 12,
    parallel: int = 2,
    seed: int = 0,
    space: Sequence[str] = (),
    executor="local",
    n_jobs: int | None = None,
    ray_address: str | None = None,
    ray_timeout: float | None = None,
    storage: str | None = None,
    progress: bool = True,
    prune_from: int = PRUNE_FROM,
) -> dict:
    """Run (or continue) one study; write its outputs; return best.json's content."""
    import optuna

    from mmss_lib.models.mmss import ABLATIONS
    from mmss_lib.training.config import TrainConfig
    from mmss_lib.training.executors import Job, make_executor

    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise TuneError(
            f"n_trials={n_trials!r} (--trials): expected an integer >= 1 (a budget of 0 trials tunes nothing)"
        )
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise TuneError(f"parallel={parallel!r} (--parallel): expected an integer >= 1")
    if isinstance(prune_from, bool) or not isinstance(prune_from, int) or prune_from < 1:
        raise TuneError(f"prune_from={prune_from!r} (--prune-from): expected an epoch number >= 1")
    sp = resolve_space(system, space)
    if system == "mmss" and variant not in ABLATIONS:
        raise TuneError(f"unknown MM-SS variant {variant!r}; known: {', '.join(ABLATIONS)}")
    if system != "mmss" and variant != "full":
        raise TuneError(f"system {system!r} has no variants (only MM-SS's ablations of model.ABLATIONS)")
    base = base_config or TrainConfig()
    cfg = replace(
        base,
        system=system,
        variant=variant,
        seed=int(seed),
        eval_test=False,
        tuned_from=None,
        model_options={**base.model_options, **(ABLATIONS.get(variant, {}) if system == "mmss" else {})},
    )
    cfg = TrainConfig.from_json(cfg.to_json())  # the checks of __post_init__
    from mmss_lib.models.registry import check_option_values
    from mmss_lib.training.config import check_device_available

    check_device_available(cfg.device)
    from mmss_lib.training.config import check_finetune_systems

    check_finetune_systems(cfg, SYSTEMS)
    check_option_values(system, cfg.model_options)
    base_params = base_values(cfg, sp)
    sp = with_base(sp, base_params)
    dists = distributions(sp)
    sdir = study_dir_for(tune_root, dataset, category, system, variant)
    if storage:
        check_storage_spec(storage)  # before anything is created
    _check_writable(sdir)
    sdir.mkdir(parents=True, exist_ok=True)
    storage_spec = storage or str(sdir / STUDY_FILE)
    name = f"{dataset}/{category}/{cfg.system}" + ("" if variant == "full" else f"__{variant}")
    budget = {
        "trials": n_trials,
        "epochs": cfg.epochs,
        "patience": cfg.patience,
        "parallel": parallel,
        "seed": seed,
        "prune_from": prune_from,
    }
    from mmss_lib.training.run_folder import feature_inputs, stores_read

    identity = _identity(
        cfg,
        dataset,
        category,
        data_fingerprint(data_root, dataset, category),
        sp,
        budget,
        feature_inputs(features_root, dataset, category, stores_read(cfg.to_json())),
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ex = make_executor(
        executor,
        n_jobs=n_jobs or parallel,
        ray_address=ray_address,
        **({"connect_timeout": ray_timeout} if ray_timeout is not None else {}),
    )
    remote = not ex.in_process
    with run_lock(sdir, f"study {name}"), _study_errors(storage_spec, sdir):
        study = _open_study(storage_spec, name, identity, base_params, storage_spec, sdir)
        if storage:
            _claim_storage(study, sdir, storage_spec)
        held = _counted(study.get_trials(deepcopy=False))
        if len(held) > n_trials:
            raise TuneError(
                f"--trials {n_trials}: study {name!r} ({sdir}) already holds {len(held)} finished trials; "
                f"give --trials {len(held)} or more (a study is continued, never shortened: its best.json "
                "would name a budget it does not describe)"
            )
        with ex:
            while True:
                trials = study.get_trials(deepcopy=False)
                finished = _counted(trials)
                if len(finished) >= n_trials:
                    break
                study = optuna.load_study(
                    study_name=name,
                    storage=study._storage,
                    sampler=_sampler(seed, len(finished), n_trials),
                    pruner=_pruner(prune_from),
                )
                batch = [
                    optuna.trial.Trial(study, t._trial_id) for t in trials if t.state == optuna.trial.TrialState.RUNNING
                ][:parallel]  # killed earlier: resumed
                while len(batch) < parallel and len(finished) + len(batch) < n_trials:
                    batch.append(study.ask(dists))
                where = dict(
                    data_root=data_root,
                    dataset=dataset,
                    category=category,
                    features_root=features_root,
                    prune_from=prune_from,
                )
                jobs = []
                for t in batch:
                    try:
                        jobs.append(_job(Job, study, t, cfg, sp, sdir, storage_spec, name, remote, where))
                    except MMSSError as exc:  # never left RUNNING: every rerun would fail on it again
                        t.set_user_attr("error", f"{type(exc).__name__}: {exc}")
                        study.tell(t, state=optuna.trial.TrialState.FAIL)
                        raise
                threads = ex.threads_per_run(len(jobs))
                if cfg.num_threads is None and threads:
                    for j in jobs:
                        j.args[0]["config"]["num_threads"] = threads
                # told together once the whole batch has finished, in trial order: a trial still
                # running is never pruned against a trial of its own batch
                transient = []
                for res in sorted(ex.run(jobs), key=lambda r: r.index):
                    if _tell(study, batch[res.index], res, progress, n_trials):
                        transient.append((batch[res.index].number, res.error))
                if transient:
                    number, error = transient[0]
                    raise TuneError(
                        f"{sdir}: trial {number} failed on a transient error ({' '.join(str(error).split())[:300]}); "
                        "it is not counted: the same mmss tune retries it once the cause is gone (free "
                        "space, memory), and the study's other trials are kept"
                    )
        best = write_outputs(study, sdir, sp, cfg, budget)
    if progress:
        print(
            f"[tune] {name}: best trial {best['trial']} dev MAP {best['dev_MAP']:.4f} (base trial "
            f"{best['base_dev_MAP']:.4f}); {best['cpu_seconds']:.0f} CPU-s; {sdir / BEST_FILE}",
            flush=True,
        )
    return best


def _counted(trials) -> list:
    """The finished trials that count against the budget: a trial failed on a transient error (disk
    full, a killed worker, out of memory) does not; its settings are asked again."""
    return [t for t in trials if t.state.is_finished() and not t.user_attrs.get("transient")]


def _job(Job, study, trial, cfg, sp, sdir, storage_spec, name, remote, where: dict):
    params = study._storage.get_trial(trial._trial_id).params
    tcfg = apply_params(cfg, params, sp, where=f"{name} trial {trial.number}")
    run_dir = trial_run_dir(sdir, trial.number)
    spec = {
        "study": name,
        "storage": str(Path(storage_spec).resolve()) if "://" not in storage_spec else storage_spec,
        "trial_id": trial._trial_id,
        "config": tcfg.to_json(),
        "run_dir": str(run_dir.resolve() if remote else run_dir),
        **{k: (str(Path(v).resolve()) if remote and k.endswith("root") else v) for k, v in where.items()},
    }
    return Job(f"{name} trial {trial.number}", _trial_job, (spec,), {}, gpu=tcfg.device != "cpu")


def _tell(study, trial, res, progress: bool, n_trials: int) -> bool:
    import optuna

    S = optuna.trial.TrialState
    if res.ok:
        out = res.value
        for k in ("wall_seconds", "cpu_seconds", "best_epoch", "epochs_run", "pruned_at", "ceiling_while_improving"):
            if k in out:
                trial.set_user_attr(k, out[k])
        if out["state"] == "pruned":
            study.tell(trial, state=S.PRUNED)
        else:
            study.tell(trial, out["value"])
        msg = f"dev MAP {out['value']:.4f}" + (
            f", pruned after epoch {out['pruned_at']}"
            if out["state"] == "pruned"
            else f", best epoch {out['best_epoch']}/{out['epochs_run']}"
        )
    else:
        trial.set_user_attr("error", res.error)
        transient = bool(getattr(res, "transient", False))
        if transient:  # not counted; the same settings are asked again first (a rerun retries them)
            trial.set_user_attr("transient", True)
            study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
        study.tell(trial, state=S.FAIL)
        msg = f"FAILED{' (transient: retried on the next run)' if transient else ''}: {res.error}"
    if progress:
        print(f"[tune] trial {trial.number + 1}/{n_trials} {trial.params}: {msg}", flush=True)
    return not res.ok and bool(getattr(res, "transient", False))


# ------------------------------------------------------------------------------------ outputs


def trials_frame(study):
    """One row per trial: number, state, dev_MAP, epochs, pruned_at, ceiling flag, seconds, params."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        value = (
            t.value
            if t.value is not None
            else (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        )
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name.lower(),
                "dev_MAP": value,
                "best_epoch": a.get("best_epoch"),
                "epochs_run": a.get("epochs_run"),
                "pruned_at": a.get("pruned_at"),
                "ceiling_while_improving": bool(a.get("ceiling_while_improving", False)),
                "cpu_seconds": a.get("cpu_seconds"),
                "wall_seconds": a.get("wall_seconds"),
                "base": bool(a.get("base", False)),
                **{f"param_{k}": v for k, v in t.params.items()},
                "error": a.get("error"),
            }
        )
    return pd.DataFrame(rows)


def write_outputs(study, sdir: Path, sp: dict, cfg, budget: dict) -> dict:
    """best.json, trials.csv / trials.md and the two figures, from the storage."""
    import optuna

    df = trials_frame(study)
    with atomic_path(sdir / "trials.csv") as tmp:
        df.to_csv(tmp, index=False)
    legend = (
        "\n\nstate: complete (early stopping or the epoch ceiling decided), pruned (Optuna's median pruner "
        "stopped it; dev MAP of its last epoch), fail. `ceiling_while_improving`: the trial hit the epoch "
        "ceiling while dev MAP still rose. Dev split only: no trial scored the test split.\n"
    )
    with atomic_path(sdir / "trials.md") as tmp:
        tmp.write_text(_markdown(df) + legend)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise TuneError(f"{sdir}: no trial completed (see trials.csv for their errors)")
    bt = max(complete, key=lambda t: (t.value, -t.number))
    base_t = next((t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("base")), None)
    tcfg = apply_params(cfg, bt.params, sp)
    best = {
        "study": study.study_name,
        "system": cfg.system,
        "variant": cfg.variant,
        "dataset": study.user_attrs.get("dataset"),
        "category": study.user_attrs.get("category"),
        "trial": bt.number,
        "dev_MAP": bt.value,
        "params": bt.params,
        "base_trial": base_t.number if base_t else None,
        "base_dev_MAP": base_t.value if base_t is not None and base_t.value is not None else float("nan"),
        "base_params": base_t.params if base_t else None,
        "n_trials": len(df),
        "n_complete": len(complete),
        "n_pruned": int((df["state"] == "pruned").sum()),
        "n_failed": int((df["state"] == "fail").sum()),
        "n_transient": sum(bool(t.user_attrs.get("transient")) for t in study.get_trials(deepcopy=False)),
        "budget": budget,
        "cpu_seconds": float(df["cpu_seconds"].fillna(0).sum()),
        "wall_seconds": float(df["wall_seconds"].fillna(0).sum()),
        "config": {k: v for k, v in tcfg.to_json().items() if k in ("lr", "weight_decay", "n_neg", "batch_size")},
        "model_options": {k: v for k, v in bt.params.items() if sp[k].model_option},
        "space": {n: asdict(p) for n, p in sp.items()},
        "data_sha256": study.user_attrs.get("data_sha256"),
        "features": study.user_attrs.get("features"),
    }
    atomic_write_json(sdir / BEST_FILE, best)
    _figures(study, sdir)
    return best


def _markdown(df) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append("" if math.isnan(v) else f"{v:.4g}")
            else:
                cells.append("" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _figures(study, sdir: Path) -> None:
    """Optuna's matplotlib plots: optimisation history and parameter importances (fANOVA). Where the
    importances cannot be computed (fewer than two completed trials with different settings), the
    figure says so instead."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        ax = ovm.plot_optimization_history(study, target_name="dev MAP")
        _save(ax.figure, sdir / "history.png")
        try:
            ax = ovm.plot_param_importances(study, target_name="dev MAP")
            fig = ax.figure
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            fig, ax = plt.subplots(figsize=(6, 2))
            ax.axis("off")
            ax.text(0.5, 0.5, f"parameter importances not computable:\n{exc}", ha="center", va="center", wrap=True)
        _save(fig, sdir / "importance.png")
    plt.close("all")


def _save(fig, path: Path) -> None:
    fig.set_size_inches(max(fig.get_size_inches()[0], 7), max(fig.get_size_inches()[1], 4))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


# ------------------------------------------------------------------------------------ `mmss tune`


def build_parser(prog: str) -> argparse.ArgumentParser:
    from mmss_lib.model_selection.sweeps import build_parser as train_parser

    ap = train_parser(prog)
    ap.description = (
        "Tune each system's settings on the dev split with Optuna (TPE, median pruning, the "
        "base settings as the first trial); studies in OUT/{dataset}/{category}/{system}/."
    )
    for action in list(ap._actions):
        if action.dest in ("runs", "seeds", "folds", "fold_seed", "dev_fraction", "tuned", "retrain"):
            ap._remove_action(action)
            for g in ap._action_groups:
                if action in g._group_actions:
                    g._group_actions.remove(action)
            for opt in action.option_strings:
                ap._option_string_actions.pop(opt, None)
    ap.add_argument("--out", required=True, help="tune root: studies in OUT/{dataset}/{category}/{system}/")
    ap.add_argument("--trials", type=int, default=12, help="trials per study (the same budget for every system)")
    ap.add_argument("--parallel", type=int, default=2, help="trials run at once (one batch); part of the budget")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sampler and of every trial's run")
    ap.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="NAME=LOW:HIGH|NAME=A,B,C",
        help="override one parameter's range or choices (repeatable)",
    )
    ap.add_argument(
        "--prune-from",
        type=int,
        default=PRUNE_FROM,
        metavar="EPOCH",
        help="first epoch whose dev MAP may prune a trial (default %(default)s: MM-SS's subtask "
        "objective starts in epoch 3); part of the budget",
    )
    ap.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL (e.g. sqlite:///study.db; one system and "
        "category only); default: a journal file in the study's folder",
    )
    return ap


def cli_main(argv: list[str], prog: str = "mmss tune") -> int:
    from mmss_lib.model_selection.sweeps import base_config_from_args, check_common_args, parse_systems

    args = build_parser(prog).parse_args(argv)
    check_common_args(args)
    if args.seed < 0:
        raise DataError(f"--seed {args.seed}: expected an integer >= 0")
    systems = parse_systems(args.systems)
    if args.storage and (len(systems) > 1 or len(args.categories) > 1):
        raise TuneError("--storage holds one study: give one system and one category with it")
    if args.trials < 1:
        raise TuneError(f"--trials {args.trials}: expected an integer >= 1 (a budget of 0 trials tunes nothing)")
    if args.parallel < 1:
        raise TuneError(f"--parallel {args.parallel}: expected an integer >= 1")
    if args.prune_from < 1:
        raise TuneError(f"--prune-from {args.prune_from}: expected an epoch number >= 1")
    base = base_config_from_args(args)
    for s, v, _ in systems:  # every system and override checked before any trial runs
        sp = resolve_space(s, args.space)
        cfg = replace(base, system=s, variant=v)
        with_base(sp, base_values(cfg, sp))
    rows = []
    for category in args.categories:
        for system, variant, _ in systems:
            best = tune(
                data_root=args.data_root,
                dataset=args.dataset,
                category=category,
                features_root=args.features,
                tune_root=args.out,
                system=system,
                variant=variant,
                base_config=base,
                n_trials=args.trials,
                parallel=args.parallel,
                seed=args.seed,
                space=args.space,
                executor=args.executor,
                n_jobs=args.n_jobs if args.n_jobs > 1 else None,
                ray_address=args.ray_address,
                ray_timeout=args.ray_timeout,
                storage=args.storage,
                progress=not args.no_progress,
                prune_from=args.prune_from,
            )
            rows.append(best)
    print("category | system | trials (complete/pruned/failed) | base dev MAP | tuned dev MAP | CPU-s | best settings")
    for b in rows:
        print(
            f"{b['category']} | {b['study'].split('/')[-1]} | {b['n_trials']} ({b['n_complete']}/{b['n_pruned']}/"
            f"{b['n_failed']}) | {b['base_dev_MAP']:.4f} | {b['dev_MAP']:.4f} | {b['cpu_seconds']:.0f} | "
            f"{json.dumps(b['params'])}"
        )
    return 0
