"""The systems the harness runs: two floors, MM-SS and the eight comparison systems of Tables 1-2.

Each entry names the class implementing it (imported on use). Every class takes keyword-only
``text_dim`` and ``region_dim`` (input feature sizes from the store) plus its own options with
defaults. Trained systems map a :class:`mmss_lib.data.batch.Batch` to a
:class:`mmss_lib.data.batch.ModelOutput`; the floors (kind ``"floor"``: ``random``, ``length``) and the ceilings of generated data (kind
``"ceiling"``: ``ceiling_text``, ``ceiling_all``), see :mod:`mmss_lib.training.floors`, need no training and
score reviews directly (``needs_training = False``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class SystemInfo:
    name: str  # key used in configs and tables
    display: str  # row label in the paper's tables
    kind: str  # "floor" | "ceiling" | "text-only" | "multimodal"
    target: str  # "module:Class"


SYSTEMS: dict[str, SystemInfo] = {
    s.name: s
    for s in [
        SystemInfo("random", "Random", "floor", "mmss_lib.models.floors:RandomFloor"),
        SystemInfo("length", "Length", "floor", "mmss_lib.models.floors:LengthFloor"),
        SystemInfo("ceiling_text", "Ceiling (text cues)", "ceiling", "mmss_lib.models.floors:CeilingText"),
        SystemInfo("ceiling_all", "Ceiling (all cues)", "ceiling", "mmss_lib.models.floors:CeilingAll"),
        SystemInfo("bimpm", "BiMPM", "text-only", "mmss_lib.models.baselines.bimpm:BiMPM"),
        SystemInfo("egcnn", "EG-CNN", "text-only", "mmss_lib.models.baselines.egcnn:EGCNN"),
        SystemInfo("convknrm", "Conv-KNRM", "text-only", "mmss_lib.models.baselines.convknrm:ConvKNRM"),
        SystemInfo("prhnet", "PRH-Net", "text-only", "mmss_lib.models.baselines.prhnet:PRHNet"),
        SystemInfo("ssecross", "SSE-Cross", "multimodal", "mmss_lib.models.baselines.ssecross:SSECross"),
        SystemInfo("drnet", "D&R Net", "multimodal", "mmss_lib.models.baselines.drnet:DRNet"),
        SystemInfo("mcr", "MCR", "multimodal", "mmss_lib.models.baselines.mcr:MCR"),
        SystemInfo("mcl", "MCL", "multimodal", "mmss_lib.models.baselines.mcl:MCL"),
        SystemInfo("mmss", "MM-SS (Ours)", "multimodal", "mmss_lib.models.mmss:MMSS"),
    ]
}

FLOORS = [n for n, s in SYSTEMS.items() if s.kind == "floor"]
BASELINES = [n for n, s in SYSTEMS.items() if n != "mmss" and s.kind not in ("floor", "ceiling")]


# What a run of each system costs, relative to the others: CPU seconds to early stopping on one demo
# category of 120 products with the demo profile's settings (one thread; measured 2026-11-28 for
# MM-SS, BiMPM and MCR; the others: their measured seconds per epoch x 10 epochs). Sweeps start
# their most expensive runs first (longest-processing-time order), so that the workers do not end
# with one busy and the others idle; results never depend on this order.
RUN_COST: dict[str, float] = {
    "random": 0.0,
    "length": 0.0,
    "ceiling_text": 0.0,
    "ceiling_all": 0.0,
    "bimpm": 243.0,
    "mmss": 157.0,
    "mcr": 144.0,
    "mcl": 116.0,
    "ssecross": 89.0,
    "drnet": 73.0,
    "prhnet": 65.0,
    "convknrm": 63.0,
    "egcnn": 27.0,
}


def run_cost(name: str, variant: str | None = "full") -> float:
    """:data:`RUN_COST` of a system (an MM-SS without module (b) skips the five interactions: a
    third of the full model's), 100 for a system it does not know."""
    cost = RUN_COST.get(name, 100.0)
    return cost / 3 if (name == "mmss" and variant == "wo_b") else cost


def is_floor(name: str) -> bool:
    """Whether ``name`` needs no training (:func:`mmss_lib.training.floors.run_floor` runs it): the floors
    and the ceilings of generated data."""
    return name in SYSTEMS and SYSTEMS[name].kind in ("floor", "ceiling")


def is_ceiling(name: str) -> bool:
    """Whether ``name`` is a ceiling (a fit on the generator's planted cues: an oracle, never a
    rival in the paired tests against the best other system)."""
    return name in SYSTEMS and SYSTEMS[name].kind == "ceiling"


def system_class(name: str):
    if name not in SYSTEMS:
        raise KeyError(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}")
    module, cls = SYSTEMS[name].target.split(":")
    return getattr(importlib.import_module(module), cls)


def build_system(name: str, *, text_dim: int, region_dim: int = 2048, **options):
    """Instantiate system ``name`` for inputs of the given feature sizes."""
    return system_class(name)(text_dim=text_dim, region_dim=region_dim, **options)


# ------------------------------------------------------------------------------ search spaces
# What `mmss tune` (mmss_lib.model_selection.search) searches per trained system, declared here beside the systems.
# Every entry is a TrainConfig field or, with ``model_option=True``, a keyword of the system's class.
# The settings a run would get without tuning (the base configuration: the paper's, or a profile's)
# are always the study's first trial, so a categorical's choices gain that value when it is missing.


@dataclass(frozen=True)
class SearchParam:
    name: str  # TrainConfig field, or model option (model_option=True)
    kind: str  # "float" | "int" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()
    model_option: bool = False
    why: str = ""


@dataclass(frozen=True)
class Domain:
    """The values a tuned parameter can take at all (whatever a ``--space`` asks): a number from
    ``low`` to ``high`` (each bound included unless ``open_low`` / ``open_high``), an integer
    where ``integer``; ``why`` says where the bounds come from."""

    low: float
    high: float
    open_low: bool = False
    open_high: bool = False
    integer: bool = False
    why: str = ""

    def holds(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return False
        if self.integer and not (isinstance(value, int) or float(value).is_integer()):
            return False
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def describe(self) -> str:
        lo, hi = ("(" if self.open_low else "["), (")" if self.open_high else "]")
        kind = "an integer" if self.integer else "a number"
        return (
            f"{kind} in {lo}{self.low:g}, {self.high:g}{hi} ({self.why})"
            if self.why
            else f"{kind} in {lo}{self.low:g}, {self.high:g}{hi}"
        )


# The valid domain of every tuned parameter: a --space range or choice outside it, or a best.json
# value outside it, is refused before any trial or run starts (a dropout of 1.02 failed inside
# torch, a learning rate of 514 "completed" with a meaningless dev MAP).
PARAM_DOMAINS: dict[str, Domain] = {
    # Adam at rates above 1 diverges on every system here (the default space tops at 3e-3)
    "lr": Domain(0.0, 1.0, open_low=True, why="a positive Adam learning rate, at most 1"),
    "weight_decay": Domain(0.0, 1.0, why="Adam's L2 weight decay, >= 0 and at most 1"),
    "n_neg": Domain(1, 1000, integer=True, why="negatives per positive"),
    "batch_size": Domain(1, 65536, integer=True, why="pairs per batch"),
    "dropout": Domain(0.0, 1.0, open_high=True, why="a dropout probability, 1 drops everything"),
    # exp(-s) weights a subtask loss: beyond +-10 a weight of 2e4 or 5e-5
    "sub_log_var_init": Domain(-10.0, 10.0, why="Eq. 15's log-variance start; weights exp(-s)"),
}


_COMMON_SPACE = (
    # App. A.2's 1e-4 is the paper's rate for its own data and features; one decade below it to
    # 30x above (the project's learning tests train at 1e-3 and 3e-3), on a log scale.
    SearchParam("lr", "float", 1e-5, 3e-3, log=True, why="Adam rate: 0.1x to 30x the paper's 1e-4"),
    # the paper uses none; 0 plus three decades of L2 (Adam's coupled weight decay)
    SearchParam(
        "weight_decay",
        "categorical",
        choices=(0.0, 1e-6, 1e-5, 1e-4),
        why="Adam weight decay: the paper's 0 and three decades",
    ),
    # MCR's scheme draws n_neg negatives per positive (MCR/paper: 7; the demo: 3)
    SearchParam("n_neg", "categorical", choices=(1, 3, 5, 7), why="negatives per positive (MCR's 7 and fewer)"),
    # App. A.2: 32 pairs per batch; half and double
    SearchParam("batch_size", "categorical", choices=(16, 32, 64), why="pairs per batch: App. A.2's 32, half, double"),
    # every trained system has one dropout rate (0.1 by default; Conv-KNRM 0)
    SearchParam("dropout", "float", 0.0, 0.5, model_option=True, why="the system's dropout rate"),
)

SEARCH_SPACES: dict[str, tuple[SearchParam, ...]] = {
    name: _COMMON_SPACE for name, info in SYSTEMS.items() if info.kind in ("text-only", "multimodal")
}
SEARCH_SPACES["mmss"] = _COMMON_SPACE + (
    # what the paper leaves open: the start of Eq. 15's learned log-variances s_k (0 weights each
    # subtask loss 1/2 at the first step; -2..2 spans weights 3.7 to 0.07)
    SearchParam(
        "sub_log_var_init",
        "float",
        -2.0,
        2.0,
        model_option=True,
        why="Eq. 15's start s_k = log sigma_k^2 (unstated in the paper)",
    ),
)


# ------------------------------------------------------------------------------ model option values
# The values a model option (``--option KEY=VALUE``) can take, by name, whatever the system: checked
# before any run starts (``d=-5`` failed inside the run with "must be divisible by n_heads",
# ``d=0`` / ``dropout=5.0`` with torch's words, ``subtasks=[]`` trained MM-SS without its subtask
# heads and reported it as the full model). Types are the trainer's check (the default's type).
_SIZES = ("d", "n_heads", "ff_dim", "head_hidden", "hidden", "perspectives", "agg_hidden", "filters", "n_kernels")
_PROBABILITIES = ("dropout", "attn_dropout", "p_sse")
_POSITIVE = ("sigma", "exact_sigma", "tau", "log_scale")
_NON_NEGATIVE = ("aux_weight", "margin", "source_init_std")


def check_option_values(system: str, options: dict) -> None:
    """Refuse model option values outside their meaning (module comment above), naming the option,
    the system and what is expected; values of another type are left to the type check."""
    from mmss_lib.errors import DataError

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    for key, value in (options or {}).items():
        want = None
        if key in _SIZES and isinstance(value, int) and not isinstance(value, bool) and value < 1:
            want = "an integer >= 1 (a size or count)"
        elif key == "n_layers" and isinstance(value, int) and not isinstance(value, bool) and value < 1:
            want = "an integer >= 1 (layers)"
        elif key in _PROBABILITIES and number(value) and not (0 <= value < 1):
            want = "a probability from 0 to below 1"
        elif key in _POSITIVE and number(value) and not (value > 0 and value < float("inf")):
            want = "a finite number > 0"
        elif key in _NON_NEGATIVE and number(value) and not (0 <= value < float("inf")):
            want = "a finite number >= 0"
        elif key == "sub_log_var_init" and number(value) and not PARAM_DOMAINS["sub_log_var_init"].holds(value):
            want = PARAM_DOMAINS["sub_log_var_init"].describe()
        elif key in ("widths", "ngrams") and isinstance(value, (list, tuple)):
            if not value or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in value):
                want = "a non-empty list of integers >= 1"
        elif key == "subtasks" and isinstance(value, (list, tuple)) and not value:
            want = (
                "at least one subtask (an empty list trains no subtask head: use --systems mmss:VARIANT "
                "for an ablation, so the run is not reported as the full model)"
            )
        if want:
            raise DataError(f"--option {key}={value!r}: model option {key!r} of system {system!r} expects {want}")
