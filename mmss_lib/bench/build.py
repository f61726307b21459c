"""``mmss bench build``: the Amazon 2018 builder (:func:`mmss_lib.data.amazon2018.build_amazon2018`)
on generated review files: reviews/s and peak memory. :func:`generate_reviews` writes the
synthetic Amazon-2018-style input (also used by the builder's tests)."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

from mmss_lib.bench.common import PeakRSS, max_rss_mib, report
from mmss_lib.data.amazon2018 import build_amazon2018, open_lines


def generate_reviews(
    path: str | os.PathLike, n_reviews: int, *, n_products: int = 20_000, seed: int = 0
) -> dict[str, int]:
    """Write ``n_reviews`` synthetic Amazon-2018-style review lines (gzipped JSON lines) and a
    matching metadata file ``<path>.meta.json.gz`` (newer and older schema mixed, repeated asins,
    HTML-junk titles). Votes: ~75% of reviews have none, the rest a heavy tail (some ``"1,234"``).
    Returns counts. Fast: lines are assembled from pre-encoded pieces."""
    import numpy as np

    rng = np.random.default_rng(seed)
    path = Path(path)
    words = (
        "good bad quality price fits size color works broke love great poor cheap sturdy soft "
        "light heavy battery screen fabric kitchen daily gift return again would recommend"
    ).split()
    texts = [json.dumps(" ".join(rng.choice(words, size=int(k)))) for k in rng.integers(4, 120, size=997)]
    summaries = [json.dumps(" ".join(rng.choice(words, size=int(k)))) for k in rng.integers(1, 6, size=101)]
    asins = [f"B{int(x):09d}" for x in rng.choice(10**9, size=n_products, replace=False)]
    weight = (np.arange(n_products) + 1.0) ** -0.8  # heavy-tailed product popularity
    prod = rng.choice(n_products, size=n_reviews, p=weight / weight.sum())
    has_vote = rng.random(n_reviews) < 0.25
    votes = np.where(has_vote, np.minimum(rng.zipf(1.6, size=n_reviews) + 1, 5000), 0)
    text_i = rng.integers(0, len(texts), size=n_reviews)
    sum_i = rng.integers(0, len(summaries), size=n_reviews)
    has_img = rng.random(n_reviews) < 0.03
    times = rng.integers(1_000_000_000, 1_540_000_000, size=n_reviews)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as fh:
        chunk = []
        for i in range(n_reviews):
            v = int(votes[i])
            vote = f'"vote": "{v:,}", ' if v else ""
            img = (
                f'"image": ["https://images-na.ssl-images-amazon.com/images/I/{i:08d}._SY88.jpg"], '
                if has_img[i]
                else ""
            )
            chunk.append(
                f'{{"overall": {1 + i % 5}.0, {vote}"verified": true, "reviewTime": "01 2, 2015", '
                f'"reviewerID": "A{i:012d}", "asin": "{asins[prod[i]]}", {img}"reviewerName": "x", '
                f'"reviewText": {texts[text_i[i]]}, "summary": {summaries[sum_i[i]]}, '
                f'"unixReviewTime": {int(times[i])}}}\n'
            )
            if len(chunk) == 10_000:
                fh.write("".join(chunk))
                chunk = []
        fh.write("".join(chunk))
    meta_path = Path(str(path) + ".meta.json.gz")
    with gzip.open(meta_path, "wt", encoding="utf-8", compresslevel=1) as fh:
        for j, asin in enumerate(asins):
            thumb = f"https://images-na.ssl-images-amazon.com/images/I/{j:08d}._SX38_SY50_CR,0,0,38,50_.jpg"
            imgs = f'"image": ["{thumb}"]' if j % 2 else f'"imageURL": ["{thumb}"], "imageURLHighRes": []'
            title = '<span class="a-size-medium a-color-secondary"' if j % 3 == 0 else f"Product {j}"
            line = (
                f'{{"asin": "{asin}", "title": {json.dumps(title)}, "description": ["A product.", '
                f'{texts[j % len(texts)]}], "feature": [], {imgs}, "also_buy": {json.dumps(asins[:20])}}}\n'
            )
            fh.write(line)
            if j % 50 == 0:
                fh.write(line)  # repeated asin
    return {"reviews": n_reviews, "products": n_products, "reviews_with_votes": int(has_vote.sum())}


def bench_build(argv: list[str], prog: str = "mmss bench build") -> int:
    """Generate N reviews (default 1,000,000) into a temp dir, build, and print reviews/s and
    peak memory (RSS sampled every 20 ms, minus the RSS before the build; optionally the
    tracemalloc peak, which slows the build, in a second run)."""
    import tempfile

    ap = argparse.ArgumentParser(prog=prog, description=bench_build.__doc__)
    ap.add_argument("--reviews", type=int, default=1_000_000)
    ap.add_argument("--products", type=int, default=20_000)
    ap.add_argument("--tracemalloc", action="store_true", help="also measure the tracemalloc peak (second, slower run)")
    a = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mmss-bench-build-") as tmp:
        src = Path(tmp) / "reviews.json.gz"
        t = time.perf_counter()
        gen = generate_reviews(src, a.reviews, n_products=a.products)
        t_gen = time.perf_counter() - t
        raw_bytes = sum(len(line) for _, line in open_lines(src))
        report(
            "data",
            f"generated {gen['reviews']:,} reviews ({gen['reviews_with_votes']:,} with votes) of "
            f"{gen['products']:,} products in {t_gen:.1f}s; {src.stat().st_size / 2**20:.1f} MiB gzipped, "
            f"{raw_bytes / 2**20:.1f} MiB uncompressed",
        )
        with PeakRSS(0.02) as mem:
            t = time.perf_counter()
            rep = build_amazon2018(src, Path(str(src) + ".meta.json.gz"), Path(tmp) / "out", "bench")
            dt = time.perf_counter() - t
        delta = mem.delta
        report(
            "build",
            f"{dt:.1f}s, {rep['reviews_read'] / dt:,.0f} reviews/s (3 streaming passes); kept "
            f"{rep['products_kept']:,} products / {rep['reviews_kept']:,} reviews",
        )
        report(
            "memory",
            f"peak RSS delta {delta / 2**20:.1f} MiB = {delta / raw_bytes:.3f} x the uncompressed input; "
            f"{delta / max(rep['reviews_kept'], 1):,.0f} bytes per kept review; "
            f"ru_maxrss {max_rss_mib():.0f} MiB",
        )
        if a.tracemalloc:
            import tracemalloc

            tracemalloc.start()
            t = time.perf_counter()
            build_amazon2018(src, Path(str(src) + ".meta.json.gz"), Path(tmp) / "out2", "bench")
            dt2 = time.perf_counter() - t
            _, tpeak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            report(
                "memory",
                f"tracemalloc peak {tpeak / 2**20:.1f} MiB = {tpeak / raw_bytes:.3f} x the uncompressed input "
                f"(traced run {dt2 / dt:.1f}x slower)",
            )
    return 0
