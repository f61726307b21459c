"""Experiments: many training runs (systems x categories x seeds), their summaries and the
per-product scores of finished runs.

One run is :func:`mmss_lib.training.trainer.train_run` (the trainer); this module builds the list of runs of
an experiment (:func:`run_experiment`), skips finished runs, hands the others to an executor of
:mod:`mmss_lib.training.executors` (this process, worker processes, or Ray tasks on a cluster) through
:func:`_dispatch`, and turns the runs' ``metrics.json`` into a tidy frame
(:func:`summarize` for mean and std over seeds; :mod:`mmss_lib.evaluation.summary` reads the runs'
per-product metrics).
:func:`cli_main` is ``mmss train``: an experiment from the command line, printing the mean and std
over seeds of the test metrics and the product-level summary (``--folds K``: K-fold
cross-validation over each category's products). Its options are checked before any work; a
``--num-threads`` (times ``--n-jobs``) asking for more threads than this machine's cores is a
warning (the runs oversubscribe the CPU). ``--retrain`` discards runs whose inputs changed
(:mod:`mmss_lib.training.run_folder`).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from mmss_lib.errors import DataError, SweepError
from mmss_lib.models.registry import is_floor
from mmss_lib.training.config import TrainConfig
from mmss_lib.training.run_folder import CONFIG, finished_metrics, fold_run_dir, load_run_config, run_dir_for, run_name
from mmss_lib.training.trainer import METRIC_NAMES, load_splits, train_run


def _normalise_systems(systems) -> list[tuple[str, str, dict]]:
    out = []
    for s in systems:
        if isinstance(s, str):
            out.append((s, "full", {}))
        else:
            s = tuple(s)
            if len(s) == 2:
                out.append((s[0], s[1], {}))
            elif len(s) == 3:
                out.append((s[0], s[1], dict(s[2] or {})))
            else:
                raise DataError(f"systems entry {s!r}: expected a name or (system, variant, options)")
    return out


def run_experiment(
    *,
    data_root,
    dataset: str,
    categories: Sequence[str],
    features_root,
    runs_root,
    systems,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    base_config: TrainConfig | None = None,
    progress: bool = True,
    n_jobs: int = 1,
    executor="local",
    ray_address: str | None = None,
    folds: int = 0,
    fold_seed: int = 0,
    dev_fraction: float | None = None,
    summary: bool = True,
    ray_timeout: float | None = None,
    tuned=None,
    extra_runs=(),
    retrain: bool = False,
    tuned_transfer: bool = False,
):
    """Train every (category, system/variant, seed) and return tidy test results (pandas).

    ``systems``: names (variant "full", ``base_config.model_options``) or ``(system, variant,
    options)`` triples whose options update the base options (e.g. MM-SS variants of
    ``mmss_lib.models.mmss.ABLATIONS``). Finished runs are skipped, interrupted ones resumed.
    ``n_jobs`` > 1 trains that many runs at once in worker processes (one torch thread each
    unless ``base_config.num_threads`` says otherwise): the models are small, so on a CPU several
    single-threaded runs use the cores better than one multi-threaded run. Every run is seeded
    by its own config, so the results do not depend on ``n_jobs`` beyond float rounding of
    the thread count. Columns: dataset, category, system, variant, seed, MAP, NDCG@3, NDCG@5,
    MRR (test split), dev_MAP, best_epoch, epochs_run, sec_per_epoch, ceiling_while_improving (the
    run hit its epoch ceiling while dev MAP still rose), run_dir.

    ``executor``: ``"local"`` (this machine, ``n_jobs`` as above) or ``"ray"``: every run a Ray
    task (one GPU per run where the cluster has GPUs, else one CPU and one torch thread) on the
    cluster at ``ray_address`` / ``RAY_ADDRESS``, else on a local Ray instance (see
    :mod:`mmss_lib.training.executors`; an executor object is taken as it is). Finished runs are skipped
    before anything is submitted (whatever executor, device or thread count trained them); the
    others report per finished run when ``progress``. A run that fails is reported by name with
    its error while the others go on; afterwards a :class:`~mmss_lib.errors.SweepError` lists the
    failed runs (its ``results``: the table of the others). Rows are in run order, whatever the
    order the runs finished in.

    ``ray_timeout``: seconds to wait for the Ray head at ``ray_address`` (default 30) before a
    clear error naming the address.

    ``tuned``: a tune root of ``mmss tune`` (:func:`mmss_lib.model_selection.search.apply_tuned`): every trained
    system takes the best settings of its study for the category (an MM-SS ablation the full
    model's), recorded in the run's ``tuned_from``; a missing study is refused before any run starts.

    ``extra_runs``: ``(category, system, variant, options)`` runs (each for every seed) that a
    later step reads, trained in the same schedule as the others (longest first over all of them,
    so that the workers end together instead of one idling through a later sweep's longest run)
    but left out of the returned frame and its summaries; notebook 02 trains notebook 03's
    ablation variants this way. Their configuration is the one that later sweep gives them (the
    base configuration, the options on top of its model options), so it finds them finished.
    Released splits only.

    Inputs: every run's data and feature stores are checked against those its folder records
    (:func:`mmss_lib.training.run_folder.check_run_inputs`) before any run starts: a finished or
    interrupted run on other inputs (labels changed, other text features, ...) is refused with a
    :class:`~mmss_lib.training.run_folder.StaleRunError` naming what changed, never returned;
    ``retrain`` (``mmss train --retrain``) discards such runs and trains them again.

    ``tuned_transfer`` (``mmss train --tuned-transfer``): the studies' settings are applied to data or
    features other than those they were tuned on, on purpose (a setting chosen on one data design
    applied to others); without it such a study is refused (its recorded fingerprints).

    ``folds`` >= 2: K-fold cross-validation over each category's pooled products
    (:mod:`mmss_lib.model_selection.folds`: ``fold_seed`` shuffles, ``dev_fraction`` of the non-test products,
    default 0.125, is each fold's dev part); every (system, fold, seed) is a run in
    ``{system}[__{variant}]/folds{K}/fold{f}/seed{n}/`` and the results get a ``fold`` column.
    0 or 1: the released splits. ``summary``: write the product-level summary CSV of every
    category (:func:`mmss_lib.evaluation.summary.write_summaries`: ``summary.csv`` / ``summary_folds{K}.csv``,
    mean x100 over products with 95% bootstrap intervals and a paired test against the best other
    system); ``results.attrs["summary_paths"]`` lists the files (paths only: pandas compares
    ``attrs`` when frames are combined, so no frame is kept there) and
    :func:`mmss_lib.evaluation.summary.read_summaries` reads them back.
    """
    plan = plan_sweep(
        data_root=data_root,
        dataset=dataset,
        categories=categories,
        features_root=features_root,
        runs_root=runs_root,
        systems=systems,
        seeds=seeds,
        base_config=base_config,
        progress=progress,
        folds=folds,
        fold_seed=fold_seed,
        dev_fraction=dev_fraction,
        tuned=tuned,
        extra_runs=extra_runs,
        retrain=retrain,
        tuned_transfer=tuned_transfer,
    )
    from mmss_lib.training.executors import make_executor

    ex = make_executor(
        executor,
        n_jobs=n_jobs,
        ray_address=ray_address,
        **({"connect_timeout": ray_timeout} if ray_timeout is not None else {}),
    )
    done = execute_sweep(plan, ex)
    results = collect_sweep(plan, done)
    if summary and not done.failures and len(results):
        import errno

        from mmss_lib.evaluation.summary import write_summaries

        try:
            written = write_summaries(results, runs_root, tag=plan.tag, folds=plan.k_folds if plan.tag else 0)
            results.attrs["summary_paths"] = [str(p) for p in written]
        except OSError as exc:  # a read-only runs folder of finished runs: the results, not the files
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            import warnings

            warnings.warn(
                f"{runs_root}: cannot write the summary files ({exc.strerror}: {exc.filename}); the "
                "results are returned (and printed by mmss train) but not saved there",
                UserWarning,
                stacklevel=2,
            )
    if done.failures:
        listed = "; ".join(f"{name}: {' '.join(str(err).split())}" for name, err in done.failures.items())
        exc = SweepError(
            f"{len(done.failures)} of {len(done.jobs)} runs failed: {listed} (the other runs finished and "
            "are kept; rerunning trains only the missing runs)",
            done.failures,
            results,
        )
        exc.tracebacks = done.tracebacks
        raise exc
    return results


@dataclass
class SweepStep:
    """One dispatch of a sweep: the runs of one fold (or of the released splits, ``fold`` None),
    as ``(category, TrainConfig, run_dir)`` jobs; the first ``n_main`` are returned, the rest are
    the extra runs a later sweep reads."""

    fold: int | None
    jobs: list
    n_main: int
    common: dict


@dataclass
class SweepPlan:
    """Every run of a sweep, planned and checked before any of them starts (:func:`plan_sweep`)."""

    dataset: str
    base: TrainConfig
    tag: str | None  # the folds' tag (``folds{K}``), None for the released splits
    k_folds: int
    steps: list  # of SweepStep
    inputs: dict  # each run's inputs (run_folder.run_inputs), recorded in its folder when it trains


@dataclass
class SweepOutcome:
    """What :func:`execute_sweep` gives back: the returned jobs with their metrics (None: failed) and
    fold, and the failures by run name with their tracebacks."""

    jobs: list = field(default_factory=list)
    metrics: list = field(default_factory=list)
    fold_of: list = field(default_factory=list)
    failures: dict = field(default_factory=dict)
    tracebacks: dict = field(default_factory=dict)


def plan_sweep(
    *,
    data_root,
    dataset: str,
    categories: Sequence[str],
    features_root,
    runs_root,
    systems,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    base_config: TrainConfig | None = None,
    progress: bool = True,
    folds: int = 0,
    fold_seed: int = 0,
    dev_fraction: float | None = None,
    tuned=None,
    extra_runs=(),
    retrain: bool = False,
    tuned_transfer: bool = False,
) -> SweepPlan:
    """The runs of :func:`run_experiment` (same arguments), each with its configuration and run folder,
    after every check that can refuse the sweep (duplicates, ``dev_fraction``, the K-fold design,
    the device, model options, the ceilings' cues, the folds' features, the tuned studies, each
    finished run's recorded inputs): nothing is trained; written are only the folds' design file and
    the inputs of runs recorded before inputs were (and, with ``retrain``, stale runs are discarded)."""
    base = base_config or TrainConfig()
    specs = _normalise_systems(systems)
    _refuse_duplicates(categories, specs, seeds)
    extras = _normalise_extra_runs(extra_runs, specs, folds)
    if dev_fraction is not None:
        import math

        ok = (
            isinstance(dev_fraction, (int, float))
            and not isinstance(dev_fraction, bool)
            and math.isfinite(dev_fraction)
            and 0 < dev_fraction < 1
        )
        if not ok:
            raise DataError(
                f"dev_fraction={dev_fraction!r} (--dev-fraction): expected a share strictly between 0 and 1"
            )
    from mmss_lib.model_selection import folds as F

    k_folds = int(folds or 0)
    tag = F.folds_tag(k_folds, fold_seed) if k_folds >= 2 else None
    design = (
        F.design_folds(
            data_root,
            dataset,
            categories,
            runs_root,
            k_folds,
            seed=fold_seed,
            dev_fraction=F.DEFAULT_DEV_FRACTION if dev_fraction is None else dev_fraction,
        )
        if tag
        else None
    )
    from mmss_lib.training.build import check_model_options
    from mmss_lib.training.config import check_device_available

    check_device_available(base.device)  # --device cuda without a GPU: before the data is loaded
    from mmss_lib.models.registry import SYSTEMS
    from mmss_lib.training.config import check_finetune_systems

    check_finetune_systems(base, SYSTEMS)
    for system, _, options in specs + [e[1:] for e in extras]:  # model options (--option) checked before any run starts
        if not is_floor(system):
            check_model_options(system, {**base.model_options, **options})  # names, types, values
    from mmss_lib.training.floors import check_ceiling_data

    for category in categories:  # ceilings need planted cues: refuse before any run starts
        for system, _, _ in specs:
            check_ceiling_data(system, data_root, dataset, category)
    for category, system, _, _ in extras:
        check_ceiling_data(system, data_root, dataset, category)
    if tag and any(not is_floor(system) for system, _, _ in specs):
        for category in categories:  # cross-validation reads the stores outside load_splits
            _check_fold_features(data_root, dataset, category, features_root, base)

    def run_config(category, system, variant, options, seed) -> TrainConfig:
        cfg = replace(
            base, system=system, variant=variant, model_options={**base.model_options, **options}, seed=int(seed)
        )
        if tuned:
            from mmss_lib.model_selection.tuned import apply_tuned

            inputs_of_run = {} if tuned_transfer else {"data_root": data_root, "features_root": features_root}
            cfg = apply_tuned(cfg, tuned, dataset, category, **inputs_of_run)
        return cfg

    steps = []
    for fold in range(k_folds) if tag else [None]:  # one dispatch per fold (its splits)
        fold_jobs = []
        for category in categories:
            for system, variant, options in specs:
                for seed in seeds:
                    cfg = run_config(category, system, variant, options, seed)
                    rd = (
                        run_dir_for(runs_root, dataset, category, system, variant, seed)
                        if fold is None
                        else fold_run_dir(runs_root, dataset, category, system, variant, tag, fold, seed)
                    )
                    fold_jobs.append((category, cfg, rd))
        n_main = len(fold_jobs)
        for category, system, variant, options in extras if fold is None else ():
            for seed in seeds:
                fold_jobs.append(
                    (
                        category,
                        run_config(category, system, variant, options, seed),
                        run_dir_for(runs_root, dataset, category, system, variant, seed),
                    )
                )
        common = dict(data_root=data_root, dataset=dataset, features_root=features_root, progress=progress)
        if fold is not None:
            common["fold"] = {"tag": tag, "index": fold, "members": {c: design[c][fold] for c in categories}}
        steps.append(SweepStep(fold, fold_jobs, n_main, common))
    # runs whose recorded inputs (data, labels, features) differ: refused (or, with retrain, discarded)
    inputs = _check_inputs([j for s in steps for j in s.jobs], data_root, dataset, features_root, retrain)
    return SweepPlan(dataset, base, tag, k_folds, steps, inputs)


def execute_sweep(plan: SweepPlan, executor) -> SweepOutcome:
    """Train the planned runs on ``executor`` (finished runs are read, not trained), one dispatch per
    step, longest runs first; a failed run is recorded and the others go on."""
    out = SweepOutcome()
    with executor:  # one Ray connection for every fold
        for step in plan.steps:
            fj, fm, ff, ft = _dispatch(step.jobs, {**step.common, "inputs": plan.inputs}, plan.base, executor)
            out.jobs += fj[: step.n_main]  # the extra runs are trained, not returned
            out.metrics += fm[: step.n_main]
            out.fold_of += [step.fold] * step.n_main
            out.failures.update(ff)
            out.tracebacks.update(ft)
    return out


def collect_sweep(plan: SweepPlan, done: SweepOutcome):
    """The tidy test results of the finished runs (see :func:`run_experiment`), in run order."""
    import pandas as pd

    rows = []
    for (category, cfg, rd), m, fold in zip(done.jobs, done.metrics, done.fold_of, strict=True):
        if m is None:
            continue
        rows.append(
            {
                "dataset": plan.dataset,
                "category": category,
                "system": cfg.system,
                "variant": cfg.variant,
                "seed": int(cfg.seed),
                **({"fold": int(fold)} if fold is not None else {}),
                **{k: m["test"][k] for k in METRIC_NAMES},
                "dev_MAP": m["dev"]["MAP"],
                "best_epoch": m["best_epoch"],
                "epochs_run": m["epochs_run"],
                "sec_per_epoch": m["sec_per_epoch"],
                "ceiling_while_improving": bool(m.get("ceiling_while_improving", False)),
                "run_dir": str(rd),
            }
        )
    return pd.DataFrame(rows)


def _check_inputs(jobs: list, data_root, dataset: str, features_root, retrain: bool) -> dict:
    """Every run's recorded inputs against the current ones, before any run starts
    (:func:`mmss_lib.training.run_folder.check_run_inputs`): a run on other inputs is refused (or,
    with ``retrain``, discarded); runs from before inputs were recorded get one warning. Returns
    ``{(category, stores read): inputs}`` for the runs to record."""
    from mmss_lib.training.run_folder import adopt_legacy_runs, check_run_inputs, run_inputs, stores_read

    inputs: dict = {}
    legacy = []
    for category, cfg, rd in jobs:
        key = (category, stores_read(cfg.to_json()))
        if key not in inputs:
            inputs[key] = run_inputs(data_root, dataset, category, features_root, cfg.to_json())
        if check_run_inputs(rd, inputs[key], retrain=retrain) == "legacy":
            legacy.append((rd, inputs[key]))
    adopt_legacy_runs([rd for rd, _ in legacy], [inp for _, inp in legacy])
    return inputs


def _normalise_extra_runs(extra_runs, specs, folds) -> list[tuple[str, str, str, dict]]:
    """``run_experiment``'s ``extra_runs`` as ``(category, system, variant, options)`` tuples,
    refused (naming the entry) when malformed, under cross-validation or already a main run."""
    out = []
    for e in extra_runs or ():
        e = tuple(e) if isinstance(e, (list, tuple)) else (e,)
        if (
            len(e) not in (3, 4)
            or not all(isinstance(x, str) for x in e[:3])
            or (len(e) == 4 and not isinstance(e[3] or {}, dict))
        ):
            raise DataError(f"extra_runs entry {e!r}: expected (category, system, variant[, options])")
        category, system, variant = e[:3]
        out.append((category, system, variant, dict((e[3] if len(e) == 4 else None) or {})))
    if out and int(folds or 0) >= 2:
        raise DataError("extra_runs: only with the released splits (folds 0 or 1), not under cross-validation")
    main = {(s, v) for s, v, _ in specs}
    for category, system, variant, _ in out:
        if (system, variant) in main:
            raise DataError(f"extra_runs entry ({category!r}, {system!r}, {variant!r}): already one of the systems")
    return out


def _check_fold_features(data_root, dataset: str, category: str, features_root, base: TrainConfig) -> None:
    """Stale features under cross-validation (whose splits are not made by ``load_splits``): the
    stores' content fingerprints against the pooled released splits
    (:mod:`mmss_lib.features.fingerprint`)."""
    from mmss_lib.data.mrhp import SPLITS, load_mrhp
    from mmss_lib.features.fingerprint import check_features_match
    from mmss_lib.features.loader import run_stores

    stores = run_stores(features_root, dataset, category, keep_texts=base.text_mode != "cached")
    check_features_match(
        stores, {s: load_mrhp(data_root, dataset, category, s) for s in SPLITS}, where=f"{dataset}/{category}"
    )


def _refuse_duplicates(categories, specs, seeds) -> None:
    """The same category, system/variant or seed given twice would train one run folder twice at
    once, or count one run twice in the mean over seeds: refused, naming the repeated value."""
    from collections import Counter

    if isinstance(categories, str) or isinstance(seeds, (str, int)):
        raise DataError(f"categories={categories!r}, seeds={seeds!r}: expected lists (e.g. ['home'], [0, 1])")
    for what, values in (
        ("categories", [str(c) for c in categories]),
        ("systems", [run_name(s, v) for s, v, _ in specs]),
        ("seeds", [_as_seed(x) for x in seeds]),
    ):
        twice = sorted({str(v) for v, n in Counter(values).items() if n > 1})
        if twice:
            raise DataError(
                f"{what} {values}: {', '.join(twice)} given more than once (one run folder trained "
                f"twice, or one run counted twice in the mean); give each once"
            )
    if not len(seeds) or not len(categories) or not specs:
        raise DataError(
            f"categories={list(categories)}, systems={[s for s, _, _ in specs]}, seeds={list(seeds)}: "
            "each needs at least one value"
        )


def _as_seed(x) -> int:
    try:
        ok = not isinstance(x, bool) and float(x).is_integer() and int(x) >= 0
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise DataError(f"seeds: {x!r} is not a seed (expected an integer >= 0)")
    return int(x)


def _run_label(dataset: str, category: str, cfg: TrainConfig, fold: dict | None = None) -> str:
    where = "" if not fold else f" {fold['tag']} fold {fold['index']}"
    return f"{dataset}/{category} {run_name(cfg.system, cfg.variant)}{where} seed {cfg.seed}"


def _dispatch(jobs: list, common: dict, base: TrainConfig, executor) -> tuple[list, list, dict, dict]:
    """Run every ``(category, cfg, run_dir)`` job with :func:`_experiment_job` on ``executor``;
    return the jobs (as run), their metrics in job order (None for a failed run), the failures
    (``{run label: "Type: message"}``) and their tracebacks (``{run label: text}``).

    Finished runs are read here and not submitted. Runs get ``executor.threads_per_run`` torch
    threads unless ``base.num_threads`` is set (local worker processes and Ray tasks: 1). In this
    process each category's splits are loaded once, and not at all when its runs are finished;
    elsewhere (worker processes, Ray tasks, possibly other machines) each run loads its own from
    absolute paths."""
    from mmss_lib.training.executors import Job

    threads = executor.threads_per_run(len(jobs))
    if base.num_threads is None and threads:
        jobs = [(c, replace(cfg, num_threads=threads), rd) for c, cfg, rd in jobs]
    dataset, progress = common["dataset"], common["progress"]
    metrics: list = [None] * len(jobs)
    todo = []
    for i, (category, cfg, rd) in enumerate(jobs):
        done = finished_metrics(rd, cfg.to_json(), {"dataset": dataset, "category": category})
        if done is not None:
            metrics[i] = done
            if progress:
                print(
                    f"[train] {_run_label(dataset, category, cfg, common.get('fold'))}: skipped (finished before)",
                    flush=True,
                )
        else:
            todo.append(i)
    if not executor.in_process:  # longest runs first (workers ending together); results stay in run order
        from mmss_lib.models.registry import run_cost

        todo.sort(key=lambda i: -run_cost(jobs[i][1].system, jobs[i][1].variant))
    if executor.in_process:
        cache, run_common = _SplitsCache(common), common
    else:
        cache = None
        run_common = {
            **common,
            "data_root": str(Path(common["data_root"]).resolve()),
            "features_root": str(Path(common["features_root"]).resolve()),
        }
    tasks = []
    for i in todo:
        category, cfg, rd = jobs[i]
        run_dir = str(rd) if executor.in_process else str(Path(rd).resolve())
        from mmss_lib.training.run_folder import stores_read

        kwargs = {"inputs": (common.get("inputs") or {}).get((category, stores_read(cfg.to_json())))}
        if cache is not None:
            kwargs["splits"] = cache
        tasks.append(
            Job(
                _run_label(dataset, category, cfg, common.get("fold")),
                _experiment_job,
                (category, cfg, run_dir, {k: v for k, v in run_common.items() if k != "inputs"}),
                kwargs,
                gpu=cfg.device != "cpu",
            )
        )
    failures: dict = {}
    tracebacks: dict = {}
    for n, res in enumerate(executor.run(tasks), 1):
        i = todo[res.index]
        if res.ok:
            metrics[i] = res.value
            if progress:
                m = res.value
                print(
                    f"[train] {n}/{len(tasks)} finished {res.name}: test MAP {m['test']['MAP']:.4f}, "
                    f"best epoch {m['best_epoch']}, {m['sec_per_epoch']:.1f} s/epoch",
                    flush=True,
                )
        else:
            failures[res.name], tracebacks[res.name] = res.error, res.traceback
            print(f"[train] {n}/{len(tasks)} FAILED {res.name}: {res.error}", flush=True)
    return jobs, metrics, failures, tracebacks


class _SplitsCache:
    """The loaded splits of the last category asked for (runs in this process share them)."""

    def __init__(self, common: dict):
        self.common, self.category, self.splits = common, None, None

    def get(self, category: str, cfg: TrainConfig) -> dict:
        if category != self.category:
            self.category, self.splits = None, None  # one category in memory at a time
            c = self.common
            if c.get("fold"):  # cross-validation: this fold's splits
                from mmss_lib.model_selection.folds import splits_for_run

                self.splits = splits_for_run(
                    cfg,
                    data_root=c["data_root"],
                    dataset=c["dataset"],
                    category=category,
                    features_root=c["features_root"],
                    fold=c["fold"]["members"][category],
                )
            else:
                self.splits = load_splits(c["data_root"], c["dataset"], category, c["features_root"], cfg)
            self.category = category
        return self.splits


def _experiment_job(category: str, cfg: TrainConfig, run_dir: str, common: dict, splits=None, inputs=None) -> dict:
    """One run of :func:`run_experiment` (a top-level function so worker processes and Ray tasks
    import it by reference). ``splits``: loaded splits, or a :class:`_SplitsCache` to take them from.
    ``inputs``: the run's inputs (:func:`mmss_lib.training.run_folder.run_inputs`), checked again and
    recorded in its folder, under its lock, before it trains."""
    if inputs is not None:
        from mmss_lib.training.run_folder import check_run_inputs, record_run_inputs, run_lock

        with run_lock(
            Path(run_dir), f"run ({common['dataset']}/{category} {run_name(cfg.system, cfg.variant)} seed {cfg.seed})"
        ):
            if check_run_inputs(run_dir, inputs) != "same":
                record_run_inputs(run_dir, inputs)
            return _experiment_job(category, cfg, run_dir, common, splits)
    if isinstance(splits, _SplitsCache):  # a floor is not trained: it needs no features
        splits = None if is_floor(cfg.system) else splits.get(category, cfg)
    if common.get("fold") and splits is None:  # a fold's splits (floors: ids, labels and texts only)
        from mmss_lib.model_selection.folds import splits_for_run

        splits = splits_for_run(
            cfg,
            data_root=common["data_root"],
            dataset=common["dataset"],
            category=category,
            features_root=common["features_root"],
            fold=common["fold"]["members"][category],
        )
    if common["progress"]:
        print(f"[train] {_run_label(common['dataset'], category, cfg, common.get('fold'))}", flush=True)
    return train_run(
        cfg,
        data_root=common["data_root"],
        dataset=common["dataset"],
        category=category,
        features_root=common["features_root"],
        run_dir=Path(run_dir),
        progress=common["progress"],
        splits=splits,
    )


def summarize(results):
    """Mean and std over seeds per (dataset, category, system, variant): columns ``{metric}_mean``,
    ``{metric}_std`` for MAP, NDCG@3, NDCG@5, MRR, dev_MAP, sec_per_epoch, plus ``n_seeds``."""

    keys = ["dataset", "category", "system", "variant"]
    cols = [c for c in list(METRIC_NAMES) + ["dev_MAP", "best_epoch", "sec_per_epoch"] if c in results.columns]
    g = results.groupby(keys, sort=False)
    out = g[cols].agg(["mean", "std"])
    out.columns = [f"{c}_{stat}" for c, stat in out.columns]
    out["n_seeds"] = g.size()
    return out.reset_index()


# ------------------------------------------------------------------------------------ reading finished runs


def reference_config(
    runs_root,
    dataset: str,
    category: str,
    seeds: Sequence[int],
    fallback: TrainConfig,
    *,
    system: str = "mmss",
    variant: str = "full",
) -> tuple[TrainConfig, Path | None]:
    """The configuration of an earlier run of ``system``/``variant`` in this category (the first
    of ``seeds`` that has a ``config.json``), as variant ``variant`` and seed ``seeds[0]``; else
    ``fallback``. Returns the configuration and the config.json it came from (None: the fallback).
    Notebook 03 trains its ablation variants with the configuration of notebook 02's full MM-SS run."""
    for seed in seeds:
        rd = run_dir_for(runs_root, dataset, category, system, variant, seed)
        cfg = load_run_config(rd)
        if cfg is not None:
            return replace(cfg, variant=variant, seed=int(seeds[0])), rd / CONFIG
    return fallback, None


# ----------------------------------------------------------------------------- `mmss train`
# A command's parser lives at the bottom of the module that implements it (its ``cli_main``):
# ``mmss train`` runs an experiment, so it is here.


def _parse_options(items: Sequence[str]) -> dict:
    out = {}
    for it in items or ():
        if "=" not in it:
            raise DataError(f"--option {it!r}: expected key=value (value as JSON, e.g. d=64 or subtasks='[\"ptrt\"]')")
        k, v = it.split("=", 1)
        if not k.strip():
            raise DataError(f"--option {it!r}: expected key=value with a non-empty key")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v  # a bare word is a string (the model option's type is checked by build_model)
    return out


def build_parser(prog: str) -> argparse.ArgumentParser:
    d = TrainConfig()
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Train and evaluate systems over seeds "
        "(results: runs/{dataset}/{category}/{system}[__variant]/seed{n}/).",
    )
    ap.add_argument("--data-root", required=True, help="folder holding {dataset}/{category}/ files")
    ap.add_argument("--dataset", required=True, help="amazon, lazada or demo")
    ap.add_argument("--categories", nargs="+", required=True)
    ap.add_argument("--features", required=True, help="features root (mmss extract output)")
    ap.add_argument("--runs", required=True, help="runs root")
    ap.add_argument(
        "--systems",
        nargs="+",
        default=["mmss"],
        help="system names; mmss:VARIANT for an MM-SS ablation of model.ABLATIONS (e.g. mmss:wo_b)",
    )
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--patience", type=int, default=d.patience)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--lr-text", type=float, default=d.lr_text)
    ap.add_argument("--pair-scheme", choices=("mcr", "all"), default=d.pair_scheme)
    ap.add_argument("--n-neg", type=int, default=d.n_neg)
    ap.add_argument("--loss", choices=("hinge", "label_gap"), default=d.loss)
    ap.add_argument("--margin", type=float, default=d.margin)
    ap.add_argument("--threshold", type=float, default=None, help="relevance threshold (default: per dataset)")
    ap.add_argument("--max-text-len", type=int, default=d.max_text_len)
    ap.add_argument("--device", default=d.device)
    ap.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    ap.add_argument("--num-threads", type=int, default=None)
    ap.add_argument(
        "--text-mode",
        choices=("cached", "frozen", "finetune"),
        default="cached",
        help="cached: text feature stores; frozen / finetune: the encoder --text-model runs on "
        "the fly (only region stores needed; finetune trains it at --lr-text for MM-SS)",
    )
    ap.add_argument("--text-model", default=None, help="encoder of --text-mode frozen/finetune (HF name or folder)")
    ap.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model option for every system (repeatable; JSON values)",
    )
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument(
        "--folds",
        type=int,
        default=0,
        metavar="K",
        help="K-fold cross-validation over each category's pooled products (K >= 2; runs in "
        "{system}/folds{K}/fold{f}/seed{n}/); 0 or 1: the released splits",
    )
    ap.add_argument("--fold-seed", type=int, default=0, help="seed of the fold assignment (with --folds)")
    ap.add_argument(
        "--dev-fraction",
        type=float,
        default=None,
        help="share of each fold's non-test products used as its dev part (default 0.125)",
    )
    ap.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: this machine (--n-jobs worker processes); ray: every run a Ray task "
        "(one GPU per run where the cluster has GPUs, else one CPU)",
    )
    ap.add_argument("--n-jobs", type=int, default=1, help="runs at once with --executor local")
    ap.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="Ray cluster (HOST:6379, ray://HOST:10001, auto; default: RAY_ADDRESS, else a local Ray instance)",
    )
    ap.add_argument(
        "--ray-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds to wait for the Ray head at --ray-address before giving up (default 30)",
    )
    _add_config_options(ap)
    ap.add_argument(
        "--retrain",
        action="store_true",
        help="a finished or interrupted run whose inputs changed (labels, data, feature stores) is "
        "discarded and trained again (without it, such a run is refused, naming what changed)",
    )
    ap.add_argument(
        "--tuned",
        default=None,
        metavar="DIR",
        help="take each system's settings from its `mmss tune` study in DIR "
        "(DIR/{dataset}/{category}/{system}/best.json; an MM-SS ablation takes the full model's)",
    )
    ap.add_argument(
        "--tuned-transfer",
        action="store_true",
        help="with --tuned: apply the studies' settings although they were tuned on other data or "
        "features (on purpose; without it such a study is refused)",
    )
    return ap


# TrainConfig fields a sweep sets per run (system/variant/seed, model options), or that a run records
# (tuned_from), or --no-amp sets: no option of their own here.
_NOT_OPTIONS = ("system", "variant", "model_options", "seed", "tuned_from", "amp")


def _config_help() -> dict:
    """Each TrainConfig field's comment in its declaration (the one place its meaning is written)."""
    import inspect
    import re

    out = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        m = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.+)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _none_or(kind):
    def parse(text: str):
        if text.lower() in ("none", "null"):
            return None
        return kind(text)

    parse.__name__ = kind.__name__
    return parse


def _add_config_options(ap: argparse.ArgumentParser) -> None:
    """An option for every TrainConfig field that has none yet (``--ssp-scale``,
    ``--max-regions-per-image``, ``--weight-decay``, ...): name, type and default from the field,
    help from its comment; values are checked by ``TrainConfig`` before any run starts."""
    import dataclasses
    import typing

    taken = {a.dest for a in ap._actions}
    hints = typing.get_type_hints(TrainConfig)
    helps = _config_help()
    for f in dataclasses.fields(TrainConfig):
        if f.name in taken or f.name in _NOT_OPTIONS:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if optional else hint
        flag = "--" + f.name.replace("_", "-")
        text = helps.get(f.name, "") + f" (default {default!r})"
        if base is bool:
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
        elif base in (list, list) or typing.get_origin(base) is list:
            kind = int if f.name.endswith("seeds") else str
            ap.add_argument(flag, nargs="+", type=kind, default=default, help=text)
        else:
            kind = base if base in (int, float, str) else str
            ap.add_argument(flag, type=_none_or(kind) if optional else kind, default=default, help=text)


def _config_fields_from_args(args) -> dict:
    """The TrainConfig fields of :func:`_add_config_options`'s options."""
    import dataclasses

    explicit = {
        "epochs",
        "patience",
        "batch_size",
        "lr",
        "lr_text",
        "pair_scheme",
        "n_neg",
        "loss",
        "margin",
        "threshold",
        "max_text_len",
        "device",
        "num_threads",
        "text_model",
        "text_mode",
    }
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if f.name not in explicit and f.name not in _NOT_OPTIONS and hasattr(args, f.name)
    }


def _check_args(args) -> None:
    """Values argparse lets through: one clear error naming the option and what it expects."""
    import math

    if getattr(args, "folds", None) is None:  # mmss tune: the released splits only
        args.folds, args.dev_fraction = 0, None
    if getattr(args, "tuned_transfer", False) and not getattr(args, "tuned", None):
        raise DataError("--tuned-transfer: applies the studies of --tuned DIR to other data; give --tuned DIR too")
    if args.dev_fraction is not None and not (math.isfinite(args.dev_fraction) and 0 < args.dev_fraction < 1):
        raise DataError(
            f"--dev-fraction {args.dev_fraction!r}: expected a share strictly between 0 and 1 "
            "(e.g. 0.125: an eighth of each fold's non-test products is its dev part)"
        )
    if args.dev_fraction is not None and args.folds < 2:
        raise DataError(
            f"--dev-fraction {args.dev_fraction!r} needs --folds K (K >= 2); the released splits "
            "have their own dev split"
        )
    if args.folds < 0:
        raise DataError(f"--folds {args.folds}: expected 0 or 1 (the released splits) or K >= 2")
    if args.num_threads is not None and args.num_threads < 1:
        raise DataError(
            f"--num-threads {args.num_threads}: expected an integer >= 1 (leave it out for torch's default)"
        )
    if args.n_jobs < 1:
        raise DataError(f"--n-jobs {args.n_jobs}: expected an integer >= 1")
    if getattr(args, "fold_seed", None) is not None and not 0 <= args.fold_seed <= 2**32 - 1:
        raise DataError(f"--fold-seed {args.fold_seed}: expected an integer from 0 to 4294967295 (numpy's seeds)")
    cores = os.cpu_count() or 1
    if args.num_threads is not None and args.num_threads * max(args.n_jobs, 1) > cores:
        import warnings

        warnings.warn(
            f"--num-threads {args.num_threads}"
            + (f" x --n-jobs {args.n_jobs}" if args.n_jobs > 1 else "")
            + f": more threads than this machine's {cores} core(s); runs oversubscribe the CPU and "
            "slow down (leave --num-threads out for torch's default)",
            UserWarning,
            stacklevel=2,
        )
    if args.ray_timeout is not None and not (math.isfinite(args.ray_timeout) and args.ray_timeout > 0):
        raise DataError(f"--ray-timeout {args.ray_timeout!r}: expected a number of seconds > 0")
    for name in ("seeds", "categories", "systems"):
        values = list(getattr(args, name, None) or [])
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:
            raise DataError(
                f"--{name} {' '.join(map(str, values))}: {', '.join(twice)} given more than once "
                "(one run folder trained twice, or one run counted twice in the mean); give each once"
            )
    if any(s < 0 for s in getattr(args, "seeds", None) or []):
        raise DataError(f"--seeds {' '.join(map(str, args.seeds))}: expected integers >= 0")


def parse_systems(names: Sequence[str]) -> list[tuple[str, str, dict]]:
    """``--systems`` values (``mmss:wo_b`` for an MM-SS ablation) as ``(system, variant, options)``."""
    systems = []
    for s in names:
        if ":" in s:
            name, variant = s.split(":", 1)
            from mmss_lib.models.mmss import ABLATIONS

            if variant not in ABLATIONS:
                raise DataError(f"--systems {s}: unknown MM-SS variant {variant!r}; known: {', '.join(ABLATIONS)}")
            systems.append((name, variant, dict(ABLATIONS[variant])))
        else:
            systems.append((s, "full", {}))
    return systems


def base_config_from_args(args) -> TrainConfig:
    """The base :class:`TrainConfig` of ``mmss train`` / ``mmss tune`` from the parsed options."""
    return TrainConfig(
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_text=args.lr_text,
        pair_scheme=args.pair_scheme,
        n_neg=args.n_neg,
        loss=args.loss,
        margin=args.margin,
        threshold=args.threshold,
        max_text_len=args.max_text_len,
        device=args.device,
        amp=not args.no_amp,
        num_threads=args.num_threads,
        text_model=args.text_model,
        text_mode=args.text_mode,
        model_options=_parse_options(args.option),
        **_config_fields_from_args(args),
    )


def check_common_args(args) -> None:
    """Checks of the options ``mmss train`` and ``mmss tune`` share."""
    _check_args(args)


def cli_main(argv: list[str], prog: str = "mmss train") -> int:
    args = build_parser(prog).parse_args(argv)
    _check_args(args)
    systems = parse_systems(args.systems)
    cfg = base_config_from_args(args)
    results = run_experiment(
        data_root=args.data_root,
        dataset=args.dataset,
        categories=args.categories,
        features_root=args.features,
        runs_root=args.runs,
        systems=systems,
        seeds=args.seeds,
        base_config=cfg,
        progress=not args.no_progress,
        n_jobs=args.n_jobs,
        executor=args.executor,
        ray_address=args.ray_address,
        folds=args.folds,
        fold_seed=args.fold_seed,
        dev_fraction=args.dev_fraction,
        ray_timeout=args.ray_timeout,
        tuned=args.tuned,
        retrain=args.retrain,
        tuned_transfer=args.tuned_transfer,
    )
    if results.attrs.get("summary_paths"):
        from mmss_lib.evaluation.summary import format_summary, read_summaries

        print(
            "Test metrics x100: mean over products [95% bootstrap interval]; vs: the best other system, "
            "p: paired t-test over products"
        )
        print(format_summary(read_summaries(results)))
        for path in results.attrs.get("summary_paths", []):
            print(f"summary: {path}")
    if args.folds >= 2:
        return 0
    summary = summarize(results)
    cols = ["category", "system", "variant"] + [f"{m}_{s}" for m in METRIC_NAMES for s in ("mean", "std")] + ["n_seeds"]
    with_pd_opts = summary[cols].round(4).to_string(index=False)
    print(with_pd_opts)
    return 0
