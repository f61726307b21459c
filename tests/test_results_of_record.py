"""Results of record (issue 36, item 3): the per-run records that replace the per-review scores in
git give the same numbers; what git tracks under outputs/ stays small and holds no review id of a
real data set."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmss_lib.errors import DataError
from mmss_lib.training.floors import per_product_for_run
from mmss_lib.training.run_folder import RANKING, read_ranking, scores_path, write_rankings

REPO = Path(__file__).resolve().parents[1]
MAX_TRACKED_BYTES = 5 * 1024 * 1024


def _run_folder(path: Path, system: str, scores: pd.DataFrame, threshold: float = 1.0) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"config": {"system": system, "variant": "full", "seed": 0}}))
    (path / "metrics.json").write_text(json.dumps({"threshold": threshold}))
    for split in ("dev", "test"):
        scores.to_csv(scores_path(path, split), index=False)
    return path


def _scores(rng, n_products=40, ties=True):
    rows = []
    for p in range(n_products):
        n = int(rng.integers(1, 9))
        for i in range(n):
            s = float(rng.integers(0, 3)) if ties else float(rng.normal())  # ties: stable order decides
            rows.append(
                {"review_id": f"p{p}-{i}", "product_id": f"p{p:03d}", "label": int(rng.integers(0, 5)), "score": s}
            )
    df = pd.DataFrame(rows)
    return df.sample(frac=1.0, random_state=0).reset_index(drop=True)  # products interleaved


@pytest.mark.parametrize("system", ["mmss", "random"])
@pytest.mark.parametrize("ties", [True, False])
def test_ranking_record_gives_the_same_per_product_metrics(tmp_path, system, ties):
    rd = _run_folder(tmp_path / "run", system, _scores(np.random.default_rng(1), ties=ties))
    want = {s: per_product_for_run(rd, s) for s in ("dev", "test")}
    written = write_rankings(rd)
    assert [p.name for p in written] == [RANKING.format(split=s) for s in ("dev", "test")]
    first = written[1].read_bytes()
    write_rankings(rd)
    assert written[1].read_bytes() == first  # deterministic bytes (no gzip time stamp)
    text = gzip.decompress(first).decode()
    assert "p0-" not in text and "review_id" not in text  # no review ids in the record
    for s in ("dev", "test"):
        scores_path(rd, s).unlink()
        pd.testing.assert_frame_equal(per_product_for_run(rd, s), want[s], check_exact=True)


def test_ranking_record_refusals(tmp_path):
    rd = _run_folder(tmp_path / "run", "mmss", _scores(np.random.default_rng(2)).assign(label=0.5))
    with pytest.raises(DataError, match="labels must be integers"):
        write_rankings(rd)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no ranking record"):
        read_ranking(empty, "test")
    with pytest.raises(DataError, match="no scores"):
        per_product_for_run(empty, "test", threshold=1)
    (empty / RANKING.format(split="test")).write_bytes(gzip.compress(b"a,b\n1,2\n"))
    with pytest.raises(DataError, match="not a ranking record"):
        read_ranking(empty, "test")


def test_cue_record_replaces_the_scores(tmp_path):
    """The cue-sensitivity table is the same from the runs' records once scores and data are gone."""
    from mmss_lib.data.synthetic import make_demo
    from mmss_lib.evaluation.cue_sensitivity import CUE_RECORD, cue_sensitivity_table
    from mmss_lib.model_selection.sweeps import run_experiment
    from mmss_lib.training.config import TrainConfig

    data = tmp_path / "data"
    make_demo(data, n_products=40, categories=("home",), images=False)
    res = run_experiment(
        data_root=data,
        dataset="demo",
        categories=["home"],
        features_root=tmp_path / "features",
        runs_root=tmp_path / "runs",
        systems=["random", "length", "ceiling_all"],
        seeds=[0, 1],
        base_config=TrainConfig(device="cpu"),
        progress=False,
        summary=False,
    )
    want = cue_sensitivity_table(res, data)
    for rd in res["run_dir"]:
        assert (Path(rd) / CUE_RECORD.format(split="test")).exists()
        write_rankings(rd)
        for s in ("dev", "test"):
            scores_path(rd, s).unlink()
    import shutil

    shutil.rmtree(data)
    pd.testing.assert_frame_equal(cue_sensitivity_table(res, data), want, check_exact=True)
    os.remove(Path(res["run_dir"].iloc[0]) / CUE_RECORD.format(split="test"))
    with pytest.raises(DataError, match="no scores"):
        cue_sensitivity_table(res, data)


# ------------------------------------------------------------------------------------ what git tracks


def _tracked(under: str = "outputs") -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z", under], capture_output=True, check=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout ({exc})")
    return [REPO / p for p in out.split("\0") if p and (REPO / p).is_file()]


def test_tracked_outputs_stay_under_5_mb():
    """``git ls-files outputs | xargs du -ch`` at most 5 MB (du counts the blocks a file holds)."""
    files = _tracked()
    used = sum(max(f.stat().st_blocks * 512, f.stat().st_size) for f in files)
    big = sorted(files, key=lambda f: -f.stat().st_size)[:5]
    assert used <= MAX_TRACKED_BYTES, f"tracked outputs take {used / 2**20:.2f} MB (> 5 MB); largest: " + ", ".join(
        f"{f.relative_to(REPO)} {f.stat().st_size / 1024:.0f} KB" for f in big
    )
    assert not [f for f in files if re.fullmatch(r"scores_\w+\.csv", f.name)], "per-review scores are tracked"


def _real_ids(sample: Path) -> tuple[set[str], set[str], set[str]]:
    """The review ids the builder makes from the Amazon sample's categories that have metadata, and
    every asin and reviewer id of the sample's review files."""
    from mmss_lib.data.amazon2018 import build_amazon2018
    from mmss_lib.data.mrhp import SPLITS, load_mrhp

    review_ids: set[str] = set()
    for reviews in sorted(sample.glob("*_5.json.gz")):
        meta = sample / ("meta_" + reviews.name.replace("_5.json.gz", ".json.gz"))
        if not meta.exists():
            continue
        out = Path(os.environ.get("TMPDIR", "/tmp")) / f"mmss_ids_{os.getpid()}_{reviews.stem}"
        build_amazon2018(reviews, meta, out, "cat", min_reviews=3)  # the Magazine phase's rule (studies.magazine)
        for s in SPLITS:
            review_ids |= set(load_mrhp(out, "amazon", "cat", s)[1]["review_id"].astype(str))
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    asins, reviewers = set(), set()
    for reviews in sample.glob("*_5.json.gz"):
        with gzip.open(reviews, "rt", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                asins.add(str(r.get("asin", "")))
                reviewers.add(str(r.get("reviewerID", "")))
    return review_ids, asins - {""}, reviewers - {""}


def _leaks(files, review_ids, asins, reviewers) -> list[str]:
    """The files (and ids) that hold a review id of the sample or a reviewer id of its raw files."""
    pattern = re.compile(r"\b([A-Z0-9]{10})-(\d+)\b")
    word = re.compile(r"\b[A-Z0-9]{12,21}\b")
    found = []
    for f in files:
        if f.suffix == ".png":
            continue
        raw = f.read_bytes()
        text = (gzip.decompress(raw) if f.suffix == ".gz" else raw).decode("utf-8", "replace")
        hits = {m.group(0) for m in pattern.finditer(text) if m.group(1) in asins or m.group(0) in review_ids}
        hits |= {w for w in word.findall(text) if w in reviewers}
        if hits:
            found.append(f"{f}: {sorted(hits)[:3]}")
    return found


@pytest.fixture(scope="module")
def real_ids(amazon2018_sample):
    return _real_ids(amazon2018_sample)


def test_no_tracked_output_holds_a_real_review_id(real_ids):
    """No tracked file under outputs/ holds a review id of the real sample: neither one the builder
    makes (``{asin}-{i}``, checked against the ids it makes and against that pattern for every asin
    of the sample) nor a reviewer id of the raw files; gzipped records are read decompressed."""
    review_ids, asins, reviewers = real_ids
    assert review_ids and asins and reviewers
    found = _leaks(_tracked(), *real_ids)
    assert not found, "tracked files hold review ids of the Amazon sample: " + "; ".join(found[:5])


def test_the_review_id_check_finds_planted_ids(real_ids, tmp_path):
    """The check above can fail: a builder id in a CSV, an asin-index id in a gzipped record and a
    reviewer id in JSON are each found; the generated data's ids are not."""
    review_ids, asins, reviewers = real_ids
    (tmp_path / "a.csv").write_text(f"review_id,score\n{sorted(review_ids)[0]},0.5\n")
    (tmp_path / "b.csv.gz").write_bytes(gzip.compress(f"x\n{sorted(asins)[0]}-7\n".encode()))
    (tmp_path / "c.json").write_text(json.dumps({"who": sorted(reviewers)[0]}))
    (tmp_path / "d.csv").write_text("review_id\nDEL000000-0\nDHO000012-3\n")
    found = _leaks(sorted(tmp_path.iterdir()), *real_ids)
    assert [Path(f.split(":")[0]).name for f in found] == ["a.csv", "b.csv.gz", "c.json"]
