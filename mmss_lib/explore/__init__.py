"""The pseudo-label explorer: its data side (`explorer`) and its widgets and web app (`app`)."""

from __future__ import annotations

from mmss_lib.utils import lazy_exports

# public name -> the module of this package that defines it (imported on the name's first use)
_EXPORTS: dict[str, str] = {
    "Explorer": "explorer",
    "RunRef": "explorer",
    "discover_runs": "explorer",
    "ExplorerApp": "app",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
