"""``mmss bench metrics``: the vectorised :func:`mmss_lib.metrics.ranking.ranking_metrics` against a pandas
groupby-apply of the per-product reference :func:`mmss_lib.metrics.ranking.product_metrics_reference`."""

from __future__ import annotations

import argparse
import time

import numpy as np

from mmss_lib.bench.common import report, timed_calls
from mmss_lib.metrics.ranking import product_metrics_reference, ranking_metrics


def bench_metrics(argv: list[str], prog: str = "mmss bench metrics") -> int:
    """``mmss bench metrics``: :func:`ranking_metrics` vs a pandas groupby-apply of
    :func:`product_metrics_reference` on the same random split; checks that both agree and
    prints both times and the speed-up measured in this run."""
    import pandas as pd

    p = argparse.ArgumentParser(prog=prog, description=bench_metrics.__doc__)
    p.add_argument("--reviews", type=int, default=1_000_000, help="number of reviews (default 1,000,000)")
    p.add_argument("--products", type=int, default=50_000, help="number of products (default 50,000)")
    p.add_argument("--threshold", type=float, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed calls of ranking_metrics after one warm-up call; the median is reported (default 3)",
    )
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.reviews < 1 or not 1 <= args.products <= args.reviews:
        p.error("need 1 <= --products <= --reviews")

    rng = np.random.default_rng(args.seed)
    # every product gets at least one review; the rest are spread at random (interleaved order)
    pid = np.concatenate([np.arange(args.products), rng.integers(0, args.products, args.reviews - args.products)])
    rng.shuffle(pid)
    labels = rng.integers(0, 5, args.reviews)
    scores = np.round(rng.normal(size=args.reviews), 2)  # rounded: some ties, kept in input order
    report("data", f"{args.reviews:,} reviews in {args.products:,} products, threshold {args.threshold:g}")

    fast = ranking_metrics(pid, labels, scores, threshold=args.threshold)  # warm-up (first-touch page faults)
    t_fast = float(
        np.median(timed_calls(lambda: ranking_metrics(pid, labels, scores, threshold=args.threshold), args.repeats))
    )

    df = pd.DataFrame({"product_id": pid, "label": labels, "score": scores})
    t0 = time.perf_counter()
    per = df.groupby("product_id", sort=False).apply(
        lambda g: pd.Series(product_metrics_reference(g["label"].tolist(), g["score"].tolist(), args.threshold)),
        include_groups=False,
    )
    slow = {
        "MAP": float(per["AP"].mean()),
        "NDCG@3": float(per["NDCG@3"].mean()),
        "NDCG@5": float(per["NDCG@5"].mean()),
        "MRR": float(per["RR"].mean()),
    }
    t_slow = time.perf_counter() - t0

    agree = all(abs(fast[k] - slow[k]) < 1e-9 for k in slow)
    for k in slow:
        report("metric", f"{k:7s} vectorised {fast[k]:.6f}  groupby-apply {slow[k]:.6f}")
    report("time", f"ranking_metrics (numpy, vectorised): {t_fast:.3f} s (median of {args.repeats} after a warm-up)")
    report("time", f"pandas groupby-apply (per-product Python): {t_slow:.3f} s")
    report("speed-up", f"{t_slow / max(t_fast, 1e-12):.1f}x  (goal >= 50x); results agree: {agree}")
    return 0 if agree else 1
