"""SSP-Label: the pseudo labels of the subtasks (Eq. 10-12, 17-21). The equations and the reading
taken of each (`equations`), the method's settings (`config`), the banks and their memory policy
(`bank`), the method epoch by epoch (`label`) and its records on disk (`records`)."""

from __future__ import annotations

from mmss_lib.utils import lazy_exports

# public name -> the module of this package that defines it (imported on the name's first use)
_EXPORTS: dict[str, str] = {
    "SSPLabel": "label",
    "SSPConfig": "config",
    "FeatureBanks": "bank",
    "SCALES": "equations",
    "DEFAULT_SCALE": "equations",
    "pseudo_label_estimate": "equations",
    "ewma": "equations",
    "ssp_health": "label",
    "SSPHistory": "records",
    "SSPRecords": "records",
    "load_ssp_history": "records",
    "write_record": "records",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
