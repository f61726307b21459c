"""``mmss bench paper-scale``: throughput measured on one device, and a projection of the whole
``paper`` profile (disk, extraction hours, training GPU-hours) from those measurements.

What is measured, on ``--device``, on synthetic MRHP data written by :func:`mmss_lib.data.synthetic.make_demo`
(one category, ``--products`` products, PNG images):

1. text extraction: :class:`~mmss_lib.features.text.TextEncoder` over every product and review
   text into the text stores (texts/s);
2. region extraction: the Faster R-CNN :class:`~mmss_lib.features.regions.RegionExtractor`
   (random weights: the speed of a network does not depend on its weights) over every image
   into the region stores (images/s);
3. the text encoder's cost on the fly: forward (``frozen``) and forward + backward + Adam
   (``finetune``) tokens/s on batches of 16 texts x 128 tokens (bf16 autocast on CUDA);
4. per system of the profile: one training epoch and one evaluation of dev + test with
   :func:`mmss_lib.training.trainer.fit` on cached features: training samples forwarded per second,
   seconds per epoch, evaluation reviews/s, peak GPU memory (CUDA) or peak RSS (CPU);
5. the bytes a run folder holds: checkpoints per model parameter, score files per evaluated
   review, SSP-Label records per training review and epoch.

Projection. The run list is read from ``notebooks/params/paper.yaml``: every dataset of its sweep,
every category x system x seed of notebook 02 (Tables 1, 2), every ablation variant x seed of
notebook 03 (Table 4; the ``full`` variant is notebook 02's run), the case study (Figure 4) reuses
them; ``epochs`` as configured (the maximum: early stopping only shortens runs). Sizes are
Table 3's. Per run and epoch: training samples = train reviews x the measured samples forwarded
per training review (pairs of 32 drawn as the trainer draws them, each batch's distinct samples
once); time = samples x the system's measured seconds per sample + (dev + test) reviews x its
evaluation seconds per review + the text encoder on the fly: review tokens for every sample and
product tokens for every distinct product of a batch, at the forward rate (frozen, evaluation)
or the forward + backward rate (finetune). Token counts per text are assumptions
(``--review-tokens``, ``--product-tokens``), as are the images per item (``--product-images``,
``--review-image-share``, ``--review-images``): the released MRHP files hold no images, so these
cannot be measured here; all are printed.

Model cost under ``--tiny`` (minutes on 2 CPU cores): the text extraction is timed with a tiny
random BERT (hidden 32, 2 layers) and scaled to BERT-base by the FLOP ratio per token (2 x the
encoder layers' weights + the attention products at the measured length); tiny-model throughput
is not BERT-base throughput, and a model that small runs far below the device's peak, so that
scaled figure is printed for comparison only. The numbers the projection uses are measured on
the real shapes, just on little data: the on-the-fly encoder is a BERT-base-shaped random
initialisation (the FLOPs and kernels of bert-base-uncased; weights do not change speed) on a
batch of 2 x 128 tokens (full run: 32 x 128; a small batch under-uses a GPU, so this rate is
pessimistic), the detector runs at its default size on 2 images (full run: 64), and the systems
train on texts of 16 + 32 tokens with their time per sample scaled by the token ratio to the
assumed lengths (linear in tokens: exact for the recurrent and convolutional systems, a lower
bound for attention). A projection is only as good as the device it was measured on: run it on
the GPU the paper profile will use; ``--tiny --device cpu`` checks the machinery.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

# Table 3 of the paper: (products, reviews) per split.
TABLE3 = {
    "lazada": {
        "clothing": {"train": (6598, 104121), "dev": (1650, 26185), "test": (2063, 32287)},
        "electronics": {"train": (3849, 41862), "dev": (963, 10569), "test": (1204, 12667)},
        "home": {"train": (2941, 37014), "dev": (736, 9615), "test": (920, 12552)},
    },
    "amazon": {
        "clothing": {"train": (12701, 277322), "dev": (3203, 71458), "test": (3966, 87492)},
        "electronics": {"train": (10533, 259953), "dev": (2672, 64956), "test": (3327, 79570)},
        "home": {"train": (14570, 369518), "dev": (3616, 92707), "test": (4529, 111193)},
    },
}
DISK_BUDGET_GB = 64.0
BERT_BASE = {"hidden": 768, "layers": 12, "intermediate": 3072}
TINY_BERT = {"hidden": 32, "layers": 2, "heads": 4, "intermediate": 64}
REGION_ROW_BYTES_EXTRA = 4 * 4 + 4  # float32 box + int32 image index per stored region


def encoder_flops_per_token(hidden: int, layers: int, intermediate: int, length: int) -> float:
    """Forward FLOPs per token of a BERT encoder: 2 x (4 h^2 attention projections + 2 h i
    feed-forward) per layer + the attention products (QK^T and AV: 2 x 2 x L x h) per layer."""
    return float(layers * (2 * (4 * hidden * hidden + 2 * hidden * intermediate) + 4 * length * hidden))


# ------------------------------------------------------------------------------------ helpers


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device) -> tuple[str, float]:
    """Peak GPU memory since the last reset (CUDA), else this process's peak RSS, in MB."""
    import torch

    if device.type == "cuda":
        return "peak GPU memory", torch.cuda.max_memory_allocated(device) / 2**20
    from mmss_lib.bench.common import max_rss_mib

    return "peak RSS", max_rss_mib()


def make_bert(folder: Path, words: list[str], *, base: bool) -> Path:
    """A random-init BERT with a word-piece vocabulary of ``words``: tiny (``TINY_BERT``) or
    BERT-base-shaped (``transformers.BertConfig()`` defaults but the vocabulary)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars] + words
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    if base:
        cfg = BertConfig(vocab_size=tok.vocab_size)
    else:
        t = TINY_BERT
        cfg = BertConfig(
            vocab_size=tok.vocab_size,
            hidden_size=t["hidden"],
            num_hidden_layers=t["layers"],
            num_attention_heads=t["heads"],
            intermediate_size=t["intermediate"],
            max_position_embeddings=512,
        )
    BertModel(cfg).save_pretrained(folder)
    return folder


def encoder_rates(model_dir: Path | None, device, *, length: int = 128, batch: int = 16, steps: int = 3) -> dict:
    """Forward and forward+backward+Adam tokens/s of the encoder on ``batch`` x ``length`` random ids."""
    import torch
    from transformers import AutoModel

    if model_dir is None:  # BERT-base-shaped random init, in memory
        from transformers import BertConfig, BertModel

        torch.manual_seed(0)
        model = BertModel(BertConfig()).to(device)
    else:
        model = AutoModel.from_pretrained(model_dir).to(device)
    vocab = int(model.config.vocab_size)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (batch, length), generator=gen).to(device)
    mask = torch.ones_like(ids)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    out = {}
    model.eval()
    with torch.no_grad(), amp:
        model(input_ids=ids, attention_mask=mask)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            model(input_ids=ids, attention_mask=mask)
        _sync(device)
    out["forward_tokens_s"] = steps * batch * length / (time.perf_counter() - t0)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=5e-5)

    def step():
        with amp:
            loss = model(input_ids=ids, attention_mask=mask).last_hidden_state.float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    out["train_tokens_s"] = steps * batch * length / (time.perf_counter() - t0)
    out["length"] = length
    out["params"] = sum(p.numel() for p in model.parameters())
    cfg = model.config
    out["flops_per_token"] = encoder_flops_per_token(
        cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, length
    )
    return out


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def samples_per_train_review(train, cfg) -> tuple[float, float]:
    """(distinct samples forwarded per training review per epoch, distinct products per forwarded
    sample), from the epoch-1 pairs the trainer draws (batches of ``cfg.batch_size`` pairs)."""
    from mmss_lib.training.trainer import draw_pairs

    pairs = draw_pairs(train, cfg, 1)
    samples = products = 0
    for b in range(0, len(pairs), cfg.batch_size):
        u = np.unique(pairs[b : b + cfg.batch_size])
        samples += len(u)
        products += len(np.unique(train.product_codes[u]))
    return samples / max(train.n, 1), products / max(samples, 1)


# ------------------------------------------------------------------------------------ runs


def paper_runs(profile_path: Path) -> list[dict]:
    """Every training run of the profile: dataset, category, system, variant, seed, epochs,
    text mode (the trainer's effective one for that system)."""
    from mmss_lib.models.registry import SYSTEMS, is_floor
    from mmss_lib.reproduce import read_profile
    from mmss_lib.training.config import TrainConfig

    raw = read_profile(profile_path)
    sweep = raw.get("sweep") or [{}]
    if isinstance(sweep, dict):
        sweep = [{k: v} for k, vals in sweep.items() for v in vals]
    runs = []
    for point in sweep:
        common = {**(raw.get("common") or {}), **point}
        nb2 = {**{k: v for k, v in common.items()}, **(raw.get("02_train") or {})}
        nb3 = {**{k: v for k, v in common.items()}, **(raw.get("03_ablation") or {})}
        dataset = str(common.get("dataset"))
        if dataset not in TABLE3:
            raise ValueError(f"{profile_path}: dataset {dataset!r} has no Table 3 sizes")
        opts = dict(nb2.get("train_options") or {})
        base = TrainConfig(
            epochs=int(nb2.get("epochs", 30)),
            **{k: v for k, v in opts.items() if k in TrainConfig.__dataclass_fields__},
        )
        for category in nb2.get("categories", []):
            for system in nb2.get("systems", []):
                if system in SYSTEMS and is_floor(system):
                    continue  # floors do not train
                for seed in nb2.get("seeds", [0]):
                    c = replace(base, system=system)
                    runs.append(
                        {
                            "dataset": dataset,
                            "category": category,
                            "system": system,
                            "variant": "full",
                            "seed": seed,
                            "epochs": c.epochs,
                            "text_mode": c.effective_text_mode,
                            "ssp_records": _writes_ssp(c, seed),
                        }
                    )
        for category in nb3.get("categories", []):
            for variant in nb3.get("variants", []):
                if variant == "full":
                    continue  # notebook 02's MM-SS run
                for seed in nb3.get("seeds", [0]):
                    c = replace(base, system="mmss")
                    runs.append(
                        {
                            "dataset": dataset,
                            "category": category,
                            "system": "mmss",
                            "variant": variant,
                            "seed": seed,
                            "epochs": c.epochs,
                            "text_mode": c.effective_text_mode,
                            "ssp_records": _writes_ssp(c, seed),
                        }
                    )
    return runs


def _writes_ssp(cfg, seed) -> bool:
    return cfg.ssp_record_seeds is None or int(seed) in [int(x) for x in cfg.ssp_record_seeds]


def profile_extraction(profile_path: Path) -> dict:
    """Notebook 01's settings of the profile: whether text stores are written, boxes per image."""
    from mmss_lib.reproduce import read_profile

    raw = read_profile(profile_path)
    nb1 = raw.get("01_extract_features") or {}
    return {
        "extract_text": bool(nb1.get("extract_text", True)),
        "max_boxes": int(nb1.get("detector_max_boxes", 100)),
        "rpn_post_nms_top_n": int(nb1.get("rpn_post_nms_top_n", 300)),
        "text_max_len": int(nb1.get("text_max_len", 512)),
    }


# ------------------------------------------------------------------------------------ main


def build_parser(prog: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Measure text/region extraction and per-system training throughput on DEVICE on synthetic "
            "MRHP data, and project the whole paper profile (Tables 1, 2, 4, Figure 4) at Table 3's sizes: "
            "disk, extraction hours, training GPU-hours. See the module docstring for the cost model."
        ),
    )
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="tiny random models (minutes on 2 CPU cores); model cost scaled by FLOP / pixel ratio",
    )
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--products", type=int, default=None, help="synthetic products (default: 10 tiny, 200 full)")
    ap.add_argument("--profile", default=None, help="profile YAML (default notebooks/params/paper.yaml)")
    ap.add_argument("--systems", nargs="*", default=None, help="systems to time (default: the profile's)")
    ap.add_argument(
        "--review-tokens",
        type=float,
        default=120.0,
        help="mean word pieces per review text (assumption; Amazon-MRHP keeps reviews of >= 64 characters)",
    )
    ap.add_argument(
        "--product-tokens",
        type=float,
        default=256.0,
        help="mean word pieces per product text, name + description, capped at 512 (assumption)",
    )
    ap.add_argument("--product-images", type=float, default=4.0, help="mean images per product (assumption)")
    ap.add_argument("--review-image-share", type=float, default=0.25, help="share of reviews with images (assumption)")
    ap.add_argument(
        "--review-images", type=float, default=1.5, help="mean images per review that has images (assumption)"
    )
    ap.add_argument(
        "--region-images",
        type=int,
        default=None,
        help="images timed through the detector at its real size (default: 2 tiny, 64 full)",
    )
    ap.add_argument("--tmp", default=None, help="scratch folder (default: a temp dir)")
    return ap


def _say(line: str) -> None:
    """Print one result line now (``[tag] message`` lines through the shared report helper)."""
    from mmss_lib.bench.common import report

    if line.startswith("[") and "] " in line:
        tag, message = line[1:].split("] ", 1)
        report(tag, message)
    else:
        print(line, flush=True)


def bench_paper_scale(argv: list[str], prog: str = "mmss bench paper-scale") -> int:
    """Paper scale: measured extraction/training throughput and the paper profile's disk and GPU-hours."""
    args = build_parser(prog).parse_args(argv)
    result = run_paper_scale(**vars(args), echo=_say)
    return 0 if result else 1


def _time_text_extraction(bert_dir: Path, prds, rvws, ext: dict, dev, tiny: bool, echo) -> dict:
    """Time the text extraction of every demo text: texts/s, and BERT-base tokens/s (under --tiny
    a tiny encoder's rate scaled by the FLOP ratio per token)."""
    from mmss_lib.features.text import TextEncoder

    words = sorted({w for t in list(prds["text"]) + list(rvws["text"]) for w in str(t).lower().split() if w.isalpha()})[
        :4000
    ]
    bert_dir = make_bert(bert_dir, words, base=not tiny)
    encoder = TextEncoder(str(bert_dir), max_len=ext["text_max_len"], device=str(dev))
    texts = list(prds["text"].astype(str)) + list(rvws["text"].astype(str))
    encoder.encode(texts[:8])  # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    feats = encoder.encode(texts, batch_size=64)
    _sync(dev)
    text_s = time.perf_counter() - t0
    n_tok = int(sum(len(f) for f in feats))
    cfg_e = encoder.model.config
    ext_fpt = encoder_flops_per_token(
        cfg_e.hidden_size, cfg_e.num_hidden_layers, cfg_e.intermediate_size, max(n_tok // max(len(texts), 1), 1)
    )
    base_fpt_ext = encoder_flops_per_token(
        BERT_BASE["hidden"], BERT_BASE["layers"], BERT_BASE["intermediate"], max(n_tok // max(len(texts), 1), 1)
    )
    ext_ratio = base_fpt_ext / ext_fpt
    tok_s = n_tok / text_s / ext_ratio  # BERT-base tokens/s (scaled if tiny)
    echo(
        f"[extract] text: {len(texts)} texts ({n_tok} tokens) in {text_s:.2f} s = {len(texts) / text_s:.1f} "
        f"texts/s with the {'tiny' if tiny else 'BERT-base-shaped'} encoder"
        + (
            f"; FLOP ratio BERT-base / tiny {ext_ratio:.0f}x per token -> {tok_s:.1f} BERT-base tokens/s "
            "(scaled; the projection uses the measured BERT-base-shaped rate below)"
            if tiny
            else f" = {tok_s:.0f} tokens/s"
        )
    )
    return {"texts_s": len(texts) / text_s, "base_tokens_s": tok_s, "flop_ratio": ext_ratio}


def _time_region_extraction(prds, rvws, n_images: int, ext: dict, dev, echo) -> float:
    """Images/s of the detector at its real size with the profile's settings, over ``n_images`` demo images."""
    from mmss_lib.features.regions import make_region_extractor

    files = [f for v in list(prds["image_files"]) + list(rvws["image_files"]) for f in (v or [])][:n_images]
    extractor = make_region_extractor(
        None,
        allow_random_weights=True,
        device=str(dev),
        max_boxes=ext["max_boxes"],
        min_boxes=min(10, ext["max_boxes"]),
        rpn_post_nms_top_n=ext["rpn_post_nms_top_n"],
    )
    extractor.extract_items([files[:1]], ["warm"], batch_size=1)
    _sync(dev)
    t0 = time.perf_counter()
    got = extractor.extract_items([[f] for f in files], [f"i{k}" for k in range(len(files))], batch_size=8)
    _sync(dev)
    region_s = time.perf_counter() - t0
    kept = sum(len(g["x"]) for g in got)
    echo(
        f"[extract] regions: {len(files)} images at the detector's default size (min 800, max 1333) in "
        f"{region_s:.2f} s = {len(files) / region_s:.3f} images/s, {kept / max(len(files), 1):.1f} regions "
        f"per image kept (cap {ext['max_boxes']}; random weights, rpn_post_nms_top_n "
        f"{ext['rpn_post_nms_top_n']})"
    )
    return len(files) / region_s


def _time_encoder(dev, tiny: bool, echo) -> dict:
    """The on-the-fly encoder's rates, BERT-base-shaped (:func:`encoder_rates`; a batch of 2 under --tiny, else 32)."""
    batch = 2 if tiny else 32
    rates = encoder_rates(None, dev, batch=batch, steps=1 if tiny else 5)
    echo(
        f"[encoder] BERT-base-shaped ({rates['params'] / 1e6:.0f} M parameters), {batch} x 128 tokens: "
        f"forward {rates['forward_tokens_s']:.0f} tokens/s, forward+backward+Adam "
        f"{rates['train_tokens_s']:.0f} tokens/s"
        + (" (a batch this small under-uses the device: a pessimistic rate)" if tiny else "")
    )
    return rates


def _synthetic_splits(
    data_root: Path,
    feats_root: Path,
    prds,
    rvws,
    *,
    ext: dict,
    review_tokens: int,
    product_tokens: int,
    product_images: float,
    review_image_share: float,
    review_images: float,
) -> dict:
    """Write synthetic stores of the demo items (:func:`write_synthetic_stores`) and open the three
    splits on them."""
    from mmss_lib.features.loader import MRHPSplitData, ReadCaps

    write_synthetic_stores(
        feats_root / "demo" / "home",
        prds,
        rvws,
        review_tokens=review_tokens,
        product_tokens=product_tokens,
        product_images=product_images,
        review_image_share=review_image_share,
        review_images=review_images,
        regions=ext["max_boxes"],
    )
    caps = ReadCaps(ext["text_max_len"], 32, 128)
    return MRHPSplitData.from_disk(data_root, "demo", "home", feats_root, caps=caps)


def _time_system(cfg, splits: dict, run_dir: Path, dev, *, u: float, token_scale: float, echo) -> dict:
    """One epoch of one system with :func:`mmss_lib.training.trainer.fit`: its time per sample and per evaluated
    review (scaled by ``token_scale``), memory, and the bytes of its run folder."""
    import torch

    from mmss_lib.training.run_folder import BEST, LAST, load_history, scores_path
    from mmss_lib.training.trainer import fit

    n_eval = splits["dev"].n + splits["test"].n
    _peak_reset(dev)
    torch.manual_seed(0)
    fit(cfg, splits, run_dir, threshold=1.0, progress=False, run_info={"dataset": "demo", "category": "home"})
    hist = load_history(run_dir)[0]
    samples = u * splits["train"].n
    eval_s = max(hist["seconds"] - hist["train_seconds"], 1e-9)
    mem_name, mem = _peak_mb(dev)
    ck = torch.load(run_dir / BEST, map_location="cpu", weights_only=True)
    params = sum(v.numel() for v in ck["model"].values())
    ck_bytes = (run_dir / BEST).stat().st_size + (run_dir / LAST).stat().st_size
    ssp = _ssp_bytes_per_review(run_dir, splits["train"].n)
    scores = sum(scores_path(run_dir, s).stat().st_size for s in ("dev", "test"))
    echo(
        f"[train] {cfg.system}: {samples / hist['train_seconds']:.1f} training samples/s, {hist['seconds']:.2f} s "
        f"per epoch (train + dev/test evaluation), evaluation {n_eval / eval_s:.1f} reviews/s, "
        f"{mem_name} {mem:.0f} MB"
    )
    return {
        "train_s_per_sample": hist["train_seconds"] / samples * token_scale,
        "eval_s_per_review": eval_s / n_eval * token_scale,
        "sec_per_epoch": hist["seconds"],
        "reviews_s": samples / hist["train_seconds"],
        "peak_mb": mem,
        "params": params,
        "ckpt_bytes_per_param": ck_bytes / max(params, 1),
        "ssp_bytes_per_review_epoch": ssp,
        "score_bytes_per_review": scores / n_eval,
    }


def _time_systems(
    names: list[str],
    data_root: Path,
    feats_root: Path,
    runs_root: Path,
    prds,
    rvws,
    dev,
    *,
    tiny: bool,
    ext: dict,
    review_tokens: float,
    product_tokens: float,
    product_images: float,
    review_image_share: float,
    review_images: float,
    echo,
) -> tuple[dict, float, float]:
    """Per system, one epoch on synthetic stores at the paper's sizes (--tiny: short texts);
    returns (per-system measurements, samples per training review, products per sample)."""
    from mmss_lib.training.config import TrainConfig

    full_rt, full_pt = int(review_tokens), int(min(product_tokens, ext["text_max_len"]))
    syn_rt, syn_pt = (16, 32) if tiny else (full_rt, full_pt)
    token_scale = (full_rt + full_pt) / (syn_rt + syn_pt)  # every sample carries its product text
    splits = _synthetic_splits(
        data_root,
        feats_root,
        prds,
        rvws,
        ext=ext,
        review_tokens=syn_rt,
        product_tokens=syn_pt,
        product_images=product_images,
        review_image_share=review_image_share,
        review_images=review_images,
    )
    cfg0 = TrainConfig(device=str(dev), epochs=1, patience=1)
    u, p_share = samples_per_train_review(splits["train"], cfg0)
    echo(
        f"[train] synthetic stores: 768-d text features of {syn_rt} / {syn_pt} tokens per review / product, "
        f"regions as assumed below; {splits['train'].n} train / {splits['dev'].n} dev / {splits['test'].n} "
        f"test reviews; {u:.2f} samples forwarded per training review per epoch, {p_share:.2f} distinct "
        f"products per sample"
    )
    if tiny:
        echo(
            f"[train] --tiny: texts of {syn_rt} + {syn_pt} tokens instead of {full_rt} + {full_pt}; the "
            f"systems' time per sample is scaled by the token ratio {token_scale:.2f}x (linear in tokens: "
            f"exact for the recurrent and convolutional systems, a lower bound for attention)"
        )
    per_system = {
        name: _time_system(
            replace(cfg0, system=name), splits, runs_root / name, dev, u=u, token_scale=token_scale, echo=echo
        )
        for name in names
    }
    return per_system, u, p_share


def _finetune_alternative(runs: list[dict], per_system: dict, project_kw: dict, echo) -> dict | None:
    """The projection with MM-SS's frozen runs finetuning the text encoder (the other reading of
    App. A.2); None when no run is frozen."""
    if not any(r["text_mode"] == "frozen" for r in runs):
        return None
    alt_runs = [
        dict(r, text_mode="finetune") if r["system"] == "mmss" and r["text_mode"] == "frozen" else r for r in runs
    ]
    alt = project(alt_runs, per_system, **project_kw, echo=lambda *a: None)
    echo(
        f"[projection] alternative, MM-SS runs with text_mode finetune (BERT trained, kept in every "
        f"MM-SS checkpoint): disk {alt['disk_gb']:.1f} GB, training {alt['training_gpu_h']:.1f} GPU-h"
    )
    return alt


def run_paper_scale(
    *,
    tiny: bool = False,
    device: str = "auto",
    products: int | None = None,
    profile: str | None = None,
    systems: list[str] | None = None,
    review_tokens: float = 120.0,
    product_tokens: float = 256.0,
    product_images: float = 4.0,
    review_image_share: float = 0.25,
    review_images: float = 1.5,
    region_images: int | None = None,
    tmp: str | None = None,
    echo=print,
) -> dict:
    """Measure and project (see the module docstring); prints as it goes and returns the numbers."""
    import torch

    from mmss_lib.data.synthetic import make_demo
    from mmss_lib.features.extract import load_category_items
    from mmss_lib.utils import pick_device, repo_root

    dev = pick_device(device)
    dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    profile_path = Path(profile) if profile else repo_root() / "notebooks" / "params" / "paper.yaml"
    runs = paper_runs(profile_path)
    ext = profile_extraction(profile_path)
    names = systems or sorted({r["system"] for r in runs}, key=lambda s: (s == "mmss", s))
    n_products = products or (6 if tiny else 200)
    echo(
        f"[setup] device {dev_name}; {'tiny' if tiny else 'full-size'} run; profile {profile_path} "
        f"({len(runs)} training runs); synthetic data: {n_products} demo products"
    )
    if tiny:
        echo(
            "[setup] --tiny: a tiny random BERT (hidden 32, 2 layers) does the text extraction; tiny-model "
            "throughput is NOT BERT-base throughput: it is scaled to BERT-base by the FLOP ratio per token. "
            "The on-the-fly encoder cost the projection uses is measured with a BERT-base-shaped random "
            "encoder on a small batch, and the detector at its real size on a few images"
        )
    out: dict[str, Any] = {"device": dev_name, "tiny": tiny}
    scratch = Path(tempfile.mkdtemp(prefix="mmss-paper-scale-", dir=tmp))
    try:
        data_root, feats_root, runs_root = scratch / "data", scratch / "features", scratch / "runs"
        make_demo(data_root, n_products=n_products, categories=["home"], images=True)
        prds, rvws = load_category_items(data_root, "demo", "home")
        # the measurements 1-5 of the module docstring
        out["text_extraction"] = _time_text_extraction(scratch / "bert", prds, rvws, ext, dev, tiny, echo)
        n_images = region_images or (2 if tiny else 64)
        out["region_extraction_images_s"] = _time_region_extraction(prds, rvws, n_images, ext, dev, echo)
        out["encoder"] = rates = _time_encoder(dev, tiny, echo)
        out["systems"], u, p_share = _time_systems(
            names,
            data_root,
            feats_root,
            runs_root,
            prds,
            rvws,
            dev,
            tiny=tiny,
            ext=ext,
            review_tokens=review_tokens,
            product_tokens=product_tokens,
            product_images=product_images,
            review_image_share=review_image_share,
            review_images=review_images,
            echo=echo,
        )
        # the projection
        out["data_bytes_per_review"] = _json_bytes_per_review(data_root, len(rvws))
        kw = dict(
            ext=ext,
            enc_forward_tokens_s=rates["forward_tokens_s"],
            enc_train_tokens_s=rates["train_tokens_s"],
            text_tokens_s=rates["forward_tokens_s"],
            region_images_s=out["region_extraction_images_s"],
            u=u,
            p_share=p_share,
            review_tokens=review_tokens,
            product_tokens=product_tokens,
            product_images=product_images,
            review_image_share=review_image_share,
            review_images=review_images,
            data_bytes_per_review=out["data_bytes_per_review"],
        )
        out["projection"] = proj = project(runs, out["systems"], **kw, echo=echo)
        alt = _finetune_alternative(runs, out["systems"], kw, echo)
        if alt is not None:
            out["projection_finetune_mmss"] = alt
        echo(
            "[projection] unverified estimate: GPU time is projected from the rates measured above on this "
            "device; a different device needs its own run of this benchmark"
        )
        echo(
            f"paper profile projection: disk {proj['disk_gb']:.1f} GB, extraction {proj['extraction_h']:.1f} h, "
            f"training {proj['training_gpu_h']:.1f} GPU-h on {dev_name}"
        )
        return out
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_synthetic_stores(
    root: Path,
    products,
    reviews,
    *,
    review_tokens: int,
    product_tokens: int,
    product_images: float,
    review_image_share: float,
    review_images: float,
    regions: int,
    text_dim: int = 768,
    region_dim: int = 2048,
) -> None:
    """The four stores of the demo items with features at the paper's sizes: ``text_dim``-d token
    features of fixed lengths, and ``regions`` regions per image for the assumed images per item
    (every product round(product_images) images; every k-th review round(review_images) images,
    k = round(1 / review_image_share)). Values cycle through a small random pool (the benchmark
    measures time, not learning)."""
    from mmss_lib.features.store import FeatureStoreWriter

    rng = np.random.default_rng(0)
    pool_t = rng.normal(size=(4, max(review_tokens, product_tokens), text_dim)).astype(np.float16)
    pool_r = rng.random((4, regions, region_dim)).astype(np.float16)
    boxes = np.tile(np.array([0.0, 0.0, 1.0, 1.0], np.float32), (regions, 1))

    def region_item(n_img: int, k: int):
        if n_img <= 0:
            return (np.zeros((0, region_dim), np.float16), np.zeros((0, 4), np.float32), np.zeros(0, np.int32))
        return (
            np.concatenate([pool_r[(k + j) % 4] for j in range(n_img)]),
            np.tile(boxes, (n_img, 1)),
            np.repeat(np.arange(n_img, dtype=np.int32), regions),
        )

    writers = {
        k: FeatureStoreWriter(
            root / k, kind=k.split("_")[0], dim=text_dim if k.startswith("text") else region_dim, overwrite=True
        )
        for k in ("text_prd", "text_rvw", "region_prd", "region_rvw")
    }
    every = max(int(round(1 / review_image_share)), 1) if review_image_share > 0 else 0
    for k, pid in enumerate(products["product_id"].astype(str)):
        writers["text_prd"].add(pid, pool_t[k % 4, :product_tokens])
        writers["region_prd"].add(pid, *region_item(int(round(product_images)), k))
    for k, rid in enumerate(reviews["review_id"].astype(str)):
        writers["text_rvw"].add(rid, pool_t[k % 4, :review_tokens])
        n_img = int(round(review_images)) if every and k % every == 0 else 0
        writers["region_rvw"].add(rid, *region_item(n_img, k))
    for w in writers.values():
        w.close()


def _ssp_bytes_per_review(run_dir: Path, n: int) -> float:
    """Bytes per training review of one epoch's SSP-Label record: the per-review arrays of
    ``ssp/epoch001.npz`` at their uncompressed size (an upper bound; the fixed part of a small
    file would otherwise dominate)."""
    path = Path(run_dir) / "ssp" / "epoch001.npz"
    if not path.exists():
        return 0.0
    with np.load(path, allow_pickle=False) as z:
        return float(
            sum(
                z[k].dtype.itemsize * int(np.prod(z[k].shape[1:], dtype=np.int64))
                for k in z.files
                if z[k].ndim >= 1 and z[k].shape[0] == n
            )
        )


def _json_bytes_per_review(data_root: Path, n_reviews: int) -> float:
    """Bytes of the MRHP JSON files (images excluded) per review of the synthetic set."""
    files = [f for f in (Path(data_root) / "demo" / "home").glob("home.*") if f.is_file()]
    return sum(f.stat().st_size for f in files) / max(n_reviews, 1)


def project(
    runs: list[dict],
    per_system: dict,
    *,
    ext: dict,
    enc_forward_tokens_s: float,
    enc_train_tokens_s: float,
    text_tokens_s: float,
    region_images_s: float,
    u: float,
    p_share: float,
    review_tokens: float,
    product_tokens: float,
    product_images: float,
    review_image_share: float,
    review_images: float,
    data_bytes_per_review: float,
    echo=print,
) -> dict:
    """Disk (GB), extraction hours and training GPU-hours of ``runs`` at Table 3's sizes."""
    from mmss_lib.models.registry import build_system

    datasets = sorted({r["dataset"] for r in runs})
    # ---- extraction and stores
    items = {"products": 0, "reviews": 0}
    for d in datasets:
        for cat in TABLE3[d].values():
            for p, r in cat.values():
                items["products"] += p
                items["reviews"] += r
    images = items["products"] * product_images + items["reviews"] * review_image_share * review_images
    region_row = 2048 * 2 + REGION_ROW_BYTES_EXTRA  # float16 feature + box + image index
    region_gb = images * ext["max_boxes"] * region_row / 1e9
    text_gb = 0.0
    text_h = 0.0
    if ext["extract_text"]:
        tok = items["reviews"] * min(review_tokens, ext["text_max_len"]) + items["products"] * min(
            product_tokens, ext["text_max_len"]
        )
        text_gb = tok * 768 * 2 / 1e9
        text_h = tok / text_tokens_s / 3600
    extraction_h = images / region_images_s / 3600 + text_h
    data_gb = items["reviews"] * data_bytes_per_review / 1e9
    echo(
        f"[projection] Table 3 sizes ({', '.join(datasets)}): {items['products']:,} products, "
        f"{items['reviews']:,} reviews; assumed images: {product_images} per product, {review_image_share:.0%} "
        f"of reviews with {review_images} each = {images:,.0f} images"
    )
    echo(
        f"[projection] region stores: {images:,.0f} images x {ext['max_boxes']} regions (the profile's cap) x "
        f"{region_row} B (2048 x float16 + box + image index) = {region_gb:.1f} GB; text stores: "
        + (f"{text_gb:.1f} GB (cached text)" if ext["extract_text"] else "none (text encoded on the fly)")
        + f"; MRHP JSON files {data_gb:.2f} GB"
    )

    # ---- training
    hours, run_gb = 0.0, 0.0
    parts = {"checkpoints": 0.0, "ssp": 0.0, "scores": 0.0}
    by_system: dict[str, float] = {}
    params_cache: dict = {}
    for r in runs:
        s = per_system.get(r["system"])
        if s is None:
            raise ValueError(f"system {r['system']!r} of the profile was not timed")
        sizes = TABLE3[r["dataset"]][r["category"]]
        n_tr, n_ev = sizes["train"][1], sizes["dev"][1] + sizes["test"][1]
        p_ev = sizes["dev"][0] + sizes["test"][0]
        samples = u * n_tr
        t = samples * s["train_s_per_sample"] + n_ev * s["eval_s_per_review"]
        mode = r["text_mode"]
        # evaluation encodes every review and each product once per batch of 64 (a product's reviews
        # are contiguous, so each batch boundary splits at most one product)
        eval_tokens = n_ev * review_tokens + (p_ev + n_ev / 64) * product_tokens
        if mode in ("frozen", "finetune"):
            train_tokens = samples * (review_tokens + p_share * product_tokens)
            rate = enc_train_tokens_s if mode == "finetune" else enc_forward_tokens_s
            t += train_tokens / rate + eval_tokens / enc_forward_tokens_s
        epochs = r["epochs"]
        final = n_ev * s["eval_s_per_review"] + (eval_tokens / enc_forward_tokens_s if mode != "cached" else 0.0)
        run_h = (t * epochs + final) / 3600  # epochs + the final evaluation of best.pt
        hours += run_h
        by_system[r["system"] + ("" if r["variant"] == "full" else "__" + r["variant"])] = (
            by_system.get(r["system"] + ("" if r["variant"] == "full" else "__" + r["variant"]), 0.0) + run_h
        )
        key = (r["system"], r["variant"])
        if key not in params_cache:
            from mmss_lib.models.mmss import ABLATIONS

            opts = dict(ABLATIONS.get(r["variant"], {})) if r["system"] == "mmss" else {}
            model = build_system(r["system"], text_dim=768, region_dim=2048, **opts)
            params_cache[key] = sum(p.numel() for p in model.parameters())
        n_params = params_cache[key] + (110_000_000 if mode == "finetune" else 0)
        parts["checkpoints"] += n_params * s["ckpt_bytes_per_param"] / 1e9
        parts["ssp"] += n_tr * epochs * s["ssp_bytes_per_review_epoch"] * bool(r.get("ssp_records", True)) / 1e9
        parts["scores"] += n_ev * s["score_bytes_per_review"] / 1e9
    run_gb = sum(parts.values())
    disk = region_gb + text_gb + data_gb + run_gb
    echo(
        f"[projection] run folders ({len(runs)} runs, all epochs): {run_gb:.1f} GB = checkpoints "
        f"{parts['checkpoints']:.1f} (best.pt + last.pt, bytes per parameter as measured, parameters at "
        f"768-d text / 2048-d regions) + SSP-Label records {parts['ssp']:.1f} ({sum(bool(r.get('ssp_records', True)) for r in runs)} "
        f"runs write them) + scores {parts['scores']:.1f}"
    )
    echo(
        f"[projection] disk {disk:.1f} GB of {DISK_BUDGET_GB:.0f} GB: "
        + ("fits" if disk <= DISK_BUDGET_GB else "DOES NOT FIT")
    )
    top = sorted(by_system.items(), key=lambda kv: -kv[1])
    echo("[projection] training hours by system/variant: " + ", ".join(f"{k} {v:.1f}" for k, v in top))
    echo(
        f"[projection] extraction: {images:,.0f} images at {region_images_s:.2f} images/s"
        + (f" + text at {text_tokens_s:.0f} BERT-base tokens/s" if ext["extract_text"] else "")
        + f" = {extraction_h:.1f} h"
    )
    return {
        "disk_gb": disk,
        "region_gb": region_gb,
        "text_gb": text_gb,
        "run_gb": run_gb,
        "data_gb": data_gb,
        "run_parts_gb": parts,
        "extraction_h": extraction_h,
        "training_gpu_h": hours,
        "by_system_h": by_system,
        "images": images,
    }
