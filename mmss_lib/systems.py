"""The systems the harness runs: two floors, MM-SS and the eight comparison systems of Tables 1-2.

Each entry names the class implementing it (imported on use). Every class takes keyword-only
``text_dim`` and ``region_dim`` (input feature sizes from the store) plus its own options with
defaults. Trained systems map a :class:`mmss_lib.batch.Batch` to a
:class:`mmss_lib.batch.ModelOutput`; the floors (kind ``"floor"``: ``random``, ``length``) and the ceilings of generated data (kind
``"ceiling"``: ``ceiling_text``, ``ceiling_all``), see :mod:`mmss_lib.floors`, need no training and
score reviews directly (``needs_training = False``).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class SystemInfo:
    name: str         # key used in configs and tables
    display: str      # row label in the paper's tables
    kind: str         # "floor" | "ceiling" | "text-only" | "multimodal"
    target: str       # "module:Class"


SYSTEMS: dict[str, SystemInfo] = {s.name: s for s in [
    SystemInfo("random", "Random", "floor", "mmss_lib.floors:RandomFloor"),
    SystemInfo("length", "Length", "floor", "mmss_lib.floors:LengthFloor"),
    SystemInfo("ceiling_text", "Ceiling (text cues)", "ceiling", "mmss_lib.floors:CeilingText"),
    SystemInfo("ceiling_all", "Ceiling (all cues)", "ceiling", "mmss_lib.floors:CeilingAll"),
    SystemInfo("bimpm", "BiMPM", "text-only", "mmss_lib.baselines.bimpm:BiMPM"),
    SystemInfo("egcnn", "EG-CNN", "text-only", "mmss_lib.baselines.egcnn:EGCNN"),
    SystemInfo("convknrm", "Conv-KNRM", "text-only", "mmss_lib.baselines.convknrm:ConvKNRM"),
    SystemInfo("prhnet", "PRH-Net", "text-only", "mmss_lib.baselines.prhnet:PRHNet"),
    SystemInfo("ssecross", "SSE-Cross", "multimodal", "mmss_lib.baselines.ssecross:SSECross"),
    SystemInfo("drnet", "D&R Net", "multimodal", "mmss_lib.baselines.drnet:DRNet"),
    SystemInfo("mcr", "MCR", "multimodal", "mmss_lib.baselines.mcr:MCR"),
    SystemInfo("mcl", "MCL", "multimodal", "mmss_lib.baselines.mcl:MCL"),
    SystemInfo("mmss", "MM-SS (Ours)", "multimodal", "mmss_lib.model:MMSS"),
]}

FLOORS = [n for n, s in SYSTEMS.items() if s.kind == "floor"]
CEILINGS = [n for n, s in SYSTEMS.items() if s.kind == "ceiling"]
BASELINES = [n for n, s in SYSTEMS.items() if n != "mmss" and s.kind not in ("floor", "ceiling")]


def is_floor(name: str) -> bool:
    """Whether ``name`` needs no training (:func:`mmss_lib.floors.run_floor` runs it): the floors
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
