"""Tests of the text-only comparison systems (BiMPM, EG-CNN, Conv-KNRM, PRH-Net) and their helpers."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mmss_lib.data.batch import random_batch
from mmss_lib.errors import DataError
from mmss_lib.models.baselines.common import MaskedBiLSTM, NGramConv
from mmss_lib.models.registry import SYSTEMS, build_system

NAMES = ["bimpm", "egcnn", "convknrm", "prhnet"]
TEXT_DIM = 32


def _model(name, **opts):
    torch.manual_seed(0)
    return build_system(name, text_dim=TEXT_DIM, **opts)


def _batch(**kw):
    kw.setdefault("text_dim", TEXT_DIM)
    return random_batch(6, **kw)


def _with_garbage_padding(batch, extra: int = 4, seed: int = 1):
    """Append ``extra`` padded positions to both texts and fill every padded position with garbage."""
    g = torch.Generator().manual_seed(seed)
    kw = {}
    for name in ("pt", "rt"):
        x, m = getattr(batch, name), getattr(batch, f"{name}_mask")
        B, L, d = x.shape
        x = torch.cat([x, torch.zeros(B, extra, d)], 1)  # (B, L + extra, d)
        m = torch.cat([m, torch.zeros(B, extra, dtype=torch.bool)], 1)
        garbage = 100 * torch.randn(x.shape, generator=g)
        kw[name] = torch.where(m.unsqueeze(-1), x, garbage)
        kw[f"{name}_mask"] = m
    return dataclasses.replace(batch, **kw)


# ----------------------------------------------------------------------------- sequence encoders (common.py)


def test_masked_bilstm_matches_per_sample_lstm():
    torch.manual_seed(0)
    enc = MaskedBiLSTM(5, 3)
    x = torch.randn(3, 6, 5)
    mask = torch.arange(6)[None, :] < torch.tensor([6, 2, 4])[:, None]
    h = enc(x, mask)
    for b, n in enumerate([6, 2, 4]):
        fwd, _ = enc.forward_lstm(x[b : b + 1, :n])  # unpadded reference
        bwd, _ = enc.backward_lstm(x[b : b + 1, :n].flip(1))
        ref = torch.cat([fwd, bwd.flip(1)], -1)
        assert torch.allclose(h[b, :n], ref[0], atol=1e-5)
        assert torch.equal(h[b, n:], torch.zeros(6 - n, 6))
        assert torch.allclose(enc.last_forward(h, mask)[b], ref[0, n - 1, :3], atol=1e-5)
        assert torch.allclose(enc.last_backward(h, mask)[b], ref[0, 0, 3:], atol=1e-5)


def test_masked_bilstm_equals_packed_bidirectional_lstm():
    torch.manual_seed(0)
    enc = MaskedBiLSTM(5, 3)
    packed_lstm = torch.nn.LSTM(5, 3, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name, p in enc.forward_lstm.named_parameters():
            getattr(packed_lstm, name).copy_(p)
            getattr(packed_lstm, name + "_reverse").copy_(getattr(enc.backward_lstm, name))
    x = torch.randn(3, 6, 5)
    lengths = torch.tensor([6, 2, 4])
    mask = torch.arange(6)[None, :] < lengths[:, None]
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    ref, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_lstm(packed)[0], batch_first=True, total_length=6)
    assert torch.allclose(enc(x, mask), ref, atol=1e-5)


def test_reverse_within_length_is_an_involution():
    x = torch.arange(8.0).reshape(2, 4, 1)
    lengths = torch.tensor([3, 0])
    r = MaskedBiLSTM.reverse_within_length(x, lengths)
    assert r[0, :, 0].tolist() == [2.0, 1.0, 0.0, 3.0] and torch.equal(r[1], x[1])
    assert torch.equal(MaskedBiLSTM.reverse_within_length(r, lengths), x)


def test_masked_bilstm_empty_row_is_finite_zero():
    torch.manual_seed(0)
    enc = MaskedBiLSTM(5, 3)
    x = torch.randn(2, 4, 5, requires_grad=True)
    mask = torch.tensor([[True, True, False, False], [False] * 4])
    h = enc(x, mask)
    assert torch.equal(h[1], torch.zeros(4, 6))
    h.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_ngram_conv_matches_manual_windows():
    torch.manual_seed(0)
    conv = NGramConv(3, 2, n=2, activation="none")
    x = torch.randn(1, 4, 3)
    mask = torch.tensor([[True, True, True, False]])
    y = conv(x, mask)
    w, b = conv.conv.weight, conv.conv.bias  # (C, d, n), (C,)
    xs = torch.cat([x[0, :3], torch.zeros(1, 3)])  # real tokens, then zeros
    for i in range(3):
        want = torch.einsum("cdn,nd->c", w, xs[i : i + 2]) + b
        assert torch.allclose(y[0, i], want, atol=1e-6)
    assert torch.equal(y[0, 3], torch.zeros(2))


# ----------------------------------------------------------------------------- system-specific pieces


def test_kernel_mus_and_sigmas():
    from mmss_lib.models.baselines.convknrm import kernel_mus_sigmas

    mus, sigmas = kernel_mus_sigmas(11)
    want = torch.tensor([1.0, 0.9, 0.7, 0.5, 0.3, 0.1, -0.1, -0.3, -0.5, -0.7, -0.9])
    assert torch.allclose(mus, want, atol=1e-6)
    assert sigmas[0] == pytest.approx(1e-3) and torch.allclose(sigmas[1:], torch.full((10,), 0.1))


def test_kernel_pooling_matches_loop_reference():
    import math

    from mmss_lib.models.baselines.convknrm import kernel_mus_sigmas, kernel_pooling

    g = torch.Generator().manual_seed(0)
    sim = torch.rand(2, 3, 4, generator=g) * 2 - 1
    sim[0, 0, 0] = 1.0  # an exact match
    qm = torch.tensor([[True, True, False], [True, True, True]])
    dm = torch.tensor([[True, True, True, False], [True, False, False, False]])
    mus, sigmas = kernel_mus_sigmas(11)
    phi = kernel_pooling(sim, qm, dm, mus, sigmas, log_scale=1.0)
    for b in range(2):
        for k in range(11):
            total = 0.0
            for i in range(3):
                if not qm[b, i]:
                    continue
                tf = sum(
                    math.exp(-((float(sim[b, i, j]) - float(mus[k])) ** 2) / (2 * float(sigmas[k]) ** 2))
                    for j in range(4)
                    if dm[b, j]
                )
                total += math.log(max(tf, 1e-10))
            assert float(phi[b, k]) == pytest.approx(total, rel=1e-4, abs=1e-4)


def test_multi_perspective_cosine_matches_reference():
    from mmss_lib.models.baselines.bimpm import multi_perspective_cosine, pairwise_multi_perspective_cosine

    g = torch.Generator().manual_seed(0)
    w = torch.rand(3, 4, generator=g)
    h1, h2 = torch.randn(1, 2, 4, generator=g), torch.randn(1, 5, 4, generator=g)
    pair = pairwise_multi_perspective_cosine(h1, h2, w)  # (1, 2, 5, 3)
    for i in range(2):
        for j in range(5):
            for k in range(3):
                want = F.cosine_similarity(w[k] * h1[0, i], w[k] * h2[0, j], dim=0)
                assert torch.allclose(pair[0, i, j, k], want, atol=1e-5)
                assert torch.allclose(multi_perspective_cosine(h1[0, i], h2[0, j], w)[k], want, atol=1e-5)


def test_egcnn_gate_modes():
    from mmss_lib.models.baselines.egcnn import EmbeddingGate

    e = torch.randn(2, 3, 4)
    tok = EmbeddingGate(4, "token")
    ratio = tok(e) / e  # one gate per token
    assert torch.allclose(ratio, ratio[..., :1].expand_as(ratio), atol=1e-5)
    assert ((ratio > 0) & (ratio < 1)).all()
    assert EmbeddingGate(4, "vector")(e).shape == e.shape
    with pytest.raises(ValueError, match="token"):
        EmbeddingGate(4, "bogus")


# ----------------------------------------------------------------------------- every text-only system


@pytest.mark.parametrize("name", NAMES)
def test_registry_and_kind(name):
    assert SYSTEMS[name].kind == "text-only"
    model = build_system(name, text_dim=TEXT_DIM)
    assert model.text_dim == TEXT_DIM and model.region_dim == 2048


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_shapes_and_finite_gradients(name):
    model = _model(name)
    batch = _batch()
    assert not batch.rv_mask[0].any()  # a review without images
    out = model(batch)
    assert out.score.shape == (6,) and torch.isfinite(out.score).all()
    assert out.aux_loss is None
    (out.score**2).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_padding_does_not_change_the_score(name):
    model = _model(name).eval()
    batch = _batch()
    with torch.no_grad():
        a = model(batch).score
        b = model(_with_garbage_padding(batch)).score
    assert torch.allclose(a, b, atol=1e-5), (a, b)


@pytest.mark.parametrize("name", NAMES)
def test_samples_are_scored_independently(name):
    model = _model(name).eval()
    batch = _batch()
    with torch.no_grad():
        full = model(batch).score
        one = model(
            dataclasses.replace(
                batch,
                **{
                    f.name: getattr(batch, f.name)[2:3]
                    for f in dataclasses.fields(batch)
                    if isinstance(getattr(batch, f.name), torch.Tensor)
                },
            )
        ).score
    assert torch.allclose(full[2:3], one, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_image_inputs_are_ignored(name):
    model = _model(name).eval()
    batch = _batch()
    other = dataclasses.replace(
        batch,
        pv=batch.pv * 0 + 7.0,
        rv=-batch.rv,
        pv_mask=torch.zeros_like(batch.pv_mask),
        rv_mask=torch.zeros_like(batch.rv_mask),
    )
    with torch.no_grad():
        assert torch.allclose(model(batch).score, model(other).score)


@pytest.mark.parametrize("name", NAMES)
def test_empty_texts_give_finite_outputs_and_gradients(name):
    model = _model(name)
    batch = _batch()
    rt_mask, pt_mask = batch.rt_mask.clone(), batch.pt_mask.clone()
    rt_mask[1] = False  # an empty review text
    pt_mask[2] = False  # an empty product text
    rt_mask[3] = pt_mask[3] = False  # both empty
    batch = dataclasses.replace(batch, rt_mask=rt_mask, pt_mask=pt_mask, rt=batch.rt.clone().requires_grad_(True))
    out = model(batch)
    assert torch.isfinite(out.score).all()
    out.score.sum().backward()
    assert torch.isfinite(batch.rt.grad).all()
    assert batch.rt.grad[1].abs().sum() == 0  # masked tokens get no gradient
    for pname, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), f"{name}: {pname}"


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_data_error(name):
    model = _model(name)
    batch = _batch()
    with pytest.raises(DataError, match="batch.rt"):
        model(dataclasses.replace(batch, rt=None))
    with pytest.raises(DataError, match=r"expected \(B, L, 32\)"):
        model(dataclasses.replace(batch, rt=batch.rt[..., :16], pt=batch.pt[..., :16]))


# ----------------------------------------------------------------------------- learning


def _ranking_problem(n_products: int, seed: int, dim: int = 16):
    """Each product has one helpful review (copies of product tokens plus a planted direction)
    and one unhelpful review (noise). Returns a Batch with sample 2k helpful, 2k+1 unhelpful."""
    from mmss_lib.data.batch import Batch

    g = torch.Generator().manual_seed(seed)
    signal = torch.ones(dim) / dim**0.5 * 1.5  # fixed planted direction
    lp, lr = 6, 5
    prod = torch.randn(n_products, lp, dim, generator=g)
    pick = torch.stack([torch.randperm(lp, generator=g)[:lr] for _ in range(n_products)])
    helpful = prod.gather(1, pick[..., None].expand(-1, -1, dim)) + signal
    helpful = helpful + 0.3 * torch.randn(helpful.shape, generator=g)
    unhelpful = torch.randn(n_products, lr, dim, generator=g)
    rt = torch.stack([helpful, unhelpful], 1).reshape(2 * n_products, lr, dim)  # (2P, Lr, d)
    pt = prod.repeat_interleave(2, 0)  # (2P, Lp, d)
    lens = torch.randint(3, lr + 1, (2 * n_products,), generator=g)
    B = 2 * n_products
    return Batch(
        pt=pt,
        pt_mask=torch.ones(B, lp, dtype=torch.bool),
        rt=rt,
        rt_mask=torch.arange(lr)[None, :] < lens[:, None],
        pv=torch.zeros(B, 1, 8),
        pv_mask=torch.zeros(B, 1, dtype=torch.bool),
        rv=torch.zeros(B, 1, 8),
        rv_mask=torch.zeros(B, 1, dtype=torch.bool),
        label=torch.tensor([4.0, 0.0]).repeat(n_products),
        index=torch.arange(B),
        product=torch.arange(n_products).repeat_interleave(2),
    )


def _hinge(s_pos, s_neg, margin=1.0):
    try:
        from mmss_lib.models.losses import ranking_hinge
    except ImportError:
        return F.relu(margin - (s_pos - s_neg)).mean()
    return ranking_hinge(s_pos, s_neg, margin=margin)


SMALL = {
    "bimpm": dict(hidden=16, perspectives=4, agg_hidden=16, dropout=0.0),
    "egcnn": dict(filters=16, dropout=0.0),
    "convknrm": dict(filters=16),
    "prhnet": dict(hidden=16, dropout=0.0),
}


@pytest.mark.parametrize("name", NAMES)
def test_learns_a_planted_ranking_signal(name):
    torch.manual_seed(0)
    model = build_system(name, text_dim=16, region_dim=8, **SMALL[name])
    train, test = _ranking_problem(24, seed=1), _ranking_problem(32, seed=2)

    def pair_accuracy():
        model.eval()
        with torch.no_grad():
            s = model(test).score
        model.train()
        return float((s[0::2] > s[1::2]).float().mean())

    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        s = model(train).score
        loss = _hinge(s[0::2], s[1::2])
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = pair_accuracy()
    assert acc >= 0.85, f"{name}: held-out pairwise accuracy {acc:.2f} after training"
