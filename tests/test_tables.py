"""mmss_lib.evaluation.tables: Table 1/2 and Table 4 layouts, significance markers, CSV + Markdown output."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mmss_lib.errors import DataError
from mmss_lib.evaluation.summary import table_summary
from mmss_lib.evaluation.tables import (
    MARKER,
    ablation_table,
    comparison_note,
    comparison_table,
    region_weights_note,
    save_table,
    to_markdown,
)
from mmss_lib.metrics.ranking import paired_test
from mmss_lib.models.registry import SYSTEMS, is_floor

TRAINED = [n for n in SYSTEMS if not is_floor(n)]  # the paper's nine systems

CATS = ["home", "clothing", "electronics"]  # deliberately not the paper's order


def make_results():
    """Every system x category x 3 seeds on amazon; MAP = base + 0.01 * seed, N@3 = MAP - 0.1,
    N@5 = MAP - 0.05, base increasing along SYSTEMS so MM-SS is best and MCL second."""
    rows = []
    for si, name in enumerate(TRAINED):
        for ci, cat in enumerate(CATS):
            for seed in range(3):
                base = 0.40 + 0.03 * si + 0.001 * ci
                m = base + 0.01 * seed
                rows.append(
                    dict(
                        dataset="amazon",
                        category=cat,
                        system=name,
                        variant="" if name != "mmss" else "full",
                        seed=seed,
                        MAP=m,
                        **{"NDCG@3": m - 0.1, "NDCG@5": m - 0.05},
                    )
                )
    # an ablation run (must not enter Tables 1/2), a lazada run, a dev row
    rows.append(
        dict(
            dataset="amazon",
            category="home",
            system="mmss",
            variant="wo_b",
            seed=0,
            MAP=0.1,
            **{"NDCG@3": 0.1, "NDCG@5": 0.1},
        )
    )
    rows.append(
        dict(
            dataset="lazada",
            category="home",
            system="mcr",
            variant=None,
            seed=0,
            MAP=0.9,
            **{"NDCG@3": 0.9, "NDCG@5": 0.9},
        )
    )
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)  # shuffled rows
    df["split"] = "test"
    dev = df.iloc[:1].assign(split="dev", MAP=0.0)
    return pd.concat([df, dev], ignore_index=True)


def test_comparison_layout_and_order():
    t = comparison_table(make_results(), "amazon")
    assert list(t.index.names) == ["Type", "Method"]
    assert list(t.index) == [
        ("Text-only", "BiMPM"),
        ("Text-only", "EG-CNN"),
        ("Text-only", "Conv-KNRM"),
        ("Text-only", "PRH-Net"),
        ("Multimodal", "SSE-Cross"),
        ("Multimodal", "D&R Net"),
        ("Multimodal", "MCR"),
        ("Multimodal", "MCL"),
        ("Multimodal", "MM-SS (Ours)"),
    ]
    assert list(t.columns) == [(c, m) for c in ["CS&J", "Elec.", "H&K"] for m in ["MAP", "N@3", "N@5"]]


def test_comparison_means_std_and_filters():
    res = make_results()
    t = comparison_table(res, "amazon")
    # MM-SS (index 8 in SYSTEMS), home (ci 0): seeds 0.64, 0.65, 0.66 -> mean 65.0 (ablation row and dev row ignored)
    assert t.loc[("Multimodal", "MM-SS (Ours)"), ("H&K", "MAP")] == "65.0"
    assert t.loc[("Multimodal", "MM-SS (Ours)"), ("H&K", "N@3")] == "55.0"
    # BiMPM clothing (ci 1): 0.401, 0.411, 0.421 -> 41.1
    assert t.loc[("Text-only", "BiMPM"), ("CS&J", "MAP")] == "41.1"
    s = comparison_table(res, "amazon", with_std=True, decimals=2)
    assert s.loc[("Text-only", "BiMPM"), ("CS&J", "N@5")] == "36.10 ± 1.00"  # std of (0, 1, 2) points = 1
    assert list(comparison_table(res, "lazada").columns) == [("H&K", m) for m in ["MAP", "N@3", "N@5"]]
    lz = comparison_table(res, "lazada", categories=["clothing", "home"])
    assert list(lz.index) == [("Multimodal", "MCR")] and lz.iloc[0, 0] == "-"  # no clothing run
    assert lz.loc[("Multimodal", "MCR"), ("H&K", "MAP")] == "90.0"
    with pytest.raises(DataError, match="no test results for dataset 'yelp'"):
        comparison_table(res, "yelp")
    with pytest.raises(DataError, match="missing"):
        comparison_table(res.drop(columns=["NDCG@5"]), "amazon")


def test_comparison_markers_come_from_the_summary():
    """A cell's marker is its summary row's: ∗ / † where p < alpha and the difference to the
    rival is positive / negative; none without a rival or at p >= alpha."""
    from mmss_lib.evaluation.tables import WORSE_MARKER

    res = make_results()
    rows = []
    for (cat, system), _ in res.groupby(["category", "system"]):
        r = {
            "dataset": "amazon",
            "category": cat,
            "system": system,
            "variant": "full",
            "rival": "mcl",
            "n_products": 10,
        }
        for m in ("MAP", "NDCG@3", "NDCG@5"):
            r.update({f"{m}_lo": 1.0, f"{m}_hi": 2.0, f"{m}_diff": 0.0, f"{m}_p": 0.5})
        rows.append(r)
    summ = pd.DataFrame(rows).set_index(["category", "system"])
    summ.loc[("clothing", "mmss"), ["MAP_p", "MAP_diff"]] = [0.001, 1.5]  # better
    summ.loc[("clothing", "mmss"), ["NDCG@3_p", "NDCG@3_diff"]] = [0.02, 1.5]  # p >= 0.01
    summ.loc[("clothing", "mmss"), ["NDCG@5_p", "NDCG@5_diff"]] = [0.001, -2.0]  # worse
    summ.loc[("home", "mmss"), ["MAP_p", "MAP_diff"]] = [0.001, 3.0]
    summ.loc[("home", "mmss"), "rival"] = float("nan")  # no rival (CSV round trip)
    t = comparison_table(res, "amazon", summary=summ.reset_index(), with_interval=False)
    ours = t.loc[("Multimodal", "MM-SS (Ours)")]
    assert ours[("CS&J", "MAP")] == "65.1" + MARKER
    assert not ours[("CS&J", "N@3")].endswith((MARKER, WORSE_MARKER))
    assert ours[("CS&J", "N@5")].endswith(WORSE_MARKER)
    assert not ours[("H&K", "MAP")].endswith(MARKER)
    assert not any(str(v).endswith(MARKER) for v in t.loc[("Multimodal", "MCL")])
    iv = comparison_table(res, "amazon", summary=summ.reset_index())
    assert iv.loc[("Multimodal", "MCL"), ("CS&J", "MAP")].endswith("[1.0, 2.0]")


def make_ablation():
    rows = []
    variants = {"full": 0.70, "wo_ptrt": 0.69, "wo_b": 0.64, "wo_d": 0.68, "extra": 0.5}
    for v, base in variants.items():
        for seed in range(2):
            m = base + (0.01 if seed else -0.01)
            rows.append(
                dict(
                    dataset="lazada",
                    category="clothing",
                    system="mmss",
                    variant=None if v == "full" else v,
                    seed=seed,
                    MAP=m,
                    **{"NDCG@3": m - 0.05, "NDCG@5": m - 0.01},
                )
            )
    rows.append(
        dict(
            dataset="lazada",
            category="clothing",
            system="mcl",
            variant="",
            seed=0,
            MAP=0.99,
            **{"NDCG@3": 0.99, "NDCG@5": 0.99},
        )
    )
    return pd.DataFrame(rows[::-1])  # reversed: order must come from the labels


LABELS = {
    "full": "MM-SS (Ours)",
    "wo_ptrt": "-w/o intra-modal-ptrt",
    "wo_pvrv": "-w/o intra-modal-pvrv",
    "wo_b": "-w/o module(b)",
    "wo_d": "-w/o module(d)",
}


def test_ablation_table_layout_and_deltas():
    t = ablation_table(make_ablation(), "lazada", "clothing", labels=LABELS)
    assert t.index.name == "Model Variant"
    assert list(t.index) == ["MM-SS (Ours)", "-w/o intra-modal-ptrt", "-w/o module(b)", "-w/o module(d)", "extra"]
    assert list(t.columns) == ["MAP", "N@3", "N@5", "ΔMAP", "ΔN@3", "ΔN@5", "MAP std", "N@3 std", "N@5 std", "seeds"]
    assert t.loc["MM-SS (Ours)", "MAP"] == pytest.approx(70.0)
    assert t.loc["-w/o module(b)", "N@3"] == pytest.approx(59.0)
    assert t.loc["-w/o module(b)", "ΔMAP"] == pytest.approx(-6.0)
    assert t.loc["-w/o module(d)", "ΔN@5"] == pytest.approx(-2.0)
    assert (t.loc["MM-SS (Ours)", ["ΔMAP", "ΔN@3", "ΔN@5"]] == 0).all()
    assert t.loc["extra", "MAP std"] == pytest.approx(100 * np.std([0.49, 0.51], ddof=1), abs=0.01)
    assert list(t["seeds"]) == [2] * 5


def test_ablation_table_default_labels_and_errors():
    pytest.importorskip("torch")
    from mmss_lib.models.mmss import ABLATION_LABELS

    t = ablation_table(make_ablation(), "lazada", "clothing")
    assert list(t.index[:4]) == [ABLATION_LABELS[v] for v in ["full", "wo_ptrt", "wo_b", "wo_d"]]
    no_full = make_ablation().dropna(subset=["variant"])
    no_full = no_full[no_full["system"] == "mmss"]
    with pytest.raises(DataError, match="no run of the full model"):
        ablation_table(no_full, "lazada", "clothing", labels=LABELS)
    with pytest.raises(DataError, match="no test results of system"):
        ablation_table(make_ablation(), "lazada", "home", labels=LABELS)


def test_to_markdown_groups_and_escapes():
    t = comparison_table(make_results(), "amazon")
    md = to_markdown(t).splitlines()
    assert md[0].startswith("| Type | Method | CS&J MAP | CS&J N@3 |")
    assert md[1].startswith("| --- | --- | --- |")
    assert len(md) == 2 + 9
    assert md[2].startswith("| Text-only | BiMPM |")
    assert md[3].startswith("|  | EG-CNN |")  # the Type is shown once per group
    assert md[6].startswith("| Multimodal | SSE-Cross |")
    df = pd.DataFrame({"a|b": ["x|y"], "v": [1.23456]})
    out = to_markdown(df, decimals=2)
    assert "a\\|b" in out and "x\\|y" in out and "1.23" in out and "---:" in out


def test_save_table_writes_csv_and_markdown(tmp_path):
    t = ablation_table(make_ablation(), "lazada", "clothing", labels=LABELS)
    csv, md = save_table(t, tmp_path / "tables" / "table4_lazada_clothing", decimals=2)
    assert csv.name == "table4_lazada_clothing.csv" and md.name == "table4_lazada_clothing.md"
    back = pd.read_csv(csv, index_col=0)
    pd.testing.assert_frame_equal(back, t, check_dtype=False)
    text = md.read_text(encoding="utf-8")
    assert text.splitlines()[0] == (
        "| Model Variant | MAP | N@3 | N@5 | ΔMAP | ΔN@3 | ΔN@5 | MAP std | N@3 std | N@5 std | seeds |"
    )
    assert "| -w/o module(b) | 64.00 | 59.00 | 63.00 | -6.00 |" in text
    assert sorted(p.name for p in csv.parent.iterdir()) == [csv.name, md.name]  # no temporary files left
    # the comparison table's MultiIndex round-trips through CSV
    c = comparison_table(make_results(), "amazon")
    csv2, _ = save_table(c, tmp_path / "table2")
    back2 = pd.read_csv(csv2, header=[0, 1], index_col=[0, 1])
    assert back2.loc[("Multimodal", "MM-SS (Ours)"), ("H&K", "MAP")] == pytest.approx(65.0)


# ------------------------------------------------------------------ floors, intervals, markers (issue 10)


def floor_frames(n=80, seeds=2):
    """Per-product AP (= NDCG@3 = NDCG@5) of random < length < bimpm < mmss on n clothing products
    (gaps 0.1, small noise), and the matching results frame (per-seed means)."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0.3, 0.6, n)
    rows = []
    for seed in range(seeds):
        for name, shift in [("random", 0.0), ("length", 0.1), ("bimpm", 0.2), ("mmss", 0.3)]:
            v = base + shift + rng.normal(0, 0.03, n)
            rows.append(
                pd.DataFrame(
                    {
                        "dataset": "demo",
                        "category": "clothing",
                        "system": name,
                        "variant": "full",
                        "seed": seed,
                        "product_id": [f"p{i}" for i in range(n)],
                        "AP": v,
                        "NDCG@3": v,
                        "RR": v,
                        "NDCG@5": v,
                    }
                )
            )
    pp = pd.concat(rows, ignore_index=True)
    res = (
        pp.groupby(["dataset", "category", "system", "seed"], sort=False)[["AP", "NDCG@3", "NDCG@5"]]
        .mean()
        .reset_index()
        .rename(columns={"AP": "MAP"})
    )
    return pp, res


def _cell(text):
    """'65.0∗ [63.1, 66.9]' -> (65.0, '∗', 63.1, 66.9)."""
    head, iv = text.split(" [")
    lo, hi = (float(x) for x in iv.rstrip("]").split(", "))
    mark = head.lstrip("0123456789.-")
    return float(head[: len(head) - len(mark)]), mark, lo, hi


def test_comparison_with_floors_intervals_and_markers():
    from mmss_lib.evaluation.tables import WORSE_MARKER
    from mmss_lib.metrics.ranking import bootstrap_interval

    pp, res = floor_frames()
    t = comparison_table(res, "demo", summary=table_summary(pp))
    assert list(t.index) == [
        ("Floor", "Random"),
        ("Floor", "Length"),
        ("Text-only", "BiMPM"),
        ("Multimodal", "MM-SS (Ours)"),
    ]
    mean, mark, lo, hi = _cell(t.loc[("Multimodal", "MM-SS (Ours)"), ("CS&J", "MAP")])
    seed_avg = pp[pp.system == "mmss"].groupby("product_id", sort=False)["AP"].mean().to_numpy()  # file order
    want = bootstrap_interval(seed_avg, n_boot=2000, level=0.95, seed=0)
    assert (lo, hi) == (round(100 * want[0], 1), round(100 * want[1], 1))
    assert lo < mean < hi and mean == round(100 * seed_avg.mean(), 1)
    assert mark == MARKER  # beats the runner-up BiMPM
    for name in [("Floor", "Random"), ("Floor", "Length"), ("Text-only", "BiMPM")]:
        assert _cell(t.loc[name, ("CS&J", "N@5")])[1] == WORSE_MARKER  # all below MM-SS
    plain = comparison_table(res, "demo", summary=table_summary(pp), with_interval=False)
    assert plain.loc[("Multimodal", "MM-SS (Ours)"), ("CS&J", "MAP")] == f"{mean:.1f}{MARKER}"
    with pytest.raises(DataError, match="summary="):
        comparison_table(res, "demo", with_interval=True)


def test_table_summary_rivals_ties_and_markers():
    """The statistics behind the table (summary.table_summary, the summary CSVs' chain): each
    system against the best other one, the runner-up for the best; ties carry no marker."""
    from mmss_lib.evaluation.tables import WORSE_MARKER, significance_frame

    pp, res = floor_frames()
    summ = table_summary(pp).set_index("system")
    assert summ.loc["mmss", "rival"] == "bimpm"
    assert set(summ.loc[["random", "length", "bimpm"], "rival"]) == {"mmss"}
    pooled = pp.groupby(["system", "product_id"])["AP"].mean()
    want = paired_test(pooled.loc["length"], pooled.loc["mmss"])
    assert summ.loc["length", "MAP_p"] == pytest.approx(want["t_p"])
    assert table_summary(pp, test="wilcoxon").set_index("system").loc["length", "MAP_p"] == pytest.approx(
        want["wilcoxon_p"]
    )
    sf = significance_frame(table_summary(pp)).set_index(["system", "metric"])
    assert sf.loc[("length", "MAP"), "marker"] == WORSE_MARKER and sf.loc[("mmss", "MAP"), "marker"] == MARKER
    # two indistinguishable top systems: no marker on either
    tie = pp.copy()
    top = tie.system == "bimpm"
    tie.loc[top, "AP"] = tie.loc[tie.system == "mmss", "AP"].to_numpy() + np.random.default_rng(5).normal(
        0, 0.03, top.sum()
    )
    s2 = significance_frame(table_summary(tie)).set_index(["system", "metric"])
    assert s2.loc[("mmss", "MAP"), "marker"] == "" and s2.loc[("random", "MAP"), "marker"] == WORSE_MARKER
    # a rival on other products is refused
    bad = pp[~((pp.system == "bimpm") & (pp.product_id == "p0"))]
    with pytest.raises(DataError, match="different products"):
        table_summary(bad)
    # ablation variants are not rivals in a comparison table
    var = pd.concat([pp, pp[pp.system == "mmss"].assign(variant="wo_d", AP=lambda d: d["AP"] + 0.5)])
    assert table_summary(var).set_index("system").loc["mmss", "rival"] == "bimpm"


def test_comparison_note_and_region_weights(tmp_path):
    import json

    pp, _ = floor_frames(n=30)
    d = tmp_path / "demo" / "clothing" / "region_rvw"
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(
        json.dumps(
            {
                "random_weights": True,
                "region_backbone": {"name": "mobilenet_v2", "weights": "torchvision IMAGENET1K_V1 (ImageNet)"},
            }
        )
    )
    note_r = region_weights_note(tmp_path, "demo", ["clothing", "home"])
    assert note_r == (
        "region features: random-weight Faster R-CNN boxes, mobilenet_v2 torchvision IMAGENET1K_V1 (ImageNet) features"
    )
    note = comparison_note(table_summary(pp), dataset="demo", region_note=note_r)
    assert "Test products: CS&J 30" in note and "95% percentile bootstrap" in note and note_r in note
    assert region_weights_note(tmp_path, "demo", ["home"]) == ""
    g = tmp_path / "demo" / "home" / "region_rvw"
    g.mkdir(parents=True)
    (g / "manifest.json").write_text(
        json.dumps(
            {
                "random_weights": False,
                "selection": {"box": "grid", "levels": [1, 2]},
                "region_backbone": {"name": "mobilenet_v2", "weights": "W"},
            }
        )
    )
    assert (
        region_weights_note(tmp_path, "demo", ["home"])
        == "region features: grid boxes (1x1 + 2x2 per image), mobilenet_v2 W features"
    )
    stem = tmp_path / "t"
    save_table(pd.DataFrame({"a": [1]}), stem, note=note)
    assert (tmp_path / "t.md").read_text().rstrip().endswith(note)


def test_per_run_per_product_reads_runs_and_significance_frame(tmp_path):
    from mmss_lib.evaluation.summary import per_run_per_product
    from mmss_lib.evaluation.tables import significance_frame

    rows = []
    for system, scores in [("random", [0.1, 0.2, 0.3]), ("length", [3.0, 2.0, 1.0])]:
        rd = tmp_path / system
        rd.mkdir()
        pd.DataFrame(
            {"review_id": ["a", "b", "c"], "product_id": ["p", "p", "p"], "label": [4, 0, 2], "score": scores}
        ).to_csv(rd / "scores_test.csv", index=False)
        (rd / "metrics.json").write_text('{"threshold": 1}')
        (rd / "config.json").write_text(json.dumps({"config": {"system": system}}))
        rows.append(dict(dataset="demo", category="home", system=system, variant="full", seed=0, run_dir=str(rd)))
    pp = per_run_per_product(pd.DataFrame(rows))
    ap = dict(zip(pp["system"], pp["AP"], strict=True))
    assert ap["length"] == pytest.approx((1 + 2 / 3) / 2)  # ranked labels 4, 0, 2
    assert ap["random"] == pytest.approx((1 / 3) * (11 / 6 + 1 / 2 * (3 - 11 / 6)))  # exact expectation, n=3, R=2
    pf, res = floor_frames(n=20)
    sf = significance_frame(table_summary(pf), dataset="demo")
    assert len(sf) == 4 * 3 and set(sf["marker"]) <= {MARKER, "†", ""}
    assert sf[(sf.system == "random") & (sf.metric == "MAP")]["rival"].item() == "mmss"
