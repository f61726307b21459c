"""Eq. 13-16: ranking hinge, label-gap hinge, weighted L1, uncertainty weighting, total loss."""

from __future__ import annotations

import math

import pytest
import torch

from mmss_lib.data.batch import ModelOutput
from mmss_lib.models.losses import UncertaintyWeighting, label_gap_hinge, mmss_subtask_loss, ranking_hinge, weighted_l1


def test_ranking_hinge_known_values():  # Eq. 13
    s_pos = torch.tensor([2.0, 0.5, -1.0])
    s_neg = torch.tensor([0.0, 0.0, 0.0])
    # max(0, 1-2) = 0, max(0, 1-0.5) = 0.5, max(0, 1+1) = 2 -> mean 2.5/3
    assert ranking_hinge(s_pos, s_neg).item() == pytest.approx(2.5 / 3)
    assert ranking_hinge(s_pos, s_neg, margin=0.0).item() == pytest.approx(1.0 / 3)


def test_ranking_hinge_gradient_only_on_violated_pairs():
    s_pos = torch.tensor([2.0, 0.5], requires_grad=True)
    s_neg = torch.tensor([0.0, 0.0], requires_grad=True)
    ranking_hinge(s_pos, s_neg).backward()
    assert s_pos.grad.tolist() == [0.0, -0.5]
    assert s_neg.grad.tolist() == [0.0, 0.5]


def test_ranking_hinge_empty_is_attached_zero():
    s = torch.zeros(0, requires_grad=True)
    loss = ranking_hinge(s, s.clone())
    assert loss.item() == 0.0 and loss.requires_grad


def test_ranking_hinge_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        ranking_hinge(torch.zeros(3), torch.zeros(2))


def test_label_gap_hinge_known_values():  # MCR's loss
    s_pos, s_neg = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])
    y_pos, y_neg = torch.tensor([4.0, 2.0]), torch.tensor([1.0, 0.0])
    # max(0, 3 - 1) = 2, max(0, 2 - 3) = 0 -> mean 1
    assert label_gap_hinge(s_pos, s_neg, y_pos, y_neg).item() == pytest.approx(1.0)


def test_weighted_l1_known_values_and_detached_weight():  # Eq. 14
    pred = torch.tensor([1.0, 3.0, 2.0], requires_grad=True)
    target = torch.tensor([2.0, 2.5, 2.0], requires_grad=True)
    y_g = torch.tensor([1.0, 2.5, 4.0])
    w = [math.tanh(1.0), 0.0, math.tanh(2.0)]
    expected = (w[0] * 1.0 + w[1] * 0.5 + w[2] * 0.0) / 3
    loss = weighted_l1(pred, target, y_g)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # d/dpred = w * sign(pred - target) / n; nothing flows into the pseudo label
    assert pred.grad.tolist() == pytest.approx([-w[0] / 3, 0.0, 0.0], abs=1e-7)
    assert target.grad is None


def test_weighted_l1_zero_in_first_epoch():  # Eq. 12 + 14: y_s = y_g -> W = 0
    y = torch.tensor([0.0, 3.0, 4.0])
    assert weighted_l1(torch.randn(3), y, y).item() == 0.0


def test_uncertainty_weighting_matches_eq15():
    uw = UncertaintyWeighting(3)
    sigma = torch.tensor([0.5, 1.0, 2.0])
    with torch.no_grad():
        uw.log_var.copy_(torch.log(sigma**2))
    losses = torch.tensor([1.0, 2.0, 3.0])
    expected = (losses / (2 * sigma**2)).sum() + torch.log(sigma.prod())  # Eq. 15 as printed
    assert uw(losses).item() == pytest.approx(expected.item(), rel=1e-6)
    assert uw(list(losses)).item() == pytest.approx(expected.item(), rel=1e-6)


def test_uncertainty_weighting_optimum_is_log_loss():
    uw = UncertaintyWeighting(2)
    losses = torch.tensor([0.5, 2.0])
    with torch.no_grad():
        uw.log_var.copy_(torch.log(losses))
    uw(losses).backward()
    assert uw.log_var.grad.abs().max().item() < 1e-6


def test_uncertainty_weighting_bad_count():
    with pytest.raises(ValueError, match="expected 2 task losses"):
        UncertaintyWeighting(2)(torch.ones(3))


class _FakeModel:
    subtasks = ("ptrt", "rtrv")
    uncertainty = UncertaintyWeighting(2)


def test_mmss_subtask_loss_combines_eq14_and_eq15():
    out = ModelOutput(
        score=torch.zeros(2), sub_scores={"ptrt": torch.tensor([1.0, 2.0]), "rtrv": torch.tensor([0.0, 0.0])}
    )
    y_g = torch.tensor([1.0, 1.0])
    labels = {"ptrt": torch.tensor([2.0, 1.0]), "rtrv": torch.tensor([1.0, 3.0])}
    l1 = weighted_l1(out.sub_scores["ptrt"], labels["ptrt"], y_g)
    l2 = weighted_l1(out.sub_scores["rtrv"], labels["rtrv"], y_g)
    # log_var = 0 -> 0.5 * (L1 + L2)
    assert mmss_subtask_loss(out, labels, y_g, _FakeModel()).item() == pytest.approx(0.5 * (l1 + l2).item())


def test_mmss_subtask_loss_without_subtasks_is_zero():
    class NoSub:
        subtasks = ()

    out = ModelOutput(score=torch.ones(3, requires_grad=True))
    loss = mmss_subtask_loss(out, {}, torch.zeros(3), NoSub())
    assert loss.item() == 0.0 and loss.requires_grad
