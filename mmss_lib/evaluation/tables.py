"""The paper's result tables as DataFrames, saved as CSV + Markdown (used by the notebooks).

Input everywhere is a tidy *results* frame, one row per trained run evaluated on the test split:
columns ``dataset, category, system, variant, seed, MAP, NDCG@3, NDCG@5`` with the metrics as
fractions in [0, 1] (a ``split`` column, when present, is filtered to ``"test"``). Tables show
metrics x100 like the paper.

- :func:`comparison_table` — Tables 1/2: rows = systems grouped by Type (Floor, Ceiling,
  Text-only, then Multimodal) in the paper's order (:data:`mmss_lib.models.registry.SYSTEMS`), columns =
  (category, metric) with MAP, N@3, N@5 as the mean over seeds (``with_std=True``:
  ``"69.5 ± 0.3"``, sample std over seeds). With ``summary`` (the product-level summary of the
  runs, :func:`mmss_lib.evaluation.summary.table_summary`: the one statistics chain, also behind the
  summary CSVs) each mean carries its 95% bootstrap interval over the test products,
  ``"69.5 [67.1, 71.8]"``, and every system its marker against the best other system of its
  category: "∗" significantly better, "†" significantly worse (paired test on the per-product
  values, p < 0.01). Tables only format; no statistic is computed here.
- :func:`significance_frame` — the tests behind the markers as a tidy frame;
  :func:`comparison_note` writes the legend (interval, test, products, and which
  region-feature weights the runs used).
- :func:`ablation_table` — Table 4: one row per variant in the paper's order
  (``mmss_lib.models.mmss.ABLATION_LABELS`` when importable), MAP/N@3/N@5 means over seeds, the
  differences to the full model (Δ = variant mean - full mean, so negative = worse) and the
  std over seeds.
- :func:`save_table` / :func:`to_markdown` — ``{stem}.csv`` and ``{stem}.md`` written
  atomically; the Markdown renderer is our own (pandas' ``to_markdown`` needs ``tabulate``).

Table 3 (dataset statistics) is ``mmss_lib.data.mrhp.dataset_stats``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmss_lib.errors import DataError
from mmss_lib.metrics.ranking import TESTED_METRICS as METRICS  # the columns of Tables 1/2/4
from mmss_lib.models.registry import is_ceiling

METRIC_LABELS = {"MAP": "MAP", "NDCG@3": "N@3", "NDCG@5": "N@5"}
CATEGORY_LABELS = {"clothing": "CS&J", "electronics": "Elec.", "home": "H&K"}
TYPE_LABELS = {"floor": "Floor", "ceiling": "Ceiling", "text-only": "Text-only", "multimodal": "Multimodal"}
MARKER = "∗"  # significantly better than the best other system
WORSE_MARKER = "†"  # significantly worse than the best other system
CEILING_MARKER = "↑"  # some run of this cell hit its epoch ceiling while dev MAP still rose

MISSING = "-"
FULL = "full"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _require(df, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"{what}: column(s) {missing} missing; expected columns {list(columns)}, got {list(df.columns)}"
        )


def _variant(df):
    """The variant column with missing / empty values read as the full model."""
    import pandas as pd

    if "variant" not in df.columns:
        return pd.Series(FULL, index=df.index)
    v = df["variant"]
    return v.where(v.notna() & (v.astype(str) != ""), FULL).astype(str)


def _test_rows(results, dataset: str | None, what: str):
    df = results
    if "split" in df.columns:
        df = df[df["split"].astype(str) == "test"]
    if dataset is not None:
        _require(df, ["dataset"], what)
        df = df[df["dataset"].astype(str) == str(dataset)]
        if df.empty:
            known = sorted(results["dataset"].astype(str).unique())
            raise DataError(f"{what}: no test results for dataset {dataset!r}; datasets present: {known}")
    return df


def _ordered(values: Sequence[str], preferred: Sequence[str]) -> list[str]:
    """``preferred`` entries present in ``values`` first (in that order), then the rest in
    order of appearance."""
    present = list(dict.fromkeys(values))
    return [p for p in preferred if p in present] + [v for v in present if v not in preferred]


def format_cell(
    mean: float,
    std: float | None = None,
    *,
    decimals: int = 1,
    marker: str = "",
    interval: tuple[float, float] | None = None,
) -> str:
    """``"69.5"``, ``"69.5∗"``, ``"69.5 ± 0.3"`` or ``"69.5∗ [67.1, 71.8]"`` from values already in
    table units (x100)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return MISSING
    s = f"{mean:.{decimals}f}{marker}"
    if std is not None:
        s += f" ± {(0.0 if math.isnan(std) else std):.{decimals}f}"
    if interval is not None:
        s += f" [{interval[0]:.{decimals}f}, {interval[1]:.{decimals}f}]"
    return s


def _seed_stats(df, keys: list[str], metrics: Sequence[str]):
    """Mean, sample std (ddof=1; 0 for a single seed) and count of seeds per ``keys`` group."""
    g = df.groupby(keys, sort=False)[list(metrics)]
    mean = g.mean()
    std = g.std(ddof=1).fillna(0.0)
    n = g.size()
    return mean, std, n


# --------------------------------------------------------------------------------------------
# Tables 1 / 2
# --------------------------------------------------------------------------------------------


def comparison_table(
    results,
    dataset: str,
    *,
    summary=None,
    with_std: bool = False,
    decimals: int = 1,
    alpha: float = 0.01,
    categories: Sequence[str] | None = None,
    with_interval: bool | None = None,
):
    """Tables 1/2 layout for one dataset (test split, full models only).

    Rows: MultiIndex (Type, Method) — systems of :data:`mmss_lib.models.registry.SYSTEMS` in its
    order, grouped Floor (``random``, ``length``), Ceiling, Text-only, then Multimodal (the
    paper's order), display names as in the paper; systems not in the registry follow under Type
    "Other". Columns: MultiIndex (category, metric) with categories shown as CS&J / Elec. / H&K
    in that order and metrics MAP, N@3, N@5. Cells are strings: mean over seeds x100 with
    ``decimals`` decimals (``with_std``: ``"mean ± std"``), ``"-"`` where a system has no run.

    ``summary``: the product-level summary of these runs (:func:`mmss_lib.evaluation.summary.table_summary`,
    the statistics chain the summary CSVs use). With it, each cell carries its bootstrap interval
    of the mean over products (``with_interval``, default on: ``"69.5 [67.1, 71.8]"``) and its
    marker against the best other system of the category: ``MARKER`` ("∗") where it is
    significantly better (p < ``alpha``), ``WORSE_MARKER`` ("†") where significantly worse.
    """
    import pandas as pd

    from mmss_lib.models.registry import SYSTEMS

    what = f"comparison table ({dataset})"
    _require(results, ["dataset", "category", "system", "seed", *METRICS], what)
    df = _test_rows(results, dataset, what)
    df = df[_variant(df) == FULL]
    if df.empty:
        raise DataError(f"{what}: no rows of full models (variant empty or {FULL!r}) in the test results")
    df = df.assign(category=df["category"].astype(str), system=df["system"].astype(str))
    cats = list(categories) if categories is not None else _ordered(df["category"].tolist(), list(CATEGORY_LABELS))
    systems = _ordered(df["system"].tolist(), list(SYSTEMS))
    mean, std, _ = _seed_stats(df, ["system", "category"], METRICS)
    if with_interval is None:
        with_interval = summary is not None
    if with_interval and summary is None:
        raise DataError(f"{what}: intervals need the product-level summary (summary=)")
    stats = _summary_rows(summary, dataset) if summary is not None else {}

    def kind(s: str) -> str:
        return TYPE_LABELS.get(SYSTEMS[s].kind, SYSTEMS[s].kind) if s in SYSTEMS else "Other"

    type_order = list(TYPE_LABELS.values()) + ["Other"]
    systems = sorted(systems, key=lambda s: type_order.index(kind(s)) if kind(s) in type_order else len(type_order))
    rows = pd.MultiIndex.from_tuples(
        [(kind(s), SYSTEMS[s].display if s in SYSTEMS else s) for s in systems], names=["Type", "Method"]
    )
    cols = pd.MultiIndex.from_tuples(
        [(CATEGORY_LABELS.get(c, c), METRIC_LABELS[m]) for c in cats for m in METRICS], names=["Category", "Metric"]
    )
    cells = []
    for s in systems:
        row = []
        for c in cats:
            for m in METRICS:
                if (s, c) not in mean.index:
                    row.append(MISSING)
                    continue
                st = stats.get((c, s))
                mark = _marker(st, m, alpha) if st is not None else ""
                if st is not None and _runs_at_ceiling(st):
                    mark += CEILING_MARKER
                sd = 100.0 * std.loc[(s, c), m] if with_std else None
                iv = (float(st[f"{m}_lo"]), float(st[f"{m}_hi"])) if with_interval and st is not None else None
                row.append(format_cell(100.0 * mean.loc[(s, c), m], sd, decimals=decimals, marker=mark, interval=iv))
        cells.append(row)
    return pd.DataFrame(cells, index=rows, columns=cols)


def _summary_rows(summary, dataset: str | None) -> dict:
    """``{(category, system): summary row}`` of the full models of ``dataset``."""
    _require(
        summary,
        [
            "dataset",
            "category",
            "system",
            "variant",
            "rival",
            "n_products",
            *[f"{m}{x}" for m in METRICS for x in ("_lo", "_hi", "_diff", "_p")],
        ],
        "product-level summary",
    )
    df = summary
    if dataset is not None:
        df = df[df["dataset"].astype(str) == str(dataset)]
    df = df[_variant(df) == FULL]
    return {(str(r["category"]), str(r["system"])): r for _, r in df.iterrows()}


def _runs_at_ceiling(row) -> int:
    """How many runs of a summary row hit their epoch ceiling while dev MAP still rose (0 for
    summaries written before the flag existed)."""
    v = row.get("runs_at_ceiling", 0) if hasattr(row, "get") else 0
    return int(v) if v == v and v is not None else 0


def _marker(row, metric: str, alpha: float) -> str:
    """∗ / † / "" for one summary row and metric: significantly better / worse than its rival."""
    p, diff = row[f"{metric}_p"], row[f"{metric}_diff"]
    if not (p == p and p < alpha) or not isinstance(row["rival"], str) or not row["rival"]:
        return ""
    return MARKER if diff > 0 else WORSE_MARKER if diff < 0 else ""


def significance_frame(summary, *, dataset: str | None = None, alpha: float = 0.01):
    """The tests behind a comparison table's markers as a tidy frame, from the product-level
    summary (:func:`mmss_lib.evaluation.summary.table_summary`): ``category, system, metric, rival,
    mean_diff`` (points, this - rival), ``p``, ``n`` (test products) and ``marker``."""
    import pandas as pd

    rows = []
    for (cat, system), r in _summary_rows(summary, dataset).items():
        if not isinstance(r["rival"], str) or not r["rival"]:
            continue
        for m in METRICS:
            rows.append(
                {
                    "category": cat,
                    "system": system,
                    "metric": METRIC_LABELS.get(m, m),
                    "rival": r["rival"],
                    "mean_diff": round(float(r[f"{m}_diff"]), 2),
                    "p": float(r[f"{m}_p"]),
                    "n": int(r["n_products"]),
                    "marker": _marker(r, m, alpha),
                }
            )
    return pd.DataFrame(rows, columns=["category", "system", "metric", "rival", "mean_diff", "p", "n", "marker"])


def region_weights_note(features_root, dataset: str, categories: Sequence[str]) -> str:
    """What the region features of ``dataset`` were computed with, from the stores' manifests:
    e.g. ``"region features: random-weight Faster R-CNN boxes, mobilenet_v2 torchvision
    IMAGENET1K_V1 (ImageNet) features"``; ``""`` when no region store is found."""
    import json

    seen = []
    for cat in categories:
        path = Path(features_root) / dataset / cat / "region_rvw" / "manifest.json"
        if not path.exists():
            continue
        m = json.loads(path.read_text(encoding="utf-8"))
        det = "random-weight Faster R-CNN" if m.get("random_weights") else f"Faster R-CNN ({m.get('detector_weights')})"
        bb = m.get("region_backbone") or {"name": "c5"}
        sel = m.get("selection") or {}
        if sel.get("box") == "grid":
            levels = sel.get("levels") or []
            grid = " + ".join(f"{g}x{g}" for g in levels)
            text = f"grid boxes ({grid} per image), {bb.get('name')} {bb.get('weights', '')} features".rstrip()
        elif bb.get("name", "c5") == "c5":
            text = f"{det} boxes and C5 features" + (
                " (random weights: no pretrained image features)" if m.get("random_weights") else ""
            )
        else:
            text = f"{det} boxes, {bb['name']} {bb.get('weights', '')} features".rstrip()
        if text not in seen:
            seen.append(text)
    return ("region features: " + "; ".join(seen)) if seen else ""


def comparison_note(
    summary=None,
    *,
    dataset: str | None = None,
    alpha: float = 0.01,
    level: float = 0.95,
    test: str = "t",
    region_note: str = "",
) -> str:
    """The legend printed under a comparison table: cell format, interval, test and markers, the
    number of test products per category (from the product-level ``summary``) and
    (``region_note``) the region-feature weights."""
    parts = ["Cells: mean over seeds x100"]
    if summary is not None:
        rows = _summary_rows(summary, dataset)
        n = {}
        for (c, _), r in rows.items():
            n.setdefault(c, int(r["n_products"]))
        parts[0] += (
            f" [{round(100 * level)}% percentile bootstrap interval of the mean over test products]; "
            f"{MARKER} / {WORSE_MARKER}: significantly better / worse than the best other system of the "
            f"category ({'paired t-test' if test == 't' else 'Wilcoxon signed-rank test'} on per-product "
            f"values averaged over seeds, p < {alpha:g}); Floor: rankings without training (Random: "
            f"expected value of a uniformly random ranking; Length: longest review first)"
            + (
                "; Ceiling: rankings by a least-squares fit of the label on the generator's planted cues, "
                "fitted on train and dev (text cues: match, detail; all cues: also the image cues), "
                "never a rival in the tests"
                if any(is_ceiling(s) for _, s in rows)
                else ""
            )
            + ". Test products: "
            + ", ".join(f"{CATEGORY_LABELS.get(c, c)} {k}" for c, k in n.items())
        )
        flagged = [
            f"{CATEGORY_LABELS.get(c, c)} {s_} ({_runs_at_ceiling(r)} of {int(r['n_seeds']) * max(int(r.get('folds', 0) or 0), 1)} runs)"
            for (c, s_), r in rows.items()
            if _runs_at_ceiling(r)
        ]
        if flagged:
            parts.append(
                f"{CEILING_MARKER}: hit the epoch ceiling while dev MAP still rose (more epochs might "
                f"change the result): " + ", ".join(flagged)
            )
    if region_note:
        parts.append(region_note)
    return ". ".join(parts) + "."


# --------------------------------------------------------------------------------------------
# Table 4
# --------------------------------------------------------------------------------------------


def _ablation_labels() -> dict[str, str]:
    try:
        from mmss_lib.models.mmss import ABLATION_LABELS  # imports torch: only when a table is built
    except ImportError:
        return {}
    return dict(ABLATION_LABELS)


def ablation_table(
    results,
    dataset: str,
    category: str,
    *,
    system: str = "mmss",
    full: str = FULL,
    labels: Mapping[str, str] | None = None,
    decimals: int = 2,
):
    """Table 4 layout for one dataset and category (test split).

    Rows: variants of ``system`` in the order of ``labels`` (default
    ``mmss_lib.models.mmss.ABLATION_LABELS``; missing labels fall back to the variant name), other
    variants after them; index name "Model Variant". Columns: ``MAP, N@3, N@5`` (mean over
    seeds x100), ``ΔMAP, ΔN@3, ΔN@5`` (variant mean - full mean; 0 for the full model),
    ``MAP std, N@3 std, N@5 std`` (sample std over seeds, 0 for one seed) and ``seeds``; rounded
    to ``decimals``. A missing or empty variant counts as ``full``; the full model must be there.
    """
    import pandas as pd

    what = f"ablation table ({dataset}/{category})"
    _require(results, ["dataset", "category", "seed", *METRICS], what)
    df = _test_rows(results, dataset, what)
    df = df[df["category"].astype(str) == str(category)]
    if system is not None and "system" in df.columns:
        df = df[df["system"].astype(str) == system]
    if df.empty:
        raise DataError(f"{what}: no test results of system {system!r} for this dataset and category")
    df = df.assign(variant=_variant(df))
    if full not in set(df["variant"]):
        raise DataError(
            f"{what}: no run of the full model (variant {full!r} or empty); the Δ columns "
            f"need it. Variants present: {sorted(set(df['variant']))}"
        )
    labels = dict(labels) if labels is not None else _ablation_labels()
    variants = _ordered(df["variant"].tolist(), [full] + [v for v in labels if v != full])
    mean, std, n = _seed_stats(df, ["variant"], METRICS)
    out = pd.DataFrame(index=pd.Index([labels.get(v, v) for v in variants], name="Model Variant"))
    for m in METRICS:
        out[METRIC_LABELS[m]] = 100.0 * mean.loc[variants, m].to_numpy()
    for m in METRICS:
        out[f"Δ{METRIC_LABELS[m]}"] = 100.0 * (mean.loc[variants, m].to_numpy() - mean.loc[full, m])
    for m in METRICS:
        out[f"{METRIC_LABELS[m]} std"] = 100.0 * std.loc[variants, m].to_numpy()
    out = out.round(decimals)
    out["seeds"] = n.loc[variants].to_numpy().astype(int)
    return out


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------


def _md_escape(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def to_markdown(df, *, decimals: int | None = None) -> str:
    """A GitHub-flavoured Markdown table of ``df``: index levels as leading columns (a repeated
    leading label is shown once per group, as in the paper's Type column), MultiIndex columns
    joined with a space, numbers right-aligned (floats with ``decimals`` decimals if given)."""
    import pandas as pd

    idx_names = [n if n is not None else "" for n in df.index.names]
    show_index = not (df.index.nlevels == 1 and df.index.name is None and isinstance(df.index, pd.RangeIndex))
    col_names = [" ".join(str(p) for p in c) if isinstance(c, tuple) else str(c) for c in df.columns]
    header = (idx_names if show_index else []) + col_names

    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            if math.isnan(v):
                return MISSING
            return f"{v:.{decimals}f}" if decimals is not None else f"{v:g}"
        return str(v)

    numeric = [pd.api.types.is_numeric_dtype(df.iloc[:, j]) for j in range(df.shape[1])]
    align = (["---"] * len(idx_names) if show_index else []) + ["---:" if isnum else "---" for isnum in numeric]
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |", "| " + " | ".join(align) + " |"]
    prev: tuple = ()
    for key, row in zip(df.index, df.itertuples(index=False, name=None), strict=True):
        key = key if isinstance(key, tuple) else (key,)
        shown = []
        for i, k in enumerate(key):
            same_group = len(prev) == len(key) and prev[: i + 1] == key[: i + 1] and i < len(key) - 1
            shown.append("" if same_group else k)
        prev = key
        cells = ([fmt(k) for k in shown] if show_index else []) + [fmt(v) for v in row]
        lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def save_table(df, path_stem: str | Path, *, decimals: int | None = None, note: str = "") -> tuple[Path, Path]:
    """Write ``{path_stem}.csv`` and ``{path_stem}.md`` atomically (``note``: a legend paragraph
    under the Markdown table); return both paths."""
    from mmss_lib.utils import atomic_path

    stem = Path(path_stem)
    csv_path, md_path = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".md")
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, encoding="utf-8")
    with atomic_path(md_path) as tmp:
        tmp.write_text(to_markdown(df, decimals=decimals) + (f"\n{note}\n" if note else ""), encoding="utf-8")
    return csv_path, md_path


def save_csv(df, path: str | Path, *, index: bool = False) -> Path:
    """Write ``df`` as CSV to ``path`` atomically (without the index by default); return the path."""
    from mmss_lib.utils import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)
    return path


def plain_markdown(df, *, decimals: int = 3) -> str:
    """A plain Markdown table of ``df``'s columns (no index): floats with ``decimals`` decimals,
    everything else as ``str``; no trailing newline."""
    cols = list(df.columns)

    def fmt(v: Any) -> str:
        return f"{v:.{decimals}f}" if isinstance(v, (float, np.floating)) else str(v)

    return "\n".join(
        ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
        + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    )


def save_plain_table(df, path_stem: str | Path, markdown: str | None = None) -> tuple[Path, Path]:
    """Write ``{path_stem}.csv`` (no index) and ``{path_stem}.md`` (``markdown``, default
    :func:`plain_markdown`), both atomically; return both paths. For tables that are frames of
    records (the case study's, Table 3's statistics) rather than the paper's table layouts."""
    from mmss_lib.utils import atomic_write_text

    stem = Path(path_stem)
    csv_path, md_path = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".md")
    save_csv(df, csv_path)
    atomic_write_text(md_path, (plain_markdown(df) if markdown is None else markdown) + "\n")
    return csv_path, md_path
