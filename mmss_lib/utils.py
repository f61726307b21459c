"""Small shared helpers: atomic writes, seeding, device choice."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` atomically.

    On an exception the temporary file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
        raise DiskFullError(f"{path}: cannot write the file: no space left on the device ({left}); the "
                            "earlier version of the file, if any, is kept; free some space and rerun") from exc


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, what: str = "run") -> Iterator[Path]:
    """Hold an exclusive OS lock (``fcntl.flock``) on ``{run_dir}/.lock`` while a run trains or
    writes its folder. A second process asking for the same folder is refused at once with a
    :class:`~mmss_lib.errors.RunInUseError` naming the folder and the holder's PID (written into
    the lock file). The kernel drops the lock when its holder exits, however it dies, so a stale
    lock file from a killed process never blocks. Re-entrant within one process (nested calls on
    the same folder). No lock is taken where ``fcntl`` is missing (Windows), in a folder that cannot
    hold the lock file (read-only: finished runs are only read there), or on a file system without
    locks (with a warning)."""
    run_dir = Path(run_dir)
    key = str(run_dir.resolve())
    if key in _HELD_LOCKS:
        yield run_dir / ".lock"
        return
    try:
        import fcntl
    except ImportError:                    # pragma: no cover - not POSIX
        yield run_dir / ".lock"
        return
    from mmss_lib.errors import RunInUseError

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ".lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:                        # a read-only folder (finished runs are read there): no lock
        yield path
        return
    try:
        locked = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            except OSError:
                holder = "unknown"
            raise RunInUseError(f"{run_dir}: this {what} is in use by another process (PID {holder}) that "
                                "trains or writes it now; wait until it has finished (a finished run is then "
                                "skipped) or give another runs folder") from None
        except OSError as exc:             # a file system without locks (ENOLCK): go on unlocked, say so
            import warnings
            warnings.warn(f"{run_dir}: cannot lock the run folder ({exc}); two processes on it would not be "
                          "kept apart", RuntimeWarning, stacklevel=3)
            locked = False
        if not locked:
            yield path
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD_LOCKS.add(key)
        try:
            yield path
        finally:
            _HELD_LOCKS.discard(key)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


_HELD_LOCKS: set = set()


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


def pick_device(device: str | None = "auto") -> "torch.device":  # noqa: F821
    """``"auto"`` -> CUDA when available, else CPU."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
