"""The settings of the SSP-Label method (:class:`SSPConfig`), apart from where its state lives
(the banks' memory policy is :class:`~mmss_lib.ssp.bank.FeatureBanks`'). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from mmss_lib.errors import TrainingError
from mmss_lib.ssp.equations import DEFAULT_SCALE, SCALES


@dataclass(frozen=True)
class SSPConfig:
    """What SSP-Label computes; each field's equation is in :mod:`mmss_lib.ssp.equations`."""

    alpha1: float = 1.0  # Eq. 19: weight of the ratio rule
    alpha2: float = 1.0  # Eq. 20: weight of the difference rule
    pivot: float = 1.5  # Eq. 17: centre of the anchor's sigmoid weights (threshold + 0.5)
    shrinkage: float = 0.05  # Eq. 18: lambda, shrinkage of the covariance towards a scaled identity, in (0, 1]
    ridge: float = 1e-6  # Eq. 18: added to the diagonal so Sigma' stays invertible
    eps: float = 1e-6  # Eq. 19: guard of the ratio's denominator
    label_range: tuple[float, float] = (0.0, 4.0)  # the human labels' (low, high)
    scale: str = DEFAULT_SCALE  # Eq. 18: the reading of s_k, one of SCALES
    clamp: tuple[float, float] | None = None  # added: y_s clamp; None = label range widened by its width each side
    fresh_only: bool = True  # added: an epoch's statistics over the samples visited in it only

    def __post_init__(self):
        if not 0.0 < self.shrinkage <= 1.0:
            raise TrainingError(f"SSPLabel: shrinkage must be in (0, 1], got {self.shrinkage}")
        lo, hi = float(self.label_range[0]), float(self.label_range[1])
        if not lo < hi:
            raise TrainingError(f"SSPLabel: label_range must be (low, high) with low < high, got {self.label_range}")
        if self.scale not in SCALES:
            raise TrainingError(f"SSPLabel: scale must be one of {SCALES}, got {self.scale!r}")
        clamp = self.clamp
        if clamp is None:
            clamp = (lo - (hi - lo), hi + (hi - lo))  # mmss_lib.ssp.equations: the added clamp range
        if not float(clamp[0]) < float(clamp[1]):
            raise TrainingError(f"SSPLabel: clamp must be (low, high) with low < high, got {clamp}")
        for name, value in (
            ("alpha1", float(self.alpha1)),
            ("alpha2", float(self.alpha2)),
            ("pivot", float(self.pivot)),
            ("shrinkage", float(self.shrinkage)),
            ("ridge", float(self.ridge)),
            ("eps", float(self.eps)),
            ("label_range", (lo, hi)),
            ("scale", str(self.scale)),
            ("clamp", (float(clamp[0]), float(clamp[1]))),
            ("fresh_only", bool(self.fresh_only)),
        ):
            object.__setattr__(self, name, value)

    def options(self) -> dict:
        """The method's settings as :meth:`SSPLabel.state_dict` stores them (``fresh_only`` apart)."""
        return {
            "alpha1": self.alpha1,
            "alpha2": self.alpha2,
            "pivot": self.pivot,
            "shrinkage": self.shrinkage,
            "ridge": self.ridge,
            "eps": self.eps,
            "label_range": list(self.label_range),
            "scale": self.scale,
            "clamp": list(self.clamp),
        }
