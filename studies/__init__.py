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
