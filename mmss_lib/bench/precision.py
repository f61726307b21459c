"""``mmss bench precision``: mixed precision (bf16 autocast) against fp32 on one device, measured
in one run: training speed, the share of each training step the device waits for data, and
whether the metrics agree.

Every (system, seed) is trained twice on the same data and features with the same settings, once
with ``TrainConfig.amp`` on (bf16 autocast on CUDA, :func:`mmss_lib.training.trainer._autocast`) and once off
(fp32), into ``{out}/bf16`` and ``{out}/fp32`` (finished runs are skipped: rerunning only reports).
Reported, from the runs' own ``history.json`` and test scores:

- speed: mean training seconds per epoch and per batch of each precision and their ratio
  fp32 / bf16 (> 1: bf16 is faster), per system;
- data wait: the share of the training time spent building batches and moving them to the device
  (``history[*].data_seconds`` / ``train_seconds``; the previous step ended with a
  synchronising ``.item()``, so the device is idle meanwhile: an upper bound of the wait; the
  goal on a GPU is under 10%);
- agreement: test MAP of each precision, their paired difference over test products (per-product
  AP averaged over seeds; 95% paired bootstrap interval) and the best epochs. The two precisions
  follow different float paths, so early stopping may pick other epochs: agreement means the
  interval contains 0 and is narrow, not equal numbers.

On a CPU autocast is not used (``amp`` is CUDA-only), so both arms are fp32: the command still
runs (to test the machinery) and says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PRECISIONS = ("bf16", "fp32")
DEMO_OPTIONS = dict(n_neg=3, max_regions_per_image=10, max_regions_per_item=20)


def train_both(args) -> dict:
    """Train every system x seed under both precisions; ``{precision: results frame}``."""
    from mmss_lib.model_selection.sweeps import run_experiment
    from mmss_lib.training.config import TrainConfig

    out = {}
    for prec in PRECISIONS:
        cfg = TrainConfig(
            device=args.device,
            amp=prec == "bf16",
            epochs=args.epochs,
            patience=args.patience,
            batch_size=32,
            num_threads=args.num_threads,
            **DEMO_OPTIONS,
        )
        res = run_experiment(
            data_root=args.data_root,
            dataset=args.dataset,
            categories=[args.category],
            features_root=args.features,
            runs_root=Path(args.out) / prec,
            systems=args.systems,
            seeds=args.seeds,
            base_config=cfg,
            progress=False,
            n_jobs=args.n_jobs,
            summary=False,
        )
        out[prec] = res.assign(variant=prec)
    return out


def speed_rows(results: dict) -> list[dict]:
    """Per system and precision: epochs, training seconds per epoch and per batch, data-wait share."""
    from mmss_lib.training.run_folder import load_history

    rows = []
    for prec, res in results.items():
        for system, g in res.groupby("system", sort=False):
            train_s = data_s = batches = epochs = 0.0
            for rd in g["run_dir"]:
                for h in load_history(rd):
                    epochs += 1
                    batches += h.get("n_batches", 0)
                    train_s += h["train_seconds"]
                    data_s += h.get("data_seconds", float("nan"))
            rows.append(
                {
                    "system": system,
                    "precision": prec,
                    "runs": len(g),
                    "epochs": int(epochs),
                    "s_per_epoch": train_s / max(epochs, 1),
                    "ms_per_batch": 1e3 * train_s / max(batches, 1),
                    "data_share": data_s / train_s if train_s else float("nan"),
                    "test_MAP": 100 * float(g["MAP"].mean()),
                    "dev_MAP": 100 * float(g["dev_MAP"].mean()),
                    "best_epochs": " ".join(str(int(x)) for x in g["best_epoch"]),
                }
            )
    return rows


def report(results: dict, device: str) -> dict:
    import pandas as pd

    from mmss_lib.bench.common import report as line
    from mmss_lib.evaluation.summary import paired_differences, pooled_per_product

    speed = pd.DataFrame(speed_rows(results))
    pooled = pooled_per_product(pd.concat(list(results.values()), ignore_index=True))
    systems = list(dict.fromkeys(speed["system"]))
    diffs = paired_differences(pooled, [(s, (s, "bf16"), (s, "fp32")) for s in systems])
    if not device.startswith("cuda"):
        line("precision", f"device {device}: autocast is CUDA-only, so both arms ran fp32 (machinery check)")
    out = {"device": device, "systems": {}}
    for s in systems:
        b = speed[(speed.system == s) & (speed.precision == "bf16")].iloc[0]
        f = speed[(speed.system == s) & (speed.precision == "fp32")].iloc[0]
        d = diffs[diffs.comparison == s].iloc[0]
        ratio = f.s_per_epoch / b.s_per_epoch if b.s_per_epoch else float("nan")
        line(
            "precision",
            f"{s}: {b.ms_per_batch:.1f} ms/batch bf16 vs {f.ms_per_batch:.1f} fp32 -> fp32/bf16 "
            f"{ratio:.2f}x per epoch; data wait {100 * b.data_share:.1f}% (bf16) / "
            f"{100 * f.data_share:.1f}% (fp32) of training time (goal < 10%)",
        )
        line(
            "precision",
            f"{s}: test MAP bf16 {b.test_MAP:.2f} vs fp32 {f.test_MAP:.2f}; bf16 - fp32 "
            f"{d['diff']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}] over {int(d['n_products'])} test "
            f"products ({int(b.runs)} seeds); best epochs bf16 {b.best_epochs} / fp32 {f.best_epochs}",
        )
        out["systems"][s] = {
            "bf16": b.to_dict(),
            "fp32": f.to_dict(),
            "diff": {k: float(d[k]) for k in ("diff", "lo", "hi", "p")},
            "fp32_over_bf16": ratio,
        }
    return out


def bench_precision(argv: list[str], prog: str = "mmss bench precision") -> int:
    """bf16 vs fp32: training speed, data-wait share of each step, metric agreement."""
    ap = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--category", required=True)
    ap.add_argument("--features", required=True)
    ap.add_argument("--out", required=True, help="runs root: {out}/bf16 and {out}/fp32")
    ap.add_argument("--systems", nargs="+", default=["mmss", "mcr", "bimpm"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--n-jobs", type=int, default=1, help="runs at once (1: timings without contention)")
    ap.add_argument("--num-threads", type=int, default=4)
    ap.add_argument("--json", help="also write the report here")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="report the finished runs under --out (trained elsewhere, e.g. on the GPU machine)",
    )
    args = ap.parse_args(argv)
    if args.report_only:
        from mmss_lib.training.run_folder import finished_results

        results = {
            p: finished_results(Path(args.out) / p, args.dataset, args.category).assign(variant=p) for p in PRECISIONS
        }
        if any(r.empty for r in results.values()):
            from mmss_lib.errors import MMSSError

            raise MMSSError(
                f"{args.out}: no finished runs of {args.dataset}/{args.category} under "
                f"{' and '.join(str(Path(args.out) / p) for p in PRECISIONS)}"
            )
        both = set.intersection(*({(r.system, r.seed) for r in res.itertuples()} for res in results.values()))
        results = {p: r[[(x.system, x.seed) in both for x in r.itertuples()]] for p, r in results.items()}
    else:
        results = train_both(args)
    rep = report(results, args.device)
    if args.json:
        from mmss_lib.utils import atomic_write_json

        atomic_write_json(args.json, rep)
    return 0
