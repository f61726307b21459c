"""Where a trained MM-SS run takes its signal from (issue "The claims asked again", question 3:
when only the images carry the label, does MM-SS's image pathway learn it?).

Two readings of a finished run's best checkpoint, on one split of its data:

- :func:`interaction_knockout`: the split's MAP as trained, then with the pooled feature f_s of
  one interaction of module (b) (Eq. 3-5) replaced by its mean over the split's samples, one
  interaction at a time, then the four interactions that see an image at once (``pvrt``, ``pvrv``,
  ``ptrv``, ``rtrv``) and all five. A replaced f_s carries no information about the review; the
  global score (Eq. 6-8) still receives its average, so the drop in MAP is what the ranking owes
  to that interaction's per-review variation.
- :func:`gradient_norms`: on training pairs drawn as the trainer draws them (epoch 1's pairs), the
  norm of the target loss's gradient (Eq. 12, the main task only) at each part of the model: the
  text and region projections of module (a), each interaction's Self-ATT, and each interaction's
  block of the fusion weights (Eq. 7's columns for that f_s). A region projection whose gradient
  is orders of magnitude below the text projection's is not being taught by the ranking loss.

Both read the run's ``best.pt`` weights-only and write nothing.

And one reading of the data, no run needed: :func:`cue_probes`, whether the frozen features hold
the image cues at all (the demo generator's cue files are the ground truth): for every review with
images, the masked means of its text tokens, of its regions and of its product's regions;
``img_match`` probed without training by cos(product regions, review regions), ``agree`` (the review
images show the kind the review text names: a text-image comparison) by a supervised bilinear probe,
a logistic regression on the outer product of the two means after a PCA of each side to
:data:`PROBE_DIMS` dimensions (fitted on the training reviews), scored on another split. A probe
that separates a cue which a trained model does not follow says the model, not the features,
misses it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mmss_lib.errors import DataError

IMAGE_INTERACTIONS = ("pvrt", "pvrv", "ptrv", "rtrv")
PROBE_DIMS, PROBE_C = 16, 0.1  # bilinear probe: PCA size per side, inverse L2 strength (fixed, not searched)


def _load(run_dir, data_root, features_root, split: str):
    import json

    from mmss_lib.features.loader import MRHPSplitData, ReadCaps
    from mmss_lib.predict import load_checkpoint
    from mmss_lib.training.config import TrainConfig
    from mmss_lib.training.run_folder import BEST, CONFIG
    from mmss_lib.training.trainer import build_model

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists() or not (run_dir / BEST).exists():
        raise DataError(f"{run_dir}: no trained run ({CONFIG} and {BEST} needed)")
    record = json.loads((run_dir / CONFIG).read_text())
    ck, _ = load_checkpoint(run_dir / BEST)
    cfg = TrainConfig.from_json({**ck["config"], "device": "cpu"})
    if cfg.system != "mmss" or not cfg.model_options.get("use_module_b", True):
        raise DataError(
            f"{run_dir}: a run of {cfg.system} ({cfg.variant}); the diagnosis reads MM-SS's interactions (module (b))"
        )
    dataset, category = record["run"]["dataset"], record["run"]["category"]
    model = build_model(cfg, int(ck["text_dim"]), int(ck["region_dim"]))
    model.load_state_dict(ck["model"])
    model.eval()
    splits = MRHPSplitData.from_disk(
        data_root, dataset, category, features_root, caps=ReadCaps.of(cfg), keep_texts=cfg.text_mode != "cached"
    )
    return model, cfg, splits, splits[split], float(record["threshold"])


def _scores(model, split, cfg, replace: dict | None = None, capture: dict | None = None) -> np.ndarray:
    """Scores of every sample; ``replace``: interaction -> (d,) tensor used as its f_s;
    ``capture``: interaction -> list, filled with its f_s per batch."""
    import torch

    from mmss_lib.training.trainer import collate_for

    handles = []
    for s, module in model.interactions.items():
        if replace and s in replace:
            handles.append(
                module.register_forward_hook(lambda m, args, out, v=replace[s]: v.to(out.dtype).expand_as(out))
            )
        elif capture is not None:
            handles.append(
                module.register_forward_hook(lambda m, args, out, s=s: capture.setdefault(s, []).append(out.detach()))
            )
    scores = np.zeros(split.n, dtype=np.float64)
    try:
        collate = collate_for(split, cfg, getattr(model, "tokenizer", None))
        with torch.no_grad():
            for idx, batch in split.iter_batches(None, cfg.eval_batch_size, collate=collate):
                scores[idx] = model(batch).score.float().numpy()
    finally:
        for h in handles:
            h.remove()
    return scores


def interaction_knockout(run_dir: str | os.PathLike, data_root, features_root, *, split: str = "dev"):
    """The split's MAP with every knock-out of the module docstring. Columns: ``knocked_out``
    (``none``, an interaction, ``image interactions``, ``all``), ``MAP``, ``drop`` (MAP as trained
    minus this MAP, x100), ``score_std`` (spread of the scores: 0 when nothing varies)."""
    import pandas as pd
    import torch

    from mmss_lib.metrics.ranking import ranking_metrics

    model, cfg, _, data, threshold = _load(run_dir, data_root, features_root, split)
    captured: dict = {}
    base = _scores(model, data, cfg, capture=captured)
    means = {s: torch.cat(v).mean(0) for s, v in captured.items()}

    def metric(scores):
        return float(ranking_metrics(data.product_ids, data.labels, scores, threshold=threshold)["MAP"])

    base_map = metric(base)
    rows = [{"knocked_out": "none", "MAP": base_map, "drop": 0.0, "score_std": float(base.std())}]
    sets = [(s, (s,)) for s in model.interactions] + [
        ("image interactions", IMAGE_INTERACTIONS),
        ("all", tuple(model.interactions)),
    ]
    for name, group in sets:
        sc = _scores(model, data, cfg, replace={s: means[s] for s in group})
        m = metric(sc)
        rows.append({"knocked_out": name, "MAP": m, "drop": 100 * (base_map - m), "score_std": float(sc.std())})
    return pd.DataFrame(rows)


def gradient_norms(run_dir: str | os.PathLike, data_root, features_root, *, n_batches: int = 4):
    """Gradient norms of the target loss at the parts of the model (module docstring), summed over
    ``n_batches`` training batches of the trainer's epoch-1 pairs. Columns: ``part``, ``grad_norm``,
    ``param_norm``, ``ratio`` (grad / param norm)."""
    import pandas as pd
    import torch

    from mmss_lib.models.mmss import SUBTASKS
    from mmss_lib.training.trainer import collate_for, draw_pairs, target_loss

    model, cfg, splits, train, _ = _load(run_dir, data_root, features_root, "train")
    model.train()
    pairs = draw_pairs(train, cfg, 1)
    collate = collate_for(train, cfg, getattr(model, "tokenizer", None))
    model.zero_grad()
    torch.manual_seed(0)
    for k in range(min(n_batches, max(1, len(pairs) // cfg.batch_size))):
        chunk = pairs[k * cfg.batch_size : (k + 1) * cfg.batch_size]
        uniq, inv = np.unique(chunk.ravel(), return_inverse=True)
        out = model(collate(uniq))
        pos, neg = inv.reshape(-1, 2).T
        y = torch.as_tensor(np.asarray(train.labels)[uniq], dtype=out.score.dtype)
        target_loss(cfg, out.score[pos], out.score[neg], y[pos], y[neg]).backward()
    d = model.config.d
    parts = {
        "text projection": list(model.text_proj.parameters()),
        "region projection": list(model.region_proj.parameters()),
    }
    for s in SUBTASKS:
        parts[f"interaction {s}"] = list(model.interactions[s].parameters())
    rows = []
    for name, params in parts.items():
        g = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params if p.grad is not None))
        w = torch.sqrt(sum((p.detach().float() ** 2).sum() for p in params))
        rows.append({"part": name, "grad_norm": float(g), "param_norm": float(w), "ratio": float(g / w)})
    fuse_w, fuse_g = model.fuse.weight.detach(), model.fuse.weight.grad
    for i, s in enumerate(SUBTASKS):  # Eq. 6 concatenates f_s in this order
        block = slice(i * d, (i + 1) * d)
        g, w = fuse_g[:, block].norm(), fuse_w[:, block].norm()
        rows.append({"part": f"fusion block {s}", "grad_norm": float(g), "param_norm": float(w), "ratio": float(g / w)})
    model.zero_grad()
    return pd.DataFrame(rows)


def _probe_rows(data_root, features_root, dataset: str, category: str, split: str) -> dict:
    """Per review with images of ``split``: the masked means of the review's text tokens, its
    regions and its product's regions (None where the product has none), and its image cues."""
    import pandas as pd

    from mmss_lib.data.mrhp import split_file
    from mmss_lib.features.store import FeatureStore, feature_dirs

    cue_path = Path(data_root) / dataset / category / f"{category}.cues.{split}"
    if not cue_path.exists():
        raise DataError(f"{cue_path}: no cue file (the demo generator writes one per split; real data has none)")
    cues = pd.read_json(cue_path).set_index("review_id")
    rvw = pd.read_json(split_file(data_root, dataset, category, "rvw", split))
    stores = {k: FeatureStore(v) for k, v in feature_dirs(features_root, dataset, category).items()}

    def mean(kind, item):
        x = stores[kind].get(item)["x"].astype(np.float32)
        return x.mean(0) if len(x) else None

    out = {"tr": [], "vr": [], "vp": [], "agree": [], "img_match": []}
    for rid, pid in zip(rvw["review_id"], rvw["product_id"], strict=True):
        vr = mean("region_rvw", rid)
        if vr is None or rid not in cues.index or np.isnan(cues.at[rid, "agree"]):
            continue
        out["tr"].append(mean("text_rvw", rid))
        out["vr"].append(vr)
        out["vp"].append(mean("region_prd", pid))
        out["agree"].append(int(cues.at[rid, "agree"]))
        out["img_match"].append(int(cues.at[rid, "img_match"]))
    if len(set(out["agree"])) < 2:
        raise DataError(f"{cue_path}: fewer than two classes of 'agree' among the reviews with region features")
    return out


def cue_probes(data_root, features_root, *, dataset: str = "demo", category: str, split: str = "dev"):
    """The probes of the module docstring on ``split`` (bilinear probe fitted on ``train``). Columns:
    ``cue``, ``probe``, ``n_train``, ``n_eval``, ``auc`` (ROC AUC on ``split``), ``train_auc``."""
    import pandas as pd
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    tr = _probe_rows(data_root, features_root, dataset, category, "train")
    ev = _probe_rows(data_root, features_root, dataset, category, split)
    rows = []
    has_p = [i for i, v in enumerate(ev["vp"]) if v is not None]
    if has_p:
        vp, vr = np.stack([ev["vp"][i] for i in has_p]), np.stack([ev["vr"][i] for i in has_p])
        cos = (vp * vr).sum(1) / (np.linalg.norm(vp, axis=1) * np.linalg.norm(vr, axis=1) + 1e-12)
        y = [ev["img_match"][i] for i in has_p]
        if len(set(y)) == 2:
            rows.append(
                {
                    "cue": "img_match",
                    "probe": "cos(product regions, review regions), untrained",
                    "n_train": 0,
                    "n_eval": len(has_p),
                    "auc": roc_auc_score(y, cos),
                    "train_auc": float("nan"),
                }
            )
    xt, xv = np.stack(tr["tr"]), np.stack(tr["vr"])
    k = min(PROBE_DIMS, len(xt) - 1, xt.shape[1], xv.shape[1])  # PROBE_DIMS unless the data are smaller
    pca_t, pca_v = PCA(k, random_state=0).fit(xt), PCA(k, random_state=0).fit(xv)

    def outer(d):
        a, b = pca_t.transform(np.stack(d["tr"])), pca_v.transform(np.stack(d["vr"]))
        return np.einsum("ni,nj->nij", a, b).reshape(len(a), -1)

    clf = LogisticRegression(C=PROBE_C, max_iter=5000).fit(outer(tr), tr["agree"])
    rows.append(
        {
            "cue": "agree",
            "probe": f"bilinear (PCA {k} x {k} of review text x review regions), supervised",
            "n_train": len(tr["agree"]),
            "n_eval": len(ev["agree"]),
            "auc": roc_auc_score(ev["agree"], clf.decision_function(outer(ev))),
            "train_auc": roc_auc_score(tr["agree"], clf.decision_function(outer(tr))),
        }
    )
    return pd.DataFrame(rows)
