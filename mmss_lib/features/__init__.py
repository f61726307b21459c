"""Feature extraction (Section 4.1: BERT token features, Faster R-CNN RoI features) and the
feature store. ``import mmss_lib.features`` loads only the store (numpy); the extractors
import torch, transformers and torchvision when they run."""

from __future__ import annotations

__all__ = [
    "MAX_REGIONS_PER_IMAGE",
    "MAX_REGIONS_PER_ITEM",
    "STORE_NAMES",
    "FeatureStore",
    "FeatureStoreWriter",
    "cap_regions",
    "feature_dirs",
    "pad_items",
    "read_regions",
    "read_text",
    "write_store",
]
