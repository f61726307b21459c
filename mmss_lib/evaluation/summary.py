"""The product-level summary of an experiment: per system, the mean over products with its 95%
bootstrap interval and a paired test against the best other system; written as CSV by every
``mmss train`` (``summary.csv``, or ``summary_{tag}.csv`` under K-fold cross-validation).

Input is the tidy results frame of :func:`run_experiment` (one row per run: ``dataset``,
``category``, ``system``, ``variant``, ``seed``, ``run_dir``, and ``fold`` under
cross-validation). For every run the per-product test metrics are read from its folder
(:func:`mmss_lib.training.floors.per_product_for_run`: the scores file, and for the ``random`` floor its
exact expectations). Then, per (category, system, variant):

1. each product's metric is averaged over seeds;
2. under cross-validation the folds' test products are pooled: every product is a test product
   of exactly one fold (a product seen in two folds, or systems covering different products, is
   a :class:`~mmss_lib.errors.DataError`);
3. ``MAP`` / ``NDCG@3`` / ``NDCG@5`` (and ``MRR``) = the mean over products of AP / NDCG@k / RR;
   ``{m}_lo``, ``{m}_hi`` = the 95% percentile bootstrap interval of that mean over products
   (:func:`mmss_lib.metrics.ranking.bootstrap_interval`, 2000 resamples, seed 0);
4. the rival = the best *other* system/variant of the category by mean MAP (for the best one,
   the runner-up; the ceilings of generated data are oracles, never rivals); ``{m}_diff`` = mean of
   (this - rival) per product with its paired bootstrap interval ``{m}_diff_lo``, ``{m}_diff_hi``
   (:func:`mmss_lib.metrics.ranking.bootstrap_difference`) and ``{m}_p`` = the paired t-test p-value
   (:func:`mmss_lib.metrics.ranking.paired_test`).

Scale: metrics, bounds and differences are x100 (the tables' scale); p-values are plain.
Columns: ``dataset, category, system, variant, MAP, MAP_lo, MAP_hi, NDCG@3, ..., NDCG@5_hi, MRR,
MRR_lo, MRR_hi, n_products, n_seeds, folds, rival, MAP_diff, MAP_diff_lo, MAP_diff_hi, MAP_p,
...`` (``folds`` = K, 0 for the released splits), and ``runs_at_ceiling``: how many of the
system's runs hit their epoch ceiling while dev MAP still rose (``ceiling_while_improving`` of
``metrics.json``; such a system might gain from more epochs). Rows keep the order of the results frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mmss_lib.errors import DataError
from mmss_lib.metrics.ranking import METRIC_NAMES as METRICS
from mmss_lib.metrics.ranking import PER_PRODUCT_COLUMN
from mmss_lib.metrics.ranking import TESTED_METRICS as TESTED  # metrics with a paired test against the rival

SCALE = 100.0


def summary_path(runs_root, dataset: str, category: str, tag: str | None = None) -> Path:
    """``{runs_root}/{dataset}/{category}/summary.csv`` (``summary_{tag}.csv`` for a fold design)."""
    name = "summary.csv" if not tag else f"summary_{tag}.csv"
    return Path(runs_root) / dataset / category / name


def per_run_per_product(results, *, split: str = "test"):
    """Per-product metrics of every run of ``results`` (``run_experiment``'s frame: columns
    ``dataset, category, system, variant, seed, run_dir``, and ``fold`` under cross-validation),
    read with :func:`mmss_lib.training.floors.per_product_for_run` (the ``random`` floor contributes its
    exact expectations): one row per (run, product) with ``product_id, n_reviews, AP, NDCG@3,
    NDCG@5, RR`` and the run's keys (and ``fold`` where ``results`` has one). The first link of
    the chain."""
    import pandas as pd

    from mmss_lib.training.floors import per_product_for_run

    need = ["dataset", "category", "system", "variant", "seed", "run_dir"]
    missing = [c for c in need if c not in results.columns]
    if missing:
        raise DataError(f"summary: results frame lacks column(s) {missing}; expected those of run_experiment")
    frames = []
    for row in results.itertuples(index=False):
        rd = row.run_dir
        pp = per_product_for_run(rd, split)
        if "product_id" not in pp.columns:
            pp = pp.reset_index()
        keys = dict(
            dataset=str(row.dataset),
            category=str(row.category),
            system=str(row.system),
            variant=str(row.variant),
            seed=int(row.seed),
        )
        if "fold" in results.columns:
            fold = row.fold
            keys["fold"] = -1 if fold is None or fold != fold else int(fold)
        flag = getattr(row, "ceiling_while_improving", False)
        frames.append(
            pp.assign(
                **keys,
                product_id=pp["product_id"].astype(str),
                ceiling_while_improving=int(bool(flag) if flag == flag else False),
            )
        )
    if not frames:
        raise DataError("summary: no runs to summarise")
    return pd.concat(frames, ignore_index=True)


def pooled_per_product(results, *, split: str = "test"):
    """Per-product metrics of every run of ``results``, averaged over seeds and pooled over folds.

    Returns a frame with columns ``dataset, category, system, variant, product_id, n_seeds``,
    ``fold`` (-1 without folds) and ``AP, NDCG@3, NDCG@5, RR``: one row per (category, system,
    variant, product). Raises :class:`DataError` when a product is a test product of two folds.
    ``results`` may also be :func:`per_run_per_product`'s frame (already read).
    """
    df = results if "AP" in results.columns else per_run_per_product(results, split=split)
    if "fold" not in df.columns:
        df = df.assign(fold=-1)
    keys = ["dataset", "category", "system", "variant"]
    cols = [PER_PRODUCT_COLUMN[m] for m in METRICS]
    # a product must come from exactly one fold per system
    folds_per = df.groupby(keys + ["product_id"], sort=False)["fold"].nunique()
    if (folds_per > 1).any():
        bad = folds_per[folds_per > 1].index[0]
        raise DataError(
            f"summary: product {bad[-1]!r} of {bad[1]}/{bad[2]} ({bad[3]}) is a test product of "
            f"several folds; the fold runs come from different fold designs"
        )
    if "ceiling_while_improving" not in df.columns:
        df = df.assign(ceiling_while_improving=0)
    g = df.groupby(keys + ["product_id"], sort=False)
    out = g[cols].mean()
    out["ceiling_runs"] = g["ceiling_while_improving"].sum()  # flagged seeds (of the product's fold)
    out["n_seeds"] = g["seed"].nunique()
    out["fold"] = g["fold"].first()
    return out.reset_index()


def product_summary(
    per_product, *, folds: int = 0, n_boot: int = 2000, level: float = 0.95, seed: int = 0, test: str = "t"
):
    """The summary rows (module docstring) from :func:`pooled_per_product`'s frame; ``test``: the
    paired test behind ``{m}_p``, "t" (paired t-test) or "wilcoxon" (signed-rank)."""
    import numpy as np
    import pandas as pd

    from mmss_lib.metrics.ranking import bootstrap_difference, bootstrap_interval, paired_test
    from mmss_lib.models.registry import is_ceiling

    if test not in ("t", "wilcoxon"):
        raise ValueError(f"product_summary: test must be 't' or 'wilcoxon', got {test!r}")
    keys = ["dataset", "category", "system", "variant"]
    rows = []
    for (dataset, category), cat in per_product.groupby(["dataset", "category"], sort=False):
        entries = {}
        for (system, variant), g in cat.groupby(["system", "variant"], sort=False):
            entries[(system, variant)] = g.set_index("product_id")
        products = {k: set(v.index) for k, v in entries.items()}
        first = next(iter(products))
        for k, ps in products.items():
            if ps != products[first]:
                diff = sorted(ps ^ products[first])[:3]
                raise DataError(
                    f"summary: {dataset}/{category}: {k[0]} ({k[1]}) and {first[0]} ({first[1]}) were "
                    f"evaluated on different products (e.g. {diff}); compare runs of the same splits/folds"
                )
        score = {k: float(v["AP"].mean()) for k, v in entries.items()}
        ranked = [k for k in sorted(entries, key=lambda k: -score[k]) if not is_ceiling(k[0])]  # oracles are no rivals
        for key, g in entries.items():
            row = dict(zip(keys, (dataset, category, *key), strict=True))
            for m in METRICS:
                vals = g[PER_PRODUCT_COLUMN[m]].to_numpy(dtype=np.float64)
                lo, hi = bootstrap_interval(vals, n_boot=n_boot, level=level, seed=seed)
                row.update({m: SCALE * float(vals.mean()), f"{m}_lo": SCALE * lo, f"{m}_hi": SCALE * hi})
            row.update(n_products=int(len(g)), n_seeds=int(g["n_seeds"].min()), folds=int(folds))
            if "ceiling_runs" in g.columns:  # one count per fold (a product is in one fold)
                row["runs_at_ceiling"] = int(
                    g.groupby("fold")["ceiling_runs"].first().sum() if "fold" in g.columns else g["ceiling_runs"].max()
                )
            others = [k for k in ranked if k != key]
            rival = others[0] if others else None
            row["rival"] = "" if rival is None else _label(*rival)
            for m in TESTED:
                col = PER_PRODUCT_COLUMN[m]
                if rival is None:
                    row.update(
                        {
                            f"{m}_diff": float("nan"),
                            f"{m}_diff_lo": float("nan"),
                            f"{m}_diff_hi": float("nan"),
                            f"{m}_p": float("nan"),
                        }
                    )
                    continue
                a, b = g[col], entries[rival][col]
                d, lo, hi = bootstrap_difference(a, b, n_boot=n_boot, level=level, seed=seed)
                row.update(
                    {
                        f"{m}_diff": SCALE * d,
                        f"{m}_diff_lo": SCALE * lo,
                        f"{m}_diff_hi": SCALE * hi,
                        f"{m}_p": paired_test(a, b)[f"{test}_p"],
                    }
                )
            rows.append(row)
    return pd.DataFrame(rows)


def table_summary(results, *, dataset: str | None = None, test: str = "t", **kw):
    """The summary behind a comparison table: :func:`product_summary` of the full models' runs
    (variant ``full``) of ``dataset`` in ``results`` (folds pooled), so that each system's rival is
    the best other *system*. ``kw``: ``n_boot``, ``level``, ``seed``."""
    df = results
    if dataset is not None and "dataset" in df.columns:
        df = df[df["dataset"].astype(str) == str(dataset)]
    if "variant" in df.columns:
        df = df[df["variant"].fillna("full").astype(str).isin(["full", ""])]
    if df.empty:
        raise DataError(f"summary: no runs of full models{f' of {dataset!r}' if dataset else ''} to summarise")
    return product_summary(pooled_per_product(df), test=test, **kw)


def _label(system: str, variant: str) -> str:
    return system if variant in ("", "full", None) else f"{system}:{variant}"


def write_summaries(results, runs_root, *, tag: str | None = None, folds: int = 0, **kw) -> dict:
    """Summarise ``results`` (:func:`product_summary`) and write one CSV per (dataset, category) to
    :func:`summary_path` (atomically). Returns ``{path: frame}``."""
    from mmss_lib.utils import atomic_path

    summary = product_summary(pooled_per_product(results), folds=folds, **kw)
    out = {}
    for (dataset, category), df in summary.groupby(["dataset", "category"], sort=False):
        path = summary_path(runs_root, str(dataset), str(category), tag)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
        out[path] = df.reset_index(drop=True)
    return out


def read_summaries(results):
    """The product-level summary of a :func:`mmss_lib.model_selection.sweeps.run_experiment` result: its
    ``attrs["summary_paths"]`` files concatenated (an empty frame when no summary was written)."""
    import pandas as pd

    paths = list(getattr(results, "attrs", {}).get("summary_paths") or [])
    if not paths:
        return pd.DataFrame()
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)


def format_summary(summary, metrics: Sequence[str] = TESTED, decimals: int = 1) -> str:
    """The summary as printed by ``mmss train``: per system ``mean [lo, hi]`` for each metric,
    the rival and the paired t-test p-value of each metric against it."""
    import pandas as pd

    def cell(r, m):
        return f"{r[m]:.{decimals}f} [{r[f'{m}_lo']:.{decimals}f}, {r[f'{m}_hi']:.{decimals}f}]"

    rows = []
    for _, r in summary.iterrows():
        row = {"category": r["category"], "system": _label(r["system"], r["variant"])}
        row.update({m: cell(r, m) for m in metrics})
        row["n_products"] = int(r["n_products"])
        row["vs"] = r["rival"]
        row.update({f"p({m})": ("-" if r[f"{m}_p"] != r[f"{m}_p"] else f"{r[f'{m}_p']:.3g}") for m in metrics})
        rows.append(row)
    return pd.DataFrame(rows).to_string(index=False)


def pool_folds(results, split: str = "test"):
    """A cross-validated results frame (a ``fold`` column) as one row per (dataset, category,
    system, variant, seed) whose ``MAP``, ``NDCG@3``, ``NDCG@5``, ``MRR`` (fractions, like the
    results) are the means over the products of all folds' test parts (read from the run folders,
    the ``random`` floor with its exact expectations) — what the comparison tables average over
    seeds, so their means match the intervals over products. ``dev_MAP``, ``best_epoch``,
    ``epochs_run`` and ``sec_per_epoch`` are means over the folds; ``n_folds`` counts them and
    ``run_dir`` is fold 0's. A frame without a ``fold`` column is returned as it is."""
    import pandas as pd

    from mmss_lib.training.floors import per_product_for_run

    if "fold" not in results.columns:
        return results
    keys = ["dataset", "category", "system", "variant", "seed"]
    rows = []
    for key, g in results.groupby(keys, sort=False):
        g = g.sort_values("fold")
        pp = pd.concat([per_product_for_run(rd, split) for rd in g["run_dir"]], ignore_index=True)
        if pp["product_id"].duplicated().any():
            dup = pp.loc[pp["product_id"].duplicated(), "product_id"].iloc[0]
            raise DataError(
                f"pool_folds: product {dup!r} is a test product of several folds of "
                f"{key[1]}/{_label(key[2], key[3])} seed {key[4]}"
            )
        row = dict(zip(keys, key, strict=True))
        row.update({m: float(pp[PER_PRODUCT_COLUMN[m]].mean()) for m in METRICS})
        for c in ("dev_MAP", "best_epoch", "epochs_run", "sec_per_epoch"):
            if c in g.columns:
                row[c] = float(g[c].mean())
        row.update(n_folds=int(len(g)), n_products=int(len(pp)), run_dir=str(g["run_dir"].iloc[0]))
        rows.append(row)
    return pd.DataFrame(rows)


def _per_system(pooled, column: str) -> dict:
    """``{(category, system, variant): Series of column by product_id}`` of a pooled frame."""
    return {
        k: g.set_index("product_id")[column] for k, g in pooled.groupby(["category", "system", "variant"], sort=False)
    }


def paired_differences(
    pooled, comparisons, *, metric: str = "MAP", n_boot: int = 2000, level: float = 0.95, seed: int = 0
):
    """Named paired differences between systems on the same test products.

    ``pooled``: :func:`pooled_per_product`'s frame (per-product values averaged over seeds);
    ``comparisons``: ``[(name, (system_a, variant_a), (system_b, variant_b)), ...]``. Per category
    and comparison (skipped where a side has no runs): ``diff`` = mean over products of a - b (x100),
    ``lo``/``hi`` its paired percentile bootstrap interval (:func:`mmss_lib.metrics.ranking.bootstrap_difference`),
    ``half_width`` = (hi - lo)/2, ``p`` the paired t-test (:func:`mmss_lib.metrics.ranking.paired_test`),
    ``n_products``. Columns: ``category, comparison, a_system, a_variant, b_system, b_variant, diff,
    lo, hi, half_width, p, n_products``."""
    import pandas as pd

    from mmss_lib.metrics.ranking import bootstrap_difference, paired_test

    col = PER_PRODUCT_COLUMN[metric]
    by = _per_system(pooled, col)
    rows = []
    for cat in dict.fromkeys(pooled["category"]):
        for name, a, b in comparisons:
            ka, kb = (cat, *a), (cat, *b)
            if ka not in by or kb not in by:
                continue
            d, lo, hi = bootstrap_difference(by[ka], by[kb], n_boot=n_boot, level=level, seed=seed)
            rows.append(
                {
                    "category": cat,
                    "comparison": name,
                    "a_system": a[0],
                    "a_variant": a[1],
                    "b_system": b[0],
                    "b_variant": b[1],
                    "diff": SCALE * d,
                    "lo": SCALE * lo,
                    "hi": SCALE * hi,
                    "half_width": SCALE * (hi - lo) / 2,
                    "p": paired_test(by[ka], by[kb])["t_p"],
                    "n_products": int(len(by[ka])),
                }
            )
    return pd.DataFrame(rows)


def headroom_shares(
    pooled,
    *,
    low=("ceiling_text", "full"),
    high=("ceiling_all", "full"),
    metric: str = "MAP",
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
):
    """Each system's share of the headroom the images leave: (system - low) / (high - low) of the
    mean ``metric`` over products (defaults: the text-cue and all-cue ceilings of generated
    data), with a percentile bootstrap interval (products resampled, the same draws for the three
    means). 0: no better than a perfect use of the text cues; 1: as good as a perfect use of all
    cues. Columns: ``category, system, variant, share, lo, hi, headroom`` (high - low, x100)."""
    import numpy as np
    import pandas as pd

    col = PER_PRODUCT_COLUMN[metric]
    by = _per_system(pooled, col)
    rng = np.random.default_rng(seed)
    rows = []
    for cat in dict.fromkeys(pooled["category"]):
        if (cat, *low) not in by or (cat, *high) not in by:
            continue
        lo_v = by[(cat, *low)]
        products = lo_v.index
        hi_v = by[(cat, *high)].reindex(products).to_numpy()
        lo_v = lo_v.to_numpy()
        idx = rng.integers(0, len(products), size=(n_boot, len(products)))
        gap_b = hi_v[idx].mean(1) - lo_v[idx].mean(1)
        for (c, system, variant), v in by.items():
            if c != cat or (system, variant) in (low, high):
                continue
            x = v.reindex(products).to_numpy()
            share = (x.mean() - lo_v.mean()) / (hi_v.mean() - lo_v.mean())
            boots = (x[idx].mean(1) - lo_v[idx].mean(1)) / gap_b
            q_lo, q_hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
            rows.append(
                {
                    "category": cat,
                    "system": system,
                    "variant": variant,
                    "share": float(share),
                    "lo": float(q_lo),
                    "hi": float(q_hi),
                    "headroom": SCALE * float(hi_v.mean() - lo_v.mean()),
                }
            )
    return pd.DataFrame(rows)
