"""The case study of paper Figure 4 (notebook 04): one category's reviews, the predictions of
trained runs for chosen reviews, and one figure per case.

H = human label, M = MM-SS, O = MM-SS without module (d) (no SSP labels), then five values per
subtask: for a training review its pseudo labels y_s (SSP-Label exists for training reviews only),
for a test review the subtask heads' outputs yhat_s (Eq. 9) of the final model. M and O of a
training review are computed with the runs' best checkpoints (the trainer saves scores for dev
and test only).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mmss_lib.errors import DataError
from mmss_lib.training.run_folder import BEST, scores_path


def load_scores(run_dir: str | os.PathLike, split: str = "test", *, missing_ok: bool = False):
    """A run's per-review scores of ``split`` (``scores_{split}.csv``: ``review_id, product_id,
    label, score`` and MM-SS's subtask outputs ``score_{s}``), ids as strings. Absent: None with a
    note when ``missing_ok`` (the case study then shows that run as n/a), else a :class:`DataError`
    naming the file."""
    import pandas as pd

    path = scores_path(run_dir, split)
    if not path.exists():
        if missing_ok:
            print(f"note: {Path(run_dir)} has no {path.name}; its prediction is shown as n/a")
            return None
        raise DataError(f"{path}: no per-review scores of this run (train it, or it ran without scoring {split})")
    return pd.read_csv(path, dtype={"review_id": str, "product_id": str})


def values_of_test_cases(
    scores, other_scores, review_ids: Sequence[str], subtasks: Sequence[str]
) -> list[tuple[str, dict]]:
    """The values shown for each test review of the case study, in order: ``H`` (human label),
    ``M`` (the run's score), ``O`` (``other_scores``' score, None when that run has no scores) and
    ``yhat_{s}`` per subtask head the run scored. ``scores`` / ``other_scores``: frames of
    :func:`load_scores`."""
    sub_cols = [f"score_{s}" for s in subtasks if f"score_{s}" in scores.columns]
    ix = scores.set_index("review_id")
    other = None if other_scores is None else other_scores.set_index("review_id")["score"]
    missing = [r for r in review_ids if r not in ix.index or (other is not None and r not in other.index)]
    if missing:
        raise DataError(f"case study: test review(s) {missing[:5]} not among the runs' test scores")
    out = []
    for rid in review_ids:
        r = ix.loc[rid]
        values = {"H": r["label"], "M": r["score"], "O": None if other is None else other.loc[rid]}
        values.update({f"yhat_{c[len('score_') :]}": r[c] for c in sub_cols})
        out.append((rid, values))
    return out


def index_among(mask, index: int) -> int | None:
    """The position of entry ``index`` among the True entries of a boolean ``mask`` (what a plot of
    the masked values calls it), or None where ``mask[index]`` is False."""
    mask = np.asarray(mask, dtype=bool)
    if not 0 <= int(index) < len(mask):
        raise IndexError(f"index {index} outside a mask of {len(mask)} entries")
    return int(np.count_nonzero(mask[: int(index)])) if mask[int(index)] else None


def score_with_checkpoint(run_dir: str | os.PathLike, split, indices) -> dict[str, np.ndarray]:
    """Score samples ``indices`` of a loaded split (``mmss_lib.features.loader.MRHPSplitData``) with a
    run's ``best.pt``; return ``{"score": (n,), "score_{s}": (n,) per subtask head}``.

    Used by the case study to get the prediction of a model (and of its ``wo_d`` ablation)
    for training reviews, whose scores the trainer does not save.
    """
    import torch

    from mmss_lib.training.checkpoints import load_checkpoint
    from mmss_lib.training.trainer import TrainConfig, build_model, collate_for

    ck, path = load_checkpoint(Path(run_dir) / BEST)  # weights-only: a shared run folder runs no code
    cfg = TrainConfig.from_json({**ck["config"], "device": "cpu"})
    model = build_model(cfg, int(ck["text_dim"]), int(ck["region_dim"]))  # frozen / finetune: with its encoder
    model.load_state_dict(ck["model"])
    model.eval()
    idx = np.asarray(indices, dtype=np.int64)
    out: dict[str, list] = {}
    collate = collate_for(split, cfg, getattr(model, "tokenizer", None))
    with torch.no_grad():
        for _, batch in split.iter_batches(idx, 64, collate=collate):
            mo = model(batch)
            out.setdefault("score", []).append(mo.score.float().numpy())
            for s, v in mo.sub_scores.items():
                out.setdefault(f"score_{s}", []).append(v.float().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


class CaseStudy:
    """Products and reviews of one ``dataset``/``category`` (train and test splits), with the
    feature stores of ``features_root``; figures go to ``figures_dir`` named with ``tag``."""

    def __init__(
        self,
        data_root,
        features_root,
        dataset: str,
        category: str,
        *,
        figures_dir,
        tag: str,
        splits: Sequence[str] = ("train", "test"),
    ):
        from mmss_lib.data.mrhp import load_mrhp

        self.features_root, self.dataset, self.category = features_root, dataset, category
        self.figures_dir, self.tag = Path(figures_dir), tag
        self.products, self.reviews = {}, {}
        for s in splits:
            self.products[s], self.reviews[s] = load_mrhp(data_root, dataset, category, s)

    def _reviews(self, split: str, review_ids):
        rv = self.reviews[split].set_index("review_id", drop=False)
        missing = [r for r in review_ids if r not in rv.index]
        if missing:
            raise DataError(f"{self.dataset}/{self.category}/{split}: no review(s) {missing[:5]}")
        return rv.loc[list(review_ids)].reset_index(drop=True)

    def predict(self, run_dir: str | os.PathLike, split: str, review_ids) -> dict[str, np.ndarray] | None:
        """Scores of ``review_ids`` of ``split`` by a run's best checkpoint: ``{"score": (n,),
        "score_{s}": (n,)}``; None (with a note) when the run has no trained model."""
        from mmss_lib.features.loader import MRHPSplitData, ReadCaps, run_stores
        from mmss_lib.training.run_folder import load_run_config

        run_dir = Path(run_dir)
        cfg = load_run_config(run_dir)
        if cfg is None or not (run_dir / BEST).exists():
            print(f"note: {run_dir} has no trained model; its prediction is shown as n/a")
            return None
        rv = self._reviews(split, review_ids)
        on_the_fly = cfg.text_mode != "cached"  # the run encodes texts itself: region stores only
        stores = run_stores(self.features_root, self.dataset, self.category, keep_texts=on_the_fly)
        sub = MRHPSplitData(
            rv,
            self.products[split],
            stores,
            caps=ReadCaps.of(cfg),
            keep_texts=on_the_fly,
            name=f"{self.dataset}/{self.category}/{split} (case study)",
            check=False,
        )
        return score_with_checkpoint(run_dir, sub, np.arange(len(rv)))

    def show(self, split: str, review_id: str, values: Mapping[str, float | None], kind: str) -> dict:
        """Draw and write the Figure 4 layout of one review (``fig4_case_{split}_{tag}_{review_id}.png``);
        return its row of the case table (``None`` values become NaN)."""
        from mmss_lib.evaluation import plots

        rv = self.reviews[split].set_index("review_id").loc[review_id]
        prd = self.products[split].set_index("product_id").loc[rv["product_id"]]
        fig = plots.plot_case_study(
            product_name=prd["name"],
            product_text=prd["text"],
            review_text=rv["text"],
            product_images=prd["image_files"],
            review_images=rv["image_files"],
            values=dict(values),
            title=f"{self.dataset}/{self.category} {split} review {review_id} ({kind})",
        )
        path = plots.save_figure(fig, self.figures_dir / f"fig4_case_{split}_{self.tag}_{review_id}.png")
        print("written:", path)
        return {
            "split": split,
            "review_id": review_id,
            "product_id": rv["product_id"],
            "kind": kind,
            **{k: (np.nan if v is None else float(v)) for k, v in values.items()},
        }

    def test_cases(self, scores_test, subtasks: Sequence[str], n: int = 1) -> list[str]:
        """The ``n`` test reviews whose subtask outputs yhat_s lie farthest from the global score
        (mean |yhat_s - yhat_g| over the subtasks of ``scores_test.csv``), reviews with images
        first, ties in file order."""
        sub_cols = [f"score_{s}" for s in subtasks if f"score_{s}" in scores_test.columns]
        st = scores_test
        spread = (
            np.abs(st[sub_cols].to_numpy() - st[["score"]].to_numpy()).mean(axis=1) if sub_cols else np.zeros(len(st))
        )
        img = st["review_id"].map(self.reviews["test"].set_index("review_id")["image_files"].map(len)).to_numpy() > 0
        order = np.lexsort((np.arange(len(st)), -spread, ~img))  # with images first, then largest spread
        return [str(st["review_id"].iloc[i]) for i in order[:n]]
