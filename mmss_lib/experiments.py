"""Experiments: many training runs (systems x categories x seeds), their summaries and the
per-product scores of finished runs.

One run is :func:`mmss_lib.train.train_run` (the trainer); this module builds the list of runs of
an experiment (:func:`run_experiment`), hands each to :func:`_dispatch` (in this process, or in
worker processes), skips finished runs, and turns the runs' ``metrics.json`` into a tidy frame
(:func:`summarize` for mean and std over seeds, :func:`load_per_product` for paired tests).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from mmss_lib.errors import DataError
from mmss_lib.train import METRIC_NAMES, TrainConfig, load_splits, run_dir_for, run_name, train_run
from mmss_lib.systems import is_floor


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


def run_experiment(*, data_root, dataset: str, categories: Sequence[str], features_root, runs_root,
                   systems, seeds: Sequence[int] = (0, 1, 2, 3, 4), base_config: TrainConfig | None = None,
                   progress: bool = True, n_jobs: int = 1):
    """Train every (category, system/variant, seed) and return tidy test results (pandas).

    ``systems``: names (variant "full", ``base_config.model_options``) or ``(system, variant,
    options)`` triples whose options update the base options (e.g. MM-SS variants of
    ``mmss_lib.model.ABLATIONS``). Finished runs are skipped, interrupted ones resumed.
    ``n_jobs`` > 1 trains that many runs at once in worker processes (one torch thread each
    unless ``base_config.num_threads`` says otherwise): the models are small, so on a CPU several
    single-threaded runs use the cores better than one multi-threaded run. Every run is seeded
    by its own config, so the results do not depend on ``n_jobs`` beyond float rounding of
    the thread count. Columns: dataset, category, system, variant, seed, MAP, NDCG@3, NDCG@5,
    MRR (test split), dev_MAP, best_epoch, epochs_run, sec_per_epoch, run_dir.
    """
    import pandas as pd

    base = base_config or TrainConfig()
    specs = _normalise_systems(systems)
    jobs = []
    for category in categories:
        for system, variant, options in specs:
            for seed in seeds:
                cfg = replace(base, system=system, variant=variant,
                              model_options={**base.model_options, **options}, seed=int(seed))
                rd = run_dir_for(runs_root, dataset, category, system, variant, seed)
                jobs.append((category, cfg, rd))
    common = dict(data_root=data_root, dataset=dataset, features_root=features_root, progress=progress)
    jobs, metrics = _dispatch(jobs, common, base, n_jobs=n_jobs)
    rows = []
    for (category, cfg, rd), m in zip(jobs, metrics):
        rows.append({"dataset": dataset, "category": category, "system": cfg.system, "variant": cfg.variant,
                     "seed": int(cfg.seed), **{k: m["test"][k] for k in METRIC_NAMES},
                     "dev_MAP": m["dev"]["MAP"], "best_epoch": m["best_epoch"],
                     "epochs_run": m["epochs_run"], "sec_per_epoch": m["sec_per_epoch"],
                     "run_dir": str(rd)})
    return pd.DataFrame(rows)


def _dispatch(jobs: list, common: dict, base: TrainConfig, *, n_jobs: int = 1) -> tuple[list, list]:
    """Run every ``(category, cfg, run_dir)`` job with :func:`_experiment_job`; return the jobs (as
    run) and their metrics, in job order. ``n_jobs`` > 1: spawned worker processes, one torch
    thread each unless ``base.num_threads`` is set; else in this process, loading each category's
    splits once (and not at all when its runs are finished)."""
    if n_jobs > 1 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        if base.num_threads is None:
            jobs = [(c, replace(cfg, num_threads=1), rd) for c, cfg, rd in jobs]
        with ProcessPoolExecutor(max_workers=int(n_jobs), mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_experiment_job, c, cfg, str(rd), common) for c, cfg, rd in jobs]
            return jobs, [f.result() for f in futures]
    metrics, splits, last_category = [], None, None
    for category, cfg, rd in jobs:
        if category != last_category:
            splits, last_category = None, category
        if splits is None and not is_floor(cfg.system) and not _finished(rd, cfg, common["dataset"], category):
            splits = load_splits(common["data_root"], common["dataset"], category, common["features_root"], base)
        metrics.append(_experiment_job(category, cfg, str(rd), common, splits=splits))
    return jobs, metrics


def _experiment_job(category: str, cfg: TrainConfig, run_dir: str, common: dict, splits=None) -> dict:
    """One run of :func:`run_experiment` (a top-level function so worker processes can import it)."""
    if common["progress"]:
        print(f"[train] {common['dataset']}/{category} {run_name(cfg.system, cfg.variant)} seed {cfg.seed}",
              flush=True)
    return train_run(cfg, data_root=common["data_root"], dataset=common["dataset"], category=category,
                     features_root=common["features_root"], run_dir=Path(run_dir),
                     progress=common["progress"], splits=splits)


def _finished(run_dir: Path, cfg: TrainConfig, dataset: str, category: str) -> bool:
    cp, mp = run_dir / "config.json", run_dir / "metrics.json"
    if not (cp.exists() and mp.exists()):
        return False
    old = json.loads(cp.read_text(encoding="utf-8"))
    return old.get("config") == cfg.to_json() and old.get("run") == {"dataset": dataset, "category": category}


def summarize(results):
    """Mean and std over seeds per (dataset, category, system, variant): columns ``{metric}_mean``,
    ``{metric}_std`` for MAP, NDCG@3, NDCG@5, MRR, dev_MAP, sec_per_epoch, plus ``n_seeds``."""
    import pandas as pd

    keys = ["dataset", "category", "system", "variant"]
    cols = [c for c in list(METRIC_NAMES) + ["dev_MAP", "best_epoch", "sec_per_epoch"] if c in results.columns]
    g = results.groupby(keys, sort=False)
    out = g[cols].agg(["mean", "std"])
    out.columns = [f"{c}_{stat}" for c, stat in out.columns]
    out["n_seeds"] = g.size()
    return out.reset_index()


def load_per_product(runs_root, dataset: str, category: str, system: str, variant: str | None = "full",
                     seeds: Sequence[int] = (0, 1, 2, 3, 4), split: str = "test", threshold: float | None = None):
    """Per-product metrics of a system's ``scores_{split}.csv``, averaged over seeds.

    Returns a DataFrame indexed by product_id with the columns of
    :func:`mmss_lib.metrics.per_product_metrics` (for paired significance tests), read with
    :func:`mmss_lib.floors.per_product_for_run` (the ``random`` floor: its exact expectations).
    The threshold defaults to the one recorded in the run's metrics.json.
    """
    import pandas as pd

    from mmss_lib.floors import per_product_for_run

    frames = []
    for seed in seeds:
        rd = run_dir_for(runs_root, dataset, category, system, variant, seed)
        path = rd / f"scores_{split}.csv"
        if not path.exists():
            raise DataError(f"{path}: no scores for {run_name(system, variant)} seed {seed}; train it first")
        pp = per_product_for_run(rd, split, threshold=threshold)
        if "product_id" in getattr(pp, "columns", []):
            pp = pp.set_index("product_id")
        frames.append(pp)
    cat = pd.concat(frames)
    return cat.groupby(level=0, sort=False).mean(numeric_only=True)
