"""Tests of mmss_lib.reproduce: profiles, placeholders, parameter checks, failures, skipping.

The unit tests use tiny throwaway notebooks written into tmp_path; the slow test runs the real
``smoke`` profile through all four notebooks and checks the files it writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmss_lib import reproduce as pipeline
from mmss_lib.errors import PipelineError

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("papermill")


def write_notebook(path: Path, params_src: str, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    pcell = nbformat.v4.new_code_cell(params_src)
    pcell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}"), pcell]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def write_profile(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def two_stage(tmp_path):
    """Two notebooks: 01 writes ${out}/a.txt, 02 reads it and writes b.txt; each appends to a log."""
    nbs = tmp_path / "nbs"
    write_notebook(
        nbs / "01_make.ipynb",
        "out_dir = 'x'\nvalue = 1\nshared = 'c'",
        "from pathlib import Path\nPath(out_dir).mkdir(parents=True, exist_ok=True)\n"
        "Path(out_dir, 'a.txt').write_text(str(value))\n"
        "with open(Path(out_dir, 'log.txt'), 'a') as f: f.write('01\\n')",
    )
    write_notebook(
        nbs / "02_use.ipynb",
        "out_dir = 'x'\nfactor = 2",
        "from pathlib import Path\nv = int(Path(out_dir, 'a.txt').read_text())\n"
        "Path(out_dir, 'b.txt').write_text(str(v * factor))\n"
        "with open(Path(out_dir, 'log.txt'), 'a') as f: f.write('02\\n')",
    )
    prof = write_profile(
        tmp_path / "params" / "t.yaml",
        "description: tiny\nout: ignored_by_tests\ncommon:\n  out_dir: ${out}/data\n"
        "  shared: from-common\n01_make:\n  value: 21\n02_use:\n  factor: 2\n",
    )
    return nbs, prof, tmp_path / "out"


def log_lines(out: Path) -> list[str]:
    return (out / "data" / "log.txt").read_text().split()


# ---------------------------------------------------------------------------------------------
# Pure parts
# ---------------------------------------------------------------------------------------------


def test_substitute_placeholders_recursively_and_escape():
    got = pipeline.substitute(
        {"a": "${out}/tables", "b": ["${repo}/x", 3, {"c": "${out}"}], "d": "$${out} stays", "e": None},
        {"out": "/o", "repo": "/r"},
    )
    assert got == {"a": "/o/tables", "b": ["/r/x", 3, {"c": "/o"}], "d": "${out} stays", "e": None}


def test_substitute_unknown_placeholder_names_it():
    with pytest.raises(PipelineError, match=r"unknown placeholder \$\{outt\}.*known: \$\{out\}"):
        pipeline.substitute({"a": "${outt}/x"}, {"out": "/o"})


def test_notebook_parameters_merge_common_only_where_declared(tmp_path):
    declared = {"01_a": {"dataset": {}, "seeds": {}}, "02_b": {"dataset": {}, "epochs": {}}}
    raw = {"common": {"dataset": "demo", "seeds": [0]}, "02_b": {"epochs": 3, "dataset": "amazon"}}
    got = pipeline.notebook_parameters(raw, ["01_a", "02_b"], declared, out=tmp_path, repo=tmp_path)
    assert got == {
        "01_a": {"dataset": "demo", "seeds": [0]},
        "02_b": {"dataset": "amazon", "epochs": 3},
    }  # own value wins over common


def test_common_parameter_declared_nowhere_is_an_error(tmp_path):
    declared = {"01_a": {"dataset": {}}}
    with pytest.raises(PipelineError, match=r"common parameter\(s\) sedes .*known names: dataset"):
        pipeline.notebook_parameters({"common": {"sedes": 1}}, ["01_a"], declared, out=tmp_path, repo=tmp_path)


def test_select_only_by_number_or_name():
    stages = ["01_extract_features", "02_train", "03_ablation", "04_case_study"]
    assert pipeline._select(stages, ["03", "notebooks/01_extract_features.ipynb"]) == [
        "01_extract_features",
        "03_ablation",
    ]
    assert pipeline._select(stages, None) == stages
    with pytest.raises(PipelineError, match="matches no notebook"):
        pipeline._select(stages, ["05"])


def test_unknown_profile_lists_known(tmp_path):
    write_profile(tmp_path / "a.yaml", "common: {}\n")
    with pytest.raises(PipelineError, match=r"unknown profile 'zz'.*known profiles: a"):
        pipeline.profile_path("zz", tmp_path)


def test_profile_must_be_mappings(tmp_path):
    p = write_profile(tmp_path / "bad.yaml", "common: [1, 2]\n")
    with pytest.raises(PipelineError, match="field 'common' must be a mapping"):
        pipeline.read_profile(p)


def test_default_out_dir_from_profile_and_override(tmp_path):
    repo = tmp_path
    assert pipeline.resolve_out_dir({"out": "outputs/smoke"}, None, repo) == (repo / "outputs/smoke").resolve()
    assert pipeline.resolve_out_dir({}, None, repo) == (repo / "outputs").resolve()
    assert pipeline.resolve_out_dir({"out": "outputs/smoke"}, tmp_path / "o", repo) == (tmp_path / "o").resolve()


# ---------------------------------------------------------------------------------------------
# With throwaway notebooks (papermill.inspect_notebook; kernels only where something executes)
# ---------------------------------------------------------------------------------------------


def test_unknown_parameter_names_notebook_names_and_known(two_stage):
    nbs, prof, out = two_stage
    prof.write_text(prof.read_text().replace("  factor: 2", "  factor: 2\n  facter: 3\n  zeta: 1"))
    with pytest.raises(PipelineError) as ei:
        pipeline.reproduce(prof, out_dir=out, notebooks_dir=nbs, log=None)
    msg = str(ei.value)
    assert "notebook 02_use" in msg and "facter, zeta" in msg
    assert "declares: out_dir, factor" in msg
    assert not out.exists()  # nothing executed


def test_profile_key_naming_no_notebook_is_an_error(two_stage):
    nbs, prof, out = two_stage
    prof.write_text(prof.read_text() + "03_missing:\n  a: 1\n")
    with pytest.raises(PipelineError, match="03_missing name"):
        pipeline.plan(prof, out_dir=out, notebooks_dir=nbs)


def test_plan_resolves_placeholders_and_common(two_stage):
    nbs, prof, out = two_stage
    p = pipeline.plan(prof, out_dir=out, notebooks_dir=nbs)
    assert p["stages"] == ["01_make", "02_use"]
    assert p["parameters"]["01_make"] == {"out_dir": f"{out.resolve()}/data", "shared": "from-common", "value": 21}
    assert p["parameters"]["02_use"] == {"out_dir": f"{out.resolve()}/data", "factor": 2}


def test_failure_names_notebook_and_cell_and_keeps_partial(tmp_path):
    nbs = tmp_path / "nbs"
    write_notebook(
        nbs / "01_boom.ipynb",
        "n = 1",
        "x = n + 41\nprint('first cell ran', x)",
        "# second\nraise ValueError(f'bad value {x}')",
        "print('never')",
    )
    prof = write_profile(tmp_path / "p.yaml", "01_boom:\n  n: 1\n")
    with pytest.raises(PipelineError) as ei:
        pipeline.reproduce(prof, out_dir=tmp_path / "out", notebooks_dir=nbs, log=None)
    msg = str(ei.value)
    executed = tmp_path / "out" / "executed" / "p" / "01_boom.ipynb"
    assert "notebook 01_boom failed in cell [" in msg
    assert "ValueError: bad value 42" in msg and "# second" in msg and str(executed) in msg
    nb = nbformat.read(str(executed), as_version=4)
    texts = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "first cell ran 42" in texts  # partial notebook kept, with outputs
    assert "never" not in texts
    assert not (executed.parent / "01_boom.stage.json").exists()  # failed stage has no record


def test_runs_in_order_then_skips_unchanged_then_reruns_downstream(two_stage):
    nbs, prof, out = two_stage
    res = pipeline.reproduce(prof, out_dir=out, notebooks_dir=nbs, log=None)
    assert [r.status for r in res] == ["ran", "ran"]
    assert (out / "data" / "b.txt").read_text() == "42"  # 21 * 2, in order
    exec_dir = out / "executed" / "t"
    rec = json.loads((exec_dir / "02_use.stage.json").read_text())
    assert rec["parameters"] == {"out_dir": f"{out.resolve()}/data", "factor": 2}
    assert len(rec["key"]) == 64

    # Unchanged: both skipped, nothing executes.
    res = pipeline.reproduce(prof, out_dir=out, notebooks_dir=nbs, skip_unchanged=True, log=None)
    assert [r.status for r in res] == ["skipped", "skipped"]
    assert log_lines(out) == ["01", "02"]

    # A changed parameter of 02 only: 01 skipped, 02 runs.
    prof.write_text(prof.read_text().replace("factor: 2", "factor: 3"))
    res = pipeline.reproduce(prof, out_dir=out, notebooks_dir=nbs, skip_unchanged=True, log=None)
    assert [r.status for r in res] == ["skipped", "ran"]
    assert (out / "data" / "b.txt").read_text() == "63"

    # A changed notebook 01: it reruns, and so does 02 (its upstream record changed).
    p01 = nbs / "01_make.ipynb"
    nb = nbformat.read(str(p01), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("pass"))
    nbformat.write(nb, str(p01))
    res = pipeline.reproduce(prof, out_dir=out, notebooks_dir=nbs, skip_unchanged=True, log=None)
    assert [r.status for r in res] == ["ran", "ran"]
    assert log_lines(out) == ["01", "02", "02", "01", "02"]

    # --only 02 with everything unchanged is skipped; without skip_unchanged it runs.
    res = pipeline.reproduce(prof, out_dir=out, notebooks_dir=nbs, only=["02"], skip_unchanged=True, log=None)
    assert [(r.name, r.status) for r in res] == [("02_use", "skipped")]
    # A missing executed notebook defeats skipping.
    (exec_dir / "02_use.ipynb").unlink()
    res = pipeline.reproduce(prof, out_dir=out, notebooks_dir=nbs, only=["02"], skip_unchanged=True, log=None)
    assert [(r.name, r.status) for r in res] == [("02_use", "ran")]


def test_cli_dry_run_prints_resolved_parameters(two_stage, capsys, monkeypatch):
    nbs, prof, out = two_stage
    real_plan = pipeline.plan
    monkeypatch.setattr(pipeline, "plan", lambda *a, **k: real_plan(*a, notebooks_dir=nbs, **k))
    assert pipeline.cli_main(["--profile", str(prof), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "profile t" in text and "value = 21" in text and f"'{out.resolve()}/data'" in text


# ---------------------------------------------------------------------------------------------
# The repository's profiles
# ---------------------------------------------------------------------------------------------

REPO_NOTEBOOKS = Path(pipeline.repo_root()) / "notebooks"


@pytest.mark.parametrize("profile", pipeline.PROFILES)
def test_repository_profiles_resolve_against_the_notebooks(profile, tmp_path):
    missing = [n for n in pipeline.NOTEBOOKS if not (REPO_NOTEBOOKS / f"{n}.ipynb").exists()]
    if missing:
        pytest.skip(f"notebooks not written yet: {missing}")
    p = pipeline.plan(profile, out_dir=tmp_path)
    assert p["stages"] == list(pipeline.NOTEBOOKS)
    for stage, params in p["parameters"].items():
        blob = json.dumps(params)
        assert "${" not in blob, (stage, blob)
    # Default output folders: outputs/smoke for smoke, outputs/benchmark for benchmark, outputs/ otherwise.
    default = pipeline.plan(profile)["out"]
    want = {"smoke": "outputs/smoke", "benchmark": "outputs/benchmark"}.get(profile, "outputs")
    assert default == (pipeline.repo_root() / want).resolve()


def test_committed_notebooks_carry_no_outputs():
    for name in ("03_ablation", "04_case_study"):
        path = REPO_NOTEBOOKS / f"{name}.ipynb"
        if not path.exists():
            pytest.skip(f"{path} not written yet")
        nb = nbformat.read(str(path), as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name}: expected one cell tagged parameters"
        # every assignment of the parameters cell is seen by papermill (a '=' in a comment hides it)
        import re

        import papermill

        assigned = re.findall(r"^([A-Za-z_]\w*)\s*=", tagged[0].source, flags=re.M)
        assert list(papermill.inspect_notebook(str(path))) == assigned, name
        for c in nb.cells:
            if c.cell_type == "code":
                assert not c.outputs and c.execution_count is None, f"{name}: committed with outputs"


def test_sweep_runs_each_value_into_its_own_folder(two_stage):
    nbs, prof, out = two_stage
    prof.write_text(prof.read_text() + "sweep:\n  value: [2, 5]\n")
    p = pipeline.plan(prof, out_dir=out, notebooks_dir=nbs, only=["01"])
    assert [pt["label"] for pt in p["points"]] == ["value-2", "value-5"]
    # the per-notebook value (21) wins over the sweep's common value
    assert [pt["parameters"]["01_make"]["value"] for pt in p["points"]] == [21, 21]
    prof.write_text(prof.read_text().replace("  value: 21\n", ""))
    res = pipeline.reproduce(prof, out_dir=out, notebooks_dir=nbs, only=["01"], log=None)
    assert [r.executed.parent.name for r in res] == ["value-2", "value-5"]
    rec = json.loads((out / "executed" / "t" / "value-5" / "01_make.stage.json").read_text())
    assert rec["parameters"]["value"] == 5 and rec["sweep"] == "value-5"
    assert (out / "data" / "a.txt").read_text() == "5"
    prof.write_text(prof.read_text().replace("sweep:\n  value: [2, 5]", "sweep:\n  value: []"))
    with pytest.raises(PipelineError, match="field 'sweep' must map one parameter"):
        pipeline.plan(prof, out_dir=out, notebooks_dir=nbs)


def test_sweep_list_form_sets_several_parameters(two_stage):
    nbs, prof, out = two_stage
    prof.write_text(
        prof.read_text().replace("  value: 21\n", "")
        + "sweep:\n  - {value: 3, shared: a/b}\n  - {value: 4, shared: c}\n"
    )
    p = pipeline.plan(prof, out_dir=out, notebooks_dir=nbs)
    assert [pt["label"] for pt in p["points"]] == ["value-3_shared-a-b", "value-4_shared-c"]
    assert [(pt["parameters"]["01_make"]["value"], pt["parameters"]["01_make"]["shared"]) for pt in p["points"]] == [
        (3, "a/b"),
        (4, "c"),
    ]
    assert "value" not in p["points"][0]["parameters"]["02_use"]  # only where declared


# ---------------------------------------------------------------------------------------------
# The smoke profile through all four notebooks (papermill, real library)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_profile_end_to_end(tmp_path):
    missing = [n for n in pipeline.NOTEBOOKS if not (REPO_NOTEBOOKS / f"{n}.ipynb").exists()]
    if missing:
        pytest.skip(f"notebooks not written yet: {missing}")
    import pandas as pd

    res = pipeline.reproduce("smoke", out_dir=tmp_path, log=None)
    assert [r.name for r in res] == list(pipeline.NOTEBOOKS)
    assert all(r.status == "ran" and r.executed.is_file() and r.record.is_file() for r in res)
    for r in res:  # no cell ended in an error
        nb = nbformat.read(str(r.executed), as_version=4)
        assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    tables, figures = tmp_path / "tables", tmp_path / "figures"

    # Table 3 of the data in use: one category, positive counts.
    t3 = pd.read_csv(tables / "table3_stats_demo.csv")
    assert list(t3["category"]) == ["home"]
    assert (t3[[f"{s}_{k}" for s in ("train", "dev", "test") for k in ("products", "reviews")]] > 0).all().all()
    assert (tables / "table3_stats_demo.md").read_text().startswith("| Dataset | Cate |")

    # Ceilings beside the floors in the comparison table (generated data), and what each run
    # learns: the cue sensitivity of every run next to the label's own.
    comparison = (tables / "table_comparison_demo.md").read_text()
    for row in ("Ceiling (text cues)", "Ceiling (all cues)", "Random", "Length"):
        assert row in comparison
    cues = pd.read_csv(tables / "cue_sensitivity_demo.csv")
    assert {"label itself", "ceiling_text", "ceiling_all", "length", "mcr", "mmss"} <= set(cues["system"])
    assert cues.loc[cues["system"] == "length", "detail"].iloc[0] > 0  # longer texts: more detail sentences

    # Table 4: the three variants of the profile, metrics in points, full model's deltas 0.
    t4 = pd.read_csv(tables / "table4_ablation_demo.csv", index_col=0)
    assert list(t4.index) == ["MM-SS (Ours)", "-w/o module(b)", "-w/o module(d)"]
    assert ((t4[["MAP", "N@3", "N@5"]] >= 0) & (t4[["MAP", "N@3", "N@5"]] <= 100)).all().all()
    assert (t4.loc["MM-SS (Ours)", ["ΔMAP", "ΔN@3", "ΔN@5"]] == 0).all()
    np.testing.assert_allclose(t4["ΔMAP"], t4["MAP"] - t4.loc["MM-SS (Ours)", "MAP"], atol=0.011)
    seeds = pd.read_csv(tables / "table4_ablation_seeds_demo.csv")
    assert sorted(seeds["variant"]) == ["full", "wo_b", "wo_d"] and set(seeds["seed"]) == {0}
    # 02 trained 03's variants in its own schedule (the profile's `ablation`); 03 reused them
    done_02 = res[1].executed.stat().st_mtime_ns
    for v in ("wo_b", "wo_d"):
        assert (
            tmp_path / "runs" / "demo" / "home" / f"mmss__{v}" / "seed0" / "metrics.json"
        ).stat().st_mtime_ns < done_02

    # Case study: a training review (pseudo labels in -4..8) and a test review, H in 0..4, M and O present.
    case = pd.read_csv(tables / "case_study_demo_home_seed0.csv")
    assert list(case["split"]) == ["train", "test"]
    assert case["H"].between(0, 4).all() and case[["M", "O"]].notna().all().all()
    ys = case.loc[0, [f"y_{s}" for s in ("ptrt", "pvrv", "ptrv", "pvrt", "rtrv")]].astype(float)
    assert ys.between(-4, 8).all()  # SSP-Label's clamp: the label range widened by its width

    # Pseudo-label statistics: epoch 1 pseudo labels equal the human labels (Eq. 12).
    ssp = pd.read_csv(tables / "ssp_pseudo_labels_demo_home_seed0.csv")
    assert set(ssp["subtask"]) == {"ptrt", "pvrv", "ptrv", "pvrt", "rtrv"}
    first = ssp[ssp["epoch"] == 1]
    np.testing.assert_allclose(first["mean_abs_offset"], 0.0, atol=1e-6)
    assert ssp["epoch"].max() >= 2

    pngs = {p.name for p in figures.glob("*.png")}
    for name in (
        "fig_ablation_differences_demo.png",
        "fig_ssp_trajectories_demo_home_seed0.png",
        "fig_ssp_offsets_demo_home_seed0.png",
        "fig_ssp_anchor_distances_demo_home_seed0.png",
    ):
        assert name in pngs
        assert (figures / name).read_bytes()[:4] == b"\x89PNG"
    assert sum(n.startswith("fig4_case_") for n in pngs) == 2

    # Everything unchanged: a second run with skip_unchanged executes nothing.
    res = pipeline.reproduce("smoke", out_dir=tmp_path, skip_unchanged=True, log=None)
    assert [r.status for r in res] == ["skipped"] * len(pipeline.NOTEBOOKS)


def test_declared_parameters_include_lines_papermill_cannot_parse(tmp_path):
    nb = write_notebook(tmp_path / "01_x.ipynb", "a = 1  # plain\nb = None  # None = the default\nc: int = 3\nd == 4\n")
    assert list(pipeline.declared_parameters(nb)) == ["a", "b", "c"]


# ---------------------------------------------------------------------------------------------
# Profiles that name their notebooks (the studies' reports); progress of a running notebook
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", pipeline.STUDY_PROFILES)
def test_study_profiles_run_the_studies_report_notebooks(profile, tmp_path):
    p = pipeline.plan(profile, out_dir=tmp_path)
    path = Path(pipeline.repo_root()) / "studies" / "notebooks" / f"{profile}.ipynb"
    assert p["stages"] == [profile] and p["notebook_paths"] == {profile: path}
    assert p["parameters"] == {profile: {"out": str(tmp_path)}}
    assert pipeline.plan(profile)["out"] == (pipeline.repo_root() / "outputs" / "powered").resolve()
    nb = nbformat.read(str(path), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].source.startswith("out = ")
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


def test_profile_notebooks_field_runs_those_notebooks_in_order(tmp_path):
    write_notebook(tmp_path / "nb" / "b_second.ipynb", "x = 1", "print('second', x)")
    write_notebook(tmp_path / "nb" / "a_first.ipynb", "x = 1", "print('first', x)")
    prof = write_profile(
        tmp_path / "p.yaml",
        f"notebooks: [{tmp_path}/nb/b_second.ipynb, {tmp_path}/nb/a_first.ipynb]\na_first:\n  x: 3\n",
    )
    p = pipeline.plan(prof, out_dir=tmp_path / "out")
    assert p["stages"] == ["b_second", "a_first"] and p["parameters"] == {"b_second": {}, "a_first": {"x": 3}}
    for bad, why in (
        ("notebooks: []\n", "non-empty list"),
        ("notebooks: [x.py]\n", "non-empty list"),
        ("notebooks: [a/n.ipynb, b/n.ipynb]\n", "distinct file names"),
        (f"notebooks: [{tmp_path}/none.ipynb]\n", "not found"),
    ):
        with pytest.raises(PipelineError, match=why):
            pipeline.plan(write_profile(tmp_path / "bad.yaml", bad), out_dir=tmp_path / "out")


@pytest.mark.parametrize("progress", ["none", "cells", "output"])
def test_progress_shows_cells_and_the_kernels_output(tmp_path, progress, capfd):
    """cells: a line per code cell as it starts; output: also what the kernel prints (a progress
    bar's redraws down to its last state); none: neither. The kernel runs over IPC, so its
    'running over TCP without encryption' warning never appears, and its socket folder is removed."""
    import glob
    import tempfile

    before = set(glob.glob(str(Path(tempfile.gettempdir()) / "mmss-kernel-*")))
    nb = write_notebook(
        tmp_path / "nb" / "long_one.ipynb",
        "n_runs = 2",
        "import sys\nfor i in range(n_runs):\n    print(f'[train] {i + 1}/{n_runs} finished: dev MAP 0.{i}', flush=True)",
        "sys.stderr.write('bar  10%\\rbar  50%\\rbar 100%\\n')\nsys.stderr.flush()",
        "1 + 1",
    )
    prof = write_profile(tmp_path / "p.yaml", f"notebooks: [{nb}]\nlong_one:\n  n_runs: 3\n")
    lines: list[str] = []
    pipeline.reproduce(prof, out_dir=tmp_path / "out", progress=progress, log=lines.append)
    shown = [ln for ln in lines if "cell " in ln or " | " in ln]
    if progress == "none":
        assert shown == []
    else:
        cells = [ln for ln in shown if ": cell " in ln]
        assert cells == [
            "[1/1] long_one: cell 1/5: n_runs = 2",
            "[1/1] long_one: cell 2/5: # injected parameters",
            "[1/1] long_one: cell 3/5: import sys",
            "[1/1] long_one: cell 4/5: sys.stderr.write('bar  10%\\rbar  50%\\rbar 100%\\n')",
            "[1/1] long_one: cell 5/5: 1 + 1",
        ]
    out = [ln.split(" | ", 1)[1] for ln in shown if " | " in ln]
    if progress == "output":
        assert out == [f"[train] {i}/3 finished: dev MAP 0.{i - 1}" for i in (1, 2, 3)] + ["bar 100%"]
    else:
        assert out == []
    err = capfd.readouterr()
    assert "without encryption" not in err.out + err.err + "\n".join(lines)
    assert set(glob.glob(str(Path(tempfile.gettempdir()) / "mmss-kernel-*"))) == before


def test_cli_streams_progress_by_default(tmp_path, monkeypatch, capsys):
    nb = write_notebook(tmp_path / "nb" / "one.ipynb", "x = 1", "print('hello from the kernel', x)")
    prof = write_profile(tmp_path / "p.yaml", f"notebooks: [{nb}]\n")
    assert pipeline.cli_main(["--profile", str(prof), "--out", str(tmp_path / "out")]) == 0
    got = capsys.readouterr().out
    assert "[1/1] one: cell 2/2: print('hello from the kernel', x)" in got
    assert "[1/1] one | hello from the kernel 1" in got
    assert pipeline.cli_main(["--profile", str(prof), "--out", str(tmp_path / "out"), "--progress", "none"]) == 0
    assert "hello from the kernel" not in capsys.readouterr().out
