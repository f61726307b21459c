"""The four multimodal comparison systems: SSE-Cross, D&R Net, MCR, MCL (issue 6).

Tiny inputs (text_dim 32, region_dim 16 unless a test checks the 2048-d default), CPU only.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from mmss_lib.data.batch import Batch, random_batch
from mmss_lib.errors import DataError
from mmss_lib.models.baselines._mm_common import CrossAttention
from mmss_lib.models.baselines.mcl import adaptive_info_nce
from mmss_lib.models.baselines.ssecross import stochastic_shared_embedding
from mmss_lib.models.registry import build_system

try:
    from mmss_lib.models.losses import ranking_hinge
except ImportError:  # pragma: no cover - losses.py written by another engineer

    def ranking_hinge(s_pos, s_neg, margin=1.0):
        return torch.clamp(margin - s_pos + s_neg, min=0.0).mean()


NAMES = ["ssecross", "drnet", "mcr", "mcl"]
SMALL = dict(text_dim=32, region_dim=16, d=32, n_heads=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one intra-op thread


def _build(name, **kw):
    torch.manual_seed(0)
    return build_system(name, **{**SMALL, **kw})


def _batch(b=6, seed=0, **kw):
    return random_batch(b, text_dim=32, region_dim=16, seed=seed, **kw)


def _total_loss(out):
    loss = out.score.pow(2).mean() + out.score.sum()
    return loss + out.aux_loss if out.aux_loss is not None else loss


def _pad(batch: Batch, extra: int = 3, seed: int = 1) -> Batch:
    """Append ``extra`` padded positions with large garbage values to every sequence."""
    g = torch.Generator().manual_seed(seed)
    kw = {}
    for name in ("pt", "rt", "pv", "rv"):
        x, m = getattr(batch, name), getattr(batch, f"{name}_mask")
        B, _, D = x.shape
        kw[name] = torch.cat([x, 100 * torch.randn(B, extra, D, generator=g)], dim=1)
        kw[f"{name}_mask"] = torch.cat([m, torch.zeros(B, extra, dtype=torch.bool)], dim=1)
    for name in ("pv_boxes", "rv_boxes"):
        bx = getattr(batch, name)
        kw[name] = torch.cat([bx, torch.rand(bx.shape[0], extra, 4, generator=g)], dim=1)
    # garbage also at the existing padded positions
    for name in ("pt", "rt", "pv", "rv"):
        x, m = kw[name], kw[f"{name}_mask"]
        kw[name] = torch.where(m.unsqueeze(-1), x, 50 * torch.randn(x.shape, generator=g))
    return replace(batch, **kw)


# ----------------------------------------------------------------------------- cross attention


def test_cross_attention_ignores_padding_and_zero_for_empty_context():
    torch.manual_seed(0)
    att = CrossAttention(8, n_heads=2).eval()
    q, ctx = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    m = torch.tensor([[True, True, False, False], [False] * 4])
    out = att(q, ctx, m)
    ctx2 = ctx.clone()
    ctx2[~m] = 1e3 * torch.randn(int((~m).sum()), 8)
    assert torch.allclose(att(q, ctx2, m), out, atol=1e-6)
    assert torch.equal(out[1], torch.zeros(3, 8))
    # reference: single real-context computation
    ref = att(q[:1], ctx[:1, :2], torch.ones(1, 2, dtype=torch.bool))
    assert torch.allclose(out[:1], ref, atol=1e-6)


# ----------------------------------------------------------------------------- every system


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_shapes_and_finite_grads(name):
    model = _build(name).train()
    batch = _batch()
    assert not batch.rv_mask[0].any()  # sample 0 has no review images
    out = model(batch)
    assert out.score.shape == (6,)
    assert torch.isfinite(out.score).all()
    if name == "mcl":
        assert out.aux_loss is not None and out.aux_loss.dim() == 0 and torch.isfinite(out.aux_loss)
    else:
        assert out.aux_loss is None
    _total_loss(out).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: parameter {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"


@pytest.mark.parametrize("name", NAMES)
def test_build_system_default_region_dim(name):
    model = build_system(name, text_dim=32).eval()
    assert model.region_dim == 2048
    out = model(random_batch(3, text_dim=32))
    assert out.score.shape == (3,) and torch.isfinite(out.score).all()


@pytest.mark.parametrize("name", NAMES)
def test_padding_does_not_change_score(name):
    model = _build(name).eval()
    batch = _batch()
    out, out_pad = model(batch), model(_pad(batch))
    assert torch.allclose(out.score, out_pad.score, atol=1e-5), (out.score, out_pad.score)
    if name == "mcl":
        assert torch.allclose(out.aux_loss, out_pad.aux_loss, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_no_images_anywhere_is_finite(name):
    model = _build(name).train()
    batch = _batch()
    batch = replace(batch, rv_mask=torch.zeros_like(batch.rv_mask), pv_mask=batch.pv_mask.clone())
    batch.pv_mask[1] = False  # sample 1: neither product nor review images
    out = model(batch)
    assert torch.isfinite(out.score).all()
    if name == "mcl":
        assert out.aux_loss.item() == 0.0  # no sample has review images: no contrastive term
    _total_loss(out).backward()
    for pname, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"


@pytest.mark.parametrize("name", NAMES)
def test_sample_score_independent_of_other_samples_in_eval(name):
    """In eval, a sample's score depends on its own inputs only (no batch-level leakage)."""
    model = _build(name).eval()
    batch = _batch()
    full = model(batch).score
    sub = Batch(**{k: (v[2:4] if isinstance(v, torch.Tensor) else v) for k, v in vars(batch).items()})
    assert torch.allclose(model(sub).score, full[2:4], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_feature_size_is_a_clear_error(name):
    model = _build(name)
    with pytest.raises(DataError, match="'pt'.*text_dim=32"):
        model(random_batch(3, text_dim=16, region_dim=16))
    with pytest.raises(DataError, match="'pv'.*region_dim=16"):
        model(random_batch(3, text_dim=32, region_dim=8))


# ----------------------------------------------------------------------------- learning test


def _planted(seed: int, n_products: int = 4, per_product: int = 6) -> Batch:
    """Reviews whose real tokens carry the label on feature 0: helpfulness is learnable."""
    B = n_products * per_product
    b = _batch(B, seed=seed, lr=6, lp=5, nr=4, np_=4)
    g = torch.Generator().manual_seed(seed + 100)
    label = torch.randint(0, 5, (B,), generator=g).float()
    rt = b.rt.clone()
    rt[..., 0] += 1.5 * (label[:, None] - 2.0) * b.rt_mask
    return replace(b, rt=rt, label=label, product=torch.arange(B) // per_product)


def _pairs(batch: Batch):
    same = batch.product[:, None] == batch.product[None, :]
    better = batch.label[:, None] > batch.label[None, :]
    return torch.nonzero(same & better, as_tuple=True)


def _pairwise_accuracy(score, batch):
    i, j = _pairs(batch)
    return (score[i] > score[j]).float().mean().item()


@pytest.mark.parametrize("name", NAMES)
def test_learns_planted_ranking_signal(name):
    model = _build(name)
    train, held_out = _planted(seed=0), _planted(seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    i, j = _pairs(train)
    for _ in range(40):
        model.train()
        out = model(train)
        loss = ranking_hinge(out.score[i], out.score[j])
        if out.aux_loss is not None:
            loss = loss + out.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = _pairwise_accuracy(model(held_out).score, held_out)
    assert acc > 0.75, f"{name}: held-out pairwise accuracy {acc:.2f} after training"


# ----------------------------------------------------------------------------- SSE-Cross


def test_sse_swaps_only_within_same_label_and_eligible():
    torch.manual_seed(0)
    B = 40
    z = torch.arange(B, dtype=torch.float32)[:, None].repeat(1, 3)  # row i holds i
    label = torch.randint(0, 3, (B,)).float()
    eligible = torch.rand(B) < 0.7
    out, swapped = stochastic_shared_embedding(z, label, eligible, p=1.0)
    src = out[:, 0].long()
    assert torch.equal(out[~swapped], z[~swapped])
    assert swapped.sum() > 0
    assert (src[swapped] != torch.arange(B)[swapped]).all()
    assert (label[src[swapped]] == label[swapped]).all()
    assert eligible[src[swapped]].all() and eligible[swapped].all()
    out0, swapped0 = stochastic_shared_embedding(z, label, eligible, p=0.0)
    assert not swapped0.any() and torch.equal(out0, z)


def test_sse_is_active_in_training_only():
    model = _build("ssecross", p_sse=1.0, dropout=0.0)
    batch = replace(_batch(8), label=torch.zeros(8))  # one class: every sample has partners
    model.eval()
    e1, e2 = model(batch).score, model(batch).score
    assert torch.equal(e1, e2)
    model.train()
    assert not torch.allclose(model(batch).score, e1)


# ----------------------------------------------------------------------------- MCL contrastive loss


def test_info_nce_matches_cross_entropy_reference():
    torch.manual_seed(0)
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    valid = torch.tensor([True, False, True, True, False])
    got = adaptive_info_nce(a, b, valid, tau=0.5, adaptive=False)
    an, bn = F.normalize(a[valid], dim=-1), F.normalize(b[valid], dim=-1)
    logits = an @ bn.T / 0.5
    tgt = torch.arange(3)
    ref = 0.5 * (F.cross_entropy(logits, tgt) + F.cross_entropy(logits.T, tgt))
    assert torch.allclose(got, ref, atol=1e-6)


def test_info_nce_not_negative_equals_dropping_those_pairs():
    torch.manual_seed(1)
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    valid = torch.ones(3, dtype=torch.bool)
    nn_mask = torch.zeros(3, 3, dtype=torch.bool)
    nn_mask[0, 1] = nn_mask[1, 0] = True  # samples 0 and 1 share a product
    got = adaptive_info_nce(a, b, valid, tau=0.2, adaptive=False, not_negative=nn_mask)
    s = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / 0.2
    s = s.masked_fill(nn_mask, float("-inf"))
    ref = 0.5 * (F.cross_entropy(s, torch.arange(3)) + F.cross_entropy(s.T, torch.arange(3)))
    assert torch.allclose(got, ref, atol=1e-6)


def test_adaptive_weighting_known_value_and_no_valid_sample():
    # orthogonal unit vectors: s_p = 1, s_n = 0 -> a_p = m, a_n = m;
    # logits: pos m * m / tau, neg m * (0 - m) / tau
    m, tau = 0.25, 0.1
    e = torch.eye(2)
    got = adaptive_info_nce(e, e, torch.ones(2, dtype=torch.bool), tau=tau, margin=m)
    pos, neg = m * m / tau, -m * m / tau
    ref = -pos + torch.logsumexp(torch.tensor([pos, neg]), 0)
    assert torch.allclose(got, ref, atol=1e-6)
    zero = adaptive_info_nce(e, e, torch.zeros(2, dtype=torch.bool))
    assert zero.item() == 0.0


def test_mcl_aux_loss_scales_with_its_weight():
    batch = _batch()
    a = _build("mcl", aux_weight=0.1).eval()(batch).aux_loss
    b = _build("mcl", aux_weight=0.3).eval()(batch).aux_loss
    assert a.item() > 0 and torch.allclose(b, 3 * a, rtol=1e-5)
