"""The pseudo-label explorer's data side (mmss_lib.explore.explorer) and its widgets without a browser
(mmss_lib.explore.app), on a tiny demo category trained for two epochs: MM-SS (SSP records),
its wo_d ablation (no records) and the length floor; plus the bad inputs of issue 19 (a run
without records, a run still training, a missing / corrupt image, a product with one review, an
empty runs folder), each a message and never a write into the runs folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmss_lib.errors import DataError

TINY = {"d": 16, "n_heads": 2, "ff_dim": 32, "head_hidden": 8}


def build_small_runs(root: Path, *, epochs: int = 2, n_products: int = 8) -> tuple[Path, Path]:
    """Demo category "home" with images, random-feature stores, and runs: MM-SS full and wo_d,
    the length floor (seed 0). Returns (data_root, runs_root). Used by the browser test too."""
    from conftest import write_tiny_demo

    from mmss_lib.model_selection.sweeps import run_experiment
    from mmss_lib.models.mmss import ABLATIONS
    from mmss_lib.training.trainer import TrainConfig

    write_tiny_demo(root, n_products=n_products, images=True)
    base = TrainConfig(epochs=epochs, patience=epochs, device="cpu", num_threads=1, model_options=dict(TINY))
    run_experiment(
        data_root=root / "data",
        dataset="demo",
        categories=["home"],
        features_root=root / "features",
        runs_root=root / "runs",
        systems=[("mmss", v, ABLATIONS[v]) for v in ("full", "wo_d")] + ["length"],
        seeds=(0,),
        base_config=base,
        progress=False,
    )
    return root / "data", root / "runs"


def tree_digest(path: Path) -> dict[str, str]:
    """SHA-256 of every file under ``path`` (what 'nothing written' compares)."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("explore")
    data_root, runs_root = build_small_runs(root)
    return data_root, runs_root


@pytest.fixture
def explorer(small):
    from mmss_lib.explore.explorer import Explorer

    data_root, runs_root = small
    return Explorer(runs_root, data_root)


def _runs(ex):
    return {r.name: r for r in ex.runs("demo", "home")}


def test_discover_runs_and_status(explorer, small):
    runs = _runs(explorer)
    assert sorted(runs) == ["length", "mmss", "mmss__wo_d"]
    assert runs["mmss__wo_d"].variant == "wo_d" and runs["mmss"].variant == "full"
    assert runs["mmss__wo_d"].label == "mmss (wo_d) seed0"
    st = explorer.run_status(runs["mmss"])
    assert st.finished and st.ssp_epochs == [1, 2] and st.score_splits == ["dev", "test"] and not st.notes
    for name in ("mmss__wo_d", "length"):  # no SSP records: a note, not an error
        st = explorer.run_status(runs[name])
        assert st.finished and st.ssp_epochs == [] and any("no SSP-Label records" in n for n in st.notes)
    # the data root defaults to the data folder beside the runs folder
    from mmss_lib.explore.explorer import Explorer

    assert Explorer(small[1]).data_root == small[0]


def test_product_list_search_and_sorts(explorer):
    from mmss_lib.data.mrhp import load_mrhp
    from mmss_lib.training.floors import per_product_for_run

    runs = _runs(explorer)
    prods, _ = explorer.product_list("demo", "home", "test", runs["mmss"])
    products, reviews = load_mrhp(explorer.data_root, "demo", "home", "test")
    assert list(prods["product_id"]) == list(products["product_id"])  # file order
    assert list(prods["n_reviews"]) == [int((reviews["product_id"] == p).sum()) for p in products["product_id"]]
    pp = per_product_for_run(runs["mmss"].path, "test").set_index("product_id")["AP"]
    np.testing.assert_allclose(prods["AP"], pp.reindex(prods["product_id"]).to_numpy())
    low, _ = explorer.product_list("demo", "home", "test", runs["mmss"], sort="AP: lowest first")
    assert list(low["AP"]) == sorted(low["AP"])
    hi, _ = explorer.product_list("demo", "home", "test", runs["mmss"], sort="AP: highest first")
    assert list(hi["AP"]) == sorted(hi["AP"], reverse=True)
    # search: by name (case-insensitive) and by id
    name = products["name"].iloc[1]
    hit, _ = explorer.product_list("demo", "home", "test", runs["mmss"], query=name.upper())
    assert products["product_id"].iloc[1] in set(hit["product_id"])
    assert all(
        name.lower() in n.lower() or name.lower() in t.lower()
        for n, t in zip(hit["name"], products.set_index("product_id").loc[hit["product_id"], "text"], strict=True)
    )
    none, _ = explorer.product_list("demo", "home", "test", runs["mmss"], query="no such product zzz")
    assert none.empty
    # largest offsets on train = the max over the product's training reviews of mean_s |y_s - y_g|
    tr, notes = explorer.product_list("demo", "home", "train", runs["mmss"], sort="largest offsets")
    assert not notes and tr["offset"].notna().any()
    off = tr["offset"].to_numpy()
    assert list(off[~np.isnan(off)]) == sorted(off[~np.isnan(off)], reverse=True)
    # AP sorting on train: no scores there, a note and the file order
    tr2, notes = explorer.product_list("demo", "home", "train", runs["mmss"], sort="AP: lowest first")
    assert notes and "no ranking on train" in notes[0]
    with pytest.raises(DataError, match="sort"):
        explorer.product_list("demo", "home", "test", runs["mmss"], sort="by mood")


def test_review_table_ranks_and_second_run(explorer):
    import pandas as pd

    runs = _runs(explorer)
    prods, _ = explorer.product_list("demo", "home", "test", runs["mmss"], sort="most reviews")
    pid = prods["product_id"].iloc[0]
    table, notes = explorer.review_table("demo", "home", "test", pid, runs["mmss"], runs["length"])
    sc = pd.read_csv(runs["mmss"].path / "scores_test.csv", dtype={"review_id": str}).set_index("review_id")
    mine = sc.loc[table["review_id"], "score"].to_numpy()
    assert list(table["rank"]) == list(range(1, len(table) + 1))  # ranked by the run
    assert all(np.diff(mine) <= 0)  # highest score first
    assert list(table["label"]) == list(sc.loc[table["review_id"], "label"])
    # the human order: label descending
    human = table.sort_values("human_rank")["label"].to_numpy()
    assert all(np.diff(human) <= 0)
    # the length floor ranks the longest text first
    from mmss_lib.data.mrhp import load_mrhp

    _, reviews = load_mrhp(explorer.data_root, "demo", "home", "test")
    lens = reviews.set_index("review_id").loc[table.sort_values("other_rank")["review_id"], "text"].str.len()
    assert all(np.diff(lens.to_numpy()) <= 0)
    assert list(table["rank_diff"]) == list(table["other_rank"] - table["rank"])
    diff = explorer.ranking_difference(table)
    assert diff["n"] == len(table) and diff["differ"] == int((table["rank_diff"] != 0).sum())
    # subtask heads on test: offset = mean |yhat_s - yhat|
    cols = [c for c in sc.columns if c.startswith("score_")]
    assert len(cols) == 5
    exp = (sc.loc[table["review_id"], cols].sub(sc.loc[table["review_id"], "score"], axis=0)).abs().mean(axis=1)
    np.testing.assert_allclose(table["offset"], exp.to_numpy())
    # filter: reviews whose offset reaches min_offset
    cut = float(np.median(table["offset"]))
    kept, _ = explorer.review_table("demo", "home", "test", pid, runs["mmss"], min_offset=cut)
    assert set(kept["review_id"]) == set(table.loc[table["offset"] >= cut, "review_id"])


def test_review_detail_train_matches_the_records(explorer):
    from mmss_lib.ssp import records as ssp_records

    runs = _runs(explorer)
    hist = ssp_records.load_ssp_history(runs["mmss"].path)
    i = ssp_records.largest_offset_reviews(hist, 1)[0]
    rid = str(hist.review_id[i])
    det = explorer.review_detail("demo", "home", "train", rid, runs["mmss"])
    assert det.epochs == [1, 2] and sorted(det.trajectory) == sorted(hist.subtasks)
    for s in hist.subtasks:
        np.testing.assert_allclose(det.trajectory[s], hist.labels[s][:, i], rtol=1e-6)
        assert det.trajectory[s][0] == det.label  # Eq. 12: y_s = y_g in epoch 1
        assert det.offsets[s] == pytest.approx(hist.offsets[s][-1, i], rel=1e-6)
        assert det.chi[s] == pytest.approx(hist.chi[s][-1, i], rel=1e-6)
    assert det.chi["g"] == pytest.approx(hist.chi_g[-1, i], rel=1e-6)
    from mmss_lib.data.synthetic import load_cues

    cues = load_cues(explorer.data_root, "home", "train").set_index("review_id").loc[rid]
    assert det.cues["match"] == cues["match"] and det.cues["detail"] == cues["detail"]
    # farthest reviews: the same first review as ssp_records.largest_offset_reviews
    far = explorer.farthest_reviews("demo", "home", "train", runs["mmss"], n=3)
    assert far["review_id"].iloc[0] == rid and list(far["offset"]) == sorted(far["offset"], reverse=True)
    # the review table on train carries the last pseudo labels
    table, _ = explorer.review_table("demo", "home", "train", det.product_id, runs["mmss"])
    row = table.set_index("review_id").loc[rid]
    for s in hist.subtasks:
        assert row[f"y_{s}"] == pytest.approx(hist.labels[s][-1, i], rel=1e-6)
    from mmss_lib.explore.explorer import trajectory_png

    png = trajectory_png(det)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_review_detail_test_split_shows_heads(explorer):
    import pandas as pd

    runs = _runs(explorer)
    sc = pd.read_csv(runs["mmss"].path / "scores_test.csv", dtype={"review_id": str}).set_index("review_id")
    rid = sc.index[0]
    det = explorer.review_detail("demo", "home", "test", rid, runs["mmss"])
    assert det.heads["score"] == pytest.approx(sc.loc[rid, "score"])
    assert det.heads["ptrt"] == pytest.approx(sc.loc[rid, "score_ptrt"])
    assert not det.trajectory and any("training reviews only" in n for n in det.notes)
    det = explorer.review_detail("demo", "home", "test", rid, runs["length"])
    assert list(det.heads) == ["score"] and any("no subtask heads" in n for n in det.notes)


def test_bad_inputs_are_messages_and_nothing_is_written(small, tmp_path):
    """Issue 19's bad inputs on the data side; the runs folder is unchanged afterwards."""
    from mmss_lib.explore.explorer import Explorer, images_html, review_table_html, thumbnail

    data_root, runs_root = small
    runs = tmp_path / "runs"
    shutil.copytree(runs_root, runs)
    data = tmp_path / "data"
    shutil.copytree(data_root, data)
    # a run still training: config and one epoch of history, no metrics, no scores
    training = runs / "demo" / "home" / "mmss__wo_b" / "seed0"
    training.mkdir(parents=True)
    shutil.copy(runs / "demo" / "home" / "mmss" / "seed0" / "config.json", training / "config.json")
    (training / "history.json").write_text(json.dumps([{"epoch": 1}]))
    # a corrupt SSP record in a copy of the MM-SS run
    corrupt = runs / "demo" / "home" / "mmss" / "seed1"
    shutil.copytree(runs / "demo" / "home" / "mmss" / "seed0", corrupt)
    (corrupt / "ssp" / "epoch002.npz").write_bytes(b"PK\x03\x04 truncated")
    before = tree_digest(runs)

    ex = Explorer(runs, data)
    by = {(r.name, r.seed): r for r in ex.runs("demo", "home")}
    st = ex.run_status(by[("mmss__wo_b", 0)])
    assert not st.finished and st.epochs == 1 and any("still training" in n for n in st.notes)
    table, notes = ex.review_table(
        "demo", "home", "test", ex.product_list("demo", "home", "test")[0]["product_id"][0], by[("mmss__wo_b", 0)]
    )
    assert table["rank"].isna().all() and any("no scores on test" in n for n in notes)
    assert list(table["human_rank"]) == list(range(1, len(table) + 1))  # human order instead
    with pytest.raises(DataError, match="epoch002.npz: not a readable SSP-Label record"):
        ex.product_list("demo", "home", "train", by[("mmss", 1)], sort="largest offsets")
    with pytest.raises(DataError, match="has no offsets on train"):
        ex.farthest_reviews("demo", "home", "train", by[("mmss__wo_d", 0)])
    det = ex.review_detail(
        "demo", "home", "train", ex.data("demo", "home", "train")[1]["review_id"][0], by[("mmss__wo_d", 0)]
    )
    assert not det.trajectory and any("no SSP-Label records" in n for n in det.notes)
    # a product with one review
    products, reviews, _ = ex.data("demo", "home", "test")
    single = products.loc[products["n_reviews"] == 1, "product_id"]
    if len(single):
        t, notes = ex.review_table("demo", "home", "test", single.iloc[0], by[("mmss", 0)])
        assert len(t) == 1 and any("one review" in n for n in notes)
    # a missing and a corrupt image: a note in place of the thumbnail
    _, rv, _ = ex.data("demo", "home", "train")
    files = [f for fs in rv["image_files"] for f in fs][:2]
    assert len(files) == 2
    Path(files[0]).unlink()
    Path(files[1]).write_bytes(b"not a png")
    thumbnail.cache_clear()
    html = images_html(files)
    assert "is missing" in html and "is not readable" in html and "<img" not in html
    with pytest.raises(DataError, match="is missing"):
        thumbnail(files[0])
    review_table_html(table)
    # an empty runs folder, and a missing one
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "nowhere"):
        with pytest.raises(DataError, match="no runs in"):
            Explorer(folder).runs()
    assert tree_digest(runs) == before
    assert not (tmp_path / "nowhere").exists()


def test_widgets_without_a_browser(small, tmp_path):
    """The widget side on the kernel side (no browser): selections drive the views; bad input is a
    message in the view; nothing is written into the runs folder."""
    pytest.importorskip("ipywidgets")
    from mmss_lib.explore.app import ExplorerApp

    data_root, runs_root = small
    before = tree_digest(runs_root)
    app = ExplorerApp(runs_root, data_root, split="train")
    assert app.dataset.value == "demo" and app.category.value == "home"
    assert app.run.value.name == "mmss" and "mmss-error" not in app.message.value
    app.sort.value = "largest offsets"
    expected = app.explorer.product_list("demo", "home", "train", app.run.value, sort="largest offsets")[0]
    assert [v for _, v in app.products.options] == list(expected["product_id"])
    app.products.value = expected["product_id"][0]
    assert expected["product_id"][0] in app.product.value
    rows = app.explorer.review_table("demo", "home", "train", expected["product_id"][0], app.run.value)[0]
    assert [v for _, v in app.reviews.options] == list(rows["review_id"])
    first = app.reviews.value
    assert first is not None and "<img" in app.trajectory.value
    shown = app.trajectory.value
    app.reviews.value = app.reviews.options[-1][1]
    if app.reviews.value != first:
        assert app.trajectory.value != shown
    # a second run beside the first, on test
    app.split.value = "test"
    app.other.value = next(r for _, r in app.other.options if r is not None and r.name == "length")
    assert "rank (" in app.table.value and "mmss-review-table" in app.table.value
    assert "differ" in app.summary.value
    # a run without SSP records on train: a message, no traceback
    app.split.value = "train"
    app.run.value = next(r for _, r in app.run.options if r.name == "mmss__wo_d")
    assert "no SSP-Label records" in app.message.value and "Traceback" not in app.message.value
    html = app.snapshot_html()
    assert "mmss-review-table" in html
    assert tree_digest(runs_root) == before
    # an empty runs folder: the message, and empty pickers
    (tmp_path / "empty").mkdir()
    empty = ExplorerApp(tmp_path / "empty")
    assert "no runs in" in empty.message.value and not empty.products.options


def test_kendall_tau_against_scipy(explorer):
    import pandas as pd
    from scipy.stats import kendalltau

    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 12):
        a, b = rng.permutation(n) + 1, rng.permutation(n) + 1
        t = pd.DataFrame({"review_id": [str(i) for i in range(n)], "rank": a, "other_rank": b, "rank_diff": b - a})
        d = explorer.ranking_difference(t)
        assert d["kendall_tau"] == pytest.approx(kendalltau(a, b).statistic)
        assert d["differ"] == int((a != b).sum()) and d["top_same"] == (int(np.argmin(a)) == int(np.argmin(b)))


NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "05_explore.ipynb"


def test_notebook_05_committed_clean_and_parameters_seen_by_papermill():
    import re

    import nbformat
    import papermill

    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assigned = re.findall(r"^([A-Za-z_]\w*)\s*=", tagged[0].source, flags=re.M)
    assert list(papermill.inspect_notebook(str(NOTEBOOK))) == assigned
    for c in nb.cells:
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None, "05_explore committed with outputs"
            assert "def " not in c.source, "notebooks define no functions"


@pytest.mark.slow
def test_notebook_05_headless_leaves_static_snapshots(small, tmp_path):
    """papermill runs notebook 05 with a product picked by its parameters; the executed notebook
    keeps static HTML snapshots (the product view beside a second run, a training review's
    trajectory) and no error output; the runs folder is unchanged."""
    import nbformat
    import papermill

    data_root, runs_root = small
    before = tree_digest(runs_root)
    from mmss_lib.data.mrhp import load_mrhp

    pid = load_mrhp(data_root, "demo", "home", "test")[0]["product_id"].iloc[1]
    out = tmp_path / "05.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(out),
        kernel_name="python3",
        progress_bar=False,
        cwd=str(NOTEBOOK.parents[1]),
        parameters={
            "runs_root": str(runs_root),
            "data_root": str(data_root),
            "compare_system": "length",
            "compare_variant": "full",
            "product_id": pid,
            "split": "test",
        },
    )
    nb = nbformat.read(str(out), as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    first = next(h for h in html if "mmss-review-table" in h)
    assert f"({pid}," in first and "rank (length seed0)" in first and "differ at" in first
    assert any("demo/home train" in h and 'class="mmss-trajectory-img"' in h for h in html)  # the farthest review
    assert tree_digest(runs_root) == before


@pytest.mark.smoke
def test_bench_explore_tiny_run(tmp_path, capsys):
    """Smoke: `mmss bench explore` end to end at a tiny size (no times asserted)."""
    pytest.importorskip("ipywidgets")
    from mmss_lib.bench import resolve

    assert (
        resolve("explore")(
            ["--products", "20", "--epochs", "3", "--clicks", "3", "--no-images", "--out", str(tmp_path / "b")],
            prog="mmss bench explore",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "[switch] product (train, trajectories)" in out and "[result] slowest" in out
    assert (tmp_path / "b" / "runs" / "demo" / "clothing" / "mmss" / "seed0" / "ssp" / "epoch003.npz").exists()


@pytest.mark.slow
def test_explorer_reads_a_run_while_mmss_train_writes_it(tiny_demo, tmp_path):
    """`mmss train` and the explorer on one runs folder at the same moment (issue 28's unprobed
    case): every file the trainer writes is replaced atomically, so the explorer, re-reading the
    folder again and again while the run trains, sees a consistent run each time (never an error
    or a half-written file): 'still training' with the epochs finished so far, then finished."""
    import subprocess
    import sys
    import time

    from mmss_lib.explore.explorer import Explorer

    runs = tmp_path / "runs"
    cmd = [
        sys.executable,
        "-m",
        "mmss_lib",
        "train",
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
        "--epochs",
        "25",
        "--patience",
        "25",
        "--batch-size",
        "16",
        "--n-neg",
        "3",
        "--device",
        "cpu",
        "--num-threads",
        "1",
        "--no-progress",
        "--option",
        "d=16",
        "--option",
        "n_heads=2",
        "--option",
        "ff_dim=32",
        "--option",
        "head_hidden=8",
    ]
    proc = subprocess.Popen(
        cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    seen_training, epochs_seen = False, []
    config = runs / "demo" / "home" / "mmss" / "seed0" / "config.json"
    try:
        while not config.exists() and proc.poll() is None:  # an empty runs folder is refused (no runs)
            time.sleep(0.01)
        while proc.poll() is None:
            ex = Explorer(runs, tiny_demo / "data")
            for run in ex.runs():
                st = ex.run_status(run)
                assert not any("not readable" in n for n in st.notes), st.notes
                if not st.finished:
                    seen_training = True
                    epochs_seen.append(st.epochs)
                    assert set(st.ssp_epochs) <= set(range(1, st.epochs + 2))
                if st.ssp_epochs:  # the pseudo-label records read so far
                    ex.review_offsets(run, "demo", "home", "train")
                prods, _ = ex.product_list("demo", "home", "test", run)
                ex.review_table("demo", "home", "test", prods["product_id"].iloc[0], run)
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.wait() == 0, proc.stderr.read()[-2000:]
    assert seen_training and max(epochs_seen) >= 1  # it did read the run mid-training
    ex = Explorer(runs, tiny_demo / "data")
    st = ex.run_status(ex.runs()[0])
    assert st.finished and st.epochs == 25 and st.score_splits == ["dev", "test"] and not st.notes
