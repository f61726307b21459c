"""Small shared helpers: atomic writes, seeding, device choice.

Files written through :func:`atomic_path` get the mode a plain ``open(path, "w")`` would give them:
0666 less the process's umask (0644 under the usual umask 0022, 0600 under 0077), not the 0600 of
the temporary file they are written to first, so another user of a shared folder can read the
tables, figures, data, manifests and runs when the umask allows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` atomically.

    On an exception the temporary file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would stay after the rename
    except OSError:
        pass
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except Exception as exc:
        if tmp_path.exists():
            tmp_path.unlink()
        _raise_if_disk_full(path, exc)
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux
    ``/proc/self/status``), else set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# below this many free bytes a failed write (torch's "inline_container.cc ... file write failed"
# names no errno) is reported as a full disk
DISK_FULL_BYTES = 16 * 2**20


def _raise_if_disk_full(path: Path, exc: BaseException) -> None:
    """Re-raise a write failure on a full device as one clear :class:`~mmss_lib.errors.DiskFullError`
    naming the file (``OSError`` ENOSPC / EDQUOT, or any write error while the disk is nearly full)."""
    import errno
    import shutil

    from mmss_lib.errors import DiskFullError, MMSSError

    if isinstance(exc, MMSSError):
        return
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1))
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if not full and isinstance(exc, (OSError, RuntimeError)) and free is not None and free < DISK_FULL_BYTES:
        full = True
    if full:
        left = f"{free / 2**20:.1f} MiB free" if free is not None else "free space unknown"
        raise DiskFullError(
            f"{path}: cannot write the file: no space left on the device ({left}); the "
            "earlier version of the file, if any, is kept; free some space and rerun"
        ) from exc


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(device: str | None = "auto") -> torch.device:  # noqa: F821
    """``"auto"`` -> CUDA when available, else CPU."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def lazy_exports(package: str, exports: dict[str, str]):
    """PEP 562 hooks of a package that exports names of its submodules without importing them:
    ``__getattr__, __dir__ = lazy_exports(__name__, {"MMSS": "mmss", ...})``. A name's submodule is
    imported on the name's first access (so ``import mmss_lib.models`` imports no torch), then the
    name is set on the package."""
    import importlib
    import sys

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
