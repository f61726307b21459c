"""mmss: an open, reproducible implementation of MM-SS for multimodal review helpfulness prediction.

`import mmss_lib` is deliberately light: it imports no torch, torchvision or transformers.
Submodules are imported on first use (``mmss_lib.data.mrhp``, ``mmss_lib.metrics.ranking``, ...).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "bench",
    "cli",
    "data",
    "errors",
    "evaluation",
    "explore",
    "features",
    "metrics",
    "model_selection",
    "models",
    "predict",
    "reproduce",
    "ssp",
    "training",
    "utils",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'mmss_lib' has no attribute {name!r}")


__all__ = sorted(_SUBMODULES) + ["__version__"]
