"""``mmss bench train``: the trainer measured in one run: achieved FLOP/s of an MM-SS training
step as a fraction of this machine's matmul FLOP/s, throughput from memory-mapped synthetic
stores, SSP-Label bookkeeping time, and peak memory at two training-set sizes (each in its own
process, :func:`_bench_child`)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from mmss_lib.bench.common import default_threads, memory_now, report
from mmss_lib.ssp.bank import ssp_bank_dir
from mmss_lib.training.config import TrainConfig
from mmss_lib.training.trainer import build_model, build_optimizer, draw_pairs, train_step
from mmss_lib.utils import seed_everything


def _synthetic_bench_stores(
    root: Path,
    n_reviews: int,
    *,
    text_dim: int,
    text_len: int,
    region_dim: int,
    per_product: int = 20,
    image_share: float = 0.1,
    regions: int = 4,
) -> None:
    """Write four stores for ``n_reviews`` synthetic reviews (``per_product`` per product) with the
    streaming writer (constant memory): texts of ``text_len`` tokens, every product one image of
    ``regions`` regions, an ``image_share`` of reviews one such image. Rows cycle through a small
    random pool (the benchmark measures the trainer, not the feature values)."""
    from mmss_lib.features.store import FeatureStoreWriter

    rng = np.random.default_rng(0)
    tpool = rng.normal(size=(64, text_len, text_dim)).astype(np.float16)
    rpool = rng.random((16, regions, region_dim)).astype(np.float16)
    boxes = np.tile(np.array([0.0, 0.0, 1.0, 1.0], np.float32), (regions, 1))
    image = np.zeros(regions, np.int32)
    n_products = (n_reviews + per_product - 1) // per_product
    writers = {
        k: FeatureStoreWriter(
            root / k,
            kind=k.split("_")[0],
            dim=text_dim if k.startswith("text") else region_dim,
            shard_size=4096,
            overwrite=True,
        )
        for k in ("text_prd", "text_rvw", "region_prd", "region_rvw")
    }
    for p in range(n_products):
        writers["text_prd"].add(f"p{p}", tpool[p % 64])
        writers["region_prd"].add(f"p{p}", rpool[p % 16], boxes, image)
    every = max(int(round(1 / image_share)), 1) if image_share > 0 else 0
    for i in range(n_reviews):
        rid = f"p{i // per_product}-{i % per_product}"
        writers["text_rvw"].add(rid, tpool[i % 64])
        if every and i % every == 0:
            writers["region_rvw"].add(rid, rpool[i % 16], boxes, image)
        else:
            writers["region_rvw"].add(
                rid, np.zeros((0, region_dim), np.float16), np.zeros((0, 4), np.float32), np.zeros(0, np.int32)
            )
    for w in writers.values():
        w.close()


def _bench_child(spec: dict) -> dict:
    """Run in a fresh process: open the synthetic stores, train ``steps`` MM-SS steps in epoch 1,
    close it, ``steps`` more in epoch 2 (pseudo labels active); report timings, peak RSS
    (VmHWM), peak anonymous memory (RssAnon sampled after every phase and step) and the
    anonymous memory after each phase. The SSP-Label banks are set up as in :func:`fit`."""
    import torch

    phases = {"imports": memory_now()["anon"]}
    peak_anon = phases["imports"]

    def mark(name: str | None = None) -> None:
        nonlocal peak_anon
        m = memory_now()["anon"]
        peak_anon = max(peak_anon, m)
        if name:
            phases[name] = m

    import pandas as pd

    from mmss_lib.features.loader import MRHPSplitData, open_stores
    from mmss_lib.ssp.label import SSPLabel

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    n, per = int(spec["n"]), int(spec["per_product"])
    rng = np.random.default_rng(0)
    ids = np.arange(n)
    reviews = pd.DataFrame(
        {
            "review_id": [f"p{i // per}-{i % per}" for i in ids],
            "product_id": [f"p{i // per}" for i in ids],
            "label": rng.integers(0, 5, size=n),
        }
    )
    stores = open_stores(spec["root"], "bench", "synthetic")
    mark("stores")
    train = MRHPSplitData(reviews, None, stores, training=True, check=False, name="bench")
    del reviews
    mark("split")
    cfg = TrainConfig(device="cpu", model_options=dict(spec.get("model_options") or {}))
    seed_everything(0)
    model = build_model(cfg, train.text_dim, train.region_dim)
    optimizer = build_optimizer(model, cfg)
    dims = model.feature_dims()
    ssp = SSPLabel(
        train.n,
        torch.as_tensor(train.labels, dtype=torch.float32),
        dims,
        max_history=1,
        bank_dir=ssp_bank_dir(Path(spec["root"]) / "run", train.n, dims),
    )
    mark("model+ssp")
    out = {"n": n}
    for epoch in (1, 2):
        pairs = draw_pairs(train, cfg, epoch)
        timings: dict = {}
        samples = 0
        t0 = time.perf_counter()
        for b in range(int(spec["steps"])):
            pb = pairs[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            samples += train_step(
                model,
                optimizer,
                train,
                train.collate,
                pb,
                cfg,
                torch.device("cpu"),
                ssp=ssp,
                epoch=epoch,
                timings=timings,
            )["n_samples"]
            mark()
        step_s = time.perf_counter() - t0
        out[f"epoch{epoch}"] = {
            "seconds": step_s,
            "samples": samples,
            "ssp_seconds": timings.get("ssp", 0.0),
            "n_pairs": int(len(pairs)),
        }
        t1 = time.perf_counter()
        ssp.end_epoch(epoch)
        out[f"epoch{epoch}"]["end_epoch_seconds"] = time.perf_counter() - t1
        mark(f"epoch{epoch}")
    out["peak_rss_mb"] = memory_now()["hwm"]
    out["peak_anon_mb"] = peak_anon
    out["phases_anon_mb"] = phases
    out["ssp_bank_mb"] = sum(v.numel() * v.element_size() for v in ssp.bank.values()) / 2**20
    out["ssp_bank_where"] = (
        f"{str(ssp.bank_dtype).replace('torch.', '')} {'memory-mapped files' if ssp.bank_dir is not None else 'in RAM'}"
    )
    ssp.close()
    return out


def _matmul_flops(n: int = 1024, seconds: float = 1.0) -> float:
    """Dense float32 matmul FLOP/s of this machine (n x n square sgemm, torch's current threads), measured now."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    for _ in range(3):
        torch.mm(a, b, out=out)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b, out=out)
        reps += 1
    return 2.0 * n**3 * reps / (time.perf_counter() - t0)


def _step_flops(
    *,
    batch: int,
    text_dim: int,
    lp: int,
    lr: int,
    np_: int,
    nr: int,
    rounds: int,
    model_options: dict,
    matmul_n: int = 1024,
    matmul_seconds: float = 0.5,
) -> dict:
    """FLOPs of one MM-SS training step on ``batch`` samples (``batch // 2`` ranking pairs,
    forward + backward + Adam, counted with ``FlopCounterMode``), and ``rounds`` interleaved
    measurements of [dense matmul FLOP/s, one step's time], so that both see the same machine
    load. Returns the FLOPs, per-round matmul FLOP/s, step seconds and the ratios."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mmss_lib.data.batch import random_batch
    from mmss_lib.models.losses import mmss_subtask_loss, ranking_hinge
    from mmss_lib.models.mmss import MMSS

    torch.manual_seed(0)
    model = MMSS(text_dim=text_dim, region_dim=2048, **model_options)
    opt = build_optimizer(model, TrainConfig())  # the trainer's optimizer
    b = random_batch(batch, text_dim=text_dim, lp=lp, lr=lr, np_=np_, nr=nr, seed=0)
    labels = {s: b.label for s in model.subtasks}
    half = batch // 2

    def step():
        out = model(b)
        loss = ranking_hinge(out.score[:half], out.score[half : 2 * half]) + mmss_subtask_loss(
            out, labels, b.label, model
        )
        opt.zero_grad()
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        step()
    flops = float(fc.get_total_flops())
    step()  # warm-up
    peaks, times = [], []
    for _ in range(rounds):
        peaks.append(_matmul_flops(matmul_n, matmul_seconds))
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peaks.append(_matmul_flops(matmul_n, matmul_seconds))
    # each step is compared with the mean of the matmul rates measured right before and after it
    ratios = [flops / t / (0.5 * (peaks[i] + peaks[i + 1])) for i, t in enumerate(times)]
    return {"flops": flops, "peaks": peaks, "times": times, "ratios": ratios}


SHARES = ("compute", "batches", "SSP-Label", "evaluation", "checkpoints")


def epoch_shares(history: list[dict]) -> dict:
    """Where the epochs of a run went, from its ``history.json`` entries: seconds per epoch and
    the shares of compute (forward, backward, optimizer: the training time not spent on the rest),
    batch building (``data_seconds``), SSP-Label (``ssp_seconds``), evaluation (``eval_seconds``)
    and checkpoint writes (``checkpoint_seconds``)."""
    total = sum(h["seconds"] for h in history)
    parts = {
        "batches": sum(h.get("data_seconds", 0.0) for h in history),
        "SSP-Label": sum(h.get("ssp_seconds", 0.0) for h in history),
        "evaluation": sum(h.get("eval_seconds", 0.0) for h in history),
        "checkpoints": sum(h.get("checkpoint_seconds", 0.0) for h in history),
    }
    parts["compute"] = sum(h["train_seconds"] for h in history) - parts["batches"] - parts["SSP-Label"]
    return {
        "sec_per_epoch": total / max(len(history), 1),
        **{k: parts[k] / total if total > 0 else float("nan") for k in SHARES},
    }


def _demo_size_shares(tmp: Path, systems, epochs: int) -> dict:
    """Train ``systems`` for ``epochs`` epochs on one demo-sized category (90 products, the demo
    profile's settings: 3 negatives, 32 pairs a batch, regions capped at 10 per image / 20 per
    item, test scored every epoch, one thread as in the demo's two workers) with random features
    of the demo's sizes (64 MiniLM tokens of 384 dims, MobileNetV2 regions of 1280 dims, up to 14
    grid boxes per image); return :func:`epoch_shares` per system."""
    from mmss_lib.data.mrhp import load_mrhp
    from mmss_lib.data.synthetic import make_demo
    from mmss_lib.features.store import feature_dirs, write_store
    from mmss_lib.training.run_folder import load_history
    from mmss_lib.training.trainer import train_run

    make_demo(tmp / "data", n_products=90, categories=("home",), images=False)
    rng = np.random.default_rng(0)
    items = {k: {} for k in ("text_prd", "text_rvw", "region_prd", "region_rvw")}
    for split in ("train", "dev", "test"):
        products, reviews = load_mrhp(tmp / "data", "demo", "home", split)
        for side, ids in (("prd", products["product_id"]), ("rvw", reviews["review_id"])):
            for i in ids:
                items[f"text_{side}"][i] = {"x": rng.normal(size=(int(rng.integers(20, 65)), 384)).astype(np.float16)}
                k = 14 * int(rng.integers(0, 3) if side == "rvw" else rng.integers(1, 3))
                items[f"region_{side}"][i] = {
                    "x": rng.random((k, 1280)).astype(np.float16),
                    "boxes": np.tile([0, 0, 1, 1], (k, 1)).astype(np.float32),
                    "image": np.repeat(np.arange(k // 14 if k else 0), 14).astype(np.int32),
                }
    for kind, path in feature_dirs(tmp / "features", "demo", "home").items():
        write_store(path, items[kind], kind=kind.split("_")[0], dim=1280 if "region" in kind else 384)
    out = {}
    for system in systems:
        cfg = TrainConfig(
            system=system,
            epochs=epochs,
            patience=epochs,
            batch_size=32,
            n_neg=3,
            max_regions_per_image=10,
            max_regions_per_item=20,
            device="cpu",
            num_threads=1,
        )
        rd = tmp / "runs" / system
        train_run(
            cfg,
            data_root=tmp / "data",
            dataset="demo",
            category="home",
            features_root=tmp / "features",
            run_dir=rd,
            progress=False,
        )
        out[system] = epoch_shares(load_history(rd))
    return out


def bench_train(argv: list[str], prog: str = "mmss bench train") -> int:
    """``mmss bench train``: ratios measured in one run (see ``--help``)."""
    import tempfile

    import torch

    ap = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Training benchmarks, all measured in this run: (1) achieved FLOP/s of an MM-SS training step "
            "as a fraction of this machine's dense float32 matmul FLOP/s (goal >= 60%%), measured interleaved "
            "with the same thread count; (2) training throughput (reviews/s) from memory-mapped synthetic "
            "stores; (3) pseudo-label bookkeeping time as a fraction of the step time with --n-large training "
            "reviews (goal <= 5%%); (4) peak memory with --n-large vs --n-small training reviews, each in its "
            "own process (goal <= 1.2x): anonymous memory (what the process allocates; the goal's measure, "
            "since features stay on disk, memory-mapped) and total RSS (also counts pages of memory-mapped "
            "files read so far and shared libraries); (5) where an epoch's time goes at demo size for MM-SS "
            "and BiMPM: compute, batch building (goal < 10%%), SSP-Label, evaluation, checkpoint writes."
        ),
    )
    ap.add_argument("--n-small", type=int, default=10_000)
    ap.add_argument("--n-large", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=20, help="training steps per epoch and size")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved matmul/step measurements for (1)")
    ap.add_argument("--text-dim", type=int, default=128, help="token feature size of the synthetic stores")
    ap.add_argument("--text-len", type=int, default=16, help="tokens per synthetic text")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads, for every measurement (default: the usable CPU cores)"
    )
    ap.add_argument("--tmp", default=None, help="folder for the synthetic stores (default: a temp dir)")
    ap.add_argument(
        "--parts",
        nargs="+",
        choices=("flops", "shares", "stores"),
        default=["flops", "shares", "stores"],
        help="flops: (1); shares: (5) where an epoch's time goes at demo size, MM-SS and BiMPM; stores: (2)-(4)",
    )
    ap.add_argument("--share-epochs", type=int, default=3, help="epochs per system for (5) (SSP-Label works from 3)")
    args = ap.parse_args(argv)
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    opts = {}
    report("setup", f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    if "flops" in args.parts:
        _report_flops(args, threads, opts)
    if "shares" in args.parts:
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            shares = _demo_size_shares(Path(tmp), ("mmss", "bimpm"), args.share_epochs)
        for system, sh in shares.items():
            report(
                "epoch",
                f"{system} at demo size ({args.share_epochs} epochs, 1 thread): {sh['sec_per_epoch']:.1f} s "
                "per epoch: "
                + ", ".join(f"{k} {sh[k]:.0%}" for k in SHARES)
                + f" (goal: batches < 10%: {'met' if sh['batches'] < 0.10 else 'NOT met'})",
            )
    if "stores" not in args.parts:
        return 0
    return _report_stores(args, threads, opts)


def _report_flops(args, threads: int, opts: dict) -> None:
    # (1) FLOP/s fraction: 32 pairs -> 64 samples, BERT-base token features, interleaved with sgemm
    r = _step_flops(batch=64, text_dim=768, lp=64, lr=64, np_=32, nr=16, rounds=args.rounds, model_options=opts)
    peak, step_s, ratio = (float(np.median(r["peaks"])), float(np.median(r["times"])), float(np.median(r["ratios"])))
    report(
        "flops",
        f"dense fp32 matmul (1024^2 x 1024 sgemm, {threads} threads), {len(r['peaks'])} measurements "
        f"interleaved with the steps: median {peak / 1e9:.1f} GFLOP/s "
        f"(min {min(r['peaks']) / 1e9:.1f}, max {max(r['peaks']) / 1e9:.1f})",
    )
    report(
        "flops",
        f"MM-SS step (32 pairs = 64 samples, BERT-base token features 64+64, 32+16 regions, d=128, "
        f"forward+backward+Adam): {r['flops'] / 1e9:.2f} GFLOP in {step_s * 1e3:.0f} ms (median of "
        f"{len(r['times'])}) = {r['flops'] / step_s / 1e9:.1f} GFLOP/s = {ratio:.1%} of matmul peak "
        f"(median of per-step ratios, range {min(r['ratios']):.1%}..{max(r['ratios']):.1%}; goal >= 60%)",
    )


def _report_stores(args, threads: int, opts: dict) -> int:
    import subprocess
    import tempfile

    # (2)-(4) synthetic stores, one child process per size
    results = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for n in (args.n_small, args.n_large):
            root = Path(tmp) / f"n{n}"
            t0 = time.perf_counter()
            _synthetic_bench_stores(
                root / "bench" / "synthetic", n, text_dim=args.text_dim, text_len=args.text_len, region_dim=2048
            )
            spec = {
                "n": n,
                "per_product": 20,
                "root": str(root),
                "steps": args.steps,
                "threads": threads,
                "model_options": opts,
            }
            code = (
                "import json,sys; from mmss_lib.bench.train import _bench_child; "
                "print('RESULT', json.dumps(_bench_child(json.loads(sys.argv[1]))))"
            )
            proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-4000:], file=sys.stderr)
                return 1
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
            results[n] = json.loads(line[len("RESULT ") :])
            report("data", f"{n} reviews: stores written in {time.perf_counter() - t0:.1f} s")
            shutil.rmtree(root, ignore_errors=True)
    for n, res in results.items():
        e1, e2 = res["epoch1"], res["epoch2"]
        rate = (e1["samples"] + e2["samples"]) / (e1["seconds"] + e2["seconds"])
        report(
            "throughput",
            f"{n} training reviews: {rate:.1f} reviews/s "
            f"({e2['samples'] / args.steps:.0f} unique reviews per 32-pair batch)",
        )
    big = results[args.n_large]
    e2 = big["epoch2"]
    report(
        "ssp",
        f"{args.n_large} training reviews, epoch 2 (labels estimated): bookkeeping "
        f"{e2['ssp_seconds'] / args.steps * 1e3:.2f} ms of {e2['seconds'] / args.steps * 1e3:.0f} ms per step "
        f"= {e2['ssp_seconds'] / e2['seconds']:.1%} (goal <= 5%); end_epoch {e2['end_epoch_seconds']:.2f} s "
        f"once per epoch ({e2['n_pairs'] // 32} steps)",
    )
    small = results[args.n_small]
    report(
        "memory",
        f"peak anonymous memory {small['peak_anon_mb']:.0f} MB with {args.n_small} reviews, "
        f"{big['peak_anon_mb']:.0f} MB with {args.n_large}: ratio {big['peak_anon_mb'] / small['peak_anon_mb']:.2f}x "
        f"(goal <= 1.2x)",
    )
    report(
        "memory",
        f"peak RSS (incl. mapped feature/bank files, libraries) {small['peak_rss_mb']:.0f} MB / "
        f"{big['peak_rss_mb']:.0f} MB: ratio {big['peak_rss_mb'] / small['peak_rss_mb']:.2f}x; SSP-Label banks "
        f"{small['ssp_bank_mb']:.0f} MB ({small['ssp_bank_where']}) / {big['ssp_bank_mb']:.0f} MB ({big['ssp_bank_where']})",
    )
    for n, res in results.items():
        ph = res["phases_anon_mb"]
        steps = ", ".join(f"{k} {v:.0f}" for k, v in ph.items())
        report("memory", f"{n} reviews, anonymous MB after each phase: {steps}")
    return 0
