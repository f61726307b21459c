"""SSP-Label's memory: per training sample the last detached representation f*_k(i) of every task
(the banks, N x d_k), the anchor weights w_k(i) of Eq. 17, and the running float64 sums the
statistics of Eq. 17-18 are computed from. The memory policy lives here: float16 banks beyond
:data:`AUTO_FLOAT16_BYTES`, memory-mapped bank files beyond :data:`SSP_BANK_FILE_BYTES`
(:func:`ssp_bank_dir`).

Bookkeeping cost: a batch replaces its samples' old bank entries, so the sums change by
(new - old) contributions, O(B d^2) per task; nothing is O(N) per batch. :meth:`FeatureBanks.recompute`
rebuilds the sums from the banks (O(N d^2)), cancelling floating-point drift."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

# Banks whose float32 size would exceed this are kept in float16 by default (dtype=None).
AUTO_FLOAT16_BYTES = 64 * 2**20
FLOAT16_MAX = 65504.0
# Banks larger than this (as float32) live in memory-mapped scratch files of the run folder instead
# of anonymous memory, like the feature stores (their state is in last.pt).
SSP_BANK_FILE_BYTES = 64 * 2**20


def ssp_bank_dir(run_dir, n: int, dims: dict) -> Path | None:
    """Where the banks of ``n`` samples with feature sizes ``dims`` live: ``{run_dir}/ssp_banks`` above
    :data:`SSP_BANK_FILE_BYTES`, else None (in memory)."""
    return Path(run_dir) / "ssp_banks" if 4 * n * sum(dims.values()) > SSP_BANK_FILE_BYTES else None


class FeatureBanks:
    """The banks ``bank[k]`` (N, d_k), weights ``weight[k]`` (N,) and running sums of the tasks
    ``tasks`` (the main task "g" first). ``dtype=None``: float32 while the banks take at most
    :data:`AUTO_FLOAT16_BYTES`, float16 beyond (the sums are always float64 over the values *as
    stored*, so the statistics stay consistent with the banks). ``directory``: the banks live in
    memory-mapped files ``bank_{task}.bin`` there (created; existing files are overwritten), so the
    kernel can write them back and drop them under memory pressure; :meth:`close` removes them."""

    def __init__(self, n: int, dims: dict[str, int], tasks, *, dtype=None, directory: str | os.PathLike | None = None):
        self.n = int(n)
        self.dims = dict(dims)
        self.tasks = tuple(tasks)
        if dtype is None:
            f32_bytes = 4 * self.n * sum(self.dims.values())
            dtype = torch.float32 if f32_bytes <= AUTO_FLOAT16_BYTES else torch.float16
        self.dtype = dtype
        self.directory = Path(directory) if directory is not None else None
        self.bank = {k: self._new_bank(k, self.n, d) for k, d in self.dims.items()}
        self.weight = {k: torch.zeros(self.n, dtype=torch.float64) for k in self.tasks}  # w_k(i) of Eq. 17
        self.zero_sums()

    def _new_bank(self, task: str, n: int, d: int) -> Tensor:
        """A zeroed (n, d) bank: anonymous memory, or a memory-mapped file in ``directory``."""
        if self.directory is None:
            return torch.zeros(n, d, dtype=self.dtype)
        self.directory.mkdir(parents=True, exist_ok=True)
        np_dtype = torch.empty(0, dtype=self.dtype).numpy().dtype
        mm = np.memmap(self.directory / f"bank_{task}.bin", dtype=np_dtype, mode="w+", shape=(max(n, 1), d))
        return torch.from_numpy(mm)[:n]  # (n, d), zeros (fresh file)

    def close(self) -> None:
        """Drop memory-mapped bank files (``directory``); the banks are unusable afterwards."""
        if self.directory is None:
            return
        self.bank = {}
        for k in self.dims:
            try:
                (self.directory / f"bank_{k}.bin").unlink()
            except FileNotFoundError:
                pass
        try:
            self.directory.rmdir()
        except OSError:
            pass

    def zero_sums(self) -> None:
        f64 = torch.float64
        self.count = 0
        self.sum_w = {k: torch.zeros((), dtype=f64) for k in self.tasks}  # sum_i w_k(i)
        self.sum_wf = {k: torch.zeros(d, dtype=f64) for k, d in self.dims.items()}  # sum_i w_k(i) f_k(i)
        self.sum_f = {k: torch.zeros(d, dtype=f64) for k, d in self.dims.items()}  # sum_i f_k(i)
        self.sum_ff = {k: torch.zeros(d, d, dtype=f64) for k, d in self.dims.items()}  # sum_i f_k(i) f_k(i)^T

    def recompute(self, mask: Tensor, chunk: int = 65536) -> None:
        """Rebuild every running sum from the bank rows in ``mask`` (N,) bool, O(N d^2)."""
        self.zero_sums()
        idx = torch.nonzero(mask).squeeze(1)
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

    def store(self, idx: Tensor, old: Tensor, feats: dict[str, Tensor], weights: dict[str, Tensor]) -> None:
        """Write the rows ``idx`` (distinct) of every task with their new weights, replacing the old
        entries' contributions in the running sums; ``old`` (len(idx),) bool marks the rows that
        were in the sums already."""
        j_old = idx[old]
        for k in self.tasks:
            w_new = weights[k]
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

    def anchor(self, task: str) -> Tensor:
        """Eq. 17: A_k = sum_i w_k(i) f*_k(i) / sum_i w_k(i) over the rows in the sums, (d,) float64."""
        return self.sum_wf[task] / self.sum_w[task].clamp(min=1e-12)

    def moments(self, task: str) -> tuple[Tensor, Tensor]:
        """The mean (d,) and the symmetrised population covariance (d, d) of f*_k over the rows in the sums."""
        n = max(self.count, 1)
        mean = self.sum_f[task] / n
        cov = self.sum_ff[task] / n - torch.outer(mean, mean)
        return mean, 0.5 * (cov + cov.T)
