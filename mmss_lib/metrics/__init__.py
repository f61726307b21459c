"""Ranking metrics (MAP, NDCG@k, MRR), per-product values, bootstrap intervals and paired tests:
pure functions on arrays and frames, used by training, evaluation and the studies."""

from __future__ import annotations

from mmss_lib.utils import lazy_exports

# public name -> the module of this package that defines it (imported on the name's first use)
_EXPORTS: dict[str, str] = {
    "METRIC_NAMES": "ranking",
    "TESTED_METRICS": "ranking",
    "DEFAULT_KS": "ranking",
    "PER_PRODUCT_COLUMN": "ranking",
    "TIE_POLICIES": "ranking",
    "ranking_metrics": "ranking",
    "per_product_metrics": "ranking",
    "paired_test": "ranking",
    "bootstrap_means": "ranking",
    "bootstrap_interval": "ranking",
    "bootstrap_difference": "ranking",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
