"""Analyses of the SSP-Label pseudo labels of one MM-SS run: health per epoch, and whether the
pseudo labels carry the planted cues of the demo data.

- :func:`ssp_health_table`: per epoch and subtask, from the run's ``ssp/epoch*.npz`` records
  (:class:`mmss_lib.ssp.records.SSPHistory`): the share of offsets ``y_s - y_g`` above / below zero, the
  mean (sd, mean absolute) offset, the mean distances ``chi_s`` / ``chi_g`` (Eq. 18) and the mean
  change ``|y_s^(i) - y_s^(i-1)|`` (the EWMA of Eq. 11 settling). :func:`settling_epoch`: the
  first epoch at which the mean change falls below a tolerance; :func:`write_ssp_health` writes
  the table (notebook 04's pseudo-label table).
- :func:`cue_association`: the paper's question (Sec. 4.4: each interaction captures how it
  *differs* from the global view) asked of the demo, whose generator records the cues it drew
  per review (:func:`mmss_lib.data.synthetic.load_cues`). Within the same human label, do reviews whose cue
  for subtask s is present get higher pseudo labels y_s than reviews without it?

  Statistic, per subtask s with cue c (:data:`mmss_lib.data.synthetic.SUBTASK_CUES`): over the training
  reviews SSP-Label has seen whose cue is defined (image cues only exist for reviews with
  images), stratified by the human label l:
      D_s = sum_l n_l (mean(y_s | c = 1, l) - mean(y_s | c = 0, l)) / sum_l n_l
  over the strata holding both groups (n_l: the stratum's reviews). Since y_g is constant within
  a stratum, D_s is also the stratified difference of the offsets y_s - y_g. 95% interval:
  percentile bootstrap, resampling reviews with replacement within each stratum (stratum sizes
  kept; a resample whose stratum lost a group drops that stratum), ``n_boot`` draws from
  ``numpy.random.default_rng(seed)``.
- :func:`cue_association_frame` / :func:`plot_cue_association`: the per-review data and a seaborn
  figure (offset y_s - y_g by human label and cue, per subtask); :func:`write_cue_association`
  writes the table (CSV + Markdown) and the figure.

seaborn and matplotlib are imported inside the plotting functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from mmss_lib.errors import DataError

CHANGE_TOL = 0.01  # the mean change below which the pseudo labels count as settled


# ----------------------------------------------------------------------------- health


def ssp_health_table(hist) -> pd.DataFrame:
    """Per epoch and subtask over the reviews SSP-Label has seen (``hist``: an
    :class:`mmss_lib.ssp.records.SSPHistory`): ``epoch, subtask, n_seen, share_up, share_down,
    mean_offset, sd_offset, mean_abs_offset, mean_abs_change, mean_chi_s, mean_chi_g, mean_abs_chi_gap``.
    Under the ``"mean"`` reading of Eq. 18's scale the bank means of chi_s and chi_g are 1 by
    construction (under the default ``"common"`` only chi_g's); ``mean_abs_chi_gap`` = mean |chi_s - chi_g| is the part that moves the labels.
    ``mean_abs_change`` is mean |y_s(i) - y_s(i-1)| (0 in the first recorded epoch when it is
    epoch 1, NaN when the previous epoch is not recorded)."""
    rows = []
    for e_i, e in enumerate(hist.epochs):
        seen = np.asarray(hist.seen[e_i], dtype=bool)
        for s in hist.subtasks:
            off = hist.offsets[s][e_i][seen]
            if e_i and int(hist.epochs[e_i - 1]) == int(e) - 1:
                change = (
                    float(np.abs(hist.labels[s][e_i] - hist.labels[s][e_i - 1])[seen].mean()) if seen.any() else np.nan
                )
            else:
                change = 0.0 if int(e) == 1 else np.nan
            chi_s, chi_g = hist.chi[s][e_i][seen], hist.chi_g[e_i][seen]
            rows.append(
                {
                    "epoch": int(e),
                    "subtask": s,
                    "n_seen": int(seen.sum()),
                    "share_up": float((off > 0).mean()) if off.size else np.nan,
                    "share_down": float((off < 0).mean()) if off.size else np.nan,
                    "mean_offset": float(off.mean()) if off.size else np.nan,
                    "sd_offset": float(off.std()) if off.size else np.nan,
                    "mean_abs_offset": float(np.abs(off).mean()) if off.size else np.nan,
                    "mean_abs_change": change,
                    "mean_chi_s": float(np.nanmean(chi_s)) if np.isfinite(chi_s).any() else np.nan,
                    "mean_chi_g": float(np.nanmean(chi_g)) if np.isfinite(chi_g).any() else np.nan,
                    "mean_abs_chi_gap": (
                        float(np.nanmean(np.abs(chi_s - chi_g))) if np.isfinite(chi_s - chi_g).any() else np.nan
                    ),
                }
            )
    return pd.DataFrame(rows)


def settling_epoch(table: pd.DataFrame, tol: float = CHANGE_TOL) -> dict[str, int | None]:
    """Per subtask (and ``"all"``: every subtask at once) the first epoch after the first whose
    mean change (``mean_abs_change`` of :func:`ssp_health_table`) is below ``tol``; None if never."""
    out: dict[str, int | None] = {}
    t = table[table["epoch"] > 1]
    for s, g in t.groupby("subtask", sort=False):
        hit = g.loc[g["mean_abs_change"] < tol, "epoch"]
        out[str(s)] = int(hit.min()) if len(hit) else None
    per_epoch = t.groupby("epoch")["mean_abs_change"].max()
    hit = per_epoch[per_epoch < tol]
    out["all"] = int(hit.index.min()) if len(hit) else None
    return out


def write_ssp_health(hist, tables_dir, tag: str, *, tol: float = CHANGE_TOL) -> pd.DataFrame:
    """Write :func:`ssp_health_table` as ``ssp_pseudo_labels_{tag}`` (CSV + Markdown via
    :func:`mmss_lib.evaluation.tables.save_table`, the settling epoch of :func:`settling_epoch` in the note);
    return the table."""
    from mmss_lib.evaluation.tables import save_table

    table = ssp_health_table(hist)
    settle = settling_epoch(table, tol)
    tables_dir = Path(tables_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    note = (
        "Per epoch and subtask over the training reviews SSP-Label has seen: shares of offsets y_s - y_g "
        "above / below zero, offsets, mean change |y_s(i) - y_s(i-1)| (EWMA settling), mean distances "
        "chi_s / chi_g (Eq. 18; both 1 by construction under scale='mean', chi_g's only under the "
        f"default scale='common') and mean |chi_s - chi_g|, the gap that moves the labels. First epoch with mean change < {tol:g}: "
        + ", ".join(f"{k} {'never' if v is None else v}" for k, v in settle.items())
        + "."
    )
    save_table(table.set_index(["epoch", "subtask"]), tables_dir / f"ssp_pseudo_labels_{tag}", decimals=3, note=note)
    return table


# ----------------------------------------------------------------------------- cue association


def cue_association_frame(
    hist, cues: pd.DataFrame, subtask_cues: Mapping[str, str], *, epoch_index: int = -1
) -> pd.DataFrame:
    """Long frame, one row per (seen training review, subtask) whose cue is defined:
    ``review_id, subtask, cue, cue_value (0/1), y_g, y_s, offset``, from the record
    ``hist.epochs[epoch_index]`` (default: the last epoch) and the cues (``review_id`` + cue
    columns, e.g. :func:`mmss_lib.data.synthetic.load_cues` of the train split)."""
    if "review_id" not in cues.columns:
        raise DataError(f"cues: column 'review_id' missing; have {list(cues.columns)}")
    cue_ix = cues.assign(review_id=cues["review_id"].astype(str)).drop_duplicates("review_id").set_index("review_id")
    missing_reviews = np.setdiff1d(hist.review_id, cue_ix.index.to_numpy(dtype=str))
    if missing_reviews.size:
        raise DataError(
            f"cues: {missing_reviews.size} training review(s) of the run have no cues "
            f"(e.g. {missing_reviews[0]!r}); cues and run must come from the same data"
        )
    seen = np.asarray(hist.seen[epoch_index], dtype=bool)
    parts = []
    for s, cue in subtask_cues.items():
        if s not in hist.labels:
            continue
        if cue not in cue_ix.columns:
            raise DataError(f"cues: column {cue!r} (the cue of subtask {s}) missing; have {list(cue_ix.columns)}")
        val = cue_ix.loc[hist.review_id, cue].to_numpy(dtype=float)
        ok = seen & np.isfinite(val)
        if not np.isin(val[ok], (0.0, 1.0)).all():
            raise DataError(f"cues: column {cue!r} must be 0/1 (or NaN), got values {sorted(set(val[ok]))[:5]}")
        y_s = hist.labels[s][epoch_index][ok]
        parts.append(
            pd.DataFrame(
                {
                    "review_id": hist.review_id[ok],
                    "subtask": s,
                    "cue": cue,
                    "cue_value": val[ok].astype(int),
                    "y_g": hist.y_g[ok],
                    "y_s": y_s,
                    "offset": y_s - hist.y_g[ok],
                }
            )
        )
    if not parts:
        raise DataError(
            f"cue association: none of the subtasks {list(subtask_cues)} is in the run (its subtasks: {hist.subtasks})"
        )
    return pd.concat(parts, ignore_index=True)


def stratified_difference(y: np.ndarray, cue: np.ndarray, strata: np.ndarray) -> tuple[float, int, int]:
    """D = sum_l n_l (mean(y | cue=1, l) - mean(y | cue=0, l)) / sum_l n_l over the strata l that
    hold both groups; returns (D, number of such strata, reviews in them). NaN if none."""
    y, cue, strata = np.asarray(y, float), np.asarray(cue, int), np.asarray(strata)
    num, den, k = 0.0, 0, 0
    for lab in np.unique(strata):
        m = strata == lab
        a, b = y[m & (cue == 1)], y[m & (cue == 0)]
        if a.size and b.size:
            n_l = int(m.sum())
            num += n_l * (a.mean() - b.mean())
            den += n_l
            k += 1
    return (num / den if den else float("nan")), k, den


def _bootstrap_stratified(y, cue, strata, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` bootstrap values of :func:`stratified_difference`, resampling within strata."""
    num = np.zeros(n_boot)
    den = np.zeros(n_boot)
    for lab in np.unique(strata):
        idx = np.flatnonzero(strata == lab)
        n_l = idx.size
        draw = idx[rng.integers(0, n_l, size=(n_boot, n_l))]  # (B, n_l)
        yy, cc = y[draw], cue[draw]
        n1 = cc.sum(1)
        n0 = n_l - n1
        ok = (n1 > 0) & (n0 > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            d = (yy * cc).sum(1) / n1 - (yy * (1 - cc)).sum(1) / n0
        num += np.where(ok, n_l * np.nan_to_num(d), 0.0)
        den += np.where(ok, n_l, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def cue_association(frame: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Per subtask of a :func:`cue_association_frame`: the stratified difference D_s of the pseudo
    labels between reviews with and without the subtask's cue within the same human label (module
    docstring), its percentile bootstrap interval, and the group sizes. Columns: ``subtask, cue,
    n_reviews, n_cue, n_no_cue, n_strata, difference, ci_low, ci_high, mean_offset_cue,
    mean_offset_no_cue``."""
    rng = np.random.default_rng(seed)
    rows = []
    for s, g in frame.groupby("subtask", sort=False):
        y = g["y_s"].to_numpy(float)
        cue = g["cue_value"].to_numpy(int)
        strata = g["y_g"].to_numpy(float)
        d, k, n_used = stratified_difference(y, cue, strata)
        lo = hi = float("nan")
        if k:
            boots = _bootstrap_stratified(y, cue, strata, n_boot, rng)
            boots = boots[np.isfinite(boots)]
            if boots.size:
                lo, hi = (float(v) for v in np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]))
        off = g["offset"].to_numpy(float)
        rows.append(
            {
                "subtask": s,
                "cue": str(g["cue"].iloc[0]),
                "n_reviews": int(len(g)),
                "n_cue": int((cue == 1).sum()),
                "n_no_cue": int((cue == 0).sum()),
                "n_strata": k,
                "difference": d,
                "ci_low": lo,
                "ci_high": hi,
                "mean_offset_cue": float(off[cue == 1].mean()) if (cue == 1).any() else np.nan,
                "mean_offset_no_cue": float(off[cue == 0].mean()) if (cue == 0).any() else np.nan,
            }
        )
    return pd.DataFrame(rows)


def plot_cue_association(frame: pd.DataFrame, assoc: pd.DataFrame | None = None, *, title: str | None = None):
    """seaborn figure: per subtask, the offset y_s - y_g by human label (x) and cue (hue; points:
    means with 95% intervals), the panel title giving the stratified difference and its interval
    from ``assoc`` (:func:`cue_association`)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    subtasks = list(dict.fromkeys(frame["subtask"]))
    if not subtasks:
        raise DataError("plot_cue_association: empty frame")
    ncols = min(3, len(subtasks))
    nrows = int(np.ceil(len(subtasks) / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.3 * ncols, 3.4 * nrows), squeeze=False, layout="constrained", sharey=True
    )
    by_s = assoc.set_index("subtask") if assoc is not None else None
    # strict=False: the grid has up to ncols - 1 cells more than subtasks (hidden below)
    for ax, s in zip(axes.flat, subtasks, strict=False):
        g = frame[frame["subtask"] == s].assign(
            label=lambda d: d["y_g"].map("{:g}".format),
            cue_present=lambda d: d["cue_value"].map({1: "present", 0: "absent"}),
        )
        order = [f"{v:g}" for v in sorted(g["y_g"].unique())]
        sns.pointplot(
            data=g,
            x="label",
            y="offset",
            hue="cue_present",
            hue_order=["absent", "present"],
            order=order,
            dodge=0.3,
            errorbar=("ci", 95),
            seed=0,
            linestyle="none",
            markers=["o", "D"],
            palette=["#7f7f7f", "#d62728"],
            ax=ax,
        )
        ax.axhline(0.0, color="grey", lw=0.8)
        cue = g["cue"].iloc[0]
        head = f"{s} (cue: {cue})"
        if by_s is not None and s in by_s.index:
            r = by_s.loc[s]
            head += f"\nD = {r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
        ax.set_title(head, fontsize=9)
        ax.set_xlabel("human label $y_g$")
        ax.set_ylabel("offset $y_s - y_g$")
        ax.grid(axis="y", alpha=0.3)
        if ax.get_legend() is not None:
            ax.legend(title="cue", fontsize=7, title_fontsize=7)
    for ax in list(axes.flat)[len(subtasks) :]:
        ax.set_visible(False)
    fig.suptitle(title or "Pseudo labels and the planted cues, within each human label (last epoch)")
    return fig


def write_cue_association(
    hist,
    cues: pd.DataFrame,
    subtask_cues: Mapping[str, str],
    *,
    tables_dir,
    figures_dir,
    tag: str,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Compute :func:`cue_association` of the last epoch and write ``ssp_cue_association_{tag}``
    (CSV + Markdown, :func:`mmss_lib.evaluation.tables.save_table`) and ``fig_ssp_cue_association_{tag}.png``;
    return the table."""
    from mmss_lib.evaluation.plots import save_figure
    from mmss_lib.evaluation.tables import save_table

    frame = cue_association_frame(hist, cues, subtask_cues)
    assoc = cue_association(frame, n_boot=n_boot, seed=seed)
    tables_dir, figures_dir = Path(tables_dir), Path(figures_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    save_table(
        assoc.set_index("subtask"),
        tables_dir / f"ssp_cue_association_{tag}",
        decimals=3,
        note=(
            f"Stratified difference of the pseudo labels y_s (epoch {int(hist.epochs[-1])}) between "
            "training reviews with and without the subtask's planted cue, within the same human label "
            f"(weights: stratum sizes); 95% percentile bootstrap interval ({n_boot} resamples within "
            f"strata, seed {seed})."
        ),
    )
    fig = plot_cue_association(frame, assoc)
    save_figure(fig, figures_dir / f"fig_ssp_cue_association_{tag}.png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return assoc
