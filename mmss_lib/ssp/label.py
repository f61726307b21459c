"""SSP-Label: self-supervised pseudo labels for the MM-SS subtasks (paper Eq. 10-12, 17-21).

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
    Why "common" is the default. The three readings were compared on powered generated data
    (``mmss bench powered --phases main scales``: electronics, 200 training / 100 dev / 2,100
    test products, MM-SS full under each reading and w/o (d), 3 seeds each), and the rule fixed
    before any of these runs existed was: the reading with the best mean dev MAP becomes the
    default, never test. Mean dev MAP x100 over the seeds (sd): common 85.22 (0.53), mean 84.91
    (0.54), rms 84.90 (0.57), so the rule picks "common". The dev evidence is weak: per product
    (dev AP averaged over the seeds, paired bootstrap over the 100 dev products), common - mean
    = +0.31 [-0.35, +0.96]: the readings are not told apart on dev, nor is any of them from
    w/o (d) on test (full - w/o (d): mean -0.13 [-0.32, 0.06], rms +0.12 [-0.07, 0.33], common
    -0.16 [-0.34, 0.01]). What does tell them apart is the labels: under "common" 85-95% of the
    offsets point down, label-4 reviews move down by 0.33-0.66 on average (best epoch, every
    subtask), the direction of the paper's Fig. 4 (an H = 4 review below 4 in all five
    subtasks, if by 1.7-5.3); under "mean" and "rms" the offsets split about 50/50 by
    construction. The rule and this fidelity point agree, so "common" is the default; "mean"
    (bank mean chi_k = 1 for every task, the neutral point chi_s - chi_g = 0 the typical case)
    and "rms" stay options (``TrainConfig.ssp_scale``).
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

Bookkeeping cost. The statistics are running float64 sums per task: sum of weights, weighted
feature sum (anchor), count, feature sum and sum of outer products (covariance). A batch
replaces its samples' old bank entries: the sums change by (new - old) contributions, O(B d^2)
per task; nothing is O(N) per batch. ``end_epoch`` recomputes the sums from the banks (cancels
floating-point drift) and computes the distances of every sample once, O(N d^2) per task.

Records. ``end_epoch`` appends a record (per review: pseudo labels, offsets y_s - y_g, the raw
estimate y_hat_s and the distances chi_s, chi_g of this epoch's end (NaN for stale samples);
per task the raw ``sqrt_s_{k}``; ``n_stale``; per subtask the health scalars ``share_up_{s}`` / ``share_down_{s}`` (share of seen reviews with an offset above / below
zero), ``mean_chi_{s}``, ``mean_chi_g``, ``mean_change_{s}`` (mean |y_s^(i) - y_s^(i-1)|, the
EWMA settling) and ``n_seen``) that ``record(epoch)`` returns as numpy arrays for plots;
:func:`ssp_health` turns a record into a JSON-able dict (the trainer's history.json).
``state_dict`` / ``load_state_dict`` resume exactly.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmss_lib.errors import CheckpointError, TrainingError

_STATE_VERSION = 3  # 2: per-epoch estimation from the bank, scale option, widened clamp; 3: fresh-only statistics
SCALES = ("mean", "rms", "common")
DEFAULT_SCALE = "common"  # chosen on dev MAP (module docstring, Eq. 18)
# Banks whose float32 size would exceed this are kept in float16 by default (bank_dtype=None).
AUTO_FLOAT16_BYTES = 64 * 2**20
_FLOAT16_MAX = 65504.0


def _finite(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x)]


def pseudo_label_estimate(
    y_g: Tensor, chi_s: Tensor, chi_g: Tensor, *, alpha1: float = 1.0, alpha2: float = 1.0, eps: float = 1e-6
) -> Tensor:
    """Eq. 21 (first line): (y_g + a2 (chi_s - chi_g))/2 + a1 chi_s y_g / (2 (chi_g + eps)).

    Example: y_g = 2, chi_s = 1.5, chi_g = 1, alpha1 = alpha2 = 1, eps = 0 gives
    (2 + 0.5)/2 + 1.5*2/2 = 2.75, i.e. an offset delta_gs = +0.75.
    """
    return (y_g + alpha2 * (chi_s - chi_g)) / 2 + alpha1 * chi_s * y_g / (2 * (chi_g + eps))  # Eq. 21


def ewma(previous: Tensor, estimate: Tensor, epoch: int) -> Tensor:
    """Eq. 11: beta * estimate + (1 - beta) * previous with beta = 2/(epoch + 1), for epoch > 1."""
    beta = 2.0 / (epoch + 1)
    return beta * estimate + (1.0 - beta) * previous


def shrunk_covariance(cov: Tensor, shrinkage: float, ridge: float) -> Tensor:
    """Eq. 18's Sigma': (1 - lambda) Sigma + lambda tr(Sigma)/d I + ridge I."""
    d = cov.shape[0]
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    return (1.0 - shrinkage) * cov + (shrinkage * torch.trace(cov) / d + ridge) * eye


class SSPLabel:
    """Per-sample banks, anchors (Eq. 17), Mahalanobis distances (Eq. 18), offsets (Eq. 19-21)
    and EWMA pseudo labels (Eq. 11-12) over a training set of ``n_samples`` reviews.

    ``y_g`` (N,) are the human labels; ``dims`` maps "g" and each subtask to the size of its
    representation. See the module docstring for the reading of each equation. Lives on the CPU;
    features given to :meth:`update` may be on any device.

    Memory: the banks (N x d per task) are the only large state. ``bank_dtype=None`` keeps them in
    float32 while that takes at most :data:`AUTO_FLOAT16_BYTES` (64 MiB) and in float16 beyond
    (the running sums are always float64 over the values *as stored*, so the statistics stay
    consistent with the banks; a feature beyond float16's range is refused). ``bank_dir``: keep
    the banks in memory-mapped files ``bank_{task}.bin`` in that folder (created; existing files
    are overwritten) instead of anonymous memory, like the memory-mapped feature stores: the
    kernel can write them back and drop them under memory pressure. :meth:`close` removes them.
    """

    def __init__(
        self,
        n_samples: int,
        y_g: Tensor,
        dims: dict[str, int],
        *,
        alpha1: float = 1.0,
        alpha2: float = 1.0,
        pivot: float = 1.5,
        shrinkage: float = 0.05,
        ridge: float = 1e-6,
        eps: float = 1e-6,
        label_range: tuple[float, float] = (0.0, 4.0),
        scale: str = DEFAULT_SCALE,
        clamp: tuple[float, float] | None = None,
        bank_dtype: torch.dtype | None = None,
        max_history: int | None = None,
        bank_dir: str | os.PathLike | None = None,
        fresh_only: bool = True,
    ):
        y_g = torch.as_tensor(y_g).detach().to("cpu", torch.float64).reshape(-1)
        if int(n_samples) != y_g.shape[0]:
            raise TrainingError(f"SSPLabel: n_samples={n_samples} but y_g has {y_g.shape[0]} labels")
        if "g" not in dims:
            raise TrainingError(f"SSPLabel: dims must contain the global task 'g', got keys {list(dims)}")
        if not 0.0 < shrinkage <= 1.0:
            raise TrainingError(f"SSPLabel: shrinkage must be in (0, 1], got {shrinkage}")
        lo, hi = float(label_range[0]), float(label_range[1])
        if not lo < hi:
            raise TrainingError(f"SSPLabel: label_range must be (low, high) with low < high, got {label_range}")
        if scale not in SCALES:
            raise TrainingError(f"SSPLabel: scale must be one of {SCALES}, got {scale!r}")
        if clamp is None:
            clamp = (lo - (hi - lo), hi + (hi - lo))  # module docstring: the added clamp range
        if not float(clamp[0]) < float(clamp[1]):
            raise TrainingError(f"SSPLabel: clamp must be (low, high) with low < high, got {clamp}")
        self.n_samples = int(n_samples)
        self.dims = {k: int(v) for k, v in dims.items()}
        self.tasks = ("g",) + tuple(k for k in dims if k != "g")
        self.subtasks = self.tasks[1:]
        self.alpha1, self.alpha2, self.pivot = float(alpha1), float(alpha2), float(pivot)
        self.shrinkage, self.ridge, self.eps = float(shrinkage), float(ridge), float(eps)
        self.label_range = (lo, hi)
        self.scale_mode = str(scale)
        self.clamp = (float(clamp[0]), float(clamp[1]))
        self.max_history = max_history
        n = self.n_samples
        self.y_g = y_g
        self.epoch = 0  # last closed epoch; update() runs in epoch + 1
        self.seen = torch.zeros(n, dtype=torch.bool)
        self.last_visit = torch.zeros(n, dtype=torch.int64)  # epoch of the last update (0: never)
        self.fresh_only = bool(fresh_only)
        self._stats_mask: Tensor | None = None  # None: the statistics cover every seen sample
        if bank_dtype is None:
            f32_bytes = 4 * n * sum(self.dims.values())
            bank_dtype = torch.float32 if f32_bytes <= AUTO_FLOAT16_BYTES else torch.float16
        self.bank_dtype = bank_dtype
        self.bank_dir = Path(bank_dir) if bank_dir is not None else None
        self.bank = {k: self._new_bank(k, n, d) for k, d in self.dims.items()}
        self.weight = {k: torch.zeros(n, dtype=torch.float64) for k in self.tasks}  # w_k(i) of Eq. 17
        self.y_prev = {s: y_g.clone() for s in self.subtasks}  # y_s^(i-1): label at the end of the last epoch
        self.y_cur = {s: y_g.clone() for s in self.subtasks}  # y_s^(i): current label
        self.estimate_bank = {s: torch.full((n,), float("nan"), dtype=torch.float64) for s in self.subtasks}
        self.chi = {k: torch.full((n,), float("nan"), dtype=torch.float64) for k in self.tasks}
        self._zero_sums()
        self.history: list[dict[str, np.ndarray]] = []

    def _new_bank(self, task: str, n: int, d: int) -> Tensor:
        """A zeroed (n, d) bank: anonymous memory, or a memory-mapped file in ``bank_dir``."""
        if self.bank_dir is None:
            return torch.zeros(n, d, dtype=self.bank_dtype)
        self.bank_dir.mkdir(parents=True, exist_ok=True)
        np_dtype = torch.empty(0, dtype=self.bank_dtype).numpy().dtype
        mm = np.memmap(self.bank_dir / f"bank_{task}.bin", dtype=np_dtype, mode="w+", shape=(max(n, 1), d))
        return torch.from_numpy(mm)[:n]  # (n, d), zeros (fresh file)

    def close(self) -> None:
        """Drop memory-mapped bank files (``bank_dir``); the object is unusable afterwards."""
        if self.bank_dir is None:
            return
        self.bank = {}
        for k in self.dims:
            try:
                (self.bank_dir / f"bank_{k}.bin").unlink()
            except FileNotFoundError:
                pass
        try:
            self.bank_dir.rmdir()
        except OSError:
            pass

    # ---------------------------------------------------------------- running statistics
    def _zero_sums(self) -> None:
        f64 = torch.float64
        self.count = 0
        self.sum_w = {k: torch.zeros((), dtype=f64) for k in self.tasks}  # sum_i w_k(i)
        self.sum_wf = {k: torch.zeros(d, dtype=f64) for k, d in self.dims.items()}  # sum_i w_k(i) f_k(i)
        self.sum_f = {k: torch.zeros(d, dtype=f64) for k, d in self.dims.items()}  # sum_i f_k(i)
        self.sum_ff = {k: torch.zeros(d, d, dtype=f64) for k, d in self.dims.items()}  # sum_i f_k(i) f_k(i)^T

    @property
    def in_stats(self) -> Tensor:
        """(N,) bool: the samples the anchor, covariance and scale are computed over: every seen
        sample, except inside :meth:`end_epoch` with ``fresh_only`` (those updated this epoch)."""
        return self.seen if self._stats_mask is None else self._stats_mask

    def recompute_statistics(self, chunk: int = 65536) -> None:
        """Rebuild every running sum from the banks (O(N d^2)); used at epoch end and in tests."""
        self._zero_sums()
        idx = torch.nonzero(self.in_stats).squeeze(1)
        self.count = int(idx.numel())
        for start in range(0, idx.numel(), chunk):
            j = idx[start : start + chunk]
            for k in self.tasks:
                f = self.bank[k][j].to(torch.float64)  # (n, d)
                w = self.weight[k][j]  # (n,)
                self.sum_w[k] += w.sum()
                self.sum_wf[k] += w @ f
                self.sum_f[k] += f.sum(0)
                self.sum_ff[k] += f.T @ f

    def anchor(self, task: str) -> Tensor:
        """Eq. 17: A_k = sum_i w_k(i) f*_k(i) / sum_i w_k(i) over the bank, (d,) float64."""
        return self.sum_wf[task] / self.sum_w[task].clamp(min=1e-12)

    def covariance(self, task: str) -> Tensor:
        """Eq. 18's Sigma'_k: shrunk, ridged population covariance of f*_k over the bank, (d, d)."""
        n = max(self.count, 1)
        mean = self.sum_f[task] / n
        cov = self.sum_ff[task] / n - torch.outer(mean, mean)
        cov = 0.5 * (cov + cov.T)
        return shrunk_covariance(cov, self.shrinkage, self.ridge)

    def mahalanobis(self, task: str, features: Tensor) -> Tensor:
        """m_k of Eq. 18 (before the scale): Mahalanobis distance of each row of ``features``
        (B, d) to the current anchor under Sigma'_k, (B,) float64."""
        f = features.detach().to("cpu", torch.float64)
        diff = (f - self.anchor(task)).T  # (d, B)
        chol = torch.linalg.cholesky(self.covariance(task))  # Sigma' = L L^T
        z = torch.linalg.solve_triangular(chol, diff, upper=False)  # (d, B); |z|^2 = diff^T Sigma'^-1 diff
        return torch.sqrt((z * z).sum(0))

    def mean_squared_distance(self, task: str) -> float:
        """The bank's mean squared Mahalanobis distance to the anchor from the running sums:
        tr(Sigma'^-1 (C + (mu - A)(mu - A)^T)), C the (unshrunk) covariance, mu the bank mean."""
        n = max(self.count, 1)
        mean = self.sum_f[task] / n
        cov = self.sum_ff[task] / n - torch.outer(mean, mean)
        dm = mean - self.anchor(task)
        second = 0.5 * (cov + cov.T) + torch.outer(dm, dm)  # E[(f - A)(f - A)^T] over the bank
        chol = torch.linalg.cholesky(self.covariance(task))
        return float(torch.trace(torch.cholesky_solve(second, chol)))

    def bank_mahalanobis(self, task: str, chunk: int = 65536) -> Tensor:
        """m_k of every bank row (N,) float64; NaN for samples outside :attr:`in_stats`."""
        out = torch.full((self.n_samples,), float("nan"), dtype=torch.float64)
        idx = torch.nonzero(self.in_stats).squeeze(1)
        for start in range(0, idx.numel(), chunk):
            j = idx[start : start + chunk]
            out[j] = self.mahalanobis(task, self.bank[task][j])
        return out

    def scale(self, task: str, bank_m: Tensor | None = None) -> float:
        """s_k of Eq. 18 (module docstring): "mean": (bank mean of m_k)^2; "rms": the bank's mean
        squared distance; "common": the main task's "mean" scale (bank mean of m_g)^2 for every
        task. ``bank_m``: the bank's m_k if already computed (ignored for "common" unless
        ``task`` is "g")."""
        if self.scale_mode == "rms":
            s = self.mean_squared_distance(task)
        else:
            if self.scale_mode == "common" and task != "g":
                task, bank_m = "g", None
            m = self.bank_mahalanobis(task) if bank_m is None else bank_m
            m = m[self.in_stats]
            s = float(m.mean()) ** 2 if m.numel() else 0.0
        return max(s, 1e-12)

    def distance(self, task: str, features: Tensor) -> Tensor:
        """Eq. 18: chi_k of each row of ``features`` (B, d) to the current anchor, scaled by the
        bank's s_k, (B,) float64."""
        return self.mahalanobis(task, features) / math.sqrt(self.scale(task))

    # ---------------------------------------------------------------- API used by the trainer
    def _check_index(self, index: Tensor) -> Tensor:
        idx = torch.as_tensor(index).detach().to("cpu", torch.int64).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.n_samples):
            raise TrainingError(
                f"SSPLabel: sample index out of range 0..{self.n_samples - 1} "
                f"(got min {int(idx.min())}, max {int(idx.max())}); only training samples have banks"
            )
        return idx

    @property
    def labels_estimated(self) -> bool:
        """Whether the labels in force come from an estimate (Eq. 11 ran: after epoch 2); before,
        they are y_g and Eq. 14's weights are all 0 (module docstring, Eq. 11-12)."""
        return self.epoch >= 2

    def labels(self, index: Tensor) -> dict[str, Tensor]:
        """Current pseudo labels y_s^(i) (B,) float32 of the batch, on ``index``'s device."""
        device = index.device if isinstance(index, Tensor) else "cpu"
        idx = self._check_index(index)
        return {s: self.y_cur[s][idx].to(device=device, dtype=torch.float32) for s in self.subtasks}

    def estimate(self, index: Tensor, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """Eq. 18-21 for given features without changing any state, against the current bank
        statistics and scales: {s: y_hat_s, "chi_"+k: chi_k} (B,). (Training estimates from the
        bank itself in :meth:`end_epoch`; this is for analyses and tests.)"""
        idx = self._check_index(index)
        chi = {k: self.distance(k, features[k]) for k in self.tasks}
        y_g = self.y_g[idx]
        out = {f"chi_{k}": chi[k] for k in self.tasks}
        for s in self.subtasks:
            out[s] = pseudo_label_estimate(
                y_g, chi[s], chi["g"], alpha1=self.alpha1, alpha2=self.alpha2, eps=self.eps
            )  # Eq. 19-21
        return out

    def update(self, index: Tensor, features: dict[str, Tensor], epoch: int) -> None:
        """After a batch's loss/backward: store the batch's features in the banks (Self-MM's order:
        loss, then store). The pseudo labels change only in :meth:`end_epoch`.

        ``features``: "g" and every subtask -> detached (B, d_k). ``epoch`` is 1-based and must be
        the open epoch (``self.epoch + 1``). A sample index given twice keeps its last row.
        """
        epoch = int(epoch)
        if epoch != self.epoch + 1:
            raise TrainingError(
                f"SSPLabel.update: epoch {epoch} given, but the open epoch is {self.epoch + 1} "
                f"(call end_epoch({self.epoch + 1}) after each epoch; epochs are 1-based)"
            )
        idx = self._check_index(index)
        missing = [k for k in self.tasks if k not in features]
        if missing:
            raise TrainingError(f"SSPLabel.update: features lack task(s) {missing}; expected {list(self.tasks)}")
        feats = {}
        for k in self.tasks:
            f = features[k].detach().to("cpu", torch.float32)
            if f.shape != (idx.numel(), self.dims[k]):
                raise TrainingError(
                    f"SSPLabel.update: features[{k!r}] has shape {tuple(f.shape)}, "
                    f"expected ({idx.numel()}, {self.dims[k]})"
                )
            if not torch.isfinite(f).all():
                raise TrainingError(f"SSPLabel.update: features[{k!r}] contain NaN or inf (epoch {epoch})")
            if self.bank_dtype == torch.float16 and f.numel() and float(f.abs().max()) > _FLOAT16_MAX:
                raise TrainingError(
                    f"SSPLabel.update: features[{k!r}] exceed the float16 range of the banks "
                    f"(max |f| {float(f.abs().max()):.4g}); pass bank_dtype=torch.float32"
                )
            feats[k] = f
        if idx.numel() == 0:
            return
        # duplicates: keep the last occurrence of each sample index
        rev = torch.flip(idx, [0]).numpy()
        _, first_in_rev = np.unique(rev, return_index=True)
        keep = torch.as_tensor(np.sort(idx.numel() - 1 - first_in_rev))
        idx = idx[keep]
        feats = {k: f[keep] for k, f in feats.items()}

        # store the batch: replace old bank entries in the running sums (Eq. 17-18 statistics)
        old = self.seen[idx]
        j_old = idx[old]
        for k in self.tasks:
            y_k = self.y_g[idx] if k == "g" else self.y_cur[k][idx]
            w_new = torch.sigmoid(y_k - self.pivot)  # w_k(i) of Eq. 17
            f_old = self.bank[k][j_old].to(torch.float64)  # (n_old, d), read before overwrite
            w_old = self.weight[k][j_old]
            self.bank[k][idx] = feats[k].to(self.bank[k].dtype)
            f_new = self.bank[k][idx].to(torch.float64)  # as stored (same rounding as recompute)
            self.sum_w[k] += w_new.sum() - w_old.sum()
            self.sum_wf[k] += w_new @ f_new - w_old @ f_old
            self.sum_f[k] += f_new.sum(0) - f_old.sum(0)
            self.sum_ff[k] += f_new.T @ f_new - f_old.T @ f_old
            self.weight[k][idx] = w_new
        self.count += int((~old).sum())
        self.seen[idx] = True
        self.last_visit[idx] = epoch

    def end_epoch(self, epoch: int) -> dict[str, np.ndarray]:
        """Close epoch ``epoch``: distances of every seen sample from the bank (Eq. 17-18, same
        footing for all tasks), the estimate (Eq. 19-21) and, for epoch > 1, the EWMA (Eq. 11;
        Eq. 12 for epoch 1) -> the labels of the next epoch; append and return a record."""
        epoch = int(epoch)
        if epoch != self.epoch + 1:
            raise TrainingError(f"SSPLabel.end_epoch: epoch {epoch} given, but the open epoch is {self.epoch + 1}")
        seen = self.seen
        # the statistics and estimates of this epoch: samples refreshed in it (module docstring,
        # "Stale bank entries"); the others keep their labels
        fresh = seen & (self.last_visit == epoch) if self.fresh_only else seen.clone()
        self._stats_mask = fresh
        self.recompute_statistics()  # weights of the labels in force this epoch
        self.sqrt_s = {k: float("nan") for k in self.tasks}
        self.chi = {k: torch.full((self.n_samples,), float("nan"), dtype=torch.float64) for k in self.tasks}
        if self.count >= 2:
            bank_m = {k: self.bank_mahalanobis(k) for k in self.tasks}
            for k in self.tasks:
                ruler = "g" if self.scale_mode == "common" else k  # "common": the main task's scale
                self.sqrt_s[k] = math.sqrt(self.scale(ruler, bank_m[ruler]))
                self.chi[k] = bank_m[k] / self.sqrt_s[k]  # Eq. 18, NaN outside fresh
            y_g = self.y_g[fresh]
            lo, hi = self.clamp
            for s in self.subtasks:
                est = pseudo_label_estimate(
                    y_g, self.chi[s][fresh], self.chi["g"][fresh], alpha1=self.alpha1, alpha2=self.alpha2, eps=self.eps
                )  # Eq. 19-21
                self.estimate_bank[s][fresh] = est
                if epoch > 1:
                    self.y_cur[s][fresh] = ewma(self.y_prev[s][fresh], est, epoch).clamp(lo, hi)  # Eq. 11
        if epoch == 1:
            for s in self.subtasks:
                self.y_cur[s] = self.y_g.clone()  # Eq. 12
        change = {s: (self.y_cur[s] - self.y_prev[s]).abs()[seen] for s in self.subtasks}
        for s in self.subtasks:
            self.y_prev[s] = self.y_cur[s].clone()
            # Eq. 17 weights of the new labels (the samples not seen yet keep weight 0)
            self.weight[s] = torch.where(
                seen, torch.sigmoid(self.y_cur[s] - self.pivot), torch.zeros((), dtype=torch.float64)
            )
        self._stats_mask = None
        self.recompute_statistics()  # the running sums cover every seen sample again (next epoch's updates)
        self.n_fresh = int(fresh.sum())
        self.epoch = epoch
        rec = self._make_record(epoch, change)
        self.history.append(rec)
        if self.max_history is not None and len(self.history) > self.max_history:
            del self.history[: len(self.history) - self.max_history]
        return rec

    def _make_record(self, epoch: int, change: dict[str, Tensor]) -> dict[str, np.ndarray]:
        seen = self.seen.numpy()

        def mean(x: np.ndarray) -> np.ndarray:
            return np.array(float(np.mean(x)) if x.size else float("nan"), dtype=np.float64)

        rec: dict[str, np.ndarray] = {
            "epoch": np.array(epoch, dtype=np.int64),
            "y_g": self.y_g.numpy().astype(np.float32),
            "seen": seen.copy(),
            "chi_g": self.chi["g"].numpy().astype(np.float32),
            "n_seen": np.array(int(seen.sum()), dtype=np.int64),
            "n_stale": np.array(int(seen.sum()) - int(getattr(self, "n_fresh", seen.sum())), dtype=np.int64),
            "mean_chi_g": mean(_finite(self.chi["g"].numpy()[seen])),
        }
        for k in self.tasks:  # the raw sqrt(s_k) of Eq. 18: m_k = chi_k * sqrt_s_k
            rec[f"sqrt_s_{k}"] = np.array(getattr(self, "sqrt_s", {}).get(k, float("nan")), dtype=np.float64)
        for s in self.subtasks:
            off = (self.y_cur[s] - self.y_g).numpy()
            rec[f"label_{s}"] = self.y_cur[s].numpy().astype(np.float32)
            rec[f"offset_{s}"] = off.astype(np.float32)  # delta_gs = y_s - y_g
            rec[f"estimate_{s}"] = self.estimate_bank[s].numpy().astype(np.float32)
            rec[f"chi_{s}"] = self.chi[s].numpy().astype(np.float32)
            rec[f"share_up_{s}"] = mean((off[seen] > 0).astype(np.float64))
            rec[f"share_down_{s}"] = mean((off[seen] < 0).astype(np.float64))
            rec[f"mean_chi_{s}"] = mean(_finite(self.chi[s].numpy()[seen]))
            rec[f"mean_change_{s}"] = mean(change[s].numpy())
        return rec

    def record(self, epoch: int) -> dict[str, np.ndarray]:
        """The record appended by ``end_epoch(epoch)`` (per review arrays, see ``_make_record``)."""
        for rec in self.history:
            if int(rec["epoch"]) == int(epoch):
                return rec
        raise KeyError(f"SSPLabel: no record for epoch {epoch}; have {[int(r['epoch']) for r in self.history]}")

    # ---------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        """Everything needed to resume exactly; tensors, lists, dicts and numbers only
        (loadable with ``torch.load(..., weights_only=True)``)."""
        return {
            "version": _STATE_VERSION,
            "n_samples": self.n_samples,
            "dims": dict(self.dims),
            "options": {
                "alpha1": self.alpha1,
                "alpha2": self.alpha2,
                "pivot": self.pivot,
                "shrinkage": self.shrinkage,
                "ridge": self.ridge,
                "eps": self.eps,
                "label_range": list(self.label_range),
                "scale": self.scale_mode,
                "clamp": list(self.clamp),
            },
            "epoch": self.epoch,
            "count": self.count,
            "y_g": self.y_g.clone(),
            "seen": self.seen.clone(),
            "last_visit": self.last_visit.clone(),
            "fresh_only": self.fresh_only,
            "bank": {k: v.clone() for k, v in self.bank.items()},
            "weight": {k: v.clone() for k, v in self.weight.items()},
            "y_prev": {k: v.clone() for k, v in self.y_prev.items()},
            "y_cur": {k: v.clone() for k, v in self.y_cur.items()},
            "estimate": {k: v.clone() for k, v in self.estimate_bank.items()},
            "chi": {k: v.clone() for k, v in self.chi.items()},
            "sum_w": {k: v.clone() for k, v in self.sum_w.items()},
            "sum_wf": {k: v.clone() for k, v in self.sum_wf.items()},
            "sum_f": {k: v.clone() for k, v in self.sum_f.items()},
            "sum_ff": {k: v.clone() for k, v in self.sum_ff.items()},
            "history": [{k: torch.from_numpy(np.asarray(v).copy()) for k, v in r.items()} for r in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`; the number of samples and the task dims must match."""
        try:
            if int(state["version"]) != _STATE_VERSION:
                raise CheckpointError(
                    f"SSPLabel state version {state['version']} != {_STATE_VERSION}: the checkpoint "
                    "is from another SSP-Label reading; train this run again in a new folder"
                )
            if int(state["n_samples"]) != self.n_samples or dict(state["dims"]) != self.dims:
                raise CheckpointError(
                    f"SSPLabel state is for {state['n_samples']} samples and tasks {dict(state['dims'])}, "
                    f"this run has {self.n_samples} samples and tasks {self.dims}: the checkpoint is from "
                    "another training set or model configuration"
                )
            opts = state["options"]
            self.alpha1, self.alpha2, self.pivot = opts["alpha1"], opts["alpha2"], opts["pivot"]
            self.shrinkage, self.ridge, self.eps = opts["shrinkage"], opts["ridge"], opts["eps"]
            self.label_range = tuple(opts["label_range"])
            self.scale_mode, self.clamp = str(opts["scale"]), tuple(float(v) for v in opts["clamp"])
            self.epoch, self.count = int(state["epoch"]), int(state["count"])
            self.y_g, self.seen = state["y_g"].clone(), state["seen"].clone()
            self.last_visit, self.fresh_only = state["last_visit"].clone(), bool(state["fresh_only"])
            for k, v in state["bank"].items():
                if k in self.bank and self.bank[k].shape == v.shape:
                    self.bank[k].copy_(v)  # keeps dtype and memory mapping
                else:
                    self.bank[k] = v.clone()
            for name in ("weight", "y_prev", "y_cur", "chi", "sum_w", "sum_wf", "sum_f", "sum_ff"):
                setattr(self, name, {k: v.clone() for k, v in state[name].items()})
            self.estimate_bank = {k: v.clone() for k, v in state["estimate"].items()}
            self.history = [{k: v.numpy().copy() for k, v in r.items()} for r in state["history"]]
        except KeyError as exc:
            raise CheckpointError(f"SSPLabel state lacks the entry {exc}; not an SSPLabel.state_dict()") from exc


def ssp_health(record: dict) -> dict[str, dict[str, float]]:
    """Per subtask the health of one epoch's record (module docstring), JSON-able:
    ``{s: {"share_up", "share_down", "mean_chi_s", "mean_chi_g", "mean_change", "n_seen"}}``.
    Raises KeyError for a record without health entries (written by an older SSP-Label)."""
    subtasks = [k[len("label_") :] for k in record if k.startswith("label_")]
    out: dict[str, dict[str, float]] = {}
    for s in subtasks:
        if f"share_up_{s}" not in record:
            raise KeyError(
                f"record of epoch {int(record.get('epoch', -1))} has no health entries for {s!r} "
                "(written by an older SSP-Label)"
            )
        out[s] = {
            "share_up": float(record[f"share_up_{s}"]),
            "share_down": float(record[f"share_down_{s}"]),
            "mean_chi_s": float(record[f"mean_chi_{s}"]),
            "mean_chi_g": float(record["mean_chi_g"]),
            "mean_change": float(record[f"mean_change_{s}"]),
            "n_seen": int(record["n_seen"]),
        }
        if "n_stale" in record:
            out[s].update(
                n_stale=int(record["n_stale"]), sqrt_s=float(record[f"sqrt_s_{s}"]), sqrt_s_g=float(record["sqrt_s_g"])
            )
    return out


def recompute_reading(
    record: dict,
    scale: str,
    *,
    previous: dict | None = None,
    alpha1: float = 1.0,
    alpha2: float = 1.0,
    eps: float = 1e-6,
    clamp: tuple[float, float] = (-4.0, 8.0),
) -> dict:
    """Another reading of Eq. 18's scale, recomputed offline from one epoch's record.

    The record keeps chi_k and the raw sqrt(s_k) of the run's own reading, so the raw Mahalanobis
    distances are m_k = chi_k * sqrt_s_k (NaN outside the epoch's statistics); ``scale`` in
    :data:`SCALES` gives that reading's s_k from them, then Eq. 19-21 the estimate and, with
    ``previous`` (the labels in force before the epoch, ``{s: (N,)}``; default y_g, exact for
    epochs 1-2 whose labels in force are y_g) and the record's epoch > 1, Eq. 11 the labels.
    Exact where the features do not depend on the reading, i.e. up to epoch 2 (the subtask
    objective starts in epoch 3). Returns ``{"chi_"+k, "estimate_"+s, "label_"+s, "offset_"+s}``
    (N,) float64 arrays.
    """
    if scale not in SCALES:
        raise ValueError(f"recompute_reading: scale must be one of {SCALES}, got {scale!r}")
    tasks = ["g"] + [k[len("label_") :] for k in record if k.startswith("label_")]
    m = {k: np.asarray(record[f"chi_{k}"], np.float64) * float(record[f"sqrt_s_{k}"]) for k in tasks}
    ok = np.isfinite(m["g"])

    def s_of(k: str) -> float:
        if scale == "rms":
            return float(np.mean(m[k][ok] ** 2))
        return float(np.mean(m["g" if scale == "common" else k][ok])) ** 2

    y_g = np.asarray(record["y_g"], np.float64)
    epoch = int(record["epoch"])
    chi = {k: m[k] / math.sqrt(max(s_of(k), 1e-12)) for k in tasks}
    out = {f"chi_{k}": chi[k] for k in tasks}
    for s in tasks[1:]:
        est = pseudo_label_estimate(y_g, chi[s], chi["g"], alpha1=alpha1, alpha2=alpha2, eps=eps)  # Eq. 19-21
        prev = y_g if previous is None else np.asarray(previous[s], np.float64)
        if epoch > 1:
            beta = 2.0 / (epoch + 1)
            lab = np.where(ok, np.clip(beta * est + (1 - beta) * prev, *clamp), prev)
        else:
            lab = y_g.copy()
        out[f"estimate_{s}"], out[f"label_{s}"], out[f"offset_{s}"] = est, lab, lab - y_g
    return out
