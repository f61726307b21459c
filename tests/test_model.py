"""MM-SS model (Eq. 3-9): shapes, masking invariants, empty image sets, ablations, fine-tuning mode."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from mmss_lib.data.batch import Batch, random_batch
from mmss_lib.errors import DataError, MMSSError
from mmss_lib.models.losses import ranking_hinge
from mmss_lib.models.mmss import ABLATION_LABELS, ABLATIONS, INTERACTIONS, MMSS, SUBTASKS

TD, RD, D = 8, 12, 16


def _model(**kw) -> MMSS:
    torch.manual_seed(0)
    return MMSS(text_dim=TD, region_dim=RD, d=D, ff_dim=32, head_hidden=8, **kw)


def _batch(b=6, **kw) -> Batch:
    return random_batch(b, text_dim=TD, region_dim=RD, **kw)


def _no_images(batch: Batch, rows) -> Batch:
    pv_mask, rv_mask = batch.pv_mask.clone(), batch.rv_mask.clone()
    pv_mask[rows] = False
    rv_mask[rows] = False
    return replace(batch, pv_mask=pv_mask, rv_mask=rv_mask)


def test_forward_shapes_and_contract():
    m = _model().eval()
    out = m(_batch())
    assert out.score.shape == (6,)
    assert m.subtasks == SUBTASKS and tuple(out.sub_scores) == SUBTASKS
    assert set(out.features) == {"g", *SUBTASKS}
    assert all(f.shape == (6, D) for f in out.features.values())
    assert all(v.shape == (6,) for v in out.sub_scores.values())
    assert out.features["g"].requires_grad  # not detached
    assert m.feature_dims() == {k: D for k in ("g",) + SUBTASKS}
    assert m.uncertainty is not None and m.uncertainty.n_tasks == 5
    assert "uncertainty.log_var" in m.state_dict()


def test_eq6_to_eq9_recomputed_from_interactions():
    m = _model().eval()
    batch = _batch()
    with torch.no_grad():
        out = m(batch)
        f = m.interaction_features(batch)
        fc = torch.cat([f[s] for s in SUBTASKS], -1)  # Eq. 6
        f_g = F.gelu(fc @ m.fuse.weight.T + m.fuse.bias)  # Eq. 7
        y_g = f_g @ m.score_head.weight[0] + m.score_head.bias  # Eq. 8
        assert torch.allclose(out.features["g"], f_g, atol=1e-6)
        assert torch.allclose(out.score, y_g, atol=1e-6)
        for s in SUBTASKS:  # Eq. 9
            h = m.heads[s]
            f_s = F.gelu(h.proj(f[s]))
            assert torch.allclose(out.features[s], f_s, atol=1e-6)
            assert torch.allclose(out.sub_scores[s], h.mlp(f_s).squeeze(-1), atol=1e-6)


def test_masked_positions_do_not_change_the_output():
    m = _model().eval()
    batch = _no_images(_batch(), [2])
    g = torch.Generator().manual_seed(9)
    noisy = replace(
        batch,
        **{
            name: torch.where(
                getattr(batch, name + "_mask").unsqueeze(-1),
                getattr(batch, name),
                torch.randn(getattr(batch, name).shape, generator=g) * 1e3,
            )
            for name in ("pt", "rt", "pv", "rv")
        },
    )
    assert not torch.equal(noisy.pv, batch.pv)
    with torch.no_grad():
        a, b = m(batch), m(noisy)
    assert torch.allclose(a.score, b.score, atol=1e-5)
    for k in a.features:
        assert torch.allclose(a.features[k], b.features[k], atol=1e-5)


def test_sample_output_independent_of_batch_padding():
    """A sample scored alone (trimmed to its own lengths) equals its score inside a padded batch."""
    m = _model().eval()
    batch = _batch(5)
    with torch.no_grad():
        full = m(batch).score
        for i in range(5):

            def trim(x, mask, i=i):
                n = max(int(mask[i].sum()), 1)
                return x[i : i + 1, :n], mask[i : i + 1, :n]

            pt, ptm = trim(batch.pt, batch.pt_mask)
            rt, rtm = trim(batch.rt, batch.rt_mask)
            pv, pvm = trim(batch.pv, batch.pv_mask)
            rv, rvm = trim(batch.rv, batch.rv_mask)
            one = Batch(
                pt=pt,
                pt_mask=ptm,
                rt=rt,
                rt_mask=rtm,
                pv=pv,
                pv_mask=pvm,
                rv=rv,
                rv_mask=rvm,
                label=batch.label[i : i + 1],
                index=batch.index[i : i + 1],
                product=batch.product[i : i + 1],
            )
            assert m(one).score.item() == pytest.approx(full[i].item(), abs=1e-5)


def test_no_nan_with_empty_image_sets_forward_and_backward():
    m = _model().train()
    batch = _no_images(_batch(), [0, 3])  # neither product nor review has images in rows 0 and 3
    out = m(batch)
    loss = (
        out.score.sum()
        + sum(v.sum() for v in out.sub_scores.values())
        + sum(f.pow(2).sum() for f in out.features.values())
    )
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    # the pvrv interaction of an all-empty row is the learned "empty" vector
    m.eval()
    with torch.no_grad():
        f = m.interaction_features(batch)
    for row in (0, 3):
        assert torch.equal(f["pvrv"][row], m.interactions["pvrv"].empty)
    assert m.interactions["pvrv"].empty.grad is not None and m.interactions["pvrv"].empty.grad.abs().sum() > 0


def test_all_samples_without_images():
    m = _model().eval()
    out = m(_no_images(_batch(4), slice(None)))
    assert torch.isfinite(out.score).all()


def test_ablations_table4_order_and_switches():
    assert list(ABLATIONS) == ["full", "wo_ptrt", "wo_pvrv", "wo_ptrv", "wo_pvrt", "wo_rtrv", "wo_b", "wo_d"]
    assert list(ABLATION_LABELS) == list(ABLATIONS)
    assert ABLATION_LABELS["full"] == "MM-SS (Ours)" and ABLATION_LABELS["wo_rtrv"] == "-w/o intra-review-rtrv"
    batch = _batch(4)
    for name, opts in ABLATIONS.items():
        m = _model(**opts).eval()
        out = m(batch)
        assert out.score.shape == (4,) and torch.isfinite(out.score).all(), name
        assert tuple(out.sub_scores) == m.subtasks
        if name.startswith("wo_") and name[3:] in SUBTASKS:
            assert m.subtasks == tuple(s for s in SUBTASKS if s != name[3:])
            assert m.uncertainty.n_tasks == 4
        if name in ("wo_b", "wo_d"):
            assert m.subtasks == () and m.uncertainty is None and set(out.features) == {"g"}
    assert not hasattr(_model(use_module_b=False), "interactions")
    # config round trip through JSON-like lists keeps the canonical order
    assert _model(subtasks=["rtrv", "ptrt"]).subtasks == ("ptrt", "rtrv")


def test_bad_options_and_batches():
    with pytest.raises(MMSSError, match="unknown option"):
        _model(hidden=3)
    with pytest.raises(MMSSError, match="subtasks"):
        _model(subtasks=("ptrt", "xyz"))
    m = _model()
    with pytest.raises(DataError, match="batch.pt has feature size 5"):
        m(random_batch(2, text_dim=5, region_dim=RD))
    with pytest.raises(DataError, match="needs token features batch.pt"):
        m(replace(_batch(2), pt=None))


def test_interactions_cover_the_five_concatenations():
    assert INTERACTIONS == {
        "ptrt": ("tp", "tr"),
        "pvrv": ("vp", "vr"),
        "ptrv": ("tp", "vr"),
        "pvrt": ("vp", "tr"),
        "rtrv": ("tr", "vr"),
    }


def test_a_few_steps_reduce_the_ranking_loss():
    torch.manual_seed(0)
    m = _model(dropout=0.0)
    batch = _batch(8, seed=3)
    label = torch.tensor([4.0, 0.0, 3.0, 1.0, 2.0, 0.0, 4.0, 1.0])
    product = torch.arange(8) // 4
    pairs = torch.tensor(
        [(i, j) for i in range(8) for j in range(8) if product[i] == product[j] and label[i] > label[j]]
    )
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        s = m(batch).score
        loss = ranking_hinge(s[pairs[:, 0]], s[pairs[:, 1]])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_build_system_registry():
    from mmss_lib.models.registry import build_system

    m = build_system("mmss", text_dim=TD, region_dim=RD, d=D, ff_dim=32)
    assert isinstance(m, MMSS) and m(_batch(2)).score.shape == (2,)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_dropout_drops_p_keeps_the_expectation_and_masks_the_gradient(p):
    """model.Dropout's keep mask (uniform >= p): drop share p, mean preserved, the gradient zero
    exactly where the output is; identity in eval mode; seeded like torch."""
    import torch

    from mmss_lib.models.mmss import Dropout

    torch.manual_seed(0)
    d = Dropout(p).train()
    x = torch.ones(400, 500, requires_grad=True)
    y = d(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 4 * (p * (1 - p) / x.numel()) ** 0.5 + 1e-4
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)
    torch.manual_seed(0)
    assert torch.equal(Dropout(p).train()(torch.ones(400, 500)), y.detach())  # the torch seed decides
    assert torch.equal(d.eval()(x), x)


def test_match_term_adds_the_product_of_the_two_sides_means():
    """Option match_term (not in the paper, off by default): f_s = SoftPool(Self-ATT([A; B]))
    + W_m (mean A * mean B); padding and empty image sets change nothing; the default has no W_m."""
    from mmss_lib.models.masked import masked_mean

    assert all(i.match is None for i in _model().interactions.values())
    m = _model(match_term=True).eval()
    batch = _no_images(_batch(), [1])
    bases = {}
    with torch.no_grad():
        feats = m.modality_features(batch)
        f = m.interaction_features(batch)
        for s, (a, b) in INTERACTIONS.items():
            inter = m.interactions[s]
            xa, ma = feats[a]
            xb, mb = feats[b]
            plain = inter.match
            inter.match = None
            base = bases[s] = inter(xa, ma, xb, mb)
            inter.match = plain
            want = base + plain(masked_mean(xa, ma) * masked_mean(xb, mb))
            real = torch.cat([ma, mb], 1).any(1)
            assert torch.allclose(f[s][real], want[real], atol=1e-6), s
            assert not torch.allclose(f[s][real], base[real]), s
        # rtrv of the row without images: the review side is empty, so the product adds nothing
        assert torch.equal(masked_mean(*feats["vr"])[1], torch.zeros(D))
        assert torch.allclose(f["rtrv"][1], bases["rtrv"][1], atol=1e-6)
    out = m.train()(batch)
    out.score.sum().backward()
    assert all(m.interactions[s].match.weight.grad.abs().sum() > 0 for s in SUBTASKS)
