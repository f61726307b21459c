"""mmss_lib.data.images (`mmss fetch-images`) against a real HTTP server thread on 127.0.0.1.

The server serves real PNG/JPEG files, a 404, a 500 that succeeds on the retry, a redirect, a
response slower than the timeout, HTML named .jpg, a truncated PNG, a decompression bomb (a small
PNG of 30,000 x 30,000 pixels), a file over the byte limit, and counts every request per path.
No test reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmss_lib.data.images import FetchSettings, fetch_category, fetch_images, format_summary, read_manifest
from mmss_lib.data.mrhp import SPLITS, dataset_stats, load_mrhp, stats_markdown, write_mrhp
from mmss_lib.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def _img(fmt: str, size=(40, 30), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def _bomb_png(side: int = 30_000) -> bytes:
    """A valid 1-bit PNG of side x side pixels that compresses to about 100 KB."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


PNG, JPEG = _img("PNG"), _img("JPEG", color=(20, 120, 220))
GIF = _img("GIF", color=(0, 200, 0))
NOISE_JPEG = _img("JPEG")  # replaced by a large one in the fixture


class Server:
    """A threaded HTTP server on 127.0.0.1 (port chosen by the OS) with fixed routes."""

    def __init__(self, delay: float = 0.0):
        self.hits: Counter = Counter()
        self.agents: list[str] = []
        self.delay = delay  # seconds added to every /img/ response (the kill test)
        self.lock = threading.Lock()
        rng = np.random.default_rng(0)
        big = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)).save(big, "JPEG", quality=100)
        self.files = {
            "/img/red.png": (PNG, "image/png"),
            "/img/blue.jpg": (JPEG, "image/jpeg"),
            "/img/green.gif": (GIF, "image/gif"),
            "/img/caf%C3%A9%20red.png": (PNG, "image/png"),
            "/img/named_wrong.jpg": (PNG, "image/jpeg"),  # PNG bytes named .jpg: stored as .png
            "/html.jpg": (b"<html><body>not found</body></html>", "image/jpeg"),
            "/trunc.png": (_img("PNG", size=(300, 300))[:400], "image/png"),
            "/bomb.png": (_bomb_png(), "image/png"),
            "/big.jpg": (big.getvalue(), "image/jpeg"),
        }
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                path = self.path
                with server.lock:
                    server.hits[path] += 1
                    n = server.hits[path]
                    server.agents.append(self.headers.get("User-Agent", ""))
                if path == "/404.jpg":
                    return self._send(404, b"no", "text/plain")
                if path == "/flaky.png":
                    if n == 1:
                        return self._send(500, b"oops", "text/plain")
                    return self._send(200, PNG, "image/png")
                if path == "/always500.png":
                    return self._send(503, b"busy", "text/plain")
                if path == "/redirect.jpg":
                    self.send_response(302)
                    self.send_header("Location", "/img/blue.jpg")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if path == "/slow.jpg":
                    time.sleep(2.0)
                    return self._send(200, JPEG, "image/jpeg")
                num = re.fullmatch(r"/img/n(\d+)\.png", path)
                if num:  # /img/n<k>.png: a distinct small PNG per k
                    if server.delay:
                        time.sleep(server.delay)
                    k = int(num.group(1))
                    return self._send(200, _img("PNG", size=(8 + k % 5, 8), color=(k % 256, 0, 0)), "image/png")
                if path in server.files:
                    body, ctype = server.files[path]
                    return self._send(200, body, ctype)
                return self._send(404, b"no", "text/plain")

            def _send(self, code, body, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """Requests go straight to 127.0.0.1 even where the environment names an HTTP proxy."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture()
def server():
    s = Server()
    yield s
    s.close()


def write_dataset(root: Path, product_urls: dict, review_urls: dict, *, dataset="amazon", category="cat") -> None:
    """A tiny MRHP category: every product in every split (suffix per split), its reviews' URL lists given."""
    for si, split in enumerate(SPLITS):
        prd, rvw = [], []
        for p, urls in product_urls.items():
            pid = f"{p}{si}"
            prd.append({"product_id": pid, "name": f"name {p}", "description": ["a product"], "img_urls": urls})
            for j, r_urls in enumerate(review_urls.get(p, [])):
                rvw.append(
                    {
                        "review_id": f"{pid}-{j}",
                        "product_id": pid,
                        "text": f"review {j} of {pid}",
                        "label": j % 5,
                        "img_urls": r_urls,
                    }
                )
        cols = ["review_id", "product_id", "text", "label", "img_urls"]
        write_mrhp(root, dataset, category, split, pd.DataFrame(prd), pd.DataFrame(rvw, columns=cols))


FAST = FetchSettings(concurrency=4, timeout=1.0, retries=2, backoff=0.01, max_bytes=200_000)


def _by_url(rows):
    return {(r["kind"], r["item_id"], int(r["order"])): r for r in rows}


def test_every_case_lands_in_the_manifest_with_its_result(server, tmp_path):
    u = server.url
    products = {
        "P": [u("/img/red.png"), u("/img/blue.jpg"), u("/img/named_wrong.jpg")],
        "Q": [u("/404.jpg"), u("/redirect.jpg"), u("/img/green.gif")],
    }
    reviews = {
        "P": [
            [u("/flaky.png"), u("/slow.jpg")],
            [u("/html.jpg"), u("/trunc.png"), u("/bomb.png"), u("/big.jpg")],
            [u("/img/red.png")],  # the same URL as a product image: one request
            [],
        ],
        "Q": [[u("/always500.png"), "ftp://127.0.0.1/x.jpg"]],
    }
    write_dataset(tmp_path, products, reviews)
    t0 = time.perf_counter()
    (sm,) = fetch_images(tmp_path, "amazon", ["cat"], FAST)
    assert time.perf_counter() - t0 < 30
    rows = read_manifest(tmp_path / "amazon" / "cat" / "images" / "manifest.csv")
    n_urls = 3 * (sum(map(len, products.values())) + sum(len(x) for v in reviews.values() for x in v))
    assert len(rows) == sm["urls"] == n_urls
    m = _by_url(rows)
    res = {k: r["result"] for k, r in m.items() if k[1].split("-")[0].endswith("0")}  # the train copies
    assert res[("prd", "P0", 0)] == "fetched" and m[("prd", "P0", 0)]["file"] == "prd/P0/000.png"
    assert res[("prd", "P0", 1)] == "fetched" and m[("prd", "P0", 1)]["file"] == "prd/P0/001.jpg"
    assert m[("prd", "P0", 2)]["file"] == "prd/P0/002.png"  # PNG bytes named .jpg kept by their real type
    assert res[("prd", "Q0", 0)] == "http_404" and m[("prd", "Q0", 0)]["http_status"] == "404"
    assert res[("prd", "Q0", 1)] == "fetched"  # redirect followed
    assert m[("prd", "Q0", 2)]["file"] == "prd/Q0/002.png"  # GIF re-encoded as PNG (the loader reads png)
    assert res[("rvw", "P0-0", 0)] == "fetched"  # 500, then 200 on the retry
    assert res[("rvw", "P0-0", 1)] == "timeout"
    assert res[("rvw", "P0-1", 0)] == "not_an_image"  # HTML named .jpg
    assert res[("rvw", "P0-1", 1)] == "not_an_image"  # truncated
    assert res[("rvw", "P0-1", 2)] == "too_large" and "pixels" in m[("rvw", "P0-1", 2)]["error"]
    assert res[("rvw", "P0-1", 3)] == "too_large" and "bytes" in m[("rvw", "P0-1", 3)]["error"]
    assert res[("rvw", "Q0-0", 0)] == "http_503" and res[("rvw", "Q0-0", 1)] == "bad_url"
    # the red PNG: requested once for its 6 entries (3 products + 3 reviews), the others duplicates
    assert server.hits["/img/red.png"] == 1
    red = [r for r in rows if r["url"].endswith("/img/red.png")]
    assert sorted(Counter(r["result"] for r in red).items()) == [("duplicate", 5), ("fetched", 1)]
    assert len({r["sha256"] for r in red}) == 1 and all(r["file"] for r in red)
    assert server.hits["/flaky.png"] == 2 and server.hits["/always500.png"] == 3  # 1 + 2 retries
    assert server.hits["/404.jpg"] == 1  # a 404 is not retried
    assert all(a.startswith("mmss-fetch-images/") for a in server.agents)
    # the stored files decode as what their extension says; sha256 / bytes are of the downloaded body
    for r in rows:
        if r["file"]:
            p = tmp_path / "amazon" / "cat" / "images" / r["file"]
            with Image.open(p) as im:
                assert {"JPEG": ".jpg", "PNG": ".png"}[im.format] == p.suffix
    import hashlib

    assert m[("prd", "P0", 1)]["sha256"] == hashlib.sha256(JPEG).hexdigest()
    assert int(m[("prd", "P0", 1)]["bytes"]) == len(JPEG)
    # the loader finds them, in URL order; coverage in the summary and in `mmss stats`
    prd, rvw = load_mrhp(tmp_path, "amazon", "cat", "train")
    files = dict(zip(prd.product_id, prd.image_files, strict=True))
    assert [Path(f).name for f in files["P0"]] == ["000.png", "001.jpg", "002.png"]
    assert [Path(f).name for f in files["Q0"]] == ["001.jpg", "002.png"]
    assert sm["products_with_images"] == 6 and sm["products"] == 6
    assert sm["reviews_with_images"] == 6 and sm["reviews"] == 15  # P-0, P-2 and no Q review, per split
    line = format_summary(sm)
    assert "http_404 3" in line and "timeout 3" in line and "products 6/6 (100.0%)" in line
    assert "reviews 6/15 (40.0%)" in line
    st = dataset_stats(tmp_path, "amazon", ["cat"])
    assert int(st.loc[0, "reviews_with_images"]) == 6 and int(st.loc[0, "products_with_images"]) == 6
    assert "6/6 (100.0%) / 6/15 (40.0%)" in stats_markdown(st)


def test_rerun_on_a_complete_folder_does_nothing_and_says_so(server, tmp_path, capsys):
    from mmss_lib.cli import main

    u = server.url
    write_dataset(tmp_path, {"P": [u("/img/red.png"), u("/404.jpg")]}, {"P": [[u("/img/blue.jpg")]]})
    argv = ["fetch-images", "--data-root", str(tmp_path), "--dataset", "amazon", "--categories", "cat"]
    argv += ["--timeout", "2", "--backoff", "0.01", "--no-progress"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    hits = sum(server.hits.values())
    manifest = tmp_path / "amazon" / "cat" / "images" / "manifest.csv"
    before = manifest.read_text()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "nothing to fetch" in out and "nothing to fetch" not in first
    assert sum(server.hits.values()) == hits  # not one request
    assert manifest.read_text() == before
    # --retry-failed asks again for the 404s only
    assert main([*argv, "--retry-failed"]) == 0
    assert server.hits["/404.jpg"] == 2 and server.hits["/img/red.png"] == 1
    capsys.readouterr()
    # other output settings: refused (the files were made with the old ones), unless --overwrite
    assert main([*argv, "--max-side", "20"]) == 1
    err = capsys.readouterr().err
    assert "max_side None -> 20" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert main([*argv, "--max-side", "20", "--overwrite"]) == 0
    with Image.open(tmp_path / "amazon" / "cat" / "images" / "prd" / "P0" / "000.png") as im:
        assert max(im.size) == 20  # 40x30 downscaled to the max side


def test_a_deleted_file_is_fetched_again(server, tmp_path):
    u = server.url
    write_dataset(tmp_path, {"P": [u("/img/red.png")]}, {"P": [[u("/img/blue.jpg")]]})
    fetch_category(tmp_path, "amazon", "cat", FAST)
    (tmp_path / "amazon" / "cat" / "images" / "rvw" / "P1-0" / "000.jpg").unlink()
    sm = fetch_category(tmp_path, "amazon", "cat", FAST)
    # blue is fetched again for one entry... and its other copies were there: one request in all
    assert server.hits["/img/blue.jpg"] == 1 and sm["results"] == {"duplicate": 4, "fetched": 2}
    assert sm["requests_this_run"] == 0
    assert (tmp_path / "amazon" / "cat" / "images" / "rvw" / "P1-0" / "000.jpg").is_file()


def test_full_size_strips_the_thumbnail_suffix(server, tmp_path):
    u = server.url
    write_dataset(tmp_path, {"P": [u("/img/red._SX38_SY50_CR,0,0,38,50_.png")]}, {})
    (sm,) = fetch_images(tmp_path, "amazon", ["cat"], FetchSettings(full_size=True, timeout=2))
    assert server.hits["/img/red.png"] == 1 and sm["results"] == {"duplicate": 2, "fetched": 1}
    rows = read_manifest(tmp_path / "amazon" / "cat" / "images" / "manifest.csv")
    assert {r["url"] for r in rows} == {u("/img/red.png")}


def test_lazada_url_encodings(server, tmp_path):
    """Lazada: product img_url a JSON string of a list, review img_url a JSON string of {"url": ...}."""
    u = server.url
    write_dataset(tmp_path, {"P": [u("/img/red.png")]}, {"P": [[u("/img/blue.jpg")]]}, dataset="lazada")
    raw = json.loads((tmp_path / "lazada" / "cat" / "cat.rvw.train").read_text())
    assert isinstance(next(iter(raw["img_url"].values())), str) and '"url"' in next(iter(raw["img_url"].values()))
    (sm,) = fetch_images(tmp_path, "lazada", ["cat"], FAST)
    assert sm["products_with_images"] == 3 and sm["reviews_with_images"] == 3


def test_bad_options_and_names_refused_before_any_request(server, tmp_path):
    write_dataset(tmp_path, {"P": [server.url("/img/red.png")]}, {})
    for bad in (
        FetchSettings(concurrency=0),
        FetchSettings(timeout=0),
        FetchSettings(max_bytes=-1),
        FetchSettings(retries=-1),
        FetchSettings(max_side=3),
    ):
        with pytest.raises(DataError):
            fetch_images(tmp_path, "amazon", ["cat"], bad)
    with pytest.raises(DataError, match=r"--dataset '\.\./x'"):
        fetch_images(tmp_path, "../x", ["cat"], FAST)
    with pytest.raises(DataError, match=r"--categories '\.\.'"):
        fetch_images(tmp_path, "amazon", [".."], FAST)
    with pytest.raises(DataError, match="not found|no such|missing"):
        fetch_images(tmp_path, "amazon", ["cat", "nocat"], FAST)  # the missing category: before cat's requests
    assert sum(server.hits.values()) == 0


def _journal_lines(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def test_kill_9_then_resume_fetches_only_the_rest(tmp_path):
    """A real `mmss fetch-images` process killed with SIGKILL in the middle; the rerun requests
    only the URLs without a result, and the end state is the same as one uninterrupted run."""
    srv = Server(delay=0.05)
    try:
        n = 60
        products = {f"P{k}": [srv.url(f"/img/n{k}.png")] for k in range(n)}
        write_dataset(tmp_path, products, {}, category="kill")
        journal = tmp_path / "amazon" / "kill" / "images" / "fetch_journal.jsonl"
        cmd = [sys.executable, "-m", "mmss_lib", "fetch-images", "--data-root", str(tmp_path), "--dataset", "amazon"]
        cmd += ["--categories", "kill", "--concurrency", "2", "--no-progress", "--timeout", "5"]
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while _journal_lines(journal) < 40 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        first = sum(srv.hits.values())
        done = {json.loads(x)["url"] for x in journal.read_text().splitlines()[1:] if x.endswith("}")}
        assert 13 <= len(done) < n and first < n  # 3 journal lines per URL (one per split)
        srv.hits.clear()
        (sm,) = fetch_images(tmp_path, "amazon", ["kill"], FetchSettings(concurrency=4, timeout=5))
        # every URL the journal had is not requested again; the rest is, once each
        assert not set(srv.hits) & {u[len(srv.base) :] for u in done}
        assert sum(srv.hits.values()) == n - len({u for u in done})
        assert sm["results"]["fetched"] + sm["results"].get("duplicate", 0) == 3 * n
        assert sm["products_with_images"] == 3 * n
        rows = read_manifest(tmp_path / "amazon" / "kill" / "images" / "manifest.csv")
        assert len(rows) == 3 * n and all(r["result"] in ("fetched", "duplicate") for r in rows)
        files = sorted(p.relative_to(tmp_path) for p in (tmp_path / "amazon" / "kill" / "images").rglob("*.png"))
        assert len(files) == 3 * n
        assert not list((tmp_path / "amazon" / "kill" / "images").rglob("*.tmp"))
    finally:
        srv.close()


def test_ray_distributor(server, tmp_path):
    """--distributor ray: the URLs fetched by Ray tasks (a local Ray instance of 2 CPUs)."""
    pytest.importorskip("ray")
    u = server.url
    write_dataset(tmp_path, {f"P{k}": [u(f"/img/n{k}.png"), u("/404.jpg")] for k in range(5)}, {})
    (sm,) = fetch_images(tmp_path, "amazon", ["cat"], FAST, distributor="ray", ray_chunk=2, ray_num_cpus=2)
    assert sm["results"] == {"duplicate": 10, "fetched": 5, "http_404": 15}
    assert sm["products_with_images"] == 15
    with pytest.raises(Exception, match="nothing answers at the Ray cluster address"):
        fetch_images(
            tmp_path,
            "amazon",
            ["cat"],
            FAST,
            distributor="ray",
            ray_address="127.0.0.1:9",
            ray_timeout=1,
            overwrite=True,
        )


@pytest.mark.slow
def test_fetch_extract_train_end_to_end(server, tmp_path, tiny_bert_dir):
    """fetch-images -> extract -> train on a tiny dataset whose image URLs point at the server: the
    region features of the reviews with fetched images are non-empty, of the others empty."""
    import torch

    from mmss_lib.cli import main
    from mmss_lib.features.store import FeatureStore, feature_dirs

    torch.set_num_threads(1)
    u = server.url
    products = {f"P{k}": [u(f"/img/n{k}.png")] for k in range(3)}
    reviews = {f"P{k}": [[u(f"/img/n{10 + k}.png")], [], [u("/404.jpg")], [u("/img/blue.jpg")]] for k in range(3)}
    write_dataset(tmp_path / "data", products, reviews, category="home")
    common = ["--data-root", str(tmp_path / "data"), "--dataset", "amazon", "--categories", "home"]
    assert main(["fetch-images", *common, "--no-progress", "--timeout", "3", "--max-side", "64"]) == 0
    feats = tmp_path / "features"
    argv = ["extract", *common, "--features", str(feats), "--text-model", str(tiny_bert_dir)]
    argv += ["--text-max-len", "32", "--allow-random-weights", "--detector-min-size", "64"]
    argv += ["--detector-max-size", "64", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    store = FeatureStore(feature_dirs(feats, "amazon", "home")["region_rvw"])
    _, rvw = load_mrhp(tmp_path / "data", "amazon", "home", "train")
    for rid, files in zip(rvw.review_id, rvw.image_files, strict=True):
        n = len(store.get(rid)["x"])
        assert (n > 0) == bool(files), (rid, files, n)
    assert sum(bool(f) for f in rvw.image_files) == 6  # reviews 0 and 3 of each product
    runs = tmp_path / "runs"
    train = ["train", *common, "--features", str(feats), "--runs", str(runs), "--systems", "mmss", "--seeds", "0"]
    train += ["--epochs", "1", "--device", "cpu", "--no-progress"]
    assert main(train) == 0
    assert list(runs.rglob("*.json"))


def test_bench_fetch_tiny_run(capsys):
    """`mmss bench fetch` on 12 URLs: a rate per concurrency (every URL fetched) and the projection."""
    from mmss_lib.bench import BENCHES
    from mmss_lib.bench.fetch import bench_fetch

    assert BENCHES["fetch"] == "mmss_lib.bench.fetch:bench_fetch"
    assert bench_fetch(["--images", "12", "--levels", "1", "3", "--latency-ms", "10", "--latency-levels", "4"]) == 0
    out = capsys.readouterr().out
    runs = [line for line in out.splitlines() if "images/s" in line]
    assert len(runs) == 3 and all("(12/12 fetched" in line for line in runs)
    assert "latency   10 ms, concurrency   4" in out
    assert "amazon: 59,117 products, 1,414,169 reviews" in out and "lazada: 20,924 products" in out


def test_urls_with_spaces_and_non_ascii_and_bad_urls(server, tmp_path):
    u = server.url
    urls = [u("/img/café red.png"), "http://127.0.0.1:notaport/x.jpg", "not a url", "https:///nohost.jpg"]
    write_dataset(tmp_path, {"P": urls}, {})
    (sm,) = fetch_images(tmp_path, "amazon", ["cat"], FAST)
    assert sm["results"] == {"bad_url": 9, "duplicate": 2, "fetched": 1}
    assert server.hits["/img/caf%C3%A9%20red.png"] == 1
    rows = read_manifest(tmp_path / "amazon" / "cat" / "images" / "manifest.csv")
    assert rows[0]["url"] == u("/img/café red.png")  # the manifest keeps the URL as the file has it


@pytest.mark.parametrize(
    "fmt, mode, ext",
    [
        ("TIFF", "CMYK", ".png"),
        ("BMP", "RGB", ".png"),
        ("GIF", "P", ".png"),
        ("WEBP", "RGB", ".webp"),
        ("JPEG", "CMYK", ".jpg"),
    ],
)
def test_check_image_types_and_resize(fmt, mode, ext):
    """Any decodable type is kept (JPEG/PNG/WebP as is, others as PNG), downscaled on request."""
    from mmss_lib.data.images import check_image

    buf = io.BytesIO()
    Image.new(mode, (120, 60)).save(buf, fmt)
    body = buf.getvalue()
    out = check_image(body, FetchSettings(max_side=30))
    assert out.result == "fetched" and out.ext == ext
    with Image.open(io.BytesIO(out.payload)) as im:
        assert im.size == (30, 15)
    kept = check_image(body, FetchSettings())
    assert kept.ext == ext and (kept.payload == body) == (ext != ".png" or fmt == "PNG")
    assert check_image(body, FetchSettings(max_pixels=7199)).result == "too_large"


def test_files_of_others_stay_and_a_changed_url_replaces_ours(server, tmp_path):
    """A user's own files (the demo's ``0.png``, ``cover.jpg``) are never removed; when an item's URL
    changes, the file fetched for the old one goes."""
    u = server.url
    write_dataset(tmp_path, {"P": [u("/img/red.png")]}, {})
    d = tmp_path / "amazon" / "cat" / "images" / "prd" / "P0"
    d.mkdir(parents=True)
    (d / "0.png").write_bytes(PNG)
    (d / "cover.jpg").write_bytes(JPEG)
    fetch_category(tmp_path, "amazon", "cat", FAST)
    assert sorted(f.name for f in d.iterdir()) == ["0.png", "000.png", "cover.jpg"]
    write_dataset(tmp_path, {"P": [u("/img/blue.jpg")]}, {})  # the URL changed
    sm = fetch_category(tmp_path, "amazon", "cat", FAST)
    assert sm["requests_this_run"] == 1 and sm["results"] == {"duplicate": 2, "fetched": 1}
    assert sorted(f.name for f in d.iterdir()) == ["0.png", "000.jpg", "cover.jpg"]
    fetch_category(tmp_path, "amazon", "cat", FAST, overwrite=True)
    assert sorted(f.name for f in d.iterdir()) == ["0.png", "000.jpg", "cover.jpg"]
