"""What each system learns on generated data: its test scores regressed on the planted cues.

The demo generator records the latent cues of every review (:func:`mmss_lib.data.synthetic.load_cues`), and
its label is a known function of them (``1.1 match + 0.9 detail/3 + has_images * w * (agree +
img_match - 0.5)`` plus noise, binned). A system that ranks well could still do so by reading one
cue only (e.g. ``detail``, close to what the Length floor sees); this diagnostic says which cues a
run's scores follow, next to how much the human label itself follows each.

Statistic, per run (and for the human label, the reference row): over the test reviews,

1. z-score the run's scores within each product (mean 0, sd 1 over the product's test reviews;
   products whose scores or labels do not vary, e.g. single-review products, are left out: a
   within-product ranking has nothing to say there);
2. keep the reviews with images (the image cues exist only for them);
3. ordinary least squares of the z-scores on an intercept and ``match``, ``detail / 3``,
   ``agree``, ``img_match``: the four coefficients are the table's cells. The label row is the same
   regression of the within-product z-scored human label.

Coefficients are in within-product standard deviations per unit of cue (``detail / 3``: from 0
to 3 informative sentences); a system that uses the cues as the label does has coefficients
proportional to the label row's. Per (category, system, variant) the table gives the mean over
seeds (and the seeds' sd). No model reads the cues; only generated data has them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mmss_lib.errors import DataError
from mmss_lib.training.run_folder import scores_path

CUES = ("match", "detail", "agree", "img_match")
LABEL_ROW = "label itself"
# per run: its coefficients and the label's on the same reviews, kept beside metrics.json so the
# table is rebuilt where the per-review scores are not kept (results of record in git)
CUE_RECORD = "cue_sensitivity_{split}.json"


def _keep_record(path: Path, coefs: dict) -> None:
    """Write a run's coefficient record when it is missing or differs (a cache: a read-only run
    folder keeps none)."""
    from mmss_lib.utils import atomic_write_text

    text = json.dumps(coefs, indent=2, sort_keys=True) + "\n"
    try:
        if not (path.exists() and path.read_text(encoding="utf-8") == text):
            atomic_write_text(path, text)
    except OSError:
        pass


def _zscore_within(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    s = pd.Series(values, dtype=np.float64)
    g = s.groupby(groups)
    sd = g.transform("std", ddof=0)
    return ((s - g.transform("mean")) / sd.where(sd > 0)).to_numpy()


def cue_coefficients(scores: pd.DataFrame, cues: pd.DataFrame, column: str = "score") -> dict[str, float]:
    """The regression of one column of a scores frame (``review_id, product_id, label, score``: a
    run's ``scores_test.csv``) on the cues (module docstring) -> ``{cue: coefficient, "n": reviews}``."""
    for col in ("review_id", "product_id", "label", column):
        if col not in scores.columns:
            raise DataError(f"cue sensitivity: scores lack column {col!r}; expected a run's scores_{{split}}.csv")
    df = scores.assign(review_id=scores["review_id"].astype(str)).merge(
        cues.assign(review_id=cues["review_id"].astype(str)), on="review_id", how="left", validate="one_to_one"
    )
    if df["match"].isna().any():
        missing = df.loc[df["match"].isna(), "review_id"].iloc[0]
        raise DataError(
            f"cue sensitivity: review {missing!r} has no planted cues; scores and cues must come "
            "from the same generated data"
        )
    z = _zscore_within(df[column].to_numpy(np.float64), df["product_id"].to_numpy())
    zl = _zscore_within(df["label"].to_numpy(np.float64), df["product_id"].to_numpy())
    keep = (df["has_images"].to_numpy() == 1) & np.isfinite(z) & np.isfinite(zl)
    x = np.column_stack(
        [np.ones(int(keep.sum()))]
        + [df.loc[keep, c].to_numpy(np.float64) / (3.0 if c == "detail" else 1.0) for c in CUES]
    )
    if keep.sum() < len(CUES) + 2:
        return {**{c: float("nan") for c in CUES}, "n": int(keep.sum())}
    coef = np.linalg.lstsq(x, z[keep], rcond=None)[0]
    return {**{c: float(v) for c, v in zip(CUES, coef[1:], strict=True)}, "n": int(keep.sum())}


def cue_sensitivity_table(results, data_root, *, split: str = "test") -> pd.DataFrame:
    """Per (category, system, variant) of a :func:`mmss_lib.model_selection.sweeps.run_experiment` results
    frame (generated data: dataset ``demo``), the mean over seeds of the coefficients, with the
    human label's row first per category. Columns: ``category, system, variant, match, detail,
    agree, img_match`` (means), ``{cue}_sd`` (over seeds; 0 for one seed), ``n_seeds``,
    ``n_reviews``. Floors and ceilings are included like any system."""
    from mmss_lib.data.synthetic import load_cues

    need = ["dataset", "category", "system", "variant", "seed", "run_dir"]
    missing = [c for c in need if c not in results.columns]
    if missing:
        raise DataError(f"cue sensitivity: results lack column(s) {missing}; expected those of run_experiment")
    if len(results) and set(results["dataset"].astype(str)) != {"demo"}:
        raise DataError(
            f"cue sensitivity needs generated data (dataset 'demo', whose cues files exist); "
            f"got datasets {sorted(set(results['dataset'].astype(str)))}"
        )
    rows = []
    cues_of: dict[str, pd.DataFrame] = {}
    for r in results.itertuples(index=False):
        cat = str(r.category)
        path, record = scores_path(r.run_dir, split), Path(r.run_dir) / CUE_RECORD.format(split=split)
        if path.exists():
            if cat not in cues_of:
                cues_of[cat] = load_cues(data_root, cat, split)
            sc = pd.read_csv(path, dtype={"review_id": str, "product_id": str})
            coefs = {
                "label": cue_coefficients(sc.assign(score=sc["label"]), cues_of[cat]),
                "run": cue_coefficients(sc, cues_of[cat]),
            }
            _keep_record(record, coefs)
        elif record.exists():  # the scores are not kept (results of record): the run's coefficients
            coefs = json.loads(record.read_text(encoding="utf-8"))
        else:
            raise DataError(f"{path}: no scores (nor {record.name}) for this run; train it first")
        if not any(x["category"] == cat and x["system"] == LABEL_ROW for x in rows):
            rows.append({"category": cat, "system": LABEL_ROW, "variant": "", "seed": 0, **coefs["label"]})
        rows.append(
            {"category": cat, "system": str(r.system), "variant": str(r.variant), "seed": int(r.seed), **coefs["run"]}
        )
    if not rows:
        raise DataError("cue sensitivity: no runs")
    df = pd.DataFrame(rows)
    g = df.groupby(["category", "system", "variant"], sort=False)
    out = g[list(CUES)].mean()
    for c in CUES:
        out[f"{c}_sd"] = g[c].std(ddof=0)
    out["n_seeds"] = g["seed"].nunique()
    out["n_reviews"] = g["n"].first()
    return out.reset_index()


def format_cue_sensitivity(table: pd.DataFrame, decimals: int = 2) -> pd.DataFrame:
    """The table as it is printed: one row per (category, system), cells ``mean`` (``mean +- sd``
    over seeds when there are several)."""
    out = table[["category", "system", "variant"]].copy()
    out["system"] = [
        s if v in ("", "full") else f"{s}:{v}" for s, v in zip(table["system"], table["variant"], strict=True)
    ]
    for c in CUES:
        out[c] = [
            f"{m:.{decimals}f}" + (f" ± {sd:.{decimals}f}" if n > 1 else "")
            for m, sd, n in zip(table[c], table[f"{c}_sd"], table["n_seeds"], strict=True)
        ]
    out["reviews"] = table["n_reviews"]
    return out.drop(columns="variant")


def write_cue_sensitivity(results, data_root, tables_dir, tag: str, *, split: str = "test") -> pd.DataFrame:
    """Write ``cue_sensitivity_{tag}.csv`` (the numbers) and ``.md`` (the formatted table with a
    note) under ``tables_dir``; return the table."""
    from mmss_lib.evaluation.tables import plain_markdown, save_csv
    from mmss_lib.utils import atomic_write_text

    table = cue_sensitivity_table(results, data_root, split=split)
    tables_dir = Path(tables_dir)
    save_csv(table, tables_dir / f"cue_sensitivity_{tag}.csv")
    note = (
        "Test scores z-scored within product, regressed on the planted cues over reviews with images "
        "(detail / 3); mean ± sd over seeds. 'label itself': the same regression of the human label "
        "(mmss_lib/evaluation/cue_sensitivity.py)."
    )
    atomic_write_text(
        tables_dir / f"cue_sensitivity_{tag}.md", plain_markdown(format_cue_sensitivity(table)) + "\n\n" + note + "\n"
    )
    return table
