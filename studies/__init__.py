"""This project's own studies, built on `mmss_lib` and not part of it.

Each study is a resumable runner, ``python -m studies.powered ...`` / ``python -m studies.claims
...`` (finished runs are skipped, an interrupted one resumes), and a report notebook under
``studies/notebooks/`` that reads the run folders through :mod:`mmss_lib.evaluation` and writes the
tables, figures and report (``mmss reproduce --profile claims``, ``--profile powered``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_main(main: Callable[[list[str], str], int], prog: str, argv: list[str] | None = None) -> int:
    """A study's command line: ``main(argv, prog)``, a user-facing error as one line (exit 1)."""
    from mmss_lib.errors import MMSSError

    try:
        return int(main(list(sys.argv[1:] if argv is None else argv), prog) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except MMSSError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1


def check_counts(values, option: str, *, low: int = 0, high: int | None = None) -> None:
    """A list option of integers (``--seeds``, ``--folds``) checked before any work: each in
    ``low..high``, none given twice; one line naming the option otherwise."""
    from mmss_lib.errors import DataError

    if values is None:
        return
    span = f"from {low} to {high}" if high is not None else f">= {low}"
    bad = [v for v in values if v < low or (high is not None and v > high)]
    if bad:
        raise DataError(f"{option} {' '.join(map(str, values))}: expected integers {span}; got {bad[0]}")
    twice = sorted({v for v in values if list(values).count(v) > 1})
    if twice:
        raise DataError(f"{option} {' '.join(map(str, values))}: {twice[0]} given twice")


class build_lock:
    """Hold ``{out}/.build.lock`` (``fcntl.flock``) while a study builds its data and features: a
    second process on the same folder waits for the first (and then finds them built) instead of
    building the same files at the same time. The kernel drops the lock when its holder dies."""

    def __init__(self, out):
        from pathlib import Path

        self.path = Path(out) / ".build.lock"
        self.fh = None

    def __enter__(self):
        import fcntl

        self.fh = open(self.path, "a+")  # held until __exit__
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{self.path.parent}: another process builds the data and features here; waiting", flush=True)
            fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()
        return False
