"""Helpers shared by every benchmark: timing (interleaved best-of and median repeats), memory
readings of this process (RSS, anonymous memory, a sampled peak), the thread count, and the
one-line report printer. Benchmarks print ratios measured in one run; nothing here asserts a time.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence

# ------------------------------------------------------------------------------------ timing


def interleaved(fns: Sequence[Callable[[], object]], repeat: int) -> list[float]:
    """Best-of-``repeat`` seconds of each function, the functions run in turn within each round so
    that load from other processes on a shared machine affects them alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Best-of-``repeat`` seconds of one function."""
    return interleaved([fn], repeat)[0]


def timed_calls(fn: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` (for a median; warm up before)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def default_threads() -> int:
    """The CPU cores this process may use (its affinity mask on Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ------------------------------------------------------------------------------------ memory

_STATUS_KEYS = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "VmHWM": "hwm"}


def memory_now() -> dict:
    """Resident memory of this process from /proc/self/status, MiB: ``rss`` (all resident pages),
    ``anon`` (RssAnon: private anonymous memory: heap, tensors) and ``file`` (RssFile: mapped
    files: shared libraries, memory-mapped feature stores and banks; reclaimable page cache),
    ``hwm`` (VmHWM: peak RSS of this process image; unlike ``ru_maxrss`` not inherited across exec)."""
    out = {"rss": 0.0, "anon": 0.0, "file": 0.0, "hwm": 0.0}
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                name = _STATUS_KEYS.get(key)
                if name:
                    out[name] = int(value.split()[0]) / 1024.0
    except OSError:  # not Linux: fall back to the peak RSS only
        import resource

        out["rss"] = out["hwm"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def rss_bytes() -> int:
    """Resident set size of this process now, bytes (/proc/self/statm; 0 where there is none)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def max_rss_mib() -> float:
    """``ru_maxrss`` of this process, MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


class PeakRSS:
    """Context manager sampling :func:`rss_bytes` every ``interval`` seconds in a thread:
    ``base`` is the RSS on entry, ``peak`` the largest sample (one taken on exit too),
    ``delta`` = peak - base."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def delta(self) -> int:
        return self.peak - self.base


# ------------------------------------------------------------------------------------ report


def report(tag: str, message: str) -> None:
    """Print one result line ``[tag] message`` now (flushed, so a long run shows progress)."""
    print(f"[{tag}] {message}", flush=True)


# ------------------------------------------------------------------------------------ long benchmarks


def phase_timer(path, tag: str, every: float = 60.0):
    """``timed(name, fn)`` for a benchmark of resumable phases: runs ``fn`` and adds its wall
    seconds to ``name`` in the JSON file ``path``, printing ``{tag}: {name} done in ... min``.

    The file keeps the seconds across resumed runs, so a phase finished over several sessions shows
    its whole cost. While ``fn`` runs, a background thread adds the time so far every ``every``
    seconds and ``name`` is listed under ``"_unfinished"``: a run killed outright (the end of a
    session) loses at most ``every`` seconds and its phase reads as unfinished until a later run
    completes it. Each write reads the file again (runs of other phases at the same time keep
    theirs) and adds only the seconds since its own last write; writes are atomic."""
    import json
    from pathlib import Path

    from mmss_lib.utils import atomic_write_json

    path = Path(path)
    lock = threading.Lock()

    def timed(name: str, fn: Callable[[], object]) -> None:
        t0 = time.perf_counter()
        state = {"last": t0}

        def add(finished: bool = False) -> None:
            with lock:
                now = time.perf_counter()
                timing = json.loads(path.read_text()) if path.exists() else {}  # read now: another run may have added
                timing[name] = timing.get(name, 0.0) + now - state["last"]
                state["last"] = now
                unfinished = [n for n in timing.get(UNFINISHED, []) if n != name]
                timing[UNFINISHED] = unfinished if finished else [*unfinished, name]
                if not timing[UNFINISHED]:
                    del timing[UNFINISHED]
                atomic_write_json(path, timing)

        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                add()

        add()
        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        finished = False
        try:
            fn()
            finished = True
        finally:
            stop.set()
            thread.join()
            add(finished=finished)
        print(f"{tag}: {name} done in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)

    return timed


UNFINISHED = "_unfinished"


def timing_lines(path) -> list[str]:
    """The report's "Measured time" section from a :func:`phase_timer` file (none when missing)."""
    import json
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return []
    t = json.loads(path.read_text())
    unfinished = set(t.pop(UNFINISHED, []))
    return [
        "## Measured time (wall clock, this machine, summed over the runs that made each phase)",
        "",
        ", ".join(f"{k} {v / 60:.1f} min" + (" (unfinished)" if k in unfinished else "") for k, v in t.items()),
        "",
    ]
