"""``mmss bench explore``: how fast the pseudo-label explorer answers a click on a benchmark-sized
demo category (3,500 products, as the ``benchmark`` profile generates), measured on the widget
side (:class:`mmss_lib.explore.app.ExplorerApp`: everything the kernel does for a click; the
browser's drawing is not included).

The runs folder is written for the benchmark: the demo data of one category at full size, and
runs whose files follow the trainer's layout: ``config.json``, ``metrics.json``, ``history.json``,
``scores_{dev,test}.csv`` (random scores; MM-SS with its five subtask heads) and, for MM-SS, one
SSP-Label record per epoch made by :class:`mmss_lib.ssp.label.SSPLabel` itself from random
features (the records' real layout and size, their values meaningless). Then it times: opening the
category (reading the split once), switching product (median and slowest of many), switching run
(the first visit of a run reads its scores and last record; later visits are cached) and switching
review (the trajectory reads one key per epoch file, once per run). Prints the times and their
ratio to the issue's 1-second target; nothing asserts a time.

SIGTERM ends it like Ctrl-C; its temporary runs folder is removed (``--out`` keeps one; ``--epochs``,
``--clicks`` and ``--products`` are checked before anything is written).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import tempfile
import time
from pathlib import Path

import numpy as np

from mmss_lib.bench.common import report
from mmss_lib.training.run_folder import CONFIG, HISTORY, METRICS, scores_path

SUBTASKS = ("ptrt", "pvrv", "ptrv", "pvrt", "rtrv")
TARGET_S = 1.0


def _write_run(
    run_dir: Path,
    system: str,
    variant: str,
    *,
    data_root: Path,
    category: str,
    ssp_epochs: int,
    rng: np.random.Generator,
) -> None:
    """One run folder in the trainer's layout (scores random, records from SSPLabel on random features)."""
    import pandas as pd
    import torch

    from mmss_lib.data.mrhp import load_mrhp
    from mmss_lib.training.config import TrainConfig
    from mmss_lib.utils import atomic_path, atomic_write_json

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(system=system, variant=variant, seed=0)
    atomic_write_json(run_dir / CONFIG, {"config": cfg.to_json(), "run": {"dataset": "demo", "category": category}})
    atomic_write_json(run_dir / HISTORY, [{"epoch": e + 1} for e in range(max(ssp_epochs, 1))])
    for split in ("dev", "test"):
        _, rv = load_mrhp(data_root, "demo", category, split)
        df = pd.DataFrame(
            {
                "review_id": rv["review_id"],
                "product_id": rv["product_id"],
                "label": rv["label"],
                "score": rng.normal(size=len(rv)),
            }
        )
        if system == "mmss":
            for s in SUBTASKS:
                df[f"score_{s}"] = df["score"] + rng.normal(scale=0.3, size=len(rv))
        df.to_csv(scores_path(run_dir, split), index=False)
    atomic_write_json(run_dir / METRICS, {"threshold": 1.0, "best_epoch": max(ssp_epochs, 1)})
    if not ssp_epochs:
        return
    from mmss_lib.ssp.label import SSPLabel

    _, train = load_mrhp(data_root, "demo", category, "train")
    n, d = len(train), 8
    y_g = torch.as_tensor(train["label"].to_numpy(), dtype=torch.float32)
    ssp = SSPLabel(n, y_g, {"g": d, **{s: d for s in SUBTASKS}}, max_history=1)
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(n)
    for epoch in range(1, ssp_epochs + 1):
        feats = {k: torch.randn(n, d, generator=gen) + 0.1 * y_g[:, None] for k in ["g", *SUBTASKS]}
        ssp.update(idx, feats, epoch)
        rec = ssp.end_epoch(epoch)
        with atomic_path(run_dir / "ssp" / f"epoch{epoch:03d}.npz") as tmp:  # as the trainer writes them
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, review_id=train["review_id"].to_numpy().astype(str), **rec)
    ssp.close()


def bench_explore(argv: list[str], prog: str = "mmss bench explore") -> int:
    """``mmss bench explore``: switch-product, switch-run and switch-review times of the explorer
    on a benchmark-sized demo category (times and ratios to 1 s printed)."""
    p = argparse.ArgumentParser(prog=prog, description=bench_explore.__doc__)
    p.add_argument(
        "--products",
        type=int,
        default=3500,
        help="demo products in the category (default 3500, the benchmark profile's)",
    )
    p.add_argument("--category", default="clothing", help="demo category (default clothing)")
    p.add_argument(
        "--epochs",
        type=int,
        default=30,
        help="SSP-Label records of the MM-SS run (default 30, the benchmark profile's epoch ceiling)",
    )
    p.add_argument("--clicks", type=int, default=30, help="products (and reviews) switched to (default 30)")
    p.add_argument("--no-images", action="store_true", help="generate the demo without PNG images")
    p.add_argument(
        "--out",
        default=None,
        help="keep the generated runs folder here (default: a temporary folder, removed afterwards)",
    )
    args = p.parse_args(argv)
    from mmss_lib.data.synthetic import OBJECTS, make_demo
    from mmss_lib.errors import DataError

    for opt, value, low in (
        ("--products", args.products, 5),
        ("--epochs", args.epochs, 1),
        ("--clicks", args.clicks, 1),
    ):
        if value < low:
            raise DataError(f"{opt} {value}: expected an integer >= {low}")
    if args.category not in OBJECTS:
        raise DataError(f"--category {args.category!r}: expected one of {', '.join(OBJECTS)}")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise DataError(f"--out {args.out}: a file, not a folder")

    try:
        from mmss_lib.explore.app import ExplorerApp
    except ImportError as exc:
        print(f"{prog}: needs ipywidgets ({exc}); pip install -e '.[notebooks]'")
        return 1
    with _removed_on_sigterm():
        root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="mmss-bench-explore-"))
        return _measure(args, root, None if args.out else root, ExplorerApp, make_demo)


@contextlib.contextmanager
def _removed_on_sigterm():
    """SIGTERM (what ``kill`` and ``timeout`` send) ends the benchmark like Ctrl-C: its ``finally``
    blocks run, so the temporary runs folder does not stay behind."""

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    try:
        old = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _measure(args, root: Path, tmp: Path | None, ExplorerApp, make_demo) -> int:
    try:
        t0 = time.perf_counter()
        data_root, runs_root = root / "data", root / "runs"
        if not (data_root / "demo" / args.category).is_dir():
            make_demo(data_root, n_products=args.products, categories=(args.category,), images=not args.no_images)
        rng = np.random.default_rng(0)
        specs = [("mmss", "full", args.epochs), ("mmss", "wo_d", 0), ("bimpm", "full", 0)]
        for system, variant, epochs in specs:
            name = system if variant == "full" else f"{system}__{variant}"
            rd = runs_root / "demo" / args.category / name / "seed0"
            if not (rd / METRICS).exists():
                _write_run(rd, system, variant, data_root=data_root, category=args.category, ssp_epochs=epochs, rng=rng)
        report(
            "setup",
            f"demo/{args.category}: {args.products} products, runs {[s[:2] for s in specs]}, "
            f"{args.epochs} SSP records of MM-SS, written in {time.perf_counter() - t0:.1f} s to {root}",
        )

        t0 = time.perf_counter()
        app = ExplorerApp(
            runs_root, data_root, category=args.category, run="mmss__wo_d", split="train", sort="largest offsets"
        )
        t_open = time.perf_counter() - t0
        n_products = len(app.explorer.data("demo", args.category, "train")[0])
        n_reviews = len(app.explorer.data("demo", args.category, "train")[1])
        report(
            "open",
            f"first view (train split: {n_products} products, {n_reviews} reviews read; run mmss (wo_d), "
            f"no records; first product): {t_open:.2f} s",
        )

        def clicks(widget, values):
            times = []
            for v in values:
                t = time.perf_counter()
                widget.value = v
                times.append(time.perf_counter() - t)
            return np.asarray(times)

        # runs: the first visit reads the run's scores and (MM-SS) its last record and one review's
        # trajectory (one key per epoch file); later visits hit the caches
        runs = {v.name: v for _, v in app.run.options}
        run_times: dict[str, list[float]] = {}
        for name in ("mmss", "bimpm", "mmss__wo_d", "bimpm", "mmss"):  # ends on MM-SS (trajectories)
            run_times.setdefault(name, []).append(float(clicks(app.run, [runs[name]])[0]))
        if "mmss-error" in app.message.value:
            print(app.message.value)
            return 1
        rows = {}
        pids = [v for _, v in app.products.options]  # ordered by the largest offsets
        pick = list(rng.choice(len(pids), size=min(args.clicks, len(pids)), replace=False))
        rows["product (train, trajectories)"] = clicks(app.products, [pids[i] for i in pick])
        rids = [v for _, v in app.reviews.options]
        rows["review (train, trajectory)"] = clicks(
            app.reviews, [rids[i % len(rids)] for i in range(1, min(args.clicks, 8) + 1)]
        )
        t_split = float(clicks(app.split, ["test"])[0])
        t_other = float(clicks(app.other, [runs["mmss__wo_d"]])[0])
        pids = [v for _, v in app.products.options]
        pick = list(rng.choice(len(pids), size=min(args.clicks, len(pids)), replace=False))
        rows["product (test, two runs)"] = clicks(app.products, [pids[i] for i in pick])
        if "mmss-error" in app.message.value:
            print(app.message.value)
            return 1

        worst = 0.0
        for what, ts in rows.items():
            worst = max(worst, float(ts.max()))
            report(
                "switch",
                f"{what}: median {np.median(ts):.3f} s, slowest {ts.max():.3f} s over {len(ts)} clicks "
                f"(slowest / 1 s target = {ts.max() / TARGET_S:.2f})",
            )
        for name, ts in run_times.items():
            worst = max(worst, max(ts))
            later = f", later {ts[1]:.3f} s" if len(ts) > 1 else ""
            report("switch", f"run -> {name} (train split, products re-sorted): first visit {ts[0]:.3f} s{later}")
        report(
            "switch",
            f"split train -> test {t_split:.3f} s (reads the test split once); second run beside {t_other:.3f} s",
        )
        report(
            "result",
            f"slowest product / review / run switch {worst:.3f} s = {worst / TARGET_S:.2f} x the 1 s "
            f"target ({'within' if worst < TARGET_S else 'OVER'}); opening the category {t_open:.2f} s",
        )
        return 0
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
