"""``mmss bench <name>``: benchmarks that print ratios measured in one run (no wall-clock asserts).

Each benchmark lives beside the code it measures and has the ``cli_main`` signature.
"""
from __future__ import annotations

import importlib
import sys

BENCHES: dict[str, tuple[str, str]] = {
    "build": ("mmss_lib.amazon2018:bench_build", "Amazon 2018 builder: reviews/s and peak memory on 1,000,000 generated reviews"),
    "extract": ("mmss_lib.features.bench:bench_extract", "feature extraction overheads and store read rate"),
    "train": ("mmss_lib.train:bench_train", "training throughput, FLOP/s fraction, pseudo-label bookkeeping, memory"),
    "metrics": ("mmss_lib.metrics:bench_metrics", "ranking_metrics vs a pandas groupby-apply on 1,000,000 reviews"),
}


def _resolve(target: str):
    module, fn = target.split(":")
    return getattr(importlib.import_module(module), fn)


def cli_main(argv: list[str], prog: str = "mmss bench") -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {prog} {{{','.join(BENCHES)},all}} [options]\n")
        for name, (_, help_) in BENCHES.items():
            print(f"  {name.ljust(8)} {help_}")
        return 0
    name, rest = argv[0], argv[1:]
    if name == "all":
        rc = 0
        for n, (target, _) in BENCHES.items():
            print(f"\n=== mmss bench {n} ===", flush=True)
            rc |= int(_resolve(target)(rest, prog=f"{prog} {n}") or 0)
        return rc
    if name not in BENCHES:
        print(f"{prog}: unknown benchmark {name!r}; choose from {', '.join(BENCHES)}, all", file=sys.stderr)
        return 2
    return int(_resolve(BENCHES[name][0])(rest, prog=f"{prog} {name}") or 0)
