"""The models: MM-SS (`mmss`), the masked building blocks every system shares (`masked`), the
losses, on-the-fly text encoding, the system registry, the untrained floors and ceilings (`floors`)
and the eight comparison systems (`baselines`)."""

from __future__ import annotations

from mmss_lib.utils import lazy_exports

# public name -> the module of this package that defines it (imported on the name's first use)
_EXPORTS: dict[str, str] = {
    "MMSS": "mmss",
    "MMSSConfig": "mmss",
    "SUBTASKS": "mmss",
    "ABLATIONS": "mmss",
    "AttentionPool": "masked",
    "masked_attention": "masked",
    "masked_max": "masked",
    "masked_mean": "masked",
    "masked_softmax": "masked",
    "ranking_hinge": "losses",
    "label_gap_hinge": "losses",
    "weighted_l1": "losses",
    "UncertaintyWeighting": "losses",
    "mmss_subtask_loss": "losses",
    "TEXT_MODES": "online_text",
    "SYSTEMS": "registry",
    "BASELINES": "registry",
    "FLOORS": "registry",
    "SystemInfo": "registry",
    "build_system": "registry",
    "system_class": "registry",
    "is_floor": "registry",
    "floor_system": "floors",
    "expected_random_per_product": "floors",
    "is_ceiling": "registry",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
