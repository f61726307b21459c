"""``mmss reproduce --profile NAME``: run the numbered notebooks in order with papermill.

The pipeline is the thin layer between the parameter profiles in ``notebooks/params/`` and the
notebooks ``notebooks/0N_*.ipynb`` (01 feature extraction, 02 training, 03 ablation, 04 case
study). For each stage it

1. resolves the notebook's parameters from the profile YAML (``common`` merged under the
   notebook's own mapping, ``${out}`` / ``${repo}`` substituted),
2. checks every parameter name against the notebook's ``parameters`` cell
   (``papermill.inspect_notebook``): an unknown name is an error, not papermill's warning,
3. executes the notebook (kernel ``python3``, working directory = the repository root) into
   ``{out}/executed/{profile}/{name}.ipynb``, and
4. writes a stage record ``{out}/executed/{profile}/{name}.stage.json``.

Profile YAML::

    description: one line shown by --dry-run        # optional
    out: outputs/smoke                              # optional default output dir (repo-relative)
    common:                                         # offered to every notebook
      dataset: demo
      tables_dir: ${out}/tables
    01_extract_features:                            # one mapping per notebook (by file stem)
      text_model: all-MiniLM-L6-v2

``notebooks: [studies/notebooks/claims.ipynb]`` (optional; repository-relative paths, any
``name.ipynb``) makes the profile run these notebooks, in this order, instead of the numbered
notebooks of ``notebooks/``: how the studies' report notebooks run (profiles ``claims`` and
``powered``: the studies are not stages of the paper's pipeline).

``sweep: {dataset: [amazon, lazada]}`` (optional) runs the whole pipeline once per value, the value
overriding ``common``, into ``{out}/executed/{profile}/dataset-amazon/`` etc.; the list form
``sweep: [{dataset: amazon, text_model: X}, {dataset: lazada, text_model: Y}]`` sets several
parameters per pass (folder ``dataset-amazon_text_model-X``, odd characters replaced by ``-``).

A ``common`` key goes to every notebook whose parameters cell declares it (notebooks written by
different people need not share every name); a ``common`` key that no notebook declares, and a
per-notebook key its notebook does not declare, are errors. Per-notebook values win over
``common``. Placeholders: ``${out}`` = the output directory (``--out``, else the profile's
``out``, else ``outputs``; absolute), ``${repo}`` = the repository root. They are substituted in
every string, also inside lists and mappings; ``$${`` escapes a literal ``${``.

Skipping (``skip_unchanged=True``): a stage is skipped when its executed notebook exists and its
stage record holds the same key, the SHA-256 of (notebook file bytes, resolved parameters, the
records of the earlier stages). A stage that runs writes a fresh record (with its finish time), so
every later stage's key changes and it runs too: re-running an upstream stage invalidates
everything downstream. A failed stage loses its record, so it is never skipped.

Progress (``progress``): ``"cells"`` prints a line as each code cell starts (``[2/5] 02_train:
cell 4/7: results = run_experiment(``); ``"output"`` also streams what the kernel prints (the runs
finished of how many with their test MAP, the epochs, progress bars' final lines); ``"none"`` only
the stage lines. The kernel talks to papermill over IPC sockets in a private temporary folder, not
TCP on localhost, so ipykernel's "running over TCP without encryption" warning does not arise.

A failure raises :class:`mmss_lib.errors.PipelineError` naming the notebook, the failing cell
(execution count and cell index, first source line) and the exception, and keeps the partially
executed notebook (papermill saves it cell by cell) at the path the message names.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmss_lib.errors import PipelineError
from mmss_lib.utils import atomic_write_json, repo_root

# The stages of the repository's pipeline, in order (file stems under notebooks/).
NOTEBOOKS: tuple[str, ...] = ("01_extract_features", "02_train", "03_ablation", "04_case_study", "05_explore")
PROFILES: tuple[str, ...] = ("smoke", "demo", "benchmark", "paper")
# profiles that run the studies' report notebooks (their field `notebooks` names them)
STUDY_PROFILES: tuple[str, ...] = ("claims", "powered")
PROGRESS: tuple[str, ...] = ("none", "cells", "output")
DEFAULT_PROFILE = "demo"
KERNEL_NAME = "python3"
# Top-level profile keys that are not notebook names.
RESERVED_KEYS = ("description", "out", "common", "sweep", "notebooks")

_PLACEHOLDER = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_STAGE_FILE = re.compile(r"^\d\d_[A-Za-z0-9_]+\.ipynb$")


@dataclass
class StageResult:
    """What happened to one notebook in a :func:`reproduce` run."""

    name: str  # notebook stem, e.g. "02_train"
    status: str  # "ran" | "skipped"
    executed: Path  # the executed notebook
    record: Path  # the stage record JSON
    seconds: float  # wall time of the execution (0 when skipped)
    parameters: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------


def profile_path(profile: str | os.PathLike, params_dir: str | os.PathLike | None = None) -> Path:
    """The YAML file of ``profile``: a name under ``params_dir`` (default ``notebooks/params``)
    or a path to a ``.yaml`` / ``.yml`` file."""
    p = Path(profile)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise PipelineError(f"profile file {p} does not exist")
        return p
    d = Path(params_dir) if params_dir is not None else repo_root() / "notebooks" / "params"
    path = d / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(q.stem for q in d.glob("*.yaml")) if d.is_dir() else []
        raise PipelineError(
            f"unknown profile {str(profile)!r}: {path} does not exist; known profiles: {', '.join(known) or '(none)'}"
        )
    return path


# Bounds on a profile's values once YAML aliases are expanded: a profile holds a few parameters,
# while a ~1 KB "billion laughs" of nested aliases (&a [*b, *b, ...]) expands to ~10^9 values that
# every later step (substitution, checks, a value quoted in an error) would walk.
MAX_PROFILE_VALUES = 10_000
MAX_PROFILE_DEPTH = 16


def _check_profile_size(raw: dict[str, Any], path: Path) -> None:
    """Refuse a profile whose values, aliases expanded, exceed :data:`MAX_PROFILE_VALUES` or nest
    deeper than :data:`MAX_PROFILE_DEPTH` (a recursive alias too), naming the field. The walk
    stops at the bound, so it costs at most that many steps however large the expansion."""
    count = 0
    stack: list[tuple[Any, str, int]] = [(v, str(k), 1) for k, v in raw.items()]  # (value, field, depth)
    while stack:
        value, where, depth = stack.pop()
        count += 1
        if count > MAX_PROFILE_VALUES:
            raise PipelineError(
                f"profile {path}: field {where!r} holds more than {MAX_PROFILE_VALUES:,} values once "
                "its YAML aliases (*name) are expanded; a profile holds a few parameters: write "
                "the values out without aliases"
            )
        if isinstance(value, (dict, list)):
            if depth > MAX_PROFILE_DEPTH:
                raise PipelineError(
                    f"profile {path}: field {where!r} nests lists or mappings more than "
                    f"{MAX_PROFILE_DEPTH} levels deep (a recursive YAML alias?); a profile "
                    "holds a few parameters"
                )
            if isinstance(value, dict):
                stack.extend((v, f"{where}.{k}" if depth == 1 else where, depth + 1) for k, v in value.items())
            else:
                stack.extend((v, where, depth + 1) for v in value)


def read_profile(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and structurally check a profile YAML (no substitution yet); its size is bounded
    (:func:`_check_profile_size`) before any value is walked or quoted in a message."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PipelineError(f"profile {path}: not valid YAML: {exc}") from exc
    except RecursionError:
        raise PipelineError(
            f"profile {path}: lists or mappings nested too deep to read; a profile holds a few parameters"
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PipelineError(f"profile {path}: expected a mapping at the top level, got {type(raw).__name__}")
    _check_profile_size(raw, path)
    for key, value in raw.items():
        if not isinstance(key, str):
            raise PipelineError(f"profile {path}: top-level key {key!r} is not a string")
        if key == "sweep":
            if value is None:
                continue
            ok = (
                isinstance(value, dict)
                and len(value) == 1
                and isinstance(next(iter(value.values())), list)
                and next(iter(value.values()))
            )
            ok = ok or (
                isinstance(value, list)
                and value
                and all(isinstance(v, dict) and v and all(isinstance(k, str) for k in v) for v in value)
            )
            if not ok:
                raise PipelineError(
                    f"profile {path}: field 'sweep' must map one parameter name to a "
                    f"non-empty list of values ({{dataset: [amazon, lazada]}}) or be a "
                    f"non-empty list of parameter mappings; got {value!r}"
                )
            continue
        if key == "notebooks":
            if not (
                isinstance(value, list)
                and value
                and all(isinstance(v, str) and v.endswith(".ipynb") for v in value)
                and len(set(Path(v).stem for v in value)) == len(value)
            ):
                raise PipelineError(
                    f"profile {path}: field 'notebooks' must be a non-empty list of notebook paths "
                    f"(repository-relative, *.ipynb, distinct file names); got {value!r}"
                )
            continue
        if key in ("description", "out"):
            if value is not None and not isinstance(value, str):
                raise PipelineError(f"profile {path}: field {key!r} must be a string, got {value!r}")
        elif value is not None and not isinstance(value, dict):
            raise PipelineError(
                f"profile {path}: field {key!r} must be a mapping of parameter names to values, "
                f"got {type(value).__name__}"
            )
        elif value:
            bad = [k for k in value if not isinstance(k, str) or not k.isidentifier()]
            if bad:
                raise PipelineError(
                    f"profile {path}: field {key!r} has parameter names that are not Python identifiers: {bad}"
                )
    return raw


def substitute(value: Any, mapping: dict[str, str], *, where: str = "profile") -> Any:
    """Replace ``${name}`` by ``mapping[name]`` in every string inside ``value`` (recursively in
    lists, tuples and dicts); ``$${`` gives a literal ``${``. An unknown placeholder is an error.

    >>> substitute({"a": "${out}/tables", "b": ["${repo}", 3]}, {"out": "/o", "repo": "/r"})
    {'a': '/o/tables', 'b': ['/r', 3]}
    """
    if isinstance(value, str):

        def repl(m: re.Match) -> str:
            if m.group(0) == "$${":
                return "${"
            name = m.group(1)
            if name not in mapping:
                raise PipelineError(
                    f"{where}: unknown placeholder ${{{name}}} in {value!r}; "
                    f"known: {', '.join('${' + k + '}' for k in mapping)}"
                )
            return mapping[name]

        return _PLACEHOLDER.sub(repl, value)
    if isinstance(value, dict):
        return {k: substitute(v, mapping, where=f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(substitute(v, mapping, where=where) for v in value)
    return value


def resolve_out_dir(raw_profile: dict[str, Any], out_dir: str | os.PathLike | None, repo: Path) -> Path:
    """``--out`` if given, else the profile's ``out`` (relative to the repo), else ``outputs``."""
    if out_dir is not None:
        return Path(out_dir).expanduser().resolve()
    rel = raw_profile.get("out") or "outputs"
    p = Path(substitute(rel, {"repo": str(repo)}, where="profile field 'out'")).expanduser()
    return (p if p.is_absolute() else repo / p).resolve()


def _check_out_dir(out: Path, what: str) -> None:
    """The output folder must be a folder this process can write (or be creatable in one)."""
    p = out
    while not p.exists() and p.parent != p:
        p = p.parent
    if not p.is_dir():
        raise PipelineError(f"{what} {out}: {p} is a file, not a folder; give a folder for the outputs")
    if not os.access(p, os.W_OK | os.X_OK):
        raise PipelineError(f"{what} {out}: the folder {p} is not writable; give a writable folder for the outputs")


def notebook_parameters(
    raw_profile: dict[str, Any],
    stages: Iterable[str],
    declared: dict[str, dict[str, Any]],
    *,
    out: Path,
    repo: Path,
    source: str = "profile",
) -> dict[str, dict[str, Any]]:
    """Resolve each stage's parameters: ``common`` (keys the notebook declares) then the stage's
    own mapping, placeholders substituted. ``declared[stage]`` is the stage's parameters cell as
    ``papermill.inspect_notebook`` reports it. Unknown names raise :class:`PipelineError`."""
    stages = list(stages)
    mapping = {"out": str(out), "repo": str(repo)}
    common = raw_profile.get("common") or {}
    unclaimed = [k for k in common if not any(k in declared[s] for s in stages)]
    if unclaimed:
        raise PipelineError(
            f"{source}: common parameter(s) {', '.join(unclaimed)} are declared by none of the "
            f"notebooks {', '.join(stages)}; known names: "
            f"{', '.join(sorted(set().union(*[declared[s] for s in stages])))}"
        )
    resolved = {}
    for stage in stages:
        own = raw_profile.get(stage) or {}
        unknown = [k for k in own if k not in declared[stage]]
        if unknown:
            raise PipelineError(
                f"notebook {stage}: unknown parameter(s) {', '.join(unknown)} in {source}; "
                f"the notebook's parameters cell declares: {', '.join(declared[stage]) or '(none)'}"
            )
        params = {k: v for k, v in common.items() if k in declared[stage]}
        params.update(own)
        resolved[stage] = substitute(params, mapping, where=f"{source}: {stage}")
        check_parameter_values(stage, resolved[stage], declared[stage], source=source)
    return resolved


def _default_value(info: dict[str, Any]) -> Any:
    """The literal default of a parameters-cell entry (papermill gives its source text)."""
    import ast

    raw = info.get("default")
    if not isinstance(raw, str):
        return raw
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _NO_DEFAULT


_NO_DEFAULT = object()
# parameters checked for value, not only type: name -> (minimum, what)
_AT_LEAST = {
    "epochs": (1, "an integer >= 1"),
    "patience": (1, "an integer >= 1"),
    "batch_size": (1, "an integer >= 1"),
    "n_jobs": (1, "an integer >= 1"),
    "num_threads": (0, "an integer >= 0 (0: torch's default)"),
    "folds": (0, "an integer >= 0"),
    "text_batch_size": (1, "an integer >= 1"),
    "image_batch_size": (1, "an integer >= 1"),
    "shard_size": (1, "an integer >= 1"),
    "text_max_len": (2, "an integer >= 2"),
    "demo_products": (1, "an integer >= 1"),
    "seed": (0, "an integer >= 0"),
    "cue_boot": (1, "an integer >= 1"),
    "n_trajectories": (0, "an integer >= 0"),
    "detector_max_boxes": (1, "an integer >= 1"),
    "rpn_post_nms_top_n": (1, "an integer >= 1"),
}


def _type_name(v: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
        tuple: "a list",
    }.get(type(v), type(v).__name__)


def check_parameter_values(
    stage: str, params: dict[str, Any], declared: dict[str, dict[str, Any]], *, source: str = "profile"
) -> None:
    """Check each value as the notebook will use it (what ``--dry-run`` promises): the type of the
    notebook's default (an integer for ``epochs = 10``, a list of strings for ``systems = [...]``;
    a ``None`` default takes anything), the ranges of counts (``epochs`` >= 1, ...), each seed,
    category and system once, and ``train_options`` as :class:`~mmss_lib.training.trainer.TrainConfig` fields.
    A bad value is a :class:`PipelineError` naming the profile, the notebook, the parameter, what
    was expected and what was given."""
    import math

    def bad(name: str, expected: str, value: Any) -> PipelineError:
        return PipelineError(
            f"{source}: notebook {stage}, parameter {name!r}: expected {expected}, got "
            f"{_type_name(value)} {value!r:.80}"
        )

    for name, value in params.items():
        default = _default_value(declared.get(name) or {})
        if default is _NO_DEFAULT or default is None:
            pass
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise bad(name, "true or false", value)
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad(name, f"an integer (the notebook's default is {default!r})", value)
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad(name, f"a finite number (the notebook's default is {default!r})", value)
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise bad(name, f"a string (the notebook's default is {default!r})", value)
        elif isinstance(default, (list, tuple)):
            if not isinstance(value, (list, tuple)):
                raise bad(name, f"a list (the notebook's default is {list(default)!r})", value)
            kinds = {type(x) for x in default}
            if kinds in ({str}, {int}):
                want = kinds.pop()
                for x in value:
                    if type(x) is not want:
                        raise bad(name, f"a list of {'strings' if want is str else 'integers'}", value)
            if name in ("seeds", "categories", "systems", "variants", "stats_categories"):
                seen = [x for i, x in enumerate(value) if x in value[:i]]
                if seen:
                    raise bad(name, f"each value once ({seen[0]!r} is given twice)", value)
        elif isinstance(default, dict):
            if not isinstance(value, dict):
                raise bad(name, "a mapping", value)
        if name in _AT_LEAST and isinstance(value, int) and not isinstance(value, bool):
            low, what = _AT_LEAST[name]
            if value < low:
                raise bad(name, what, value)
        if (
            name == "seeds"
            and isinstance(value, (list, tuple))
            and any(isinstance(x, int) and not isinstance(x, bool) and x < 0 for x in value)
        ):
            raise bad(name, "seeds >= 0", value)
    if isinstance(params.get("executor"), str) and params["executor"] not in ("local", "ray"):
        raise bad("executor", "'local' or 'ray'", params["executor"])
    if isinstance(params.get("systems"), (list, tuple)):
        from mmss_lib.models.registry import SYSTEMS

        unknown = [s for s in params["systems"] if isinstance(s, str) and s.split(":", 1)[0] not in SYSTEMS]
        if unknown:
            raise bad("systems", f"system names of {', '.join(sorted(SYSTEMS))}", unknown[0])
    if isinstance(params.get("train_options"), dict) and params["train_options"]:
        from mmss_lib.errors import MMSSError
        from mmss_lib.training.trainer import TrainConfig

        try:
            TrainConfig(**params["train_options"])
        except TypeError as exc:
            raise bad("train_options", f"TrainConfig fields ({exc})", params["train_options"]) from None
        except MMSSError as exc:
            raise PipelineError(f"{source}: notebook {stage}, parameter 'train_options': {exc}") from None


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


def discover_stages(notebooks_dir: Path) -> list[str]:
    """The numbered notebooks ``NN_name.ipynb`` of a folder, in order (file stems)."""
    if not notebooks_dir.is_dir():
        raise PipelineError(f"notebook folder {notebooks_dir} does not exist")
    names = sorted(p.stem for p in notebooks_dir.iterdir() if _STAGE_FILE.match(p.name))
    if not names:
        raise PipelineError(f"no numbered notebooks (NN_name.ipynb) in {notebooks_dir}")
    return names


def _select(stages: list[str], only: Iterable[str] | None) -> list[str]:
    """Map ``--only`` arguments ("03", "03_ablation", "notebooks/03_ablation.ipynb") to stages."""
    if not only:
        return list(stages)
    chosen = set()
    for arg in only:
        key = Path(str(arg)).name.removesuffix(".ipynb")
        hits = [s for s in stages if s == key or s.split("_", 1)[0] == key]
        if not hits:
            raise PipelineError(f"--only {arg!r} matches no notebook; known: {', '.join(stages)}")
        chosen.update(hits)
    return [s for s in stages if s in chosen]


def declared_parameters(notebook: Path) -> dict[str, dict[str, Any]]:
    """The ``parameters`` cell of a notebook: name -> papermill's description (default, type)."""
    import logging

    import nbformat
    import papermill

    try:
        # papermill's parser skips a line with a second "=" (e.g. in its comment) and says so in a
        # log warning; the line is still a parameter (papermill injects values after the cell).
        logging.disable(logging.WARNING)
        try:
            found = dict(papermill.inspect_notebook(str(notebook)))
        finally:
            logging.disable(logging.NOTSET)
        nb = nbformat.read(str(notebook), as_version=4)
    except Exception as exc:  # a broken file, not JSON, ...
        raise PipelineError(f"notebook {notebook}: cannot read its parameters cell: {exc}") from exc
    out: dict[str, dict[str, Any]] = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            for name in re.findall(r"^([A-Za-z_]\w*)\s*(?::[^=]*)?=(?!=)", cell.source, flags=re.M):
                out[name] = found.get(name, {"name": name, "default": None, "help": ""})
            break
    for name, info in found.items():
        out.setdefault(name, info)
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stage_key(notebook_sha256: str, parameters: dict[str, Any], upstream: list[Any]) -> str:
    """SHA-256 of what determines a stage's result: notebook bytes, parameters, earlier records."""
    blob = json.dumps(
        {"notebook": notebook_sha256, "parameters": parameters, "upstream": upstream}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _describe_failure(stage: str, exc: Exception, executed: Path) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        first = next((ln.strip() for ln in (exc.source or "").splitlines() if ln.strip()), "")
        return (
            f"notebook {stage} failed in cell [{exc.exec_count}] (cell index {exc.cell_index}"
            f"{': ' + first[:80] if first else ''}): {exc.ename}: {exc.evalue}; "
            f"partial executed notebook kept at {executed}"
        )
    return (
        f"notebook {stage} could not be executed: {type(exc).__name__}: {exc}; "
        f"partial executed notebook (if any) at {executed}"
    )


class _Lines:
    """A file-like sink for the kernel's streamed output: each finished line to ``say`` with a
    prefix; a progress bar's carriage-return redraws keep only their last state."""

    def __init__(self, say: Callable[[str], None], prefix: str):
        self.say, self.prefix, self.buf = say, prefix, ""

    def write(self, text: str) -> int:
        self.buf += text
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            line = line.split("\r")[-1].rstrip()
            if line:
                self.say(self.prefix + line)
        return len(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.write("\n")


class _CellStarts:
    """A handler on papermill's logger: one line per code cell as it starts (``cell 3/7: first
    source line``), from papermill's "Executing Cell N" records; every other record is dropped (the
    kernel's output reaches :class:`_Lines` instead)."""

    def __init__(self, notebook: Path, parameters: dict, say: Callable[[str], None], tag: str):
        import logging

        import nbformat

        nb = nbformat.read(str(notebook), as_version=4)
        cells = list(nb.cells)
        tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
        if parameters:  # papermill injects its parameters cell after the tagged one (or first)
            at = tagged[0] + 1 if tagged else 0
            cells.insert(at, nbformat.v4.new_code_cell("# injected parameters"))
        self.code = {i + 1: c for i, c in enumerate(cells) if c.cell_type == "code"}
        self.order = {n: k + 1 for k, n in enumerate(sorted(self.code))}
        self.say, self.tag = say, tag
        pattern = re.compile(r"^Executing Cell (\d+)")

        class Handler(logging.Handler):
            def emit(inner, record):  # noqa: N805 - the handler's self is the outer object's
                m = pattern.match(record.getMessage())
                if m and int(m.group(1)) in self.code:
                    n = int(m.group(1))
                    first = next((ln.strip() for ln in self.code[n].source.splitlines() if ln.strip()), "")
                    self.say(f"{self.tag}: cell {self.order[n]}/{len(self.code)}: {first[:90]}")

        self.handler = Handler(level=logging.INFO)


@contextlib.contextmanager
def _ipc_kernel_manager():
    """A kernel manager class whose kernel listens on IPC sockets in a private temporary folder
    (removed afterwards) instead of TCP on localhost."""
    import shutil
    import tempfile

    from jupyter_client.manager import AsyncKernelManager

    folder = tempfile.mkdtemp(prefix="mmss-kernel-")

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = os.path.join(folder, "kernel")

    try:
        yield IPCKernelManager
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_stage(
    notebook: Path,
    executed: Path,
    parameters: dict[str, Any],
    *,
    cwd: Path,
    kernel_name: str = KERNEL_NAME,
    log_output: bool = False,
    progress: str | None = None,
    say: Callable[[str], None] | None = None,
    tag: str = "",
) -> float:
    """Execute one notebook with papermill; return its wall time. Failures -> PipelineError.
    ``progress`` (:data:`PROGRESS`; default ``"output"`` with ``log_output``, else ``"none"``) goes
    to ``say`` (default ``print`` to stderr), each line prefixed with ``tag``."""
    import logging

    import papermill

    progress = progress or ("output" if log_output else "none")
    if progress not in PROGRESS:
        raise PipelineError(f"progress {progress!r}: expected one of {', '.join(PROGRESS)}")
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    tag = tag or notebook.stem
    executed.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLBACKEND", "Agg")  # the kernel inherits it: no GUI backend
    streams = {}
    if progress == "output":
        streams = {"stdout_file": _Lines(say, f"{tag} | "), "stderr_file": _Lines(say, f"{tag} | ")}
    logger = logging.getLogger("papermill")
    cells = _CellStarts(notebook, parameters, say, tag) if progress != "none" else None
    saved = logger.level, logger.propagate
    if cells is not None:
        logger.addHandler(cells.handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # papermill's own records stay out of the caller's logging
    t0 = time.perf_counter()
    try:
        with _ipc_kernel_manager() as km_class:
            papermill.execute_notebook(
                str(notebook),
                str(executed),
                parameters=parameters,
                kernel_name=kernel_name,
                cwd=str(cwd),
                progress_bar=False,
                log_output=cells is not None,
                kernel_manager_class=km_class,
                **streams,
            )
    except Exception as exc:
        raise PipelineError(_describe_failure(notebook.stem, exc, executed)) from exc
    finally:
        for sink in streams.values():
            sink.close()
        if cells is not None:
            logger.removeHandler(cells.handler)
            logger.setLevel(saved[0])
            logger.propagate = saved[1]
    return time.perf_counter() - t0


def plan(
    profile: str | os.PathLike = DEFAULT_PROFILE,
    *,
    out_dir: str | os.PathLike | None = None,
    only: Iterable[str] | None = None,
    params_dir: str | os.PathLike | None = None,
    notebooks_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Resolve a profile without executing anything: the output folder, the stages in order and
    each stage's checked parameters. Raises :class:`PipelineError` for every problem
    :func:`reproduce` would meet before its first cell runs."""
    repo = repo_root()
    ypath = profile_path(profile, params_dir)
    raw = read_profile(ypath)
    nb_dir = Path(notebooks_dir) if notebooks_dir is not None else repo / "notebooks"
    if raw.get("notebooks"):  # the profile names its notebooks (the studies' report notebooks)
        paths = {Path(v).stem: (Path(v) if Path(v).is_absolute() else repo / v) for v in raw["notebooks"]}
        missing = [str(v) for v in paths.values() if not v.is_file()]
        if missing:
            raise PipelineError(f"profile {ypath}: field 'notebooks': {', '.join(missing)} not found")
        stages = list(paths)
    else:
        stages = discover_stages(nb_dir)
        paths = {s: nb_dir / f"{s}.ipynb" for s in stages}
    stray = [k for k in raw if k not in RESERVED_KEYS and k not in stages]
    if stray:
        raise PipelineError(
            f"profile {ypath}: {', '.join(stray)} name(s) no notebook in {nb_dir}; "
            f"notebooks: {', '.join(stages)}; other allowed fields: "
            f"{', '.join(RESERVED_KEYS)}"
        )
    out = resolve_out_dir(raw, out_dir, repo)
    _check_out_dir(out, "--out" if out_dir is not None else f"profile {ypath}: field 'out'")
    declared = {s: declared_parameters(paths[s]) for s in stages}
    name = Path(profile).stem if ypath == Path(profile) else str(profile)
    # One pass per sweep value (the value overrides common; it goes to {out}/executed/NAME/KEY-VALUE/).
    sweep = raw.get("sweep") or {}
    if isinstance(sweep, dict):
        sweep = [{k: v} for k, values in sweep.items() for v in values]
    passes = []
    for override in sweep:
        label = "_".join(f"{k}-{v}" for k, v in override.items())
        label = re.sub(r"[^A-Za-z0-9_.=-]+", "-", label)
        passes.append((label, {**raw, "common": {**(raw.get("common") or {}), **override}}))
    if not passes:
        passes = [("", raw)]
    points = []
    for label, raw_v in passes:
        src = f"profile {ypath}" + (f" ({label})" if label else "")
        params = notebook_parameters(raw_v, stages, declared, out=out, repo=repo, source=src)
        exec_dir = out / "executed" / name / label if label else out / "executed" / name
        points.append({"label": label, "exec_dir": exec_dir, "parameters": params})
    return {
        "profile": name,
        "profile_path": ypath,
        "description": raw.get("description") or "",
        "out": out,
        "notebooks_dir": nb_dir,
        "notebook_paths": paths,
        "stages": stages,
        "selected": _select(stages, only),
        "points": points,
        "parameters": points[0]["parameters"],
    }


def reproduce(
    profile: str | os.PathLike = DEFAULT_PROFILE,
    *,
    out_dir: str | os.PathLike | None = None,
    skip_unchanged: bool = False,
    only: Iterable[str] | None = None,
    params_dir: str | os.PathLike | None = None,
    notebooks_dir: str | os.PathLike | None = None,
    kernel_name: str = KERNEL_NAME,
    log_output: bool = False,
    log: Callable[[str], None] | None = print,
    progress: str | None = None,
) -> list[StageResult]:
    """Run the notebooks of ``profile`` in order; return what happened to each selected stage.

    ``profile``: a name under ``params_dir`` (default ``notebooks/params``: smoke, demo, benchmark, paper)
    or a path to a YAML file. ``out_dir`` overrides the profile's output folder (``${out}``).
    ``only``: run just these notebooks ("03", "03_ablation"); earlier stages' records still feed
    the skip keys. ``notebooks_dir`` (default ``notebooks/``) holds ``NN_name.ipynb`` files.
    Executed notebooks and stage records go to ``{out}/executed/{profile}/``. ``progress``
    (:data:`PROGRESS`; default ``"output"`` with ``log_output``, else ``"none"``): what of a running
    notebook goes to ``log`` (module docstring).
    """
    say = log or (lambda _msg: None)
    p = plan(profile, out_dir=out_dir, only=only, params_dir=params_dir, notebooks_dir=notebooks_dir)
    repo = repo_root()
    say(f"mmss reproduce: profile {p['profile']} -> {p['out']}")
    results: list[StageResult] = []
    for point in p["points"]:
        results += _run_point(
            p,
            point,
            repo,
            skip_unchanged=skip_unchanged,
            kernel_name=kernel_name,
            progress=progress or ("output" if log_output else "none"),
            say=say,
        )
    return results


def _run_point(
    p: dict,
    point: dict,
    repo: Path,
    *,
    skip_unchanged: bool,
    kernel_name: str,
    progress: str,
    say: Callable[[str], None],
) -> list[StageResult]:
    """Run the selected stages of one sweep point (or of the whole profile when it has no sweep)."""
    exec_dir = point["exec_dir"]
    results: list[StageResult] = []
    upstream: list[Any] = []
    for i, stage in enumerate(p["stages"]):
        nb = p["notebook_paths"][stage]
        executed = exec_dir / f"{stage}.ipynb"
        rec_path = exec_dir / f"{stage}.stage.json"
        params = point["parameters"][stage]
        if stage not in p["selected"]:
            upstream.append(_read_record(rec_path))  # an unselected earlier stage still counts
            continue
        nb_sha = _sha256_file(nb)
        key = stage_key(nb_sha, params, upstream)
        old = _read_record(rec_path)
        tag = f"[{i + 1}/{len(p['stages'])}] {stage}" + (f" ({point['label']})" if point["label"] else "")
        if skip_unchanged and old is not None and old.get("key") == key and executed.is_file():
            say(f"{tag}: unchanged, skipped ({executed})")
            results.append(StageResult(stage, "skipped", executed, rec_path, 0.0, params))
            upstream.append(old)
            continue
        if rec_path.exists():
            rec_path.unlink()  # a stage that fails must not look up to date afterwards
        say(f"{tag}: running ...")
        seconds = run_stage(
            nb, executed, params, cwd=repo, kernel_name=kernel_name, progress=progress, say=say, tag=tag
        )
        record = {
            "notebook": stage,
            "notebook_path": str(nb),
            "notebook_sha256": nb_sha,
            "parameters": params,
            "key": key,
            "executed": str(executed),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(seconds, 3),
            "profile": p["profile"],
            "sweep": point["label"],
        }
        atomic_write_json(rec_path, record)
        say(f"{tag}: done in {seconds:.1f} s -> {executed}")
        results.append(StageResult(stage, "ran", executed, rec_path, seconds, params))
        upstream.append(_read_record(rec_path))
    return results


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def cli_main(argv: list[str], prog: str = "mmss reproduce") -> int:
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Run the notebook pipeline (01 extract features, 02 train, 03 ablation, "
        "04 case study) with papermill, parameters from notebooks/params/PROFILE.yaml.",
    )
    ap.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        help=f"profile name ({', '.join(PROFILES + STUDY_PROFILES)}) or a path to a profile YAML "
        f"(default: {DEFAULT_PROFILE})",
    )
    ap.add_argument(
        "--out", default=None, help="output folder (${out}); default: the profile's (outputs/, smoke: outputs/smoke)"
    )
    ap.add_argument(
        "--skip-unchanged",
        action="store_true",
        help="skip a stage whose notebook, parameters and earlier stages are unchanged "
        "and whose executed notebook exists",
    )
    ap.add_argument(
        "--only", nargs="+", metavar="NOTEBOOK", default=None, help="run only these notebooks (e.g. 03 or 03_ablation)"
    )
    ap.add_argument(
        "--dry-run", action="store_true", help="resolve and check the parameters, print them, execute nothing"
    )
    ap.add_argument(
        "--progress",
        choices=PROGRESS,
        default="output",
        help="what of a running notebook is shown: none, cells (a line as each code cell starts), output "
        "(also what the kernel prints: runs finished of how many, epochs; default)",
    )
    ap.add_argument("--log-output", action="store_true", help="the same as --progress output (kept for scripts)")
    args = ap.parse_args(argv)
    if args.dry_run:
        p = plan(args.profile, out_dir=args.out, only=args.only)
        print(f"profile {p['profile']} ({p['profile_path']}): {p['description']}")
        print(f"out: {p['out']}")
        for point in p["points"]:
            print(f"executed notebooks -> {point['exec_dir']}")
            for stage in p["selected"]:
                print(f"{stage}:")
                for k, v in point["parameters"][stage].items():
                    print(f"  {k} = {v!r}")
        return 0
    t0 = time.perf_counter()
    results = reproduce(
        args.profile,
        out_dir=args.out,
        skip_unchanged=args.skip_unchanged,
        only=args.only,
        progress="output" if args.log_output else args.progress,
        log=lambda msg: print(msg, flush=True),
    )
    ran = sum(r.status == "ran" for r in results)
    print(
        f"{ran} notebook(s) executed, {len(results) - ran} skipped, {time.perf_counter() - t0:.1f} s in all",
        file=sys.stderr,
    )
    return 0
