"""The trainer: pairwise ranking training of one run of MM-SS or a comparison system.

One run = one system (and variant) x one dataset/category x one seed, in
``{runs_root}/{dataset}/{category}/{system}[__{variant}]/seed{n}/`` (variant "full" has no
suffix). Per epoch (1-based, as in Eq. 12):

1. redraw the training pairs (``mmss_lib.data.pairs.sample_pairs`` with an RNG seeded from
   ``seed + epoch``, so a resumed run draws exactly the pairs of an uninterrupted one);
2. per batch of ``batch_size`` pairs, forward the batch's unique samples once, then
   L = L_tar (Eq. 13, or MCR's label-gap hinge) + the system's ``aux_loss`` + for MM-SS
   L_sub (Eq. 14 weighted L1 to ``SSPLabel.labels(index)``, combined by Eq. 15) (Eq. 16);
3. after backward/step, ``SSPLabel.update(index, detached features, epoch)``; at the end of the
   epoch ``SSPLabel.end_epoch`` (the next epoch's pseudo labels, estimated from the banks) and
   ``ssp/epoch{i:03d}.npz`` (``SSPLabel.record``); the epoch's entry of ``history.json`` gets
   ``"ssp"``: per subtask share_up / share_down (offsets above / below zero), mean_chi_s,
   mean_chi_g, mean_change, n_seen (``mmss_lib.ssp.label.ssp_health``);
4. evaluate dev (and test) with ``mmss_lib.metrics.ranking.ranking_metrics``; keep ``best.pt`` on dev
   MAP, stop after ``patience`` epochs without improvement; write ``last.pt`` atomically.

Resume: a run folder with ``last.pt`` continues from it: model, optimizer, grad scaler, SSP-Label
banks and EWMA state, epoch, best metric, patience counter and the Python/NumPy/torch RNG states
are restored, so the final metrics equal those of an uninterrupted run. ``epochs``, ``patience``,
``device``, ``num_threads`` and ``eval_batch_size`` may differ on resume (e.g. to extend a run);
any other differing field is refused with a :class:`~mmss_lib.errors.CheckpointError`. A finished
run (``metrics.json`` present, the same run by :mod:`mmss_lib.training.run_folder`'s identity: equal
configuration but for where it was trained) is skipped. The folder's layout and these rules are
:mod:`mmss_lib.training.run_folder`'s.

One process per run folder: :func:`train_run` holds an OS lock (``fcntl.flock`` on
``{run_dir}/.lock``, :func:`mmss_lib.training.run_folder.run_lock`) while it trains or writes the folder. A
second process asking for the same run is refused at once with a
:class:`~mmss_lib.errors.RunInUseError` naming the folder and the holder's PID (two ``mmss
train`` on one runs folder no longer mix their files); the kernel drops the lock when its holder
dies, so a stale lock file from a killed run never blocks the rerun. A run that would train on
nothing (no training pairs: all training labels equal, or no product with the label levels the
pair scheme needs) is refused before anything is written
(:class:`~mmss_lib.errors.TrainingError` naming the cause and the category), so an untrained
model's metrics never reach a summary.

Evaluation follows docs/MRHP.md section 4 (every product scored, single-review products and
products without relevant reviews included). Training pairs come only from products whose labels
allow them (:mod:`mmss_lib.data.pairs`): under the default ``pair_scheme="mcr"`` at least three label
levels (a positive is above its product's two lowest levels and needs a negative at least 2 below
it), under ``"all"`` at least two different labels.

Many runs (systems x categories x seeds) are :mod:`mmss_lib.model_selection.sweeps`; the ``mmss train``
command is :func:`mmss_lib.model_selection.sweeps.cli_main`; the training benchmark is :mod:`mmss_lib.bench.train`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mmss_lib.errors import CheckpointError, TrainingError
from mmss_lib.metrics.ranking import METRIC_NAMES
from mmss_lib.training.build import build_model, build_optimizer
from mmss_lib.training.checkpoints import load_torch, rng_state, save_torch, set_rng_state
from mmss_lib.training.config import TrainConfig
from mmss_lib.training.run_folder import (
    BEST,
    CONFIG,
    HISTORY,
    LAST,
    METRICS,
    finished_metrics,
    resume_mismatch,
    run_lock,
    run_name,
    scores_path,
    write_rankings,
)
from mmss_lib.utils import atomic_path, atomic_write_json, pick_device, seed_everything

# ------------------------------------------------------------------------------------ paths

# ------------------------------------------------------------------------------------ data


def load_splits(data_root, dataset: str, category: str, features_root, cfg: TrainConfig) -> dict:
    """The three :class:`~mmss_lib.features.loader.MRHPSplitData` of a category for a run of ``cfg``
    (:meth:`~mmss_lib.features.loader.MRHPSplitData.from_disk`: shared stores, leakage and stale-feature checks)."""
    from mmss_lib.features.loader import MRHPSplitData, ReadCaps

    return MRHPSplitData.from_disk(
        data_root, dataset, category, features_root, caps=ReadCaps.of(cfg), keep_texts=cfg.text_mode != "cached"
    )


# ------------------------------------------------------------------------------------ RNG state


# ------------------------------------------------------------------------------------ pieces


def target_loss(cfg: TrainConfig, s_pos, s_neg, y_pos, y_neg):
    """L_tar of one batch of pairs: Eq. 13 (margin ``cfg.margin``) or MCR's label-gap hinge."""
    from mmss_lib.models.losses import label_gap_hinge, ranking_hinge

    if cfg.loss == "hinge":
        return ranking_hinge(s_pos, s_neg, margin=cfg.margin)  # Eq. 13
    return label_gap_hinge(s_pos, s_neg, y_pos, y_neg)


def draw_pairs(train, cfg: TrainConfig, epoch: int) -> np.ndarray:
    """The epoch's training pairs (P, 2) of (more, less helpful) sample indices, shuffled;
    RNG seeded from ``seed + epoch`` so a resumed run draws the same pairs."""
    from mmss_lib.data.pairs import sample_pairs

    rng = np.random.default_rng([int(cfg.seed), int(epoch)])
    pairs = np.asarray(
        sample_pairs(train.product_codes, train.labels, scheme=cfg.pair_scheme, n_neg=cfg.n_neg, rng=rng),
        dtype=np.int64,
    ).reshape(-1, 2)
    return pairs[rng.permutation(len(pairs))]


def _autocast(device, cfg: TrainConfig):
    import contextlib

    import torch

    if device.type == "cuda" and cfg.amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def collate_for(split, cfg: TrainConfig, tokenizer):
    """The batch builder of a run's text mode: cached token features from the text stores
    (``split.collate``), or, for ``frozen`` / ``finetune``, token ids of the raw texts for the
    model's own encoder (``split.collate_tokens`` with ``tokenizer``, the wrapper's). The one
    place that decides it: training, evaluation, ``mmss predict`` and the case study call it."""
    if cfg.text_mode != "cached":
        max_len = min(cfg.max_text_len or 512, int(getattr(tokenizer, "model_max_length", 512) or 512))
        return lambda idx: split.collate_tokens(idx, tokenizer, max_len=max_len)
    return split.collate


def train_step(
    model,
    optimizer,
    split,
    collate,
    pairs: np.ndarray,
    cfg: TrainConfig,
    device,
    *,
    ssp=None,
    epoch: int = 1,
    scaler=None,
    where: str = "",
    last_good: str = LAST,
    timings: dict | None = None,
) -> dict:
    """One optimisation step on a batch of pairs (P, 2) of sample indices of ``split``.

    The batch holds the pairs' unique samples, forwarded once; L = L_tar + aux_loss + L_sub
    (Eq. 16); after the step ``ssp.update`` stores the detached features (Self-MM's order).
    Returns the loss parts as floats. ``timings`` (optional) accumulates seconds: ``"data"``,
    building the batch and moving it to the device (the previous step ended with ``.item()``, a
    synchronisation, so on a GPU this is time the device waits for data), and ``"ssp"``, the
    pseudo-label bookkeeping (SSPLabel.labels + update).
    """
    import torch

    from mmss_lib.models.losses import mmss_subtask_loss

    uniq, inv = np.unique(pairs, return_inverse=True)
    inv = torch.as_tensor(inv.reshape(pairs.shape), device=device)  # (P, 2)
    t_data = time.perf_counter()
    batch = collate(uniq).to(device)
    if timings is not None:
        timings["data"] = timings.get("data", 0.0) + time.perf_counter() - t_data
    model.train()
    with _autocast(device, cfg):
        out = model(batch)
    s = out.score.float()  # (B,)
    y = batch.label
    l_tar = target_loss(cfg, s[inv[:, 0]], s[inv[:, 1]], y[inv[:, 0]], y[inv[:, 1]])
    loss = l_tar
    l_aux = out.aux_loss.float() if out.aux_loss is not None else None
    if l_aux is not None:
        loss = loss + l_aux
    l_sub = None
    # Eq. 12: the labels in force are y_s^(1) = y_g in epochs 1 and 2 (labels lag one epoch), so
    # every weight tanh(|y_s - y_g|) of Eq. 14 is 0 and the subtask losses vanish; only Eq. 15's
    # log-variance terms would remain and push the learned log sigma^2 down for nothing. The
    # subtask objective therefore starts in epoch 3, with the first estimated labels y_s^(2).
    if ssp is not None and ssp.labels_estimated:
        t0 = time.perf_counter()
        labels = ssp.labels(batch.index)
        if timings is not None:
            timings["ssp"] = timings.get("ssp", 0.0) + time.perf_counter() - t0
        fo = type(out)(score=s, sub_scores={k: v.float() for k, v in out.sub_scores.items()})
        l_sub = mmss_subtask_loss(fo, labels, y, model)  # Eq. 14-15
        loss = loss + l_sub  # Eq. 16
    if not torch.isfinite(loss):
        raise TrainingError(
            f"{where}: loss is {loss.item()} (target {l_tar.item():.4g}, aux "
            f"{l_aux.item() if l_aux is not None else 0:.4g}, subtask {l_sub.item() if l_sub is not None else 0:.4g}); "
            f"training stopped, the last good checkpoint {last_good} is kept. Check the features for "
            "NaN/inf or lower the learning rate"
        )
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
    return {
        "loss": loss.item(),
        "loss_tar": l_tar.item(),
        "loss_aux": l_aux.item() if l_aux is not None else 0.0,
        "loss_sub": l_sub.item() if l_sub is not None else 0.0,
        "n_samples": int(len(uniq)),
    }


@dataclass
class Evaluation:
    scores: np.ndarray  # (N,) y_hat_g per sample of the split, file order
    sub_scores: dict  # subtask -> (N,) y_hat_s (MM-SS only)
    metrics: dict  # MAP, NDCG@3, NDCG@5, MRR


def evaluate(
    model, split, cfg: TrainConfig, device, threshold: float, tokenizer=None, *, keep_sub_scores: bool = False
) -> Evaluation:
    """Score every sample of ``split`` (eval mode, no grad) and compute the ranking metrics."""
    import torch

    from mmss_lib.metrics.ranking import ranking_metrics

    model.eval()
    if tokenizer is None:
        tokenizer = getattr(model, "tokenizer", None)  # on-the-fly text: the wrapper's tokenizer
    scores = np.zeros(split.n, dtype=np.float64)
    subs: dict[str, np.ndarray] = {}
    collate = collate_for(split, cfg, tokenizer)
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

    df = pd.DataFrame(
        {"review_id": split.review_ids, "product_id": split.product_ids, "label": split.labels, "score": ev.scores}
    )
    for s, v in ev.sub_scores.items():
        df[f"score_{s}"] = v  # y_hat_s of the subtask heads (case study)
    return df


def _write_csv(path: Path, df) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def _store_manifests(split) -> dict:
    out = {}
    for kind, store in split.stores.items():
        m = getattr(store, "manifest", None)
        if isinstance(m, dict):
            out[kind] = {k: v for k, v in m.items() if k not in ("shards",)}
    return out


# ------------------------------------------------------------------------------------ training


@dataclass
class _Trainee:
    """What one run trains and with what: the model, its optimizer, the grad scaler (CUDA float16
    AMP only), the SSP-Label (systems with subtasks only), the tokenizer (on-the-fly text) and the device."""

    model: object
    optimizer: object
    scaler: object
    ssp: object
    tokenizer: object
    device: object


def _build_trainee(cfg: TrainConfig, train, run_dir: Path, threshold: float) -> _Trainee:
    """Threads, device and seed set, then the model, optimizer, grad scaler and SSP-Label built (in this
    order: it fixes the initial weights)."""
    import torch

    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    model = build_model(cfg, train.text_dim, train.region_dim).to(device)  # text_dim None: on the fly
    optimizer = build_optimizer(model, cfg)
    use_scaler = device.type == "cuda" and cfg.amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    tokenizer = getattr(model, "tokenizer", None) if cfg.text_mode != "cached" else None

    ssp = None
    subtasks = tuple(getattr(model, "subtasks", ()) or ())
    if subtasks:
        from mmss_lib.ssp.bank import ssp_bank_dir
        from mmss_lib.ssp.config import SSPConfig
        from mmss_lib.ssp.label import SSPLabel

        method = SSPConfig(
            alpha1=cfg.ssp_alpha1,
            alpha2=cfg.ssp_alpha2,
            pivot=cfg.ssp_pivot if cfg.ssp_pivot is not None else threshold + 0.5,
            scale=cfg.ssp_scale,
        )
        ssp = SSPLabel(
            train.n,
            torch.as_tensor(train.labels, dtype=torch.float32),
            model.feature_dims(),
            method,
            max_history=1,
            bank_dir=ssp_bank_dir(run_dir, train.n, model.feature_dims()),
        )
    return _Trainee(model, optimizer, scaler, ssp, tokenizer, device)


def _resume(last_path: Path, record: dict, trainee: _Trainee, state: dict) -> None:
    """Continue from ``last.pt``: refuse a checkpoint of another configuration, else restore the model,
    optimizer, grad scaler, SSP-Label, ``state`` and the RNG states."""
    ck = load_torch(last_path)
    old_cfg = ck.get("config", {})
    diff = resume_mismatch(ck, record["config"], record["run"])
    if diff:
        raise CheckpointError(
            f"{last_path}: checkpoint from another configuration; differing field(s): "
            + ", ".join(
                f"{k} (checkpoint {old_cfg.get(k)!r}, now {record['config'].get(k)!r})" if k in record["config"] else k
                for k in diff
            )
            + "; use another run folder or delete it"
        )
    trainee.model.load_state_dict(ck["model"])
    trainee.optimizer.load_state_dict(ck["optimizer"])
    if trainee.scaler is not None and ck.get("scaler"):
        trainee.scaler.load_state_dict(ck["scaler"])
    if trainee.ssp is not None:
        trainee.ssp.load_state_dict(ck["ssp"])
    for k in state:
        state[k] = ck["state"][k]
    set_rng_state(ck["rng"])


def _checkpoint_payload(record: dict, trainee: _Trainee, state: dict) -> dict:
    """The content of ``last.pt``: everything :func:`_resume` restores."""
    return {
        "config": record["config"],
        "run": record["run"],
        "model": trainee.model.state_dict(),
        "optimizer": trainee.optimizer.state_dict(),
        "scaler": trainee.scaler.state_dict() if trainee.scaler else None,
        "ssp": trainee.ssp.state_dict() if trainee.ssp is not None else None,
        "state": dict(state),
        "rng": rng_state(),
    }


class _EpochTraining(NamedTuple):
    """What one epoch's training reports to its history entry."""

    n_pairs: int
    n_batches: int
    sums: dict  # loss parts summed over the batches
    ssp_entry: dict  # {"ssp": SSP health per subtask}, or {} without an SSP-Label
    data_seconds: float  # building batches and moving them to the device
    ssp_seconds: float  # SSP-Label: per-step labels + update, and the end of epoch


def _train_epoch(
    cfg: TrainConfig, trainee: _Trainee, train, collate, epoch: int, run_dir: Path, *, last_good: str, bar_cls
) -> _EpochTraining:
    """One epoch's training: its pairs drawn and stepped through in batches, then the SSP-Label's end
    of epoch."""
    trainee.model.train()
    pairs = draw_pairs(train, cfg, epoch)
    sums = {"loss": 0.0, "loss_tar": 0.0, "loss_aux": 0.0, "loss_sub": 0.0}
    n_batches = (len(pairs) + cfg.batch_size - 1) // cfg.batch_size
    it = range(n_batches)
    bar = bar_cls(it, desc=f"{run_dir.parent.name}/{run_dir.name} epoch {epoch}", leave=False) if bar_cls else None
    timings: dict = {}
    for b in bar if bar is not None else it:
        pb = pairs[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        parts = train_step(
            trainee.model,
            trainee.optimizer,
            train,
            collate,
            pb,
            cfg,
            trainee.device,
            ssp=trainee.ssp,
            epoch=epoch,
            scaler=trainee.scaler,
            where=f"{run_dir}: epoch {epoch}, batch {b + 1}/{n_batches}",
            last_good=last_good,
            timings=timings,
        )
        for k in sums:
            sums[k] += parts[k]
        if bar is not None:
            bar.set_postfix(loss=f"{sums['loss'] / (b + 1):.4f}")
    if bar is not None:
        bar.close()
    t_ssp = time.perf_counter()
    ssp_entry = _end_ssp_epoch(cfg, trainee.ssp, run_dir, epoch, train.review_ids)
    ssp_seconds = timings.get("ssp", 0.0) + (time.perf_counter() - t_ssp if trainee.ssp is not None else 0.0)
    return _EpochTraining(int(len(pairs)), n_batches, sums, ssp_entry, timings.get("data", 0.0), ssp_seconds)


def _end_ssp_epoch(cfg: TrainConfig, ssp, run_dir: Path, epoch: int, review_ids) -> dict:
    """The SSP-Label's end of epoch (next pseudo labels; ``ssp/epoch*.npz`` for the recorded seeds);
    the history entry's ``"ssp"`` health part (empty without an SSP-Label)."""
    if ssp is None:
        return {}
    from mmss_lib.ssp.label import ssp_health

    rec = ssp.end_epoch(epoch)
    if cfg.ssp_record_seeds is None or int(cfg.seed) in [int(x) for x in cfg.ssp_record_seeds]:
        from mmss_lib.ssp.records import write_record

        write_record(run_dir, epoch, review_ids, rec)
    return {"ssp": ssp_health(rec)}  # SSP health per subtask (history.json)


def _evaluate_epoch(
    cfg: TrainConfig,
    trainee: _Trainee,
    splits: dict,
    threshold: float,
    epoch: int,
    trained: _EpochTraining,
    train_seconds: float,
    t0: float,
) -> dict:
    """Evaluate dev (and test) after an epoch; the epoch's ``history.json`` entry. Its seconds:
    ``train_seconds`` (the epoch's training, SSP-Label's end of epoch included), of which
    ``data_seconds`` building and moving batches and ``ssp_seconds`` SSP-Label; ``eval_seconds``
    scoring dev (and test); ``seconds`` all of it (``checkpoint_seconds``, writing best.pt / last.pt,
    is added by :func:`_record_epoch`)."""
    t_eval = time.perf_counter()
    ev_dev = evaluate(trainee.model, splits["dev"], cfg, trainee.device, threshold, trainee.tokenizer)
    ev_test = (
        evaluate(trainee.model, splits["test"], cfg, trainee.device, threshold, trainee.tokenizer)
        if cfg.eval_test
        else None
    )
    eval_seconds = time.perf_counter() - t_eval
    n_batches = trained.n_batches
    return {
        "epoch": epoch,
        "n_pairs": trained.n_pairs,
        "n_batches": n_batches,
        **{k: v / max(n_batches, 1) for k, v in trained.sums.items()},
        "dev": ev_dev.metrics,
        "test": ev_test.metrics if ev_test else None,
        **trained.ssp_entry,
        "train_seconds": train_seconds,
        "data_seconds": trained.data_seconds,
        "ssp_seconds": trained.ssp_seconds,
        "eval_seconds": eval_seconds,
        "seconds": time.perf_counter() - t0,
    }


def _record_epoch(
    run_dir: Path, record: dict, features: dict, threshold: float, trainee: _Trainee, train, state: dict, entry: dict
) -> None:
    """Add the epoch to ``state``; keep ``best.pt`` on dev MAP (else count a bad epoch for early stopping);
    write ``last.pt`` and ``history.json``."""
    epoch, dev = entry["epoch"], entry["dev"]
    t_ck = time.perf_counter()
    state["history"].append(entry)
    state["epoch"] = epoch
    if dev["MAP"] > state["best_metric"]:
        state.update(best_metric=dev["MAP"], best_epoch=epoch, bad_epochs=0)
        model = trainee.model
        save_torch(
            run_dir / BEST,
            {
                "config": record["config"],
                "run": record["run"],
                "epoch": epoch,
                "model": model.state_dict(),
                "dev": dev,
                "text_dim": train.text_dim if train.text_dim is not None else int(model.dim),
                "region_dim": train.region_dim,
                "threshold": threshold,
                "features": features,
            },
        )
    else:
        state["bad_epochs"] += 1
    entry["checkpoint_seconds"] = time.perf_counter() - t_ck  # best.pt so far; last.pt below
    entry["seconds"] += entry["checkpoint_seconds"]
    state["seconds"] += entry["seconds"]
    t_last = time.perf_counter()
    save_torch(run_dir / LAST, _checkpoint_payload(record, trainee, state))
    last_seconds = time.perf_counter() - t_last
    entry["checkpoint_seconds"] += last_seconds  # in history.json; last.pt holds the entry as it was before
    entry["seconds"] += last_seconds
    state["seconds"] += last_seconds
    atomic_write_json(run_dir / HISTORY, state["history"])


def fit(
    cfg: TrainConfig,
    splits: dict,
    run_dir,
    *,
    threshold: float,
    progress: bool = True,
    run_info: dict | None = None,
    on_epoch=None,
    score_test: bool = True,
) -> dict:
    """Train/evaluate on already loaded splits (``{"train", "dev", "test"}`` ->
    :class:`~mmss_lib.features.loader.MRHPSplitData`) into ``run_dir``; return the metrics.json content.

    See the module docstring for the procedure, the files written and the resume rules.
    ``on_epoch(entry)`` is called with each epoch's history entry once ``last.pt`` and
    ``history.json`` hold it; it may raise (e.g. :class:`~mmss_lib.errors.RunStopped`, a tuner's
    pruning) to stop the run there, resumable, with no ``metrics.json``. ``score_test=False``
    never scores the test split (a tuner's trials: choices are made on dev only); metrics.json's
    ``"test"`` is then None and no ``scores_test.csv`` is written (``cfg.eval_test`` must be False).
    """
    if not score_test and cfg.eval_test:
        raise TrainingError("fit(score_test=False) needs TrainConfig.eval_test=False (no test split read at all)")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"config": cfg.to_json(), "run": dict(run_info or {}), "threshold": threshold}
    features = _store_manifests(splits["train"])  # extraction settings, for predict
    last_path = run_dir / LAST

    # ---- a finished run of this identity is skipped (mmss_lib.training.run_folder)
    done = finished_metrics(run_dir, record["config"], record["run"])
    if done is not None:
        return done

    train = splits["train"]
    _check_trainable(cfg, train, run_info)  # before anything is written
    trainee = _build_trainee(cfg, train, run_dir, threshold)
    state = {"epoch": 0, "best_metric": -math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [], "seconds": 0.0}
    if last_path.exists():
        _resume(last_path, record, trainee, state)
    atomic_write_json(run_dir / CONFIG, {**record, "features": features})

    collate = collate_for(train, cfg, trainee.tokenizer)
    bar_cls = None
    if progress:
        from tqdm.auto import tqdm as bar_cls  # noqa: N813

    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch = state["epoch"] + 1
        t0 = time.perf_counter()
        trained = _train_epoch(
            cfg,
            trainee,
            train,
            collate,
            epoch,
            run_dir,
            last_good=f"{last_path.name} (epoch {state['epoch']})",
            bar_cls=bar_cls,
        )
        train_seconds = time.perf_counter() - t0
        entry = _evaluate_epoch(cfg, trainee, splits, threshold, epoch, trained, train_seconds, t0)
        _record_epoch(run_dir, record, features, threshold, trainee, train, state, entry)
        if on_epoch is not None:
            try:
                on_epoch(entry)
            except BaseException:
                if trainee.ssp is not None:
                    trainee.ssp.close()
                raise

    if trainee.ssp is not None:
        trainee.ssp.close()  # memory-mapped banks (large training sets) are scratch
    return _finalize(
        cfg,
        trainee.model,
        splits,
        run_dir,
        record,
        state,
        trainee.device,
        threshold,
        trainee.tokenizer,
        score_test=score_test,
    )


def _check_trainable(cfg: TrainConfig, train, run_info: dict | None) -> None:
    """Refuse a run that would train on nothing: no training pairs (e.g. all training labels
    equal), so no optimizer step, and an untrained model's metrics reported as a result."""
    if len(draw_pairs(train, cfg, 1)):
        return
    where = "/".join(str((run_info or {}).get(k, "?")) for k in ("dataset", "category"))
    labels = np.asarray(train.labels, dtype=np.float64)
    if len(labels) == 0:
        cause = "the training split is empty"
    elif np.unique(labels).size == 1:
        cause = f"all {len(labels)} training labels equal ({labels[0]:g})"
    else:
        import pandas as pd

        levels = int(pd.Series(labels).groupby(np.asarray(train.product_codes)).nunique().max())
        need = 3 if cfg.pair_scheme == "mcr" else 2
        cause = (
            f"no training product has {need} different label levels (at most {levels}), which pair scheme "
            f"{cfg.pair_scheme!r} needs" + ("; try --pair-scheme all" if cfg.pair_scheme == "mcr" else "")
        )
    raise TrainingError(
        f"{where}: no training pairs: {cause}; the run would take no optimizer step and report "
        "an untrained model, so it is refused (nothing written to the summary)"
    )


def still_improving_at_ceiling(best_epoch: int, epochs_run: int, epochs: int, stopped_early: bool) -> bool:
    """Whether a run hit its epoch ceiling while dev MAP still rose: it ran all ``epochs`` without
    early stopping and its last epoch was its best on dev (so more epochs might have helped).
    Such runs are flagged in ``metrics.json`` / ``history.json`` (``ceiling_while_improving``), in the
    summary CSVs and in the comparison tables."""
    return (not stopped_early) and epochs_run >= epochs and best_epoch == epochs_run


def _flag_ceiling(run_dir: Path, history: list, flag: bool) -> None:
    """Mark the last history entry ``ceiling_while_improving`` (and no other: a resumed run with more
    epochs moves the mark)."""
    changed = False
    for i, h in enumerate(history):
        want = flag and i == len(history) - 1
        if bool(h.get("ceiling_while_improving")) != want:
            if want:
                h["ceiling_while_improving"] = True
            else:
                h.pop("ceiling_while_improving", None)
            changed = True
    if changed:
        atomic_write_json(run_dir / HISTORY, history)


def _finalize(
    cfg, model, splits, run_dir: Path, record, state, device, threshold, tokenizer, *, score_test: bool = True
) -> dict:
    """Score dev and test with the best model; write scores_{dev,test}.csv and metrics.json."""
    best = load_torch(run_dir / BEST) if (run_dir / BEST).exists() else None
    if best is None:
        raise TrainingError(f"{run_dir}: no best.pt after training (no epoch finished)")
    model.load_state_dict(best["model"])
    ev_dev = evaluate(model, splits["dev"], cfg, device, threshold, tokenizer)
    _write_csv(scores_path(run_dir, "dev"), _scores_frame(splits["dev"], ev_dev))
    ev_test = None
    if score_test:
        ev_test = evaluate(model, splits["test"], cfg, device, threshold, tokenizer, keep_sub_scores=True)
        _write_csv(scores_path(run_dir, "test"), _scores_frame(splits["test"], ev_test))
    write_rankings(run_dir)  # the per-product record that stays where the scores are not kept
    epochs_run = len(state["history"])
    stopped_early = state["bad_epochs"] >= cfg.patience
    ceiling = still_improving_at_ceiling(int(best["epoch"]), epochs_run, cfg.epochs, stopped_early)
    _flag_ceiling(run_dir, state["history"], ceiling)
    metrics = {
        "best_epoch": int(best["epoch"]),
        "dev": ev_dev.metrics,
        "test": ev_test.metrics if ev_test is not None else None,
        "epochs_run": epochs_run,
        "stopped_early": stopped_early,
        "ceiling_while_improving": ceiling,
        "seconds": state["seconds"],
        "sec_per_epoch": state["seconds"] / max(epochs_run, 1),
        "train_sec_per_epoch": sum(h["train_seconds"] for h in state["history"]) / max(epochs_run, 1),
        "threshold": threshold,
        "n_train": splits["train"].n,
    }
    atomic_write_json(run_dir / METRICS, metrics)
    return metrics


def train_run(
    cfg: TrainConfig,
    *,
    data_root,
    dataset: str,
    category: str,
    features_root,
    run_dir,
    progress: bool = True,
    splits: dict | None = None,
    on_epoch=None,
    score_test: bool = True,
) -> dict:
    """Train one run from the dataset files and feature stores; return metrics.json's content.

    ``splits`` may pass splits already loaded with :func:`load_splits` (shared across runs).
    The threshold is ``cfg.threshold`` or :func:`mmss_lib.data.mrhp.default_threshold` of ``dataset``.
    A floor (``mmss_lib.models.registry.is_floor``: ``random``, ``length``) is not trained:
    :func:`mmss_lib.training.floors.run_floor` writes its run folder (no feature stores needed).
    ``on_epoch`` and ``score_test``: as in :func:`fit` (trained systems only).
    """
    from mmss_lib.models.registry import SYSTEMS
    from mmss_lib.training.config import check_device_available, check_finetune_systems

    check_device_available(cfg.device)  # before the data is loaded (library callers; the sweeps check too)
    check_finetune_systems(cfg, SYSTEMS)
    threshold = cfg.threshold
    if threshold is None:
        from mmss_lib.data.mrhp import default_threshold

        threshold = default_threshold(dataset)
    run_info = {"dataset": dataset, "category": category}
    run_dir = Path(run_dir)
    with run_lock(run_dir, f"run ({dataset}/{category} {run_name(cfg.system, cfg.variant)} seed {cfg.seed})"):
        return _train_run_locked(
            cfg,
            data_root=data_root,
            dataset=dataset,
            category=category,
            features_root=features_root,
            run_dir=run_dir,
            progress=progress,
            splits=splits,
            threshold=threshold,
            run_info=run_info,
            on_epoch=on_epoch,
            score_test=score_test,
        )


def _train_run_locked(
    cfg: TrainConfig,
    *,
    data_root,
    dataset,
    category,
    features_root,
    run_dir: Path,
    progress,
    splits,
    threshold,
    run_info,
    on_epoch=None,
    score_test=True,
) -> dict:
    """:func:`train_run` while its run folder's lock is held (``mmss_lib.training.run_folder.run_lock``)."""
    from mmss_lib.models.registry import is_floor

    if is_floor(cfg.system):  # no training: score dev/test into the same run-folder contract
        from mmss_lib.training.floors import run_floor

        return run_floor(
            cfg,
            data_root=data_root,
            dataset=dataset,
            category=category,
            run_dir=run_dir,
            threshold=float(threshold),
            run_info=run_info,
            splits=splits,
        )
    # skip a finished run before loading anything
    done = finished_metrics(run_dir, cfg.to_json(), run_info)
    if done is not None:
        return done
    if splits is None:
        splits = load_splits(data_root, dataset, category, features_root, cfg)
    return fit(
        cfg,
        splits,
        run_dir,
        threshold=float(threshold),
        progress=progress,
        run_info=run_info,
        on_epoch=on_epoch,
        score_test=score_test,
    )
