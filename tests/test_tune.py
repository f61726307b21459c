"""`mmss tune`: Optuna studies on the dev split (tiny demo category with random-feature stores)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_MMSS = {"d": 16, "n_heads": 2, "ff_dim": 32, "head_hidden": 8}


def _base(**kw):
    from mmss_lib.training.trainer import TrainConfig

    base = dict(
        epochs=3,
        patience=3,
        batch_size=16,
        n_neg=3,
        device="cpu",
        num_threads=1,
        eval_batch_size=64,
        model_options=dict(TINY_MMSS),
    )
    base.update(kw)
    return TrainConfig(**base)


def _tune(tiny_demo, out, **kw):
    from mmss_lib.model_selection.search import tune

    args = dict(
        data_root=tiny_demo / "data",
        dataset="demo",
        category="home",
        features_root=tiny_demo / "features",
        tune_root=out,
        system="mmss",
        base_config=_base(),
        n_trials=3,
        parallel=2,
        n_jobs=1,
        progress=False,
    )
    args.update(kw)
    return tune(**args)


class _NoTest:
    """Stands in for the test split: any use of it fails the trial."""

    def __getattr__(self, name):
        raise AssertionError(f"a trial touched the test split ({name})")


def test_study_finishes_picks_best_on_dev_and_never_reads_test(tiny_demo, tmp_path, monkeypatch):
    import mmss_lib.training.trainer as T

    real = T.load_splits

    def no_test(*a, **k):
        splits = real(*a, **k)
        return {**splits, "test": _NoTest()}

    monkeypatch.setattr(T, "load_splits", no_test)
    best = _tune(tiny_demo, tmp_path)
    sdir = tmp_path / "demo" / "home" / "mmss"
    trials = pd.read_csv(sdir / "trials.csv")
    assert len(trials) == 3 and set(trials["state"]) <= {"complete", "pruned"}, trials[["state", "error"]]
    done = trials[trials["state"] == "complete"]
    assert best["dev_MAP"] == pytest.approx(done["dev_MAP"].max())
    assert best["trial"] == int(done.loc[done["dev_MAP"].idxmax(), "trial"])
    # trial 0 is the base configuration (the settings a run gets untuned): never worse than it on dev
    base = trials[trials["base"]]
    assert list(base["trial"]) == [0] and best["base_trial"] == 0 and best["dev_MAP"] >= best["base_dev_MAP"]
    assert best["base_params"] == {
        "lr": 1e-4,
        "weight_decay": 0.0,
        "n_neg": 3,
        "batch_size": 16,
        "dropout": 0.1,
        "sub_log_var_init": 0.0,
    }
    assert best["cpu_seconds"] > 0 and best["budget"]["trials"] == 3 and best["budget"]["epochs"] == 3
    for name in ("history.png", "importance.png"):
        assert (sdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| trial | state | dev_MAP |" in (sdir / "trials.md").read_text()
    for t in trials["trial"]:  # ordinary run folders, dev only
        rd = sdir / "trials" / f"trial{t:04d}"
        assert (rd / "last.pt").exists() and not (rd / "scores_test.csv").exists()
        for h in json.loads((rd / "history.json").read_text()):
            assert h["test"] is None
    # a finished study is not rerun: same best, no new trial
    again = _tune(tiny_demo, tmp_path)
    assert again["trial"] == best["trial"] and len(pd.read_csv(sdir / "trials.csv")) == 3


def test_killed_study_resumes_keeping_finished_trials(tiny_demo, tmp_path, monkeypatch):
    """A driver killed inside trial 2 (KeyboardInterrupt after its first epoch): the rerun keeps
    trials 0 and 1, resumes trial 2 from its last.pt (same trial, same settings) and ends with the
    same trials as an uninterrupted study."""
    whole = _tune(tiny_demo, tmp_path / "whole", parallel=1)
    ref = pd.read_csv(tmp_path / "whole" / "demo" / "home" / "mmss" / "trials.csv")

    import mmss_lib.training.trainer as T

    real = T.train_run

    def killing(cfg, **kw):
        if kw["run_dir"].name == "trial0002":
            inner = kw["on_epoch"]

            def on_epoch(entry):
                inner(entry)
                raise KeyboardInterrupt

            kw["on_epoch"] = on_epoch
        return real(cfg, **kw)

    monkeypatch.setattr(T, "train_run", killing)
    with pytest.raises(KeyboardInterrupt):
        _tune(tiny_demo, tmp_path / "killed", parallel=1)
    sdir = tmp_path / "killed" / "demo" / "home" / "mmss"
    assert (sdir / "trials" / "trial0002" / "last.pt").exists() and not (sdir / "best.json").exists()
    monkeypatch.setattr(T, "train_run", real)
    resumed = _tune(tiny_demo, tmp_path / "killed", parallel=1)
    got = pd.read_csv(sdir / "trials.csv")
    cols = ["trial", "state", "dev_MAP"] + [c for c in ref.columns if c.startswith("param_")]
    pd.testing.assert_frame_equal(got[cols], ref[cols])
    assert resumed["trial"] == whole["trial"] and resumed["dev_MAP"] == pytest.approx(whole["dev_MAP"])


def test_more_trials_continue_a_study(tiny_demo, tmp_path):
    _tune(tiny_demo, tmp_path, n_trials=2, parallel=1, system="bimpm", base_config=_base(model_options={}))
    sdir = tmp_path / "demo" / "home" / "bimpm"
    first = pd.read_csv(sdir / "trials.csv")
    _tune(tiny_demo, tmp_path, n_trials=3, parallel=1, system="bimpm", base_config=_base(model_options={}))
    both = pd.read_csv(sdir / "trials.csv")
    assert len(both) == 3
    pd.testing.assert_frame_equal(both.iloc[:2][["trial", "dev_MAP"]], first[["trial", "dev_MAP"]])


def test_train_tuned_takes_best_settings_and_records_the_study(tiny_demo, tmp_path):
    from mmss_lib.errors import TuneError
    from mmss_lib.model_selection.sweeps import run_experiment
    from mmss_lib.training.run_folder import load_run_config

    best = _tune(tiny_demo, tmp_path / "tune", n_trials=2, parallel=2)
    common = dict(
        data_root=tiny_demo / "data",
        dataset="demo",
        categories=["home"],
        features_root=tiny_demo / "features",
        seeds=[0],
        base_config=_base(epochs=1),
        progress=False,
    )
    res = run_experiment(
        runs_root=tmp_path / "runs",
        systems=[("mmss", "full", {}), ("mmss", "wo_d", {"use_module_d": False})],
        tuned=tmp_path / "tune",
        **common,
    )
    for rd in res["run_dir"]:
        cfg = load_run_config(rd)
        assert cfg.tuned_from == str(tmp_path / "tune" / "demo" / "home" / "mmss" / "best.json")  # ablation: full's
        assert cfg.lr == pytest.approx(best["params"]["lr"]) and cfg.n_neg == best["params"]["n_neg"]
        assert cfg.model_options["dropout"] == pytest.approx(best["params"]["dropout"])
    assert load_run_config(res["run_dir"].iloc[1]).model_options["use_module_d"] is False
    with pytest.raises(TuneError, match="no study for demo/home bimpm"):
        run_experiment(
            runs_root=tmp_path / "runs",
            systems=["bimpm"],
            tuned=tmp_path / "tune",
            **{**common, "base_config": _base(epochs=1, model_options={})},
        )


def _cli(args, capsys):
    from mmss_lib.cli import main

    rc = main(["tune", *args])
    return rc, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--systems", "nosuch"], "unknown system 'nosuch'"),
        (["--systems", "length"], "system 'length' is not trained"),
        (["--space", "momentum=0:1"], "no tuned parameter 'momentum'"),
        (["--space", "lr=1e-3:1e-3"], "empty range"),
        (["--space", "lr=1e-2:1e-4"], "inverted range"),
        (["--space", "lr=0:1e-3"], "log scale"),
        (["--space", "n_neg="], "no value given"),
        (["--space", "lr=2e-4:1e-3"], "base setting lr=0.0001 lies outside"),
        (["--trials", "0"], "a budget of 0 trials"),
        # issue 38: ranges and choices outside the parameter's domain, before any trial
        (["--space", "dropout=0:5"], "dropout=5: expected a number in [0, 1)"),
        (["--space", "lr=1e-5:1e9"], "a positive Adam learning rate, at most 1"),
        (["--space", "weight_decay=-1,-2,-3"], "weight_decay=-1: expected a number in [0, 1]"),
        (["--space", "n_neg=1,2.5"], "n_neg=2.5: expected an integer"),
        (["--space", "lr=1e-5:1e-3", "--space", "lr=1e-4:2e-4"], "lr is already given ('lr=1e-5:1e-3')"),
        (["--storage", "bogus://x"], "--storage 'bogus://x': not a database URL Optuna can open"),
        (["--storage", "/nonexistent/dir/j.journal"], "the folder /nonexistent/dir of the journal file does not exist"),
    ],
)
def test_bad_input_is_one_line_naming_it(tiny_demo, tmp_path, capsys, extra, message):
    args = [
        "--data-root",
        str(tiny_demo / "data"),
        "--dataset",
        "demo",
        "--categories",
        "home",
        "--features",
        str(tiny_demo / "features"),
        "--out",
        str(tmp_path),
        "--systems",
        "mmss",
        *extra,
    ]
    rc, err = _cli(args, capsys)
    assert rc == 1 and message in err and len(err.splitlines()) == 1, err
    assert not list(tmp_path.rglob("trial*"))  # refused before any trial
    assert not list(tmp_path.rglob(".lock"))  # and before the study folder is locked


def test_transient_failure_is_retried_not_counted(tiny_demo, tmp_path, monkeypatch):
    """A trial failing on a full disk (issue 38, U37) stops the study without counting it; the same
    command afterwards retries its settings and finishes the budget (they were counted as failed
    and never retried: the best trial was lost)."""
    import mmss_lib.training.trainer as T
    from mmss_lib.errors import DiskFullError, TuneError

    real, calls = T.train_run, []

    def full_once(cfg, **kw):
        calls.append(kw["run_dir"])
        if len(calls) == 2:
            raise DiskFullError(f"{kw['run_dir']}/best.pt: cannot write the file: no space left on the device")
        return real(cfg, **kw)

    monkeypatch.setattr(T, "train_run", full_once)
    kw = dict(n_trials=3, parallel=1, system="bimpm", base_config=_base(model_options={}, epochs=1))
    with pytest.raises(TuneError, match=r"trial 1 failed on a transient error \(DiskFullError: .*not counted"):
        _tune(tiny_demo, tmp_path, **kw)
    monkeypatch.setattr(T, "train_run", real)
    best = _tune(tiny_demo, tmp_path, **kw)
    trials = pd.read_csv(tmp_path / "demo" / "home" / "bimpm" / "trials.csv")
    failed = trials[trials["state"] == "fail"]
    assert list(failed["trial"]) == [1] and "DiskFullError" in failed["error"].iloc[0]
    assert (trials["state"] != "fail").sum() == 3 and best["n_trials"] == 4  # the budget: 3 counted
    retried = trials[trials["trial"] == 2]
    assert retried.filter(like="param_").iloc[0].tolist() == failed.filter(like="param_").iloc[0].tolist()


def test_fewer_trials_than_held_and_a_shared_storage_are_refused(tiny_demo, tmp_path):
    """``--trials 3`` on a study of 4 (issue 38, U38) would rewrite best.json with a budget it does not
    describe; a ``--storage`` shared with another ``--out`` (U23) would train a trial twice."""
    from mmss_lib.errors import TuneError

    kw = dict(parallel=1, system="bimpm", base_config=_base(model_options={}, epochs=1))
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    _tune(tiny_demo, tmp_path / "a", n_trials=2, storage=storage, **kw)
    best = tmp_path / "a" / "demo" / "home" / "bimpm" / "best.json"
    before = best.read_bytes()
    with pytest.raises(TuneError, match=r"--trials 1: study 'demo/home/bimpm' .* already holds 2 finished trials"):
        _tune(tiny_demo, tmp_path / "a", n_trials=1, storage=storage, **kw)
    with pytest.raises(TuneError, match=r"is trained in .*/a/demo/home/bimpm, not .*/b/demo/home/bimpm"):
        _tune(tiny_demo, tmp_path / "b", n_trials=3, storage=storage, **kw)
    assert best.read_bytes() == before and not (tmp_path / "b" / "demo" / "home" / "bimpm" / "trials").exists()


def test_storage_of_another_study_or_dataset_is_refused(tiny_demo, tmp_path, capsys):
    import shutil

    from mmss_lib.errors import TuneError

    _tune(tiny_demo, tmp_path / "a", n_trials=1, parallel=1, system="bimpm", base_config=_base(model_options={}))
    journal = tmp_path / "a" / "demo" / "home" / "bimpm" / "study.journal"
    before = journal.read_bytes()
    with pytest.raises(TuneError, match="holds study 'demo/home/bimpm', not 'demo/home/mcr'"):
        _tune(
            tiny_demo,
            tmp_path / "b",
            n_trials=1,
            parallel=1,
            system="mcr",
            base_config=_base(model_options={}),
            storage=str(journal),
        )
    # the same study on other data: another dataset (labels of the train split changed)
    other = tmp_path / "otherdata"
    shutil.copytree(tiny_demo / "data", other / "data")
    rel = other / "data" / "demo" / "home" / "home.rel.train"
    rel.write_bytes(rel.read_bytes() + b"\n")  # any change of the train or dev files
    with pytest.raises(TuneError, match="was run on other data"):
        _tune(
            other,
            tmp_path / "a",
            n_trials=1,
            parallel=1,
            system="bimpm",
            base_config=_base(model_options={}),
            features_root=tiny_demo / "features",
        )
    # other settings (another epoch ceiling): refused, naming the field
    with pytest.raises(TuneError, match=r"other settings: budget \(epochs\)"):
        _tune(
            tiny_demo,
            tmp_path / "a",
            n_trials=1,
            parallel=1,
            system="bimpm",
            base_config=_base(model_options={}, epochs=2),
        )
    assert journal.read_bytes() == before  # nothing lost


def test_ceiling_flag_in_metrics_history_summary_and_table(tiny_demo, tmp_path):
    from mmss_lib.evaluation import tables
    from mmss_lib.evaluation.summary import per_run_per_product, read_summaries, table_summary
    from mmss_lib.model_selection.sweeps import run_experiment

    res = run_experiment(
        data_root=tiny_demo / "data",
        dataset="demo",
        categories=["home"],
        features_root=tiny_demo / "features",
        runs_root=tmp_path,
        systems=["random", "mmss"],
        seeds=[0],
        base_config=_base(epochs=1, lr=1e-3),
        progress=False,
    )
    m = json.loads((tmp_path / "demo" / "home" / "mmss" / "seed0" / "metrics.json").read_text())
    h = json.loads((tmp_path / "demo" / "home" / "mmss" / "seed0" / "history.json").read_text())
    # one epoch, the ceiling, and it is the best one: still improving
    assert m["ceiling_while_improving"] is True and h[-1]["ceiling_while_improving"] is True
    assert bool(res.loc[res["system"] == "mmss", "ceiling_while_improving"].iloc[0])
    summ = read_summaries(res).set_index("system")
    assert summ.loc["mmss", "runs_at_ceiling"] == 1 and summ.loc["random", "runs_at_ceiling"] == 0
    stats = table_summary(per_run_per_product(res), dataset="demo")
    table = tables.comparison_table(res, "demo", summary=stats, categories=["home"])
    cells = table.loc[("Multimodal", "MM-SS (Ours)")].tolist()
    assert all(tables.CEILING_MARKER in c for c in cells)
    assert not any(tables.CEILING_MARKER in c for c in table.loc[("Floor", "Random")].tolist())
    assert "hit the epoch ceiling while dev MAP still rose" in tables.comparison_note(stats, dataset="demo")


def test_no_ceiling_flag_when_early_stopping_decides():
    from mmss_lib.training.trainer import still_improving_at_ceiling

    assert still_improving_at_ceiling(best_epoch=5, epochs_run=5, epochs=5, stopped_early=False)
    assert not still_improving_at_ceiling(best_epoch=3, epochs_run=5, epochs=5, stopped_early=False)  # fell back
    assert not still_improving_at_ceiling(best_epoch=2, epochs_run=5, epochs=10, stopped_early=True)


def test_read_only_out_is_one_line(tiny_demo, tmp_path, monkeypatch):
    """A study folder this user cannot write (issue 38, U35: an OSError traceback): one line naming
    it and --out, before anything is created there."""
    import os
    from pathlib import Path

    from mmss_lib.errors import TuneError

    ro, real = tmp_path / "ro", os.access
    ro.mkdir()
    monkeypatch.setattr(os, "access", lambda p, m, *a, **k: False if Path(p) == ro else real(p, m, *a, **k))
    with pytest.raises(TuneError, match=r"/ro: not writable; mmss tune writes .* give a writable --out"):
        _tune(tiny_demo, ro, n_trials=1, parallel=1, system="bimpm", base_config=_base(model_options={}))
    assert not list(ro.iterdir())


def test_study_from_before_feature_records_is_checked_against_its_trials(tmp_path):
    """A study started before studies recorded their stores (issue 38, U28): compared with the
    stores its trials' config.json record; the same stores are adopted with one warning, other
    ones refused (the probe's copied 32-token study continued on 64-token features)."""
    import json

    from mmss_lib.errors import TuneError
    from mmss_lib.model_selection import search

    class Study:
        def __init__(self):
            self.user_attrs = {}

        def set_user_attr(self, k, v):
            self.user_attrs[k] = v

    manifest = {"kind": "text", "dim": 4, "n_items": 10, "n_rows": 320, "content_fingerprint": "content-v1:ab"}
    (tmp_path / "trials" / "trial0000").mkdir(parents=True)
    (tmp_path / "trials" / "trial0000" / "config.json").write_text(json.dumps({"features": {"text_rvw": manifest}}))
    now = {"text_rvw": {**manifest, "settings": {"max_len": 32}}}
    study = Study()
    with pytest.warns(UserWarning, match="started before studies recorded their feature stores"):
        search._check_study_features(study, "demo/home/mmss", {"features": now}, "j", tmp_path)
    assert study.user_attrs["features"] == now
    with pytest.raises(TuneError, match=r"other features: feature store text_rvw \(n_rows 320 -> 640\)"):
        search._check_study_features(
            Study(), "demo/home/mmss", {"features": {"text_rvw": {**manifest, "n_rows": 640}}}, "j", tmp_path
        )
    with pytest.raises(TuneError, match=r"text_rvw \(max_len 32 -> 64\)"):  # a study that records them
        search._check_study_features(
            study,
            "demo/home/mmss",
            {"features": {"text_rvw": {**manifest, "settings": {"max_len": 64}}}},
            "j",
            tmp_path,
        )


def test_tuned_transfer_is_an_explicit_choice(tmp_path):
    """--tuned-transfer without --tuned is refused before any work (one line naming both options)."""
    from mmss_lib.errors import DataError
    from mmss_lib.model_selection.sweeps import cli_main

    with pytest.raises(DataError, match="--tuned-transfer.*--tuned DIR"):
        cli_main(
            [
                "--data-root",
                str(tmp_path),
                "--dataset",
                "demo",
                "--categories",
                "home",
                "--features",
                str(tmp_path),
                "--runs",
                str(tmp_path / "runs"),
                "--systems",
                "bimpm",
                "--tuned-transfer",
            ]
        )
    assert not (tmp_path / "runs").exists()
