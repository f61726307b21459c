"""Command-line entry: ``python -m mmss_lib <command> ...`` (also installed as ``mmss``).

Each command lives in the module that implements it; that module is imported only when its
command runs, so ``mmss --help`` stays instant. A command module exposes
``cli_main(argv: list[str], prog: str) -> int`` and builds its own argparse parser.
"""

from __future__ import annotations

import importlib
import sys

from mmss_lib.bench import BENCHES  # the benchmark table alone (the benchmarks import when they run)

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "make-demo": ("mmss_lib.data.synthetic", "write the deterministic synthetic MRHP-format demo dataset"),
    "build-amazon2018": (
        "mmss_lib.data.amazon2018",
        "build an Amazon-MRHP-style dataset from Amazon Review Data 2018 files",
    ),
    "build-amazon": (
        "mmss_lib.data.amazon2018",
        "build an MRHP dataset from Amazon review files of 2014, 2018 or 2023",
    ),
    "fetch-images": ("mmss_lib.data.images", "download the product and review images of MRHP files (resumable)"),
    "stats": ("mmss_lib.data.mrhp", "print dataset statistics (paper Table 3 layout) and label distribution"),
    "extract": ("mmss_lib.features.extract", "extract text and region features into a feature store"),
    "import-features": ("mmss_lib.features.importers", "import bottom-up .npz / MCR .pth region features into a store"),
    "train": ("mmss_lib.model_selection.sweeps", "train and evaluate a system over seeds"),
    "tune": (
        "mmss_lib.model_selection.search",
        "tune each system's settings on the dev split (Optuna; resumable studies)",
    ),
    "predict": ("mmss_lib.predict", "rank the reviews of a product with a trained checkpoint"),
    "reproduce": (
        "mmss_lib.reproduce",
        "run the notebook pipeline with papermill (profiles: smoke, demo, benchmark, paper)",
    ),
    "bench": ("mmss_lib.bench", f"benchmarks: {', '.join(BENCHES)}, all"),
    "explore": ("mmss_lib.explore.app", "serve the pseudo-label explorer as a local web app (Voila, 127.0.0.1)"),
}


def _usage() -> str:
    lines = ["usage: mmss <command> [options]", "", "commands:"]
    width = max(len(c) for c in COMMANDS)
    for name, (_, help_) in COMMANDS.items():
        lines.append(f"  {name.ljust(width)}  {help_}")
    lines += ["", "Run `mmss <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from mmss_lib import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mmss: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.cli_main(rest, prog=f"mmss {name}") or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # user-facing errors carry their own message
        from mmss_lib.errors import MMSSError

        if isinstance(exc, MMSSError):
            print(f"mmss {name}: error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
