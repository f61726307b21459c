"""SSP-Label (Eq. 11-12, 17-21) on small hand-checked numbers, incremental statistics, resume."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch

from mmss_lib.errors import CheckpointError, TrainingError
from mmss_lib.ssp.equations import ewma, pseudo_label_estimate, shrunk_covariance
from mmss_lib.ssp.label import SSPLabel, ssp_health


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _hand_ssp(**kw) -> SSPLabel:
    """N=3, 2-d features [[1,0],[0,1],[2,2]] for g and ptrt, labels 0, 2, 4, epoch 1 filled."""
    ssp = SSPLabel(3, torch.tensor([0.0, 2.0, 4.0]), {"g": 2, "ptrt": 2}, **kw)
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    ssp.update(torch.tensor([0, 1, 2]), {"g": f, "ptrt": f.clone()}, epoch=1)
    return ssp


# ------------------------------------------------------------------ pure equations
def test_eq21_first_line_hand_numbers():
    y = pseudo_label_estimate(torch.tensor(2.0), torch.tensor(1.5), torch.tensor(1.0), eps=0.0)
    assert y.item() == pytest.approx(2.75)  # (2 + 0.5)/2 + 1.5*2/2
    y = pseudo_label_estimate(torch.tensor(3.0), torch.tensor(0.5), torch.tensor(1.0), alpha1=2.0, alpha2=0.5, eps=0.0)
    assert y.item() == pytest.approx((3.0 + 0.5 * -0.5) / 2 + 2.0 * 0.5 * 3.0 / 2)  # 1.375 + 1.5


@pytest.mark.parametrize("y_g", [0.0, 1.0, 2.5, 4.0])
@pytest.mark.parametrize("chi", [0.3, 1.0, 2.0])
def test_eq21_equal_distances_keep_the_human_label(y_g, chi):
    y = pseudo_label_estimate(torch.tensor(y_g), torch.tensor(chi), torch.tensor(chi), eps=1e-6)
    assert y.item() == pytest.approx(y_g, abs=1e-5)


def test_eq11_ewma_hand_numbers():
    assert ewma(torch.tensor(3.0), torch.tensor(0.0), epoch=2).item() == pytest.approx(1.0)  # beta = 2/3
    assert ewma(torch.tensor(3.0), torch.tensor(1.0), epoch=3).item() == pytest.approx(2.0)  # beta = 1/2
    assert ewma(torch.tensor(0.0), torch.tensor(5.0), epoch=4).item() == pytest.approx(2.0)  # beta = 2/5


def test_shrunk_covariance_hand_numbers():
    cov = torch.tensor([[2.0, 1.0], [1.0, 4.0]], dtype=torch.float64)
    out = shrunk_covariance(cov, shrinkage=0.5, ridge=0.1)
    # 0.5*cov + (0.5*3 + 0.1) I
    np.testing.assert_allclose(out.numpy(), [[2.6, 0.5], [0.5, 3.6]], rtol=1e-12)


# ------------------------------------------------------------------ Eq. 17-18 inside SSPLabel
def test_eq17_anchor_weighted_towards_helpful():
    ssp = _hand_ssp()
    w = [_sig(0 - 1.5), _sig(2 - 1.5), _sig(4 - 1.5)]
    expected = [(w[0] * 1 + w[2] * 2) / sum(w), (w[1] * 1 + w[2] * 2) / sum(w)]
    assert ssp.anchor("g").tolist() == pytest.approx(expected)
    assert ssp.anchor("ptrt").tolist() == pytest.approx(expected)  # epoch 1: y_s = y_g
    # pivot shifts the weights (Lazada: 0.5)
    ssp2 = _hand_ssp(pivot=0.5)
    w2 = [_sig(-0.5), _sig(1.5), _sig(3.5)]
    assert ssp2.anchor("g")[0].item() == pytest.approx((w2[0] + 2 * w2[2]) / sum(w2))


def test_eq18_covariance_and_distance_hand_numbers():
    ssp = _hand_ssp(shrinkage=0.5, ridge=0.0)
    # population covariance of [[1,0],[0,1],[2,2]] = [[2/3,1/3],[1/3,2/3]]; shrunk:
    np.testing.assert_allclose(ssp.covariance("g").numpy(), [[2 / 3, 1 / 6], [1 / 6, 2 / 3]], rtol=1e-12)
    # inverse = [[8/5,-2/5],[-2/5,8/5]]; m = sqrt(diff^T inv diff)
    a = ssp.anchor("g").float()
    f = torch.stack([a + torch.tensor([1.0, 0.0]), a + torch.tensor([1.0, 1.0]), a])
    assert ssp.mahalanobis("g", f).tolist() == pytest.approx([math.sqrt(1.6), math.sqrt(2.4), 0.0], abs=1e-6)
    # the bank's own distances, by hand: bank rows minus the anchor under the same inverse
    inv = np.array([[1.6, -0.4], [-0.4, 1.6]])
    A = np.array(ssp.anchor("g").tolist())
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    m_hand = np.array([math.sqrt((r - A) @ inv @ (r - A)) for r in bank])
    np.testing.assert_allclose(ssp.bank_mahalanobis("g").numpy(), m_hand, rtol=1e-9)
    # Eq. 18 scale "mean": s = (mean m)^2 -> chi = m / mean(m)
    assert ssp.scale("g") == pytest.approx(m_hand.mean() ** 2, rel=1e-9)
    assert ssp.distance("g", f).tolist() == pytest.approx(
        [math.sqrt(1.6) / m_hand.mean(), math.sqrt(2.4) / m_hand.mean(), 0.0], abs=1e-6
    )
    # scale "rms": s = mean m^2 over the bank, here from the running sums
    rms = _hand_ssp(shrinkage=0.5, ridge=0.0, scale="rms")
    assert rms.mean_squared_distance("g") == pytest.approx(float((m_hand**2).mean()), rel=1e-9)
    assert rms.distance("g", f).tolist() == pytest.approx(
        [math.sqrt(1.6 / (m_hand**2).mean()), math.sqrt(2.4 / (m_hand**2).mean()), 0.0], abs=1e-6
    )


@pytest.mark.parametrize("scale", ["mean", "rms"])
def test_eq18_scale_matches_an_independent_bank_computation(scale):
    """s_k from a numpy computation on the bank (anchor, shrunk covariance, inverse): the bank's
    mean chi is 1 ("mean") or its mean chi^2 is 1 ("rms") for every task whatever its rank."""
    g = torch.Generator().manual_seed(7)
    n = 60
    y = torch.randint(0, 5, (n,), generator=g).float()
    u = torch.randn(1, 6, generator=g)
    feats = {
        "g": torch.randn(n, 6, generator=g) * 2 + 1,  # full rank
        "ptrt": torch.randn(n, 1, generator=g) @ u + 0.01 * torch.randn(n, 6, generator=g),
    }  # ~rank 1
    ssp = SSPLabel(n, y, {"g": 6, "ptrt": 6}, scale=scale)
    ssp.update(torch.arange(n), feats, 1)
    rec = ssp.end_epoch(1)
    for k in ("g", "ptrt"):
        f = ssp.bank[k].numpy().astype(np.float64)
        w = 1 / (1 + np.exp(-(y.numpy() - 1.5)))
        A = (w[:, None] * f).sum(0) / w.sum()
        cov = np.cov(f.T, bias=True)
        sig = 0.95 * cov + (0.05 * np.trace(cov) / 6 + 1e-6) * np.eye(6)
        m = np.sqrt(np.einsum("ij,jk,ik->i", f - A, np.linalg.inv(sig), f - A))
        s_ref = m.mean() ** 2 if scale == "mean" else (m**2).mean()
        assert ssp.scale(k) == pytest.approx(s_ref, rel=1e-7)
        chi = rec["chi_g"] if k == "g" else rec[f"chi_{k}"]
        np.testing.assert_allclose(chi, m / math.sqrt(s_ref), rtol=1e-5)
        assert (chi.mean() if scale == "mean" else (chi.astype(np.float64) ** 2).mean()) == pytest.approx(1.0, rel=1e-5)


def test_eq18_distance_is_scale_free():
    torch.manual_seed(0)
    f = torch.randn(40, 3)
    y = torch.randint(0, 5, (40,)).float()
    a = SSPLabel(40, y, {"g": 3})
    b = SSPLabel(40, y, {"g": 3})
    a.update(torch.arange(40), {"g": f}, 1)
    b.update(torch.arange(40), {"g": f * 100.0}, 1)
    q = torch.randn(5, 3)
    assert a.distance("g", q).tolist() == pytest.approx(b.distance("g", q * 100.0).tolist(), rel=1e-5)


# ------------------------------------------------------------------ Eq. 11-12 inside SSPLabel
def _filled(n=6, d=3, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 2.0])[:n]
    ssp = SSPLabel(n, y, {"g": d, "ptrt": d, "rtrv": d + 1}, **kw)
    feats = {
        "g": torch.randn(n, d, generator=g),
        "ptrt": torch.randn(n, d, generator=g),
        "rtrv": torch.randn(n, d + 1, generator=g),
    }
    ssp.update(torch.arange(n), feats, 1)
    return ssp, g


def test_eq12_first_epoch_labels_are_human_labels():
    ssp, _ = _filled()
    for lab in ssp.labels(torch.arange(6)).values():
        assert lab.tolist() == ssp.y_g.float().tolist()
    assert bool(ssp.seen.all()) and ssp.count == 6


def _ref_chi(
    f: np.ndarray, y_k: np.ndarray, pivot: float = 1.5, shrink: float = 0.05, ridge: float = 1e-6
) -> np.ndarray:
    """Eq. 17-18 by hand in numpy over a whole bank: chi = m / mean(m)."""
    w = 1 / (1 + np.exp(-(y_k - pivot)))
    A = (w[:, None] * f).sum(0) / w.sum()
    cov = np.cov(f.T, bias=True)
    d = f.shape[1]
    sig = (1 - shrink) * cov + (shrink * np.trace(cov) / d + ridge) * np.eye(d)
    m = np.sqrt(np.einsum("ij,jk,ik->i", f - A, np.linalg.inv(sig), f - A))
    return m / m.mean()


def _ref_estimate(y_g, chi_s, chi_g):
    return (y_g + (chi_s - chi_g)) / 2 + chi_s * y_g / (2 * (chi_g + 1e-6))  # Eq. 21, alpha = 1


def test_eq11_ewma_at_epoch_ends_from_the_bank():
    ssp, g = _filled(fresh_only=False, scale="mean")  # every seen sample in the statistics (stale ones too)
    rec1 = ssp.end_epoch(1)
    y_g = ssp.y_g.numpy()
    np.testing.assert_array_equal(rec1["label_ptrt"], y_g.astype(np.float32))  # Eq. 12
    # the epoch-1 estimate is recorded (not applied), computed from the bank
    f1 = {k: ssp.bank[k].numpy().astype(np.float64) for k in ssp.tasks}
    chi_g1 = _ref_chi(f1["g"], y_g)
    np.testing.assert_allclose(rec1["estimate_ptrt"], _ref_estimate(y_g, _ref_chi(f1["ptrt"], y_g), chi_g1), rtol=1e-4)

    def feats(n):
        return {
            "g": torch.randn(n, 3, generator=g),
            "ptrt": torch.randn(n, 3, generator=g),
            "rtrv": torch.randn(n, 4, generator=g),
        }

    idx = torch.tensor([0, 1, 4])
    ssp.update(idx, feats(3), 2)
    # during the epoch the labels do not change
    assert ssp.labels(torch.arange(6))["ptrt"].tolist() == pytest.approx(y_g.tolist())
    ssp.update(idx[:1], feats(1), 2)  # a second visit: the bank keeps the last row
    rec2 = ssp.end_epoch(2)
    f2 = {k: ssp.bank[k].numpy().astype(np.float64) for k in ssp.tasks}
    chi_g2 = _ref_chi(f2["g"], y_g)
    end2 = {}
    for s in ("ptrt", "rtrv"):
        est = _ref_estimate(y_g, _ref_chi(f2[s], y_g), chi_g2)  # anchors weighted by y_s^(1) = y_g
        np.testing.assert_allclose(rec2[f"estimate_{s}"], est, rtol=1e-4, atol=1e-5)
        end2[s] = np.clip(2 / 3 * est + 1 / 3 * y_g, -4, 8)  # beta = 2/(2+1)
        np.testing.assert_allclose(rec2[f"label_{s}"], end2[s], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(rec2[f"mean_change_{s}"], np.abs(end2[s] - y_g).mean(), rtol=1e-5)
    ssp.update(idx, feats(3), 3)
    rec3 = ssp.end_epoch(3)
    f3 = {k: ssp.bank[k].numpy().astype(np.float64) for k in ssp.tasks}
    chi_g3 = _ref_chi(f3["g"], y_g)
    est = _ref_estimate(y_g, _ref_chi(f3["rtrv"], end2["rtrv"]), chi_g3)  # subtask anchor: weights of y_s^(2)
    np.testing.assert_allclose(
        rec3["label_rtrv"], np.clip(0.5 * est + 0.5 * end2["rtrv"], -4, 8), rtol=1e-5, atol=1e-5
    )  # beta = 2/(3+1)


def test_health_entries_of_the_record():
    ssp, g = _filled()
    ssp.end_epoch(1)
    ssp.update(
        torch.arange(6),
        {
            "g": torch.randn(6, 3, generator=g),
            "ptrt": torch.randn(6, 3, generator=g),
            "rtrv": torch.randn(6, 4, generator=g),
        },
        2,
    )
    rec = ssp.end_epoch(2)
    health = ssp_health(rec)
    assert set(health) == {"ptrt", "rtrv"}
    for s, h in health.items():
        off = rec[f"offset_{s}"]
        assert h["share_up"] == pytest.approx(float((off > 0).mean()))
        assert h["share_down"] == pytest.approx(float((off < 0).mean()))
        assert h["mean_chi_s"] == pytest.approx(float(rec[f"chi_{s}"].mean()), rel=1e-6)
        assert h["mean_chi_g"] == pytest.approx(float(rec["chi_g"].mean()), rel=1e-6)
        assert h["mean_change"] == pytest.approx(float(np.abs(rec[f"label_{s}"] - rec["y_g"]).mean()), rel=1e-5)
        assert h["n_seen"] == 6
    assert ssp_health(ssp.record(2)) == health
    json.dumps(health)  # JSON-able for history.json


def test_identical_subtask_features_keep_human_labels():
    """f*_s == f*_g -> same anchor and covariance -> chi_s == chi_g -> y_s stays y_g (Eq. 21)."""
    torch.manual_seed(1)
    n = 20
    y = torch.randint(0, 5, (n,)).float()
    ssp = SSPLabel(n, y, {"g": 4, "pvrv": 4})
    for epoch in (1, 2, 3):
        for idx in torch.arange(n).split(7):
            f = torch.randn(len(idx), 4)
            ssp.update(idx, {"g": f, "pvrv": f.clone()}, epoch)
        ssp.end_epoch(epoch)
    assert ssp.labels(torch.arange(n))["pvrv"].tolist() == pytest.approx(y.tolist(), abs=1e-4)


def test_labels_are_clamped_to_the_widened_range():
    """Clamp [low - w, high + w] (w = high - low): 0..4 -> [-4, 8]; a given clamp is used as is."""
    for clamp, lo, hi in ((None, -4.0, 8.0), ((0.0, 4.0), 0.0, 4.0)):
        ssp, g = _filled(alpha1=100.0, clamp=clamp)
        ssp.end_epoch(1)
        f = {
            "g": torch.randn(6, 3, generator=g),
            "ptrt": torch.randn(6, 3, generator=g) * 50,
            "rtrv": torch.randn(6, 4, generator=g) * 50,
        }
        ssp.update(torch.arange(6), f, 2)
        rec = ssp.end_epoch(2)
        lab, est = rec["label_ptrt"], rec["estimate_ptrt"]
        assert lab.min() >= lo and lab.max() <= hi
        raw = 2 / 3 * est + 1 / 3 * rec["y_g"]
        np.testing.assert_allclose(lab, np.clip(raw, lo, hi), rtol=1e-5, atol=1e-5)
        assert ((raw > hi) | (raw < lo)).any()  # the clamp was exercised


# ------------------------------------------------------------------ incremental statistics
def test_incremental_statistics_equal_full_recompute():
    g = torch.Generator().manual_seed(3)
    n = 50
    y = torch.randint(0, 5, (n,), generator=g).float()
    ssp = SSPLabel(n, y, {"g": 4, "ptrt": 3, "pvrt": 5})
    for epoch in (1, 2, 3):
        for _ in range(12):
            idx = torch.randint(0, n, (9,), generator=g)  # duplicates on purpose
            ssp.update(idx, {k: torch.randn(9, d, generator=g) * 3 + 1 for k, d in ssp.dims.items()}, epoch)
        inc = {
            name: {k: v.clone() for k, v in getattr(ssp, name).items()}
            for name in ("sum_w", "sum_wf", "sum_f", "sum_ff")
        }
        count = ssp.count
        ssp.recompute_statistics()
        assert count == int(ssp.seen.sum())
        for name, per_task in inc.items():
            for k, v in per_task.items():
                assert torch.allclose(v, getattr(ssp, name)[k], rtol=1e-9, atol=1e-9), (name, k)
        # and the statistics equal numpy on the bank
        seen = ssp.seen.numpy()
        for k in ssp.tasks:
            f = ssp.bank[k].numpy()[seen].astype(np.float64)
            yk = (y.numpy()[seen] if k == "g" else ssp.y_cur[k].numpy()[seen]).astype(np.float64)
            w = 1 / (1 + np.exp(-(yk - 1.5)))
            np.testing.assert_allclose(ssp.anchor(k).numpy(), (w[:, None] * f).sum(0) / w.sum(), rtol=1e-9)
            cov = np.cov(f.T, bias=True)
            d = f.shape[1]
            ref = 0.95 * cov + (0.05 * np.trace(cov) / d + 1e-6) * np.eye(d)
            np.testing.assert_allclose(ssp.covariance(k).numpy(), ref, rtol=1e-8, atol=1e-10)
        ssp.end_epoch(epoch)


# ------------------------------------------------------------------ records and persistence
def test_record_contents():
    ssp, g = _filled()
    rec1 = ssp.end_epoch(1)
    assert float(rec1["mean_change_ptrt"]) == 0.0 and float(rec1["share_up_ptrt"]) == 0.0
    assert ssp.record(1) is rec1 and int(rec1["epoch"]) == 1
    f = {
        "g": torch.randn(6, 3, generator=g),
        "ptrt": torch.randn(6, 3, generator=g),
        "rtrv": torch.randn(6, 4, generator=g),
    }
    ssp.update(torch.arange(6), f, 2)
    rec = ssp.end_epoch(2)
    for s in ("ptrt", "rtrv"):
        for key in (f"label_{s}", f"offset_{s}", f"chi_{s}", f"estimate_{s}"):
            assert rec[key].shape == (6,)
        np.testing.assert_allclose(rec[f"offset_{s}"], rec[f"label_{s}"] - rec["y_g"], atol=1e-6)
        assert np.isfinite(rec[f"chi_{s}"]).all()
    assert np.isfinite(rec["chi_g"]).all() and rec["seen"].all()
    assert [int(r["epoch"]) for r in ssp.history] == [1, 2]
    with pytest.raises(KeyError):
        ssp.record(7)


def test_state_dict_round_trip_resumes_exactly():
    g = torch.Generator().manual_seed(5)
    n = 12
    y = torch.randint(0, 5, (n,), generator=g).float()
    dims = {"g": 3, "ptrt": 3, "rtrv": 2}
    batches = [
        (torch.randint(0, n, (5,), generator=g), {k: torch.randn(5, d, generator=g) for k, d in dims.items()})
        for _ in range(6)
    ]
    a = SSPLabel(n, y, dims)
    a.update(torch.arange(n), {k: torch.randn(n, d, generator=g) for k, d in dims.items()}, 1)
    a.end_epoch(1)
    a.update(*batches[0], 2)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = SSPLabel(n, torch.zeros(n), dims)
    b.load_state_dict(torch.load(buf, weights_only=True))
    for ssp in (a, b):
        for idx, f in batches[1:3]:
            ssp.update(idx, f, 2)
        ssp.end_epoch(2)
        for idx, f in batches[3:]:
            ssp.update(idx, f, 3)
    for s in ("ptrt", "rtrv"):
        assert torch.equal(a.labels(torch.arange(n))[s], b.labels(torch.arange(n))[s])
    np.testing.assert_array_equal(a.record(1)["label_ptrt"], b.record(1)["label_ptrt"])
    np.testing.assert_array_equal(a.record(2)["chi_g"], b.record(2)["chi_g"])


def test_load_state_dict_rejects_other_configuration():
    ssp, _ = _filled()
    other = SSPLabel(6, torch.zeros(6), {"g": 3, "ptrt": 3})
    with pytest.raises(CheckpointError, match="another training set or model configuration"):
        other.load_state_dict(ssp.state_dict())
    with pytest.raises(CheckpointError, match="lacks the entry"):
        SSPLabel(6, torch.zeros(6), {"g": 3}).load_state_dict({"version": 3, "n_samples": 6, "dims": {"g": 3}})
    old = ssp.state_dict()
    old["version"] = 1
    with pytest.raises(CheckpointError, match="another SSP-Label reading"):
        SSPLabel(6, torch.zeros(6), dict(ssp.dims)).load_state_dict(old)


def test_bad_calls_raise_clear_errors():
    ssp, _ = _filled()
    f = {"g": torch.zeros(1, 3), "ptrt": torch.zeros(1, 3), "rtrv": torch.zeros(1, 4)}
    with pytest.raises(TrainingError, match="out of range 0..5"):
        ssp.update(torch.tensor([6]), f, 1)
    with pytest.raises(TrainingError, match="open epoch is 1"):
        ssp.update(torch.tensor([0]), f, 2)
    with pytest.raises(TrainingError, match="lack task"):
        ssp.update(torch.tensor([0]), {"g": f["g"]}, 1)
    with pytest.raises(TrainingError, match=r"features\['ptrt'\] has shape"):
        ssp.update(torch.tensor([0]), {**f, "ptrt": torch.zeros(1, 5)}, 1)
    with pytest.raises(TrainingError, match="NaN"):
        ssp.update(torch.tensor([0]), {**f, "g": torch.full((1, 3), float("nan"))}, 1)
    with pytest.raises(TrainingError, match="must contain the global task"):
        SSPLabel(2, torch.zeros(2), {"ptrt": 3})
    with pytest.raises(TrainingError, match="scale must be one of"):
        SSPLabel(2, torch.zeros(2), {"g": 3}, scale="median")


# ------------------------------------------------------------------ the structural bias (issue 9)
def test_low_rank_subtask_gets_offsets_of_both_signs():
    """A full-rank f*_g (8-d) and a rank-1 f*_s (8-d), each fixed per sample plus small noise per
    epoch. The earlier reading (s_k = d_k, distances of the fresh batch features against the
    bank) gives E[chi_s^2] ~ 1/8 against E[chi_g^2] ~ 1: (almost) every offset negative, and a
    label-0 review can only fall to the clamp. The current reading gives offsets of both signs
    and lets y_g = 0 reviews rise."""
    g = torch.Generator().manual_seed(11)
    n, d = 300, 8
    y = torch.arange(n).remainder(5).float()  # labels 0..4, 60 each
    base_g = torch.randn(n, d, generator=g)
    base_s = torch.randn(n, 1, generator=g) @ torch.randn(1, d, generator=g)
    ssp = SSPLabel(n, y, {"g": d, "ptrt": d}, scale="mean")  # the reading whose offsets split both ways
    old_offsets = []
    for epoch in (1, 2, 3, 4):
        for idx in torch.randperm(n, generator=g).split(32):
            f = {
                "g": base_g[idx] + 0.05 * torch.randn(len(idx), d, generator=g),
                "ptrt": base_s[idx] + 0.05 * torch.randn(len(idx), d, generator=g),
            }
            if epoch > 1:  # the earlier reading, on the same batch: m / sqrt(d) from the bank before storing
                chi_old = {k: ssp.mahalanobis(k, f[k]) / math.sqrt(d) for k in ("g", "ptrt")}
                old_offsets.append(pseudo_label_estimate(y[idx].double(), chi_old["ptrt"], chi_old["g"]) - y[idx])
            ssp.update(idx, f, epoch)
        rec = ssp.end_epoch(epoch)
    old = torch.cat(old_offsets)
    assert float((old > 0).double().mean()) < 0.05 and float((old < 0).double().mean()) > 0.95
    h = ssp_health(rec)["ptrt"]
    assert h["share_up"] >= 0.10 and h["share_down"] >= 0.10, h
    assert h["mean_chi_s"] == pytest.approx(1.0, abs=1e-5) and h["mean_chi_g"] == pytest.approx(1.0, abs=1e-5)
    zero = rec["y_g"] == 0
    assert (rec["label_ptrt"][zero] > 0).any() and (rec["label_ptrt"][zero] < 0).any()
    four = rec["y_g"] == 4
    assert (rec["label_ptrt"][four] > 4).any()


def test_sums_after_end_epoch_equal_a_full_recompute():
    ssp, g = _filled()
    ssp.end_epoch(1)
    ssp.update(
        torch.arange(6),
        {
            "g": torch.randn(6, 3, generator=g),
            "ptrt": torch.randn(6, 3, generator=g),
            "rtrv": torch.randn(6, 4, generator=g),
        },
        2,
    )
    ssp.end_epoch(2)  # labels changed -> subtask weights changed
    kept = {name: {k: v.clone() for k, v in getattr(ssp, name).items()} for name in ("sum_w", "sum_wf")}
    ssp.recompute_statistics()
    for name, per_task in kept.items():
        for k, v in per_task.items():
            assert torch.allclose(v, getattr(ssp, name)[k], rtol=1e-12, atol=1e-12), (name, k)
    w = 1 / (1 + np.exp(-(ssp.y_cur["ptrt"].numpy() - 1.5)))
    np.testing.assert_allclose(ssp.weight["ptrt"].numpy(), w, rtol=1e-12)


# ------------------------------------------------------------------ stale bank entries, scales, readings
def test_stale_samples_leave_the_statistics_and_keep_their_labels():
    ssp, g = _filled(scale="mean")  # fresh_only=True (default)
    ssp.end_epoch(1)
    idx = torch.tensor([0, 1, 3, 4])  # samples 2 and 5 are not visited in epoch 2
    feats = {
        "g": torch.randn(4, 3, generator=g),
        "ptrt": torch.randn(4, 3, generator=g),
        "rtrv": torch.randn(4, 4, generator=g),
    }
    ssp.update(idx, feats, 2)
    rec = ssp.end_epoch(2)
    assert int(rec["n_stale"]) == 2 and ssp_health(rec)["ptrt"]["n_stale"] == 2
    y_g = ssp.y_g.numpy()
    for s in ("ptrt", "rtrv"):
        assert np.isnan(rec[f"chi_{s}"][[2, 5]]).all() and np.isfinite(rec[f"chi_{s}"][[0, 1, 3, 4]]).all()
        np.testing.assert_array_equal(rec[f"label_{s}"][[2, 5]], y_g[[2, 5]])  # kept: no new estimate
        fresh = np.array([0, 1, 3, 4])
        f = ssp.bank[s].numpy().astype(np.float64)[fresh]
        fg = ssp.bank["g"].numpy().astype(np.float64)[fresh]
        est = _ref_estimate(y_g[fresh], _ref_chi(f, y_g[fresh]), _ref_chi(fg, y_g[fresh]))  # fresh-only statistics
        np.testing.assert_allclose(rec[f"estimate_{s}"][fresh], est, rtol=1e-4, atol=1e-5)
    # the running sums cover every seen sample again after the epoch
    full = {k: v.clone() for k, v in ssp.sum_ff.items()}
    ssp.recompute_statistics()
    for k in full:
        torch.testing.assert_close(full[k], ssp.sum_ff[k])
    assert ssp.count == 6


def test_common_scale_is_the_main_tasks_for_every_task():
    ssp, _ = _filled(scale="common")
    rec = ssp.end_epoch(1)
    y_g = ssp.y_g.numpy()
    f = {k: ssp.bank[k].numpy().astype(np.float64) for k in ssp.tasks}
    m = {k: _ref_chi(f[k], y_g) * 0 for k in ssp.tasks}
    # raw distances: chi under "mean" times its scale; "common" divides all by mean(m_g)
    raw = {k: rec[f"chi_{k}"].astype(np.float64) * float(rec[f"sqrt_s_{k}"]) for k in ssp.tasks}
    assert float(rec["sqrt_s_ptrt"]) == pytest.approx(float(rec["sqrt_s_g"]))
    assert float(rec["sqrt_s_g"]) == pytest.approx(raw["g"].mean(), rel=1e-5)
    assert float(np.mean(rec["chi_g"])) == pytest.approx(1.0, rel=1e-5)
    for k in ("ptrt", "rtrv"):
        np.testing.assert_allclose(rec[f"chi_{k}"], raw[k] / raw["g"].mean(), rtol=1e-5)
        assert float(np.mean(rec[f"chi_{k}"])) != pytest.approx(1.0, abs=1e-3)  # not normalised per task
    assert m  # noqa


@pytest.mark.parametrize("reading", ["rms", "common"])
def test_another_reading_recomputed_from_a_record_matches_a_run_with_it(reading):
    from mmss_lib.ssp.label import recompute_reading

    def run(scale):
        ssp, g = _filled(scale=scale, seed=3)
        recs = [ssp.end_epoch(1)]
        feats = {
            "g": torch.randn(6, 3, generator=g),
            "ptrt": torch.randn(6, 3, generator=g),
            "rtrv": torch.randn(6, 4, generator=g),
        }
        ssp.update(torch.arange(6), feats, 2)
        recs.append(ssp.end_epoch(2))
        return recs

    base, other = run("mean"), run(reading)
    for rec_b, rec_o in zip(base, other, strict=True):
        got = recompute_reading(rec_b, reading)
        for key in (
            "chi_g",
            "chi_ptrt",
            "chi_rtrv",
            "estimate_ptrt",
            "estimate_rtrv",
            "label_ptrt",
            "label_rtrv",
            "offset_rtrv",
        ):
            np.testing.assert_allclose(got[key], rec_o[key].astype(np.float64), rtol=1e-4, atol=1e-5, err_msg=key)
    # and the record's own reading comes back unchanged
    own = recompute_reading(base[1], "mean")
    np.testing.assert_allclose(own["label_ptrt"], base[1]["label_ptrt"], rtol=1e-5, atol=1e-5)


def test_labels_estimated_only_after_epoch_two():
    ssp, g = _filled()
    assert not ssp.labels_estimated
    ssp.end_epoch(1)
    assert not ssp.labels_estimated  # y_s^(1) = y_g: Eq. 14 weights all 0
    ssp.update(
        torch.arange(6),
        {
            "g": torch.randn(6, 3, generator=g),
            "ptrt": torch.randn(6, 3, generator=g),
            "rtrv": torch.randn(6, 4, generator=g),
        },
        2,
    )
    ssp.end_epoch(2)
    assert ssp.labels_estimated


def test_config_apart_from_memory_policy():
    """SSPConfig holds the method (checked, clamp resolved); SSPLabel takes it or its fields as
    keywords, never both; the banks' memory policy stays with FeatureBanks."""
    from mmss_lib.errors import TrainingError
    from mmss_lib.ssp.config import SSPConfig

    cfg = SSPConfig(label_range=(0, 4))
    assert cfg.clamp == (-4.0, 8.0) and cfg.scale == "common"
    with pytest.raises(TrainingError, match="shrinkage must be in"):
        SSPConfig(shrinkage=0.0)
    y = torch.tensor([0.0, 2.0, 4.0])
    a = SSPLabel(3, y, {"g": 2, "ptrt": 2}, SSPConfig(pivot=0.5, scale="mean"))
    b = SSPLabel(3, y, {"g": 2, "ptrt": 2}, pivot=0.5, scale="mean")
    assert a.config == b.config and a.pivot == 0.5 and a.scale_mode == "mean"
    with pytest.raises(TrainingError, match="not both"):
        SSPLabel(3, y, {"g": 2}, SSPConfig(), pivot=0.5)
    with pytest.raises(TrainingError, match="fields of SSPConfig"):
        SSPLabel(3, y, {"g": 2}, bogus=1)


def test_feature_banks_running_sums_equal_a_recompute():
    """FeatureBanks.store keeps the running sums equal to a rebuild from the banks, also when rows
    are replaced (their old contributions removed)."""
    from mmss_lib.ssp.bank import FeatureBanks

    g = torch.Generator().manual_seed(0)
    banks = FeatureBanks(10, {"g": 3, "ptrt": 3}, ("g", "ptrt"))
    seen = torch.zeros(10, dtype=torch.bool)
    for idx in (torch.tensor([0, 1, 2, 3]), torch.tensor([2, 3, 4, 5, 6]), torch.tensor([0, 9])):
        feats = {k: torch.randn(len(idx), 3, generator=g) for k in ("g", "ptrt")}
        weights = {k: torch.rand(len(idx), generator=g, dtype=torch.float64) for k in ("g", "ptrt")}
        banks.store(idx, seen[idx], feats, weights)
        seen[idx] = True
    running = {k: (banks.sum_w[k].clone(), banks.sum_wf[k].clone(), banks.sum_ff[k].clone()) for k in ("g", "ptrt")}
    assert banks.count == 8
    banks.recompute(seen)
    assert banks.count == 8
    for k, (w, wf, ff) in running.items():
        assert torch.allclose(w, banks.sum_w[k]) and torch.allclose(wf, banks.sum_wf[k])
        assert torch.allclose(ff, banks.sum_ff[k])
    mean, cov = banks.moments("g")
    rows = banks.bank["g"][seen].to(torch.float64)
    assert torch.allclose(mean, rows.mean(0)) and torch.allclose(cov, torch.cov(rows.T, correction=0))
