"""A study's chosen settings applied to a run: what ``mmss train --tuned DIR`` and
``run_experiment(tuned=DIR)`` read from ``mmss tune``'s ``best.json`` files (the search itself is
:mod:`mmss_lib.model_selection.search`, above the sweeps; this module sits below them).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from mmss_lib.errors import DataError, TuneError
from mmss_lib.models.registry import PARAM_DOMAINS, SEARCH_SPACES, SearchParam, is_floor
from mmss_lib.training.run_folder import run_name, study_dir_for

BEST_FILE = "best.json"


def checked_value(name: str, value, where: str):
    """``value`` of the tuned parameter ``name`` when it lies in its valid domain
    (:data:`mmss_lib.models.registry.PARAM_DOMAINS`), as an int for integer parameters (3.0 -> 3);
    else a :class:`~mmss_lib.errors.TuneError` naming ``where`` (a file or ``--space``), the
    parameter, the value and the domain (2.7 negatives were truncated to 2 without a word)."""
    domain = PARAM_DOMAINS.get(name)
    if domain is None:
        ok = not isinstance(value, bool) and isinstance(value, (int, float, str)) and value == value
        if not ok:
            raise TuneError(f"{where}: {name}={value!r}: expected a number or a string")
        return value
    if not domain.holds(value):
        raise TuneError(f"{where}: {name}={value!r}: expected {domain.describe()}")
    return int(value) if domain.integer else value


def apply_params(cfg, params: dict, space: dict[str, SearchParam] | None = None, where: str | None = None):
    """``cfg`` with the tuned ``params``: TrainConfig fields set, model options merged; every value
    checked against its domain (:func:`checked_value`) and the run configuration's checks, errors
    naming ``where`` (the best.json, or the study's trial)."""
    space = space if space is not None else {p.name: p for p in SEARCH_SPACES.get(cfg.system, ())}
    where = where or f"{cfg.system} tuned settings"
    if not isinstance(params, dict):
        raise TuneError(f"{where}: params {params!r}: expected a mapping of parameter -> value")
    fields, options = {}, {}
    for name, value in params.items():
        p = space.get(name)
        if p is None:
            raise TuneError(f"{where}: parameter {name!r} is not in {cfg.system}'s search space ({', '.join(space)})")
        (options if p.model_option else fields)[name] = checked_value(name, value, where)
    try:
        return replace(cfg, **fields, model_options={**cfg.model_options, **options})
    except DataError as exc:
        raise TuneError(f"{where}: {exc}") from None


def data_fingerprint(data_root, dataset: str, category: str) -> str:
    """sha256 over the category's train and dev files (the only splits a study reads)."""
    import hashlib

    from mmss_lib.data.mrhp import split_file

    h = hashlib.sha256()
    for split in ("train", "dev"):
        for kind in ("prd", "rvw", "rel"):
            path = split_file(data_root, dataset, category, kind, split)
            if not path.exists():
                raise DataError(
                    f"{path}: missing ({dataset}/{category} {split} split); expected the MRHP files "
                    f"{{data_root}}/{dataset}/{category}/{category}.{{prd,rvw,rel}}.{{train,dev,test}}"
                )
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def tuned_best_path(tune_root, dataset: str, category: str, system: str, variant: str = "full") -> Path:
    """The ``best.json`` a run of ``system``/``variant`` takes from ``tune_root``: its own study's, else
    (an ablation variant) the full system's."""
    own = study_dir_for(tune_root, dataset, category, system, variant) / BEST_FILE
    if own.exists() or variant in (None, "", "full"):
        return own
    return study_dir_for(tune_root, dataset, category, system, "full") / BEST_FILE


def apply_tuned(cfg, tune_root, dataset: str, category: str, *, data_root=None, features_root=None):
    """``cfg`` with the settings of its study's ``best.json`` under ``tune_root`` (``tuned_from`` set),
    the file checked whole (:func:`read_best`, every value against its domain). With ``data_root``
    / ``features_root``: a study run on other train/dev data or other feature stores than the run
    (its recorded fingerprints) is refused."""
    if is_floor(cfg.system):
        return cfg
    path = tuned_best_path(tune_root, dataset, category, cfg.system, cfg.variant)
    if not path.exists():
        raise TuneError(
            f"--tuned {tune_root}: no study for {dataset}/{category} {cfg.system} ({path} missing); "
            f"run `mmss tune --systems {cfg.system} --categories {category}` first, or train it untuned"
        )
    own = study_dir_for(tune_root, dataset, category, cfg.system, cfg.variant) / BEST_FILE
    best = read_best(path, dataset, category, cfg.system, cfg.variant if path == own else "full")
    _check_best_inputs(path, best, cfg, dataset, category, data_root, features_root)
    return replace(apply_params(cfg, best["params"], where=str(path)), tuned_from=str(path))


def _check_best_inputs(path, best: dict, cfg, dataset, category, data_root, features_root) -> None:
    """The study's recorded fingerprints (best.json ``data_sha256``, ``features``) against the run's
    inputs; a best.json from before they were recorded is not compared."""
    if data_root is not None and best.get("data_sha256"):
        now = data_fingerprint(data_root, dataset, category)
        if now != best["data_sha256"]:
            raise TuneError(
                f"{path}: the study was run on other data ({dataset}/{category} train+dev sha256 "
                f"{str(best['data_sha256'])[:12]}, now {now[:12]}); tune again on this data "
                "(another --out) or train it untuned"
            )
    if features_root is not None and isinstance(best.get("features"), dict):
        from mmss_lib.training.run_folder import feature_inputs, input_changes, stores_read

        now = feature_inputs(features_root, dataset, category, stores_read(cfg.to_json()))
        changes = input_changes({"features": best["features"]}, {"features": now})
        if changes:
            raise TuneError(
                f"{path}: the study was run on other features ({'; '.join(changes)}); tune again on "
                "these features (another --out) or train it untuned"
            )


def read_best(path, dataset: str, category: str, system: str, variant: str = "full") -> dict:
    """A study's ``best.json``, checked as a whole before any run takes it: JSON of mmss tune, a
    study of this dataset, category and system (and the variant whose folder it lies in, an
    ablation taking the full system's), a study name that matches, and non-empty params (an empty
    set trained the base settings, recorded as tuned). ``variant``: the study's (``full`` where an
    ablation takes the full system's). Every error names the file."""
    path = Path(path)
    try:
        best = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TuneError(f"{path}: not a best.json of mmss tune ({type(exc).__name__}: {exc})") from None
    if not isinstance(best, dict) or not isinstance(best.get("params"), dict):
        got = type(best.get("params") if isinstance(best, dict) else best).__name__
        raise TuneError(f"{path}: not a best.json of mmss tune (no 'params' mapping; got {got})")
    if best.get("system") != system:
        raise TuneError(f"{path}: a study of {best.get('system')!r}, not {system!r}")
    own_variant = (
        variant if (study_dir_for(path.parents[3], dataset, category, system, variant) / BEST_FILE) == path else "full"
    )
    expect = {
        "dataset": dataset,
        "category": category,
        "variant": own_variant,
        "study": f"{dataset}/{category}/{run_name(system, own_variant)}",
    }
    for key, want in expect.items():
        if key in best and best[key] != want:
            raise TuneError(
                f"{path}: the study of {best.get('study')!r} ({key} {best[key]!r}), not of {want!r}: "
                f"another dataset's or category's best.json placed under {dataset}/{category}; "
                "tune this category (mmss tune) or train it untuned"
            )
    if not best["params"]:
        raise TuneError(
            f"{path}: 'params' is empty: no tuned setting to take (the base settings would be "
            "recorded as tuned); tune again or train it untuned"
        )
    return best
