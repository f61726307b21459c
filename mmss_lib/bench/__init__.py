"""``mmss bench <name>``: the library's timing benchmarks, each printing ratios measured in one run
(no wall-clock asserts). The project's studies (the powered comparisons, the claims asked again)
are not benchmarks: they live in top-level ``studies/`` (``python -m studies.claims``). One module
per benchmark, shared helpers (timing, memory, the one-line report) in :mod:`mmss_lib.bench.common`; a benchmark function has the ``cli_main`` signature
``(argv: list[str], prog: str) -> int``. Add one with a line in :data:`BENCHES`.
"""

from __future__ import annotations

import importlib
import sys

# name -> "module:function"
BENCHES: dict[str, str] = {
    "build": "mmss_lib.bench.build:bench_build",
    "extract": "mmss_lib.bench.extract:bench_extract",
    "train": "mmss_lib.bench.train:bench_train",
    "metrics": "mmss_lib.bench.metrics:bench_metrics",
    "paper-scale": "mmss_lib.bench.paper_scale:bench_paper_scale",
    "precision": "mmss_lib.bench.precision:bench_precision",
    "explore": "mmss_lib.bench.explore:bench_explore",
    "fetch": "mmss_lib.bench.fetch:bench_fetch",
}

NEEDS_DATA = {"precision"}  # measured on a prepared data set and a device: run by name, not by 'all'

# one-line help per benchmark (names without an entry show their function's first docstring line)
HELP: dict[str, str] = {
    "build": "Amazon 2018 builder: reviews/s and peak memory on 1,000,000 generated reviews",
    "extract": "feature extraction overheads and store read rate",
    "train": "training throughput, FLOP/s fraction, pseudo-label bookkeeping, memory",
    "metrics": "ranking_metrics vs a pandas groupby-apply on 1,000,000 reviews",
    "paper-scale": "throughput on a device and the paper profile's disk / extraction / GPU-hour projection",
    "precision": "bf16 vs fp32 on a device: speed, data-wait share of a step, metric agreement (needs data)",
    "fetch": "mmss fetch-images against a local server: images/s per concurrency, decode/write share, projection",
    "explore": "explorer switch-product / switch-run times on a 3,500-product demo category (target < 1 s)",
}


def resolve(name: str):
    """The benchmark function registered under ``name`` (imported now)."""
    module, fn = BENCHES[name].split(":")
    return getattr(importlib.import_module(module), fn)


def _help(name: str) -> str:
    if name in HELP:
        return HELP[name]
    doc = (resolve(name).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def cli_main(argv: list[str], prog: str = "mmss bench") -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {prog} {{{','.join(BENCHES)},all}} [options]\n")
        for name in BENCHES:
            print(f"  {name.ljust(8)} {_help(name)}")
        return 0
    name, rest = argv[0], argv[1:]
    if name == "all":
        rc = 0
        for n in BENCHES:
            if n in NEEDS_DATA:
                print(
                    f"\n=== mmss bench {n}: not part of 'all' (needs a prepared data set); run it by name ===",
                    flush=True,
                )
                continue
            print(f"\n=== mmss bench {n} ===", flush=True)
            rc |= int(resolve(n)(rest, prog=f"{prog} {n}") or 0)
        return rc
    if name not in BENCHES:
        print(f"{prog}: unknown benchmark {name!r}; choose from {', '.join(BENCHES)}, all", file=sys.stderr)
        return 2
    return int(resolve(name)(rest, prog=f"{prog} {name}") or 0)
