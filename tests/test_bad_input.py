"""The bad-input corpus (issue 13): hostile but realistic inputs to every command.

Each entry of ``CASES`` is ONE line: ``C(name, command, act, error, says, policy=..., fixed=...)``.

- ``act(ctx)`` builds the hostile input with the helpers of :class:`Ctx`, calls
  ``ctx.protect()`` once everything that exists before the command is on disk, then runs the
  command (a library call) and returns its result.
- ``error``: the expected :class:`mmss_lib.errors.MMSSError` subclass, and ``says``: regular
  expressions the message must match (the file, the row or field, what was expected).
  Or ``error=None`` for a documented policy: ``policy`` names the module whose docstring
  documents it (the test checks the docstring holds the quoted words), and ``act`` asserts the
  documented outcome itself.
- For every case the harness then asserts that nothing already written is lost: every file
  under the case folder that existed at ``ctx.protect()`` still exists with the same bytes, and
  no payload marker file exists (crafted pickles would create it when their code ran).
- ``fixed=True``: the behaviour was wrong before issue 13 and is fixed there (for the report).

Add a case: write one more ``C(...)`` line (and a helper in ``Ctx`` if it needs a new kind of
input). ``test_corpus_summary`` prints the table of cases and outcomes (``pytest -s``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmss_lib.errors import (
    CheckpointError,
    DataError,
    DiskFullError,
    FeatureStoreError,
    MMSSError,
    ModelNotAvailableError,
    PipelineError,
    RunInUseError,
    TrainingError,
    TuneError,
)

DS, CAT = "demo", "cat"


# ------------------------------------------------------------------------------------ helpers


class Payload:
    """A pickle that, when unpickled by an unsafe loader, creates ``marker`` (a shell command)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _base_split() -> dict[str, dict]:
    """A valid tiny MRHP split in the released column orientation: 2 products, 4 reviews."""
    prd = {
        "product_id": {"0": "B000000001", "1": "B000000002"},
        "name": {"0": "red shirt", "1": "steel pan"},
        "description": {"0": ["cotton", "slim fit"], "1": ["kitchen pan"]},
        "img_url": {"0": [], "1": []},
    }
    rvw = {
        "product_id": {"0": "B000000001", "1": "B000000001", "2": "B000000002", "3": "B000000002"},
        "review_id": {"0": "B000000001-0", "1": "B000000001-1", "2": "B000000002-0", "3": "B000000002-1"},
        "title": {str(i): "t" for i in range(4)},
        "content": {"0": "fits well", "1": "colour faded", "2": "heats evenly", "3": "handle broke"},
        "img_url": {str(i): [] for i in range(4)},
    }
    rel = {
        "product_id": dict(rvw["product_id"]),
        "review_id": dict(rvw["review_id"]),
        "upvotes": {"0": 3, "1": 0, "2": 4, "3": 1},
    }
    return {"prd": prd, "rvw": rvw, "rel": rel}


@dataclass
class Ctx:
    root: Path
    protected: dict[str, str] | None = None

    # -- bookkeeping
    @property
    def marker(self) -> Path:
        return self.root / "PAYLOAD_RAN"

    def protect(self) -> None:
        """Snapshot every file under the case folder (they must survive the command unchanged)."""
        self.protected = {
            str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(self.root.rglob("*")) if p.is_file()
        }

    # -- MRHP splits
    @property
    def data(self) -> Path:
        return self.root / "data"

    def split_path(self, kind: str) -> Path:
        return self.data / DS / CAT / f"{CAT}.{kind}.train"

    def mrhp(
        self,
        kind: str | None = None,
        field: str | None = None,
        row: str = "1",
        value: Any = None,
        raw: bytes | None = None,
    ) -> None:
        """Write the tiny split; set ``{kind}.{field}[row] = value`` (ids: the same value in the
        files that share the id), or replace the ``kind`` file with ``raw`` bytes."""
        obj = _base_split()
        if field is not None:
            obj[kind][field][row] = value
            if kind in ("rvw", "rel") and field in ("review_id", "product_id"):
                other = "rel" if kind == "rvw" else "rvw"
                obj[other][field][row] = value
        for k, o in obj.items():
            p = self.split_path(k)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(raw if (k == kind and raw is not None) else json.dumps(o).encode())

    def load(self):
        from mmss_lib.data.mrhp import load_mrhp

        return load_mrhp(self.data, DS, CAT, "train")

    # -- feature stores
    def store(
        self, name: str = "text_rvw", *, n: int = 4, dim: int = 4, shard_size: int = 2, manifest: dict | None = None
    ) -> Path:
        from mmss_lib.features.store import write_store

        path = self.root / "features" / DS / CAT / name
        kind = name.split("_")[0]
        items = {
            f"i{k}": {"x": np.full((2, dim), k, np.float32)}
            if kind == "text"
            else {
                "x": np.full((1, dim), k, np.float32),
                "boxes": np.array([[0, 0, 1, 1]], np.float32),
                "image": np.zeros(1, np.int32),
            }
            for k in range(n)
        }
        write_store(path, items, kind=kind, dim=dim, shard_size=shard_size, manifest=manifest)
        return path

    # -- images
    def image(self, name: str, mode: str | None = None, size=(32, 24), fmt: str = "PNG", raw: bytes | None = None):
        p = self.root / "img" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if raw is not None:
            p.write_bytes(raw)
            return p
        from PIL import Image

        if mode == "I;16":
            arr = np.arange(size[0] * size[1], dtype=np.uint16).reshape(size[1], size[0]) * 50
            Image.fromarray(arr).save(p, format=fmt)  # uint16 -> mode I;16
        elif mode == "RGBA":
            arr = np.zeros((size[1], size[0], 4), np.uint8)
            arr[..., 0] = 200
            arr[:, : size[0] // 2, 3] = 0  # left half fully transparent
            arr[:, size[0] // 2 :, 3] = 255
            Image.fromarray(arr, mode="RGBA").save(p, format=fmt)
        else:
            Image.new(mode, size, 128 if mode == "L" else (10, 20, 30, 40) if mode == "CMYK" else (10, 20, 30)).save(
                p, format=fmt, **({"compress_level": 1} if fmt == "PNG" else {})
            )
        return p

    def read_image(self, p: Path):
        from mmss_lib.features.regions import RegionReport, load_image

        rep = RegionReport()
        return load_image(p, report=rep, item_id="item1"), rep

    # -- pickled payloads
    def torch_payload(self, path: Path, wrap: bool = True) -> Path:
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"config": Payload(self.marker), "model": {}, "text_dim": 4, "region_dim": 4}
            if wrap
            else Payload(self.marker),
            path,
        )
        return path

    def pickle_payload(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump([Payload(self.marker)], f)
        return path

    def npz_payload(self, path: Path, key: str = "x") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{key: np.array([Payload(self.marker)], dtype=object)})
        return path


# ------------------------------------------------------------------------------------ case actions
# (small functions where one lambda would not do)


def _labels(value):
    def act(ctx: Ctx):
        ctx.mrhp("rel", "upvotes", "2", value)
        ctx.protect()
        return ctx.load()

    return act


def _loader(kind=None, field=None, value=None, row="1", raw=None):
    def act(ctx: Ctx):
        ctx.mrhp(kind, field, row, value, raw)
        ctx.protect()
        return ctx.load()

    return act


def _big_text(ctx: Ctx):
    big = "good price " * 1_000_000  # 11 MB
    ctx.mrhp("rvw", "content", "1", big)
    ctx.protect()
    _, rvw = ctx.load()
    assert rvw["text"].iloc[1] == big  # loaded intact, no silent cut at load time
    return rvw


def _big_text_encoder(ctx: Ctx, tiny_bert_dir):
    from mmss_lib.features.text import TextEncoder

    ctx.protect()
    enc = TextEncoder(tiny_bert_dir, max_len=16, device="cpu")
    big = "good price " * 1_000_000
    x = enc.encode([big, "good", big[:200]])
    full_ids = enc.tokenizer(big[:5000], truncation=True, max_length=16)["input_ids"]
    assert enc.tokenize([big])[0][0] == full_ids  # the same ids as truncating the text
    assert x[0].shape[0] in (15, 16) and x[1].shape[0] < x[0].shape[0]  # truncated to max_len
    np.testing.assert_array_equal(x[0], x[2])  # = the features of a short prefix
    return x


def _builder_truncated_gzip(ctx: Ctx):
    from mmss_lib.bench.build import generate_reviews
    from mmss_lib.data.amazon2018 import build_amazon2018

    src = ctx.root / "src" / "reviews.json.gz"
    src.parent.mkdir(parents=True)
    generate_reviews(src, 3000, n_products=20, seed=0)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])  # cut mid-stream
    prev = ctx.root / "out" / "amazon" / "cat" / "cat.prd.train"  # an earlier build's output
    prev.parent.mkdir(parents=True)
    prev.write_text("{}")
    ctx.protect()
    return build_amazon2018(src, Path(str(src) + ".meta.json.gz"), ctx.root / "out", "cat", min_reviews=1)


def _builder_bad_asin(asin, raw_line: str | None = None):
    def act(ctx: Ctx):
        from mmss_lib.data.amazon2018 import build_amazon2018

        src = ctx.root / "src" / "reviews.json"
        src.parent.mkdir(parents=True)
        good = {"asin": "B000000001", "vote": "5", "reviewText": "x" * 80, "overall": 5.0}
        src.write_text(json.dumps(good) + "\n" + (raw_line or json.dumps({**good, "asin": asin})) + "\n")
        (ctx.root / "src" / "meta.json").write_text(json.dumps({"asin": "B000000001", "title": "t"}) + "\n")
        ctx.protect()
        return build_amazon2018(src, ctx.root / "src" / "meta.json", ctx.root / "out", "cat", min_reviews=1)

    return act


def _image(name, mode=None, fmt="PNG", raw=None, size=(32, 24)):
    def act(ctx: Ctx):
        p = ctx.image(name, mode, size=size, fmt=fmt, raw=raw)
        ctx.protect()
        t, rep = ctx.read_image(p)
        if raw is not None:  # undecodable: skipped and listed
            assert t is None and len(rep.bad) == 1 and str(p) in rep.bad[0] and "item1" in rep.bad[0]
        else:  # converted to RGB in [0, 1]
            assert t is not None and t.shape[0] == 3 and 0.0 <= float(t.min()) and float(t.max()) <= 1.0
            if mode not in (None, "RGB"):
                assert rep.converted == {mode: 1}, rep.converted
            if mode == "RGBA":  # transparency composited on white
                assert np.allclose(t[:, :, 0].numpy(), 1.0) and float(t[1, 0, -1]) < 0.01
            if mode == "I;16":  # 16-bit range scaled to 0..1, not clipped
                assert float(t.max()) == pytest.approx(1.0) and float(t.min()) == pytest.approx(0.0)
            if max(size) > 4000:  # downscaled to max_load_side
                assert max(t.shape[1:]) == 4000 and rep.downscaled == 1
        return rep

    return act


def _extract_items_keeps_good_images(ctx: Ctx):
    """One corrupt image among good ones: the item keeps the regions of its other images."""
    from mmss_lib.features.regions import RegionReport, make_region_extractor

    good = ctx.image("a.png", "RGB")
    bad = ctx.image("b.jpg", raw=b"not an image at all")
    good2 = ctx.image("c.png", "L")
    ctx.protect()
    try:
        ex = make_region_extractor(
            None,
            region_boxes="detector",
            allow_random_weights=True,
            device="cpu",
            min_size=64,
            max_size=64,
            rpn_post_nms_top_n=20,
            max_boxes=3,
            min_boxes=1,
        )
    except ModelNotAvailableError as exc:
        pytest.skip(f"no region extractor available: {exc}")
    rep = RegionReport()
    out = ex.extract_items([[str(good), str(bad), str(good2)]], ["item1"], report=rep)
    assert rep.n_images == 2 and len(rep.bad) == 1 and "b.jpg" in rep.bad[0]
    assert set(np.unique(out[0]["image"]).tolist()) == {0, 2}  # image indices keep file order
    return rep


def _store_deleted_shard(ctx: Ctx):
    from mmss_lib.features.store import FeatureStore

    p = ctx.store()
    shutil.rmtree(p / "shard_00001")
    ctx.protect()
    return FeatureStore(p)


def _store_truncated_shard(ctx: Ctx):
    from mmss_lib.features.store import FeatureStore

    p = ctx.store()
    x = p / "shard_00001" / "x.npy"
    x.write_bytes(x.read_bytes()[:-7])
    ctx.protect()
    return FeatureStore(p)


def _store_pickled_shard(ctx: Ctx):
    from mmss_lib.features.store import FeatureStore

    p = ctx.store()
    (p / "shard_00000" / "offsets.npy").unlink()
    np.save(p / "shard_00000" / "offsets.npy", np.array([Payload(ctx.marker)], dtype=object), allow_pickle=True)
    ctx.protect()
    return FeatureStore(p)


def _store_manifest_dim(ctx: Ctx):
    from mmss_lib.features.store import FeatureStore

    p = ctx.store(dim=4)
    m = json.loads((p / "manifest.json").read_text())
    m["dim"] = 8
    (p / "manifest.json").write_text(json.dumps(m))
    ctx.protect()
    return FeatureStore(p)


def _store_nan(ctx: Ctx):
    from mmss_lib.features.store import FeatureStoreWriter

    w = FeatureStoreWriter(ctx.root / "features" / "s", kind="text", dim=4, shard_size=1)
    w.add("i0", np.ones((2, 4)))
    w.add("i1", np.ones((2, 4)))  # shard 0 written: must survive
    ctx.protect()
    x = np.ones((2, 4))
    x[1, 2] = np.nan
    w.add("i2", x)
    return w.close()


def _import_nan(ctx: Ctx):
    from mmss_lib.features.importers import import_features

    d = ctx.root / "src" / "B000000001"
    d.mkdir(parents=True)
    x = np.ones((2, 6), np.float32)
    x[0, 0] = np.nan
    np.savez(
        d / "0.npz", x=x, bbox=np.array([[0, 0, 4, 4], [1, 1, 2, 2]], np.float32), num_bbox=2, image_h=8, image_w=8
    )
    ctx.protect()
    return import_features(ctx.root / "src", ctx.root / "out")


def _other_category(ctx: Ctx):
    from mmss_lib.features.loader import open_stores

    for name in ("text_prd", "text_rvw", "region_prd", "region_rvw"):
        ctx.store(name, manifest={"dataset": DS, "category": "clothing", "store": name})
    ctx.protect()
    return open_stores(ctx.root / "features", DS, CAT)


def _missing_item(ctx: Ctx):
    """A store without some of the split's items (e.g. extracted before reviews were added)."""
    import pandas as pd

    from mmss_lib.features.loader import MRHPSplitData, open_stores

    for name in ("text_prd", "text_rvw", "region_prd", "region_rvw"):
        ctx.store(name)
    ctx.protect()
    rvw = pd.DataFrame({"review_id": ["i0", "i9"], "product_id": ["i0", "i0"], "label": [1, 2]})
    return MRHPSplitData(rvw, pd.DataFrame({"product_id": ["i0"]}), open_stores(ctx.root / "features", DS, CAT))


def _store_nan_on_disk(ctx: Ctx):
    """A finished store whose x.npy was damaged after extraction (NaN rows): caught as rows are read."""
    import pandas as pd

    from mmss_lib.features.loader import MRHPSplitData, open_stores

    for name in ("text_prd", "text_rvw", "region_prd", "region_rvw"):
        ctx.store(name)
    x = np.load(ctx.root / "features" / DS / CAT / "text_rvw" / "shard_00000" / "x.npy", mmap_mode="r+")
    x[2:4] = np.nan  # rows of item i1
    x.flush()
    del x
    ctx.protect()
    rvw = pd.DataFrame({"review_id": ["i0", "i1"], "product_id": ["i0", "i0"], "label": [1, 2]})
    split = MRHPSplitData(rvw, pd.DataFrame({"product_id": ["i0"]}), open_stores(ctx.root / "features", DS, CAT))
    split.collate([0])  # item i0 is fine
    return split.collate([0, 1])


def _import_payload(kind):
    def act(ctx: Ctx):
        from mmss_lib.features.importers import import_features

        d = ctx.root / "src" / "B000000001"
        if kind == "pth":
            ctx.torch_payload(d / "B000000001.pth", wrap=False)
        elif kind == "pickle":
            ctx.pickle_payload(d / "B000000001.pth")
        else:
            ctx.npz_payload(d / "0.npz")
        ctx.protect()
        return import_features(ctx.root / "src", ctx.root / "out")

    return act


def _import_bad_ids(ctx: Ctx):
    from mmss_lib.features.importers import import_features

    d = ctx.root / "src" / "B000000001"
    d.mkdir(parents=True)
    np.savez(
        d / "0.npz",
        x=np.ones((1, 6), np.float32),
        bbox=np.array([[0, 0, 4, 4]], np.float32),
        num_bbox=1,
        image_h=8,
        image_w=8,
    )
    ctx.protect()
    return import_features(ctx.root / "src", ctx.root / "out", item_ids=["B000000001", "../../outside"])


def _predict_checkpoint_payload(ctx: Ctx):
    from mmss_lib.training.checkpoints import load_checkpoint

    p = ctx.torch_payload(ctx.root / "run" / "best.pt")
    ctx.protect()
    return load_checkpoint(p.parent)


def _case_study_payload(ctx: Ctx):
    from mmss_lib.evaluation.case_study import score_with_checkpoint

    p = ctx.torch_payload(ctx.root / "run" / "best.pt")
    ctx.protect()
    return score_with_checkpoint(p.parent, None, [0])


def _resume_payload(ctx: Ctx):
    from mmss_lib.training.checkpoints import load_torch  # what fit() uses for last.pt

    p = ctx.torch_payload(ctx.root / "run" / "last.pt")
    ctx.protect()
    return load_torch(p)


def _ssp_record_payload(ctx: Ctx):
    from mmss_lib.ssp.records import load_ssp_history

    ctx.npz_payload(ctx.root / "run" / "ssp" / "epoch001.npz", key="review_id")
    ctx.protect()
    return load_ssp_history(ctx.root / "run")


def _detector_weights_payload(ctx: Ctx):
    from mmss_lib.features.regions import RegionExtractor

    p = ctx.torch_payload(ctx.root / "w" / "detector.pth", wrap=False)
    ctx.protect()
    return RegionExtractor._find_weights(p, False)


def _mobilenet_weights_payload(ctx: Ctx):
    from mmss_lib.features.regions import mobilenet_v2_weights_file

    p = ctx.torch_payload(ctx.root / "w" / "mobilenet_v2-b0353104.pth", wrap=False)
    ctx.protect()
    return mobilenet_v2_weights_file(p)


def _predict_input(review):
    def act(ctx: Ctx):
        from mmss_lib.predict import _check_inputs, _read_input

        p = ctx.root / "input.json"
        p.write_text(json.dumps({"product": {"text": "red shirt"}, "reviews": [{"text": "ok"}, review]}))
        ctx.protect()
        product, reviews = _read_input(p)
        return _check_inputs(product, reviews)

    return act


def _unknown_system(ctx: Ctx):
    from mmss_lib.training.trainer import TrainConfig, build_model

    ctx.protect()
    return build_model(TrainConfig(system="mmss_plus", device="cpu"), 8, 12)


def _epochs(n):
    def act(ctx: Ctx):
        from mmss_lib.training.trainer import TrainConfig

        ctx.protect()
        return TrainConfig(epochs=n)

    return act


# -- training on a tiny on-disk category (MRHP files + four feature stores), through `mmss train`

TINY_DT, TINY_DR = 8, 12
TINY_TRAIN = [
    "--systems",
    "mmss",
    "--seeds",
    "0",
    "--patience",
    "50",
    "--batch-size",
    "16",
    "--n-neg",
    "3",
    "--lr",
    "0.003",
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


@pytest.fixture(scope="module")
def tiny_category(tmp_path_factory):
    """``demo/tiny``: 16/4/4 products x 5 reviews, labels carried by the review [CLS] feature."""
    import pandas as pd

    from mmss_lib.data.mrhp import write_mrhp
    from mmss_lib.features.store import write_store

    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    direction = rng.normal(size=TINY_DT)
    items = {k: {} for k in ("text_prd", "text_rvw", "region_prd", "region_rvw")}
    for split, n_prod in (("train", 16), ("dev", 4), ("test", 4)):
        prods, revs = [], []
        for p in range(n_prod):
            pid = f"P{split}{p:03d}"
            prods.append({"product_id": pid, "name": f"product {p}", "text": f"product {p}"})
            items["text_prd"][pid] = {"x": rng.normal(size=(3, TINY_DT))}
            items["region_prd"][pid] = {
                "x": rng.random((2, TINY_DR)),
                "boxes": np.tile([0, 0, 1, 1], (2, 1)),
                "image": np.zeros(2, np.int32),
            }
            for j, y in enumerate(rng.integers(0, 5, size=5)):
                rid = f"{pid}-{j}"
                revs.append({"review_id": rid, "product_id": pid, "label": int(y), "text": f"review {j}"})
                x = rng.normal(size=(4, TINY_DT)) * 0.5
                x[0] += (y - 2) * direction
                items["text_rvw"][rid] = {"x": x}
                items["region_rvw"][rid] = {
                    "x": rng.random((1, TINY_DR)),
                    "boxes": np.array([[0, 0, 1, 1]]),
                    "image": np.zeros(1, np.int32),
                }
        write_mrhp(root / "data", DS, "tiny", split, pd.DataFrame(prods), pd.DataFrame(revs))
    from mmss_lib.data.mrhp import load_mrhp
    from mmss_lib.features.fingerprint import category_frames, content_fingerprint

    pooled = category_frames({s: load_mrhp(root / "data", DS, "tiny", s) for s in ("train", "dev", "test")})
    for kind, its in items.items():
        frame, col = (pooled[0], "product_id") if kind.endswith("prd") else (pooled[1], "review_id")
        write_store(
            root / "features" / DS / "tiny" / kind,
            its,
            kind=kind.split("_")[0],
            dim=TINY_DR if "region" in kind else TINY_DT,
            manifest={
                "dataset": DS,
                "category": "tiny",
                "store": kind,
                "content_fingerprint": content_fingerprint(kind.split("_")[0], frame, col),
            },
        )
    return root


def _train_cmd(tiny: Path, runs: Path, epochs: int) -> list[str]:
    import sys

    return [
        sys.executable,
        "-m",
        "mmss_lib",
        "train",
        "--data-root",
        str(tiny / "data"),
        "--dataset",
        DS,
        "--categories",
        "tiny",
        "--features",
        str(tiny / "features"),
        "--runs",
        str(runs),
        "--epochs",
        str(epochs),
    ] + TINY_TRAIN


def _kill9_resume(ctx: Ctx, tiny: Path):
    """`mmss train` killed with SIGKILL after its first epoch's checkpoint, then rerun: it resumes, and
    its final metrics equal those of an uninterrupted run."""
    import signal
    import subprocess
    import time

    epochs = 6
    ctx.protect()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = ctx.root / "killed" / DS / "tiny" / "mmss" / "seed0"
    clean = subprocess.Popen(
        _train_cmd(tiny, ctx.root / "clean", epochs),
        env=env,  # the reference run
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc = subprocess.Popen(
        _train_cmd(tiny, ctx.root / "killed", epochs), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    while not (run / "last.pt").exists() and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (run / "metrics.json").exists(), "the run finished before the kill: nothing was interrupted"
    from mmss_lib.training.checkpoints import load_torch

    done = load_torch(run / "last.pt")["state"]["epoch"]
    assert 1 <= done < epochs
    r = subprocess.run(_train_cmd(tiny, ctx.root / "killed", epochs), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]  # the rerun resumes and finishes
    assert clean.wait() == 0, clean.stderr.read()[-2000:]
    got = json.loads((run / "metrics.json").read_text())
    ref = json.loads((ctx.root / "clean" / DS / "tiny" / "mmss" / "seed0" / "metrics.json").read_text())
    assert got["epochs_run"] == ref["epochs_run"] == epochs
    for key in ("best_epoch", "dev", "test", "threshold", "n_train"):
        assert got[key] == ref[key], (key, got[key], ref[key])
    hist = json.loads((run / "history.json").read_text())
    assert len(hist) == epochs if isinstance(hist, list) else True
    return got


def _corrupt_last_pt(ctx: Ctx, tiny: Path):
    """A last.pt cut in half (a crash mid-copy): refused with the file named; the file is kept."""
    from mmss_lib.training.trainer import TrainConfig, train_run

    run = ctx.root / "runs" / DS / "tiny" / "mmss" / "seed0"
    import torch

    cfg = TrainConfig(
        system="mmss",
        epochs=1,
        patience=50,
        batch_size=16,
        n_neg=3,
        lr=0.003,
        device="cpu",
        num_threads=1,
        model_options={"d": 16, "n_heads": 2, "ff_dim": 32, "head_hidden": 8},
    )
    again = dict(
        data_root=tiny / "data",
        dataset=DS,
        category="tiny",
        features_root=tiny / "features",
        run_dir=run,
        progress=False,
    )
    threads = torch.get_num_threads()
    try:
        train_run(cfg, **again)
        (run / "metrics.json").unlink()  # as if interrupted before the end
        data = (run / "last.pt").read_bytes()
        (run / "last.pt").write_bytes(data[: len(data) // 2])
        ctx.protect()
        return train_run(TrainConfig(**{**cfg.to_json(), "epochs": 2}), **again)
    finally:
        torch.set_num_threads(threads)


class CliFailed(MMSSError):
    """The CLI exited 1 with one clean line on stderr (the line is this error's message)."""


def _cli(*argv, tiny_args: bool = False):
    """Run ``mmss ARGV`` in process; expect exit status 1 and a one-line error (no traceback)."""

    def act(ctx: Ctx, *fixtures):
        import contextlib

        from mmss_lib import cli

        args = [str(a).format(root=ctx.root, tiny=fixtures[0] if fixtures else "") for a in argv]
        ctx.protect()
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli.main(args)
        lines = err.getvalue().strip().splitlines()
        assert code == 1 and lines and "Traceback" not in err.getvalue(), (code, err.getvalue()[-2000:])
        raise CliFailed(lines[-1])

    return act


def _study_cli(study, *argv):
    """Run ``python -m studies.STUDY ARGV`` in process; expect exit status 1 and a one-line error."""

    def act(ctx: Ctx):
        import contextlib
        import importlib

        from studies import run_main

        args = [str(a).format(root=ctx.root) for a in argv]
        ctx.protect()
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = run_main(importlib.import_module(f"studies.{study}").main, f"python -m studies.{study}", args)
        lines = err.getvalue().strip().splitlines()
        assert code == 1 and lines and "Traceback" not in err.getvalue(), (code, err.getvalue()[-2000:])
        raise CliFailed(lines[-1])

    return act


def _no_folder(ctx: Ctx, name: str, act):
    """``act(ctx)``, then: the study's --out folder ``{root}/name`` was not created (checked before any work)."""
    try:
        act(ctx)
    finally:
        assert not (ctx.root / name).exists(), f"{ctx.root / name} was created before the options were checked"


def _profile(text):
    def act(ctx: Ctx):
        from mmss_lib.reproduce import plan

        p = ctx.root / "bad.yaml"
        p.write_text(text)
        ctx.protect()
        return plan(p, out_dir=ctx.root / "out")

    return act


# ------------------------------------------------------------------------------------ issue 21 helpers
# (runs that cannot mix, data that cannot leak, results that cannot lie)

MINI = "mini"


def _mini_category(
    ctx: Ctx, *, labels=None, leak: str | None = None, fingerprint: bool = True, images: bool = False
) -> Path:
    """``demo/mini`` under the case folder: 6/2/2 products x 4 reviews, the four stores (with the
    content fingerprint of the data unless ``fingerprint`` is false). ``labels``: the training
    labels (default 0..3 per product); ``leak``: "product" / "review" puts a training product /
    review id into the test split; ``images``: one PNG per review (region stores see the files)."""
    import pandas as pd

    from mmss_lib.data.mrhp import load_mrhp, write_mrhp
    from mmss_lib.features.fingerprint import category_frames, content_fingerprint
    from mmss_lib.features.store import write_store

    root = ctx.root
    rng = np.random.default_rng(0)
    for split, n_prod in (("train", 6), ("dev", 2), ("test", 2)):
        prods, revs = [], []
        for p in range(n_prod):
            pid = f"P{split}{p}"
            if split == "test" and p == 0 and leak == "product":
                pid = "Ptrain0"
            prods.append({"product_id": pid, "name": f"product {p}", "text": f"product {p} of {split}"})
            for j in range(4):
                rid = f"{pid}-{j}" if not (split == "test" and p == 1 and j == 0 and leak == "review") else "Ptrain1-0"
                y = int(labels[4 * p + j]) if (labels is not None and split == "train") else j
                revs.append({"review_id": rid, "product_id": pid, "label": y, "text": f"review {j} of {pid}"})
        write_mrhp(root / "data", DS, MINI, split, pd.DataFrame(prods), pd.DataFrame(revs))
    if images:
        for split in ("train", "dev", "test"):
            for p in range(6 if split == "train" else 2):
                for j in range(4):
                    d = root / "data" / DS / MINI / "images" / "rvw" / f"P{split}{p}-{j}"
                    d.mkdir(parents=True, exist_ok=True)
                    from PIL import Image

                    Image.new("RGB", (8, 8), (j * 40, p * 30, 9)).save(d / "0.png")
    frames = {s: load_mrhp(root / "data", DS, MINI, s) for s in ("train", "dev", "test")}
    products, reviews = category_frames(frames)
    for name in ("text_prd", "text_rvw", "region_prd", "region_rvw"):
        kind, side = name.split("_")
        frame, col = (products, "product_id") if side == "prd" else (reviews, "review_id")
        ids = list(dict.fromkeys(frame[col].astype(str)))
        dim = TINY_DR if kind == "region" else TINY_DT
        items = {
            i: (
                {"x": rng.normal(size=(3, dim))}
                if kind == "text"
                else {"x": rng.random((1, dim)), "boxes": np.array([[0, 0, 1, 1]]), "image": np.zeros(1, np.int32)}
            )
            for i in ids
        }
        manifest = {"dataset": DS, "category": MINI, "store": name}
        if fingerprint:
            manifest["content_fingerprint"] = content_fingerprint(kind, frame, col)
        write_store(root / "features" / DS / MINI / name, items, kind=kind, dim=dim, manifest=manifest)
    return root


def _mini_cfg(**kw):
    from mmss_lib.training.trainer import TrainConfig

    return TrainConfig(
        **{
            **dict(
                system="mmss",
                epochs=1,
                patience=50,
                batch_size=16,
                n_neg=3,
                lr=0.003,
                device="cpu",
                num_threads=1,
                model_options={"d": 16, "n_heads": 2, "ff_dim": 32, "head_hidden": 8},
            ),
            **kw,
        }
    )


def _load_mini(ctx: Ctx, **kw):
    from mmss_lib.training.trainer import load_splits

    return load_splits(ctx.root / "data", DS, MINI, ctx.root / "features", _mini_cfg(**kw))


def _all_labels_equal(ctx: Ctx):
    """All training labels equal: refused before anything is written, no summary."""
    import torch

    from mmss_lib.model_selection.sweeps import run_experiment

    _mini_category(ctx, labels=[2] * 24)
    ctx.protect()
    threads = torch.get_num_threads()
    try:
        return run_experiment(
            data_root=ctx.root / "data",
            dataset=DS,
            categories=[MINI],
            features_root=ctx.root / "features",
            runs_root=ctx.root / "runs",
            systems=["mmss"],
            seeds=[0],
            base_config=_mini_cfg(),
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
        assert not list((ctx.root / "runs").rglob("summary*.csv")), "a summary was written for an untrained run"
        assert not list((ctx.root / "runs").rglob("metrics.json")), "metrics of an untrained model were written"


def _mcr_no_three_levels(ctx: Ctx):
    _mini_category(ctx, labels=[0, 1, 0, 1] * 6)  # two label levels per product: no MCR positives
    ctx.protect()
    from mmss_lib.training.trainer import fit

    splits = _load_mini(ctx)
    return fit(
        _mini_cfg(), splits, ctx.root / "run", threshold=1.0, progress=False, run_info={"dataset": DS, "category": MINI}
    )


def _leak(kind):
    def act(ctx: Ctx):
        _mini_category(ctx, leak=kind)
        ctx.protect()
        return _load_mini(ctx)

    return act


def _edit_review_text(ctx: Ctx, split: str = "train", row: str = "1", text: str = "edited after extraction"):
    p = ctx.root / "data" / DS / MINI / f"{MINI}.rvw.{split}"
    obj = json.loads(p.read_text())
    obj["content" if "content" in obj else "text"][row] = text
    p.write_text(json.dumps(obj))


def _stale_text_train(ctx: Ctx):
    _mini_category(ctx)
    _edit_review_text(ctx)
    ctx.protect()
    return _load_mini(ctx)


def _stale_text_folds(ctx: Ctx):
    from mmss_lib.model_selection.sweeps import run_experiment

    _mini_category(ctx)
    _edit_review_text(ctx, split="test", row="2")
    ctx.protect()
    return run_experiment(
        data_root=ctx.root / "data",
        dataset=DS,
        categories=[MINI],
        features_root=ctx.root / "features",
        runs_root=ctx.root / "runs",
        systems=["mmss"],
        seeds=[0],
        base_config=_mini_cfg(),
        progress=False,
        folds=2,
    )


def _stale_image_train(ctx: Ctx):
    from PIL import Image

    _mini_category(ctx, images=True)
    Image.new("RGB", (9, 8), (1, 2, 3)).save(ctx.root / "data" / DS / MINI / "images" / "rvw" / "Pdev1-2" / "0.png")
    ctx.protect()
    return _load_mini(ctx)


def _labels_only_changed(ctx: Ctx):
    """Datasets that differ only in labels share one feature store (the fingerprint ignores labels)."""
    _mini_category(ctx, images=True)
    p = ctx.root / "data" / DS / MINI / f"{MINI}.rel.train"
    obj = json.loads(p.read_text())
    obj["upvotes"] = {k: (int(v) + 1) % 5 for k, v in obj["upvotes"].items()}
    p.write_text(json.dumps(obj))
    ctx.protect()
    splits = _load_mini(ctx)
    assert splits["train"].n == 24
    return splits


def _old_store_no_fingerprint(ctx: Ctx):
    _mini_category(ctx, fingerprint=False)
    _edit_review_text(ctx)
    ctx.protect()
    with pytest.warns(UserWarning, match="no content fingerprint"):
        return _load_mini(ctx)


def _stale_text_extract(ctx: Ctx, tiny_bert_dir):
    """Review texts edited after extraction, `extract` rerun: refused naming --overwrite (it said
    "0 shards written, 1 skipped" and kept the old features)."""
    from mmss_lib.features.extract import extract_category

    _mini_category(ctx)
    feats = ctx.root / "extracted"
    kw = dict(text_model=tiny_bert_dir, text_max_len=16, device="cpu", progress=False, stores=("text_rvw",))
    extract_category(ctx.root / "data", DS, MINI, feats, **kw)
    again = extract_category(ctx.root / "data", DS, MINI, feats, **kw)  # unchanged: skipped
    assert again["stores"]["text_rvw"]["shards_written"] == 0
    _edit_review_text(ctx)
    ctx.protect()
    return extract_category(ctx.root / "data", DS, MINI, feats, **kw)


def _region_batch_neighbours(ctx: Ctx):
    """An item's region features are the same extracted alone and among other images (also after
    a bad image in the chunk): one forward per image."""
    from mmss_lib.features.regions import make_region_extractor

    a = ctx.image("a.png", "RGB", size=(40, 30))
    b = ctx.image("b.png", "L", size=(64, 20))
    bad = ctx.image("bad.jpg", raw=b"not an image")
    c = ctx.image("c.png", "RGB", size=(40, 30))
    ctx.protect()
    try:
        ex = make_region_extractor(
            None,
            region_boxes="detector",
            allow_random_weights=True,
            device="cpu",
            min_size=64,
            max_size=96,
            rpn_post_nms_top_n=20,
            max_boxes=3,
            min_boxes=1,
        )
    except ModelNotAvailableError as exc:
        pytest.skip(f"no region extractor available: {exc}")
    alone = ex.extract_items([[str(a)]], ["i0"], batch_size=8)[0]
    batched = ex.extract_items([[str(b)], [str(bad), str(a)], [str(c)]], ["i1", "i0", "i2"], batch_size=8)[1]
    np.testing.assert_array_equal(alone["x"], batched["x"])  # float16 features, bit for bit
    np.testing.assert_array_equal(alone["boxes"], batched["boxes"])
    return batched


def _two_trains_one_folder(ctx: Ctx, tiny: Path):
    """Two real `mmss train` processes on one runs folder with different settings: the second is
    refused (naming the run and the first one's PID) while the first trains; the folder holds one
    consistent run (config, history and metrics of the first)."""
    import subprocess
    import time

    ctx.protect()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = ctx.root / "runs"
    run = runs / DS / "tiny" / "mmss" / "seed0"
    # long enough (40 epochs) that the second process, which needs seconds to start, meets it training
    first = subprocess.Popen(
        _train_cmd(tiny, runs, 40), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    t0 = time.time()
    while not (run / "config.json").exists() and first.poll() is None and time.time() - t0 < 120:
        time.sleep(0.01)
    assert first.poll() is None, "the first run finished before the second started: nothing ran at once"
    cmd = [a if a != "0.003" else "0.01" for a in _train_cmd(tiny, runs, 1)]  # --epochs 1 --lr 0.01
    second = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert first.wait() == 0, first.stderr.read()[-2000:]
    assert second.returncode == 1, (second.returncode, second.stderr[-2000:])
    err = second.stderr.strip().splitlines()
    assert "Traceback" not in second.stderr and err[-1].startswith("mmss train: error:"), second.stderr[-2000:]
    assert f"PID {first.pid}" in err[-1] and "seed0" in err[-1] and "in use by another process" in err[-1], err[-1]
    cfg = json.loads((run / "config.json").read_text())["config"]
    metrics = json.loads((run / "metrics.json").read_text())
    hist = json.loads((run / "history.json").read_text())
    assert cfg["epochs"] == 40 and cfg["lr"] == 0.003 and metrics["epochs_run"] == len(hist) >= 1, (cfg, metrics)
    # the lock file stays; its holder is gone, so it blocks nothing: the same run is now skipped as finished
    again = subprocess.run(_train_cmd(tiny, runs, 40), env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((run / "metrics.json").read_text()) == metrics
    return metrics


def _lock_held(ctx: Ctx):
    """A run folder locked by another holder: train_run refuses at once, naming the folder and PID."""
    import multiprocessing as mp

    from mmss_lib.training.trainer import train_run

    _mini_category(ctx)
    run = ctx.root / "runs" / "seed0"
    ready, stop = mp.get_context("spawn").Event(), mp.get_context("spawn").Event()
    holder = mp.get_context("spawn").Process(target=_hold_lock, args=(str(run), ready, stop))
    holder.start()
    try:
        assert ready.wait(60)
        ctx.protect()
        return train_run(
            _mini_cfg(),
            data_root=ctx.root / "data",
            dataset=DS,
            category=MINI,
            features_root=ctx.root / "features",
            run_dir=run,
            progress=False,
        )
    finally:
        stop.set()
        holder.join(60)


def _hold_lock(run: str, ready, stop) -> None:
    from mmss_lib.training.run_folder import run_lock

    with run_lock(run):
        ready.set()
        stop.wait(60)


def _disk_full(kind):
    def act(ctx: Ctx):
        import errno
        from unittest import mock

        from mmss_lib.utils import atomic_path

        p = ctx.root / "run" / "last.pt"
        p.parent.mkdir(parents=True)
        p.write_bytes(b"the previous checkpoint")
        ctx.protect()
        if kind == "enospc":
            with atomic_path(p) as tmp:
                tmp.write_bytes(b"partial")
                raise OSError(errno.ENOSPC, "No space left on device")
        with mock.patch("shutil.disk_usage", return_value=shutil._ntuple_diskusage(10**9, 10**9, 0)):
            with atomic_path(p) as tmp:  # torch's writer names no errno
                tmp.write_bytes(b"partial")
                raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 64 vs 0")

    return act


def _ray_nothing_listening(ctx: Ctx):
    import time

    from mmss_lib.training.executors import RayExecutor

    pytest.importorskip("ray")
    ctx.protect()
    t0 = time.monotonic()
    try:
        return RayExecutor("127.0.0.1:1", connect_timeout=1.5)._connect()
    finally:
        assert time.monotonic() - t0 < 20, "the connect timeout was not honoured"


def _ray_token_like_the_head(preset):
    """With a token at hand and RAY_AUTH_MODE unset, the driver turns token auth on as `ray start
    --head` did (a separate process: Ray's configuration is process-wide); a preset mode is kept."""

    def act(ctx: Ctx):
        import subprocess
        import sys

        pytest.importorskip("ray")
        tok = ctx.root / "token"
        tok.write_text("0123456789abcdef0123456789abcdef")
        ctx.protect()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env["RAY_AUTH_TOKEN_PATH"] = str(tok)
        if preset:
            env["RAY_AUTH_MODE"] = preset
        code = (
            "import os; from mmss_lib.ray_cluster import token_auth_like_the_head as f; "
            "f('10.0.0.1:6379'); print('MODE', os.environ.get('RAY_AUTH_MODE'))"
        )
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert f"MODE {preset or 'token'}" in r.stdout, (r.stdout, r.stderr[-2000:])
        return r

    return act


def _model_option(options):
    def act(ctx: Ctx):
        from mmss_lib.training.trainer import TrainConfig, build_model

        ctx.protect()
        return build_model(TrainConfig(device="cpu", model_options=options), 8, 12)

    return act


def _experiment_args(**kw):
    def act(ctx: Ctx):
        from mmss_lib.model_selection.sweeps import run_experiment

        ctx.protect()
        args = dict(
            data_root=ctx.root / "data",
            dataset=DS,
            categories=[MINI],
            features_root=ctx.root / "f",
            runs_root=ctx.root / "runs",
            systems=["mmss"],
            seeds=[0],
            progress=False,
        )
        return run_experiment(**{**args, **kw})

    return act


def _all_pairs_huge(ctx: Ctx):
    from mmss_lib.data.pairs import sample_pairs

    ctx.protect()
    n = 100_000
    return sample_pairs(["B0HUGE"] * n + ["B0SMALL"] * 2, np.r_[np.arange(n) % 5, [0, 1]], scheme="all")


def _predict_obj(obj, *, bad_image: bool = False, encoding: str | None = None):
    """predict input JSON ``obj`` (a bad image file 'bad.jpg' beside it if asked; the text written
    in ``encoding`` instead of UTF-8 if given), read and checked as `mmss predict` does before it
    loads any model."""

    def act(ctx: Ctx):
        from mmss_lib.predict import _check_images, _check_inputs, _read_input

        if bad_image:
            ctx.image("bad.jpg", raw=b"\xff\xd8\xff\xe0 truncated")
        p = ctx.root / "input.json"
        p.write_bytes(json.dumps(obj, ensure_ascii=False).encode(encoding or "utf-8"))
        ctx.protect()
        product, reviews = _read_input(p)
        _check_inputs(product, reviews)
        return _check_images(product, reviews)

    return act


def _runs_root_unreadable(ctx: Ctx):
    """`mmss explore --runs /`: listing the runs meets folders it may not read (``/proc/1/cwd``
    raised PermissionError); they are skipped, the readable run is listed."""
    import pathlib
    from unittest import mock

    from mmss_lib.explore.explorer import discover_runs

    (ctx.root / "runs" / "demo" / "home" / "mmss" / "seed0").mkdir(parents=True)
    (ctx.root / "runs" / "demo" / "home" / "locked").mkdir()
    (ctx.root / "runs" / "demo" / "locked").mkdir()
    ctx.protect()
    is_dir = pathlib.Path.is_dir

    def guarded(self):
        if self.name == "locked":
            raise PermissionError(13, "Permission denied", str(self))
        return is_dir(self)

    with mock.patch.object(pathlib.Path, "is_dir", guarded):
        runs = discover_runs(ctx.root / "runs")
    assert [(r.system, r.seed) for r in runs] == [("mmss", 0)], runs
    assert discover_runs("/") is not None


def _out_file_cli(*argv):
    """``mmss ARGV FILE``: an option that names a folder given an existing file."""

    def act(ctx: Ctx):
        (ctx.root / "afile").write_text("not a folder")
        return _cli(*argv, "{root}/afile")(ctx)

    return act


def _out_is_file(ctx: Ctx):
    (ctx.root / "afile").write_text("not a folder")
    return _cli("reproduce", "--profile", "smoke", "--dry-run", "--out", "{root}/afile/out")(ctx)


PRED_OK = {"text": "red shirt", "image_files": []}
TRAIN_ARGS = (
    "train",
    "--data-root",
    "{root}/data",
    "--dataset",
    "demo",
    "--categories",
    "c",
    "--features",
    "{root}/f",
    "--runs",
    "{root}/runs",
    "--no-progress",
)


# ------------------------------------------------------------------------------------ round 3 helpers
# (issue "Quality round 3": run-folder locks, leaked splits under floors, make-demo options,
# invisible texts, the explorer's stop and port, alias bombs in profiles, predict at scale)

R3 = 28  # the issue number of "Quality round 3" in the corpus counts


def _lock_unusable(kind: str):
    """The run folder's ``.lock`` is a folder, a read-only file or an immutable file while the
    folder is writable: ``train_run`` refuses, naming the lock file, before anything is written
    (it used to train unlocked). As root a file's mode does not stop the opening, so the errno a
    user gets (EACCES; EPERM for an immutable file) is answered by ``os.open`` for that path."""

    def act(ctx: Ctx):
        import errno
        from unittest import mock

        from mmss_lib.training.trainer import train_run

        _mini_category(ctx)
        run = ctx.root / "runs" / "seed0"
        lock = run / ".lock"
        if kind == "dir":
            lock.mkdir(parents=True)
            (lock / "kept").write_text("a file inside the folder")
        else:
            run.mkdir(parents=True)
            lock.write_text("12345\n")
            lock.chmod(0o444)
        ctx.protect()
        code = {"readonly": errno.EACCES, "immutable": errno.EPERM}.get(kind)
        real_open = os.open

        def refusing_open(path, flags, *a, **kw):
            if code is not None and (kind == "immutable" or os.geteuid() == 0) and Path(path) == lock:
                raise OSError(code, os.strerror(code), str(path))
            return real_open(path, flags, *a, **kw)

        try:
            with mock.patch("os.open", refusing_open):
                return train_run(
                    _mini_cfg(),
                    data_root=ctx.root / "data",
                    dataset=DS,
                    category=MINI,
                    features_root=ctx.root / "features",
                    run_dir=run,
                    progress=False,
                )
        finally:
            if lock.is_file():
                lock.chmod(0o644)
            assert not (run / "config.json").exists(), "the run started without its lock"

    return act


def _leak_floor(system: str, leak: str = "product"):
    """A product (or review) in both the train and the test split, and a floor or ceiling (the
    category has cues files, so a ceiling gets that far): refused as trained systems refuse it
    (they used to score leaked splits silently)."""

    def act(ctx: Ctx):
        import pandas as pd

        from mmss_lib.data.mrhp import load_mrhp, split_file
        from mmss_lib.data.synthetic import CUE_COLUMNS
        from mmss_lib.training.trainer import train_run

        _mini_category(ctx, leak=leak)
        for split in ("train", "dev", "test"):  # planted cues, as make-demo writes them
            ids = load_mrhp(ctx.root / "data", DS, MINI, split)[1]["review_id"]
            pd.DataFrame({c: (ids if c == "review_id" else 1) for c in CUE_COLUMNS}).to_json(
                split_file(ctx.root / "data", DS, MINI, "cues", split)
            )
        ctx.protect()
        run = ctx.root / "runs" / system
        try:
            return train_run(
                _mini_cfg(system=system, model_options={}),
                data_root=ctx.root / "data",
                dataset=DS,
                category=MINI,
                features_root=ctx.root / "features",
                run_dir=run,
                progress=False,
            )
        finally:
            assert not list(run.glob("*.json")) and not list(run.glob("scores_*.csv")), "files of a leaked run"

    return act


def _corrupt_cue(column: str, value):
    """A ceiling fitted on a cues file whose first training review has ``column`` = ``value``
    (null, NaN, out of range): refused naming the file, row and column (a NaN cue used to be read as
    0), before the run writes anything."""

    def act(ctx: Ctx):
        import pandas as pd

        from mmss_lib.data.mrhp import load_mrhp, split_file
        from mmss_lib.data.synthetic import CUE_COLUMNS
        from mmss_lib.training.trainer import train_run

        _mini_category(ctx)
        for split in ("train", "dev", "test"):
            ids = load_mrhp(ctx.root / "data", DS, MINI, split)[1]["review_id"]
            cues = pd.DataFrame({c: (ids if c == "review_id" else 1) for c in CUE_COLUMNS}).astype(
                {c: "float64" for c in CUE_COLUMNS if c != "review_id"}
            )
            if split == "train":
                cues.loc[cues.index[0], column] = value
            cues.to_json(split_file(ctx.root / "data", DS, MINI, "cues", split))
        ctx.protect()
        run = ctx.root / "runs" / "ceiling_all"
        try:
            return train_run(
                _mini_cfg(system="ceiling_all", model_options={}),
                data_root=ctx.root / "data",
                dataset=DS,
                category=MINI,
                features_root=ctx.root / "features",
                run_dir=run,
                progress=False,
            )
        finally:
            assert not list(run.glob("*.json")) and not list(run.glob("scores_*.csv")), "files of a refused run"

    return act


def _make_demo_refused(*argv):
    """`mmss make-demo` with options it must refuse before writing anything."""

    def act(ctx: Ctx):
        try:
            return _cli("make-demo", "--out", "{root}/demo", "--products-per-category", "40", *argv)(ctx)
        finally:
            assert not (ctx.root / "demo").exists(), "make-demo wrote files before refusing"

    return act


def _make_demo_library_no_train(ctx: Ctx):
    from mmss_lib.data.synthetic import make_demo

    ctx.protect()
    try:
        return make_demo(ctx.root / "demo", n_products=40, test_frac=0.9, dev_frac=0.9, categories=["home"])
    finally:
        assert not (ctx.root / "demo").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bench_explore_sigterm(ctx: Ctx):
    """`mmss bench explore` (temporary runs folder under TMPDIR = the case folder) sent SIGTERM while
    it works: it exits and removes its temporary folder (a ~370 MB folder used to stay behind)."""
    import signal
    import subprocess
    import sys
    import time

    tmp = ctx.root / "tmp"
    tmp.mkdir()
    ctx.protect()
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mmss_lib",
            "bench",
            "explore",
            "--products",
            "3000",
            "--no-images",
            "--category",
            "home",
            "--clicks",
            "2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not any((p / "data").exists() for p in tmp.glob("mmss-bench-explore-*")):  # generating the data
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:] if proc.stderr else ""
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and not list(tmp.iterdir()), (proc.returncode, list(tmp.iterdir()))


def _explore_stopped(how: str):
    """`mmss explore` in a subprocess (temporary files under the case folder: TMPDIR). ``"sigterm"``:
    once a page is served and its kernel runs, SIGTERM to the mmss process alone (not its group,
    as `kill PID` or a service manager sends it): Voila, its kernels and the temporary notebook
    folder go with it (Voila used to serve on). ``"kill9"`` (issue 38, E4): the same with SIGKILL,
    which runs no clean-up in `mmss explore`: Voila's supervisor dies with it and takes Voila, the
    kernels and the folder along within seconds (they kept serving). ``"host"`` (E3): a request
    with a foreign Host header, or without the printed token, gets no page (HTTP 200 before).
    ``"port0"``: ``--port 0`` prints the port it serves on (it printed ``:0``)."""

    def act(ctx: Ctx):
        import re
        import signal
        import subprocess
        import sys
        import time
        import urllib.error
        import urllib.request

        import psutil

        for mod in ("voila", "ipywidgets"):
            pytest.importorskip(mod)
        tmp = ctx.root / "tmp"
        tmp.mkdir()
        ctx.protect()
        env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
        port = "0" if how == "port0" else str(_free_port())
        log = open(ctx.root / "explore.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "mmss_lib", "explore", "--runs", str(ctx.root / "runs"), "--port", port],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            start_new_session=True,
        )
        family: list = []
        try:
            line = ""
            while "serving" not in line and proc.poll() is None:
                line = proc.stdout.readline()
            m = re.search(r"at (http://127\.0\.0\.1:(\d+)/\?token=([0-9a-f]{32,}))\s", line)
            assert m, (line, (ctx.root / "explore.log").read_text()[-2000:])
            assert int(m.group(2)) != 0 and (how == "port0" or m.group(2) == port), line
            url, deadline = m.group(1), time.time() + 180
            while True:  # the printed address serves the page
                try:
                    with urllib.request.urlopen(url, timeout=60) as r:
                        assert r.status == 200 and b"<html" in r.read().lower()
                    break
                except OSError:
                    assert proc.poll() is None and time.time() < deadline, (ctx.root / "explore.log").read_text()[
                        -2000:
                    ]
                    time.sleep(0.3)
            family = psutil.Process(proc.pid).children(recursive=True)
            assert any("ipykernel" in " ".join(p.cmdline()) for p in family), "no kernel runs the page"
            assert any(p.name.startswith("mmss-explore-") for p in tmp.iterdir())  # the served notebook
            if how == "host":
                bare = url.split("?")[0]
                for req in (
                    urllib.request.Request(url, headers={"Host": "evil.example.com"}),
                    urllib.request.Request(bare),
                ):
                    opener = urllib.request.build_opener(_NoRedirect)
                    try:
                        with opener.open(req, timeout=60) as r:
                            body = r.read().lower()
                            assert r.status != 200 or b"voila" not in body or b"login" in body, (req.headers, r.status)
                    except urllib.error.HTTPError as e:
                        assert e.code in (302, 403), (req.headers, e.code)
                import http.cookiejar

                jar = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
                jar.open(url, timeout=60).read()  # the token URL once: a login cookie, as a browser keeps it
                with jar.open(bare, timeout=60) as r:
                    assert r.status == 200 and b"login" not in r.geturl().encode()
            proc.send_signal(signal.SIGKILL if how == "kill9" else signal.SIGTERM)
            if how == "kill9":
                assert proc.wait(10) == -signal.SIGKILL
                t0 = time.time()
                _, alive = psutil.wait_procs(family, timeout=20)
                assert not alive, f"still running after kill -9: {[' '.join(p.cmdline()[:4]) for p in alive]}"
                assert time.time() - t0 < 20
                while list(tmp.iterdir()) and time.time() - t0 < 20:
                    time.sleep(0.2)
            else:
                assert proc.wait(60) == 128 + signal.SIGTERM
                _, alive = psutil.wait_procs(family, timeout=30)
                assert not alive, f"still running after SIGTERM: {[' '.join(p.cmdline()[:4]) for p in alive]}"
            assert not list(tmp.iterdir()), f"left behind: {sorted(p.name for p in tmp.iterdir())}"
            return url
        finally:
            log.close()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            for p in family:
                try:
                    p.kill()
                except psutil.Error:
                    pass

    return act


class _NoRedirect(__import__("urllib.request").request.HTTPRedirectHandler):
    """urllib without redirects: a refused request's 302 to the login page is seen as such."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _alias_bomb(depth: int = 9, width: int = 9) -> str:
    """A "billion laughs" YAML flow value (~1 KB): ``width ** depth`` values once expanded."""
    value = "&a0 [" + ", ".join(["0"] * width) + "]"
    for i in range(1, depth):
        value = f"&a{i} [" + ", ".join([value] + [f"*a{i - 1}"] * (width - 1)) + "]"
    return value


def _profile_quick(text):
    """:func:`_profile`, refused within seconds (the alias bomb used to hang `--dry-run`)."""

    def act(ctx: Ctx):
        import time

        t0 = time.monotonic()
        try:
            return _profile(text)(ctx)
        finally:
            assert time.monotonic() - t0 < 10, "the profile was not refused at once"

    return act


class _HashEncoder:
    """A stand-in text encoder (no model to load): token features drawn from each text's bytes,
    so a text's features never depend on the other texts of a call; records each call's size."""

    name, dim = "hash", TINY_DT

    def __init__(self):
        self.calls: list[int] = []

    def fingerprint(self) -> str:
        return "hash"

    def encode(self, texts):
        self.calls.append(len(texts))
        return [
            np.random.default_rng(list(t.encode())).normal(size=(1 + len(t) % 4, TINY_DT)).astype(np.float16)
            for t in texts
        ]


def _predict_many_reviews(ctx: Ctx, tiny: Path):
    """`mmss predict` on one product with 10,000 reviews (it put them through one forward pass:
    minutes, then out of memory): encoded and scored in batches of the run's eval_batch_size, and
    a review's score equals the one it gets in a batch of five."""
    from unittest import mock

    import torch

    import mmss_lib.training.trainer
    from mmss_lib.predict import predict
    from mmss_lib.training.trainer import train_run

    cfg, run = _mini_cfg(), ctx.root / "run"
    threads = torch.get_num_threads()
    try:
        train_run(
            cfg,
            data_root=tiny / "data",
            dataset=DS,
            category="tiny",
            features_root=tiny / "features",
            run_dir=run,
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    ctx.protect()
    n = 10_000
    reviews = [{"review_id": f"r{i}", "text": f"review {i} " + "detail " * (i % 7)} for i in range(n)]
    from conftest import counting_build_model

    seen: list[int] = []
    counting_build = counting_build_model(seen)  # records the reviews of every forward pass
    enc, enc5 = _HashEncoder(), _HashEncoder()
    with mock.patch.object(mmss_lib.training.trainer, "build_model", counting_build):
        df = predict(run, {"text": "product 0"}, reviews, encoder=enc)
        bs = cfg.eval_batch_size
        assert sum(seen) == n and max(seen) == bs and len(seen) == -(-n // bs), seen[:5]
        assert sum(enc.calls) == n + 1 and max(enc.calls) == bs  # + the product text
        five = predict(run, {"text": "product 0"}, reviews[:5], encoder=enc5, batch_size=5)
    got = df.set_index("review_id").loc[five["review_id"], "score"].to_numpy()
    np.testing.assert_array_equal(got, five["score"].to_numpy())
    return df


# ------------------------------------------------------------------------------------ round 4 helpers
# (issue 38 "Quality round 4": a rerun never returns stale results, studies stay one study, and
# the new surfaces fail cleanly)

R4 = 38


def _mini_sweep(ctx: Ctx, features: str = "features", **kw):
    """``run_experiment`` of one tiny MM-SS run on ``demo/mini`` (torch's thread count restored)."""
    import torch

    from mmss_lib.model_selection.sweeps import run_experiment

    threads = torch.get_num_threads()
    try:
        return run_experiment(
            **{
                **dict(
                    data_root=ctx.root / "data",
                    dataset=DS,
                    categories=[MINI],
                    features_root=ctx.root / features,
                    runs_root=ctx.root / "runs",
                    systems=["mmss"],
                    seeds=[0],
                    base_config=_mini_cfg(),
                    progress=False,
                ),
                **kw,
            }
        )
    finally:
        torch.set_num_threads(threads)


def _relabel(ctx: Ctx, split: str = "train") -> None:
    p = ctx.root / "data" / DS / MINI / f"{MINI}.rel.{split}"
    obj = json.loads(p.read_text())
    obj["upvotes"] = {k: (int(v) + 1) % 4 for k, v in obj["upvotes"].items()}
    p.write_text(json.dumps(obj))


def _rerun_after_relabel(ctx: Ctx):
    """O30: the data regenerated with other labels (texts, images and stores unchanged), then the
    same `mmss train` on the old runs folder: it returned the old run's metrics."""
    _mini_category(ctx)
    _mini_sweep(ctx)
    _relabel(ctx, "test")
    ctx.protect()
    return _mini_sweep(ctx)


def _other_text_features(ctx: Ctx, root: str = "features64"):
    """A copy of the mini stores whose text_rvw holds 5 token rows per review instead of 3 (as a
    store extracted at another --text-max-len: same texts, same content fingerprint)."""
    from mmss_lib.features.store import FeatureStore, write_store

    src, dst = ctx.root / "features", ctx.root / root
    shutil.copytree(src, dst)
    path = dst / DS / MINI / "text_rvw"
    old = FeatureStore(path)
    manifest = {k: old.manifest[k] for k in ("dataset", "category", "store", "content_fingerprint")}
    ids = [i for s in old.manifest["shards"] for i in json.loads((path / s / "ids.json").read_text())]
    shutil.rmtree(path)
    rng = np.random.default_rng(1)
    write_store(
        path, {i: {"x": rng.normal(size=(5, TINY_DT))} for i in ids}, kind="text", dim=TINY_DT, manifest=manifest
    )


def _rerun_other_features(ctx: Ctx):
    """O29: a finished run, then `mmss train --features F64` (other text features) on its runs folder:
    it returned the run trained on the first stores, without a word."""
    _mini_category(ctx)
    _mini_sweep(ctx)
    _other_text_features(ctx)
    ctx.protect()
    return _mini_sweep(ctx, features="features64")


def _mini_tune(ctx: Ctx, features: str = "features", **kw):
    """``mmss tune`` (the library call) of a tiny MM-SS study on ``demo/mini``, one trial at a time."""
    import torch

    from mmss_lib.model_selection.search import tune

    threads = torch.get_num_threads()
    try:
        return tune(
            **{
                **dict(
                    data_root=ctx.root / "data",
                    dataset=DS,
                    category=MINI,
                    features_root=ctx.root / features,
                    tune_root=ctx.root / "tune",
                    system="mmss",
                    base_config=_mini_cfg(),
                    n_trials=1,
                    parallel=1,
                    progress=False,
                ),
                **kw,
            }
        )
    finally:
        torch.set_num_threads(threads)


def _study_other_features(ctx: Ctx):
    """U28: a finished study continued with `--features F64 --trials 2`: its trials would mix two
    feature sets (it was accepted, and best.json chose among both)."""
    _mini_category(ctx)
    _mini_tune(ctx)
    _other_text_features(ctx)
    ctx.protect()
    return _mini_tune(ctx, features="features64", n_trials=2)


def _best_json(edit: dict | None = None, *, drop: tuple = (), params: dict | None = None):
    """`mmss train --tuned` (``apply_tuned``) of a hand-written best.json of demo/mini mmss with
    ``edit`` applied to its fields and ``params`` to its params (T4-T14 of the probe)."""

    def act(ctx: Ctx):
        from mmss_lib.model_selection.tuned import apply_tuned

        best = {
            "study": f"{DS}/{MINI}/mmss",
            "system": "mmss",
            "variant": "full",
            "dataset": DS,
            "category": MINI,
            "trial": 1,
            "dev_MAP": 0.5,
            "params": {"lr": 1e-3, "n_neg": 3, "dropout": 0.1, "batch_size": 16, "weight_decay": 0.0},
        }
        best.update(edit or {})
        best["params"] = {**best["params"], **(params or {})} if params != {} else {}
        for k in drop:
            best["params"].pop(k, None)
        path = ctx.root / "tune" / DS / MINI / "mmss" / "best.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(best, allow_nan=True))
        ctx.protect()
        return apply_tuned(_mini_cfg(), ctx.root / "tune", DS, MINI)

    return act


def _study_journal_damaged(how: str):
    """U32-U34: a finished study whose ``study.journal`` lost its last bytes, half its bytes, or got
    a garbage line, continued: Optuna's JSONDecodeError traceback named no file."""

    def act(ctx: Ctx):
        _mini_category(ctx)
        _mini_tune(ctx)
        journal = ctx.root / "tune" / DS / MINI / "mmss" / "study.journal"
        data = journal.read_bytes()
        if how == "tail":
            journal.write_bytes(data[:-100])
        elif how == "half":
            journal.write_bytes(data[: len(data) // 2])
        else:
            lines = data.splitlines(keepends=True)
            journal.write_bytes(b"".join(lines[:3] + [b'{"op_code": 99, "garbage": true\n'] + lines[3:]))
        ctx.protect()
        return _mini_tune(ctx, n_trials=2)

    return act


def _atomic_file_modes(ctx: Ctx):
    """X1: every file written through utils.atomic_path was 0600 whatever the umask (another user
    of a shared folder got "Permission denied" on the tables)."""
    import stat

    from mmss_lib.utils import atomic_write_json

    ctx.protect()
    for mask, mode in ((0o022, 0o644), (0o077, 0o600)):
        old = os.umask(mask)
        try:
            atomic_write_json(ctx.root / f"out{mask:o}" / "table.json", {"MAP": 0.5})
        finally:
            os.umask(old)
        assert stat.S_IMODE((ctx.root / f"out{mask:o}" / "table.json").stat().st_mode) == mode


def _duplicate_row_key(ctx: Ctx):
    """DA5: row key "1" written twice in every column of rvw.train and rel.train (review
    B000000001-1 given the key of B000000001-0): json kept the last entry, one review fewer, rc 0."""
    ctx.mrhp()
    for kind in ("rvw", "rel"):
        p = ctx.split_path(kind)
        text = p.read_text()
        p.write_text(text.replace('"1":', '"0":'))
    ctx.protect()
    return ctx.load()


def _stats_product_in_two_splits(ctx: Ctx):
    """Case 19: `mmss stats` on data with a training product also in the test split: counted twice,
    rc 0 (train refuses it); now flagged: a warning naming both files and the id, and a count."""
    from mmss_lib.data.mrhp import dataset_stats

    _mini_category(ctx, leak="product")
    ctx.protect()
    with pytest.warns(UserWarning) as seen:
        st = dataset_stats(ctx.root / "data", DS, [MINI])
    assert st.attrs["ids_in_two_splits"] == {MINI: 5}  # the product and its four reviews (same ids)
    raise DataError(str(seen[0].message))


def _product_without_reviews(ctx: Ctx):
    """DA10: a product row without any review was counted without a word: now a warning naming the
    file and the product (it is still counted: nothing to rank is not an error)."""
    ctx.mrhp()
    p = ctx.split_path("prd")
    obj = json.loads(p.read_text())
    for col, v in (("product_id", "B000000009"), ("name", "lonely"), ("description", ["x"]), ("img_url", [])):
        obj[col]["2"] = v
    p.write_text(json.dumps(obj))
    ctx.protect()
    with pytest.warns(UserWarning, match=r"cat\.prd\.train: 1 of 3 product\(s\) have no review .*'B000000009'"):
        prd, _ = ctx.load()
    assert len(prd) == 3 and prd.attrs["without_reviews"] == 1


TUNE_ARGS = (
    "tune",
    "--data-root",
    "{root}/data",
    "--dataset",
    "demo",
    "--categories",
    "c",
    "--features",
    "{root}/f",
    "--out",
    "{root}/tune",
    "--no-progress",
)


def _num_threads_oversubscribed(ctx: Ctx):
    """--num-threads 1000 on a 2-core machine ran 3x slower without a word: now a warning."""
    from mmss_lib.model_selection.sweeps import build_parser, check_common_args

    ctx.protect()
    args = build_parser("mmss train").parse_args(
        [a.format(root=ctx.root) for a in TRAIN_ARGS[1:]] + ["--num-threads", "1000"]
    )
    with pytest.warns(UserWarning, match=r"--num-threads 1000: more threads than this machine's \d+ core"):
        check_common_args(args)


def _device_cuda_without_gpu(ctx: Ctx):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    return _cli(*TRAIN_ARGS, "--device", "cuda")(ctx)


def _predict_nested(ctx: Ctx):
    """P6: predict input nested 100,000 levels deep: a RecursionError traceback."""
    (ctx.root / "in.json").write_text('{"product": ' + "[" * 100_000 + "]" * 100_000 + ', "reviews": []}')
    return _cli("predict", "--run", "{root}", "--input", "{root}/in.json")(ctx)


def _predict_csv_folder(ctx: Ctx):
    """P16: `--csv` an existing folder: refused before any scoring (it failed after 12 s of it)."""
    (ctx.root / "csvdir").mkdir()
    return _cli("predict", "--run", "{root}/norun", "--input", "{root}/none.json", "--csv", "{root}/csvdir")(ctx)


def _predict_other_system_checkpoint(ctx: Ctx, tiny: Path):
    """P11: a best.pt whose config says ``mcr`` but holds MM-SS weights: a state_dict traceback after
    the encoders had loaded; now one line naming the file before any encoder is loaded."""
    import torch

    from mmss_lib.predict import predict
    from mmss_lib.training.trainer import train_run

    run = ctx.root / "run"
    threads = torch.get_num_threads()
    try:
        train_run(
            _mini_cfg(),
            data_root=tiny / "data",
            dataset=DS,
            category="tiny",
            features_root=tiny / "features",
            run_dir=run,
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    ck = torch.load(run / "best.pt", weights_only=True)
    ck["config"] = {**ck["config"], "system": "mcr", "model_options": {}}
    torch.save(ck, run / "best.pt")
    ctx.protect()
    return predict(run, {"text": "a product"}, [{"review_id": "r0", "text": "fine"}], encoder=_HashEncoder())


# ------------------------------------------------------------------------------------ the corpus


@dataclass
class C:
    name: str
    command: str
    act: Callable
    error: type | None = None
    says: tuple = ()
    policy: str = ""  # "module: quoted words of its docstring" for error=None cases
    fixed: bool = False  # wrong before issue `issue` (13 or 21), fixed there
    issue: int = 13  # the issue that added the case
    needs: tuple = ()  # fixtures the act takes after ctx


REL, RVW, PRD = r"cat\.rel\.train", r"cat\.rvw\.train", r"cat\.prd\.train"
REL_OR_RVW = r"cat\.(rel|rvw)\.train"  # ids shared by both files: the relation file is read first
REC = json.dumps(_base_split()["prd"])

CASES = [
    # ---- loader (mmss_lib.data.mrhp.load_mrhp)
    C(
        "json_orient_records",
        "loader",
        _loader("prd", raw=json.dumps([{"product_id": "B1"}]).encode()),
        DataError,
        (PRD, "column orientation"),
    ),
    C(
        "json_orient_index",
        "loader",
        _loader("prd", raw=json.dumps({"0": {k: v["0"] for k, v in _base_split()["prd"].items()}}).encode()),
        DataError,
        (PRD, r"orient='index'", "column orientation"),
        fixed=True,
    ),
    C(
        "json_truncated",
        "loader",
        _loader("rvw", raw=json.dumps(_base_split()["rvw"]).encode()[:-20]),
        DataError,
        (RVW, "not valid JSON", "line 1"),
    ),
    C("label_5", "loader", _labels(5), DataError, (REL, "outside 0..4", "B000000002-0")),
    C("label_minus_1", "loader", _labels(-1), DataError, (REL, "outside 0..4")),
    C("label_2_5", "loader", _labels(2.5), DataError, (REL, "row 2", "'upvotes'", "expected an integer")),
    C("label_string_3", "loader", _labels("3"), DataError, (REL, "row 2", "'upvotes'", "expected an integer", "str")),
    C(
        "label_nan",
        "loader",
        _loader("rel", raw=json.dumps(_base_split()["rel"]).replace('"2": 4', '"2": NaN').encode()),
        DataError,
        (REL, "row 2", "'upvotes'", "expected an integer", "nan"),
    ),
    C(
        "text_whitespace_only",
        "loader",
        _loader("rvw", "content", " \t\n "),
        DataError,
        (RVW, "row 1", "'content'", "empty text"),
    ),
    C(
        "text_not_a_string",
        "loader",
        _loader("rvw", "content", 42),
        DataError,
        (RVW, "row 1", "'content'", "expected a non-empty string", "int"),
    ),
    C(
        "text_list_product_name",
        "loader",
        _loader("prd", "name", ["a", "b"]),
        DataError,
        (PRD, "row 1", "'name'", "expected a string"),
    ),
    C(
        "non_utf8_bytes",
        "loader",
        _loader("rvw", raw=json.dumps(_base_split()["rvw"]).encode().replace(b"fits well", b"fits \xff\xfe well")),
        DataError,
        (RVW, "not UTF-8"),
    ),
    C("review_text_10mb", "loader", _big_text, policy="mmss_lib.data.mrhp: a 10 MB review loads as is"),
    C(
        "review_text_10mb_encoder",
        "extract",
        _big_text_encoder,
        policy="mmss_lib.features.text: truncated to a configurable maximum length",
        needs=("tiny_bert_dir",),
        fixed=True,
    ),  # was 45 s of tokenising
    C(
        "id_path_traversal",
        "loader",
        _loader("rvw", "review_id", "../../../../outside"),
        DataError,
        (REL_OR_RVW, "row 1", "'review_id'", r"contains '/'", "ASIN- or number-based"),
        fixed=True,
    ),
    C(
        "id_parent_ref",
        "loader",
        _loader("prd", "product_id", "..", row="0"),
        DataError,
        (PRD, "row 0", "'product_id'", r"contains '\.\.'"),
        fixed=True,
    ),
    C(
        "id_backslash",
        "loader",
        _loader("rvw", "review_id", "B01\\x"),
        DataError,
        (REL_OR_RVW, "row 1", "'review_id'", r"contains '\\'"),
        fixed=True,
    ),
    C(
        "id_nul",
        "loader",
        _loader("rel", "review_id", "B000000001-1\x00"),
        DataError,
        ("row 1", "'review_id'", "control character"),
        fixed=True,
    ),
    C(
        "id_control_char",
        "loader",
        _loader("prd", "product_id", "B0\x1b[2J", row="0"),
        DataError,
        (PRD, "row 0", "'product_id'", "control character"),
        fixed=True,
    ),
    C(
        "review_of_unknown_product",
        "loader",
        _loader("rvw", "product_id", "B000000009"),
        DataError,
        (REL_OR_RVW, "row 1", "B000000009", "is not in|differs"),
    ),
    C(
        "duplicate_review_id",
        "loader",
        _loader("rvw", "review_id", "B000000001-0"),
        DataError,
        (REL_OR_RVW, "duplicate review_id 'B000000001-0'", "rows 0 and 1"),
    ),
    C(
        "missing_split_file",
        "loader",
        lambda ctx: (ctx.mrhp(), ctx.split_path("rel").unlink(), ctx.protect(), ctx.load())[3],
        DataError,
        (REL, "split file not found", "the folder holds"),
    ),
    C(
        "id_empty",
        "loader",
        _loader("rvw", "review_id", ""),
        DataError,
        (REL_OR_RVW, "row 1", "'review_id'", "empty id"),
    ),
    C(
        "id_float",
        "loader",
        _loader("rvw", "review_id", 1.5),
        DataError,
        (REL_OR_RVW, "row 1", "'review_id'", "expected an id"),
    ),
    # ---- builder (mmss_lib.data.amazon2018.build_amazon2018)
    C(
        "gzip_cut_mid_stream",
        "builder",
        _builder_truncated_gzip,
        DataError,
        (r"reviews\.json\.gz", "truncated or corrupt gzip", "after line"),
    ),
    C(
        "asin_path_traversal",
        "builder",
        _builder_bad_asin("../../etc"),
        DataError,
        (r"reviews\.json", "row 2", "'asin'", r"contains '/'"),
        fixed=True,
    ),
    C(
        "builder_line_not_json",
        "builder",
        _builder_bad_asin(None, '{"asin": "B000000001", "vote": "3", "reviewText": "cut'),
        DataError,
        (r"reviews\.json", "line 2", "not valid JSON"),
    ),
    C(
        "asin_nul",
        "builder",
        _builder_bad_asin("B0\x00"),
        DataError,
        (r"reviews\.json", "row 2", "'asin'", "control character"),
        fixed=True,
    ),
    # ---- extract: images (mmss_lib.features.regions.load_image, the policy of the module docstring)
    C(
        "image_corrupt",
        "extract",
        _image("c.jpg", raw=b"\xff\xd8\xff\xe0" + os.urandom(300)),
        policy="mmss_lib.features.regions: cannot be decoded (corrupt, truncated, not an image",
    ),
    C(
        "image_zero_byte",
        "extract",
        _image("z.jpg", raw=b""),
        policy="mmss_lib.features.regions: is skipped and listed in the report",
    ),
    C(
        "image_text_as_jpg",
        "extract",
        _image("t.jpg", raw=b"this is a review, not a photo\n" * 20),
        policy="mmss_lib.features.regions: not an image",
    ),
    C(
        "image_grayscale",
        "extract",
        _image("g.png", "L"),
        policy="mmss_lib.features.regions: grayscale, palette, CMYK and 16-bit",
    ),
    C(
        "image_rgba",
        "extract",
        _image("a.png", "RGBA"),
        policy="mmss_lib.features.regions: transparency is composited on white",
    ),
    C("image_cmyk", "extract", _image("k.jpg", "CMYK", fmt="JPEG"), policy="mmss_lib.features.regions: CMYK"),
    C(
        "image_16bit",
        "extract",
        _image("h.png", "I;16"),
        policy="mmss_lib.features.regions: 16-bit images are converted to RGB",
    ),
    C(
        "image_8000x8000",
        "extract",
        _image("big.jpg", "RGB", fmt="JPEG", size=(8000, 8000)),
        policy="mmss_lib.features.regions: are downscaled on load",
    ),
    C(
        "image_bad_among_good",
        "extract",
        _extract_items_keeps_good_images,
        policy="mmss_lib.features.regions: its item keeps the regions of its other images",
    ),
    # ---- feature stores (read by train / predict through mmss_lib.features.loader)
    C(
        "store_shard_deleted",
        "train",
        _store_deleted_shard,
        FeatureStoreError,
        (r"shard_00001", "cannot read shard", "re-extract"),
    ),
    C(
        "store_shard_truncated",
        "train",
        _store_truncated_shard,
        FeatureStoreError,
        (r"shard_00001", "cannot read shard|inconsistent shard"),
    ),
    C(
        "store_shard_pickled_object",
        "train",
        _store_pickled_shard,
        FeatureStoreError,
        (r"shard_00000", "cannot read shard"),
    ),
    C(
        "store_manifest_dim_mismatch",
        "train",
        _store_manifest_dim,
        FeatureStoreError,
        (r"shard_00000", "inconsistent shard", r"x \(4, 4\), dim 8"),
    ),
    C("features_nan_extract", "extract", _store_nan, FeatureStoreError, ("item 'i2'|i2", "NaN")),
    C("features_nan_import", "import", _import_nan, DataError, (r"B000000001", r"0\.npz", "NaN")),
    C(
        "features_nan_in_store",
        "train",
        _store_nan_on_disk,
        FeatureStoreError,
        (r"text_rvw", "item 'i1'", "NaN or infinite", "re-run `mmss extract`"),
        fixed=True,
    ),
    C(
        "features_other_category",
        "train",
        _other_category,
        FeatureStoreError,
        (r"text_prd", "extracted for demo/clothing", "not demo/cat"),
        fixed=True,
    ),
    C("features_missing_item", "train", _missing_item, FeatureStoreError, ("text_rvw", "no item 'i9'", "mmss extract")),
    # ---- import (mmss_lib.features.importers)
    C(
        "import_pth_payload",
        "import",
        _import_payload("pth"),
        DataError,
        (r"B000000001\.pth", "refused|not a readable"),
    ),
    C(
        "import_pickle_payload",
        "import",
        _import_payload("pickle"),
        DataError,
        (r"B000000001\.pth", "refused", "posix.system|os.system|nt.system"),
    ),
    C("import_npz_payload", "import", _import_payload("npz"), DataError, (r"0\.npz", "not a readable .npz")),
    C(
        "import_id_traversal",
        "import",
        _import_bad_ids,
        DataError,
        ("item_ids", "row 1", "'item_id'", r"contains '/'"),
        fixed=True,
    ),
    # ---- checkpoints and run records (predict, case study, resume)
    C(
        "predict_best_pt_payload",
        "predict",
        _predict_checkpoint_payload,
        CheckpointError,
        (r"run/best\.pt", "cannot read the checkpoint"),
    ),
    C(
        "case_study_best_pt_payload",
        "reproduce",
        _case_study_payload,
        CheckpointError,
        (r"run/best\.pt", "cannot read the checkpoint"),
        fixed=True,
    ),
    C(
        "resume_last_pt_payload",
        "train",
        _resume_payload,
        CheckpointError,
        (r"run/last\.pt", "cannot read the checkpoint"),
    ),
    C(
        "ssp_record_payload",
        "reproduce",
        _ssp_record_payload,
        DataError,
        (r"epoch001\.npz", "not a readable SSP-Label record"),
        fixed=True,
    ),
    C(
        "detector_weights_payload",
        "extract",
        _detector_weights_payload,
        ModelNotAvailableError,
        (r"detector\.pth", "cannot be loaded safely"),
    ),
    C(
        "mobilenet_weights_payload",
        "extract",
        _mobilenet_weights_payload,
        ModelNotAvailableError,
        (r"mobilenet_v2-b0353104\.pth", "SHA-256"),
    ),
    C(
        "predict_id_traversal",
        "predict",
        _predict_input({"review_id": "../../x", "text": "ok"}),
        DataError,
        ("predict input", "row 1", "'review_id'", r"contains '/'"),
        fixed=True,
    ),
    C(
        "predict_text_not_string",
        "predict",
        _predict_input({"review_id": "r2", "text": ["a"]}),
        DataError,
        ("input.json", r"'reviews\[1\]\.text'", "expected a non-empty string", "list"),
        fixed=True,
    ),
    # ---- train
    C("unknown_system", "train", _unknown_system, DataError, ("unknown system 'mmss_plus'", "known: .*mmss")),
    C("epochs_0", "train", _epochs(0), DataError, (r"TrainConfig\.epochs=0", "expected an integer >= 1")),
    C(
        "last_pt_corrupt",
        "train",
        _corrupt_last_pt,
        CheckpointError,
        (r"seed0/last\.pt", "cannot read the checkpoint", "delete it"),
        needs=("tiny_category",),
    ),
    C(
        "kill_9_then_rerun",
        "train",
        _kill9_resume,
        policy="mmss_lib.training.trainer: so the final metrics equal those of an uninterrupted run",
        needs=("tiny_category",),
    ),
    C(
        "cli_train_epochs_0",
        "train",
        _cli(
            "train",
            "--data-root",
            "{tiny}/data",
            "--dataset",
            "demo",
            "--categories",
            "tiny",
            "--features",
            "{tiny}/features",
            "--runs",
            "{root}/runs",
            "--seeds",
            "0",
            "--no-progress",
            "--num-threads",
            "1",
            "--epochs",
            "0",
        ),
        CliFailed,
        ("mmss train: error", r"epochs=0", ">= 1"),
        needs=("tiny_category",),
    ),
    C(
        "cli_train_unknown_system",
        "train",
        _cli(
            "train",
            "--data-root",
            "{tiny}/data",
            "--dataset",
            "demo",
            "--categories",
            "tiny",
            "--features",
            "{tiny}/features",
            "--runs",
            "{root}/runs",
            "--seeds",
            "0",
            "--no-progress",
            "--num-threads",
            "1",
            "--epochs",
            "1",
            "--systems",
            "mmss_plus",
        ),
        CliFailed,
        ("mmss train: error", "unknown system 'mmss_plus'"),
        needs=("tiny_category",),
    ),
    C(
        "cli_train_unknown_category",
        "train",
        _cli(
            "train",
            "--data-root",
            "{tiny}/data",
            "--dataset",
            "demo",
            "--categories",
            "tiny2",
            "--features",
            "{tiny}/features",
            "--runs",
            "{root}/runs",
            "--seeds",
            "0",
            "--no-progress",
            "--num-threads",
            "1",
            "--epochs",
            "1",
        ),
        CliFailed,
        ("mmss train: error", r"tiny2", "not found"),
        needs=("tiny_category",),
    ),
    C(
        "cli_predict_input_not_json",
        "predict",
        lambda ctx: (
            ctx.root.joinpath("in.json").write_text("{product:"),
            _cli("predict", "--run", "{root}", "--input", "{root}/in.json")(ctx),
        )[1],
        CliFailed,
        ("mmss predict: error", r"in\.json", "not valid JSON"),
    ),
    # ---- reproduce (mmss_lib.reproduce)
    C(
        "profile_unknown_parameter",
        "reproduce",
        _profile("02_train:\n  epochz: 3\n"),
        PipelineError,
        (r"bad\.yaml", "unknown parameter", "epochz"),
    ),
    C(
        "profile_unknown_notebook",
        "reproduce",
        _profile("99_nope:\n  a: 1\n"),
        PipelineError,
        (r"bad\.yaml", "99_nope", "no notebook"),
    ),
    C(
        "profile_yaml_payload",
        "reproduce",
        lambda ctx: _profile(f'02_train: !!python/object/apply:os.system ["touch {ctx.marker}"]\n')(ctx),
        PipelineError,
        (r"bad\.yaml", "not valid YAML"),
    ),
    C(
        "profile_not_a_mapping",
        "reproduce",
        _profile("- a\n- b\n"),
        PipelineError,
        (r"bad\.yaml", "expected a mapping"),
    ),
    # ---- issue 21: runs that cannot mix
    C(
        "two_trains_one_folder",
        "train",
        _two_trains_one_folder,
        policy="mmss_lib.training.trainer: A second process asking for the same run is refused at once",
        needs=("tiny_category",),
        fixed=True,
        issue=21,
    ),
    C(
        "run_folder_locked",
        "train",
        _lock_held,
        RunInUseError,
        (r"runs/seed0", "in use by another process", r"PID \d+"),
        fixed=True,
        issue=21,
    ),
    C(
        "seeds_twice",
        "train",
        _cli(*TRAIN_ARGS, "--seeds", "0", "0"),
        CliFailed,
        ("mmss train: error", "--seeds 0 0", "given more than once"),
        fixed=True,
        issue=21,
    ),
    C(
        "seed_counted_twice",
        "train",
        _experiment_args(seeds=[0, 1, 1]),
        DataError,
        (r"seeds \[0, 1, 1\]", "1 given more than once"),
        fixed=True,
        issue=21,
    ),
    C(
        "systems_twice",
        "train",
        _cli(*TRAIN_ARGS, "--systems", "mmss", "mmss"),
        CliFailed,
        ("mmss train: error", "--systems mmss mmss", "given more than once"),
        fixed=True,
        issue=21,
    ),
    C(
        "categories_twice",
        "train",
        _cli(*TRAIN_ARGS[:6], "home", "home", *TRAIN_ARGS[7:]),
        CliFailed,
        ("mmss train: error", "--categories home home", "given more than once"),
        fixed=True,
        issue=21,
    ),
    C(
        "variant_twice_library",
        "train",
        _experiment_args(systems=[("mmss", "wo_b", {}), ("mmss", "wo_b", {"d": 8})]),
        DataError,
        ("systems", "mmss__wo_b given more than once"),
        fixed=True,
        issue=21,
    ),
    # ---- issue 21: results that cannot lie
    C(
        "all_training_labels_equal",
        "train",
        _all_labels_equal,
        TrainingError,
        ("demo/mini", "no training pairs", "all 24 training labels equal", "nothing written to the summary"),
        fixed=True,
        issue=21,
    ),
    C(
        "no_product_with_three_levels",
        "train",
        _mcr_no_three_levels,
        TrainingError,
        ("demo/mini", "no training pairs", "3 different label levels", "--pair-scheme all"),
        fixed=True,
        issue=21,
    ),
    C(
        "pair_scheme_all_100k_reviews",
        "train",
        _all_pairs_huge,
        DataError,
        ("pair scheme 'all'", "B0HUGE", r"100,000 reviews", "--pair-scheme mcr"),
        fixed=True,
        issue=21,
    ),
    C(
        "disk_full_enospc",
        "train",
        _disk_full("enospc"),
        DiskFullError,
        (r"run/last\.pt", "no space left on the device", "earlier version of the file"),
        fixed=True,
        issue=21,
    ),
    C(
        "disk_full_torch_writer",
        "train",
        _disk_full("torch"),
        DiskFullError,
        (r"run/last\.pt", "no space left on the device", r"0\.0 MiB free"),
        fixed=True,
        issue=21,
    ),
    # ---- issue 21: data that cannot leak, features that cannot go stale
    C(
        "product_in_two_splits",
        "train",
        _leak("product"),
        DataError,
        (r"mini\.prd\.train", r"mini\.prd\.test", "product id", "'Ptrain0'", "disjoint"),
        fixed=True,
        issue=21,
    ),
    C(
        "review_in_two_splits",
        "train",
        _leak("review"),
        DataError,
        (r"mini\.rvw\.train", r"mini\.rvw\.test", "review id", "'Ptrain1-0'"),
        fixed=True,
        issue=21,
    ),
    C(
        "stale_text_features_train",
        "train",
        _stale_text_train,
        FeatureStoreError,
        ("text_rvw", "stale features", "texts of demo/mini changed", "--overwrite"),
        fixed=True,
        issue=21,
    ),
    C(
        "stale_text_features_folds",
        "train",
        _stale_text_folds,
        FeatureStoreError,
        ("text_rvw", "stale features", "texts of demo/mini changed"),
        fixed=True,
        issue=21,
    ),
    C(
        "stale_image_features_train",
        "train",
        _stale_image_train,
        FeatureStoreError,
        ("region_rvw", "stale features", "image files of demo/mini changed"),
        fixed=True,
        issue=21,
    ),
    C(
        "stale_text_features_extract",
        "extract",
        _stale_text_extract,
        DataError,
        ("text_rvw", "texts of demo/mini changed", "--overwrite"),
        needs=("tiny_bert_dir",),
        fixed=True,
        issue=21,
    ),
    C(
        "labels_only_changed_same_store",
        "train",
        _labels_only_changed,
        policy="mmss_lib.features.fingerprint: Labels are not part of it",
        issue=21,
    ),
    C(
        "old_store_without_fingerprint",
        "train",
        _old_store_no_fingerprint,
        policy="mmss_lib.features.fingerprint: is accepted with a warning",
        issue=21,
    ),
    C(
        "text_zero_width_only",
        "loader",
        _loader("rvw", "content", "\u200b\u200b\ufeff"),
        DataError,
        (RVW, "row 1", "'content'", "empty text"),
        fixed=True,
        issue=21,
    ),
    C(
        "region_features_batch_neighbours",
        "extract",
        _region_batch_neighbours,
        policy="mmss_lib.features.regions: features never depend on the other images of its chunk",
        fixed=True,
        issue=21,
    ),
    # ---- issue 21: Ray
    C(
        "ray_nothing_listening",
        "train",
        _ray_nothing_listening,
        MMSSError,
        ("127.0.0.1:1", "nothing answers", "after 1.5 s", "--ray-timeout"),
        fixed=True,
        issue=21,
    ),
    C(
        "ray_token_auth_like_the_head",
        "train",
        _ray_token_like_the_head(None),
        policy="mmss_lib.training.executors: the driver sets ``RAY_AUTH_MODE=token`` as ``ray start --head`` did",
        fixed=True,
        issue=21,
    ),
    C(
        "ray_auth_mode_preset_kept",
        "train",
        _ray_token_like_the_head("disabled"),
        policy="mmss_lib.training.executors: an explicit ``RAY_AUTH_MODE`` is kept",
        issue=21,
    ),
    C(
        "ray_timeout_0",
        "train",
        _cli(*TRAIN_ARGS, "--executor", "ray", "--ray-timeout", "0"),
        CliFailed,
        ("mmss train: error", "--ray-timeout 0", "> 0"),
        issue=21,
    ),
    # ---- issue 21: predict's input schema
    C(
        "predict_product_a_list",
        "predict",
        _predict_obj({"product": [PRED_OK], "reviews": [{"text": "ok"}]}),
        DataError,
        ("input.json", "'product'", "expected a mapping", "list"),
        fixed=True,
        issue=21,
    ),
    C(
        "predict_product_text_int",
        "predict",
        _predict_obj({"product": {"text": 42}, "reviews": [{"text": "ok"}]}),
        DataError,
        ("'product.text'", "expected a non-empty string", "int"),
        fixed=True,
        issue=21,
    ),
    C(
        "predict_reviews_a_dict",
        "predict",
        _predict_obj({"product": PRED_OK, "reviews": {"text": "ok"}}),
        DataError,
        ("'reviews'", "non-empty list of mappings", "dict"),
        fixed=True,
        issue=21,
    ),
    C(
        "predict_reviews_null",
        "predict",
        _predict_obj({"product": PRED_OK, "reviews": None}),
        DataError,
        ("'reviews'", "non-empty list", "NoneType"),
        fixed=True,
        issue=21,
    ),
    C(
        "predict_reviews_empty",
        "predict",
        _predict_obj({"product": PRED_OK, "reviews": []}),
        DataError,
        ("'reviews'", "non-empty list"),
        issue=21,
    ),
    C(
        "predict_review_not_mapping",
        "predict",
        _predict_obj({"product": PRED_OK, "reviews": [{"text": "a"}, "b"]}),
        DataError,
        (r"'reviews\[1\]'", "expected a mapping", "str"),
        issue=21,
    ),
    C(
        "predict_image_files_string",
        "predict",
        _predict_obj({"product": PRED_OK, "reviews": [{"text": "a", "image_files": "pin.jpg"}]}),
        DataError,
        (r"'reviews\[0\]\.image_files'", "a list of image file paths", "str 'pin.jpg'"),
        fixed=True,
        issue=21,
    ),
    C(
        "predict_unknown_field",
        "predict",
        _predict_obj({"product": PRED_OK, "reviews": [{"text": "a", "image_file": ["x.jpg"]}]}),
        DataError,
        (r"reviews\[0\]", "unknown field", "'image_file'", "image_files"),
        fixed=True,
        issue=21,
    ),
    C(
        "predict_undecodable_image",
        "predict",
        _predict_obj({"product": PRED_OK, "reviews": [{"text": "a", "image_files": ["img/bad.jpg"]}]}, bad_image=True),
        DataError,
        (r"'reviews\[0\]\.image_files'", r"img/bad\.jpg", "cannot be decoded"),
        fixed=True,
        issue=21,
    ),
    C(
        "cli_predict_reviews_dict",
        "predict",
        lambda ctx: (
            ctx.root.joinpath("in.json").write_text(json.dumps({"product": PRED_OK, "reviews": {"a": 1}})),
            _cli("predict", "--run", "{root}", "--input", "{root}/in.json")(ctx),
        )[1],
        CliFailed,
        ("mmss predict: error", r"in\.json", "'reviews'", "non-empty list"),
        fixed=True,
        issue=21,
    ),
    # ---- issue 21: options and values named in the error
    C(
        "dev_fraction_1_5",
        "train",
        _cli(*TRAIN_ARGS, "--folds", "3", "--dev-fraction", "1.5"),
        CliFailed,
        ("mmss train: error", "--dev-fraction 1.5", "strictly between 0 and 1"),
        fixed=True,
        issue=21,
    ),
    C(
        "dev_fraction_0",
        "train",
        _cli(*TRAIN_ARGS, "--folds", "3", "--dev-fraction", "0"),
        CliFailed,
        ("mmss train: error", "--dev-fraction 0.0", "strictly between 0 and 1"),
        fixed=True,
        issue=21,
    ),
    C(
        "dev_fraction_nan",
        "train",
        _cli(*TRAIN_ARGS, "--folds", "3", "--dev-fraction", "nan"),
        CliFailed,
        ("mmss train: error", "--dev-fraction nan", "strictly between 0 and 1"),
        fixed=True,
        issue=21,
    ),
    C(
        "dev_fraction_library",
        "train",
        _experiment_args(folds=3, dev_fraction=float("nan")),
        DataError,
        ("dev_fraction=nan", "--dev-fraction", "strictly between 0 and 1"),
        fixed=True,
        issue=21,
    ),
    C(
        "margin_nan",
        "train",
        _cli(*TRAIN_ARGS, "--margin", "nan"),
        CliFailed,
        ("mmss train: error", r"margin=nan \(--margin\)", "finite number"),
        fixed=True,
        issue=21,
    ),
    C(
        "lr_negative",
        "train",
        _cli(*TRAIN_ARGS, "--lr", "-1"),
        CliFailed,
        ("mmss train: error", r"lr=-1\.0 \(--lr\)", ">= 0"),
        issue=21,
    ),
    C(
        "num_threads_minus_2",
        "train",
        _cli(*TRAIN_ARGS, "--num-threads", "-2"),
        CliFailed,
        ("mmss train: error", "--num-threads -2", ">= 1"),
        fixed=True,
        issue=21,
    ),
    C(
        "option_not_json",
        "train",
        _model_option({"d": "notjson"}),
        DataError,
        ("--option d='notjson'", "'d'", "expects an integer", "d=128"),
        fixed=True,
        issue=21,
    ),
    C(
        "option_unknown",
        "train",
        _model_option({"dd": 3}),
        DataError,
        ("--option dd=3", "no model option 'dd'", "its options: .*head_hidden"),
        issue=21,
    ),
    C(
        "option_no_key",
        "train",
        _cli(*TRAIN_ARGS, "--option", "=3"),
        CliFailed,
        ("mmss train: error", "--option '=3'", "non-empty key"),
        issue=21,
    ),
    C(
        "reproduce_out_is_file",
        "reproduce",
        _out_is_file,
        CliFailed,
        ("mmss reproduce: error", "--out", "afile is a file, not a folder"),
        fixed=True,
        issue=21,
    ),
    C(
        "profile_epochs_three",
        "reproduce",
        _profile("02_train:\n  epochs: three\n"),
        PipelineError,
        (r"bad\.yaml", "02_train", "'epochs'", "expected an integer", "got a string 'three'"),
        fixed=True,
        issue=21,
    ),
    C(
        "profile_systems_string",
        "reproduce",
        _profile("02_train:\n  systems: mmss\n"),
        PipelineError,
        (r"bad\.yaml", "'systems'", "expected a list", "got a string 'mmss'"),
        fixed=True,
        issue=21,
    ),
    C(
        "profile_seeds_twice",
        "reproduce",
        _profile("02_train:\n  seeds: [0, 0]\n"),
        PipelineError,
        ("'seeds'", "given twice"),
        issue=21,
    ),
    C(
        "profile_epochs_0",
        "reproduce",
        _profile("02_train:\n  epochs: 0\n"),
        PipelineError,
        ("'epochs'", ">= 1", "got an integer 0"),
        issue=21,
    ),
    C(
        "profile_unknown_system",
        "reproduce",
        _profile("02_train:\n  systems: [mmss, mmss_plus]\n"),
        PipelineError,
        ("'systems'", "system names of", "mmss_plus"),
        issue=21,
    ),
    C(
        "profile_train_options_margin_nan",
        "reproduce",
        _profile("02_train:\n  train_options: {margin: .nan}\n"),
        PipelineError,
        ("'train_options'", r"margin=nan"),
        issue=21,
    ),
    C(
        "make_demo_0_products",
        "builder",
        _cli("make-demo", "--out", "{root}/demo", "--products-per-category", "0"),
        CliFailed,
        ("mmss make-demo: error", "--products-per-category 0", ">= 5"),
        fixed=True,
        issue=21,
    ),
    # ---- round 3: run-folder locks that do not lock
    C(
        "lock_file_a_folder",
        "train",
        _lock_unusable("dir"),
        DataError,
        (r"runs/seed0/\.lock", r"lock file of this run .*is a folder", r"remove it \(rm -r"),
        fixed=True,
        issue=R3,
    ),
    C(
        "lock_file_read_only",
        "train",
        _lock_unusable("readonly"),
        DataError,
        (
            r"runs/seed0/\.lock",
            "cannot be opened for writing",
            "Permission denied",
            "although its folder is writable",
            "remove it",
        ),
        fixed=True,
        issue=R3,
    ),
    C(
        "lock_file_immutable",
        "train",
        _lock_unusable("immutable"),
        DataError,
        (r"runs/seed0/\.lock", "cannot be opened for writing", "Operation not permitted", "chattr -i"),
        fixed=True,
        issue=R3,
    ),
    # ---- round 3: floors and ceilings on leaked splits
    C(
        "product_in_two_splits_length",
        "train",
        _leak_floor("length"),
        DataError,
        (r"mini\.prd\.train", r"mini\.prd\.test", "product id", "'Ptrain0'", "disjoint"),
        fixed=True,
        issue=R3,
    ),
    C(
        "product_in_two_splits_random",
        "train",
        _leak_floor("random"),
        DataError,
        (r"mini\.prd\.train", r"mini\.prd\.test", "'Ptrain0'", "disjoint"),
        fixed=True,
        issue=R3,
    ),
    C(
        "review_in_two_splits_ceiling",
        "train",
        _leak_floor("ceiling_all", "review"),
        DataError,
        (r"mini\.rvw\.train", r"mini\.rvw\.test", "review id", "'Ptrain1-0'"),
        fixed=True,
        issue=R3,
    ),
    # ---- round 3: make-demo options
    C(
        "make_demo_dev_frac_0_99",
        "builder",
        _make_demo_refused("--dev-frac", "0.99"),
        CliFailed,
        (
            "mmss make-demo: error",
            "--dev-frac 0.99",
            "0 train, 32 dev, 8 test products",
            "every split needs at least one product",
        ),
        fixed=True,
        issue=R3,
    ),
    C(
        "make_demo_test_dev_0_9",
        "builder",
        _make_demo_refused("--test-frac", "0.9", "--dev-frac", "0.9"),
        CliFailed,
        ("mmss make-demo: error", "--test-frac 0.9 --dev-frac 0.9", "0 train, 4 dev, 36 test products"),
        fixed=True,
        issue=R3,
    ),
    C(
        "make_demo_library_no_train",
        "builder",
        _make_demo_library_no_train,
        DataError,
        ("make_demo: test_frac=0.9, dev_frac=0.9", "n_products=40", "0 train, 4 dev, 36 test products"),
        fixed=True,
        issue=R3,
    ),
    C(
        "make_demo_seed_minus_1",
        "builder",
        _make_demo_refused("--seed", "-1"),
        CliFailed,
        ("mmss make-demo: error", "--seed -1", "an integer from 0 to 4294967295"),
        fixed=True,
        issue=R3,
    ),
    # ---- round 3: texts of control characters only
    C(
        "text_nul_only",
        "loader",
        _loader("rvw", "content", "\x00\x00\x00"),
        DataError,
        (RVW, "row 1", "'content'", "empty text", "control"),
        fixed=True,
        issue=R3,
    ),
    C(
        "predict_text_nul_only",
        "predict",
        _predict_obj({"product": PRED_OK, "reviews": [{"text": "ok"}, {"text": "\x00\x00\x00"}]}),
        DataError,
        (r"'reviews\[1\]\.text'", "expected a non-empty string"),
        fixed=True,
        issue=R3,
    ),
    # ---- round 3: the explorer's web app
    C(
        "explore_sigterm",
        "explore",
        _explore_stopped("sigterm"),
        policy="mmss_lib.explore.app: stops the Voila server and its kernels and removes the temporary folder",
        fixed=True,
        issue=R3,
    ),
    C(
        "explore_kill9",
        "explore",
        _explore_stopped("kill9"),
        policy="mmss_lib.explore.serve: on its parent's death, SIGTERM or SIGINT stops Voila as Ctrl-C does",
        fixed=True,
        issue=R4,
    ),
    C(
        "explore_foreign_host_no_token",
        "explore",
        _explore_stopped("host"),
        policy="mmss_lib.explore.app: a page served under another name, as DNS rebinding does, is refused with 403",
        fixed=True,
        issue=R4,
    ),
    C(
        "explore_port_70000",
        "explore",
        _cli("explore", "--runs", "{root}/runs", "--port", "70000"),
        CliFailed,
        ("mmss explore: error", "--port 70000", "a port from 0 to 65535"),
        fixed=True,
        issue=R3,
    ),
    C(
        "explore_port_0",
        "explore",
        _explore_stopped("port0"),
        policy="mmss_lib.explore.app: ``--port 0`` takes a free port and prints its real address",
        fixed=True,
        issue=R3,
    ),
    # ---- round 3: YAML alias bombs in profiles
    C(
        "profile_alias_bomb_in_seeds",
        "reproduce",
        _profile_quick("02_train:\n  seeds: " + _alias_bomb() + "\n"),
        PipelineError,
        (r"bad\.yaml", r"'02_train\.seeds'", "more than 10,000 values", "YAML aliases"),
        fixed=True,
        issue=R3,
    ),
    C(
        "profile_alias_bomb_top_level",
        "reproduce",
        _profile_quick("lol: " + _alias_bomb() + "\n"),
        PipelineError,
        (r"bad\.yaml", "'lol'", "more than 10,000 values"),
        issue=R3,
    ),
    C(
        "profile_recursive_alias",
        "reproduce",
        _profile_quick("02_train:\n  seeds: &a [0, *a]\n"),
        PipelineError,
        (r"bad\.yaml", r"'02_train\.seeds'", "more than 16 levels deep"),
        fixed=True,
        issue=R3,
    ),
    # ---- round 3: predict at scale
    C(
        "predict_input_latin1",
        "predict",
        _predict_obj({"product": {"text": "caf\u00e9"}, "reviews": [{"text": "tr\u00e8s bien"}]}, encoding="latin-1"),
        DataError,
        (r"input\.json", "not UTF-8", "0xe9", "offset"),
        fixed=True,
        issue=R3,
    ),
    C(
        "cue_match_null",
        "train",
        _corrupt_cue("match", None),
        DataError,
        (r"mini\.cues\.train", "row", "column 'match'", "expected an integer from 0 to 1"),
        fixed=True,
        issue=R3,
    ),
    C(
        "cue_detail_nan",
        "train",
        _corrupt_cue("detail", float("nan")),
        DataError,
        (r"mini\.cues\.train", "column 'detail'", "every review needs it"),
        fixed=True,
        issue=R3,
    ),
    C(
        "cue_img_match_nan_with_images",
        "train",
        _corrupt_cue("img_match", float("nan")),
        DataError,
        (r"mini\.cues\.train", "column 'img_match'", "a review with images needs it"),
        fixed=True,
        issue=R3,
    ),
    C(
        "cue_detail_out_of_range",
        "train",
        _corrupt_cue("detail", 7),
        DataError,
        (r"mini\.cues\.train", "column 'detail'", "from 0 to 3"),
        fixed=True,
        issue=R3,
    ),
    C(
        "explore_runs_root_unreadable",
        "explore",
        _runs_root_unreadable,
        policy="mmss_lib.explore.explorer: Folders under the runs root that cannot be read are skipped",
        fixed=True,
        issue=R3,
    ),
    C(
        "bench_explore_clicks_0",
        "bench",
        _cli("bench", "explore", "--clicks", "0"),
        CliFailed,
        ("--clicks 0", ">= 1"),
        fixed=True,
        issue=R3,
    ),
    C(
        "bench_explore_epochs_0",
        "bench",
        _cli("bench", "explore", "--epochs", "0"),
        CliFailed,
        ("--epochs 0", ">= 1"),
        fixed=True,
        issue=R3,
    ),
    C(
        "bench_explore_out_file",
        "bench",
        _out_file_cli("bench", "explore", "--out"),
        CliFailed,
        ("--out", "a file, not a folder"),
        fixed=True,
        issue=R3,
    ),
    C(
        "bench_powered_out_file",
        "bench",
        lambda ctx: (
            (ctx.root / "afile").write_text("not a folder"),
            _study_cli("powered", "--out", "{root}/afile")(ctx),
        ),
        CliFailed,
        ("--out", "a file, not a folder"),
        fixed=True,
        issue=R3,
    ),
    C(
        "bench_powered_report_only_empty",
        "bench",
        _study_cli("powered", "--report-only", "--out", "{root}/none"),
        CliFailed,
        ("no runs of the powered study", "nothing to report"),
        fixed=True,
        issue=R3,
    ),
    C(
        "claims_report_only_empty_tune_folder",
        "bench",
        lambda ctx: (
            (ctx.root / "cl" / "tune").mkdir(parents=True),
            _study_cli("claims", "--report-only", "--out", "{root}/cl")(ctx),
        ),
        CliFailed,
        ("no studies or runs of the claims study", "nothing to report"),
        fixed=True,
        issue=R4,
    ),
    C(
        "claims_magazine_fold_out_of_range",
        "bench",
        lambda ctx: _no_folder(
            ctx, "cl", _study_cli("claims", "--phases", "magazine", "--folds", "9", "--out", "{root}/cl")
        ),
        CliFailed,
        ("--folds 9", "expected integers from 0 to 4"),
        fixed=True,
        issue=R4,
    ),
    C(
        "claims_folds_without_magazine_no_folder",
        "bench",
        lambda ctx: _no_folder(ctx, "cl", _study_cli("claims", "--folds", "1", "--out", "{root}/cl")),
        CliFailed,
        ("--folds 1", "only with --phases magazine"),
        fixed=True,
        issue=R4,
    ),
    C(
        "powered_n_jobs_0_before_the_build",
        "bench",
        lambda ctx: _no_folder(ctx, "bp", _study_cli("powered", "--n-jobs", "0", "--out", "{root}/bp")),
        CliFailed,
        ("--n-jobs 0", "expected an integer >= 1"),
        fixed=True,
        issue=R4,
    ),
    C(
        "powered_seeds_negative_before_the_build",
        "bench",
        lambda ctx: _no_folder(
            ctx, "bp", _study_cli("powered", "--seeds", "-1", "--phases", "main", "--out", "{root}/bp")
        ),
        CliFailed,
        ("--seeds -1", "expected integers >= 0"),
        fixed=True,
        issue=R4,
    ),
    C(
        "bench_explore_sigterm",
        "bench",
        _bench_explore_sigterm,
        policy="mmss_lib.bench.explore: SIGTERM ends it like Ctrl-C; its temporary runs folder is removed",
        fixed=True,
        issue=R3,
    ),
    C(
        "predict_10000_reviews_one_product",
        "predict",
        _predict_many_reviews,
        policy="mmss_lib.predict: so memory stays flat in the number of reviews of the product",
        needs=("tiny_category",),
        fixed=True,
        issue=R3,
    ),
    # ---- issue 38: a rerun never returns a result computed from other inputs
    C(
        "rerun_after_labels_changed",
        "train",
        _rerun_after_relabel,
        DataError,
        (
            r"runs/demo/mini/mmss/seed0",
            "finished run was trained on other inputs",
            r"labels \(mini\.rel\.test changed\)",
            "--runs",
            "--retrain",
        ),
        fixed=True,
        issue=R4,
    ),
    C(
        "rerun_other_text_features",
        "train",
        _rerun_other_features,
        DataError,
        ("finished run was trained on other inputs", r"feature store text_rvw \(n_rows", "--retrain"),
        fixed=True,
        issue=R4,
    ),
    C(
        "study_continued_other_features",
        "tune",
        _study_other_features,
        TuneError,
        (r"study\.journal", "was run on other features", r"feature store text_rvw \(n_rows", "mix two inputs", "--out"),
        fixed=True,
        issue=R4,
    ),
    C(
        "best_json_n_neg_2_7",
        "train",
        _best_json(params={"n_neg": 2.7}),
        TuneError,
        (r"tune/demo/mini/mmss/best\.json", "n_neg=2.7", "expected an integer in"),
        fixed=True,
        issue=R4,
    ),
    C(
        "best_json_other_category",
        "train",
        _best_json({"dataset": "amazon", "category": "clothing", "study": "amazon/clothing/mmss"}),
        TuneError,
        (r"tune/demo/mini/mmss/best\.json", "amazon/clothing/mmss", "another dataset's or category's best.json"),
        fixed=True,
        issue=R4,
    ),
    C(
        "best_json_empty_params",
        "train",
        _best_json(params={}),
        TuneError,
        (r"tune/demo/mini/mmss/best\.json", "'params' is empty", "recorded as tuned"),
        fixed=True,
        issue=R4,
    ),
    C(
        "best_json_lr_string",
        "train",
        _best_json(params={"lr": "0.001"}),
        TuneError,
        (r"tune/demo/mini/mmss/best\.json", "lr='0.001'", "expected a number in"),
        fixed=True,
        issue=R4,
    ),
    C(
        "best_json_lr_nan",
        "train",
        _best_json(params={"lr": float("nan")}),
        TuneError,
        (r"tune/demo/mini/mmss/best\.json", "lr=nan", "a positive Adam learning rate"),
        fixed=True,
        issue=R4,
    ),
    C(
        "best_json_lr_1e9",
        "train",
        _best_json(params={"lr": 1e9}),
        TuneError,
        (r"tune/demo/mini/mmss/best\.json", "lr=1000000000.0", "at most 1"),
        fixed=True,
        issue=R4,
    ),
    C(
        "best_json_unknown_key",
        "train",
        _best_json(params={"foo": 1}),
        TuneError,
        (r"tune/demo/mini/mmss/best\.json", "parameter 'foo' is not in mmss's search space"),
        fixed=True,
        issue=R4,
    ),
    C(
        "best_json_dropout_5",
        "train",
        _best_json(params={"dropout": 5.0}),
        TuneError,
        (r"tune/demo/mini/mmss/best\.json", "dropout=5.0", r"\[0, 1\)"),
        fixed=True,
        issue=R4,
    ),
    C(
        "best_json_n_neg_abc",
        "train",
        _best_json(params={"n_neg": "abc"}),
        TuneError,
        (r"tune/demo/mini/mmss/best\.json", "n_neg='abc'", "expected an integer"),
        fixed=True,
        issue=R4,
    ),
    C(
        "best_json_sub_log_var_1e300",
        "train",
        _best_json(params={"sub_log_var_init": 1e300}),
        TuneError,
        (r"tune/demo/mini/mmss/best\.json", r"sub_log_var_init=1e\+300", r"\[-10, 10\]"),
        fixed=True,
        issue=R4,
    ),
    C(
        "best_json_batch_size_1e9",
        "train",
        _best_json(params={"batch_size": 1e9}),
        TuneError,
        (r"tune/demo/mini/mmss/best\.json", "batch_size=1000000000.0", "an integer in"),
        fixed=True,
        issue=R4,
    ),
    C(
        "study_journal_tail",
        "tune",
        _study_journal_damaged("tail"),
        TuneError,
        (r"mmss/study\.journal", "the study's journal cannot be read", "truncated or edited", "--out"),
        fixed=True,
        issue=R4,
    ),
    C(
        "study_journal_half",
        "tune",
        _study_journal_damaged("half"),
        TuneError,
        (r"mmss/study\.journal", "the study's journal cannot be read", "truncated or edited", "--out"),
        fixed=True,
        issue=R4,
    ),
    C(
        "study_journal_garbage",
        "tune",
        _study_journal_damaged("garbage"),
        TuneError,
        (r"mmss/study\.journal", "the study's journal cannot be read", "truncated or edited", "--out"),
        fixed=True,
        issue=R4,
    ),
    C(
        "atomic_files_umask",
        "train",
        _atomic_file_modes,
        policy="mmss_lib.utils: not the 0600 of the temporary file they are written to first",
        fixed=True,
        issue=R4,
    ),
    C(
        "json_duplicate_row_key",
        "loader",
        _duplicate_row_key,
        DataError,
        (REL_OR_RVW, "row key '0' appears twice", "a row lost"),
        fixed=True,
        issue=R4,
    ),
    C(
        "stats_product_in_two_splits",
        "loader",
        _stats_product_in_two_splits,
        DataError,
        (r"mini\.prd\.train", r"mini\.prd\.test", "'Ptrain0'", "disjoint", "mmss train refuses it"),
        fixed=True,
        issue=R4,
    ),
    C(
        "label_1e300",
        "loader",
        _labels(1e300),
        DataError,
        (REL, "row 2", "'upvotes'", "out of range"),
        fixed=True,
        issue=R4,
    ),
    C(
        "product_without_reviews",
        "loader",
        _product_without_reviews,
        policy="mmss_lib.data.mrhp: A product without any review is counted and named in a warning",
        fixed=True,
        issue=R4,
    ),
    C(
        "threshold_1e9",
        "train",
        _cli(*TRAIN_ARGS, "--threshold", "1e9"),
        CliFailed,
        ("--threshold", "from 0 to below 4", "no review relevant"),
        fixed=True,
        issue=R4,
    ),
    C(
        "threshold_minus_5",
        "train",
        _cli(*TRAIN_ARGS, "--threshold", "-5"),
        CliFailed,
        ("--threshold", "every review relevant"),
        fixed=True,
        issue=R4,
    ),
    C(
        "ssp_alpha1_minus_5",
        "train",
        _cli(*TRAIN_ARGS, "--ssp-alpha1", "-5"),
        CliFailed,
        (r"ssp_alpha1=-5\.0 \(--ssp-alpha1\)", ">= 0"),
        fixed=True,
        issue=R4,
    ),
    C(
        "ssp_pivot_1e9",
        "train",
        _cli(*TRAIN_ARGS, "--ssp-pivot", "1e9"),
        CliFailed,
        ("--ssp-pivot", "from 0 to 4"),
        fixed=True,
        issue=R4,
    ),
    C(
        "ssp_record_seeds_minus_1",
        "train",
        _cli(*TRAIN_ARGS, "--ssp-record-seeds", "-1"),
        CliFailed,
        ("--ssp-record-seeds", r"integers >= 0"),
        fixed=True,
        issue=R4,
    ),
    C(
        "finetune_systems_bogus",
        "train",
        _cli(*TRAIN_ARGS, "--finetune-systems", "bogus"),
        CliFailed,
        ("--finetune-systems", "unknown system", "bogus"),
        fixed=True,
        issue=R4,
    ),
    C(
        "option_subtasks_empty",
        "train",
        _cli(*TRAIN_ARGS, "--option", "subtasks=[]"),
        CliFailed,
        ("--option subtasks=", "at least one subtask", "mmss:VARIANT"),
        fixed=True,
        issue=R4,
    ),
    C(
        "option_d_minus_5",
        "train",
        _cli(*TRAIN_ARGS, "--option", "d=-5"),
        CliFailed,
        ("--option d=-5", "an integer >= 1"),
        fixed=True,
        issue=R4,
    ),
    C(
        "option_d_0",
        "train",
        _cli(*TRAIN_ARGS, "--option", "d=0"),
        CliFailed,
        ("--option d=0", "an integer >= 1"),
        fixed=True,
        issue=R4,
    ),
    C(
        "option_dropout_5",
        "train",
        _cli(*TRAIN_ARGS, "--option", "dropout=5.0"),
        CliFailed,
        ("--option dropout=5.0", "a probability from 0 to below 1"),
        fixed=True,
        issue=R4,
    ),
    C(
        "device_bogus",
        "train",
        _cli(*TRAIN_ARGS, "--device", "bogus"),
        CliFailed,
        ("--device", "bogus", "auto, cpu, cuda"),
        fixed=True,
        issue=R4,
    ),
    C(
        "fold_seed_minus_1",
        "train",
        _cli(*TRAIN_ARGS, "--folds", "2", "--fold-seed", "-1"),
        CliFailed,
        ("--fold-seed -1", "0 to 4294967295"),
        fixed=True,
        issue=R4,
    ),
    C(
        "extract_features_a_file",
        "extract",
        _cli(
            "extract",
            "--data-root",
            "{root}/data",
            "--dataset",
            "demo",
            "--categories",
            "c",
            "--features",
            "/etc/passwd",
            "--text-model",
            "none",
        ),
        CliFailed,
        ("--features /etc/passwd", "a file, not a folder"),
        fixed=True,
        issue=R4,
    ),
    C(
        "tune_storage_bogus_url",
        "tune",
        _cli(*TUNE_ARGS, "--storage", "bogus://x"),
        CliFailed,
        ("--storage 'bogus://x'", "not a database URL"),
        fixed=True,
        issue=R4,
    ),
    C(
        "tune_storage_missing_folder",
        "tune",
        _cli(*TUNE_ARGS, "--storage", "{root}/nodir/j.journal"),
        CliFailed,
        ("nodir", "does not exist"),
        fixed=True,
        issue=R4,
    ),
    C(
        "tune_space_twice",
        "tune",
        _cli(*TUNE_ARGS, "--space", "lr=1e-5:1e-3", "--space", "lr=1e-4:2e-4"),
        CliFailed,
        ("lr is already given", "give each parameter once"),
        fixed=True,
        issue=R4,
    ),
    C(
        "tune_space_dropout_0_5",
        "tune",
        _cli(*TUNE_ARGS, "--space", "dropout=0:5"),
        CliFailed,
        ("dropout=5", r"\[0, 1\)"),
        fixed=True,
        issue=R4,
    ),
    C(
        "tune_space_lr_1e9",
        "tune",
        _cli(*TUNE_ARGS, "--space", "lr=1e-5:1e9"),
        CliFailed,
        ("lr=1e\\+?0?9|lr=1000000000", "at most 1"),
        fixed=True,
        issue=R4,
    ),
    C(
        "tune_space_weight_decay_negative",
        "tune",
        _cli(*TUNE_ARGS, "--space", "weight_decay=-1,-2,-3"),
        CliFailed,
        ("weight_decay=-1", ">= 0"),
        fixed=True,
        issue=R4,
    ),
    C(
        "num_threads_1000",
        "train",
        _num_threads_oversubscribed,
        policy="mmss_lib.model_selection.sweeps: more threads than this machine's",
        fixed=True,
        issue=R4,
    ),
    C(
        "device_cuda_without_gpu",
        "train",
        _device_cuda_without_gpu,
        CliFailed,
        ("--device cuda", "no CUDA device on this machine", "--device cpu"),
        fixed=True,
        issue=R4,
    ),
    C(
        "predict_nested_100000",
        "predict",
        _predict_nested,
        CliFailed,
        (r"in\.json", "nested too deeply"),
        fixed=True,
        issue=R4,
    ),
    C(
        "predict_csv_a_folder",
        "predict",
        _predict_csv_folder,
        CliFailed,
        ("--csv", "csvdir", "a folder"),
        fixed=True,
        issue=R4,
    ),
    C(
        "predict_checkpoint_other_system",
        "predict",
        _predict_other_system_checkpoint,
        CheckpointError,
        (r"run/best\.pt", "do not fit the 'mcr' model", "another run"),
        needs=("tiny_category",),
        fixed=True,
        issue=R4,
    ),
]


def _policy_documented(policy: str) -> None:
    import importlib

    module, words = policy.split(": ", 1)
    doc = " ".join((importlib.import_module(module).__doc__ or "").split())
    assert words in doc, f"policy not documented: {words!r} not in the docstring of {module}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: C, tmp_path, request):
    ctx = Ctx(tmp_path)
    extra = [request.getfixturevalue(n) for n in case.needs]
    if case.error is None:
        assert case.policy, f"{case.name}: a non-error case must name where its policy is documented"
        _policy_documented(case.policy)
        case.act(ctx, *extra)
    else:
        with pytest.raises(case.error) as info:
            case.act(ctx, *extra)
        msg = str(info.value)
        for pattern in case.says:
            assert re.search(pattern, msg), f"{case.name}: {pattern!r} not in the error: {msg}"
    # nothing already written is lost, and no payload ran
    assert ctx.protected is not None, f"{case.name}: act must call ctx.protect() before the command"
    for path, digest in ctx.protected.items():
        p = Path(path)
        assert p.is_file(), f"{case.name}: {path} was removed"
        assert hashlib.sha256(p.read_bytes()).hexdigest() == digest, f"{case.name}: {path} was changed"
    assert not ctx.marker.exists(), f"{case.name}: the crafted payload ran"


def test_corpus_summary():
    """Coverage of the corpus: >= 25 kinds across the commands; prints the outcome table."""
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names)
    assert len(CASES) >= 25
    assert {"loader", "builder", "extract", "import", "train", "predict", "reproduce"} <= {c.command for c in CASES}
    counts: dict[str, int] = {}
    for c in CASES:
        outcome = "documented policy" if c.error is None else "clear error"
        print(f"{c.command:9s} {c.name:34s} {outcome}{f' (fixed in issue {c.issue})' if c.fixed else ''}")
        key = f"{outcome}, fixed in issue {c.issue}" if c.fixed else outcome
        counts[key] = counts.get(key, 0) + 1
    print(f"{len(CASES)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for issue in sorted({c.issue for c in CASES}):
        mine = [c for c in CASES if c.issue == issue]
        print(
            f"added in issue {issue}: {len(mine)} cases: clear error {sum(c.error is not None for c in mine)}, "
            f"documented policy {sum(c.error is None for c in mine)}; wrong before and fixed: "
            f"{sum(c.fixed for c in mine)}"
        )


def test_case_study_scores_a_real_best_pt_weights_only(tiny_category, tmp_path):
    """The weights-only load of the case study (fixed in issue 13) still reads a trainer's best.pt:
    its scores of the test split equal the trainer's scores_test.csv."""
    import pandas as pd
    import torch

    from mmss_lib.evaluation.case_study import score_with_checkpoint
    from mmss_lib.features.loader import MRHPSplitData
    from mmss_lib.training.trainer import TrainConfig, train_run

    cfg = TrainConfig(
        system="mmss",
        epochs=1,
        patience=50,
        batch_size=16,
        n_neg=3,
        lr=0.003,
        device="cpu",
        num_threads=1,
        model_options={"d": 16, "n_heads": 2, "ff_dim": 32, "head_hidden": 8},
    )
    threads = torch.get_num_threads()
    try:
        train_run(
            cfg,
            data_root=tiny_category / "data",
            dataset=DS,
            category="tiny",
            features_root=tiny_category / "features",
            run_dir=tmp_path,
            progress=False,
        )
        test = MRHPSplitData.from_disk(tiny_category / "data", DS, "tiny", tiny_category / "features")["test"]
        got = score_with_checkpoint(tmp_path, test, np.arange(test.n))
    finally:
        torch.set_num_threads(threads)
    ref = pd.read_csv(tmp_path / "scores_test.csv").set_index("review_id").loc[list(test.review_ids), "score"]
    np.testing.assert_allclose(got["score"], ref.to_numpy(), rtol=1e-5, atol=1e-6)
    assert {f"score_{s}" for s in ("ptrt", "pvrv", "ptrv", "pvrt", "rtrv")} <= set(got)
