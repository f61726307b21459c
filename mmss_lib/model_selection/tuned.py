"""A study's chosen settings applied to a run: what ``mmss train --tuned DIR`` and
``run_experiment(tuned=DIR)`` read from ``mmss tune``'s ``best.json`` files (the search itself is
:mod:`mmss_lib.model_selection.search`, above the sweeps; this module sits below them).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from mmss_lib.errors import TuneError
from mmss_lib.models.registry import SEARCH_SPACES, SearchParam, is_floor
from mmss_lib.training.run_folder import study_dir_for

BEST_FILE = "best.json"


def apply_params(cfg, params: dict, space: dict[str, SearchParam] | None = None):
    """``cfg`` with the tuned ``params``: TrainConfig fields set, model options merged."""
    space = space if space is not None else {p.name: p for p in SEARCH_SPACES.get(cfg.system, ())}
    fields, options = {}, {}
    for name, value in params.items():
        p = space.get(name)
        if p is None:
            raise TuneError(f"parameter {name!r} is not in {cfg.system}'s search space ({', '.join(space)})")
        (options if p.model_option else fields)[name] = value
    for name in ("n_neg", "batch_size"):
        if name in fields:
            fields[name] = int(fields[name])
    return replace(cfg, **fields, model_options={**cfg.model_options, **options})


def tuned_best_path(tune_root, dataset: str, category: str, system: str, variant: str = "full") -> Path:
    """The ``best.json`` a run of ``system``/``variant`` takes from ``tune_root``: its own study's, else
    (an ablation variant) the full system's."""
    own = study_dir_for(tune_root, dataset, category, system, variant) / BEST_FILE
    if own.exists() or variant in (None, "", "full"):
        return own
    return study_dir_for(tune_root, dataset, category, system, "full") / BEST_FILE


def apply_tuned(cfg, tune_root, dataset: str, category: str):
    """``cfg`` with the settings of its study's ``best.json`` under ``tune_root`` (``tuned_from`` set)."""
    if is_floor(cfg.system):
        return cfg
    path = tuned_best_path(tune_root, dataset, category, cfg.system, cfg.variant)
    if not path.exists():
        raise TuneError(
            f"--tuned {tune_root}: no study for {dataset}/{category} {cfg.system} ({path} missing); "
            f"run `mmss tune --systems {cfg.system} --categories {category}` first, or train it untuned"
        )
    try:
        best = json.loads(path.read_text())
        params = dict(best["params"])
        if best.get("system") != cfg.system:
            raise TuneError(f"{path}: a study of {best.get('system')!r}, not {cfg.system!r}")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise TuneError(f"{path}: not a best.json of mmss tune ({type(exc).__name__}: {exc})") from None
    return replace(apply_params(cfg, params), tuned_from=str(path))
