"""Figures of the notebooks: pseudo-label trajectories, offsets, anchor distances, ablation
differences, learning curves. Every function takes plain arrays / DataFrames, returns a
matplotlib ``Figure`` and draws nothing global; :func:`save_figure` writes it atomically as PNG.

The pseudo-label figures show SSP-Label (paper Sec. 4.4 and Appendix A.1) on real numbers:

- trajectories: ``y_s`` per epoch for each subtask ``s``, the EWMA of Eq. 11-12 settling
  (``y_s = y_g`` in epoch 1, then ``beta = 2 / (i + 1)``);
- offsets: the distribution of ``delta_gs = y_s - y_g`` (Eq. 21) per subtask;
- anchor distances: Figure 3's idea, the Mahalanobis distance of the subtask representation to
  its anchor (``chi_s``, Eq. 18) against the global one's (``chi_g``), coloured by the offset
  they produce (Eq. 19-21: ``y_s / y_g ~ chi_s / chi_g``).

matplotlib is imported inside the functions (``import mmss_lib.evaluation.plots`` stays light).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmss_lib.errors import DataError
from mmss_lib.metrics.ranking import TESTED_METRICS as METRICS
from mmss_lib.utils import atomic_path

LABEL_RANGE = (0.0, 4.0)  # MRHP helpfulness labels 0..4


def _plt():
    import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves

    return plt


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 130) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (a reader never sees half a file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def _as_subtask_dict(values: Any, subtasks: Sequence[str] | None, what: str) -> dict[str, np.ndarray]:
    """A mapping subtask -> array, from a mapping or an array whose last axis is the subtask."""
    if isinstance(values, Mapping):
        out = {s: np.asarray(v, dtype=float) for s, v in values.items()}
        if subtasks is not None:
            missing = [s for s in subtasks if s not in out]
            if missing:
                raise DataError(f"{what}: no values for subtask(s) {missing}; have {list(out)}")
            out = {s: out[s] for s in subtasks}
        return out
    arr = np.asarray(values, dtype=float)
    if subtasks is None or arr.shape[-1] != len(subtasks):
        raise DataError(
            f"{what}: an array needs its last axis = the {len(subtasks or [])} subtasks "
            f"{list(subtasks or [])}, got shape {arr.shape}"
        )
    return {s: arr[..., j] for j, s in enumerate(subtasks)}


def _grid(n: int, *, ncols: int = 3, size=(4.2, 3.2)):
    plt = _plt()
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


# ---------------------------------------------------------------------------------------------
# Pseudo labels
# ---------------------------------------------------------------------------------------------


def plot_pseudo_label_trajectories(
    labels: Mapping[str, np.ndarray] | np.ndarray,
    y_g: np.ndarray,
    *,
    epochs: Sequence[int] | None = None,
    subtasks: Sequence[str] | None = None,
    n_show: int = 40,
    highlight: int | None = None,
    seed: int = 0,
    title: str | None = None,
):
    """Pseudo labels over epochs, one panel per subtask.

    ``labels[s]``: (E, N) pseudo label of N training reviews after each of E epochs (or an array
    (E, N, S)); ``y_g``: (N,) human labels. Thin lines: ``n_show`` reviews drawn at random,
    coloured by their human label; thick lines: the mean per human label; ``highlight``: the
    index (0..N-1) of one review drawn in black (the case-study review).
    """
    plt = _plt()
    labels = _as_subtask_dict(labels, subtasks, "pseudo labels")
    y_g = np.asarray(y_g, dtype=float)
    E, N = next(iter(labels.values())).shape
    for s, v in labels.items():
        if v.shape != (E, N):
            raise DataError(f"pseudo labels of subtask {s}: shape {v.shape}, expected ({E}, {N})")
    if y_g.shape != (N,):
        raise DataError(f"human labels: shape {y_g.shape}, expected ({N},) to match the pseudo labels")
    x = np.asarray(epochs if epochs is not None else np.arange(1, E + 1))
    rng = np.random.default_rng(seed)
    shown = rng.choice(N, size=min(n_show, N), replace=False) if N else np.array([], int)
    cmap = plt.get_cmap("viridis")
    norm = plt.Normalize(*LABEL_RANGE)
    fig, axes = _grid(len(labels))
    for ax, (s, v) in zip(axes, labels.items(), strict=True):
        for i in shown:
            ax.plot(x, v[:, i], color=cmap(norm(y_g[i])), lw=0.6, alpha=0.45)
        for lab in np.unique(y_g):
            sel = y_g == lab
            ax.plot(
                x,
                v[:, sel].mean(axis=1),
                color=cmap(norm(lab)),
                lw=2.4,
                label=f"mean, $y_g$={lab:g} (n={int(sel.sum())})",
            )
        if highlight is not None:
            ax.plot(
                x,
                v[:, highlight],
                color="black",
                lw=2.0,
                ls="--",
                marker="o",
                ms=3,
                label=f"case review ($y_g$={y_g[highlight]:g})",
            )
        ax.set_title(f"$y_{{{s}}}$")
        ax.set_xlabel("epoch")
        ax.set_ylabel("pseudo label")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title or "SSP-Label pseudo labels per epoch (EWMA, Eq. 11-12)")
    return fig


def plot_offset_distributions(
    offsets: Mapping[str, np.ndarray] | np.ndarray,
    *,
    subtasks: Sequence[str] | None = None,
    y_g: np.ndarray | None = None,
    title: str | None = None,
):
    """Distribution of the offsets ``delta_gs = y_s - y_g`` (Eq. 21) per subtask (seaborn).

    ``offsets[s]``: (N,) (or an (N, S) array). Left: one violin (quartiles inside) per subtask with
    its mean (diamond) and the shares of offsets above / below zero in the tick labels; right
    (when ``y_g`` is given): the mean offset per human label, per subtask (bars with 95% intervals).
    """
    import pandas as pd
    import seaborn as sns

    plt = _plt()
    offsets = _as_subtask_dict(offsets, subtasks, "offsets")
    names = list(offsets)
    data = [np.asarray(offsets[s], dtype=float).ravel() for s in names]
    ncols = 2 if y_g is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.0 * ncols, 3.8), squeeze=False)
    ax = axes[0, 0]
    long = pd.DataFrame(
        {
            "subtask": np.repeat(np.arange(len(names)), [d.size for d in data]),
            "offset": np.concatenate(data) if data else np.zeros(0),
        }
    )
    if len(long):
        sns.violinplot(
            data=long,
            x="subtask",
            y="offset",
            order=list(range(len(names))),
            inner="quart",
            cut=0,
            density_norm="width",
            color="#9ecae1",
            linewidth=0.8,
            ax=ax,
        )
    for i, d in enumerate(data):
        if d.size:
            ax.plot(i, d.mean(), "D", color="crimson", ms=5)
    ax.axhline(0.0, color="grey", lw=0.8)
    ticks = [
        f"$\\delta_{{g,{s}}}$" + (f"\n+{(d > 0).mean():.0%} / -{(d < 0).mean():.0%}" if d.size else "")
        for s, d in zip(names, data, strict=True)
    ]
    ax.set_xticks(np.arange(len(names)), ticks)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_xlabel("")
    ax.set_ylabel("offset $y_s - y_g$")
    ax.set_title("offsets per subtask (diamond = mean; share above / below 0)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    if y_g is not None:
        y_g = np.asarray(y_g, dtype=float)
        ax2 = axes[0, 1]
        labs = np.unique(y_g)
        for s, d in zip(names, data, strict=True):
            if d.shape != y_g.shape:
                raise DataError(
                    f"offsets of subtask {s}: shape {d.shape}, expected {y_g.shape} "
                    "(one per review, like the human labels)"
                )
        per_label = pd.DataFrame(
            {"label": np.tile(y_g, len(names)), "offset": np.concatenate(data), "subtask": np.repeat(names, y_g.size)}
        )
        sns.barplot(
            data=per_label,
            x="label",
            y="offset",
            hue="subtask",
            hue_order=names,
            order=list(labs),
            errorbar=("ci", 95),
            seed=0,
            err_kws={"linewidth": 0.8},
            ax=ax2,
        )
        ax2.set_xticks(np.arange(len(labs)), [f"{lab:g}" for lab in labs])
        ax2.set_xlabel("human label $y_g$")
        ax2.set_ylabel("mean offset")
        ax2.axhline(0.0, color="grey", lw=0.8)
        ax2.legend(fontsize=7)
        ax2.set_title("mean offset per human label")
    fig.suptitle(title or "SSP-Label offsets $\\delta_{gs}$ (Eq. 21)")
    fig.tight_layout()
    return fig


def plot_anchor_distances(
    chi_g: Mapping[str, np.ndarray] | np.ndarray,
    chi_s: Mapping[str, np.ndarray] | np.ndarray,
    offsets: Mapping[str, np.ndarray] | np.ndarray,
    *,
    subtasks: Sequence[str] | None = None,
    highlight: int | None = None,
    title: str | None = None,
):
    """Figure 3 on real numbers: per subtask, each review's distance of the subtask representation
    to its anchor ``chi_s`` (Eq. 18) against the global representation's ``chi_g``, coloured by
    the offset ``delta_gs`` SSP-Label derives from them (Eq. 21). Points above the diagonal have
    the subtask representation farther from the anchor than the global one.

    ``chi_g``: (N,) shared by all subtasks, or per subtask; ``chi_s``, ``offsets``: per subtask.
    """
    plt = _plt()
    chi_s = _as_subtask_dict(chi_s, subtasks, "distances chi_s")
    names = list(chi_s)
    offsets = _as_subtask_dict(offsets, names, "offsets")
    if isinstance(chi_g, Mapping):
        chi_g = _as_subtask_dict(chi_g, names, "distances chi_g")
    else:
        g = np.asarray(chi_g, dtype=float)
        chi_g = {s: g for s in names}
    lim = max(float(np.nanmax(np.abs(o))) if np.size(o) else 0.0 for o in offsets.values()) or 1.0
    norm = plt.Normalize(-lim, lim)
    fig, axes = _grid(len(names))
    sc = None
    for ax, s in zip(axes, names, strict=True):
        xg, xs, off = (np.asarray(a, dtype=float).ravel() for a in (chi_g[s], chi_s[s], offsets[s]))
        if not (xg.shape == xs.shape == off.shape):
            raise DataError(
                f"subtask {s}: chi_g {xg.shape}, chi_s {xs.shape} and offsets {off.shape} "
                "must have one value per review each"
            )
        sc = ax.scatter(xg, xs, c=off, cmap="coolwarm", norm=norm, s=9, alpha=0.8, lw=0)
        if xg.size:
            hi = float(np.nanmax(np.concatenate([xg, xs])))
            ax.plot([0, hi], [0, hi], color="grey", lw=0.8, ls="--")
        if highlight is not None:
            ax.scatter(
                [xg[highlight]],
                [xs[highlight]],
                s=80,
                facecolors="none",
                edgecolors="black",
                lw=1.5,
                label="case review",
            )
            ax.legend(fontsize=7)
        ax.set_title(f"{s}")
        ax.set_xlabel("$\\chi_g$ (global rep. to anchor)")
        ax.set_ylabel(f"$\\chi_{{{s}}}$")
        ax.grid(alpha=0.3)
    if sc is not None:
        fig.colorbar(sc, ax=axes, shrink=0.8, label="offset $\\delta_{gs}$")
    fig.suptitle(title or "Distances to the anchors (Eq. 18) and the offsets they give (Eq. 21)")
    return fig


# ---------------------------------------------------------------------------------------------
# Ablation
# ---------------------------------------------------------------------------------------------


def _variant_column(df, full: str):
    v = df["variant"] if "variant" in df.columns else None
    if v is None:
        return np.array([full] * len(df), dtype=object)
    return v.where(v.notna() & (v.astype(str) != ""), full).astype(str).to_numpy()


def ablation_differences(
    results,
    *,
    full: str = "full",
    metrics: Iterable[str] = METRICS,
    system: str | None = "mmss",
    by: Sequence[str] = ("dataset", "category"),
):
    """Paired per-seed differences of each ablation variant to the full model.

    ``results``: tidy rows (``run_experiment``'s DataFrame) with ``variant``, ``seed`` and the
    metric columns (an empty / missing variant counts as ``full``); rows of other systems are
    dropped when ``system`` is given. Returns a tidy DataFrame with the ``by`` columns present,
    ``variant``, ``seed``, ``metric``, ``value``, ``full_value``, ``diff`` (= value - full value
    of the same seed, dataset and category). A variant seed without the full model's same seed
    is an error: the comparison must be paired.
    """
    import pandas as pd

    df = results.copy()
    if system is not None and "system" in df.columns:
        df = df[df["system"] == system]
    metrics = [m for m in metrics if m in df.columns]
    if not metrics:
        raise DataError(
            f"ablation results: none of the metric columns {list(METRICS)} present; columns: {list(results.columns)}"
        )
    if "seed" not in df.columns:
        raise DataError("ablation results: column 'seed' missing (needed to pair with the full model)")
    df["variant"] = _variant_column(df, full)
    keys = [c for c in by if c in df.columns]
    long = df.melt(id_vars=keys + ["variant", "seed"], value_vars=metrics, var_name="metric", value_name="value")
    ref = long[long["variant"] == full].drop(columns="variant").rename(columns={"value": "full_value"})
    if ref.duplicated(keys + ["seed", "metric"]).any():
        raise DataError("ablation results: the full model has several rows for one seed")
    other = long[long["variant"] != full]
    out = other.merge(ref, on=keys + ["seed", "metric"], how="left")
    unpaired = out[out["full_value"].isna()]
    if len(unpaired):
        r = unpaired.iloc[0]
        raise DataError(
            f"ablation results: variant {r['variant']!r} seed {r['seed']} has no run of the "
            f"full model ({full!r}) with the same seed to compare with"
        )
    out["diff"] = out["value"] - out["full_value"]
    return pd.DataFrame(out[keys + ["variant", "seed", "metric", "value", "full_value", "diff"]]).reset_index(drop=True)


def summarize_differences(diffs, *, by: Sequence[str] = ("dataset", "category")):
    """Mean, standard deviation (ddof=1; 0 for one seed) and count of ``diff`` per variant/metric."""
    keys = [c for c in by if c in diffs.columns] + ["variant", "metric"]
    g = diffs.groupby(keys, sort=False)["diff"]
    out = g.agg(mean="mean", std=lambda x: float(np.std(x, ddof=1)) if len(x) > 1 else 0.0, n="count").reset_index()
    return out


def plot_ablation_differences(
    diffs,
    *,
    labels: Mapping[str, str] | None = None,
    metrics: Sequence[str] = METRICS,
    scale: float | None = None,
    title: str | None = None,
):
    """Bars of the mean difference to the full model per variant and metric (one panel per
    dataset/category present), error bars = standard deviation over seeds, dots = single seeds
    (seaborn ``barplot`` + ``stripplot``).

    ``diffs``: :func:`ablation_differences`' output. ``scale``: multiply the differences (default:
    100 when the metric values lie in [0, 1], i.e. the differences are shown in points as in
    the paper's tables). ``labels``: variant -> display name (e.g. ``model.ABLATION_LABELS``).
    """
    import seaborn as sns

    plt = _plt()
    metrics = [m for m in metrics if m in set(diffs["metric"])]
    if scale is None:
        scale = 100.0 if float(np.nanmax(np.abs(diffs["full_value"]))) <= 1.0 else 1.0
    keys = [c for c in ("dataset", "category") if c in diffs.columns]
    groups = list(diffs.groupby(keys, sort=False)) if keys else [((), diffs)]
    variants = list(dict.fromkeys(diffs["variant"]))
    fig, axes = plt.subplots(
        len(groups), 1, figsize=(max(6.0, 1.3 * len(variants) * len(metrics) / 2), 3.6 * len(groups)), squeeze=False
    )
    palette = dict(zip(metrics, sns.color_palette("tab10", len(metrics)), strict=True))
    for ax, (gkey, gdf) in zip(axes[:, 0], groups, strict=True):
        d = gdf[gdf["metric"].isin(metrics)].assign(points=lambda x: x["diff"] * scale)
        common = dict(data=d, x="variant", y="points", hue="metric", order=variants, hue_order=metrics, ax=ax)
        # bars: mean over seeds, error bars: sd over seeds (none with a single seed)
        sns.barplot(**common, errorbar="sd", capsize=0.15, err_kws={"linewidth": 1.0}, palette=palette, alpha=0.85)
        # dots: the single seeds, over their bar
        sns.stripplot(
            **common, dodge=True, jitter=False, palette=["black"] * len(metrics), size=3, legend=False, zorder=3
        )
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xticks(
            np.arange(len(variants)), [(labels or {}).get(v, v) for v in variants], rotation=25, ha="right", fontsize=8
        )
        ax.set_xlabel("")
        unit = "points" if scale == 100.0 else "metric units"
        ax.set_ylabel(f"difference to full model ({unit})")
        name = " / ".join(str(k) for k in (gkey if isinstance(gkey, tuple) else (gkey,)))
        ax.set_title(name or "ablation")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "Ablation (Table 4): variant minus full MM-SS, mean ± sd over seeds")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Learning curves
# ---------------------------------------------------------------------------------------------


def plot_learning_curves(
    histories: Mapping[str, Sequence[Mapping[str, Any]]] | Sequence[Mapping[str, Any]],
    *,
    keys: Sequence[str] | None = None,
    title: str | None = None,
):
    """One panel per quantity (loss parts, dev metrics) over epochs; one line per run.

    ``histories``: a run's ``history.json`` list (one dict per epoch, numeric values and an
    optional ``epoch``), or a mapping run label -> such a list. ``keys``: which quantities
    (default: every numeric key but ``epoch``, in first-seen order). Nested dicts are flattened
    with ``/`` (``{"dev": {"MAP": .5}}`` -> ``dev/MAP``).
    """
    if not isinstance(histories, Mapping):
        histories = {"run": histories}

    def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
        out: dict[str, float] = {}
        for k, v in d.items():
            if isinstance(v, Mapping):
                out.update(flat(v, f"{prefix}{k}/"))
            elif isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
                out[f"{prefix}{k}"] = float(v)
        return out

    rows = {run: [flat(e) for e in h] for run, h in histories.items()}
    if keys is None:
        keys = list(dict.fromkeys(k for rs in rows.values() for r in rs for k in r if k != "epoch"))
    if not keys:
        raise DataError("learning curves: the histories hold no numeric quantities")
    fig, axes = _grid(len(keys), ncols=min(3, len(keys)), size=(4.0, 2.9))
    for ax, k in zip(axes, keys, strict=True):
        for run, rs in rows.items():
            pts = [(r.get("epoch", i + 1), r[k]) for i, r in enumerate(rs) if k in r]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, marker="o", ms=2.5, lw=1.2, label=run)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if len(rows) > 1:
        axes[0].legend(fontsize=7)
    fig.suptitle(title or "learning curves")
    return fig


def plot_case_study(
    *,
    product_name: str,
    product_text: str,
    review_text: str,
    product_images: Sequence[str] = (),
    review_images: Sequence[str] = (),
    values: Mapping[str, float | None],
    title: str | None = None,
    max_images: int = 3,
    wrap: int = 70,
):
    """Figure 4's layout: product and review text beside their images, and a bar chart of the
    values (``H`` human label, ``M`` model, ``O`` model without SSP labels, one per subtask;
    ``None`` = not available, drawn as an empty slot and labelled ``n/a``).

    Images that cannot be read are skipped (a case study must not fail on one broken file).
    """
    import textwrap

    plt = _plt()
    imgs = [("product", p) for p in list(product_images)[:max_images]] + [
        ("review", p) for p in list(review_images)[:max_images]
    ]
    ncols = max(len(imgs), 1)
    fig = plt.figure(figsize=(max(10.0, 2.2 * ncols), 7.0))
    gs = fig.add_gridspec(3, ncols, height_ratios=[1.0, 0.7, 1.2])
    for j, (kind, p) in enumerate(imgs):
        ax = fig.add_subplot(gs[0, j])
        try:
            from PIL import Image

            with Image.open(p) as im:
                ax.imshow(np.asarray(im.convert("RGB")))
        except Exception as exc:  # noqa: BLE001 - show the problem in the panel instead
            ax.text(0.5, 0.5, f"unreadable:\n{type(exc).__name__}", ha="center", va="center", fontsize=7)
        ax.set_title(
            f"{kind} image {j + 1 if kind == 'product' else j + 1 - min(len(product_images), max_images)}", fontsize=8
        )
        ax.axis("off")
    if not imgs:
        ax = fig.add_subplot(gs[0, :])
        ax.text(0.5, 0.5, "(no images)", ha="center", va="center")
        ax.axis("off")
    ax = fig.add_subplot(gs[1, :])
    ax.axis("off")
    body = (
        f"Product name: {product_name}\n"
        + textwrap.fill(f"Product description: {product_text}", wrap * 2, max_lines=4, placeholder=" ...")
        + "\n\n"
        + textwrap.fill(f"Review: {review_text}", wrap * 2, max_lines=6, placeholder=" ...")
    )
    ax.text(0.0, 1.0, body, va="top", ha="left", fontsize=8.5, family="monospace", wrap=True)
    ax = fig.add_subplot(gs[2, :])
    names = list(values)
    heights = [np.nan if values[k] is None else float(values[k]) for k in names]
    colors = ["#444444" if k == "H" else "#1f77b4" if k == "M" else "#ff7f0e" if k == "O" else "#2ca02c" for k in names]
    bars = ax.bar(range(len(names)), np.nan_to_num(heights), color=colors)
    for b, h in zip(bars, heights, strict=True):
        ax.annotate(
            "n/a" if np.isnan(h) else f"{h:.3f}",
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom" if b.get_height() >= 0 else "top",
            fontsize=8,
        )
    ax.set_xticks(range(len(names)), names)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel("label / score")
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title or "Case study")
    fig.tight_layout()
    return fig
