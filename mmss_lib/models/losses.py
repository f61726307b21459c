"""Training objectives of MM-SS (paper Eq. 13-16) and of the MCR line of work.

- :func:`ranking_hinge` — the target-task loss L_tar (Eq. 13): a pairwise hinge with a fixed
  margin between a more helpful review r+ and a less helpful review r- of the same product,
  averaged over the pairs of the batch (the paper writes a sum; the mean only rescales the
  learning rate and keeps the loss independent of the number of pairs sampled).
- :func:`label_gap_hinge` — MCR/MCL's variant whose margin is the label gap y+ - y-
  (docs/MRHP.md section 5), for the comparison systems.
- :func:`weighted_l1` — one subtask's loss L_s (Eq. 14): the L1 error to the pseudo label,
  weighted per sample by W_s = tanh(|y_s - y_g|). The weight (and the pseudo label) are
  constants for the gradient: only the subtask prediction y_hat_s is trained.
- :class:`UncertaintyWeighting` — Eq. 15, homoscedastic uncertainty weighting of the subtask
  losses with one learned log-variance per task.
- :func:`mmss_subtask_loss` — L_sub of an MM-SS forward output: Eq. 14 per subtask combined with
  Eq. 15. The trainer (:func:`mmss_lib.training.trainer.train_step`) sums L = L_tar + L_sub (Eq. 16).

Worked example (Eq. 13, margin 1)::

    >>> ranking_hinge(torch.tensor([2.0, 0.5]), torch.tensor([0.0, 0.0]))
    tensor(0.2500)          # mean(max(0, 1-2+0), max(0, 1-0.5+0)) = mean(0, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mmss_lib.data.batch import ModelOutput


def _check_same_shape(name: str, **tensors: Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{name}: inputs must have the same shape, got {shapes}")


def _zero_like(t: Tensor) -> Tensor:
    """A zero scalar that stays attached to the graph of ``t`` (empty batches of pairs)."""
    return t.sum() * 0.0


def ranking_hinge(s_pos: Tensor, s_neg: Tensor, margin: float = 1.0) -> Tensor:
    """Eq. 13: mean over pairs of max(0, margin - s(r+) + s(r-)).

    ``s_pos`` / ``s_neg`` are the predicted scores (P,) of the more / less helpful review of
    each pair. With no pairs (P = 0) the loss is an attached zero.
    """
    _check_same_shape("ranking_hinge", s_pos=s_pos, s_neg=s_neg)
    if s_pos.numel() == 0:
        return _zero_like(s_pos)
    return torch.clamp(margin - s_pos + s_neg, min=0.0).mean()  # Eq. 13


def label_gap_hinge(s_pos: Tensor, s_neg: Tensor, y_pos: Tensor, y_neg: Tensor) -> Tensor:
    """MCR's pairwise loss: mean of max(0, (y+ - y-) - (s+ - s-)), the margin is the label gap."""
    _check_same_shape("label_gap_hinge", s_pos=s_pos, s_neg=s_neg, y_pos=y_pos, y_neg=y_neg)
    if s_pos.numel() == 0:
        return _zero_like(s_pos)
    gap = (y_pos - y_neg).to(s_pos.dtype)
    return torch.clamp(gap - (s_pos - s_neg), min=0.0).mean()


def weighted_l1(pred: Tensor, target: Tensor, y_g: Tensor) -> Tensor:
    """Eq. 14 for one subtask: mean_i tanh(|y_s(i) - y_g(i)|) * |y_hat_s(i) - y_s(i)|.

    ``pred`` is y_hat_s (B,), ``target`` the pseudo label y_s (B,), ``y_g`` the human label (B,).
    The weight W_s and the target are detached: the gradient reaches ``pred`` only. In the first
    epoch y_s = y_g (Eq. 12), so every weight, hence the loss, is exactly zero.
    """
    _check_same_shape("weighted_l1", pred=pred, target=target, y_g=y_g)
    if pred.numel() == 0:
        return _zero_like(pred)
    target = target.detach().to(pred.dtype)
    weight = torch.tanh((target - y_g.detach().to(pred.dtype)).abs())  # W_s of Eq. 14
    return (weight * (pred - target).abs()).mean()


class UncertaintyWeighting(nn.Module):
    """Eq. 15: homoscedastic uncertainty weighting of ``n_tasks`` losses (Kendall et al.).

    With one learned s_k = log sigma_k^2 per task,

        L = sum_k 0.5 * exp(-s_k) * L_k + 0.5 * s_k,

    which is exactly Eq. 15's sum_k L_k / (2 sigma_k^2) + log(sigma_1 ... sigma_n), since
    exp(-s_k) = 1 / sigma_k^2 and 0.5 * s_k = log sigma_k. Learning the log-variance instead of
    sigma keeps sigma positive without a constraint. For a fixed L_k > 0 the minimum over s_k is
    at s_k = log L_k. Starting at s_k = 0 (sigma_k = 1) the first step weights every task 1/2.

    The parameters live in the model (``MMSS.uncertainty``) so they are saved with its state.
    """

    def __init__(self, n_tasks: int, init_log_var: float = 0.0):
        super().__init__()
        if n_tasks < 1:
            raise ValueError(f"UncertaintyWeighting needs at least one task, got n_tasks={n_tasks}")
        self.log_var = nn.Parameter(torch.full((n_tasks,), float(init_log_var)))  # s_k = log sigma_k^2

    @property
    def n_tasks(self) -> int:
        return int(self.log_var.shape[0])

    def forward(self, losses: Sequence[Tensor] | Tensor) -> Tensor:
        """Combine per-task scalar losses, given in task order, into one scalar (Eq. 15)."""
        losses = torch.stack(list(losses)) if not isinstance(losses, Tensor) else losses
        if losses.shape != (self.n_tasks,):
            raise ValueError(
                f"UncertaintyWeighting: expected {self.n_tasks} task losses, got shape {tuple(losses.shape)}"
            )
        s = self.log_var
        return (0.5 * torch.exp(-s) * losses + 0.5 * s).sum()  # Eq. 15

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}"


def mmss_subtask_loss(output: ModelOutput, batch_labels: dict[str, Tensor], y_g: Tensor, model) -> Tensor:
    """L_sub of MM-SS for one batch: Eq. 14 per subtask, combined with Eq. 15.

    ``batch_labels`` maps each subtask of ``model.subtasks`` to its pseudo labels for the batch
    (``SSPLabel.labels(batch.index)``); ``y_g`` are the human labels (B,). A model without
    subtasks (ablations "w/o module (b)" / "w/o module (d)") gives an attached zero.
    """
    subtasks = tuple(getattr(model, "subtasks", ()))
    if not subtasks:
        return _zero_like(output.score)
    missing = [s for s in subtasks if s not in batch_labels or s not in output.sub_scores]
    if missing:
        raise KeyError(f"mmss_subtask_loss: no pseudo labels or subtask output for {missing}")
    y_g = y_g.to(output.score.device)
    losses = [
        weighted_l1(output.sub_scores[s], batch_labels[s].to(output.score.device), y_g) for s in subtasks
    ]  # Eq. 14, one L_s per subtask
    return model.uncertainty(losses)  # Eq. 15
