"""`mmss bench paper-scale`: the projection arithmetic on known numbers, the run list of the paper
profile, and a cut-down tiny CPU run (two systems, one dataset) whose last line parses; the paper
profile's projected disk with the bytes measured there stays within 64 GB."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmss_lib.bench import paper_scale as ps

LINE = re.compile(
    r"^paper profile projection: disk ([0-9.]+) GB, extraction ([0-9.]+) h, "
    r"training ([0-9.]+) GPU-h on (.+)$"
)
REPO = Path(__file__).resolve().parents[1]


def test_paper_profile_run_list():
    runs = ps.paper_runs(REPO / "notebooks" / "params" / "paper.yaml")
    # Tables 1-2: 2 datasets x 3 categories x 9 systems x 5 seeds; Table 4: 2 x 1 x 7 variants x 5 seeds
    assert len(runs) == 2 * 3 * 9 * 5 + 2 * 7 * 5
    assert {r["text_mode"] for r in runs} == {"frozen"}
    assert sum(r["ssp_records"] for r in runs) == sum(r["seed"] == 0 for r in runs)
    ext = ps.profile_extraction(REPO / "notebooks" / "params" / "paper.yaml")
    assert ext["extract_text"] is False and ext["max_boxes"] == 10


def test_projection_arithmetic_known_values():
    """One run of one system on Lazada home: every term by hand."""
    runs = [
        {
            "dataset": "lazada",
            "category": "home",
            "system": "egcnn",
            "variant": "full",
            "seed": 0,
            "epochs": 2,
            "text_mode": "frozen",
            "ssp_records": True,
        }
    ]
    sysm = {
        "egcnn": {
            "train_s_per_sample": 0.01,
            "eval_s_per_review": 0.002,
            "ckpt_bytes_per_param": 16.0,
            "ssp_bytes_per_review_epoch": 0.0,
            "score_bytes_per_review": 50.0,
        }
    }
    ext = {"extract_text": False, "max_boxes": 10, "text_max_len": 512}
    p = ps.project(
        runs,
        sysm,
        ext=ext,
        enc_forward_tokens_s=1000.0,
        enc_train_tokens_s=300.0,
        text_tokens_s=1000.0,
        region_images_s=2.0,
        u=3.0,
        p_share=0.1,
        review_tokens=100.0,
        product_tokens=200.0,
        product_images=2.0,
        review_image_share=0.5,
        review_images=2.0,
        data_bytes_per_review=1000.0,
        echo=lambda *a: None,
    )
    n_tr, n_ev, p_ev = 37014, 9615 + 12552, 736 + 920
    # extraction covers every category of the dataset (notebook 01), Table 3's Lazada sizes
    prods = 6598 + 1650 + 2063 + 3849 + 963 + 1204 + 2941 + 736 + 920
    revs = 104121 + 26185 + 32287 + 41862 + 10569 + 12667 + 37014 + 9615 + 12552
    images = prods * 2.0 + revs * 0.5 * 2.0
    assert p["images"] == pytest.approx(images)
    assert p["region_gb"] == pytest.approx(images * 10 * (4096 + 20) / 1e9)
    assert p["extraction_h"] == pytest.approx(images / 2.0 / 3600)
    eval_tokens = n_ev * 100 + (p_ev + n_ev / 64) * 200
    epoch = 3 * n_tr * 0.01 + n_ev * 0.002 + 3 * n_tr * (100 + 0.1 * 200) / 1000 + eval_tokens / 1000
    final = n_ev * 0.002 + eval_tokens / 1000
    assert p["training_gpu_h"] == pytest.approx((2 * epoch + final) / 3600)
    from mmss_lib.models.registry import build_system

    params = sum(q.numel() for q in build_system("egcnn", text_dim=768, region_dim=2048).parameters())
    assert p["run_parts_gb"]["checkpoints"] == pytest.approx(params * 16 / 1e9)
    assert p["run_parts_gb"]["scores"] == pytest.approx(n_ev * 50 / 1e9)
    assert p["disk_gb"] == pytest.approx(p["region_gb"] + revs * 1000 / 1e9 + sum(p["run_parts_gb"].values()))
    # finetuned runs add BERT-base to every checkpoint and train the encoder at its own rate
    q = ps.project(
        [dict(runs[0], text_mode="finetune")],
        sysm,
        ext=ext,
        enc_forward_tokens_s=1000.0,
        enc_train_tokens_s=300.0,
        text_tokens_s=1000.0,
        region_images_s=2.0,
        u=3.0,
        p_share=0.1,
        review_tokens=100.0,
        product_tokens=200.0,
        product_images=2.0,
        review_image_share=0.5,
        review_images=2.0,
        data_bytes_per_review=1000.0,
        echo=lambda *a: None,
    )
    assert q["run_parts_gb"]["checkpoints"] - p["run_parts_gb"]["checkpoints"] == pytest.approx(110e6 * 16 / 1e9)
    assert q["training_gpu_h"] > p["training_gpu_h"]


@pytest.mark.slow
def test_tiny_cpu_run_cut_down(tmp_path):
    """The whole measuring path on CPU with a cut-down profile (two systems, one dataset, one seed)."""
    profile = tmp_path / "cut.yaml"
    profile.write_text(
        "sweep:\n  - {dataset: lazada, train_options: {text_mode: frozen, text_model: x, ssp_record_seeds: [0]}}\n"
        "01_extract_features: {extract_text: false, detector_max_boxes: 10}\n"
        "02_train: {categories: [home], systems: [egcnn, mmss], seeds: [0], epochs: 2}\n"
        "03_ablation: {categories: [home], seeds: [0], variants: [full, wo_d]}\n",
        encoding="utf-8",
    )
    lines: list[str] = []
    out = ps.run_paper_scale(
        tiny=True, device="cpu", products=5, profile=str(profile), region_images=1, tmp=str(tmp_path), echo=lines.append
    )
    m = LINE.match(lines[-1])
    assert m, lines[-1]
    disk, ext_h, gpu_h = (float(m.group(i)) for i in (1, 2, 3))
    assert m.group(4).startswith("cpu")
    assert disk == pytest.approx(out["projection"]["disk_gb"], abs=0.06)
    assert ext_h > 0 and gpu_h > 0
    assert any("NOT BERT-base throughput" in ln for ln in lines)
    assert not list(tmp_path.glob("mmss-paper-scale-*"))  # scratch removed
    # the paper profile's disk with the bytes measured here: MM-SS's for MM-SS, EG-CNN's for every
    # baseline (checkpoint bytes per parameter are torch.save's; baselines write no SSP records)
    assert (
        out["systems"]["egcnn"]["ssp_bytes_per_review_epoch"]
        == 0
        < out["systems"]["mmss"]["ssp_bytes_per_review_epoch"]
    )
    sysm = {
        s: dict(out["systems"]["mmss" if s == "mmss" else "egcnn"])
        for s in ("bimpm", "egcnn", "convknrm", "prhnet", "ssecross", "drnet", "mcr", "mcl", "mmss")
    }
    paper = REPO / "notebooks" / "params" / "paper.yaml"
    p = ps.project(
        ps.paper_runs(paper),
        sysm,
        ext=ps.profile_extraction(paper),
        enc_forward_tokens_s=1.0,
        enc_train_tokens_s=1.0,
        text_tokens_s=1.0,
        region_images_s=1.0,
        u=3.0,
        p_share=0.1,
        review_tokens=120.0,
        product_tokens=256.0,
        product_images=4.0,
        review_image_share=0.25,
        review_images=1.5,
        data_bytes_per_review=out["data_bytes_per_review"],
        echo=lambda *a: None,
    )
    assert p["disk_gb"] <= ps.DISK_BUDGET_GB
