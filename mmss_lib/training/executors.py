"""Where the runs of a sweep execute: worker processes of this machine, or Ray tasks on a cluster.

An executor takes a list of :class:`Job` (a name, a top-level function and its arguments) and
yields one :class:`JobResult` per job *as the jobs finish* (not in submission order). A job that
raises is captured as a result with ``error`` (exception type and message) and ``traceback``; the
other jobs go on. The executors know nothing about training: ``mmss_lib.model_selection.sweeps`` builds the
jobs (one per run), skips finished runs before submitting anything, and turns the results into
its tables.

Both are context managers: ``with executor:`` keeps one Ray connection (or local instance) for
several ``run`` calls (e.g. one per cross-validation fold); outside one, each ``run`` connects and
disconnects itself.

- :class:`LocalExecutor` (``executor="local"``, the default): ``n_jobs`` <= 1 runs the jobs one
  after the other in this process; ``n_jobs`` > 1 in that many spawned worker processes, which
  die with the process that started them (Linux: a killed sweep leaves no orphan training on).
- :class:`RayExecutor` (``executor="ray"``): every job is one Ray task. Where the cluster has
  GPUs a job that may use one (``Job.gpu``) asks for ``gpus_per_run`` GPUs (default 1, so Ray runs
  one run per GPU and sets ``CUDA_VISIBLE_DEVICES`` to it); otherwise it asks for
  ``cpus_per_run`` CPUs (default 1) and runs with that many torch threads. The cluster is the one
  at ``address`` (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``), else the one in the
  ``RAY_ADDRESS`` environment variable, else a local Ray instance started here (with ``num_cpus``
  CPUs, default all) and shut down after the sweep. An already initialised Ray (e.g. in a
  notebook) is used as it is.

Connecting to a cluster at an explicit address: :class:`RayExecutor` first waits up to
``connect_timeout`` seconds (default 30, ``--ray-timeout``) for the head's port and then fails
with an error naming the address (Ray alone retries for many minutes). With a token available and
``RAY_AUTH_MODE`` unset, the driver sets ``RAY_AUTH_MODE=token`` as ``ray start --head`` did
for the head (Ray's driver does so only for ``auto``); an explicit ``RAY_AUTH_MODE`` is kept. A
head that answers but refuses the driver gets an error about its token.

Ray is an optional dependency (``pip install 'mmss[ray]'``) imported only by :class:`RayExecutor`.
On a cluster every node needs the ``mmss`` package and the same paths for data, features and runs
(a shared file system): a task writes its run folder where the driver will read it.
"""

from __future__ import annotations

import os
import traceback as _tb
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmss_lib.errors import DataError, MMSSError
from mmss_lib.ray_cluster import DEFAULT_CONNECT_TIMEOUT, head_endpoint, token_auth_like_the_head, wait_for_head

EXECUTORS = ("local", "ray")
RAY_MISSING = (
    "executor='ray' needs the Ray package, which is not installed: pip install 'mmss[ray]' (or pip install 'ray>=2.9')"
)


@dataclass
class Job:
    """One unit of work: ``fn(*args, **kwargs)``; ``fn`` must be a module-level function (it is
    pickled by reference into worker processes and Ray tasks). ``gpu``: the job may use a GPU."""

    name: str
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    gpu: bool = True


@dataclass
class JobResult:
    """The outcome of one job: ``value`` on success, else ``error`` (``"Type: message"``) and
    ``traceback`` (text). ``index`` is the job's position in the submitted list."""

    index: int
    name: str
    value: Any = None
    error: str | None = None
    traceback: str | None = None
    crashed: bool = False  # the worker died (killed, out of memory) or its result did not come back

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def transient(self) -> bool:
        """A failure that says nothing about the job itself and may pass on a retry: the worker
        died (``kill -9``, the out-of-memory killer), or the disk or memory was full."""
        if self.ok:
            return False
        kind = str(self.error).split(":", 1)[0].strip()
        return (
            self.crashed
            or kind in TRANSIENT_ERRORS
            or "No space left on device" in str(self.error)
            or "Disk quota exceeded" in str(self.error)
        )


# exception types whose failure is the machine's, not the job's (JobResult.transient)
TRANSIENT_ERRORS = (
    "DiskFullError",
    "MemoryError",
    "OutOfMemoryError",
    "BrokenProcessPool",
    "WorkerCrashedError",
    "NodeDiedError",
)


def _call(fn: Callable, args: tuple, kwargs: dict) -> dict:
    """Run a job and capture its exception as text (so results never depend on pickling the
    exception itself across processes or Ray)."""
    try:
        return {"value": fn(*args, **kwargs)}
    except BaseException as exc:  # noqa: BLE001 - a job's failure is reported, the sweep goes on
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": _tb.format_exc()}


def _result(index: int, job: Job, out: dict) -> JobResult:
    return JobResult(index, job.name, out.get("value"), out.get("error"), out.get("traceback"))


def _crash(index: int, job: Job, exc: BaseException) -> JobResult:
    """A job whose worker died (or whose result could not come back)."""
    return JobResult(
        index,
        job.name,
        None,
        f"{type(exc).__name__}: {exc}",
        "".join(_tb.format_exception(type(exc), exc, exc.__traceback__)),
        crashed=True,
    )


def _exit_with_parent() -> None:
    """Worker initializer (Linux): the kernel sends SIGTERM to this worker when the process that
    started it dies, so killing a sweep (``kill``, ``kill -9``) stops its runs too instead of
    leaving orphans that train on; a killed run resumes from its ``last.pt`` on the rerun. A no-op
    where ``prctl`` is missing."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class LocalExecutor:
    """Jobs in this process (``n_jobs`` <= 1) or in ``n_jobs`` spawned worker processes."""

    name = "local"

    def __init__(self, n_jobs: int = 1):
        if int(n_jobs) < 1:
            raise DataError(f"n_jobs={n_jobs!r}: expected an integer >= 1")
        self.n_jobs = int(n_jobs)

    @property
    def in_process(self) -> bool:
        return self.n_jobs <= 1

    def threads_per_run(self, n_runs: int) -> int | None:
        """torch threads per run of a sweep of ``n_runs``: 1 in worker processes (several runs
        share the cores), else None (unchanged)."""
        return None if (self.in_process or n_runs <= 1) else 1

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def run(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        jobs = list(jobs)
        if self.in_process or len(jobs) <= 1:
            for i, job in enumerate(jobs):
                yield _result(i, job, _call(job.fn, job.args, job.kwargs))
            return
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        pool = ProcessPoolExecutor(
            max_workers=min(self.n_jobs, len(jobs)), mp_context=mp.get_context("spawn"), initializer=_exit_with_parent
        )
        try:
            futures = {pool.submit(_call, job.fn, job.args, job.kwargs): i for i, job in enumerate(jobs)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=futures.get):
                    i = futures[fut]
                    try:
                        yield _result(i, jobs[i], fut.result())
                    except Exception as exc:  # a worker died (BrokenProcessPool) or pickling failed
                        yield _crash(i, jobs[i], exc)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def __repr__(self) -> str:
        return f"LocalExecutor(n_jobs={self.n_jobs})"


class RayExecutor:
    """Every job a Ray task: one GPU per run where the cluster has GPUs, else one CPU (thread).

    ``address``: the cluster (default: ``RAY_ADDRESS``, else a local instance of ``num_cpus``
    CPUs). ``gpus_per_run``: GPUs per GPU job (None: 1 where the cluster has GPUs, else 0; a
    fraction such as 0.5 packs two small runs per GPU). ``cpus_per_run``: CPUs (and torch
    threads) per run.
    """

    name = "ray"
    in_process = False

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        gpus_per_run: float | None = None,
        cpus_per_run: int = 1,
        log_to_driver: bool = True,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ):
        import math

        if (
            isinstance(connect_timeout, bool)
            or not isinstance(connect_timeout, (int, float))
            or not math.isfinite(connect_timeout)
            or connect_timeout <= 0
        ):
            raise DataError(f"connect_timeout={connect_timeout!r} (--ray-timeout): expected a number of seconds > 0")
        self.connect_timeout = float(connect_timeout)
        if int(cpus_per_run) < 1:
            raise DataError(f"cpus_per_run={cpus_per_run!r}: expected an integer >= 1")
        if gpus_per_run is not None and float(gpus_per_run) < 0:
            raise DataError(f"gpus_per_run={gpus_per_run!r}: expected a number >= 0")
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.gpus_per_run = gpus_per_run
        self.cpus_per_run = int(cpus_per_run)
        self.log_to_driver = log_to_driver
        self._depth = 0  # inside ``with``: connections are kept
        self._session: tuple | None = None  # (ray, started): the kept connection

    def threads_per_run(self, n_runs: int) -> int:
        """torch threads per run: the CPUs a task holds."""
        return self.cpus_per_run

    @staticmethod
    def _ray():
        try:
            import ray
        except ImportError as exc:
            raise MMSSError(RAY_MISSING) from exc
        return ray

    def _connect(self):
        """Initialise Ray unless it already is; return (ray, whether we started it)."""
        ray = self._ray()
        if ray.is_initialized():
            return ray, False
        kw: dict = {"include_dashboard": False, "log_to_driver": self.log_to_driver, "logging_level": "WARNING"}
        if self.address:
            kw["address"] = self.address
            wait_for_head(self.address, self.connect_timeout, who="executor='ray'")
            token_auth_like_the_head(self.address)
        elif self.num_cpus is not None:
            kw["num_cpus"] = int(self.num_cpus)
        try:
            ray.init(**kw)
        except Exception as exc:  # ConnectionError, ray.exceptions.AuthenticationError, ...
            text = " ".join(str(exc).split())
            if "auth" in type(exc).__name__.lower() or "token" in text.lower() and "auth" in text.lower():
                raise MMSSError(
                    f"executor='ray': the Ray cluster at {self.address!r} refused this driver's authentication "
                    f"({type(exc).__name__}: {text[:300]}); a head started with token authentication needs "
                    "RAY_AUTH_MODE=token and its token (~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH) "
                    "in the environment of `mmss train` (docs/SCALING.md: Training sweeps on a Ray cluster)"
                ) from None
            if (
                (isinstance(exc, (ConnectionError, TimeoutError)) or "connect" in text.lower())
                and self.address
                and head_endpoint(self.address) is not None
            ):
                # the head's port answered (wait_for_head): the head is up but refused this driver
                mode = os.environ.get("RAY_AUTH_MODE")
                raise MMSSError(
                    f"executor='ray': the Ray head at {self.address!r} answers but refused this driver ({text[:200]}); "
                    f"the usual cause is token authentication (RAY_AUTH_MODE is {mode or 'unset'} here): give the "
                    "driver the head's token (~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, with "
                    "RAY_AUTH_MODE=token) or run every node and the driver with RAY_AUTH_MODE=disabled; else check "
                    "that the address is a Ray head (GCS port, default 6379)"
                ) from None
            if isinstance(exc, (ConnectionError, TimeoutError)) or "connect" in text.lower():
                raise MMSSError(
                    f"executor='ray': cannot connect to the Ray cluster at {self.address!r} "
                    f"({text[:300]}); check the address, or start a head with `ray start --head` "
                    "(ray_address / --ray-address / RAY_ADDRESS)"
                ) from None
            raise
        return ray, True

    def __enter__(self):
        self._depth += 1  # Ray starts at the first run with jobs (not for finished sweeps)
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            session, self._session = self._session, None
            if session is not None and session[1]:
                session[0].shutdown()

    def run(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        jobs = list(jobs)
        if not jobs:
            return
        if self._depth and self._session is None:
            self._session = self._connect()
        ray, started = (self._session[0], False) if self._session is not None else self._connect()
        try:
            has_gpu = float(ray.cluster_resources().get("GPU", 0)) > 0
            gpus = self.gpus_per_run if self.gpus_per_run is not None else (1.0 if has_gpu else 0.0)
            remote = ray.remote(_call)
            refs = {}
            for i, job in enumerate(jobs):
                opts = {
                    "num_cpus": self.cpus_per_run,
                    "num_gpus": gpus if (job.gpu and has_gpu) else 0,
                    "name": job.name,
                }
                refs[remote.options(**opts).remote(job.fn, job.args, job.kwargs)] = i
            pending = list(refs)
            try:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    for ref in done:
                        i = refs[ref]
                        try:
                            out = ray.get(ref)
                        except Exception as exc:  # the task's worker died (OOM, node lost, ...)
                            yield _crash(i, jobs[i], exc)
                        else:
                            yield _result(i, jobs[i], out)
            finally:
                for ref in pending:  # interrupted: do not leave tasks running on the cluster
                    ray.cancel(ref, force=True)
        finally:
            if started:
                ray.shutdown()

    def __repr__(self) -> str:
        return (
            f"RayExecutor(address={self.address!r}, num_cpus={self.num_cpus}, "
            f"gpus_per_run={self.gpus_per_run}, cpus_per_run={self.cpus_per_run})"
        )


def make_executor(executor="local", *, n_jobs: int = 1, ray_address: str | None = None, **ray_options):
    """An executor from its name (``"local"``/``"ray"``) or an executor object passed through."""
    if not isinstance(executor, str):
        if not hasattr(executor, "run"):
            raise DataError(f"executor={executor!r}: expected 'local', 'ray' or an executor object")
        return executor
    if executor == "local":
        if ray_address:
            raise DataError(f"ray_address={ray_address!r} is given but executor='local'; use executor='ray'")
        return LocalExecutor(n_jobs)
    if executor == "ray":
        return RayExecutor(ray_address, **ray_options)
    raise DataError(f"executor={executor!r}: expected one of {', '.join(EXECUTORS)}")
