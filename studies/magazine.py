"""Phase ``magazine`` of the claims study (``python -m studies.claims``): real text, at the paper's text lengths, tuned inside
each fold (question 5 of the issue "The claims asked again").

On the Amazon 2018 Magazine sample no trained system cleared the Length floor with 64-token text
stores (5-fold CV). Real reviews are long (this sample: median 115 words, 80% over 48), so a
system reading 64 tokens cannot see the length the floor ranks by. This phase measures the same
sample at 64, 256 and 512 tokens and tunes BiMPM and MM-SS inside each fold.

Design (fixed before any result of it was seen):

- Data: ``Magazine_Subscriptions_5.json.gz`` and its metadata (``--amazon2018 DIR``, default
  ``../shared/data/amazon2018``) built by :func:`mmss_lib.data.amazon2018.build_amazon2018` with
  ``min_reviews=3`` (the sample is small; the other rules at their defaults): 85 products, 431
  reviews, no images.
- Folds: :func:`mmss_lib.model_selection.folds.fold_splits` (K = 5, seed 0, dev 0.125 of the rest), every fold
  written as its own dataset (:func:`mmss_lib.model_selection.folds.write_resplit`), so tuning and early stopping
  see the fold's train and dev parts only and its test products are scored once.
- Features: all-MiniLM-L6-v2 token features at :data:`LENGTHS` = 64, 256 and 512 tokens (one
  features root per length; the region stores of a text-only category are empty, MM-SS reads
  none).
- Systems, per length and fold: Random, Length, BiMPM and MM-SS with the powered benchmark's
  untuned settings (at most 30 epochs, patience 3); at 256 tokens BiMPM and MM-SS also tuned per
  fold (:data:`TUNE_TRIALS` = 5 trials, :data:`TUNE_PARALLEL` = 2 at a time, the untuned setting
  first, at most 20 epochs, pruning from epoch 4, sampler seed 0) and trained with the fold's best
  settings. Seeds 0, 1, 2. The tuning budget was cut from cost alone, before any study ran: measured
  at 64 tokens, an epoch of BiMPM on a fold's training part costs about 6.5 CPU-seconds and grows
  with the text length, so 6 trials per fold at both 256 and 512 tokens (120 trials) would take
  several CPU-hours; 512 tokens is measured untuned only.
- Order (:func:`run`): untuned at 64 and 256 tokens, then the studies and tuned runs at 256, then
  untuned at 512, the costliest runs (moved last from cost alone on 2026-12-06, before any tuned or
  512-token run had finished).
- Report: per length and setting, MAP x100 over the 85 products (each a test product of one
  fold; per-product AP averaged over seeds) with 95% bootstrap intervals, and every trained system
  minus Length with its paired interval.
"""

from __future__ import annotations

import json
from pathlib import Path

CATEGORY, DATASET = "magazine", "amazon"
LENGTHS = (64, 256, 512)
TUNED_LENGTHS = (256,)
SYSTEMS = ("bimpm", "mmss")
K, FOLD_SEED = 5, 0
SEEDS = (0, 1, 2)
TUNE_TRIALS, TUNE_EPOCHS, EPOCHS = 5, 20, 30
TUNE_PARALLEL = 2  # trials per batch: part of a study's budget, whatever --n-jobs runs them
BUILD = {"min_reviews": 3}
VERSUS, VERSUS_PAIR = "mmss - bimpm", (("mmss", "full"), ("bimpm", "full"))
REVIEWS, META = "Magazine_Subscriptions_5.json.gz", "meta_Magazine_Subscriptions.json.gz"


def root(out: Path) -> Path:
    return Path(out) / "magazine"


def fold_root(out: Path, f: int) -> Path:
    return root(out) / "folds" / f"fold{f}"


def features_root(out: Path, length: int) -> Path:
    return root(out) / f"features_L{length}"


def runs_root(out: Path, length: int, setting: str, f: int) -> Path:
    return root(out) / "runs" / f"L{length}" / setting / f"fold{f}"


def tune_root(out: Path, length: int, f: int) -> Path:
    return root(out) / "tune" / f"L{length}" / f"fold{f}"


def config(**over):
    from studies.powered import current_config

    return current_config(**{"epochs": EPOCHS, **over})


def make_data(out: Path, amazon2018: Path) -> list[dict]:
    """Build the category (once), write the five folds as datasets; return the folds."""
    from mmss_lib.data.amazon2018 import build_amazon2018
    from mmss_lib.errors import DataError
    from mmss_lib.model_selection.folds import fold_splits, released_products, write_resplit
    from mmss_lib.utils import atomic_write_json

    data = root(out) / "data"
    if not (data / DATASET / CATEGORY / "build_report.json").exists():
        paths = [Path(amazon2018) / REVIEWS, Path(amazon2018) / META]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise DataError(
                f"--amazon2018 {amazon2018}: {', '.join(missing)} missing (the Amazon Review Data 2018 "
                "Magazine_Subscriptions sample)"
            )
        build_amazon2018(*paths, data, CATEGORY, dataset=DATASET, **BUILD)
    folds = fold_splits(released_products(data, DATASET, CATEGORY), K, seed=FOLD_SEED)
    for f, fold in enumerate(folds):
        stamp = fold_root(out, f) / DATASET / "fold.json"
        if stamp.exists() and json.loads(stamp.read_text()) == fold:
            continue
        write_resplit(data, fold_root(out, f), DATASET, CATEGORY, fold)
        atomic_write_json(stamp, fold)
    return folds


def extract(out: Path) -> None:
    from mmss_lib.features.extract import cli_main
    from studies.powered import EXTRACT

    for length in LENGTHS:
        args = list(EXTRACT)
        args[args.index("--text-max-len") + 1] = str(length)
        rc = cli_main(
            [
                "--data-root",
                str(root(out) / "data"),
                "--dataset",
                DATASET,
                "--categories",
                CATEGORY,
                "--features",
                str(features_root(out, length)),
                "--no-progress",
                *args,
            ]
        )
        if rc:
            raise SystemExit(f"feature extraction at {length} tokens failed ({rc})")


def run(out: Path, amazon2018: Path, n_jobs: int, seeds=SEEDS, folds=None) -> None:
    """Every run of the phase (finished runs skipped), cheapest question first: untuned at the
    lengths below the longest, then the studies and the tuned runs (:data:`TUNED_LENGTHS`), then
    untuned at the longest length, the costliest runs of the phase (order set from cost alone,
    2026-12-06: an epoch at 256 tokens costs about 4 times one at 64, and 512 more again).

    ``folds``: these folds only, in this order (default all :data:`K`), so that several processes
    or machines share the phase over one folder: each takes other folds (a run folder in use by
    another process is refused, :func:`mmss_lib.training.run_folder.run_lock`), and a later run over all
    folds finds theirs finished."""
    from mmss_lib.errors import DataError
    from mmss_lib.model_selection.search import tune
    from mmss_lib.model_selection.sweeps import run_experiment

    todo = list(range(K)) if folds is None else list(dict.fromkeys(folds))
    if not todo or any(not isinstance(f, int) or not 0 <= f < K for f in todo):
        raise DataError(f"magazine folds {folds!r}: expected fold numbers from 0 to {K - 1}")
    make_data(out, amazon2018)
    extract(out)
    common = {"dataset": DATASET, "categories": [CATEGORY], "progress": True, "n_jobs": n_jobs, "summary": False}

    def untuned(length):
        for f in todo:
            run_experiment(
                data_root=fold_root(out, f),
                features_root=features_root(out, length),
                runs_root=runs_root(out, length, "untuned", f),
                systems=["random", "length", *SYSTEMS],
                seeds=seeds,
                base_config=config(),
                **common,
            )

    for length in LENGTHS[:-1]:
        untuned(length)
    for length in TUNED_LENGTHS:
        for f in todo:
            for system in SYSTEMS:
                tune(
                    data_root=fold_root(out, f),
                    dataset=DATASET,
                    category=CATEGORY,
                    features_root=features_root(out, length),
                    tune_root=tune_root(out, length, f),
                    system=system,
                    base_config=config(epochs=TUNE_EPOCHS),
                    n_trials=TUNE_TRIALS,
                    parallel=TUNE_PARALLEL,
                    n_jobs=n_jobs,
                    seed=0,
                )
            run_experiment(
                data_root=fold_root(out, f),
                features_root=features_root(out, length),
                runs_root=runs_root(out, length, "tuned", f),
                systems=list(SYSTEMS),
                seeds=seeds,
                base_config=config(),
                tuned=tune_root(out, length, f),
                **common,
            )
    untuned(LENGTHS[-1])


def results(out: Path):
    """Finished runs of every length, setting and fold, one frame (``length``, ``setting`` columns).
    A fold enters only where every system of its setting finished there (untuned: the floors and
    :data:`SYSTEMS`; tuned: :data:`SYSTEMS`), so an interrupted phase compares its systems on the
    same products."""
    import pandas as pd

    from mmss_lib.training.run_folder import finished_results

    frames = []
    for length in LENGTHS:
        for setting in ("untuned", "tuned"):
            need = set(SYSTEMS) | ({"random", "length"} if setting == "untuned" else set())
            for f in range(K):
                r = finished_results(runs_root(out, length, setting, f), DATASET, CATEGORY)
                if not r.empty and need <= set(r["system"]):
                    frames.append(r.assign(length=length, setting=setting, cv_fold=f))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def table(res):
    """Per length and setting: MAP x100 over all products (pooled over folds, averaged over seeds)
    with its bootstrap interval, and system - Length with the paired interval; tuned rows also give
    tuned - untuned (``minus_untuned``) with its paired interval, on the same products; MM-SS's rows
    give MM-SS - BiMPM of the same length and setting (``minus_BiMPM``, paired). ``run_min``
    is the system's runs' wall minutes summed (from their ``metrics.json``, so a phase finished over
    several sessions still shows what each part cost; two runs share the cores at a time)."""
    import pandas as pd

    from mmss_lib.evaluation.summary import paired_differences, pooled_per_product, product_summary

    rows = []
    untuned_floors = res[(res["setting"] == "untuned") & res["system"].isin(["random", "length"])]
    for (length, setting), g in res.groupby(["length", "setting"], sort=True):
        if setting == "tuned":  # the floors do not depend on tuning: the same runs (and folds) on each side
            floors = untuned_floors[(untuned_floors["length"] == length) & untuned_floors["cv_fold"].isin(g["cv_fold"])]
            g = pd.concat([g, floors], ignore_index=True)
        pooled = pooled_per_product(g)
        summ = product_summary(pooled).set_index("system")
        comps = [*((f"{s} - Length", (s, "full"), ("length", "full")) for s in SYSTEMS), (VERSUS, *VERSUS_PAIR)]
        diff = paired_differences(pooled, comps)
        diff = diff.set_index("comparison") if len(diff) else None
        gain = _tuning_gain(res, g, length) if setting == "tuned" else None
        for s in summ.index:
            if setting == "tuned" and s in ("random", "length"):
                continue
            runs = g[g["system"] == s]
            row = {
                "tokens": length,
                "setting": setting,
                "system": s,
                "MAP": summ.loc[s, "MAP"],
                "MAP_lo": summ.loc[s, "MAP_lo"],
                "MAP_hi": summ.loc[s, "MAP_hi"],
                "n_products": int(summ.loc[s, "n_products"]),
                "n_folds": int(runs["cv_fold"].nunique()),
                "n_seeds": int(runs["seed"].nunique()),
                "runs_at_ceiling": int(
                    runs.get("ceiling_while_improving", pd.Series(dtype=float)).fillna(0).astype(bool).sum()
                ),
                "run_min": (
                    runs.drop_duplicates("run_dir")["seconds"].sum() / 60
                    if {"seconds", "run_dir"} <= set(runs.columns)
                    else float("nan")
                ),
            }
            if diff is not None and f"{s} - Length" in diff.index:
                d = diff.loc[f"{s} - Length"]
                row.update({"minus_Length": d["diff"], "lo": d["lo"], "hi": d["hi"], "p": d["p"]})
            if diff is not None and s == VERSUS_PAIR[0][0] and VERSUS in diff.index:
                d = diff.loc[VERSUS]
                row.update({"minus_BiMPM": d["diff"], "bimpm_lo": d["lo"], "bimpm_hi": d["hi"]})
            if gain is not None and s in gain.index:
                row.update(
                    {
                        "minus_untuned": gain.loc[s, "diff"],
                        "untuned_lo": gain.loc[s, "lo"],
                        "untuned_hi": gain.loc[s, "hi"],
                    }
                )
            rows.append(row)
    return pd.DataFrame(rows)


def _tuning_gain(res, tuned, length):
    """Tuned - untuned per system of :data:`SYSTEMS`, paired over the tuned runs' products (the
    untuned runs of the same folds and length, as the variant ``untuned``); indexed by system."""
    import pandas as pd

    from mmss_lib.evaluation.summary import paired_differences, pooled_per_product

    untuned = res[
        (res["setting"] == "untuned")
        & (res["length"] == length)
        & res["system"].isin(SYSTEMS)
        & res["cv_fold"].isin(tuned["cv_fold"])
    ].assign(variant="untuned")
    if untuned.empty:
        return None
    both = pd.concat([tuned[tuned["system"].isin(SYSTEMS)], untuned], ignore_index=True)
    diff = paired_differences(
        pooled_per_product(both), [(f"{s} tuned - untuned", (s, "full"), (s, "untuned")) for s in SYSTEMS]
    )
    return diff.set_index("a_system") if len(diff) else None


def studies(out: Path):
    """What each fold's study chose (from its ``best.json``): per tuned length, fold and system the
    chosen trial, its dev MAP next to the untuned first trial's, the chosen settings, the trials
    completed and pruned, and its trials' wall time summed (two trials run at once). Folds whose
    study has not finished are absent."""
    import pandas as pd

    from mmss_lib.model_selection.tuned import tuned_best_path

    rows = []
    for length in TUNED_LENGTHS:
        for f in range(K):
            for system in SYSTEMS:
                path = tuned_best_path(tune_root(out, length, f), DATASET, CATEGORY, system)
                if not path.exists():
                    continue
                best = json.loads(path.read_text())
                params = ", ".join(
                    f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(best["params"].items())
                )
                rows.append(
                    {
                        "tokens": length,
                        "fold": f,
                        "system": system,
                        "trial": best["trial"],
                        "dev_MAP": 100 * best["dev_MAP"],
                        "untuned_dev_MAP": 100 * best["base_dev_MAP"],
                        "settings": params,
                        "complete": best["n_complete"],
                        "pruned": best["n_pruned"],
                        "trials_wall_min": best["wall_seconds"] / 60,
                    }
                )
    return pd.DataFrame(rows)


MAGAZINE_TABLE = "claims_magazine.csv"


def report_lines(out: Path, tables: Path) -> list[str]:
    """The phase's section of the report: the table from the finished runs (written to
    ``claims_magazine.csv``), or, where the runs are not in the folder (a checkout: their scores hold
    the Amazon sample's review ids and never travel in git), the table of record as committed."""
    import pandas as pd

    from mmss_lib.evaluation.tables import plain_markdown

    res = results(out)
    if not res.empty:
        t = table(res)
        t.to_csv(tables / MAGAZINE_TABLE, index=False)
    elif (tables / MAGAZINE_TABLE).exists():
        t = pd.read_csv(tables / MAGAZINE_TABLE)
    else:
        return []
    return [
        f"## Real text: Amazon 2018 Magazine sample, {K}-fold CV, text only (MAP x100 over all products; "
        "system - Length with its 95% paired interval; run_min: the runs' wall minutes summed)",
        "",
        plain_markdown(t, decimals=2),
        "",
        *study_lines(out, tables),
    ]


def study_lines(out: Path, tables: Path) -> list[str]:
    from mmss_lib.evaluation.tables import plain_markdown

    st = studies(out)
    if st.empty:
        return []
    st.to_csv(tables / "claims_magazine_studies.csv", index=False)
    return [
        f"What each fold's study chose ({TUNE_TRIALS} trials, the untuned setting first, dev MAP x100 of the "
        "fold's dev part: a handful of products, so a noisy choice):",
        "",
        plain_markdown(st, decimals=2),
        "",
    ]
