"""Download the images behind the URLs of MRHP files: ``mmss fetch-images``.

``mmss fetch-images --data-root R --dataset D --categories C ...`` reads the image URLs of the
products and reviews of every split (:func:`mmss_lib.data.mrhp.load_mrhp`, which normalises all
``img_url`` variants: Amazon's plain lists, Lazada's JSON strings and ``{"url": ...}`` dicts, what
``mmss build-amazon2018`` writes) and puts each image where the loader reads local images:
``R/D/C/images/{prd|rvw}/{item_id}/{order}.{ext}``, ``order`` zero-padded so that the files sorted
by name are in URL order, ``ext`` the image's real type (``.jpg``, ``.png``, ``.webp``; any other
decodable type, e.g. GIF or BMP, is re-encoded as PNG, the loader reading only those three).
``mmss extract`` then builds region features from them with no other step.

Guarantees
----------
- **Resumable.** Every finished URL is appended (and flushed) to ``images/fetch_journal.jsonl``
  after its file is in place (written atomically), so after Ctrl-C, ``kill -9`` or a lost node a
  rerun fetches only the URLs without a result; a rerun on a complete folder fetches nothing and
  says so. Failed URLs are tried again only with ``--retry-failed``. The settings that change the
  files (``full_size``, ``max_side``, ``max_bytes``, ``max_pixels``) are recorded; a rerun with
  other settings is refused unless ``--overwrite`` (a result is never one of other inputs).
  Only files this command wrote (named in the journal) are ever removed, when their URL changed;
  other files in the item folders (a user's own, the demo's ``{j}.png``) stay.
- **Polite and bounded.** ``concurrency`` requests at once (a thread pool; with Ray, per task),
  a per-request ``timeout`` (socket and total), ``retries`` with exponential backoff and jitter
  on timeouts, connection errors, 408, 429 and 5xx (``Retry-After`` honoured up to 30 s), at
  most ``max_bytes`` read per image (the ``Content-Length`` checked first), at most
  ``max_pixels`` per image checked from the header before any decoding (decompression bombs
  refused), only images PIL can fully decode kept, optional downscaling to ``max_side``, and a
  user agent that names the project.
- **Every URL accounted for.** ``images/manifest.csv`` (written atomically at the end of each
  category, also after an interrupt) has one row per (item, URL): ``kind, item_id, order, url,
  result, http_status, bytes, sha256, file, error``; ``result`` is ``fetched``, ``duplicate``
  (the URL was already fetched for another entry: its image is placed here too), ``http_<code>``,
  ``timeout``, ``connection_error``, ``not_an_image``, ``too_large`` or ``bad_url``. A summary
  line per category gives the counts by result and the coverage of products and reviews with at
  least one image.

The downloader
--------------
The field's downloader, img2dataset 1.47.0, was measured against these guarantees (installed
apart, against the same local server as this module's tests) and does not serve them: it pins
``pandas<3`` (installing it replaces the project's pandas 3.1 with 2.3.3); it retried a 500 and a
503 after 5-9 ms (no backoff); it requested a URL repeated in the list twice; it has no byte
limit (a response is read whole into memory: the 316 KB file over the tests' limit was kept); a
12,000 x 12,000 PNG bomb of 20 KB was refused only after decoding (``image area too large``; its
worker peaked at 1.2 GB of memory), where this module refuses it from the header; with
re-encoding off it names PNG bytes ``.jpg``; it resumes by whole shards. So the download is a
small thread-pool fetcher on the standard library's ``urllib`` (HTTP/HTTPS, redirects followed,
the environment's proxy settings honoured) and the checks use Pillow: no extra dependency. The
cluster path (``distributor="ray"``, the ``ray`` extra) spreads chunks of URLs over Ray tasks,
each running the same fetcher; the images come back through Ray's object store and the driver
stores them, so the workers need no shared file system.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import hashlib
import http.client
import io
import json
import math
import os
import random
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmss_lib.data.amazon2018 import check_folder_name, full_size_url
from mmss_lib.data.mrhp import SPLITS, image_dir, load_mrhp
from mmss_lib.errors import DataError, MMSSError
from mmss_lib.utils import atomic_path

USER_AGENT = "mmss-fetch-images/0.1 (MRHP research image fetcher; python-urllib)"
MANIFEST = "manifest.csv"
JOURNAL = "fetch_journal.jsonl"
MANIFEST_COLUMNS = ("kind", "item_id", "order", "url", "result", "http_status", "bytes", "sha256", "file", "error")
RESULTS = (
    "fetched",
    "duplicate",
    "http_status",
    "timeout",
    "connection_error",
    "not_an_image",
    "too_large",
    "bad_url",
)
KEPT_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}  # stored as is; others become PNG
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchSettings:
    """What one request may do. The fields in :data:`OUTPUT_SETTINGS` change the files written."""

    concurrency: int = 16
    timeout: float = 10.0
    retries: int = 2
    backoff: float = 0.5
    max_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000
    max_side: int | None = None
    full_size: bool = False
    user_agent: str = USER_AGENT

    def check(self) -> FetchSettings:
        for name, low in (("concurrency", 1), ("retries", 0), ("max_bytes", 1), ("max_pixels", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise DataError(f"{name}={v!r} (--{name.replace('_', '-')}): expected an integer >= {low}")
        for name in ("timeout", "backoff"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise DataError(f"{name}={v!r} (--{name}): expected a number of seconds >= 0")
        if self.timeout <= 0:
            raise DataError(f"timeout={self.timeout!r} (--timeout): expected a number of seconds > 0")
        if self.max_side is not None and (
            isinstance(self.max_side, bool) or not isinstance(self.max_side, int) or self.max_side < 16
        ):
            raise DataError(f"max_side={self.max_side!r} (--max-side): expected an integer >= 16 or none")
        if not self.user_agent.strip():
            raise DataError("user_agent (--user-agent): expected a non-empty string")
        return self


OUTPUT_SETTINGS = ("full_size", "max_side", "max_bytes", "max_pixels")


@dataclass
class Outcome:
    """The result of fetching one URL (``payload``: the bytes to store, ``ext``: their extension)."""

    result: str
    http_status: int | None = None
    bytes: int = 0
    sha256: str = ""
    error: str = ""
    retry_after: float | None = None
    payload: bytes | None = field(default=None, repr=False)
    ext: str = ""
    seconds_decode: float = 0.0
    file: str = ""  # where the payload was stored (relative to images/), once placed
    seconds_write: float = 0.0


# ----------------------------------------------------------------------------- one URL


def _read_body(resp, max_bytes: int, deadline: float) -> bytes | None:
    """The body, or None when it is longer than ``max_bytes``; TimeoutError past ``deadline``."""
    length = resp.headers.get("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > max_bytes:
        return None
    buf = bytearray()
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("total time of the response past the timeout")
        chunk = resp.read(min(_CHUNK, max_bytes + 1 - len(buf)))
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > max_bytes:
            return None


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    v = exc.headers.get("Retry-After") if exc.headers else None
    if v and v.strip().isdigit():
        return min(float(v), 30.0)
    return None


def download(url: str, s: FetchSettings) -> tuple[bytes | None, Outcome | None]:
    """GET ``url`` under the settings' limits: (body, None) or (None, the failure's Outcome)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        return None, Outcome("bad_url", error=f"not a URL ({exc})")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None, Outcome("bad_url", error="expected an http:// or https:// URL")
    # spaces and non-ASCII characters percent-encoded (UTF-8), what is already encoded kept
    url = urllib.parse.quote(url, safe=":/?#[]@!$&'()*+,;=%~")
    last: Outcome | None = None
    for attempt in range(s.retries + 1):
        if attempt:
            wait = s.backoff * 2 ** (attempt - 1) * (1 + random.random())
            if last is not None and last.retry_after is not None:
                wait = max(wait, last.retry_after)
            time.sleep(wait)
        req = urllib.request.Request(url, headers={"User-Agent": s.user_agent, "Accept": "image/*,*/*;q=0.5"})
        deadline = time.monotonic() + s.timeout
        try:
            with urllib.request.urlopen(req, timeout=s.timeout) as resp:
                body = _read_body(resp, s.max_bytes, deadline)
            if body is None:
                return None, Outcome("too_large", http_status=200, error=f"more than {s.max_bytes} bytes")
            return body, None
        except urllib.error.HTTPError as exc:
            last = Outcome(
                f"http_{exc.code}", http_status=exc.code, error=str(exc.reason)[:200], retry_after=_retry_after(exc)
            )
            if exc.code not in _RETRY_STATUS:
                return None, last
        except TimeoutError as exc:
            last = Outcome("timeout", error=f"no complete response within {s.timeout:g} s ({exc})"[:200])
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                last = Outcome("timeout", error=f"no response within {s.timeout:g} s")
            else:
                last = Outcome("connection_error", error=str(reason)[:200])
        except (OSError, ValueError, http.client.HTTPException) as exc:  # reset, bad status line, cut body ...
            last = Outcome("connection_error", error=f"{type(exc).__name__}: {exc}"[:200])
    assert last is not None
    return None, last


def check_image(body: bytes, s: FetchSettings) -> Outcome:
    """Decode ``body`` fully with PIL (pixel count checked from the header first) and return
    the bytes to store: as downloaded for JPEG/PNG/WebP, re-encoded as PNG for any other
    decodable type, downscaled to ``max_side`` when asked."""
    from PIL import Image, UnidentifiedImageError

    t0 = time.perf_counter()
    out = Outcome("fetched", http_status=200, bytes=len(body), sha256=hashlib.sha256(body).hexdigest())
    try:
        im = Image.open(io.BytesIO(body))
        w, h = im.size
        if w * h > s.max_pixels:
            out.result, out.error = "too_large", f"{w}x{h} pixels, more than {s.max_pixels}"
            return out
        fmt = im.format
        im.load()  # a full decode: a truncated or corrupt file fails here
    except Image.DecompressionBombError as exc:
        out.result, out.error = "too_large", str(exc)[:200]
        return out
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        out.result, out.error = "not_an_image", f"{type(exc).__name__}: {exc}"[:200]
        return out
    finally:
        out.seconds_decode = time.perf_counter() - t0
    resize = s.max_side is not None and max(w, h) > s.max_side
    if fmt in KEPT_FORMATS and not resize:
        out.payload, out.ext = body, KEPT_FORMATS[fmt]
    else:
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        if resize:
            im.thumbnail((s.max_side, s.max_side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        try:
            if fmt == "JPEG":
                ext = ".jpg"
                im.convert("RGB" if im.mode not in ("RGB", "L") else im.mode).save(buf, "JPEG", quality=95)
            else:
                ext = ".png" if fmt != "WEBP" else ".webp"
                if im.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):  # CMYK, YCbCr, F ...
                    im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
                im.save(buf, "PNG" if ext == ".png" else "WEBP")
        except (OSError, ValueError) as exc:
            out.result, out.error = "not_an_image", f"cannot be re-encoded: {type(exc).__name__}: {exc}"[:200]
            return out
        out.payload, out.ext = buf.getvalue(), ext
    out.seconds_decode = time.perf_counter() - t0
    return out


def fetch_one(url: str, s: FetchSettings) -> Outcome:
    """Download and check one URL: never raises for a bad URL, server or image."""
    body, failed = download(url, s)
    if failed is not None:
        return failed
    return check_image(body, s)


def fetch_many(urls: Sequence[str], s: FetchSettings) -> list[tuple[str, Outcome]]:
    """:func:`fetch_one` over ``urls`` with ``s.concurrency`` threads (the body of one Ray task)."""
    with cf.ThreadPoolExecutor(max_workers=s.concurrency) as pool:
        return list(zip(urls, pool.map(lambda u: fetch_one(u, s), urls), strict=True))


# ----------------------------------------------------------------------------- what to fetch


@dataclass(frozen=True)
class Entry:
    kind: str  # prd | rvw
    item_id: str
    order: int
    url: str
    width: int  # digits of the zero-padded order

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.kind, self.item_id, self.order, self.url)

    def stem(self) -> str:
        return f"{self.order:0{self.width}d}"


def collect_entries(
    data_root, dataset: str, category: str, *, full_size: bool = False
) -> tuple[list[Entry], dict[str, int]]:
    """Every (item, URL) of the category's three splits in file order, and the number of
    products and reviews (``{"prd": n, "rvw": n}``)."""
    entries: list[Entry] = []
    counts = {"prd": 0, "rvw": 0}
    seen: set[tuple[str, str]] = set()
    for split in SPLITS:
        products, reviews = load_mrhp(data_root, dataset, category, split)
        counts["prd"] += len(products)
        counts["rvw"] += len(reviews)
        for kind, ids, urls in (
            ("prd", products["product_id"], products["img_urls"]),
            ("rvw", reviews["review_id"], reviews["img_urls"]),
        ):
            for item, lst in zip(ids, urls, strict=True):
                if (kind, item) in seen:
                    continue
                seen.add((kind, item))
                width = max(3, len(str(max(len(lst) - 1, 0))))
                for order, url in enumerate(lst):
                    url = url.strip()
                    entries.append(Entry(kind, str(item), order, full_size_url(url) if full_size else url, width))
    return entries, counts


# ----------------------------------------------------------------------------- journal / manifest


def _read_journal(path: Path) -> tuple[dict | None, dict[tuple, dict]]:
    """(settings header, key -> latest record) of a journal; a cut last line (kill -9) is ignored."""
    if not path.exists():
        return None, {}
    header: dict | None = None
    records: dict[tuple, dict] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: that URL is fetched again
            if n == 1 and "settings" in rec:
                header = rec["settings"]
                continue
            try:
                records[(rec["kind"], rec["item_id"], int(rec["order"]), rec["url"])] = rec
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{path}: line {n} is not a fetch record; remove the file or use --overwrite") from None
    return header, records


def _write_manifest(path: Path, entries: Sequence[Entry], records: dict[tuple, dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(MANIFEST_COLUMNS)
            for e in entries:
                r = records.get(e.key)
                if r is None:
                    w.writerow([e.kind, e.item_id, e.order, e.url, "pending", "", "", "", "", ""])
                else:
                    w.writerow([r.get(c, "") if r.get(c) is not None else "" for c in MANIFEST_COLUMNS])


def read_manifest(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a manifest written by :func:`fetch_category`."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _place(base: Path, e: Entry, payload: bytes, ext: str) -> str:
    """Write one image atomically at ``base/kind/item/order.ext`` (other types of that order removed)."""
    d = base / e.kind / e.item_id
    d.mkdir(parents=True, exist_ok=True)
    target = d / f"{e.stem()}{ext}"
    with atomic_path(target) as tmp:
        tmp.write_bytes(payload)
    return str(target.relative_to(base))


def _copy_to(base: Path, src_rel: str, e: Entry) -> str:
    src = base / src_rel
    d = base / e.kind / e.item_id
    d.mkdir(parents=True, exist_ok=True)
    target = d / f"{e.stem()}{src.suffix}"
    if target != src:
        with atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
    return str(target.relative_to(base))


def _prune(base: Path, entries: Sequence[Entry], records: dict[tuple, dict], ours: set[str]) -> int:
    """Remove the image files this command wrote earlier (``ours``: named in the journal) that no
    current entry names (a URL that changed, another type of the same order), and temporary files
    a kill left; files it did not write (a user's own, the demo's) stay."""
    keep = {records[e.key]["file"] for e in entries if e.key in records and records[e.key].get("file")}
    removed = 0
    for kind in ("prd", "rvw"):
        kd = base / kind
        if not kd.is_dir():
            continue
        for d in kd.iterdir():
            if not d.is_dir():
                continue
            for f in d.iterdir():
                rel = str(f.relative_to(base))
                stale_tmp = f.name.startswith(".") and f.name.endswith(".tmp")  # left by a kill
                if stale_tmp or (rel in ours and rel not in keep):
                    f.unlink()
                    removed += 1
    return removed


# ----------------------------------------------------------------------------- distributors


def _local_runner(s: FetchSettings):
    """Threads here; each stores its image itself (``place``), so that writing runs in parallel."""
    pool = cf.ThreadPoolExecutor(max_workers=s.concurrency)

    def fetch_and_place(u: str, place: Callable[[str, Outcome], None]) -> Outcome:
        out = fetch_one(u, s)
        place(u, out)
        return out

    def run(urls: Sequence[str], place: Callable[[str, Outcome], None]) -> Iterable[tuple[str, Outcome]]:
        futs = {}
        it = iter(urls)
        # at most 4 x concurrency URLs in flight: bounded memory for a million URLs
        for u in it:
            futs[pool.submit(fetch_and_place, u, place)] = u
            if len(futs) >= 4 * s.concurrency:
                break
        while futs:
            done, _ = cf.wait(futs, return_when=cf.FIRST_COMPLETED)
            for f in done:
                u = futs.pop(f)
                yield u, f.result()
                nxt = next(it, None)
                if nxt is not None:
                    futs[pool.submit(fetch_and_place, nxt, place)] = nxt

    def close() -> None:  # queued URLs dropped (an interrupt); the requests under way finish
        pool.shutdown(wait=True, cancel_futures=True)

    return run, close


def _connect_ray(address: str | None, timeout: float, num_cpus: int | None):
    """``ray.init`` for the fetcher: the cluster at ``address`` (else ``RAY_ADDRESS``, else a
    local instance); a head that does not answer within ``timeout`` s is a one-line error."""
    try:
        import ray
    except ImportError:
        raise MMSSError("--distributor ray needs Ray: pip install 'mmss[ray]'") from None
    if ray.is_initialized():
        return ray, False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kw: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING"}
    if address:
        from mmss_lib.ray_cluster import token_auth_like_the_head, wait_for_head

        a = address.strip()
        wait_for_head(a, timeout, who="--distributor ray")
        token_auth_like_the_head(a)
        kw["address"] = a
    elif num_cpus is not None:
        kw["num_cpus"] = num_cpus
    try:
        ray.init(**kw)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, authentication ...
        raise MMSSError(
            f"--distributor ray: cannot connect to Ray at {address!r} ({' '.join(str(exc).split())[:300]})"
        ) from None
    return ray, True


def _ray_runner(s: FetchSettings, address: str | None, timeout: float, chunk: int, num_cpus: int | None):
    ray, started = _connect_ray(address, timeout, num_cpus)
    task = ray.remote(num_cpus=1)(fetch_many)
    in_flight = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))

    def run(urls: Sequence[str], place: Callable[[str, Outcome], None]) -> Iterable[tuple[str, Outcome]]:
        """The images come back through the object store and are stored here (no shared disk needed)."""

        def placed(results):
            for u, out in results:
                place(u, out)
                yield u, out

        pending = []
        for i in range(0, len(urls), chunk):
            pending.append(task.remote(list(urls[i : i + chunk]), s))
            while len(pending) >= in_flight:
                done, pending = ray.wait(pending, num_returns=1)
                yield from placed(ray.get(done[0]))
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield from placed(ray.get(done[0]))

    def close() -> None:
        if started:
            ray.shutdown()

    return run, close


# ----------------------------------------------------------------------------- one category


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="img",
        disable=not enabled,
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]",
    )


def fetch_category(
    data_root,
    dataset: str,
    category: str,
    settings: FetchSettings | None = None,
    *,
    retry_failed: bool = False,
    overwrite: bool = False,
    distributor: str = "local",
    ray_address: str | None = None,
    ray_timeout: float = 30.0,
    ray_chunk: int = 256,
    ray_num_cpus: int | None = None,
    progress: bool = False,
    limit: int | None = None,
    on_result: Callable[[Entry, dict], None] | None = None,
    collected: tuple[list[Entry], dict[str, int]] | None = None,
) -> dict[str, Any]:
    """Fetch the images of one category (see the module docstring); return its summary dict.

    ``limit``: stop after this many URLs fetched in this call (a partial run, as a kill would
    leave it). ``on_result``: called after each URL's record is journalled (tests, benchmarks).
    ``collected``: :func:`collect_entries` of this category with these settings, when already read.
    """
    s = (settings or FetchSettings()).check()
    check_folder_name(dataset, "--dataset")
    check_folder_name(category, "--categories")
    if distributor not in ("local", "ray"):
        raise DataError(f"distributor={distributor!r} (--distributor): expected local or ray")
    if limit is not None and limit < 0:
        raise DataError(f"limit={limit!r}: expected an integer >= 0")
    t0 = time.perf_counter()
    entries, counts = collected or collect_entries(data_root, dataset, category, full_size=s.full_size)
    base = image_dir(data_root, dataset, category, "prd").parent
    journal_path, manifest_path = base / JOURNAL, base / MANIFEST
    wanted = {k: getattr(s, k) for k in OUTPUT_SETTINGS}

    header, records = _read_journal(journal_path)
    ours = {r["file"] for r in records.values() if r.get("file")}  # files written by earlier runs
    if overwrite:
        header, records = None, {}
    if header is not None and {k: header.get(k) for k in OUTPUT_SETTINGS} != wanted:
        diff = ", ".join(
            f"{k} {header.get(k)!r} -> {wanted[k]!r}" for k in OUTPUT_SETTINGS if header.get(k) != wanted[k]
        )
        raise DataError(
            f"{journal_path}: the images there were fetched with other settings ({diff}); "
            "use the same settings to resume, or --overwrite to fetch everything again with the new ones"
        )
    # a "fetched" record counts only while its file is there
    for k, r in list(records.items()):
        if r.get("file") and not (base / r["file"]).is_file():
            del records[k]
    current = {e.key for e in entries}
    records = {k: r for k, r in records.items() if k in current}

    def needs(e: Entry) -> bool:
        r = records.get(e.key)
        return r is None or (retry_failed and not r.get("file"))

    todo = [e for e in entries if needs(e)]
    label = f"{dataset}/{category}"
    if not todo:
        _write_manifest(manifest_path, entries, records)
        summary = _summary(label, entries, records, base, counts, fetched_now=0, seconds=time.perf_counter() - t0)
        summary["nothing_to_do"] = True
        return summary

    if distributor == "ray":  # connected before anything is written: a wrong address changes nothing
        run, close = _ray_runner(s, ray_address, ray_timeout, ray_chunk, ray_num_cpus)
    else:
        run, close = _local_runner(s)
    base.mkdir(parents=True, exist_ok=True)
    for f in base.glob(".*.tmp"):  # a manifest or journal write cut by a kill
        f.unlink()
    if overwrite or header is None:
        with atomic_path(journal_path) as tmp:
            tmp.write_text(json.dumps({"settings": wanted}) + "\n", encoding="utf-8")
        if overwrite:
            records = {}
            todo = list(entries)
    # URL -> entries waiting for it; a URL already fetched for an entry serves the others as duplicates
    by_url: dict[str, list[Entry]] = {}
    for e in todo:
        by_url.setdefault(e.url, []).append(e)
    done_file = {r["url"]: r for r in records.values() if r.get("file") and r["result"] in ("fetched", "duplicate")}
    fetched_now = 0
    timing = {"decode": 0.0, "write": 0.0, "journal": 0.0}
    bar = _progress(len(todo), label, progress)
    with open(journal_path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        cut = False
        if size:
            fh.seek(size - 1)
            cut = fh.read(1) != b"\n"
    jf = open(journal_path, "a", encoding="utf-8")
    if cut:  # the last line was cut by a kill: start on a new line
        jf.write("\n")

    def record(e: Entry, rec: dict) -> None:
        records[e.key] = rec
        jf.write(json.dumps(rec) + "\n")
        jf.flush()
        bar.update(1)
        if on_result is not None:
            on_result(e, rec)

    def base_rec(e: Entry) -> dict:
        return {"kind": e.kind, "item_id": e.item_id, "order": e.order, "url": e.url}

    try:
        # URLs already fetched earlier (or twice in the to-do list) need no request
        for url in [u for u in by_url if u in done_file]:
            src = done_file[url]
            for e in by_url.pop(url):
                rel = _copy_to(base, src["file"], e)
                rec = dict(src, **base_rec(e), result="duplicate", file=rel, error="")
                record(e, rec)
        urls = list(by_url)
        if limit is not None:
            urls = urls[:limit]
        first_of = {u: by_url[u][0] for u in urls}  # read by the worker threads

        def place(url: str, out: Outcome) -> None:
            if out.payload is not None:
                t1 = time.perf_counter()
                out.file = _place(base, first_of[url], out.payload, out.ext)
                out.payload = None
                out.seconds_write = time.perf_counter() - t1

        for url, out in run(urls, place):
            t1 = time.perf_counter()
            waiting = by_url.pop(url)
            first, rest = waiting[0], waiting[1:]
            rec = base_rec(first) | {
                "result": out.result,
                "http_status": out.http_status,
                "bytes": out.bytes,
                "sha256": out.sha256,
                "file": out.file,
                "error": out.error,
            }
            timing["write"] += out.seconds_write
            timing["decode"] += out.seconds_decode
            record(first, rec)
            fetched_now += 1
            for e in rest:
                if rec["file"]:
                    dup = dict(rec, **base_rec(e), result="duplicate", file=_copy_to(base, rec["file"], e))
                else:
                    dup = dict(rec, **base_rec(e))
                record(e, dup)
            timing["journal"] += time.perf_counter() - t1
    finally:
        bar.close()
        jf.close()
        close()
        _prune(base, entries, records, ours)
        _write_manifest(manifest_path, entries, records)
        with atomic_path(journal_path) as tmp:  # compacted: the header and the current records
            tmp.write_text(
                "".join(
                    json.dumps(x) + "\n"
                    for x in [{"settings": wanted}, *(records[e.key] for e in entries if e.key in records)]
                ),
                encoding="utf-8",
            )
    summary = _summary(label, entries, records, base, counts, fetched_now, time.perf_counter() - t0)
    summary["seconds_decode"] = round(timing["decode"], 3)
    summary["seconds_write"] = round(timing["write"], 3)  # storing the images (summed over threads)
    summary["seconds_journal"] = round(timing["journal"], 3)  # records and duplicate copies (one thread)
    return summary


def _summary(label, entries, records, base: Path, counts, fetched_now: int, seconds: float) -> dict[str, Any]:
    by = Counter(records[e.key]["result"] if e.key in records else "pending" for e in entries)
    with_img = {"prd": set(), "rvw": set()}
    for e in entries:
        r = records.get(e.key)
        if r is not None and r.get("file"):
            with_img[e.kind].add(e.item_id)
    return {
        "dataset_category": label,
        "urls": len(entries),
        "results": dict(sorted(by.items())),
        "requests_this_run": fetched_now,
        "products": counts["prd"],
        "reviews": counts["rvw"],
        "products_with_images": len(with_img["prd"]),
        "reviews_with_images": len(with_img["rvw"]),
        "manifest": str(base / MANIFEST),
        "seconds": round(seconds, 3),
        "nothing_to_do": False,
    }


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "n/a"


def format_summary(sm: dict[str, Any]) -> str:
    """One line per category: what happened, failures by reason, coverage."""
    res = dict(sm["results"])
    ok = res.pop("fetched", 0) + res.pop("duplicate", 0)
    pending = res.pop("pending", 0)
    failed = ", ".join(f"{k} {v:,}" for k, v in res.items()) or "none"
    head = (
        f"{sm['dataset_category']}: nothing to fetch, every URL already has a result (--retry-failed tries the failed ones again); "
        if sm.get("nothing_to_do")
        else f"{sm['dataset_category']}: {sm['requests_this_run']:,} URLs requested in {sm['seconds']:.1f} s; "
    )
    return (
        head + f"{sm['urls']:,} URLs: {ok:,} with an image (fetched {sm['results'].get('fetched', 0):,}, duplicate "
        f"{sm['results'].get('duplicate', 0):,}), failed: {failed}"
        + (f", pending {pending:,}" if pending else "")
        + f"; coverage: products {sm['products_with_images']:,}/{sm['products']:,} ({_pct(sm['products_with_images'], sm['products'])}), "
        f"reviews {sm['reviews_with_images']:,}/{sm['reviews']:,} ({_pct(sm['reviews_with_images'], sm['reviews'])}) "
        f"with >= 1 image; manifest {sm['manifest']}"
    )


def fetch_images(data_root, dataset: str, categories: Sequence[str], settings: FetchSettings | None = None, **kw):
    """:func:`fetch_category` for each category (all checked before any download); the summaries."""
    s = (settings or FetchSettings()).check()
    check_folder_name(dataset, "--dataset")
    for c in categories:
        check_folder_name(c, "--categories")
    # every file read first: a bad file stops the run before any request
    collected = {c: collect_entries(data_root, dataset, c, full_size=s.full_size) for c in categories}
    return [fetch_category(data_root, dataset, c, s, collected=collected[c], **kw) for c in categories]


def cli_main(argv: list[str], prog: str = "mmss fetch-images") -> int:
    d = FetchSettings()
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Download the product and review images of MRHP files into "
        "{data-root}/{dataset}/{category}/images/{prd|rvw}/{item_id}/ (resumable; a manifest per category).",
    )
    ap.add_argument("--data-root", required=True, help="folder holding {dataset}/{category}/ files")
    ap.add_argument("--dataset", required=True, help="amazon, lazada, or the --dataset of build-amazon*")
    ap.add_argument("--categories", nargs="+", required=True)
    ap.add_argument(
        "--concurrency", type=int, default=d.concurrency, help=f"requests at once (default {d.concurrency})"
    )
    ap.add_argument("--timeout", type=float, default=d.timeout, help=f"seconds per request (default {d.timeout:g})")
    ap.add_argument(
        "--retries", type=int, default=d.retries, help=f"retries of a transient failure (default {d.retries})"
    )
    ap.add_argument(
        "--backoff",
        type=float,
        default=d.backoff,
        help=f"first retry wait in s, doubled each time (default {d.backoff:g})",
    )
    ap.add_argument(
        "--max-bytes", type=int, default=d.max_bytes, help=f"largest image file in bytes (default {d.max_bytes})"
    )
    ap.add_argument(
        "--max-pixels", type=int, default=d.max_pixels, help=f"largest image in pixels (default {d.max_pixels})"
    )
    ap.add_argument("--max-side", type=int, default=None, help="downscale images to this longest side (default: keep)")
    ap.add_argument(
        "--full-size", action="store_true", help="strip Amazon's thumbnail size suffix (._SX38_SY50_.jpg -> .jpg)"
    )
    ap.add_argument("--user-agent", default=d.user_agent, help="User-Agent header (default names the project)")
    ap.add_argument("--retry-failed", action="store_true", help="also request again the URLs that failed before")
    ap.add_argument("--overwrite", action="store_true", help="forget earlier results and fetch everything again")
    ap.add_argument(
        "--distributor", choices=("local", "ray"), default="local", help="local: threads here; ray: Ray tasks"
    )
    ap.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="Ray cluster (HOST:6379, ray://HOST:10001, auto; default: RAY_ADDRESS, else a local Ray instance)",
    )
    ap.add_argument(
        "--ray-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds to wait for the Ray head (default 30)",
    )
    ap.add_argument("--ray-chunk", type=int, default=256, help="URLs per Ray task (default 256)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if a.ray_chunk < 1:
        ap.error(f"--ray-chunk {a.ray_chunk}: expected an integer >= 1")
    if not (a.ray_timeout > 0 and math.isfinite(a.ray_timeout)):
        ap.error(f"--ray-timeout {a.ray_timeout}: expected a number of seconds > 0")
    if a.distributor == "local" and a.ray_address:
        ap.error("--ray-address is given but --distributor is local; add --distributor ray")
    s = FetchSettings(
        concurrency=a.concurrency,
        timeout=a.timeout,
        retries=a.retries,
        backoff=a.backoff,
        max_bytes=a.max_bytes,
        max_pixels=a.max_pixels,
        max_side=a.max_side,
        full_size=a.full_size,
        user_agent=a.user_agent,
    )
    sums = fetch_images(
        a.data_root,
        a.dataset,
        a.categories,
        s,
        retry_failed=a.retry_failed,
        overwrite=a.overwrite,
        distributor=a.distributor,
        ray_address=a.ray_address,
        ray_timeout=a.ray_timeout,
        ray_chunk=a.ray_chunk,
        progress=not a.no_progress,
    )
    for sm in sums:
        print(format_summary(sm), flush=True)
    return 0


__all__ = [
    "FetchSettings",
    "Outcome",
    "Entry",
    "check_image",
    "collect_entries",
    "download",
    "fetch_category",
    "fetch_images",
    "fetch_many",
    "fetch_one",
    "format_summary",
    "read_manifest",
]
