"""``mmss bench fetch``: the image fetcher (:mod:`mmss_lib.data.images`) against a local HTTP server.

A threaded server on 127.0.0.1 (a process of its own) serves generated JPEGs of an Amazon-like size (``--side`` pixels,
about 40-60 KB); a generated category of ``--images`` products, one distinct URL each, is fetched
with :func:`mmss_lib.data.images.fetch_category` at each ``--levels`` concurrency, first with no
added latency (the machine's own ceiling: HTTP handling, decoding, writing, journal) and then
with ``--latency-ms`` added by the server to every response (a remote image host's round trip, so
that the rate shows what concurrency buys). Printed per run: images/s, and the decoding and
writing time per image with their share of the request threads' time, and the main thread's journal time per image. Then a projection for the
benchmarks' image counts (Table 3 of the paper, the image-count assumptions of
``mmss bench paper-scale``): images, hours on one machine at the measured rates, disk, bandwidth.
Nothing here asserts a time; the local rate is an upper bound of what a real host allows.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mmss_lib.bench.common import default_threads, report


def _images(n: int, side: int) -> list[bytes]:
    """``n`` distinct JPEGs of ``side`` x ``side``: smooth colour fields with mild noise (photo-like sizes)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    out = []
    for _ in range(n):
        a, b, c = rng.random(3)
        rgb = np.stack([a * 255 * xx, b * 255 * yy, c * 255 * (1 - xx * yy)], axis=-1)
        rgb += rng.normal(0, 6, rgb.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def _serve(bodies: list[bytes], latency, port_queue) -> None:
    """The server process: a threaded HTTP server on 127.0.0.1; ``latency`` (a shared double, s)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # noqa: N802
            try:
                k = int(self.path.rsplit("/", 1)[1].split(".")[0])
            except ValueError:
                k = -1
            if k < 0:
                self.send_error(404)
                return
            if latency.value:
                time.sleep(latency.value)
            body = bodies[k % len(bodies)]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ThreadingHTTPServer.request_queue_size = 512
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    port_queue.put(httpd.server_address[1])
    httpd.serve_forever()


class _Server:
    """The server in a process of its own, so that it does not share this process's GIL."""

    def __init__(self, bodies: list[bytes]):
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        self._latency = ctx.Value("d", 0.0)
        q = ctx.Queue()
        self.proc = ctx.Process(target=_serve, args=(bodies, self._latency, q), daemon=True)
        self.proc.start()
        self.base = f"http://127.0.0.1:{q.get(timeout=60)}"

    @property
    def latency(self) -> float:
        return self._latency.value

    @latency.setter
    def latency(self, value: float) -> None:
        self._latency.value = value

    def close(self) -> None:
        self.proc.terminate()
        self.proc.join(10)


def _write_category(root: Path, base: str, n: int, offset: int) -> None:
    import pandas as pd

    from mmss_lib.data.mrhp import SPLITS, write_mrhp

    per = -(-n // len(SPLITS))
    for si, split in enumerate(SPLITS):
        ids = range(si * per, min(n, (si + 1) * per))
        prd = pd.DataFrame(
            [
                {"product_id": f"P{i}", "name": "p", "description": ["d"], "img_urls": [f"{base}/img/{offset + i}.jpg"]}
                for i in ids
            ]
        )
        rvw = pd.DataFrame(
            [{"review_id": f"P{i}-0", "product_id": f"P{i}", "text": "r", "label": 1, "img_urls": []} for i in ids]
        )
        write_mrhp(root, "bench", "fetch", split, prd, rvw)


def _one_run(server: _Server, workdir: Path, n: int, concurrency: int, offset: int) -> dict:
    from mmss_lib.data.images import FetchSettings, collect_entries, fetch_category

    root = workdir / f"c{concurrency}_{offset}"
    _write_category(root, server.base, n, offset)
    collected = collect_entries(root, "bench", "fetch")
    s = FetchSettings(concurrency=concurrency, timeout=60.0, retries=0)
    t0 = time.perf_counter()
    sm = fetch_category(root, "bench", "fetch", s, collected=collected)
    wall = time.perf_counter() - t0
    ok = sm["results"].get("fetched", 0)
    thread_s = wall * concurrency
    return {
        "concurrency": concurrency,
        "fetched": ok,
        "failed": n - ok,
        "wall_s": wall,
        "images_s": ok / wall,
        "decode_ms": 1000 * sm["seconds_decode"] / max(ok, 1),
        "write_ms": 1000 * sm["seconds_write"] / max(ok, 1),
        "decode_share": sm["seconds_decode"] / thread_s,
        "write_share": sm["seconds_write"] / thread_s,
        "journal_ms": 1000 * sm["seconds_journal"] / max(ok, 1),
        "bytes": sum(p.stat().st_size for p in (root / "bench" / "fetch" / "images").rglob("*.jpg")),
    }


def bench_fetch(argv: list[str], prog: str = "mmss bench fetch") -> int:
    """images/s of mmss fetch-images against a local server at a few concurrencies; a projection."""
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=600, help="URLs per run (default 600)")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16], help="concurrencies (default 1 4 16)")
    ap.add_argument("--side", type=int, default=500, help="image side in pixels (default 500)")
    ap.add_argument(
        "--latency-ms", type=float, default=100.0, help="added server latency of the second pass (default 100; 0: skip)"
    )
    ap.add_argument("--latency-levels", type=int, nargs="+", default=[16, 64], help="concurrencies with latency")
    ap.add_argument("--product-images", type=float, default=4.0, help="mean images per product (assumption)")
    ap.add_argument("--review-image-share", type=float, default=0.25, help="share of reviews with images (assumption)")
    ap.add_argument("--review-images", type=float, default=1.5, help="mean images per review with images (assumption)")
    a = ap.parse_args(argv)
    if a.images < 10 or min(a.levels + a.latency_levels) < 1 or a.side < 16 or a.latency_ms < 0:
        ap.error("--images >= 10, concurrencies >= 1, --side >= 16, --latency-ms >= 0")

    bodies = _images(64, a.side)
    mean_kb = sum(map(len, bodies)) / len(bodies) / 1024
    report(
        "fetch", f"{a.images} URLs per run, {a.side}x{a.side} JPEGs of {mean_kb:.0f} KB mean, {default_threads()} cores"
    )
    server = _Server(bodies)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="mmss-bench-fetch-") as tmp:
            offset = 0
            for latency, levels in ((0.0, a.levels), (a.latency_ms / 1000, a.latency_levels if a.latency_ms else [])):
                server.latency = latency
                for c in levels:
                    r = _one_run(server, Path(tmp), a.images, c, offset)
                    offset += a.images
                    r["latency_ms"] = latency * 1000
                    rows.append(r)
                    report(
                        "fetch",
                        f"latency {latency * 1000:4.0f} ms, concurrency {c:3d}: {r['images_s']:7.1f} images/s "
                        f"({r['fetched']}/{a.images} fetched in {r['wall_s']:.2f} s); decode {r['decode_ms']:.2f} ms/image "
                        f"({100 * r['decode_share']:.0f}% of the request threads' time), write {r['write_ms']:.2f} ms/image "
                        f"({100 * r['write_share']:.0f}%), journal {r['journal_ms']:.2f} ms/image (main thread)",
                    )
    finally:
        server.close()

    from mmss_lib.bench.paper_scale import TABLE3

    best0 = max((r for r in rows if r["latency_ms"] == 0), key=lambda r: r["images_s"])
    lat = [r for r in rows if r["latency_ms"] > 0]
    best_lat = max(lat, key=lambda r: r["images_s"]) if lat else None
    for ds, cats in TABLE3.items():
        n_p = sum(p for cat in cats.values() for p, _ in cat.values())
        n_r = sum(r for cat in cats.values() for _, r in cat.values())
        n_img = n_p * a.product_images + n_r * a.review_image_share * a.review_images
        disk_gb = n_img * mean_kb / 2**20
        msg = (
            f"{ds}: {n_p:,} products, {n_r:,} reviews -> about {n_img:,.0f} images "
            f"({a.product_images:g}/product, {100 * a.review_image_share:.0f}% of reviews x {a.review_images:g}; "
            f"assumptions), {disk_gb:.0f} GB at {mean_kb:.0f} KB each; one machine: "
            f"{n_img / best0['images_s'] / 3600:.2f} h at the local ceiling ({best0['images_s']:.0f}/s, "
            f"concurrency {best0['concurrency']})"
        )
        if best_lat is not None:
            msg += (
                f", {n_img / best_lat['images_s'] / 3600:.1f} h with {best_lat['latency_ms']:.0f} ms per response "
                f"({best_lat['images_s']:.0f}/s, concurrency {best_lat['concurrency']}; "
                f"{best_lat['images_s'] * mean_kb * 8 / 1024:.0f} Mbit/s)"
            )
        report("fetch", msg)
    return 0
