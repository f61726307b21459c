"""The benchmark package: dispatcher, shared helpers, and tiny runs of the benchmarks (no timing asserts)."""

from __future__ import annotations

import json
import time

import pytest

from mmss_lib import bench
from mmss_lib.bench import common


def test_every_registered_benchmark_resolves_and_help_lists_it(capsys):
    for name in bench.BENCHES:
        assert callable(bench.resolve(name))
    assert bench.cli_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name}" in out for name in bench.BENCHES)
    assert bench.cli_main(["nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


def test_domain_modules_hold_no_benchmark_code():
    import mmss_lib.data.amazon2018
    import mmss_lib.metrics.ranking
    import mmss_lib.training.trainer

    for mod in (mmss_lib.data.amazon2018, mmss_lib.metrics.ranking, mmss_lib.training.trainer):
        assert not [n for n in vars(mod) if n.startswith(("bench", "_bench", "generate_reviews"))], mod.__name__


def test_interleaved_runs_each_function_in_turn_and_keeps_the_best():
    calls = []
    best = common.interleaved([lambda: calls.append("a"), lambda: calls.append("b")], 3)
    assert calls == ["a", "b"] * 3
    assert len(best) == 2 and all(0 <= t < float("inf") for t in best)
    assert len(common.timed_calls(lambda: None, 4)) == 4


def test_memory_readings_see_an_allocation():
    before = common.memory_now()
    assert set(before) == {"rss", "anon", "file", "hwm"} and before["rss"] > 0
    import mmap

    with common.PeakRSS(0.005) as mem:
        # a fresh anonymous mapping, every page written: new resident pages whatever the heap
        # already holds (a bytearray can reuse resident memory that earlier tests freed)
        block = mmap.mmap(-1, 64 * 2**20)
        for off in range(0, len(block), 4096):
            block[off] = 1
    assert mem.delta >= 32 * 2**20
    assert common.memory_now()["hwm"] >= before["rss"]
    block.close()


def test_report_prints_one_tagged_line(capsys):
    common.report("memory", "peak 3 MB")
    assert capsys.readouterr().out == "[memory] peak 3 MB\n"


def test_phase_timer_adds_across_resumed_runs_and_keeps_a_killed_phases_time(tmp_path, capsys):
    path = tmp_path / "timing.json"
    timed = common.phase_timer(path, "t", every=0.01)
    seen = {}

    def slow():  # waits for a heartbeat: the time so far grows on disk mid-run
        first = json.loads(path.read_text())
        assert first["_unfinished"] == ["a"]
        for _ in range(1000):
            time.sleep(0.01)
            t = json.loads(path.read_text())
            if t["a"] > first["a"]:
                seen.update(t)
                return

    timed("a", slow)
    assert seen["a"] > 0 and seen["_unfinished"] == ["a"]
    done = json.loads(path.read_text())
    assert "_unfinished" not in done and done["a"] >= seen["a"]
    assert "t: a done in" in capsys.readouterr().out

    def killed():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        timed("b", killed)
    with pytest.raises(KeyboardInterrupt):
        timed("a", killed)  # a resumed phase that did not finish this time reads as unfinished again
    t = json.loads(path.read_text())
    assert t["_unfinished"] == ["b", "a"] and t["a"] >= done["a"] and "b" in t
    lines = common.timing_lines(path)
    assert "a " in lines[2] and "b " in lines[2] and lines[2].count("(unfinished)") == 2
    timed("b", lambda: None)  # a later run completes it
    t = json.loads(path.read_text())
    assert t["_unfinished"] == ["a"] and common.timing_lines(path)[2].count("(unfinished)") == 1


def test_bench_build_tiny_run(capsys):
    from mmss_lib.bench.build import bench_build

    assert bench_build(["--reviews", "2000", "--products", "50"], prog="t") == 0
    out = capsys.readouterr().out
    assert "[build]" in out and "reviews/s" in out and "[memory] peak RSS delta" in out


def test_bench_train_child_on_tiny_synthetic_stores(tmp_path):
    """The training benchmark's child (in this process): two epochs of a few MM-SS steps from
    synthetic stores, the SSP-Label bookkeeping timed in epoch 2."""
    pytest.importorskip("torch")
    from mmss_lib.bench.train import _bench_child, _synthetic_bench_stores

    _synthetic_bench_stores(tmp_path / "bench" / "synthetic", 200, text_dim=8, text_len=4, region_dim=2048)
    res = _bench_child(
        {
            "n": 200,
            "per_product": 20,
            "root": str(tmp_path),
            "steps": 2,
            "threads": 1,
            "model_options": {"d": 16, "n_heads": 2, "ff_dim": 32, "head_hidden": 8},
        }
    )
    assert res["n"] == 200
    for e in ("epoch1", "epoch2"):
        assert res[e]["samples"] > 0 and res[e]["n_pairs"] > 0
    assert res["epoch2"]["ssp_seconds"] > 0
    assert res["peak_anon_mb"] >= res["phases_anon_mb"]["imports"]


def test_precision_bench_trains_both_arms_and_reports_speed_wait_and_agreement(tiny_demo, tmp_path, capsys):
    """CPU machinery check of `mmss bench precision` (on a CPU both arms are fp32, so they must
    agree exactly); then --report-only reads the same runs back. Every epoch records the seconds
    spent building batches (data_seconds), part of its training seconds."""
    import json

    from mmss_lib.bench.precision import bench_precision
    from mmss_lib.training.run_folder import finished_results

    args = [
        "--data-root",
        str(tiny_demo / "data"),
        "--category",
        "home",
        "--features",
        str(tiny_demo / "features"),
        "--out",
        str(tmp_path / "runs"),
        "--systems",
        "egcnn",
        "--seeds",
        "0",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--num-threads",
        "1",
        "--json",
        str(tmp_path / "rep.json"),
    ]
    assert bench_precision(args) == 0
    out = capsys.readouterr().out
    assert "both arms ran fp32" in out and "egcnn: test MAP bf16" in out
    rep = json.loads((tmp_path / "rep.json").read_text())["systems"]["egcnn"]
    assert rep["diff"]["diff"] == 0.0 and rep["bf16"]["epochs"] == rep["fp32"]["epochs"] == 2
    assert 0.0 < rep["fp32"]["data_share"] < 1.0
    for h in json.loads(
        (tmp_path / "runs" / "fp32" / "demo" / "home" / "egcnn" / "seed0" / "history.json").read_text()
    ):
        assert 0.0 < h["data_seconds"] < h["train_seconds"]
    res = finished_results(tmp_path / "runs" / "bf16", "demo", "home")
    assert list(res["system"]) == ["egcnn"] and res["MAP"].between(0, 1).all()
    assert bench_precision(args[:-2] + ["--report-only"]) == 0
    assert "egcnn: test MAP bf16" in capsys.readouterr().out
    with pytest.raises(Exception, match="no finished runs"):
        bench_precision([*args[:7], str(tmp_path / "empty"), "--report-only"])


def test_epoch_shares_sum_to_one_and_every_epoch_records_its_parts(tiny_demo, tmp_path):
    """`mmss bench train` (5): where an epoch's time goes, from the history.json entries the
    trainer writes (batches, SSP-Label, evaluation, checkpoints; compute is the rest of training)."""
    from mmss_lib.bench.train import SHARES, epoch_shares
    from mmss_lib.training.config import TrainConfig
    from mmss_lib.training.trainer import train_run

    cfg = TrainConfig(
        system="mmss",
        epochs=3,
        patience=3,
        batch_size=16,
        n_neg=3,
        device="cpu",
        num_threads=1,
        model_options={"d": 16, "n_heads": 2, "ff_dim": 32, "head_hidden": 8},
    )
    train_run(
        cfg,
        data_root=tiny_demo / "data",
        dataset="demo",
        category="home",
        features_root=tiny_demo / "features",
        run_dir=tmp_path / "run",
        progress=False,
    )
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    for h in history:
        parts = [h[k] for k in ("data_seconds", "ssp_seconds", "eval_seconds", "checkpoint_seconds")]
        assert all(p > 0 for p in parts) and h["data_seconds"] + h["ssp_seconds"] < h["train_seconds"]
        assert h["train_seconds"] + h["eval_seconds"] + h["checkpoint_seconds"] <= h["seconds"] + 1e-6
    sh = epoch_shares(history)
    assert sum(sh[k] for k in SHARES) == pytest.approx(1.0, abs=0.02) and all(sh[k] > 0 for k in SHARES)
