"""Feature extraction (Section 4.1: BERT token features, Faster R-CNN RoI features) and the
feature store. ``import mmss_lib.features`` imports none of its modules: each name below loads its
module on first use (the store needs only numpy); the extractors import torch, transformers and
torchvision when they run."""

from __future__ import annotations

from mmss_lib.utils import lazy_exports

# public name -> the module of this package that defines it (imported on the name's first use)
_EXPORTS: dict[str, str] = {
    "MAX_REGIONS_PER_IMAGE": "store",
    "MAX_REGIONS_PER_ITEM": "store",
    "STORE_NAMES": "store",
    "FeatureStore": "store",
    "FeatureStoreWriter": "store",
    "cap_regions": "store",
    "feature_dirs": "store",
    "pad_items": "store",
    "read_regions": "store",
    "read_text": "store",
    "write_store": "store",
    "TextEncoder": "text",
    "make_region_extractor": "regions",
    "extract_category": "extract",
    "import_features": "importers",
    "MRHPSplitData": "loader",
    "ReadCaps": "loader",
    "open_stores": "loader",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
