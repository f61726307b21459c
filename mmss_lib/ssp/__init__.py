"""SSP-Label: the pseudo labels of the subtasks (Eq. 10-12, 17-21, `label`) and their records on disk
(`records`)."""

from __future__ import annotations

from mmss_lib.utils import lazy_exports

# public name -> the module of this package that defines it (imported on the name's first use)
_EXPORTS: dict[str, str] = {
    "SSPLabel": "label",
    "SCALES": "label",
    "DEFAULT_SCALE": "label",
    "pseudo_label_estimate": "label",
    "ssp_health": "label",
    "SSPHistory": "records",
    "SSPRecords": "records",
    "load_ssp_history": "records",
    "write_record": "records",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
