"""mmss_lib.evaluation.ssp_analysis: health table, settling epoch, cue association on planted data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmss_lib.errors import DataError
from mmss_lib.evaluation import ssp_analysis as sa
from mmss_lib.ssp.records import SSPHistory


def _hist(
    y_g: np.ndarray,
    labels: dict[str, np.ndarray],
    seen: np.ndarray | None = None,
    chi: dict[str, np.ndarray] | None = None,
    chi_g: np.ndarray | None = None,
) -> SSPHistory:
    """An SSPHistory from (E, N) label arrays."""
    e, n = next(iter(labels.values())).shape
    seen = np.ones((e, n), bool) if seen is None else seen
    chi = chi or {s: np.ones((e, n)) for s in labels}
    chi_g = np.ones((e, n)) if chi_g is None else chi_g
    return SSPHistory(
        epochs=np.arange(1, e + 1),
        review_id=np.array([f"r{i}" for i in range(n)]),
        y_g=y_g.astype(float),
        seen=seen,
        chi_g=chi_g,
        labels=labels,
        offsets={s: v - y_g for s, v in labels.items()},
        estimates=labels,
        chi=chi,
    )


def test_health_table_hand_numbers():
    y_g = np.array([0.0, 2.0, 4.0, 1.0])
    lab = np.array(
        [
            [0.0, 2.0, 4.0, 1.0],  # epoch 1: y_s = y_g
            [0.5, 1.0, 4.0, 1.2],  # epoch 2
            [0.5, 1.005, 4.0, 1.2],
        ]
    )  # epoch 3: settled
    seen = np.ones((3, 4), bool)
    seen[:, 3] = [False, True, True]
    chi = {"ptrt": np.array([[1, 1, 1, 9], [0.5, 1.5, 1.0, 2.0], [1, 1, 1, 1]], float)}
    h = _hist(y_g, {"ptrt": lab}, seen=seen, chi=chi, chi_g=np.full((3, 4), 2.0))
    t = sa.ssp_health_table(h)
    r1, r2, r3 = (t[t.epoch == e].iloc[0] for e in (1, 2, 3))
    assert r1.n_seen == 3 and r1.share_up == 0 and r1.share_down == 0 and r1.mean_abs_change == 0
    assert r1.mean_chi_s == pytest.approx(1.0)  # the unseen 9 is left out
    # epoch 2, 4 seen: offsets +0.5, -1, 0, +0.2
    assert r2.share_up == pytest.approx(0.5) and r2.share_down == pytest.approx(0.25)
    assert r2.mean_offset == pytest.approx((0.5 - 1 + 0 + 0.2) / 4)
    assert r2.mean_abs_offset == pytest.approx((0.5 + 1 + 0 + 0.2) / 4)
    assert r2.mean_abs_change == pytest.approx((0.5 + 1 + 0 + 0.2) / 4)
    assert r2.mean_chi_s == pytest.approx(1.25) and r2.mean_chi_g == pytest.approx(2.0)
    assert r2.mean_abs_chi_gap == pytest.approx((1.5 + 0.5 + 1.0 + 0.0) / 4)  # |chi_s - 2| per review
    assert r3.mean_abs_change == pytest.approx(0.005 / 4)
    assert sa.settling_epoch(t) == {"ptrt": 3, "all": 3}
    assert sa.settling_epoch(t, tol=1e-6) == {"ptrt": None, "all": None}


def test_stratified_difference_hand_numbers():
    # stratum 0: cue1 mean 1.0, cue0 mean 0.0, n=3; stratum 1: cue1 mean 3, cue0 mean 2.5, n=3;
    # stratum 2: only cue 1 -> left out
    y = np.array([1.0, 0.0, 0.0, 3.0, 2.0, 3.0, 9.0])
    cue = np.array([1, 0, 0, 1, 0, 0, 1])
    strata = np.array([0, 0, 0, 1, 1, 1, 2])
    d, k, n = sa.stratified_difference(y, cue, strata)
    assert (k, n) == (2, 6)
    assert d == pytest.approx((3 * 1.0 + 3 * 0.5) / 6)


def _planted(seed: int = 0, n: int = 1000):
    """y_g 0..4; cue A raises y_s by 0.3 within a label; cue B is more frequent at high labels but
    does not move y_s given the label (a confounder the stratification must remove)."""
    rng = np.random.default_rng(seed)
    y_g = rng.integers(0, 5, n).astype(float)
    cue_a = rng.random(n) < 0.5
    cue_b = rng.random(n) < 0.15 + 0.175 * y_g  # 0.15 .. 0.85
    img = rng.random(n) < 0.6  # image cue defined for 60%
    y_a = y_g + 0.3 * cue_a + rng.normal(0, 0.2, n)
    y_b = y_g + 0.5 * y_g / 4 + rng.normal(0, 0.2, n)  # depends on y_g only
    hist = _hist(y_g, {"ptrt": np.stack([y_g, y_a]), "rtrv": np.stack([y_g, y_b])})
    cues = pd.DataFrame(
        {"review_id": hist.review_id, "match": cue_a.astype(int), "agree": np.where(img, cue_b.astype(float), np.nan)}
    )
    return hist, cues, img


def test_cue_association_recovers_planted_effects():
    hist, cues, img = _planted()
    frame = sa.cue_association_frame(hist, cues, {"ptrt": "match", "rtrv": "agree"})
    assert len(frame[frame.subtask == "ptrt"]) == 1000
    assert len(frame[frame.subtask == "rtrv"]) == int(img.sum())  # NaN cues left out
    res = sa.cue_association(frame, n_boot=500, seed=0).set_index("subtask")
    a, b = res.loc["ptrt"], res.loc["rtrv"]
    assert a.ci_low < 0.3 < a.ci_high and a.ci_low > 0.2
    assert b.ci_low < 0.0 < b.ci_high and abs(b.difference) < 0.05
    # the unstratified difference of B is confounded by the label: clearly positive
    fb = frame[frame.subtask == "rtrv"]
    naive = fb[fb.cue_value == 1].y_s.mean() - fb[fb.cue_value == 0].y_s.mean()
    assert naive > 0.5
    # fixed seed -> identical interval; another seed -> another one
    again = sa.cue_association(frame, n_boot=500, seed=0).set_index("subtask")
    assert again.loc["ptrt", "ci_low"] == a.ci_low
    assert sa.cue_association(frame, n_boot=500, seed=1).set_index("subtask").loc["ptrt", "ci_low"] != a.ci_low


def test_cue_association_errors():
    hist, cues, _ = _planted(n=50)
    with pytest.raises(DataError, match="no cues"):
        sa.cue_association_frame(hist, cues.iloc[1:], {"ptrt": "match"})
    with pytest.raises(DataError, match="'img_match'"):
        sa.cue_association_frame(hist, cues, {"ptrt": "img_match"})
    with pytest.raises(DataError, match="none of the subtasks"):
        sa.cue_association_frame(hist, cues, {"pvrv": "match"})


def test_write_cue_association(tmp_path):
    hist, cues, _ = _planted(n=200)
    res = sa.write_cue_association(
        hist,
        cues,
        {"ptrt": "match", "rtrv": "agree"},
        tables_dir=tmp_path / "t",
        figures_dir=tmp_path / "f",
        tag="x",
        n_boot=100,
    )
    assert list(res.subtask) == ["ptrt", "rtrv"]
    csv = pd.read_csv(tmp_path / "t" / "ssp_cue_association_x.csv")
    assert list(csv.subtask) == ["ptrt", "rtrv"] and "ci_low" in csv.columns
    assert "bootstrap" in (tmp_path / "t" / "ssp_cue_association_x.md").read_text()
    assert (tmp_path / "f" / "fig_ssp_cue_association_x.png").read_bytes()[:4] == b"\x89PNG"


def test_write_ssp_health(tmp_path):
    y_g = np.array([0.0, 2.0, 4.0])
    lab = np.array([[0.0, 2.0, 4.0], [0.3, 1.5, 4.0]])
    t = sa.write_ssp_health(_hist(y_g, {"ptrt": lab, "rtrv": lab + 0.0}), tmp_path, "x")
    csv = pd.read_csv(tmp_path / "ssp_pseudo_labels_x.csv")
    assert list(csv.columns[:2]) == ["epoch", "subtask"] and len(csv) == 4 == len(t)
    np.testing.assert_allclose(csv[csv.epoch == 1].mean_abs_offset, 0.0)
    assert csv[(csv.epoch == 2) & (csv.subtask == "ptrt")].share_up.item() == pytest.approx(1 / 3)
    note = (tmp_path / "ssp_pseudo_labels_x.md").read_text()
    assert "ptrt never" in note and "mean change < 0.01:" in note
