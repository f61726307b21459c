"""The eight comparison systems of the paper, one module each (text-only: `bimpm`, `convknrm`, `egcnn`,
`prhnet`; multimodal: `ssecross`, `drnet`, `mcr`, `mcl`), built through :mod:`mmss_lib.models.registry`."""

from __future__ import annotations

from mmss_lib.utils import lazy_exports

# public name -> the module of this package that defines it (imported on the name's first use)
_EXPORTS: dict[str, str] = {
    "BiMPM": "bimpm",
    "ConvKNRM": "convknrm",
    "DRNet": "drnet",
    "EGCNN": "egcnn",
    "MCL": "mcl",
    "MCR": "mcr",
    "PRHNet": "prhnet",
    "SSECross": "ssecross",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
