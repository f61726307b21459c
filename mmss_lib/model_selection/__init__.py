"""Many runs: sweeps over systems x categories x seeds x folds (`sweeps`, `mmss train`), the
K-fold design (`folds`), the Optuna search (`search`, `mmss tune`) and applying its result (`tuned`)."""

from __future__ import annotations

from mmss_lib.utils import lazy_exports

# public name -> the module of this package that defines it (imported on the name's first use)
_EXPORTS: dict[str, str] = {
    "run_experiment": "sweeps",
    "design_folds": "folds",
    "fold_splits": "folds",
    "splits_for_run": "folds",
    "tune": "search",
    "trials_frame": "search",
    "apply_params": "tuned",
    "apply_tuned": "tuned",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
