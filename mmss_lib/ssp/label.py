"""SSP-Label, the self-supervised pseudo labels of the MM-SS subtasks (paper Eq. 10-12, 17-21):
:class:`SSPLabel` runs the method over a training set, epoch by epoch, for the trainer. The reading
of each equation is stated once, in :mod:`mmss_lib.ssp.equations`; the method's settings are
:class:`~mmss_lib.ssp.config.SSPConfig`; the banks and running sums (and their memory policy) are
:class:`~mmss_lib.ssp.bank.FeatureBanks`.

Records. ``end_epoch`` appends a record (per review: pseudo labels, offsets y_s - y_g, the raw
estimate y_hat_s and the distances chi_s, chi_g of this epoch's end (NaN for stale samples);
per task the raw ``sqrt_s_{k}``; ``n_stale``; per subtask the health scalars ``share_up_{s}`` /
``share_down_{s}`` (share of seen reviews with an offset above / below zero), ``mean_chi_{s}``,
``mean_chi_g``, ``mean_change_{s}`` (mean |y_s^(i) - y_s^(i-1)|, the EWMA settling) and
``n_seen``) that ``record(epoch)`` returns as numpy arrays for plots; :func:`ssp_health` turns a
record into a JSON-able dict (the trainer's history.json). ``state_dict`` / ``load_state_dict``
resume exactly.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch import Tensor

from mmss_lib.errors import CheckpointError, TrainingError
from mmss_lib.ssp.bank import FLOAT16_MAX, FeatureBanks
from mmss_lib.ssp.config import SSPConfig
from mmss_lib.ssp.equations import SCALES, ewma, pseudo_label_estimate, shrunk_covariance

_STATE_VERSION = 3  # 2: per-epoch estimation from the bank, scale option, widened clamp; 3: fresh-only statistics


def _finite(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x)]


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
        config: SSPConfig | None = None,
        *,
        bank_dtype: torch.dtype | None = None,
        bank_dir: str | os.PathLike | None = None,
        max_history: int | None = None,
        **options,
    ):
        if config is not None and options:
            raise TrainingError(
                f"SSPLabel: pass the method's settings as config or as keywords, not both: {sorted(options)}"
            )
        try:
            config = config if config is not None else SSPConfig(**options)
        except TypeError as exc:
            raise TrainingError(f"SSPLabel: {exc}; the settings are the fields of SSPConfig") from None
        y_g = torch.as_tensor(y_g).detach().to("cpu", torch.float64).reshape(-1)
        if int(n_samples) != y_g.shape[0]:
            raise TrainingError(f"SSPLabel: n_samples={n_samples} but y_g has {y_g.shape[0]} labels")
        if "g" not in dims:
            raise TrainingError(f"SSPLabel: dims must contain the global task 'g', got keys {list(dims)}")
        self.config = config
        self.n_samples = int(n_samples)
        self.dims = {k: int(v) for k, v in dims.items()}
        self.tasks = ("g",) + tuple(k for k in dims if k != "g")
        self.subtasks = self.tasks[1:]
        self.max_history = max_history
        n = self.n_samples
        self.y_g = y_g
        self.epoch = 0  # last closed epoch; update() runs in epoch + 1
        self.seen = torch.zeros(n, dtype=torch.bool)
        self.last_visit = torch.zeros(n, dtype=torch.int64)  # epoch of the last update (0: never)
        self._stats_mask: Tensor | None = None  # None: the statistics cover every seen sample
        self.banks = FeatureBanks(n, self.dims, self.tasks, dtype=bank_dtype, directory=bank_dir)
        self.y_prev = {s: y_g.clone() for s in self.subtasks}  # y_s^(i-1): label at the end of the last epoch
        self.y_cur = {s: y_g.clone() for s in self.subtasks}  # y_s^(i): current label
        self.estimate_bank = {s: torch.full((n,), float("nan"), dtype=torch.float64) for s in self.subtasks}
        self.chi = {k: torch.full((n,), float("nan"), dtype=torch.float64) for k in self.tasks}
        self.history: list[dict[str, np.ndarray]] = []

    # the method's settings (SSPConfig) and the banks' state (FeatureBanks), read through the method
    alpha1 = property(lambda self: self.config.alpha1)
    alpha2 = property(lambda self: self.config.alpha2)
    pivot = property(lambda self: self.config.pivot)
    shrinkage = property(lambda self: self.config.shrinkage)
    ridge = property(lambda self: self.config.ridge)
    eps = property(lambda self: self.config.eps)
    label_range = property(lambda self: self.config.label_range)
    scale_mode = property(lambda self: self.config.scale)
    clamp = property(lambda self: self.config.clamp)
    fresh_only = property(lambda self: self.config.fresh_only)
    bank = property(lambda self: self.banks.bank)
    weight = property(lambda self: self.banks.weight)
    count = property(lambda self: self.banks.count)
    sum_w = property(lambda self: self.banks.sum_w)
    sum_wf = property(lambda self: self.banks.sum_wf)
    sum_f = property(lambda self: self.banks.sum_f)
    sum_ff = property(lambda self: self.banks.sum_ff)
    bank_dtype = property(lambda self: self.banks.dtype)
    bank_dir = property(lambda self: self.banks.directory)

    def close(self) -> None:
        """Drop memory-mapped bank files (``bank_dir``); the object is unusable afterwards."""
        self.banks.close()

    # ---------------------------------------------------------------- running statistics
    @property
    def in_stats(self) -> Tensor:
        """(N,) bool: the samples the anchor, covariance and scale are computed over: every seen
        sample, except inside :meth:`end_epoch` with ``fresh_only`` (those updated this epoch)."""
        return self.seen if self._stats_mask is None else self._stats_mask

    def recompute_statistics(self, chunk: int = 65536) -> None:
        """Rebuild every running sum from the banks (O(N d^2)); used at epoch end and in tests."""
        self.banks.recompute(self.in_stats, chunk)

    def anchor(self, task: str) -> Tensor:
        """Eq. 17: A_k = sum_i w_k(i) f*_k(i) / sum_i w_k(i) over the bank, (d,) float64."""
        return self.banks.anchor(task)

    def covariance(self, task: str) -> Tensor:
        """Eq. 18's Sigma'_k: shrunk, ridged population covariance of f*_k over the bank, (d, d)."""
        _, cov = self.banks.moments(task)
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
        mean, cov = self.banks.moments(task)
        dm = mean - self.anchor(task)
        second = cov + torch.outer(dm, dm)  # E[(f - A)(f - A)^T] over the bank
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
            if self.bank_dtype == torch.float16 and f.numel() and float(f.abs().max()) > FLOAT16_MAX:
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
        weights = {
            k: torch.sigmoid((self.y_g[idx] if k == "g" else self.y_cur[k][idx]) - self.pivot)  # w_k(i) of Eq. 17
            for k in self.tasks
        }
        self.banks.store(idx, self.seen[idx], feats, weights)
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
            self.banks.weight[s] = torch.where(
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
            "options": self.config.options(),
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
            self.config = SSPConfig(
                alpha1=opts["alpha1"],
                alpha2=opts["alpha2"],
                pivot=opts["pivot"],
                shrinkage=opts["shrinkage"],
                ridge=opts["ridge"],
                eps=opts["eps"],
                label_range=tuple(opts["label_range"]),
                scale=str(opts["scale"]),
                clamp=tuple(float(v) for v in opts["clamp"]),
                fresh_only=bool(state["fresh_only"]),
            )
            self.epoch, self.banks.count = int(state["epoch"]), int(state["count"])
            self.y_g, self.seen = state["y_g"].clone(), state["seen"].clone()
            self.last_visit = state["last_visit"].clone()
            for k, v in state["bank"].items():
                if k in self.bank and self.bank[k].shape == v.shape:
                    self.bank[k].copy_(v)  # keeps dtype and memory mapping
                else:
                    self.bank[k] = v.clone()
            for name in ("weight", "sum_w", "sum_wf", "sum_f", "sum_ff"):
                setattr(self.banks, name, {k: v.clone() for k, v in state[name].items()})
            for name in ("y_prev", "y_cur", "chi"):
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
