"""The equations of SSP-Label (paper Eq. 10-12, 17-21) and the reading this project takes of each.

The paper leaves several symbols undefined. This module docstring is the one place that states
the reading implemented here, equation by equation; every addition to the paper is marked
**added**. Notation: k ranges over the tasks {g} + subtasks (s in ptrt, pvrv, ptrv, pvrt, rtrv);
f*_k(i) is the latest detached representation of training sample i for task k (f*_g of Eq. 7,
f*_s of Eq. 9); y_g(i) is the human label; y_s(i) the current pseudo label.

Banks (as in Self-MM, docs/MRHP.md section 6). Per training sample, indexed by a stable
sample index 0..N-1: the last f*_k(i) of every task (stored after each batch's loss and step),
and the pseudo labels. A sample enters the statistics below at its first visit; before that it
does not count, and its pseudo labels stay y_g.

Eq. 17 (anchor). A_k = sum_i w_k(i) f*_k(i) / sum_i w_k(i) over the samples in the bank, with
    w_k(i) = sigmoid(y_k(i) - pivot).
  * epsilon_ik ("the modification value of sample i in task k") is read as the bank feature
    f*_k(i): the anchor has to live in f*_k's space for the distance of Eq. 18.
  * y_k = y_g for k = g and the pseudo label in force y_s for a subtask.
  * The paper's sigma(y_k) with labels 0..4 would weight every sample above 1/2; the pivot
    (default 1.5, between Amazon's relevance threshold 1 and the next level; use 0.5 for
    Lazada's threshold 0) centres the sigmoid so the anchor leans to helpful reviews, the role
    the positive centre plays in Self-MM. The pivot only moves the anchor; with the scale below
    it cannot bias the sign of the offsets (the distances are normalised around whatever anchor).

Eq. 18 (distance). chi_k(i) = m_k(i) / sqrt(s_k), m_k(i) = sqrt((f*_k(i) - A_k)^T Sigma'_k^-1 (f*_k(i) - A_k)):
  * Sigma_k = the (population, unweighted) covariance of f*_k over the bank, shrunk towards a
    scaled identity and ridged so it stays invertible with few samples or collapsed features:
        Sigma'_k = (1 - lambda) Sigma_k + lambda * tr(Sigma_k)/d_k * I + ridge * I,
    lambda = ``shrinkage`` (0.05), ridge = ``ridge`` (1e-6). ("The covariance between f*_k and
    the anchor" is not a defined quantity; the covariance of the feature distribution is what
    makes the Mahalanobis distance scale-free, the purpose the paper states.)
  * s_k ("a scale factor") makes the distances of different tasks comparable whatever the rank
    of each representation. ``scale="mean"``: s_k = (mean over the bank of m_k)^2, so
    the bank's mean chi_k is exactly 1 for every task. ``scale="rms"``: s_k = the bank's mean
    squared distance = tr(Sigma'^-1 (C_k + (mu_k - A_k)(mu_k - A_k)^T)) from the running sums
    (C_k the unshrunk covariance, mu_k the bank mean), so the bank's mean chi_k^2 is 1.
    ``scale="common"`` (default, :data:`DEFAULT_SCALE`): one scale for every task, the main task's "mean" scale
    s = (bank mean of m_g)^2: chi_g has bank mean 1 and every chi_s is measured with the same
    ruler, so a systematic difference between f*_s and f*_g (the paper's Sec. 4.4 premise
    "f*_g close to the anchor, f*_s remote") survives as a systematic sign of the offsets, which
    "mean" removes by construction (its bank means of chi_s and chi_g are both 1, offsets split
    about 50/50 whatever the data). The main task's scale rather than the dimension d: all tasks
    have d = 128 here, so s = d would be common too, but its offsets would depend on d and on
    the shrinkage, not on the data (E[m^2] ~ effective rank).
    Why "common" is the default: among the three readings it had the best mean dev MAP in this
    project's powered study (a rule fixed before the runs; the readings were not told apart on
    dev), and it is the only one whose offsets can take a systematic sign, the direction of the
    paper's Fig. 4; the figures are in docs/EVIDENCE.md. "mean" and "rms" stay options
    (``TrainConfig.ssp_scale``).
  * The raw sqrt(s_k) of every task is recorded per epoch (``sqrt_s_{k}`` in the records and in
    history.json's SSP health), so m_k = chi_k sqrt(s_k) and every other reading's chi, estimate
    and (up to epoch 2, while the features cannot depend on the reading) labels can be
    recomputed offline from one run (:func:`recompute_reading`).
  * **Stale bank entries** (added). Under MCR's sampler (negatives drawn with replacement,
    products with fewer than three label levels giving no pairs) some training reviews are not
    visited in an epoch; their bank rows hold features of an older model. At the end of an epoch
    the anchor, covariance and scale are computed over the samples refreshed in that epoch only
    (``fresh_only=True``), and only those get a new estimate; the others keep their labels until
    they are visited again. Self-MM, whose loader visits every sample once per epoch, never holds
    a feature older than the epoch; this keeps that property under the ranking sampler. The
    number of stale samples per epoch is ``n_stale`` in the records and the SSP health.
  * **Same footing** (replaces per-batch estimation from fresh features): chi_s and chi_g are
    both computed from the *bank* features against the statistics of the same bank, once per
    epoch at its end. Measured per batch, the fresh f*_g (trained hardest, by the ranking loss)
    sat farther from a bank of stale features than the fresh f*_s, a bias of the bookkeeping,
    not of the data. The paper supports the timing: "y_hat_s^(i) is the estimated value after
    the i-th epoch" (Sec. 4.4).

Eq. 19-21 (pseudo-label estimate). The first line of Eq. 21 is implemented, the equal-weight
average of the ratio rule (Eq. 19) and the difference rule (Eq. 20, whose "rel" is read as chi):
    y_hat_s = (y_g + alpha2 (chi_s - chi_g)) / 2 + alpha1 chi_s y_g / (2 (chi_g + eps)),
    delta_gs = y_hat_s - y_g   (Fig. 3: y_s = y_g + delta_gs).
  * With alpha1 = alpha2 = 1 (eps -> 0): delta_gs = (chi_s - chi_g)(chi_g + y_g) / (2 chi_g), so
    the sign of the offset is the sign of chi_s - chi_g for every label 0..4, up or down, and
    chi_s = chi_g keeps the human label. A review with y_g = 0 moves by (chi_s - chi_g)/2 through
    the difference rule: it is not stuck once the distances are on the same footing.
  * The ratio rule stays around the label origin 0, as written. Evaluated and rejected: the
    ratio around the pivot, pivot + (y_g - pivot) chi_s/chi_g (the label centre, as Self-MM's
    labels are centred at 0). Self-MM's distance term (d_neg - d_pos)/d_pos is signed and
    shares the label's origin; chi >= 0 shares the origin 0 of the labels 0..4 (y/y_g ~
    chi_s/chi_g, Sec. 4.4). Around the pivot the offset would be
    (chi_s - chi_g)(chi_g + y_g - pivot)/(2 chi_g): for y_g < pivot - chi_g the ratio rule and the
    difference rule would point in opposite directions and the offset's sign would flip with the
    label, a structural bias of its own.
  * The later lines of Eq. 21 do not follow algebraically from the first (with alpha = 1 the
    second line gives y_g/2 + chi_s y_g/(chi_g + eps), missing the (chi_s - chi_g)/2 term), and
    their lone "alpha" is undefined, so they are not used.

Eq. 11-12 (EWMA). Epoch i is 1-based; at the end of epoch i (``end_epoch(i)``):
  * i = 1: y_s^(1) = y_g (Eq. 12); the distances and the estimate are computed for the record.
  * i > 1: y_s^(i) = beta y_hat_s^(i) + (1 - beta) y_s^(i-1), beta = 2/(i+1) (Eq. 11), with
    y_hat_s^(i) estimated from the bank after epoch i.
  * y_s^(i) is the label of epoch i + 1's subtask losses (Eq. 14): labels change once per epoch
    ("y_hat_s^(i) is the estimated value after the i-th epoch"). Epochs 1 and 2 would train on
    y_s^(1) = y_g (Eq. 12), where every weight tanh(|y_s - y_g|) of Eq. 14 is 0 and only Eq. 15's
    log-variance terms would move (down, for nothing). So the schedule the paper implies is: the
    subtask objective starts in epoch 3, with the first estimated labels y_s^(2)
    (:attr:`SSPLabel.labels_estimated`; the trainer adds L_sub only from then on).
  * Clamp, **added range**: y_s is clamped to [low - w, high + w] with w = high - low of the human
    label range (0..4 -> [-4, 8]), a guard against the 1/chi_g of Eq. 19 only. The paper's own
    case study (Fig. 4: H = 4 with y_pvrv = -1.277) has pseudo labels outside 0..4, so the human
    range is not the paper's clamp; with it a label-0 review could never move down nor a label-4
    review up. ``clamp=(low, high)`` sets another range.
"""

from __future__ import annotations

SCALES = ("mean", "rms", "common")  # the readings of Eq. 18's scale s_k (module docstring)
DEFAULT_SCALE = "common"  # module docstring, Eq. 18: "Why common is the default"


def pseudo_label_estimate(y_g, chi_s, chi_g, *, alpha1: float = 1.0, alpha2: float = 1.0, eps: float = 1e-6):
    """Eq. 21 (first line): (y_g + a2 (chi_s - chi_g))/2 + a1 chi_s y_g / (2 (chi_g + eps)).
    Tensors or arrays alike.

    Example: y_g = 2, chi_s = 1.5, chi_g = 1, alpha1 = alpha2 = 1, eps = 0 gives
    (2 + 0.5)/2 + 1.5*2/2 = 2.75, i.e. an offset delta_gs = +0.75.
    """
    return (y_g + alpha2 * (chi_s - chi_g)) / 2 + alpha1 * chi_s * y_g / (2 * (chi_g + eps))  # Eq. 21


def ewma(previous, estimate, epoch: int):
    """Eq. 11: beta * estimate + (1 - beta) * previous with beta = 2/(epoch + 1), for epoch > 1."""
    beta = 2.0 / (epoch + 1)
    return beta * estimate + (1.0 - beta) * previous


def shrunk_covariance(cov, shrinkage: float, ridge: float):
    """Eq. 18's Sigma': (1 - lambda) Sigma + lambda tr(Sigma)/d I + ridge I, for a (d, d) tensor."""
    import torch

    d = cov.shape[0]
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    return (1.0 - shrinkage) * cov + (shrinkage * torch.trace(cov) / d + ridge) * eye
