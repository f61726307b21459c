"""The run folder's one set of rules (mmss_lib.training.run_folder): layout, identity, "finished?",
resume, and that the trainer, the floors and the sweeps all follow them."""

from __future__ import annotations

import json
import os

import pytest

from mmss_lib.training import run_folder as RF


def test_layout():
    assert RF.run_name("mmss", "full") == "mmss" and RF.run_name("mmss", None) == "mmss"
    assert RF.run_name("mmss", "wo_b") == "mmss__wo_b"
    assert RF.run_dir_for("R", "demo", "home", "mmss", "wo_d", 2).as_posix() == "R/demo/home/mmss__wo_d/seed2"
    assert (
        RF.fold_run_dir("R", "amazon", "mag", "mcr", "full", "folds5", 3, 0).as_posix()
        == "R/amazon/mag/mcr/folds5/fold3/seed0"
    )


def test_identity_ignores_placement_and_provenance_only():
    cfg = {"system": "mmss", "seed": 0, "lr": 1e-4, "device": "cpu", "num_threads": 1, "epochs": 5}
    run = {"dataset": "demo", "category": "home"}
    rec = {"config": cfg, "run": run}
    assert RF.same_run(rec, {**cfg, "device": "cuda", "num_threads": 8}, run)
    moved = {
        **cfg,
        "tuned_from": "/elsewhere/tune/demo/home/mmss/best.json",
    }  # the same settings read from a moved study
    assert RF.same_run(
        {**rec, "config": {**rec["config"], "tuned_from": "/old/tune/demo/home/mmss/best.json"}}, moved, run
    )
    assert not RF.same_run(rec, {**cfg, "lr": 2e-4}, run)
    assert not RF.same_run(rec, {**cfg, "epochs": 6}, run)  # finished under another cap: not the same
    assert not RF.same_run(rec, cfg, {"dataset": "demo", "category": "clothing"})
    # resume tolerates more: a longer cap continues the same trajectory
    assert RF.resume_mismatch(rec, {**cfg, "epochs": 9, "patience": 7, "device": "cuda"}, run) == []
    assert RF.resume_mismatch(rec, {**cfg, "lr": 2e-4}, run) == ["lr"]
    assert RF.resume_mismatch(rec, cfg, {"dataset": "x", "category": "y"}) == ["run (dataset/category)"]


def test_finished_metrics_and_unreadable_files(tmp_path):
    rd = tmp_path / "run"
    rd.mkdir()
    cfg, run = {"system": "length", "device": "cpu"}, {"dataset": "demo", "category": "home"}
    assert RF.finished_metrics(rd, cfg, run) is None  # nothing there
    (rd / "config.json").write_text(json.dumps({"config": cfg, "run": run}))
    assert RF.finished_metrics(rd, cfg, run) is None  # started, not finished
    (rd / "metrics.json").write_text(json.dumps({"test": {"MAP": 0.5}}))
    assert RF.finished_metrics(rd, {**cfg, "device": "cuda"}, run) == {"test": {"MAP": 0.5}}
    assert RF.finished_metrics(rd, {**cfg, "system": "random"}, run) is None
    (rd / "metrics.json").write_text('{"test": ')
    from mmss_lib.errors import DataError

    with pytest.raises(DataError, match=r"metrics\.json: not a JSON file written by the trainer"):
        RF.finished_metrics(rd, cfg, run)


def test_trainer_floors_and_sweeps_share_the_rule(tiny_demo, tmp_path):
    """A run finished with one thread count is finished for train_run (trained system and
    floor) and for run_experiment under another thread count: no file is rewritten."""
    from mmss_lib.model_selection.sweeps import run_experiment
    from mmss_lib.training.trainer import TrainConfig, train_run

    base = TrainConfig(epochs=1, patience=1, batch_size=8, device="cpu", threshold=2.0, n_neg=2, num_threads=1)
    kw = dict(
        data_root=tiny_demo / "data",
        dataset="demo",
        category="home",
        features_root=tiny_demo / "features",
        progress=False,
    )
    from dataclasses import replace

    stamps = {}
    for system in ("egcnn", "length"):
        rd = RF.run_dir_for(tmp_path, "demo", "home", system, "full", 0)
        first = train_run(replace(base, system=system), run_dir=rd, **kw)
        stamps[system] = (rd / "metrics.json").stat().st_mtime_ns
        again = train_run(replace(base, system=system, num_threads=2), run_dir=rd, **kw)
        assert again == first and (rd / "metrics.json").stat().st_mtime_ns == stamps[system]
    res = run_experiment(
        data_root=tiny_demo / "data",
        dataset="demo",
        categories=["home"],
        features_root=tiny_demo / "features",
        runs_root=tmp_path,
        systems=["egcnn", "length"],
        seeds=[0],
        base_config=replace(base, num_threads=2),
        progress=False,
        summary=False,
    )
    assert len(res) == 2
    for system in ("egcnn", "length"):
        assert (
            RF.run_dir_for(tmp_path, "demo", "home", system, "full", 0) / "metrics.json"
        ).stat().st_mtime_ns == stamps[system]


def test_run_lock_read_only_folder_goes_unlocked(tmp_path, monkeypatch):
    """A read-only folder (a read-only file system, or a folder this user cannot write: finished
    runs are read there) is used without a lock, as before; the same refusal to open the lock file
    in a writable folder is an error naming it (the bad-input corpus: a .lock that is a folder, a
    read-only or an immutable file)."""
    import errno
    from pathlib import Path

    from mmss_lib.errors import DataError

    run = tmp_path / "run"
    run.mkdir()
    real_open, real_access = os.open, os.access

    def refusing(code):
        def fake_open(path, flags, *a, **kw):
            if Path(path) == run / RF.LOCK:
                raise OSError(code, os.strerror(code), str(path))
            return real_open(path, flags, *a, **kw)

        return fake_open

    monkeypatch.setattr(os, "open", refusing(errno.EROFS))
    with RF.run_lock(run) as p:  # read-only file system
        assert p == run / RF.LOCK and not p.exists()
    monkeypatch.setattr(os, "open", refusing(errno.EACCES))
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == run else real_access(path, mode))
    with RF.run_lock(run) as p:  # a folder this user cannot write
        assert not p.exists()
    monkeypatch.setattr(os, "access", real_access)  # the folder writable: refused
    with (
        pytest.raises(DataError, match=r"run/\.lock: the lock file of this run cannot be opened for writing"),
        RF.run_lock(run),
    ):
        pass
    assert not (run / RF.LOCK).exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into a read-only folder")
def test_run_lock_in_a_folder_without_write_permission(tmp_path):
    """The real thing, without mocks: a finished run in a folder mode 0555 is read unlocked."""
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o555)
    try:
        with RF.run_lock(run) as p:
            assert not p.exists()
    finally:
        run.chmod(0o755)


def test_inputs_changed_refused_retrain_and_legacy_runs(tiny_demo, tmp_path):
    """A run is its inputs (issue 38): a finished run whose labels changed is refused naming them,
    ``retrain`` trains it again on the new labels, and a run from before inputs were recorded is
    accepted with one warning and recorded from then on."""
    import shutil
    import warnings
    from dataclasses import replace

    from mmss_lib.model_selection.sweeps import run_experiment
    from mmss_lib.training.trainer import TrainConfig

    data = tmp_path / "data"
    shutil.copytree(tiny_demo / "data", data)
    base = TrainConfig(epochs=1, patience=1, batch_size=8, device="cpu", threshold=1.0, n_neg=2, num_threads=1)
    kw = dict(
        data_root=data,
        dataset="demo",
        categories=["home"],
        features_root=tiny_demo / "features",
        runs_root=tmp_path / "runs",
        systems=["length", "egcnn"],
        seeds=[0],
        base_config=base,
        progress=False,
        summary=False,
    )
    first = run_experiment(**kw)
    rd = RF.run_dir_for(tmp_path / "runs", "demo", "home", "length", "full", 0)
    rec = json.loads((rd / RF.INPUTS).read_text())
    assert set(rec["data"]) >= {"home.rel.test", "home.rvw.train", "home.prd.dev"} and rec["features"] == {}
    egcnn = json.loads((RF.run_dir_for(tmp_path / "runs", "demo", "home", "egcnn", "full", 0) / RF.INPUTS).read_text())
    assert set(egcnn["features"]) == {"text_prd", "text_rvw", "region_prd", "region_rvw"}
    # the labels of the test split change: refused before any run, nothing rewritten
    rel = data / "demo" / "home" / "home.rel.test"
    obj = json.loads(rel.read_text())
    obj["upvotes"] = {k: 4 - int(v) for k, v in obj["upvotes"].items()}
    rel.write_text(json.dumps(obj))
    stamp = (rd / "metrics.json").stat().st_mtime_ns
    with pytest.raises(RF.StaleRunError, match=r"seed0: this finished run .* labels \(home\.rel\.test changed\)"):
        run_experiment(**kw)
    assert (rd / "metrics.json").stat().st_mtime_ns == stamp
    again = run_experiment(**kw, retrain=True)
    assert list(again["MAP"]) != list(first["MAP"])  # scored on the new labels (reversed)
    assert json.loads((rd / RF.INPUTS).read_text())["data"]["home.rel.test"] != rec["data"]["home.rel.test"]
    # a run of an older version (no inputs.json): one warning, then its inputs are recorded
    (rd / RF.INPUTS).unlink()
    with pytest.warns(UserWarning, match="written before runs recorded their inputs"):
        run_experiment(**kw)
    assert json.loads((rd / RF.INPUTS).read_text())["adopted"] is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_experiment(**{**kw, "base_config": replace(base, num_threads=2)})


def test_input_changes_name_what_changed():
    old = {
        "data": {"home.rel.train": "a", "home.rvw.train": "b"},
        "features": {"text_rvw": {"n_rows": 3, "settings": {"max_len": 32}}},
    }
    new = {
        "data": {"home.rel.train": "c", "home.rvw.train": "b"},
        "features": {"text_rvw": {"n_rows": 5, "settings": {"max_len": 64}}},
    }
    assert RF.input_changes(old, old) == []
    assert RF.input_changes(old, new) == [
        "labels (home.rel.train changed)",
        "feature store text_rvw (n_rows 3 -> 5, max_len 32 -> 64)",
    ]
    # a legacy record (features only, no settings) compares what it has
    assert RF.input_changes({"features": {"text_rvw": {"n_rows": 3}}}, new) == [
        "feature store text_rvw (n_rows 3 -> 5)"
    ]


def test_read_only_runs_folder_returns_the_results(tiny_demo, tmp_path, monkeypatch):
    """Every run finished in a runs folder that cannot be written (issue 38, O31: an OSError traceback,
    no table): the results come back with one warning; the summary files are not written."""
    import errno

    import mmss_lib.evaluation.summary as S
    from mmss_lib.model_selection.sweeps import run_experiment
    from mmss_lib.training.trainer import TrainConfig

    kw = dict(
        data_root=tiny_demo / "data",
        dataset="demo",
        categories=["home"],
        features_root=tiny_demo / "features",
        runs_root=tmp_path,
        systems=["length"],
        seeds=[0],
        base_config=TrainConfig(device="cpu", threshold=1.0, num_threads=1),
        progress=False,
    )
    run_experiment(**kw)

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".summary.csv.tmp"))

    monkeypatch.setattr(S, "write_summaries", read_only)
    with pytest.warns(UserWarning, match=r"cannot write the summary files \(Read-only file system"):
        res = run_experiment(**kw)
    assert len(res) == 1 and "summary_paths" not in res.attrs
