"""SSP-Label (Eq. 11-12, 17-21) on small hand-checked numbers, incremental statistics, resume."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from mmss_lib.errors import CheckpointError, TrainingError
from mmss_lib.ssp_label import SSPLabel, ewma, pseudo_label_estimate, shrunk_covariance


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
    assert ewma(torch.tensor(3.0), torch.tensor(0.0), epoch=2).item() == pytest.approx(1.0)   # beta = 2/3
    assert ewma(torch.tensor(3.0), torch.tensor(1.0), epoch=3).item() == pytest.approx(2.0)   # beta = 1/2
    assert ewma(torch.tensor(0.0), torch.tensor(5.0), epoch=4).item() == pytest.approx(2.0)   # beta = 2/5


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
    # inverse = [[8/5,-2/5],[-2/5,8/5]]; chi = sqrt(diff^T inv diff / d), d = 2
    a = ssp.anchor("g").float()
    f = torch.stack([a + torch.tensor([1.0, 0.0]), a + torch.tensor([1.0, 1.0]), a])
    assert ssp.distance("g", f).tolist() == pytest.approx([math.sqrt(0.8), math.sqrt(1.2), 0.0], abs=1e-6)


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
    feats = {"g": torch.randn(n, d, generator=g), "ptrt": torch.randn(n, d, generator=g),
             "rtrv": torch.randn(n, d + 1, generator=g)}
    ssp.update(torch.arange(n), feats, 1)
    return ssp, g


def test_eq12_first_epoch_labels_are_human_labels():
    ssp, _ = _filled()
    for s, lab in ssp.labels(torch.arange(6)).items():
        assert lab.tolist() == ssp.y_g.float().tolist()
    assert bool(ssp.seen.all()) and ssp.count == 6


def test_eq11_ewma_over_epochs_uses_previous_epoch_label():
    ssp, g = _filled()
    ssp.end_epoch(1)
    y_g = ssp.y_g
    idx = torch.tensor([0, 1, 4])

    def feats(n):
        return {"g": torch.randn(n, 3, generator=g), "ptrt": torch.randn(n, 3, generator=g),
                "rtrv": torch.randn(n, 4, generator=g)}

    f = feats(3)
    est = ssp.estimate(idx, f)
    ssp.update(idx, f, 2)
    for s in ("ptrt", "rtrv"):
        expected = (2 / 3 * est[s] + 1 / 3 * y_g[idx]).clamp(0, 4)          # beta = 2/(2+1)
        assert ssp.labels(idx)[s].tolist() == pytest.approx(expected.float().tolist(), abs=1e-6)
    # a second visit in epoch 2 still smooths against the epoch-1 label (= y_g), not its own update
    f0 = feats(1)
    est0 = ssp.estimate(idx[:1], f0)
    ssp.update(idx[:1], f0, 2)
    assert ssp.labels(idx[:1])["ptrt"].item() == pytest.approx(
        (2 / 3 * est0["ptrt"] + 1 / 3 * y_g[0]).clamp(0, 4).item(), abs=1e-6)
    end2 = {s: ssp.labels(torch.arange(6))[s].double() for s in ("ptrt", "rtrv")}
    ssp.end_epoch(2)
    f3 = feats(3)
    est3 = ssp.estimate(idx, f3)
    ssp.update(idx, f3, 3)
    expected = (0.5 * est3["rtrv"] + 0.5 * end2["rtrv"][idx]).clamp(0, 4)    # beta = 2/(3+1)
    assert ssp.labels(idx)["rtrv"].tolist() == pytest.approx(expected.float().tolist(), abs=1e-6)
    # untouched samples keep their labels
    assert ssp.labels(torch.tensor([2, 3]))["ptrt"].tolist() == pytest.approx(end2["ptrt"][[2, 3]].tolist())


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


def test_labels_are_clamped_to_the_label_range():
    ssp, g = _filled(alpha1=100.0)
    ssp.end_epoch(1)
    f = {"g": torch.zeros(6, 3), "ptrt": torch.randn(6, 3, generator=g) * 50, "rtrv": torch.randn(6, 4, generator=g) * 50}
    est = ssp.estimate(torch.arange(6), f)
    ssp.update(torch.arange(6), f, 2)
    lab = ssp.labels(torch.arange(6))["ptrt"]
    assert lab.min().item() >= 0.0 and lab.max().item() <= 4.0
    assert (est["ptrt"][1:] > 4.0).all() and torch.allclose(lab[1:], torch.full((5,), 4.0))


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
        inc = {name: {k: v.clone() for k, v in getattr(ssp, name).items()}
               for name in ("sum_w", "sum_wf", "sum_f", "sum_ff")}
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
    assert ssp.record(1) is rec1 and int(rec1["epoch"]) == 1
    f = {"g": torch.randn(6, 3, generator=g), "ptrt": torch.randn(6, 3, generator=g), "rtrv": torch.randn(6, 4, generator=g)}
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
    batches = [(torch.randint(0, n, (5,), generator=g), {k: torch.randn(5, d, generator=g) for k, d in dims.items()})
               for _ in range(6)]
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
        SSPLabel(6, torch.zeros(6), {"g": 3}).load_state_dict({"version": 1, "n_samples": 6, "dims": {"g": 3}})


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
