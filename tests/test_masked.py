"""mmss_lib.models.masked: the masked building blocks of MM-SS and every comparison system.

The blocks were defined three times before they moved into :mod:`mmss_lib.models.masked`: in
``mmss_lib/models/baselines/common.py`` (text-only systems), ``mmss_lib/models/baselines/_mm_common.py``
(multimodal systems) and ``mmss_lib/models/mmss.py`` (MM-SS). The ``Old*`` / ``old_*`` definitions below
are those pre-move versions, copied verbatim from commit 6f4f23e; each new block must compute
exactly what its old version computed (``torch.equal`` on outputs and input gradients), on random
inputs with fully-masked rows, garbage padding, and large and small values.
"""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from torch import Tensor, nn

import mmss_lib.models.masked as masked_module
from mmss_lib.errors import DataError
from mmss_lib.models.masked import (
    AttentionPool,
    guard_empty,
    has_any,
    lengths_from_mask,
    masked_attention,
    masked_max,
    masked_mean,
    masked_softmax,
    soft_pool,
    zero_padding,
)

# ============================================================================ pre-move versions
# --- mmss_lib/models/baselines/common.py @ 6f4f23e (BiMPM, EG-CNN, Conv-KNRM, PRH-Net)


def old_text_masked_mean(x: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    m = mask.to(x.dtype).unsqueeze(-1)  # (B, L, 1)
    total = (x * m).sum(dim)
    count = m.sum(dim).clamp_min(1.0)
    return total / count


def old_text_masked_max(x: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    m = mask.unsqueeze(-1)  # (B, L, 1)
    filled = x.masked_fill(~m, torch.finfo(x.dtype).min)
    out = filled.max(dim).values
    any_real = m.any(dim)
    return torch.where(any_real, out, torch.zeros_like(out))


def old_text_masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    mask = mask.expand_as(scores)
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(filled, dim=dim)
    return weights * mask.to(scores.dtype)


def old_text_masked_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    key_mask: Tensor,
    *,
    scale: float | None = None,
    return_weights: bool = False,
):
    if scale is None:
        scale = query.shape[-1] ** -0.5
    scores = torch.einsum("bqd,bkd->bqk", query, key) * scale  # (B, Lq, Lk)
    weights = old_text_masked_softmax(scores, key_mask[:, None, :], dim=-1)  # (B, Lq, Lk)
    out = torch.einsum("bqk,bkd->bqd", weights, value)  # (B, Lq, dv)
    return (out, weights) if return_weights else out


class OldTextAttentionPool(nn.Module):
    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim
        self.proj = nn.Linear(dim, hidden)
        self.context = nn.Linear(hidden, 1, bias=False)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        logits = self.context(torch.tanh(self.proj(h))).squeeze(-1)  # (B, L)
        weights = old_text_masked_softmax(logits, mask, dim=-1)  # (B, L)
        return torch.einsum("bl,bld->bd", weights, h)  # (B, d)


def old_lengths_from_mask(mask: Tensor, *, name: str = "mask") -> Tensor:
    mask = mask.bool()
    lengths = mask.sum(1)
    prefix = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]
    if not torch.equal(prefix, mask):
        bad = int((prefix != mask).any(1).nonzero()[0, 0])
        raise DataError(f"{name}: row {bad} is not a prefix mask (real tokens first, then padding)")
    return lengths


# --- mmss_lib/models/baselines/_mm_common.py @ 6f4f23e (SSE-Cross, D&R Net, MCR, MCL)


def old_mm_masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    mask = mask.expand_as(scores)
    s = scores.masked_fill(~mask, float("-inf"))
    shift = s.amax(dim=dim, keepdim=True).detach()
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    e = torch.exp(s - shift) * mask  # exp(-inf) = 0 at padding
    return e / e.sum(dim=dim, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)


def old_mm_masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def old_mm_masked_max(x: Tensor, mask: Tensor) -> Tensor:
    filled = x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min)
    out = filled.amax(dim=1)  # (B, d)
    return torch.where(mask.any(1, keepdim=True), out, torch.zeros_like(out))


def old_has_any(mask: Tensor) -> Tensor:
    return mask.any(dim=1)


def old_zero_padding(x: Tensor, mask: Tensor) -> Tensor:
    return x.masked_fill(~mask.unsqueeze(-1), 0.0)


class OldMMAttentionPool(nn.Module):
    def __init__(self, d: int, *, claim_dim: int = 0, hidden: int = 64):
        super().__init__()
        self.claim_dim = claim_dim
        self.score = nn.Sequential(nn.Linear(d + claim_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: Tensor, mask: Tensor, claim: Tensor | None = None) -> Tensor:
        if self.claim_dim:
            assert claim is not None, "this AttentionPool was built with a claim: pass claim=(B, claim_dim)"
            x_in = torch.cat([x, claim[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)  # (B, L, d + c)
        else:
            x_in = x
        w = old_mm_masked_softmax(self.score(x_in).squeeze(-1), mask, dim=-1)  # (B, L)
        return (w.unsqueeze(-1) * x).sum(1)  # (B, d)


# --- mmss_lib/models/mmss.py @ 6f4f23e (MM-SS)


def old_soft_pool(x: Tensor, mask: Tensor) -> Tensor:
    m = mask.unsqueeze(-1)  # (B, L, 1)
    w = torch.softmax(x.masked_fill(~m, float("-inf")), dim=1)  # (B, L, d)
    return (w * x.masked_fill(~m, 0.0)).sum(dim=1)  # (B, d)


def old_model_masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, d)


def old_guard_empty(mask: Tensor) -> tuple[Tensor, Tensor]:
    any_real = mask.any(dim=1)
    safe = mask.clone()
    safe[:, 0] |= ~any_real
    return any_real, safe


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one intra-op thread


# ============================================================================ random inputs

SCALES = [1.0, 1e-6, 1e3, 1e30]  # ordinary, small, large (softmax saturates), huge
DTYPES = [torch.float32, torch.float64]


def _mask(g, *shape, prefix=False, empty_rows=(0,)) -> Tensor:
    """A random (B, L) mask (prefix masks with ``prefix``) whose rows ``empty_rows`` are all padding."""
    B, L = shape
    if prefix:
        lengths = torch.randint(1, L + 1, (B,), generator=g)
        m = torch.arange(L)[None, :] < lengths[:, None]
    else:
        m = torch.rand(B, L, generator=g) < 0.6
        m[:, -1] |= ~m.any(1)  # at least one real position ...
    m[list(empty_rows)] = False  # ... except in the empty rows
    return m


def _garbage(x: Tensor, mask: Tensor, g) -> Tensor:
    """``x`` with padded positions replaced by huge values, inf and NaN."""
    junk = torch.randn(x.shape, generator=g, dtype=x.dtype) * 1e6
    junk.view(-1)[::3] = float("inf")
    junk.view(-1)[1::5] = float("nan")
    m = mask.reshape(*mask.shape, *([1] * (x.dim() - mask.dim())))
    return torch.where(m, x, junk)


def _cases() -> list:
    return [
        pytest.param(seed, scale, dtype, id=f"scale{scale:g}-{str(dtype)[6:]}")
        for seed, (scale, dtype) in enumerate([(s, d) for s in SCALES for d in DTYPES])
    ]


def _run(fn, *inputs, seed=0):
    """Outputs of ``fn(*inputs)`` and the gradients of the float inputs for a random upstream gradient."""
    leaves = [t.detach().clone().requires_grad_(True) if t.is_floating_point() else t for t in inputs]
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    g = torch.Generator().manual_seed(seed + 1000)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs if o.is_floating_point())
    loss.backward()
    return [o.detach() for o in outs], [t.grad for t in leaves if t.is_floating_point()]


def assert_same(new, old):
    """Bit-identical outputs and input gradients (NaN in the same places)."""
    (out_a, grad_a), (out_b, grad_b) = new, old
    for a, b in zip(out_a + grad_a, out_b + grad_b, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(torch.nan_to_num(a, nan=7.0), torch.nan_to_num(b, nan=7.0)), (a - b).abs().max()
        assert torch.equal(a.isnan(), b.isnan())


# ============================================================================ same numerics as before the move


@pytest.mark.parametrize("seed,scale,dtype", _cases())
def test_masked_softmax_methods_equal_the_old_versions(seed, scale, dtype):
    g = torch.Generator().manual_seed(seed)
    for shape, mask_shape, dim in [((5, 9), (5, 9), -1), ((4, 6, 7), (4, 1, 7), -1), ((3, 8, 5), (3, 8, 1), 1)]:
        scores = torch.randn(shape, generator=g, dtype=dtype) * scale
        mask = torch.rand(mask_shape, generator=g) < 0.6
        mask[0] = False  # a fully-masked slice
        scores = torch.where(mask.expand_as(scores), scores, scores * 1e6)  # huge values at padding
        for method, old in (("fused", old_text_masked_softmax), ("shifted", old_mm_masked_softmax)):
            new_r = _run(lambda s, m=mask, d=dim, me=method: masked_softmax(s, m, dim=d, method=me), scores, seed=seed)
            assert_same(new_r, _run(lambda s, f=old, m=mask, d=dim: f(s, m, dim=d), scores, seed=seed))
            w = new_r[0][0]
            assert torch.isfinite(w).all() and torch.isfinite(new_r[1][0]).all()
            assert torch.equal(w[~mask.expand_as(w)], torch.zeros_like(w[~mask.expand_as(w)]))


def test_masked_softmax_default_is_fused_and_methods_agree():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 10, generator=g, dtype=torch.float64)
    mask = _mask(g, 6, 10, empty_rows=(2,))
    assert torch.equal(masked_softmax(scores, mask), masked_softmax(scores, mask, method="fused"))
    assert torch.allclose(
        masked_softmax(scores, mask, method="fused"), masked_softmax(scores, mask, method="shifted"), rtol=0, atol=1e-15
    )
    with pytest.raises(ValueError, match="method"):
        masked_softmax(scores, mask, method="plain")


@pytest.mark.parametrize("seed,scale,dtype", _cases())
def test_masked_pooling_equals_the_old_versions(seed, scale, dtype):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 9, 5, generator=g, dtype=dtype) * scale
    mask = _mask(g, 6, 9, empty_rows=(0, 3))
    xg = torch.where(mask.unsqueeze(-1), x, x * 1e6)  # finite garbage (mean multiplies padding by 0)
    mean = _run(lambda t: masked_mean(t, mask), xg, seed=seed)
    for old in (old_text_masked_mean, old_mm_masked_mean, old_model_masked_mean):
        assert_same(mean, _run(lambda t, f=old: f(t, mask), xg, seed=seed))
    xi = _garbage(x, mask, g)  # max ignores any padded value
    mx = _run(lambda t: masked_max(t, mask), xi, seed=seed)
    assert_same(mx, _run(lambda t: old_mm_masked_max(t, mask), xi, seed=seed))
    assert_same(
        _run(lambda t: masked_max(t, mask, ties="first"), xi, seed=seed),
        _run(lambda t: old_text_masked_max(t, mask), xi, seed=seed),
    )
    # the 4-d form BiMPM uses: max over the steps of text 2 for each step of text 1
    pair = torch.randn(3, 4, 6, 2, generator=g, dtype=dtype) * scale
    m2 = _mask(g, 3, 6, prefix=True, empty_rows=(1,))[:, None, :].expand(-1, 4, -1)
    assert_same(
        _run(lambda t: masked_max(t, m2, dim=2, ties="first"), pair, seed=seed),
        _run(lambda t: old_text_masked_max(t, m2, dim=2), pair, seed=seed),
    )
    assert_same(
        _run(lambda t: masked_mean(t, m2, dim=2), pair, seed=seed),
        _run(lambda t: old_text_masked_mean(t, m2, dim=2), pair, seed=seed),
    )


def test_masked_max_ties_equal_the_old_versions_in_bfloat16():
    """bfloat16 rounds neighbouring values together: ties are frequent, and the old versions
    differed there (text systems: the first maximum gets the gradient; multimodal: split)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(6, 9, 5, generator=g) * 0.05 + 1.0).to(torch.bfloat16)  # few distinct values
    mask = _mask(g, 6, 9, empty_rows=(2,))
    first = _run(lambda t: masked_max(t, mask, ties="first"), x)
    split = _run(lambda t: masked_max(t, mask, ties="split"), x)
    assert_same(first, _run(lambda t: old_text_masked_max(t, mask), x))
    assert_same(split, _run(lambda t: old_mm_masked_max(t, mask), x))
    assert torch.equal(first[0][0], split[0][0]) and not torch.equal(first[1][0], split[1][0])
    assert torch.equal(masked_max(x, mask), split[0][0])  # default: split


def test_masked_max_tied_maximum_gradient():
    mask = torch.tensor([[True, True, True, False]])
    for ties, want in (("split", [0.5, 0.5, 0.0, 0.0]), ("first", [1.0, 0.0, 0.0, 0.0])):
        x = torch.tensor([[[2.0], [2.0], [1.0], [9.0]]], requires_grad=True)
        masked_max(x, mask, ties=ties).sum().backward()
        assert x.grad[0, :, 0].tolist() == want
    with pytest.raises(ValueError, match="ties"):
        masked_max(x, mask, ties="last")


@pytest.mark.parametrize("seed,scale,dtype", _cases())
def test_soft_pool_equals_the_old_version(seed, scale, dtype):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 9, 5, generator=g, dtype=dtype) * min(scale, 1e3)  # SoftPool of 1e30 overflows exp
    any_real, safe = guard_empty(_mask(g, 6, 9, empty_rows=(0, 3)))
    assert not any_real[0] and safe.any(1).all()
    xg = torch.where(safe.unsqueeze(-1), x, x * 1e6)
    assert_same(
        _run(lambda t: soft_pool(t, safe), xg, seed=seed), _run(lambda t: old_soft_pool(t, safe), xg, seed=seed)
    )


@pytest.mark.parametrize("seed,scale,dtype", _cases())
def test_masked_attention_equals_the_old_version(seed, scale, dtype):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(4, n, 8, generator=g, dtype=dtype) * math.sqrt(scale) for n in (5, 7))
    v = torch.randn(4, 7, 3, generator=g, dtype=dtype)
    mask = _mask(g, 4, 7, empty_rows=(2,))
    for kw in ({}, {"scale": 1.0}, {"scale": 0.3, "return_weights": True}):
        assert_same(
            _run(lambda *t, kw=kw: masked_attention(*t, mask, **kw), q, k, v, seed=seed),
            _run(lambda *t, kw=kw: old_text_masked_attention(*t, mask, **kw), q, k, v, seed=seed),
        )


@pytest.mark.parametrize("seed,scale,dtype", _cases())
def test_attention_pool_equals_both_old_versions(seed, scale, dtype):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(6, 9, 12, generator=g, dtype=dtype) * min(scale, 1e3)
    mask = _mask(g, 6, 9, empty_rows=(1,))
    claim = torch.randn(6, 12, generator=g, dtype=dtype)
    configs = [  # (new pool, old pool, inputs): PRH-Net's defaults, D&R Net's and MCR's configuration
        (dict(), lambda: OldTextAttentionPool(12), ()),
        (dict(hidden=5), lambda: OldTextAttentionPool(12, hidden=5), ()),
        (
            dict(hidden=64, activation="relu", score_bias=True, softmax="shifted", weighted_sum="broadcast"),
            lambda: OldMMAttentionPool(12),
            (),
        ),
        (
            dict(
                claim_dim=12, hidden=64, activation="relu", score_bias=True, softmax="shifted", weighted_sum="broadcast"
            ),
            lambda: OldMMAttentionPool(12, claim_dim=12),
            (claim,),
        ),
    ]
    for opts, make_old, extra in configs:
        torch.manual_seed(seed)
        new = AttentionPool(12, **opts).to(dtype)
        torch.manual_seed(seed)
        old = make_old().to(dtype)
        # same initialisation, same parameter order (optimizer states index parameters by position)
        assert [p.shape for p in new.parameters()] == [p.shape for p in old.parameters()]
        assert all(torch.equal(a, b) for a, b in zip(new.parameters(), old.parameters(), strict=True))
        assert_same(
            _run(lambda t, *c, f=new: f(t, mask, *c), h, *extra, seed=seed),
            _run(lambda t, *c, f=old: f(t, mask, *c), h, *extra, seed=seed),
        )
        new.zero_grad()
        old.zero_grad()
        new(h, mask, *extra).sum().backward()
        old(h, mask, *extra).sum().backward()
        assert all(torch.equal(a.grad, b.grad) for a, b in zip(new.parameters(), old.parameters(), strict=True))


def test_attention_pool_loads_state_dicts_of_the_old_score_network():
    torch.manual_seed(0)
    old = OldMMAttentionPool(8, claim_dim=8)
    outer = nn.ModuleDict({"pool": old})  # prefixed keys, as inside a system
    assert "pool.score.0.weight" in outer.state_dict()
    new = nn.ModuleDict(
        {
            "pool": AttentionPool(
                8,
                claim_dim=8,
                hidden=64,
                activation="relu",
                score_bias=True,
                softmax="shifted",
                weighted_sum="broadcast",
            )
        }
    )
    new.load_state_dict(outer.state_dict())  # strict: every key mapped
    h, mask, claim = torch.randn(3, 4, 8), _mask(torch.Generator().manual_seed(1), 3, 4), torch.randn(3, 8)
    assert torch.equal(new["pool"](h, mask, claim), old(h, mask, claim))
    new.load_state_dict(new.state_dict())  # the current keys load too


def test_attention_pool_options_are_checked():
    for bad in (dict(activation="gelu"), dict(softmax="plain"), dict(weighted_sum="einsum")):
        with pytest.raises(ValueError):
            AttentionPool(4, **bad)
    with pytest.raises(ValueError, match="claim"):
        AttentionPool(4, claim_dim=2)(torch.randn(1, 3, 4), torch.ones(1, 3, dtype=torch.bool))


def test_mask_helpers_equal_the_old_versions():
    g = torch.Generator().manual_seed(0)
    mask = _mask(g, 7, 6, empty_rows=(0, 4))
    x = _garbage(torch.randn(7, 6, 3, generator=g), mask, g)
    assert torch.equal(has_any(mask), old_has_any(mask))
    assert torch.equal(zero_padding(x, mask), old_zero_padding(x, mask))
    for a, b in zip(guard_empty(mask), old_guard_empty(mask), strict=True):
        assert torch.equal(a, b)
    prefix = _mask(g, 7, 6, prefix=True, empty_rows=(3,))
    assert torch.equal(lengths_from_mask(prefix), old_lengths_from_mask(prefix))


# ============================================================================ invariants


def test_masked_softmax_zero_on_padding_and_empty_rows():
    for method in ("fused", "shifted"):
        scores = torch.tensor([[1.0, 2.0, 50.0], [3.0, 4.0, 5.0]], requires_grad=True)
        mask = torch.tensor([[True, True, False], [False, False, False]])
        w = masked_softmax(scores, mask, method=method)
        ref = torch.softmax(torch.tensor([1.0, 2.0]), 0)
        assert torch.allclose(w[0, :2], ref) and w[0, 2] == 0
        assert torch.equal(w[1], torch.zeros(3))
        w.sum().backward()
        assert torch.isfinite(scores.grad).all()


def test_masked_softmax_shifted_all_minus_inf_row_is_zero():
    w = masked_softmax(
        torch.tensor([[float("-inf"), float("-inf")]]), torch.ones(1, 2, dtype=torch.bool), method="shifted"
    )
    assert torch.equal(w, torch.zeros(1, 2))


def test_masked_pooling_matches_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    mean, mx = masked_mean(x, mask), masked_max(x, mask)
    for b in range(3):
        n = int(mask[b].sum())
        want_mean = x[b, :n].mean(0) if n else torch.zeros(4)
        want_max = x[b, :n].max(0).values if n else torch.zeros(4)
        assert torch.allclose(mean[b], want_mean, atol=1e-6)
        assert torch.allclose(mx[b], want_max)


def test_masked_primitives_known_values_and_empty_rows():
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[5.0], [6.0], [7.0]]])  # (2, 3, 1)
    m = torch.tensor([[True, True, False], [False, False, False]])
    assert masked_mean(x, m)[:, 0].tolist() == [2.0, 0.0]
    assert masked_max(x, m)[:, 0].tolist() == [3.0, 0.0]
    w = masked_softmax(torch.tensor([[0.0, 0.0, 50.0], [1.0, 2.0, 3.0]]), m, method="shifted")
    assert torch.allclose(w, torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]))


def test_soft_pool_known_values_and_mask():
    x = torch.tensor([[[0.0, 1.0], [math.log(3.0), 1.0], [100.0, -7.0]]])  # (1, 3, 2)
    mask = torch.tensor([[True, True, False]])
    out = soft_pool(x, mask)
    # feature 0: weights [1/4, 3/4] -> 0.75 ln 3; feature 1: equal values -> 1
    assert out[0].tolist() == pytest.approx([0.75 * math.log(3.0), 1.0])
    assert masked_mean(x, mask)[0].tolist() == pytest.approx([0.5 * math.log(3.0), 1.0])
    assert masked_mean(x, torch.zeros(1, 3, dtype=torch.bool)).tolist() == [[0.0, 0.0]]


def test_masked_attention_matches_unpadded_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 8, generator=g) for _ in range(3))
    mask = torch.tensor([[True, True, False], [False, False, False]])
    out = masked_attention(q, k, v, mask)
    ref = torch.softmax(q[0] @ k[0, :2].T / 8**0.5, -1) @ v[0, :2]
    assert torch.allclose(out[0], ref, atol=1e-6)
    assert torch.equal(out[1], torch.zeros(3, 8))


@pytest.mark.parametrize(
    "opts", [{}, dict(claim_dim=4, activation="relu", softmax="shifted", weighted_sum="broadcast")]
)
def test_attention_pool_ignores_padding(opts):
    torch.manual_seed(0)
    pool = AttentionPool(4, **opts)
    claim = (torch.randn(1, 4),) if opts else ()
    h = torch.randn(1, 3, 4)
    mask = torch.tensor([[True, True, False]])
    h2 = h.clone()
    h2[0, 2] = 1e3
    assert torch.allclose(pool(h, mask, *claim), pool(h2, mask, *claim))
    assert torch.allclose(pool(h, mask, *claim), pool(h[:, :2], mask[:, :2], *claim), atol=1e-6)
    assert torch.equal(pool(h, torch.zeros_like(mask), *claim), torch.zeros(1, 4))


def test_non_prefix_mask_is_rejected():
    with pytest.raises(DataError, match="row 1 is not a prefix mask"):
        lengths_from_mask(torch.tensor([[True, False], [False, True]]))


def test_module_examples():
    assert doctest.testmod(masked_module).failed == 0
