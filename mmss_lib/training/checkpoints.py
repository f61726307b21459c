"""What a run's checkpoints hold besides the weights, and how they are read and written: the Python,
NumPy and torch RNG states as weights-only-loadable values, and ``torch.save`` / ``torch.load``
through an atomic write and a weights-only read (a checkpoint in a shared folder runs no code)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from mmss_lib.errors import CheckpointError
from mmss_lib.training.run_folder import BEST
from mmss_lib.utils import atomic_path


def rng_state() -> dict:
    """Python/NumPy/torch RNG states as tensors, lists and numbers (weights_only-loadable)."""
    import torch

    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_torch(path: Path, obj) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: Path) -> dict:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, not ours
        raise CheckpointError(
            f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc}); delete it to start the run afresh"
        ) from None


def load_checkpoint(path) -> tuple[dict, Path]:
    """A trained run's ``best.pt`` (a run folder or the file), loaded weights-only (a shared run
    folder runs no code), checked for the keys ``mmss train`` writes; returns ``(dict, path)``."""
    p = Path(path)
    if p.is_dir():
        p = p / BEST
    if not p.is_file():
        raise CheckpointError(f"{p}: no checkpoint here; pass a run folder holding best.pt (after `mmss train`)")
    ck = load_torch(p)
    for key in ("config", "model", "text_dim", "region_dim"):
        if not isinstance(ck, dict) or key not in ck:
            raise CheckpointError(f"{p}: not a best.pt written by mmss train (no {key!r})")
    return ck, p
