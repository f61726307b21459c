"""The data layer: MRHP files (`mrhp`), the Amazon 2018 builder (`amazon2018`), the synthetic
generator (`synthetic`), training pairs (`pairs`) and the model input contract (`batch`)."""

from __future__ import annotations

from mmss_lib.utils import lazy_exports

# public name -> the module of this package that defines it (imported on the name's first use)
_EXPORTS: dict[str, str] = {
    "SPLITS": "mrhp",
    "CATEGORIES": "mrhp",
    "LABELS": "mrhp",
    "load_mrhp": "mrhp",
    "write_mrhp": "mrhp",
    "available_categories": "mrhp",
    "dataset_stats": "mrhp",
    "default_threshold": "mrhp",
    "split_by_product": "mrhp",
    "build_amazon2018": "amazon2018",
    "make_demo": "synthetic",
    "load_cues": "synthetic",
    "sample_pairs": "pairs",
    "Batch": "batch",
    "ModelOutput": "batch",
    "random_batch": "batch",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
