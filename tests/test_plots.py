"""Tests of mmss_lib.evaluation.plots on synthetic arrays: known difference values, drawn data, files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmss_lib.errors import DataError
from mmss_lib.evaluation import plots
from mmss_lib.ssp import records as ssp_records

plt = pytest.importorskip("matplotlib.pyplot")
SUB = ("ptrt", "pvrv", "ptrv", "pvrt", "rtrv")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def ewma_labels(E=6, N=20, seed=0):
    """Pseudo labels built like Eq. 12: y_s = y_g at epoch 1, then beta = 2/(i+1) smoothing."""
    rng = np.random.default_rng(seed)
    y_g = rng.integers(0, 5, N).astype(float)
    labels = {}
    for s in SUB:
        y = np.empty((E, N))
        y[0] = y_g
        for i in range(2, E + 1):
            beta = 2.0 / (i + 1)
            y[i - 1] = beta * np.clip(y_g + rng.normal(0, 1, N), 0, 4) + (1 - beta) * y[i - 2]
        labels[s] = y
    return labels, y_g


def test_ablation_differences_known_values():
    rows = []
    for seed, base in [(0, 0.60), (1, 0.62)]:
        rows.append(
            dict(
                dataset="demo",
                category="home",
                system="mmss",
                variant="full",
                seed=seed,
                MAP=base,
                **{"NDCG@3": base - 0.1, "NDCG@5": base - 0.05},
            )
        )
        rows.append(
            dict(
                dataset="demo",
                category="home",
                system="mmss",
                variant="wo_d",
                seed=seed,
                MAP=base - 0.02 * (seed + 1),
                **{"NDCG@3": base - 0.1, "NDCG@5": base},
            )
        )
    rows.append(
        dict(
            dataset="demo", category="home", system="mcr", variant="", seed=0, MAP=0.1, **{"NDCG@3": 0.1, "NDCG@5": 0.1}
        )
    )  # other system: dropped
    d = plots.ablation_differences(pd.DataFrame(rows))
    assert set(d["variant"]) == {"wo_d"}
    m = d[d["metric"] == "MAP"].sort_values("seed")
    np.testing.assert_allclose(m["diff"], [-0.02, -0.04])
    np.testing.assert_allclose(d[d["metric"] == "NDCG@3"]["diff"], [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(d[d["metric"] == "NDCG@5"]["diff"], [0.05, 0.05])
    s = plots.summarize_differences(d)
    row = s[s["metric"] == "MAP"].iloc[0]
    assert row["mean"] == pytest.approx(-0.03) and row["n"] == 2
    assert row["std"] == pytest.approx(np.std([-0.02, -0.04], ddof=1))


def test_ablation_differences_missing_variant_is_full_and_unpaired_is_error():
    df = pd.DataFrame({"variant": [None, "wo_b", "wo_b"], "seed": [0, 0, 1], "MAP": [0.5, 0.4, 0.3]})
    d = plots.ablation_differences(df[df["seed"] == 0])
    assert list(d["variant"]) == ["wo_b"]
    np.testing.assert_allclose(d["diff"], [-0.1])
    with pytest.raises(DataError, match=r"variant 'wo_b' seed 1 has no run of the full model"):
        plots.ablation_differences(df)  # seed 1 has no full run


def test_plot_ablation_differences_draws_means_in_points(tmp_path):
    df = pd.DataFrame({"variant": ["full", "wo_b", "full", "wo_b"], "seed": [0, 0, 1, 1], "MAP": [0.5, 0.4, 0.6, 0.4]})
    d = plots.ablation_differences(df.assign(**{"NDCG@3": df["MAP"], "NDCG@5": df["MAP"]}))
    fig = plots.plot_ablation_differences(d, labels={"wo_b": "-w/o module(b)"})
    ax = fig.axes[0]
    bars = [b for c in ax.containers for b in c]
    heights = sorted(b.get_height() for b in bars)
    np.testing.assert_allclose(heights, [-15.0] * 3)  # mean of -10 and -20 points, 3 metrics
    assert [t.get_text() for t in ax.get_xticklabels()] == ["-w/o module(b)"]
    # one dot per seed and metric, at the seed's difference, over its bar
    dots = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
    np.testing.assert_allclose(sorted(dots[:, 1]), [-20.0] * 3 + [-10.0] * 3)
    centres = sorted(b.get_x() + b.get_width() / 2 for b in bars)
    np.testing.assert_allclose(sorted(set(np.round(dots[:, 0], 9))), centres)
    # error bars: mean +- sd over the seeds (sd of -10, -20 = 7.07 points)
    spans = [
        [np.nanmin(ln.get_ydata()), np.nanmax(ln.get_ydata())]
        for ln in ax.get_lines()
        if np.isnan(np.asarray(ln.get_ydata(), float)).any()
    ]  # error bar + caps, NaN-separated
    np.testing.assert_allclose(spans, [[-15.0 - 50**0.5, -15.0 + 50**0.5]] * 3)
    out = plots.save_figure(fig, tmp_path / "f" / "ablation.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.parent.glob(".*.tmp"))


def test_trajectories_plot_means_per_label_and_highlight():
    labels, y_g = ewma_labels()
    fig = plots.plot_pseudo_label_trajectories(labels, y_g, n_show=5, highlight=3)
    axes = [a for a in fig.axes if a.get_visible()]
    assert len(axes) == 5
    ax = axes[0]
    lines = ax.get_lines()
    n_labels = len(np.unique(y_g))
    assert len(lines) == 5 + n_labels + 1
    mean_line = lines[5]  # first mean line: the lowest label
    lab = np.unique(y_g)[0]
    np.testing.assert_allclose(mean_line.get_ydata(), labels["ptrt"][:, y_g == lab].mean(axis=1))
    np.testing.assert_allclose(lines[-1].get_ydata(), labels["ptrt"][:, 3])
    # Epoch 1 of every trajectory equals the human label (Eq. 12).
    np.testing.assert_allclose(lines[-1].get_ydata()[0], y_g[3])


def test_trajectories_accept_stacked_array_and_check_shapes():
    labels, y_g = ewma_labels(E=3, N=7)
    arr = np.stack([labels[s] for s in SUB], axis=-1)  # (E, N, S)
    fig = plots.plot_pseudo_label_trajectories(arr, y_g, subtasks=SUB)
    assert len([a for a in fig.axes if a.get_visible()]) == 5
    with pytest.raises(DataError, match=r"human labels: shape \(6,\), expected \(7,\)"):
        plots.plot_pseudo_label_trajectories(labels, y_g[:6])
    with pytest.raises(DataError, match="last axis"):
        plots.plot_pseudo_label_trajectories(arr[..., :3], y_g, subtasks=SUB)


def test_offset_distributions_mean_markers_and_per_label_bars():
    rng = np.random.default_rng(1)
    y_g = rng.integers(0, 5, 50).astype(float)
    offsets = {s: rng.normal(k * 0.1, 1.0, 50) for k, s in enumerate(SUB)}
    fig = plots.plot_offset_distributions(offsets, y_g=y_g)
    ax, ax2 = fig.axes[:2]
    diamonds = [ln for ln in ax.get_lines() if ln.get_marker() == "D"]
    np.testing.assert_allclose([ln.get_ydata()[0] for ln in diamonds], [offsets[s].mean() for s in SUB])
    labs = np.unique(y_g)
    bars = ax2.patches[: len(labs)]  # first subtask's bars
    np.testing.assert_allclose([b.get_height() for b in bars], [offsets["ptrt"][y_g == lab].mean() for lab in labs])


def test_anchor_distances_scatter_points_and_shape_check():
    rng = np.random.default_rng(2)
    N = 30
    chi_g = rng.gamma(2.0, 1.0, N)
    chi_s = {s: rng.gamma(2.0, 1.0, N) for s in SUB}
    offsets = {s: (chi_s[s] - chi_g) / 2 for s in SUB}
    fig = plots.plot_anchor_distances(chi_g, chi_s, offsets, highlight=0)
    ax = fig.axes[0]
    pts = ax.collections[0].get_offsets()
    np.testing.assert_allclose(np.asarray(pts), np.c_[chi_g, chi_s["ptrt"]])
    np.testing.assert_allclose(ax.collections[0].get_array(), offsets["ptrt"])
    with pytest.raises(DataError, match="one value per review"):
        plots.plot_anchor_distances(chi_g[:5], chi_s, offsets)


def test_learning_curves_flatten_nested_and_plot_values():
    hist = [
        {"epoch": 1, "loss": {"tar": 1.0, "sub": 0.5}, "dev": {"MAP": 0.4}},
        {"epoch": 2, "loss": {"tar": 0.8, "sub": 0.3}, "dev": {"MAP": 0.5}},
    ]
    fig = plots.plot_learning_curves({"seed0": hist, "seed1": hist[:1]})
    titles = [a.get_title() for a in fig.axes if a.get_visible()]
    assert titles == ["loss/tar", "loss/sub", "dev/MAP"]
    ln = fig.axes[2].get_lines()[0]
    np.testing.assert_allclose(ln.get_ydata(), [0.4, 0.5])
    with pytest.raises(DataError, match="no numeric"):
        plots.plot_learning_curves([{"note": "x"}])


def write_ssp_records(run_dir, labels, y_g, *, drop_key=None):
    (run_dir / "ssp").mkdir(parents=True)
    E, N = labels["ptrt"].shape
    for e in range(E):
        rec = {
            "epoch": np.array(e + 1),
            "review_id": np.array([f"p-{i}" for i in range(N)]),
            "y_g": y_g.astype(np.float32),
            "seen": np.ones(N, bool),
            "chi_g": np.full(N, 1.0, np.float32),
        }
        for s in SUB:
            rec[f"label_{s}"] = labels[s][e].astype(np.float32)
            rec[f"offset_{s}"] = (labels[s][e] - y_g).astype(np.float32)
            rec[f"estimate_{s}"] = labels[s][e].astype(np.float32)
            rec[f"chi_{s}"] = np.full(N, 2.0, np.float32)
        if drop_key and e == E - 1:
            rec.pop(drop_key)
        np.savez_compressed(run_dir / "ssp" / f"epoch{e + 1:03d}.npz", **rec)


def test_load_ssp_history_round_trip_and_largest_offset(tmp_path):
    labels, y_g = ewma_labels(E=4, N=12)
    write_ssp_records(tmp_path, labels, y_g)
    h = ssp_records.load_ssp_history(tmp_path)
    assert list(h.epochs) == [1, 2, 3, 4] and h.subtasks == list(SUB)
    np.testing.assert_allclose(h.labels["pvrt"], labels["pvrt"], atol=1e-6)
    np.testing.assert_allclose(h.offsets["ptrt"][-1], labels["ptrt"][-1] - y_g, atol=1e-6)
    assert h.index_of("p-5") == 5
    with pytest.raises(DataError, match="not a training review"):
        h.index_of("zz")
    score = np.mean([np.abs(labels[s][-1] - y_g) for s in SUB], axis=0)
    assert ssp_records.largest_offset_reviews(h, 2) == list(np.argsort(-score, kind="stable")[:2])
    mask = np.zeros(12, bool)
    mask[[1, 7]] = True
    assert ssp_records.largest_offset_reviews(h, 1, candidates=mask) == [max([1, 7], key=lambda i: score[i])]
    assert h.final(3) == pytest.approx({s: labels[s][-1, 3] for s in SUB}, abs=1e-6)


def test_load_ssp_history_names_file_with_missing_key(tmp_path):
    labels, y_g = ewma_labels(E=2, N=4)
    write_ssp_records(tmp_path, labels, y_g, drop_key="chi_pvrv")
    with pytest.raises(DataError, match=r"epoch002.npz: key\(s\) \['chi_pvrv'\] missing"):
        ssp_records.load_ssp_history(tmp_path)
    with pytest.raises(DataError, match="no SSP-Label records"):
        ssp_records.load_ssp_history(tmp_path / "nothing")


def test_case_study_figure_bars_and_missing_values(tmp_path):
    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(img)
    values = {"H": 4.0, "M": 3.675, "O": None, "y_ptrt": -0.8}
    fig = plots.plot_case_study(
        product_name="Chalk markers",
        product_text="Bold bright markers",
        review_text="They dry out.",
        product_images=[str(img)],
        review_images=[str(tmp_path / "broken.png")],
        values=values,
    )
    bar_ax = fig.axes[-1]
    np.testing.assert_allclose([p.get_height() for p in bar_ax.patches], [4.0, 3.675, 0.0, -0.8])
    texts = [t.get_text() for t in bar_ax.texts]
    assert texts == ["4.000", "3.675", "n/a", "-0.800"]
    assert any("unreadable" in t.get_text() for a in fig.axes for t in a.texts)
