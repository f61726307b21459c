"""Building a run's model and optimizer, and checking its model options before anything trains:
the system of a :class:`~mmss_lib.training.config.TrainConfig` (with its on-the-fly text encoder where
the text mode asks for one), each ``--option KEY=VALUE`` against the system's keywords and default
types, and Adam with the paper's two learning rates."""

from __future__ import annotations

import json
import math

from mmss_lib.errors import DataError
from mmss_lib.training.config import TrainConfig


def build_model(cfg: TrainConfig, text_dim: int, region_dim: int):
    """The system of ``cfg`` for the given input sizes. Text modes ``frozen`` / ``finetune``: the
    encoder ``cfg.text_model`` is loaded and wraps the system (:mod:`mmss_lib.models.online_text`);
    ``text_dim`` is then the encoder's hidden size."""
    from mmss_lib.models.registry import build_system

    options = dict(cfg.model_options)
    mode = cfg.effective_text_mode
    encoder = tokenizer = None
    if mode != "cached":
        from mmss_lib.models.online_text import load_text_model

        tokenizer, encoder = load_text_model(cfg.text_model)
        text_dim = int(encoder.config.hidden_size)
    check_model_options(cfg.system, options)
    try:
        system = build_system(cfg.system, text_dim=text_dim, region_dim=region_dim, **options)
        if encoder is None:
            return system
        from mmss_lib.models.online_text import on_the_fly_text

        return on_the_fly_text(system, encoder, tokenizer, trainable=(mode == "finetune"))
    except KeyError as exc:
        raise DataError(str(exc.args[0] if exc.args else exc)) from None
    except TypeError as exc:
        raise DataError(f"system {cfg.system!r}: bad model option(s) {sorted(options)}: {exc}") from None


def model_option_defaults(system: str) -> tuple[dict, list | None]:
    """The model options of ``system`` with their defaults (``inspect.Parameter.empty`` where none),
    and the list of known option names (None: any name is taken)."""
    import dataclasses
    import inspect
    import typing

    from mmss_lib.models.registry import SYSTEMS, system_class

    if system not in SYSTEMS:
        return {}, None
    try:
        cls = system_class(system)
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError, ImportError, AttributeError):
        return {}, None
    empty = inspect.Parameter.empty
    defaults = {
        n: p.default
        for n, p in params.items()
        if n not in ("self", "text_dim", "region_dim", "config")
        and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    known: list | None = list(defaults)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        known = None  # **options: the options of its config dataclass, if it says which
        try:
            hint = typing.get_type_hints(cls.__init__).get("config")
        except Exception:  # noqa: BLE001 - unresolvable annotations: no check
            hint = None
        for t in typing.get_args(hint) or (hint,):
            if dataclasses.is_dataclass(t):
                for f in dataclasses.fields(t):
                    defaults[f.name] = (
                        f.default
                        if f.default is not dataclasses.MISSING
                        else f.default_factory()
                        if f.default_factory is not dataclasses.MISSING
                        else empty
                    )
                known = [n for n in defaults if n not in ("text_dim", "region_dim")]
    return defaults, known


def check_model_options(system: str, options: dict) -> None:
    """Each model option (``--option KEY=VALUE``) is a keyword of the system's class and has the
    type of its default (an integer for ``d=128``, ...): a clear error naming the option, instead
    of the model's own failure (e.g. "not all arguments converted during string formatting")."""
    import inspect

    from mmss_lib.models.registry import SYSTEMS

    if system not in SYSTEMS:
        return  # build_system names the unknown system
    empty = inspect.Parameter.empty
    defaults, known = model_option_defaults(system)
    for key, value in options.items():
        if known is not None and key not in known:
            raise DataError(
                f"--option {key}={value!r}: system {system!r} has no model option {key!r}; "
                f"its options: {', '.join(known) or '(none)'}"
            )
        if key not in defaults:
            continue
        default = defaults[key]
        if default is empty or default is None:
            continue
        if isinstance(default, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            want = "a finite number"
        elif isinstance(default, str):
            ok, want = isinstance(value, str), "a string"
        elif isinstance(default, (list, tuple)):
            ok, want = isinstance(value, (list, tuple)), "a JSON list"
        elif isinstance(default, dict):
            ok, want = isinstance(value, dict), "a JSON mapping"
        else:
            continue
        if not ok:
            raise DataError(
                f"--option {key}={value!r}: model option {key!r} of system {system!r} expects {want} "
                f"(default {default!r}); values are JSON, e.g. {key}={json.dumps(default)}"
            )
    from mmss_lib.models.registry import check_option_values

    check_option_values(system, options)  # the values' meaning (sizes >= 1, probabilities, ...)


def build_optimizer(model, cfg: TrainConfig):
    """Adam with the paper's two learning rates (``model.param_groups`` when the system has it)."""
    import torch

    if hasattr(model, "param_groups"):
        groups = model.param_groups(lr=cfg.lr, lr_text=cfg.lr_text)
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}]
    # foreach: one multi-tensor kernel per Adam operation instead of one per parameter (same update)
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
