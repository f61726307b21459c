"""Executors: local (in process, worker processes) and Ray (a local 2-CPU instance).

Job functions are library functions (math.sqrt, subprocess.run) so that worker processes and Ray
workers import them by reference whatever the test module's import path is.
"""
from __future__ import annotations

import math
import subprocess
import sys

import pytest

from mmss_lib.errors import DataError, MMSSError
from mmss_lib.executors import Job, LocalExecutor, RayExecutor, make_executor


def _jobs():
    return [Job("four", math.sqrt, (16.0,)), Job("negative", math.sqrt, (-1.0,)), Job("nine", math.sqrt, (9.0,))]


def _check_results(results):
    by_name = {r.name: r for r in results}
    assert sorted(by_name) == ["four", "negative", "nine"]
    assert by_name["four"].ok and by_name["four"].value == 4.0 and by_name["four"].index == 0
    assert by_name["nine"].ok and by_name["nine"].value == 3.0 and by_name["nine"].index == 2
    bad = by_name["negative"]
    assert not bad.ok and bad.value is None and bad.index == 1
    assert bad.error == "ValueError: math domain error"
    assert "math domain error" in bad.traceback and "Traceback" in bad.traceback


def _ordered_jobs(tmp_path):
    """'waiter' can only finish after 'writer' wrote its file: run concurrently, the executor must
    yield 'writer' first (results come as jobs finish, not in submission order)."""
    flag = tmp_path / "flag"
    wait = ("import pathlib, sys, time\n"
            "for _ in range(6000):\n"
            f"    if pathlib.Path({str(flag)!r}).exists(): sys.exit(0)\n"
            "    time.sleep(0.05)\n"
            "sys.exit(3)\n")
    write = f"import pathlib; pathlib.Path({str(flag)!r}).write_text('x')"
    return [Job("waiter", subprocess.run, ([sys.executable, "-c", wait],), {"check": True}),
            Job("writer", subprocess.run, ([sys.executable, "-c", write],), {"check": True})]


def test_local_in_process_captures_errors_and_goes_on():
    ex = LocalExecutor(1)
    assert ex.in_process and ex.num_threads is None
    res = list(ex.run(_jobs()))
    assert [r.name for r in res] == ["four", "negative", "nine"]     # in order, one after the other
    _check_results(res)


def test_local_worker_processes_yield_as_jobs_finish(tmp_path):
    ex = LocalExecutor(2)
    assert not ex.in_process and ex.num_threads == 1
    _check_results(list(ex.run(_jobs())))
    res = list(ex.run(_ordered_jobs(tmp_path)))
    assert [r.name for r in res] == ["writer", "waiter"] and all(r.ok for r in res)
    assert res[1].value.returncode == 0


def test_make_executor_and_bad_arguments(monkeypatch):
    assert isinstance(make_executor("local", n_jobs=2), LocalExecutor)
    ex = make_executor("ray", ray_address="10.0.0.1:6379")
    assert isinstance(ex, RayExecutor) and ex.address == "10.0.0.1:6379"
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert make_executor("ray").address == "head:6379"
    assert make_executor(ex) is ex
    with pytest.raises(DataError, match="executor='dask'"):
        make_executor("dask")
    with pytest.raises(DataError, match="use executor='ray'"):
        make_executor("local", ray_address="head:6379")
    with pytest.raises(DataError, match="n_jobs=0"):
        LocalExecutor(0)
    with pytest.raises(DataError, match="cpus_per_run"):
        RayExecutor(cpus_per_run=0)


def test_ray_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)       # `import ray` raises ImportError
    with pytest.raises(MMSSError, match=r"pip install 'mmss\[ray\]'"):
        list(RayExecutor().run(_jobs()))


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance that fits the 2-core test machine, shut down after the module."""
    ray = pytest.importorskip("ray", reason="Ray not installed (pip install 'mmss[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_tasks_capture_errors_and_yield_as_jobs_finish(local_ray, tmp_path):
    ex = RayExecutor()
    _check_results(list(ex.run(_jobs())))
    assert local_ray.is_initialized()          # a Ray it did not start is left running
    res = list(ex.run(_ordered_jobs(tmp_path)))
    assert [r.name for r in res] == ["writer", "waiter"] and all(r.ok for r in res)
