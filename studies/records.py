"""Results of record: what of a study's folder travels in git, and the one-time migration that
wrote the compact per-run records for runs finished before they existed.

A study's folder (``outputs/powered``) keeps in git what a reader and a later rerun need: the
report, tables and figures; per run its ``config.json``, ``history.json``, ``metrics.json``, its
per-product ranking record ``ranking_{dev,test}.csv.gz``
(:func:`mmss_lib.training.run_folder.write_rankings`: per product the labels in the order the run
ranks them, from which every per-product metric is recomputed exactly; no review ids) and, on
generated data, its cue-sensitivity coefficients ``cue_sensitivity_test.json``
(:mod:`mmss_lib.evaluation.cue_sensitivity`); per study its journal, ``best.json`` and trial
tables; the size design the report compares (``runs_tuned/size_design.json``). The per-review
``scores_{dev,test}.csv``, the studies' trial folders (their settings and per-epoch dev MAP are in
the journal), data, features, checkpoints and SSP records stay local (``.gitignore``); the Magazine
phase's runs, built on the Amazon sample, stay local entirely.

``python -m studies.records --out outputs/powered`` (:func:`migrate`) writes the ranking records
of every finished run that has scores, the size design, and the cue-sensitivity records (through
the report, which needs the generated data: made again when missing, deterministic), then checks
that the report written without any score file equals the one written with them.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from mmss_lib.errors import DataError


def finished_run_dirs(out: Path) -> list[Path]:
    """Every finished run folder (``metrics.json`` beside ``config.json``) under ``out``."""
    return sorted(p.parent for p in Path(out).rglob("metrics.json") if (p.parent / "config.json").exists())


def write_run_records(out: Path) -> int:
    """The ranking records of every finished run under ``out`` that has scores; return how many runs."""
    from mmss_lib.training.run_folder import write_rankings

    return sum(bool(write_rankings(rd)) for rd in finished_run_dirs(out))


def without_scores(out: Path, dest: Path) -> Path:
    """A copy of ``out`` as git carries it: no score files, data, features, checkpoints or trials."""
    shutil.copytree(
        out,
        dest,
        ignore=shutil.ignore_patterns("scores_*.csv", "data", "features", "*.pt", "ssp", ".lock", "trials", "executed"),
    )
    return dest


def migrate(out: Path) -> str:
    """The one-time migration of the module docstring; returns the report's text."""
    from studies import claims
    from studies import powered as P

    out = Path(out)
    if not (out / "runs_tuned").is_dir():
        raise DataError(f"--out {out}: no runs_tuned folder of the claims study there; nothing to migrate")
    n = write_run_records(out)
    print(f"records: ranking records of {n} runs written", flush=True)
    claims.make_data(out)  # the generated data (deterministic): the cue records and the size design read it
    claims.record_size_design(out, claims.size_design(P.data_root(out, P.MAIN_WEIGHT)))
    text = claims.report(out)  # writes every run's cue-sensitivity record
    with tempfile.TemporaryDirectory() as tmp:
        bare = without_scores(out, Path(tmp) / "out")
        again = claims.report(bare)
    if again.replace(str(bare), str(out)) != text:
        raise DataError(f"{out}: the report written from the records differs from the one written from the scores")
    print("records: the report from the records alone equals the report from the scores", flush=True)
    return text


def main(argv: list[str], prog: str = "python -m studies.records") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="outputs/powered", help="the study's folder (default %(default)s)")
    a = ap.parse_args(argv)
    migrate(Path(a.out))
    return 0


if __name__ == "__main__":
    from studies import run_main

    raise SystemExit(run_main(main, "python -m studies.records"))
