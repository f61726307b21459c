"""The trainer: pairwise ranking training of MM-SS and the comparison systems, over seeds.

One run = one system (and variant) x one dataset/category x one seed, in
``{runs_root}/{dataset}/{category}/{system}[__{variant}]/seed{n}/`` (variant "full" has no
suffix). Per epoch (1-based, as in Eq. 12):

1. redraw the training pairs (``mmss_lib.pairs.sample_pairs`` with an RNG seeded from
   ``seed + epoch``, so a resumed run draws exactly the pairs of an uninterrupted one);
2. per batch of ``batch_size`` pairs, forward the batch's unique samples once, then
   L = L_tar (Eq. 13, or MCR's label-gap hinge) + the system's ``aux_loss`` + for MM-SS
   L_sub (Eq. 14 weighted L1 to ``SSPLabel.labels(index)``, combined by Eq. 15) (Eq. 16);
3. after backward/step, ``SSPLabel.update(index, detached features, epoch)``; at the end of the
   epoch ``SSPLabel.end_epoch`` and ``ssp/epoch{i:03d}.npz`` (``SSPLabel.record``);
4. evaluate dev (and test) with ``mmss_lib.metrics.ranking_metrics``; keep ``best.pt`` on dev
   MAP, stop after ``patience`` epochs without improvement; write ``last.pt`` atomically.

Resume: a run folder with ``last.pt`` continues from it: model, optimizer, grad scaler, SSP-Label
banks and EWMA state, epoch, best metric, patience counter and the Python/NumPy/torch RNG states
are restored, so the final metrics equal those of an uninterrupted run. ``epochs``, ``patience``,
``device``, ``num_threads`` and ``eval_batch_size`` may differ on resume (e.g. to extend a run);
any other differing field is refused with a :class:`~mmss_lib.errors.CheckpointError`. A finished
run (``metrics.json`` present, identical configuration) is skipped.

Evaluation follows MRHP_FACTS.md section 4 (every product scored, single-review products and
products without relevant reviews included). Training pairs only come from products with at
least two different labels.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from mmss_lib.errors import CheckpointError, DataError, MMSSError, TrainingError
from mmss_lib.utils import atomic_path, atomic_write_json, pick_device, seed_everything

METRIC_NAMES = ("MAP", "NDCG@3", "NDCG@5", "MRR")
# Fields that may change between an interrupted run and its resumption.
RESUME_FREE_FIELDS = ("epochs", "patience", "device", "num_threads", "eval_batch_size")
SPLITS = ("train", "dev", "test")


@dataclass
class TrainConfig:
    """Everything that defines one training run (saved as ``config.json``)."""

    system: str = "mmss"                 # "mmss" or a baseline name of mmss_lib.systems.SYSTEMS
    variant: str = "full"                # run name suffix, e.g. an MM-SS ablation of model.ABLATIONS ("full": none)
    model_options: dict = field(default_factory=dict)  # keyword options of the system class
    epochs: int = 30                     # max epochs (paper: until early stop; the shared code ran 30)
    batch_size: int = 32                 # pairs per batch (App. A.2); the batch holds their unique samples
    eval_batch_size: int = 64            # samples per evaluation batch
    lr: float = 1e-4                     # Adam learning rate of all but the text encoder (App. A.2)
    lr_text: float = 5e-5                # Adam learning rate of a fine-tuned text encoder (App. A.2)
    weight_decay: float = 0.0            # Adam weight decay (the paper uses none)
    grad_clip: Optional[float] = None    # max gradient norm (None: no clipping)
    pair_scheme: str = "mcr"             # "mcr" (MCR's positives/negatives) or "all" (every ordered pair)
    n_neg: int = 7                       # negatives per positive under "mcr"
    loss: str = "hinge"                  # "hinge" (Eq. 13, margin below) or "label_gap" (MCR's margin y+ - y-)
    margin: float = 1.0                  # margin of Eq. 13 (App. A.2: 1)
    patience: int = 5                    # early stopping: epochs without a dev MAP gain
    seed: int = 0                        # seeds python, numpy, torch and the pair sampler
    device: str = "auto"                 # "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
    amp: bool = True                     # mixed precision (bf16, else fp16 + grad scaler) on CUDA only
    max_text_len: Optional[int] = 512    # tokens kept per text ([CLS] included)
    max_regions_per_image: int = 32      # MCR's read-time cap per image
    max_regions_per_item: int = 128      # MCR's read-time cap per item
    threshold: Optional[float] = None    # relevance threshold of the metrics (None: data.default_threshold)
    ssp_alpha1: float = 1.0              # SSP-Label alpha1 (Eq. 19)
    ssp_alpha2: float = 1.0              # SSP-Label alpha2 (Eq. 20)
    ssp_pivot: Optional[float] = None    # SSP-Label anchor pivot (Eq. 17 reading); None: threshold + 0.5 (1.5 Amazon, 0.5 Lazada)
    fine_tune_text: bool = False         # fine-tune the text encoder end to end (MM-SS only; tokenises raw text)
    text_model: Optional[str] = None     # HF name or local folder of that encoder
    eval_test: bool = True               # also evaluate the test split every epoch (for the history)
    num_threads: Optional[int] = None    # torch.set_num_threads (None: leave as is)

    def __post_init__(self):
        if self.pair_scheme not in ("mcr", "all"):
            raise DataError(f"TrainConfig.pair_scheme={self.pair_scheme!r}: expected 'mcr' or 'all'")
        if self.loss not in ("hinge", "label_gap"):
            raise DataError(f"TrainConfig.loss={self.loss!r}: expected 'hinge' or 'label_gap'")
        for name in ("epochs", "batch_size", "eval_batch_size", "n_neg"):
            if int(getattr(self, name)) < 1:
                raise DataError(f"TrainConfig.{name}={getattr(self, name)!r}: expected an integer >= 1")
        if self.patience < 1:
            raise DataError(f"TrainConfig.patience={self.patience!r}: expected an integer >= 1")
        if self.fine_tune_text and not self.text_model:
            raise DataError("TrainConfig.fine_tune_text=True needs text_model (a HF name or local folder)")
        self.model_options = dict(self.model_options or {})

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=list))

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CheckpointError(f"config has unknown field(s) {unknown}; written by another version?")
        return cls(**d)


# ------------------------------------------------------------------------------------ paths

def run_name(system: str, variant: str | None = "full") -> str:
    """Folder name of a system/variant: ``mmss``, ``mmss__wo_b``, ``mcr``."""
    return system if variant in (None, "", "full") else f"{system}__{variant}"


def run_dir_for(runs_root, dataset: str, category: str, system: str, variant: str | None, seed: int) -> Path:
    return Path(runs_root) / dataset / category / run_name(system, variant) / f"seed{int(seed)}"


# ------------------------------------------------------------------------------------ data

def load_splits(data_root, dataset: str, category: str, features_root, cfg: TrainConfig) -> dict:
    """The three :class:`~mmss_lib.loader.MRHPSplitData` of a category, sharing opened stores."""
    from mmss_lib.loader import MRHPSplitData, ReadCaps, open_stores

    caps = ReadCaps(cfg.max_text_len, cfg.max_regions_per_image, cfg.max_regions_per_item)
    stores = open_stores(features_root, dataset, category)
    return {s: MRHPSplitData.from_disk(data_root, dataset, category, s, features_root, caps=caps,
                                       keep_texts=cfg.fine_tune_text, stores=stores) for s in SPLITS}


def _config_diff(a: dict, b: dict, ignore: Iterable[str] = ()) -> list[str]:
    ignore = set(ignore)
    keys = sorted((set(a) | set(b)) - ignore)
    return [k for k in keys if a.get(k) != b.get(k)]


# ------------------------------------------------------------------------------------ RNG state

def _rng_state() -> dict:
    """Python/NumPy/torch RNG states as tensors, lists and numbers (weights_only-loadable)."""
    import torch

    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [py[0], list(py[1]), py[2]],
             "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import torch

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------ pieces

def build_model(cfg: TrainConfig, text_dim: int, region_dim: int):
    """The system of ``cfg`` for the given input sizes (MM-SS gets the text encoder when fine-tuning)."""
    from mmss_lib.systems import build_system

    options = dict(cfg.model_options)
    if cfg.fine_tune_text:
        if cfg.system != "mmss":
            raise DataError(f"fine_tune_text is supported for MM-SS only, not {cfg.system!r}")
        options["text_encoder"] = cfg.text_model
    try:
        return build_system(cfg.system, text_dim=text_dim, region_dim=region_dim, **options)
    except KeyError as exc:
        raise DataError(str(exc.args[0] if exc.args else exc)) from None
    except TypeError as exc:
        raise DataError(f"system {cfg.system!r}: bad model option(s) {sorted(options)}: {exc}") from None


def build_optimizer(model, cfg: TrainConfig):
    """Adam with the paper's two learning rates (``model.param_groups`` when the system has it)."""
    import torch

    if hasattr(model, "param_groups"):
        groups = model.param_groups(lr=cfg.lr, lr_text=cfg.lr_text)
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}]
    # foreach: one multi-tensor kernel per Adam operation instead of one per parameter (same update)
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


def target_loss(cfg: TrainConfig, s_pos, s_neg, y_pos, y_neg):
    """L_tar of one batch of pairs: Eq. 13 (margin ``cfg.margin``) or MCR's label-gap hinge."""
    from mmss_lib.losses import label_gap_hinge, ranking_hinge

    if cfg.loss == "hinge":
        return ranking_hinge(s_pos, s_neg, margin=cfg.margin)  # Eq. 13
    return label_gap_hinge(s_pos, s_neg, y_pos, y_neg)


def draw_pairs(train, cfg: TrainConfig, epoch: int) -> np.ndarray:
    """The epoch's training pairs (P, 2) of (more, less helpful) sample indices, shuffled;
    RNG seeded from ``seed + epoch`` so a resumed run draws the same pairs."""
    from mmss_lib.pairs import sample_pairs

    rng = np.random.default_rng([int(cfg.seed), int(epoch)])
    pairs = np.asarray(sample_pairs(train.product_codes, train.labels, scheme=cfg.pair_scheme,
                                    n_neg=cfg.n_neg, rng=rng), dtype=np.int64).reshape(-1, 2)
    return pairs[rng.permutation(len(pairs))]


def _autocast(device, cfg: TrainConfig):
    import contextlib

    import torch

    if device.type == "cuda" and cfg.amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _collate_fn(split, cfg: TrainConfig, tokenizer):
    if cfg.fine_tune_text:
        return lambda idx: split.collate_tokens(idx, tokenizer, max_len=cfg.max_text_len)
    return split.collate


def train_step(model, optimizer, split, collate, pairs: np.ndarray, cfg: TrainConfig, device, *, ssp=None,
               epoch: int = 1, scaler=None, where: str = "", last_good: str = "last.pt",
               timings: dict | None = None) -> dict:
    """One optimisation step on a batch of pairs (P, 2) of sample indices of ``split``.

    The batch holds the pairs' unique samples, forwarded once; L = L_tar + aux_loss + L_sub
    (Eq. 16); after the step ``ssp.update`` stores the detached features (Self-MM's order).
    Returns the loss parts as floats. ``timings`` (optional) accumulates the seconds spent in
    the pseudo-label bookkeeping (``"ssp"``: SSPLabel.labels + update).
    """
    import torch

    from mmss_lib.losses import mmss_subtask_loss

    uniq, inv = np.unique(pairs, return_inverse=True)
    inv = torch.as_tensor(inv.reshape(pairs.shape), device=device)                   # (P, 2)
    batch = collate(uniq).to(device)
    model.train()
    with _autocast(device, cfg):
        out = model(batch)
    s = out.score.float()                                                            # (B,)
    y = batch.label
    l_tar = target_loss(cfg, s[inv[:, 0]], s[inv[:, 1]], y[inv[:, 0]], y[inv[:, 1]])
    loss = l_tar
    l_aux = out.aux_loss.float() if out.aux_loss is not None else None
    if l_aux is not None:
        loss = loss + l_aux
    l_sub = None
    # Eq. 12: y_s = y_g in epoch 1, so every weight tanh(|y_s - y_g|) of Eq. 14 is 0 and the
    # subtask losses vanish; only Eq. 15's log-variance terms would remain and push the learned
    # log sigma^2 down for nothing. The subtask objective therefore starts in epoch 2.
    if ssp is not None and epoch > 1:
        t0 = time.perf_counter()
        labels = ssp.labels(batch.index)
        if timings is not None:
            timings["ssp"] = timings.get("ssp", 0.0) + time.perf_counter() - t0
        fo = type(out)(score=s, sub_scores={k: v.float() for k, v in out.sub_scores.items()})
        l_sub = mmss_subtask_loss(fo, labels, y, model)                              # Eq. 14-15
        loss = loss + l_sub                                                          # Eq. 16
    if not torch.isfinite(loss):
        raise TrainingError(
            f"{where}: loss is {loss.item()} (target {l_tar.item():.4g}, aux "
            f"{l_aux.item() if l_aux is not None else 0:.4g}, subtask {l_sub.item() if l_sub is not None else 0:.4g}); "
            f"training stopped, the last good checkpoint {last_good} is kept. Check the features for "
            "NaN/inf or lower the learning rate")
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if cfg.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
    if ssp is not None:
        t0 = time.perf_counter()
        ssp.update(batch.index, {k: out.features[k].detach().float() for k in ssp.tasks}, epoch)
        if timings is not None:
            timings["ssp"] = timings.get("ssp", 0.0) + time.perf_counter() - t0
    return {"loss": loss.item(), "loss_tar": l_tar.item(),
            "loss_aux": l_aux.item() if l_aux is not None else 0.0,
            "loss_sub": l_sub.item() if l_sub is not None else 0.0, "n_samples": int(len(uniq))}


@dataclass
class Evaluation:
    scores: np.ndarray               # (N,) y_hat_g per sample of the split, file order
    sub_scores: dict                 # subtask -> (N,) y_hat_s (MM-SS only)
    metrics: dict                    # MAP, NDCG@3, NDCG@5, MRR


def evaluate(model, split, cfg: TrainConfig, device, threshold: float, tokenizer=None,
             *, keep_sub_scores: bool = False) -> Evaluation:
    """Score every sample of ``split`` (eval mode, no grad) and compute the ranking metrics."""
    import torch

    from mmss_lib.metrics import ranking_metrics

    model.eval()
    scores = np.zeros(split.n, dtype=np.float64)
    subs: dict[str, np.ndarray] = {}
    collate = _collate_fn(split, cfg, tokenizer)
    with torch.no_grad(), _autocast(device, cfg):
        for idx, batch in split.iter_batches(None, cfg.eval_batch_size, collate=collate):
            out = model(batch.to(device))
            scores[idx] = out.score.float().cpu().numpy()
            if keep_sub_scores:
                for s, v in out.sub_scores.items():
                    subs.setdefault(s, np.zeros(split.n, dtype=np.float64))[idx] = v.float().cpu().numpy()
    metrics = ranking_metrics(split.product_ids, split.labels, scores, threshold=threshold)
    return Evaluation(scores, subs, {k: float(metrics[k]) for k in METRIC_NAMES})


def _scores_frame(split, ev: Evaluation):
    import pandas as pd

    df = pd.DataFrame({"review_id": split.review_ids, "product_id": split.product_ids,
                       "label": split.labels, "score": ev.scores})
    for s, v in ev.sub_scores.items():
        df[f"score_{s}"] = v          # y_hat_s of the subtask heads (case study)
    return df


def _write_csv(path: Path, df) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def _save_torch(path: Path, obj) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _load_torch(path: Path) -> dict:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, not ours
        raise CheckpointError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc}); "
                              "delete it to start the run afresh") from None


def _store_manifests(split) -> dict:
    out = {}
    for kind, store in split.stores.items():
        m = getattr(store, "manifest", None)
        if isinstance(m, dict):
            out[kind] = {k: v for k, v in m.items() if k not in ("shards",)}
    return out


# ------------------------------------------------------------------------------------ training

def fit(cfg: TrainConfig, splits: dict, run_dir, *, threshold: float, progress: bool = True,
        run_info: dict | None = None) -> dict:
    """Train/evaluate on already loaded splits (``{"train", "dev", "test"}`` ->
    :class:`~mmss_lib.loader.MRHPSplitData`) into ``run_dir``; return the metrics.json content.

    See the module docstring for the procedure, the files written and the resume rules.
    """
    import torch

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"config": cfg.to_json(), "run": dict(run_info or {}), "threshold": threshold}
    features = _store_manifests(splits["train"])    # extraction settings, for predict
    metrics_path, last_path, best_path = run_dir / "metrics.json", run_dir / "last.pt", run_dir / "best.pt"
    cfg_path = run_dir / "config.json"

    # ---- a finished run with the same configuration is skipped
    if metrics_path.exists() and cfg_path.exists():
        old = json.loads(cfg_path.read_text(encoding="utf-8"))
        if old.get("config") == record["config"] and old.get("run", {}) == record["run"]:
            return json.loads(metrics_path.read_text(encoding="utf-8"))

    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    device = pick_device(cfg.device)
    train, dev, test = splits["train"], splits["dev"], splits["test"]
    seed_everything(cfg.seed)
    model = build_model(cfg, train.text_dim, train.region_dim).to(device)
    optimizer = build_optimizer(model, cfg)
    use_scaler = device.type == "cuda" and cfg.amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    tokenizer = None
    if cfg.fine_tune_text:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(cfg.text_model)

    ssp = None
    subtasks = tuple(getattr(model, "subtasks", ()) or ())
    if subtasks:
        from mmss_lib.ssp_label import SSPLabel
        ssp = SSPLabel(train.n, torch.as_tensor(train.labels, dtype=torch.float32), model.feature_dims(),
                       alpha1=cfg.ssp_alpha1, alpha2=cfg.ssp_alpha2, pivot=cfg.ssp_pivot if cfg.ssp_pivot is not None else threshold + 0.5, max_history=1,
                       bank_dir=_ssp_bank_dir(run_dir, train.n, model.feature_dims()))

    state = {"epoch": 0, "best_metric": -math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [],
             "seconds": 0.0}
    # ---- resume
    if last_path.exists():
        ck = _load_torch(last_path)
        old_cfg = ck.get("config", {})
        diff = _config_diff(old_cfg, record["config"], RESUME_FREE_FIELDS)
        if ck.get("run", {}) != record["run"]:
            diff.append("run (dataset/category)")
        if diff:
            raise CheckpointError(
                f"{last_path}: checkpoint from another configuration; differing field(s): "
                + ", ".join(f"{k} (checkpoint {old_cfg.get(k)!r}, now {record['config'].get(k)!r})"
                            if k in record["config"] else k for k in diff)
                + "; use another run folder or delete it")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        if ssp is not None:
            ssp.load_state_dict(ck["ssp"])
        for k in state:
            state[k] = ck["state"][k]
        _set_rng_state(ck["rng"])
    atomic_write_json(cfg_path, {**record, "features": features})

    def checkpoint_payload() -> dict:
        return {"config": record["config"], "run": record["run"], "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                "ssp": ssp.state_dict() if ssp is not None else None, "state": dict(state),
                "rng": _rng_state()}

    collate = _collate_fn(train, cfg, tokenizer)
    bar_cls = None
    if progress:
        from tqdm.auto import tqdm as bar_cls  # noqa: N813

    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch = state["epoch"] + 1
        t0 = time.perf_counter()
        model.train()
        pairs = draw_pairs(train, cfg, epoch)
        sums = {"loss": 0.0, "loss_tar": 0.0, "loss_aux": 0.0, "loss_sub": 0.0}
        n_batches = (len(pairs) + cfg.batch_size - 1) // cfg.batch_size
        it = range(n_batches)
        bar = bar_cls(it, desc=f"{run_dir.parent.name}/{run_dir.name} epoch {epoch}", leave=False) if bar_cls else None
        for b in (bar if bar is not None else it):
            pb = pairs[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            parts = train_step(model, optimizer, train, collate, pb, cfg, device, ssp=ssp, epoch=epoch,
                               scaler=scaler, where=f"{run_dir}: epoch {epoch}, batch {b + 1}/{n_batches}",
                               last_good=f"{last_path.name} (epoch {state['epoch']})")
            for k in sums:
                sums[k] += parts[k]
            if bar is not None:
                bar.set_postfix(loss=f"{sums['loss'] / (b + 1):.4f}")
        if bar is not None:
            bar.close()
        if ssp is not None:
            rec = ssp.end_epoch(epoch)
            with atomic_path(run_dir / "ssp" / f"epoch{epoch:03d}.npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez_compressed(fh, review_id=train.review_ids.astype(str), **rec)
        train_seconds = time.perf_counter() - t0

        ev_dev = evaluate(model, dev, cfg, device, threshold, tokenizer)
        ev_test = evaluate(model, test, cfg, device, threshold, tokenizer) if cfg.eval_test else None
        entry = {"epoch": epoch, "n_pairs": int(len(pairs)), "n_batches": n_batches,
                 **{k: v / max(n_batches, 1) for k, v in sums.items()},
                 "dev": ev_dev.metrics, "test": ev_test.metrics if ev_test else None,
                 "train_seconds": train_seconds, "seconds": time.perf_counter() - t0}
        state["history"].append(entry)
        state["seconds"] += entry["seconds"]
        state["epoch"] = epoch
        if ev_dev.metrics["MAP"] > state["best_metric"]:
            state.update(best_metric=ev_dev.metrics["MAP"], best_epoch=epoch, bad_epochs=0)
            _save_torch(best_path, {"config": record["config"], "run": record["run"], "epoch": epoch,
                                    "model": model.state_dict(), "dev": ev_dev.metrics,
                                    "text_dim": train.text_dim, "region_dim": train.region_dim,
                                    "threshold": threshold, "features": features})
        else:
            state["bad_epochs"] += 1
        _save_torch(last_path, checkpoint_payload())
        atomic_write_json(run_dir / "history.json", state["history"])

    if ssp is not None:
        ssp.close()                      # memory-mapped banks (large training sets) are scratch
    return _finalize(cfg, model, splits, run_dir, record, state, device, threshold, tokenizer)


# SSP-Label banks larger than this (as float32) live in memory-mapped scratch files of the run
# folder instead of anonymous memory, like the feature stores (their state is in last.pt).
SSP_BANK_FILE_BYTES = 64 * 2**20


def _ssp_bank_dir(run_dir: Path, n: int, dims: dict) -> Optional[Path]:
    return Path(run_dir) / "ssp_banks" if 4 * n * sum(dims.values()) > SSP_BANK_FILE_BYTES else None


def _finalize(cfg, model, splits, run_dir: Path, record, state, device, threshold, tokenizer) -> dict:
    """Score dev and test with the best model; write scores_{dev,test}.csv and metrics.json."""
    best = _load_torch(run_dir / "best.pt") if (run_dir / "best.pt").exists() else None
    if best is None:
        raise TrainingError(f"{run_dir}: no best.pt after training (no epoch finished)")
    model.load_state_dict(best["model"])
    ev_dev = evaluate(model, splits["dev"], cfg, device, threshold, tokenizer)
    ev_test = evaluate(model, splits["test"], cfg, device, threshold, tokenizer, keep_sub_scores=True)
    _write_csv(run_dir / "scores_dev.csv", _scores_frame(splits["dev"], ev_dev))
    _write_csv(run_dir / "scores_test.csv", _scores_frame(splits["test"], ev_test))
    epochs_run = len(state["history"])
    metrics = {"best_epoch": int(best["epoch"]), "dev": ev_dev.metrics, "test": ev_test.metrics,
               "epochs_run": epochs_run, "stopped_early": state["bad_epochs"] >= cfg.patience,
               "seconds": state["seconds"],
               "sec_per_epoch": state["seconds"] / max(epochs_run, 1),
               "train_sec_per_epoch": sum(h["train_seconds"] for h in state["history"]) / max(epochs_run, 1),
               "threshold": threshold, "n_train": splits["train"].n}
    atomic_write_json(run_dir / "metrics.json", metrics)
    return metrics


def train_run(cfg: TrainConfig, *, data_root, dataset: str, category: str, features_root, run_dir,
              progress: bool = True, splits: dict | None = None) -> dict:
    """Train one run from the dataset files and feature stores; return metrics.json's content.

    ``splits`` may pass splits already loaded with :func:`load_splits` (shared across runs).
    The threshold is ``cfg.threshold`` or :func:`mmss_lib.data.default_threshold` of ``dataset``.
    """
    threshold = cfg.threshold
    if threshold is None:
        from mmss_lib.data import default_threshold
        threshold = default_threshold(dataset)
    run_info = {"dataset": dataset, "category": category}
    run_dir = Path(run_dir)
    # skip a finished run before loading anything
    cfg_path, metrics_path = run_dir / "config.json", run_dir / "metrics.json"
    if metrics_path.exists() and cfg_path.exists():
        old = json.loads(cfg_path.read_text(encoding="utf-8"))
        if old.get("config") == cfg.to_json() and old.get("run") == run_info:
            return json.loads(metrics_path.read_text(encoding="utf-8"))
    if splits is None:
        splits = load_splits(data_root, dataset, category, features_root, cfg)
    return fit(cfg, splits, run_dir, threshold=float(threshold), progress=progress, run_info=run_info)


# ------------------------------------------------------------------------------------ experiments

def _normalise_systems(systems) -> list[tuple[str, str, dict]]:
    out = []
    for s in systems:
        if isinstance(s, str):
            out.append((s, "full", {}))
        else:
            s = tuple(s)
            if len(s) == 2:
                out.append((s[0], s[1], {}))
            elif len(s) == 3:
                out.append((s[0], s[1], dict(s[2] or {})))
            else:
                raise DataError(f"systems entry {s!r}: expected a name or (system, variant, options)")
    return out


def run_experiment(*, data_root, dataset: str, categories: Sequence[str], features_root, runs_root,
                   systems, seeds: Sequence[int] = (0, 1, 2, 3, 4), base_config: TrainConfig | None = None,
                   progress: bool = True, n_jobs: int = 1):
    """Train every (category, system/variant, seed) and return tidy test results (pandas).

    ``systems``: names (variant "full", ``base_config.model_options``) or ``(system, variant,
    options)`` triples whose options update the base options (e.g. MM-SS variants of
    ``mmss_lib.model.ABLATIONS``). Finished runs are skipped, interrupted ones resumed.
    ``n_jobs`` > 1 trains that many runs at once in worker processes (one torch thread each
    unless ``base_config.num_threads`` says otherwise): the models are small, so on a CPU several
    single-threaded runs use the cores better than one multi-threaded run. Every run is seeded
    by its own config, so the results do not depend on ``n_jobs`` beyond float rounding of
    the thread count. Columns: dataset, category, system, variant, seed, MAP, NDCG@3, NDCG@5,
    MRR (test split), dev_MAP, best_epoch, epochs_run, sec_per_epoch, run_dir.
    """
    import pandas as pd

    base = base_config or TrainConfig()
    specs = _normalise_systems(systems)
    jobs = []
    for category in categories:
        for system, variant, options in specs:
            for seed in seeds:
                cfg = replace(base, system=system, variant=variant,
                              model_options={**base.model_options, **options}, seed=int(seed))
                rd = run_dir_for(runs_root, dataset, category, system, variant, seed)
                jobs.append((category, cfg, rd))
    common = dict(data_root=data_root, dataset=dataset, features_root=features_root, progress=progress)
    if n_jobs > 1 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        if base.num_threads is None:
            jobs = [(c, replace(cfg, num_threads=1), rd) for c, cfg, rd in jobs]
        with ProcessPoolExecutor(max_workers=int(n_jobs), mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_experiment_job, c, cfg, str(rd), common) for c, cfg, rd in jobs]
            metrics = [f.result() for f in futures]
    else:
        metrics, splits, last_category = [], None, None
        for category, cfg, rd in jobs:
            if category != last_category:
                splits, last_category = None, category
            if splits is None and not _finished(rd, cfg, dataset, category):
                splits = load_splits(data_root, dataset, category, features_root, base)
            metrics.append(_experiment_job(category, cfg, str(rd), common, splits=splits))
    rows = []
    for (category, cfg, rd), m in zip(jobs, metrics):
        rows.append({"dataset": dataset, "category": category, "system": cfg.system, "variant": cfg.variant,
                     "seed": int(cfg.seed), **{k: m["test"][k] for k in METRIC_NAMES},
                     "dev_MAP": m["dev"]["MAP"], "best_epoch": m["best_epoch"],
                     "epochs_run": m["epochs_run"], "sec_per_epoch": m["sec_per_epoch"],
                     "run_dir": str(rd)})
    return pd.DataFrame(rows)


def _experiment_job(category: str, cfg: TrainConfig, run_dir: str, common: dict, splits=None) -> dict:
    """One run of :func:`run_experiment` (a top-level function so worker processes can import it)."""
    if common["progress"]:
        print(f"[train] {common['dataset']}/{category} {run_name(cfg.system, cfg.variant)} seed {cfg.seed}",
              flush=True)
    return train_run(cfg, data_root=common["data_root"], dataset=common["dataset"], category=category,
                     features_root=common["features_root"], run_dir=Path(run_dir),
                     progress=common["progress"], splits=splits)


def _finished(run_dir: Path, cfg: TrainConfig, dataset: str, category: str) -> bool:
    cp, mp = run_dir / "config.json", run_dir / "metrics.json"
    if not (cp.exists() and mp.exists()):
        return False
    old = json.loads(cp.read_text(encoding="utf-8"))
    return old.get("config") == cfg.to_json() and old.get("run") == {"dataset": dataset, "category": category}


def summarize(results):
    """Mean and std over seeds per (dataset, category, system, variant): columns ``{metric}_mean``,
    ``{metric}_std`` for MAP, NDCG@3, NDCG@5, MRR, dev_MAP, sec_per_epoch, plus ``n_seeds``."""
    import pandas as pd

    keys = ["dataset", "category", "system", "variant"]
    cols = [c for c in list(METRIC_NAMES) + ["dev_MAP", "best_epoch", "sec_per_epoch"] if c in results.columns]
    g = results.groupby(keys, sort=False)
    out = g[cols].agg(["mean", "std"])
    out.columns = [f"{c}_{stat}" for c, stat in out.columns]
    out["n_seeds"] = g.size()
    return out.reset_index()


def load_per_product(runs_root, dataset: str, category: str, system: str, variant: str | None = "full",
                     seeds: Sequence[int] = (0, 1, 2, 3, 4), split: str = "test", threshold: float | None = None):
    """Per-product metrics of a system's ``scores_{split}.csv``, averaged over seeds.

    Returns a DataFrame indexed by product_id with the columns of
    :func:`mmss_lib.metrics.per_product_metrics` (for paired significance tests). The threshold
    defaults to the one recorded in the run's metrics.json.
    """
    import pandas as pd

    from mmss_lib.metrics import per_product_metrics

    frames = []
    for seed in seeds:
        rd = run_dir_for(runs_root, dataset, category, system, variant, seed)
        path = rd / f"scores_{split}.csv"
        if not path.exists():
            raise DataError(f"{path}: no scores for {run_name(system, variant)} seed {seed}; train it first")
        df = pd.read_csv(path, dtype={"review_id": str, "product_id": str})
        th = threshold
        if th is None:
            th = json.loads((rd / "metrics.json").read_text(encoding="utf-8"))["threshold"]
        pp = per_product_metrics(df["product_id"].to_numpy(), df["label"].to_numpy(), df["score"].to_numpy(),
                                 threshold=th)
        if "product_id" in getattr(pp, "columns", []):
            pp = pp.set_index("product_id")
        frames.append(pp)
    cat = pd.concat(frames)
    return cat.groupby(level=0, sort=False).mean(numeric_only=True)


# ------------------------------------------------------------------------------------ CLI

def _parse_options(items: Sequence[str]) -> dict:
    out = {}
    for it in items or ():
        if "=" not in it:
            raise DataError(f"--option {it!r}: expected key=value (value as JSON, e.g. d=64 or subtasks='[\"ptrt\"]')")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def build_parser(prog: str) -> argparse.ArgumentParser:
    d = TrainConfig()
    ap = argparse.ArgumentParser(prog=prog, description="Train and evaluate systems over seeds "
                                 "(results: runs/{dataset}/{category}/{system}[__variant]/seed{n}/).")
    ap.add_argument("--data-root", required=True, help="folder holding {dataset}/{category}/ files")
    ap.add_argument("--dataset", required=True, help="amazon, lazada or demo")
    ap.add_argument("--categories", nargs="+", required=True)
    ap.add_argument("--features", required=True, help="features root (mmss extract output)")
    ap.add_argument("--runs", required=True, help="runs root")
    ap.add_argument("--systems", nargs="+", default=["mmss"],
                    help="system names; mmss:VARIANT for an MM-SS ablation of model.ABLATIONS (e.g. mmss:wo_b)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--patience", type=int, default=d.patience)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--lr-text", type=float, default=d.lr_text)
    ap.add_argument("--pair-scheme", choices=("mcr", "all"), default=d.pair_scheme)
    ap.add_argument("--n-neg", type=int, default=d.n_neg)
    ap.add_argument("--loss", choices=("hinge", "label_gap"), default=d.loss)
    ap.add_argument("--margin", type=float, default=d.margin)
    ap.add_argument("--threshold", type=float, default=None, help="relevance threshold (default: per dataset)")
    ap.add_argument("--max-text-len", type=int, default=d.max_text_len)
    ap.add_argument("--device", default=d.device)
    ap.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    ap.add_argument("--num-threads", type=int, default=None)
    ap.add_argument("--fine-tune-text", metavar="TEXT_MODEL", default=None,
                    help="fine-tune this text encoder end to end (MM-SS only)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="model option for every system (repeatable; JSON values)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def cli_main(argv: list[str], prog: str = "mmss train") -> int:
    args = build_parser(prog).parse_args(argv)
    systems = []
    for s in args.systems:
        if ":" in s:
            name, variant = s.split(":", 1)
            from mmss_lib.model import ABLATIONS
            if variant not in ABLATIONS:
                raise DataError(f"--systems {s}: unknown MM-SS variant {variant!r}; known: {', '.join(ABLATIONS)}")
            systems.append((name, variant, dict(ABLATIONS[variant])))
        else:
            systems.append((s, "full", {}))
    cfg = TrainConfig(epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, lr=args.lr,
                      lr_text=args.lr_text, pair_scheme=args.pair_scheme, n_neg=args.n_neg, loss=args.loss,
                      margin=args.margin, threshold=args.threshold, max_text_len=args.max_text_len,
                      device=args.device, amp=not args.no_amp, num_threads=args.num_threads,
                      fine_tune_text=bool(args.fine_tune_text), text_model=args.fine_tune_text,
                      model_options=_parse_options(args.option))
    results = run_experiment(data_root=args.data_root, dataset=args.dataset, categories=args.categories,
                             features_root=args.features, runs_root=args.runs, systems=systems,
                             seeds=args.seeds, base_config=cfg, progress=not args.no_progress)
    summary = summarize(results)
    cols = ["category", "system", "variant"] + [f"{m}_{s}" for m in METRIC_NAMES for s in ("mean", "std")] + ["n_seeds"]
    with_pd_opts = summary[cols].round(4).to_string(index=False)
    print(with_pd_opts)
    return 0


# ------------------------------------------------------------------------------------ benchmark

def _synthetic_bench_stores(root: Path, n_reviews: int, *, text_dim: int, text_len: int, region_dim: int,
                            per_product: int = 20, image_share: float = 0.1, regions: int = 4) -> None:
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
    writers = {k: FeatureStoreWriter(root / k, kind=k.split("_")[0], dim=text_dim if k.startswith("text") else region_dim,
                                     shard_size=4096, overwrite=True)
               for k in ("text_prd", "text_rvw", "region_prd", "region_rvw")}
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
            writers["region_rvw"].add(rid, np.zeros((0, region_dim), np.float16),
                                      np.zeros((0, 4), np.float32), np.zeros(0, np.int32))
    for w in writers.values():
        w.close()


def _memory_now() -> dict:
    """Resident memory of this process from /proc/self/status, MiB: ``rss`` (all resident pages),
    ``anon`` (RssAnon: private anonymous memory: heap, tensors) and ``file`` (RssFile: mapped
    files: shared libraries, memory-mapped feature stores and banks; reclaimable page cache),
    ``hwm`` (VmHWM: peak RSS of this process image; unlike ``ru_maxrss`` not inherited across exec)."""
    out = {"rss": 0.0, "anon": 0.0, "file": 0.0, "hwm": 0.0}
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                name = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "VmHWM": "hwm"}.get(key)
                if name:
                    out[name] = int(value.split()[0]) / 1024.0
    except OSError:  # not Linux: fall back to the peak RSS only
        import resource
        out["rss"] = out["hwm"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def _bench_child(spec: dict) -> dict:
    """Run in a fresh process: open the synthetic stores, train ``steps`` MM-SS steps in epoch 1,
    close it, ``steps`` more in epoch 2 (pseudo labels active); report timings, peak RSS
    (VmHWM), peak anonymous memory (RssAnon sampled after every phase and step) and the
    anonymous memory after each phase. The SSP-Label banks are set up as in :func:`fit`."""
    import torch

    phases = {"imports": _memory_now()["anon"]}
    peak_anon = phases["imports"]

    def mark(name: str | None = None) -> None:
        nonlocal peak_anon
        m = _memory_now()["anon"]
        peak_anon = max(peak_anon, m)
        if name:
            phases[name] = m

    import pandas as pd

    from mmss_lib.loader import MRHPSplitData, open_stores
    from mmss_lib.ssp_label import SSPLabel

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    n, per = int(spec["n"]), int(spec["per_product"])
    rng = np.random.default_rng(0)
    ids = np.arange(n)
    reviews = pd.DataFrame({"review_id": [f"p{i // per}-{i % per}" for i in ids],
                            "product_id": [f"p{i // per}" for i in ids],
                            "label": rng.integers(0, 5, size=n)})
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
    ssp = SSPLabel(train.n, torch.as_tensor(train.labels, dtype=torch.float32), dims, max_history=1,
                   bank_dir=_ssp_bank_dir(Path(spec["root"]) / "run", train.n, dims))
    mark("model+ssp")
    out = {"n": n}
    for epoch in (1, 2):
        pairs = draw_pairs(train, cfg, epoch)
        timings: dict = {}
        samples = 0
        t0 = time.perf_counter()
        for b in range(int(spec["steps"])):
            pb = pairs[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            samples += train_step(model, optimizer, train, train.collate, pb, cfg, torch.device("cpu"),
                                  ssp=ssp, epoch=epoch, timings=timings)["n_samples"]
            mark()
        step_s = time.perf_counter() - t0
        out[f"epoch{epoch}"] = {"seconds": step_s, "samples": samples, "ssp_seconds": timings.get("ssp", 0.0),
                                "n_pairs": int(len(pairs))}
        t1 = time.perf_counter()
        ssp.end_epoch(epoch)
        out[f"epoch{epoch}"]["end_epoch_seconds"] = time.perf_counter() - t1
        mark(f"epoch{epoch}")
    out["peak_rss_mb"] = _memory_now()["hwm"]
    out["peak_anon_mb"] = peak_anon
    out["phases_anon_mb"] = phases
    out["ssp_bank_mb"] = sum(v.numel() * v.element_size() for v in ssp.bank.values()) / 2**20
    out["ssp_bank_where"] = (f"{str(ssp.bank_dtype).replace('torch.', '')} "
                             f"{'memory-mapped files' if ssp.bank_dir is not None else 'in RAM'}")
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
    return 2.0 * n ** 3 * reps / (time.perf_counter() - t0)


def _step_flops(*, batch: int, text_dim: int, lp: int, lr: int, np_: int, nr: int, rounds: int,
                model_options: dict, matmul_n: int = 1024, matmul_seconds: float = 0.5) -> dict:
    """FLOPs of one MM-SS training step on ``batch`` samples (``batch // 2`` ranking pairs,
    forward + backward + Adam, counted with ``FlopCounterMode``), and ``rounds`` interleaved
    measurements of [dense matmul FLOP/s, one step's time], so that both see the same machine
    load. Returns the FLOPs, per-round matmul FLOP/s, step seconds and the ratios."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mmss_lib.batch import random_batch
    from mmss_lib.losses import mmss_subtask_loss, ranking_hinge
    from mmss_lib.model import MMSS

    torch.manual_seed(0)
    model = MMSS(text_dim=text_dim, region_dim=2048, **model_options)
    opt = build_optimizer(model, TrainConfig())   # the trainer's optimizer
    b = random_batch(batch, text_dim=text_dim, lp=lp, lr=lr, np_=np_, nr=nr, seed=0)
    labels = {s: b.label for s in model.subtasks}
    half = batch // 2

    def step():
        out = model(b)
        loss = ranking_hinge(out.score[:half], out.score[half:2 * half]) + mmss_subtask_loss(out, labels, b.label, model)
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


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def bench_train(argv: list[str], prog: str = "mmss bench train") -> int:
    """``mmss bench train``: ratios measured in one run (see ``--help``)."""
    import subprocess
    import tempfile

    import torch

    ap = argparse.ArgumentParser(prog=prog, description=(
        "Training benchmarks, all measured in this run: (1) achieved FLOP/s of an MM-SS training step "
        "as a fraction of this machine's dense float32 matmul FLOP/s (goal >= 30%%), measured interleaved "
        "with the same thread count; (2) training throughput (reviews/s) from memory-mapped synthetic "
        "stores; (3) pseudo-label bookkeeping time as a fraction of the step time with --n-large training "
        "reviews (goal <= 5%%); (4) peak memory with --n-large vs --n-small training reviews, each in its "
        "own process (goal <= 1.2x): anonymous memory (what the process allocates; the goal's measure, "
        "since features stay on disk, memory-mapped) and total RSS (also counts pages of memory-mapped "
        "files read so far and shared libraries)."))
    ap.add_argument("--n-small", type=int, default=10_000)
    ap.add_argument("--n-large", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=20, help="training steps per epoch and size")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved matmul/step measurements for (1)")
    ap.add_argument("--text-dim", type=int, default=128, help="token feature size of the synthetic stores")
    ap.add_argument("--text-len", type=int, default=16, help="tokens per synthetic text")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads, for every measurement (default: the usable CPU cores)")
    ap.add_argument("--tmp", default=None, help="folder for the synthetic stores (default: a temp dir)")
    args = ap.parse_args(argv)
    threads = args.threads or _default_threads()
    torch.set_num_threads(threads)
    opts = {}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    # (1) FLOP/s fraction: 32 pairs -> 64 samples, BERT-base token features, interleaved with sgemm
    r = _step_flops(batch=64, text_dim=768, lp=64, lr=64, np_=32, nr=16, rounds=args.rounds, model_options=opts)
    peak, step_s, ratio = (float(np.median(r["peaks"])), float(np.median(r["times"])), float(np.median(r["ratios"])))
    print(f"[flops] dense fp32 matmul (1024^2 x 1024 sgemm, {threads} threads), {len(r['peaks'])} measurements "
          f"interleaved with the steps: median {peak / 1e9:.1f} GFLOP/s "
          f"(min {min(r['peaks']) / 1e9:.1f}, max {max(r['peaks']) / 1e9:.1f})")
    print(f"[flops] MM-SS step (32 pairs = 64 samples, BERT-base token features 64+64, 32+16 regions, d=128, "
          f"forward+backward+Adam): {r['flops'] / 1e9:.2f} GFLOP in {step_s * 1e3:.0f} ms (median of "
          f"{len(r['times'])}) = {r['flops'] / step_s / 1e9:.1f} GFLOP/s = {ratio:.1%} of matmul peak "
          f"(median of per-step ratios, range {min(r['ratios']):.1%}..{max(r['ratios']):.1%}; goal >= 30%)")

    # (2)-(4) synthetic stores, one child process per size
    results = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for n in (args.n_small, args.n_large):
            root = Path(tmp) / f"n{n}"
            t0 = time.perf_counter()
            _synthetic_bench_stores(root / "bench" / "synthetic", n, text_dim=args.text_dim,
                                    text_len=args.text_len, region_dim=2048)
            spec = {"n": n, "per_product": 20, "root": str(root), "steps": args.steps, "threads": threads,
                    "model_options": opts}
            code = ("import json,sys; from mmss_lib.train import _bench_child; "
                    "print('RESULT', json.dumps(_bench_child(json.loads(sys.argv[1]))))")
            proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-4000:], file=sys.stderr)
                return 1
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
            results[n] = json.loads(line[len("RESULT "):])
            print(f"[data] {n} reviews: stores written in {time.perf_counter() - t0:.1f} s")
            shutil_rmtree(root)
    for n, res in results.items():
        e1, e2 = res["epoch1"], res["epoch2"]
        rate = (e1["samples"] + e2["samples"]) / (e1["seconds"] + e2["seconds"])
        print(f"[throughput] {n} training reviews: {rate:.1f} reviews/s "
              f"({e2['samples'] / args.steps:.0f} unique reviews per 32-pair batch)")
    big = results[args.n_large]
    e2 = big["epoch2"]
    print(f"[ssp] {args.n_large} training reviews, epoch 2 (labels estimated): bookkeeping "
          f"{e2['ssp_seconds'] / args.steps * 1e3:.2f} ms of {e2['seconds'] / args.steps * 1e3:.0f} ms per step "
          f"= {e2['ssp_seconds'] / e2['seconds']:.1%} (goal <= 5%); end_epoch {e2['end_epoch_seconds']:.2f} s "
          f"once per epoch ({e2['n_pairs'] // 32} steps)")
    small = results[args.n_small]
    print(f"[memory] peak anonymous memory {small['peak_anon_mb']:.0f} MB with {args.n_small} reviews, "
          f"{big['peak_anon_mb']:.0f} MB with {args.n_large}: ratio {big['peak_anon_mb'] / small['peak_anon_mb']:.2f}x "
          f"(goal <= 1.2x)")
    print(f"[memory] peak RSS (incl. mapped feature/bank files, libraries) {small['peak_rss_mb']:.0f} MB / "
          f"{big['peak_rss_mb']:.0f} MB: ratio {big['peak_rss_mb'] / small['peak_rss_mb']:.2f}x; SSP-Label banks "
          f"{small['ssp_bank_mb']:.0f} MB ({small['ssp_bank_where']}) / {big['ssp_bank_mb']:.0f} MB ({big['ssp_bank_where']})")
    for n, res in results.items():
        ph = res["phases_anon_mb"]
        steps = ", ".join(f"{k} {v:.0f}" for k, v in ph.items())
        print(f"[memory] {n} reviews, anonymous MB after each phase: {steps}")
    return 0


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
