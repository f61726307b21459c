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
from mmss_lib.training.executors import Job, LocalExecutor, RayExecutor, make_executor


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


def _ordered_jobs(flag):
    """'waiter' can only finish once ``flag`` exists, which the test writes only after it got a
    first result: an executor that yields results as jobs finish (not in submission order, not
    all at the end) gives 'writer' first."""
    wait = (
        "import pathlib, sys, time\n"
        "for _ in range(6000):\n"
        f"    if pathlib.Path({str(flag)!r}).exists(): sys.exit(0)\n"
        "    time.sleep(0.05)\n"
        "sys.exit(3)\n"
    )
    return [
        Job("waiter", subprocess.run, ([sys.executable, "-c", wait],), {"check": True}, gpu=False),
        Job("writer", subprocess.run, ([sys.executable, "-c", "pass"],), {"check": True}, gpu=False),
    ]


def _check_streaming(ex, tmp_path):
    flag = tmp_path / "flag"
    results = ex.run(_ordered_jobs(flag))
    first = next(results)
    assert first.name == "writer" and first.ok and first.index == 1
    flag.write_text("go")
    rest = list(results)
    assert [r.name for r in rest] == ["waiter"] and rest[0].ok and rest[0].value.returncode == 0


def test_local_in_process_captures_errors_and_goes_on():
    ex = LocalExecutor(1)
    assert ex.in_process and ex.threads_per_run(5) is None
    res = list(ex.run(_jobs()))
    assert [r.name for r in res] == ["four", "negative", "nine"]  # in order, one after the other
    _check_results(res)


def test_local_worker_processes_yield_as_jobs_finish(tmp_path):
    ex = LocalExecutor(2)
    assert not ex.in_process and ex.threads_per_run(5) == 1 and ex.threads_per_run(1) is None
    _check_results(list(ex.run(_jobs())))
    _check_streaming(ex, tmp_path)


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
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(MMSSError, match=r"pip install 'mmss\[ray\]'"):
        list(RayExecutor().run(_jobs()))


@pytest.mark.slow
def test_ray_executor_starts_a_local_instance_once_per_with_block():
    """Outside a running Ray: ``with`` starts nothing for a block without jobs, one local instance
    for all runs of a block, and shuts it down at the end."""
    ray = pytest.importorskip("ray", reason="Ray not installed (pip install 'mmss[ray]')")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    ex = RayExecutor(num_cpus=2, log_to_driver=False)
    with ex:
        assert list(ex.run([])) == []
    assert not ray.is_initialized()  # nothing to run: no Ray started
    with ex:
        _check_results(list(ex.run(_jobs())))
        node = ray.get_runtime_context().get_node_id()
        assert [r.value for r in ex.run([Job("two", math.sqrt, (4.0,))])] == [2.0]
        assert ray.is_initialized() and ray.get_runtime_context().get_node_id() == node
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance that fits the 2-core test machine, shut down after the module. It
    declares one GPU (a resource Ray schedules by; nothing here uses CUDA) so that the GPU
    placement of RayExecutor is exercised on a machine without one."""
    ray = pytest.importorskip("ray", reason="Ray not installed (pip install 'mmss[ray]')")
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_tasks_capture_errors_and_yield_as_jobs_finish(local_ray, tmp_path):
    ex = RayExecutor()
    _check_results(list(ex.run(_jobs())))
    assert local_ray.is_initialized()  # a Ray it did not start is left running
    _check_streaming(ex, tmp_path)


@pytest.mark.slow
def test_ray_gives_each_gpu_job_a_gpu_and_cpu_jobs_none(local_ray):
    """On a cluster with GPUs a job that may use one gets one (Ray sets CUDA_VISIBLE_DEVICES to
    it); a CPU job (device "cpu") gets none."""
    import os

    assert local_ray.cluster_resources().get("GPU") == 1.0
    jobs = [Job(f"gpu{i}", os.getenv, ("CUDA_VISIBLE_DEVICES",)) for i in range(2)]
    jobs.append(Job("cpu", os.getenv, ("CUDA_VISIBLE_DEVICES",), gpu=False))
    got = {r.name: r.value for r in RayExecutor().run(jobs)}
    assert got == {"gpu0": "0", "gpu1": "0", "cpu": None}


# ------------------------------------------------------------------ run_experiment on the executors

DT, DR = 8, 12
TINY = {"d": 16, "n_heads": 2, "ff_dim": 32, "head_hidden": 8, "dropout": 0.1}
METRICS = ["system", "variant", "seed", "MAP", "NDCG@3", "NDCG@5", "MRR", "dev_MAP", "best_epoch", "epochs_run"]


def _sweep_kw(root, **over):
    from mmss_lib.training.trainer import TrainConfig

    base = TrainConfig(epochs=2, patience=2, batch_size=8, device="cpu", threshold=2.0, n_neg=2, model_options={})
    kw = dict(
        data_root=root / "data",
        dataset="demo",
        categories=["home"],
        features_root=root / "features",
        systems=[("mmss", "full", TINY)],
        seeds=(0, 1),
        base_config=base,
        progress=True,
    )
    kw.update(over)
    return kw


def _mtimes(runs_root):
    return {str(p.relative_to(runs_root)): p.stat().st_mtime_ns for p in sorted(runs_root.rglob("metrics.json"))}


@pytest.mark.slow
def test_ray_sweep_equals_local_reports_failures_and_skips_finished(local_ray, tiny_demo, tmp_path, capsys):
    """The same runs through executor='ray' give exactly the metrics of the local worker
    processes; a failing run (a model the system cannot build: d=15 with 2 heads; option names and
    types are checked before a sweep starts) is reported by name with its error while the others
    finish; a rerun skips every finished run."""
    from mmss_lib.errors import SweepError
    from mmss_lib.model_selection.sweeps import run_experiment

    systems = [("mmss", "full", TINY), ("mmss", "broken", {**TINY, "d": 15})]
    runs = {}
    for name, extra in (("local", {"n_jobs": 2}), ("ray", {"executor": "ray"})):
        with pytest.raises(SweepError) as ei:
            run_experiment(runs_root=tmp_path / name, **_sweep_kw(tiny_demo, systems=systems, **extra))
        err = ei.value
        assert sorted(err.failures) == ["demo/home mmss__broken seed 0", "demo/home mmss__broken seed 1"]
        assert all("divisible" in e for e in err.failures.values())
        assert "Traceback" in err.tracebacks["demo/home mmss__broken seed 1"]
        assert "demo/home mmss__broken seed 0" in str(err) and "2 of 4 runs failed" in str(err)
        out = capsys.readouterr().out
        assert "FAILED demo/home mmss__broken seed 1" in out and "divisible" in out
        assert out.count("finished demo/home mmss seed") == 2  # progress per finished run
        runs[name] = err.results
        assert len(err.results) == 2 and set(err.results["variant"]) == {"full"}
    pd = pytest.importorskip("pandas")
    pd.testing.assert_frame_equal(runs["local"][METRICS], runs["ray"][METRICS])
    assert runs["ray"]["MAP"].notna().all()

    before = _mtimes(tmp_path / "ray")
    again = run_experiment(runs_root=tmp_path / "ray", **_sweep_kw(tiny_demo, executor="ray"))
    assert _mtimes(tmp_path / "ray") == before  # nothing retrained or rewritten
    assert capsys.readouterr().out.count("skipped (finished before)") == 2
    pd.testing.assert_frame_equal(again[METRICS], runs["ray"][METRICS])


@pytest.mark.slow
def test_killed_sweep_resumes_only_missing_runs(local_ray, tiny_demo, tmp_path, capsys):
    """`mmss train` killed after its first run finished; the rerun (on Ray) trains only the
    missing runs, leaves the finished one untouched, and ends with the metrics of an
    uninterrupted sweep."""
    import os
    import signal
    import time

    from mmss_lib.model_selection.sweeps import run_experiment

    runs = tmp_path / "runs"
    cmd = [
        sys.executable,
        "-m",
        "mmss_lib",
        "train",
        "--executor",
        "local",
        "--data-root",
        str(tiny_demo / "data"),
        "--dataset",
        "demo",
        "--categories",
        "home",
        "--features",
        str(tiny_demo / "features"),
        "--runs",
        str(runs),
        "--systems",
        "mmss",
        "--seeds",
        "0",
        "1",
        "2",
        "--epochs",
        "2",
        "--patience",
        "2",
        "--batch-size",
        "8",
        "--n-neg",
        "2",
        "--threshold",
        "2.0",
        "--device",
        "cpu",
        "--num-threads",
        "1",
    ] + [arg for k, v in TINY.items() for arg in ("--option", f"{k}={v}")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = runs / "demo" / "home" / "mmss" / "seed0" / "metrics.json"
    while not first.exists() and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists(), proc.stderr.read().decode()
    assert not (runs / "demo" / "home" / "mmss" / "seed2" / "metrics.json").exists()
    stamp = first.stat().st_mtime_ns

    kw = _sweep_kw(tiny_demo, seeds=(0, 1, 2))
    kw["base_config"].num_threads = 1
    resumed = run_experiment(runs_root=runs, executor="ray", **kw)
    out = capsys.readouterr().out
    assert first.stat().st_mtime_ns == stamp
    assert "demo/home mmss seed 0: skipped (finished before)" in out
    assert "finished demo/home mmss seed 1" in out and "finished demo/home mmss seed 2" in out
    reference = run_experiment(runs_root=tmp_path / "reference", n_jobs=2, **kw)
    pd = pytest.importorskip("pandas")
    pd.testing.assert_frame_equal(resumed[METRICS], reference[METRICS])


def test_extra_runs_share_the_schedule_and_a_later_sweep_finds_them_finished(tiny_demo, tmp_path, capsys):
    """Notebook 02 trains notebook 03's ablation variants in its own schedule (``extra_runs``): they
    are trained (in worker processes, longest first), left out of the returned frame, and the
    ablation sweep that copies the full model's configuration (``reference_config``, as 03 does)
    finds every one finished and retrains nothing. Malformed entries, an entry that is already a
    system, and cross-validation are refused before any run starts."""
    from mmss_lib.errors import DataError
    from mmss_lib.model_selection.sweeps import reference_config, run_experiment
    from mmss_lib.models.mmss import ABLATIONS
    from mmss_lib.training.trainer import TrainConfig

    runs = tmp_path / "runs"
    extra = [("home", "mmss", v, {**TINY, **ABLATIONS[v]}) for v in ("wo_b", "wo_d")]
    kw = _sweep_kw(tiny_demo, seeds=(0,))
    got = run_experiment(runs_root=runs, n_jobs=2, extra_runs=extra, **kw)
    assert list(got["variant"]) == ["full"]
    assert capsys.readouterr().out.count("finished demo/home mmss") == 3  # the two extra runs too
    stamps = _mtimes(runs)
    assert sorted(stamps) == [f"demo/home/mmss{v}/seed0/metrics.json" for v in ("", "__wo_b", "__wo_d")]

    base, source = reference_config(runs, "demo", "home", [0], TrainConfig())  # notebook 03's copy
    assert source
    again = run_experiment(
        runs_root=runs,
        **{**kw, "base_config": base, "systems": [("mmss", v, ABLATIONS[v]) for v in ("full", "wo_b", "wo_d")]},
    )
    assert _mtimes(runs) == stamps  # nothing retrained
    assert capsys.readouterr().out.count("skipped (finished before)") == 3
    assert list(again["variant"]) == ["full", "wo_b", "wo_d"]

    for bad, match in (
        ([("home", "mmss")], "expected \\(category, system, variant"),
        ([("home", "mmss", "full", TINY)], "already one of the systems"),
    ):
        with pytest.raises(DataError, match=match):
            run_experiment(runs_root=tmp_path / "bad", extra_runs=bad, **kw)
    with pytest.raises(DataError, match="not under cross-validation"):
        run_experiment(runs_root=tmp_path / "bad", extra_runs=extra, folds=2, **kw)
    assert not (tmp_path / "bad").exists()


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in fh)
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_tune_through_ray_gives_the_same_trials_as_local(local_ray, tiny_demo, tmp_path):
    """`mmss tune` on Ray tasks: the same study (settings and dev MAP of every trial, the same best)
    as in this process, since trials are asked and told in batches of ``parallel``."""
    import pandas as pd

    from mmss_lib.model_selection.search import tune
    from mmss_lib.training.trainer import TrainConfig

    base = TrainConfig(
        epochs=2,
        patience=2,
        batch_size=16,
        n_neg=3,
        device="cpu",
        num_threads=1,
        model_options={"d": 16, "n_heads": 2, "ff_dim": 32, "head_hidden": 8},
    )
    common = dict(
        data_root=tiny_demo / "data",
        dataset="demo",
        category="home",
        features_root=tiny_demo / "features",
        system="mmss",
        base_config=base,
        n_trials=3,
        parallel=2,
        progress=False,
    )
    local = tune(tune_root=tmp_path / "local", n_jobs=1, **common)
    ray = tune(tune_root=tmp_path / "ray", executor="ray", **common)
    cols = lambda df: df[["trial", "state", "dev_MAP"] + [c for c in df.columns if c.startswith("param_")]]  # noqa: E731
    a, b = (pd.read_csv(tmp_path / w / "demo" / "home" / "mmss" / "trials.csv") for w in ("local", "ray"))
    pd.testing.assert_frame_equal(cols(a), cols(b))
    assert (local["trial"], local["params"]) == (ray["trial"], ray["params"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_local_workers_die_with_a_killed_sweep(tmp_path):
    """kill -9 of the process running a local sweep stops its worker processes too (they would
    otherwise train on as orphans): each job writes its worker's pid and sleeps for 10 minutes."""
    import os
    import signal
    import time

    pid_files = [tmp_path / f"w{i}.pid" for i in range(2)]
    code = "import os, pathlib, time; pathlib.Path({!r}).write_text(str(os.getpid())); time.sleep(600)"
    driver = (
        "from mmss_lib.training.executors import Job, LocalExecutor\n"
        f"jobs = [Job('w{{}}'.format(i), exec, ({code!r}.format(p),)) for i, p in enumerate({[str(p) for p in pid_files]!r})]\n"
        "list(LocalExecutor(2).run(jobs))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", driver])
    pids: list[int] = []
    try:
        for _ in range(1200):  # spawned workers import torch: allow 2 minutes
            if all(p.exists() and p.read_text() for p in pid_files):
                break
            assert proc.poll() is None, "the sweep ended before its jobs started"
            time.sleep(0.1)
        pids = [int(p.read_text()) for p in pid_files]
        assert all(_alive(p) for p in pids)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for _ in range(600):
            if not any(_alive(p) for p in pids):
                break
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids), "worker processes outlived the killed sweep"
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in pids:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
