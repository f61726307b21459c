"""The library's layout: its layers, read from the source with ``ast``.

- no module of ``mmss_lib`` is part of an import circle;
- a lower layer never imports an upper one (:data:`LAYERS`, low to high);
- no module imports another module's private (``_name``) names, in the library and in ``studies/``;
- the library never imports ``studies/``;
- every subpackage exports its public names (``__all__``), and importing them stays light.

Every import counts, the ones at the top of a module and the ones inside functions (a lazy import
still makes two modules depend on each other)."""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "mmss_lib"
STUDIES = ROOT / "studies"

# The layers, low -> high. A module may import modules of its own layer or of lower ones, never of an
# upper one (not even lazily). An entry names a module or a package with everything in it; the root
# package "mmss_lib" stands for its ``__init__`` alone.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("ground", ("mmss_lib", "mmss_lib.errors", "mmss_lib.utils", "mmss_lib.ray_cluster")),
    ("data", ("mmss_lib.data",)),
    ("metrics", ("mmss_lib.metrics",)),
    ("features", ("mmss_lib.features",)),
    ("models", ("mmss_lib.models",)),
    ("ssp", ("mmss_lib.ssp",)),
    ("training", ("mmss_lib.training",)),
    ("evaluation", ("mmss_lib.evaluation",)),
    ("model_selection", ("mmss_lib.model_selection",)),
    ("explore", ("mmss_lib.explore",)),
    ("entry points", ("mmss_lib.cli", "mmss_lib.__main__", "mmss_lib.predict", "mmss_lib.reproduce", "mmss_lib.bench")),
]

# Known remaining violations, being removed by the trainer split (training/trainer.py into smaller
# modules whose names are public); that work empties these two lists.
KNOWN_UPWARD_IMPORTS: set[tuple[str, str]] = set()
KNOWN_PRIVATE_USES: set[str] = set()
# The library's references to studies/, being removed by the studies' move out of `mmss bench`
# (issue 36, item 2: `mmss bench` keeps only timing benchmarks).
KNOWN_STUDIES_REFERENCES: set[str] = set()


def _env() -> dict[str, str]:
    """The environment of a child Python that imports this checkout's ``mmss_lib``."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def _module_name(path: Path, lib: Path = LIB) -> str:
    parts = path.relative_to(lib.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(root: Path) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _imports(mod: str, path: Path) -> Iterator[tuple[ast.stmt, str, list[ast.alias]]]:
    """``(node, target module, aliases)`` for every import statement of a module, lazy ones included;
    a relative import resolved against the module's package; ``import a.b`` gives target ``a.b``."""
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node, target, node.names
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield node, a.name, []


def import_graph(lib: Path = LIB) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` for every module under ``lib``. A string that
    names a module of the package (``"mmss_lib.models.floors:RandomFloor"`` in a registry,
    ``"mmss_lib.data.synthetic"`` for ``importlib``) is an import too: it is imported by that name."""
    files = _modules(lib)
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        for _, target, aliases in _imports(mod, path):
            names = [target] + [f"{target}.{a.name}" for a in aliases]
            graph[mod] |= {n for n in names if n in files and n != mod}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value.split(":", 1)[0]
                if name in files and name != mod and "." in name:
                    graph[mod].add(name)
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer_of(module: str, layers=LAYERS) -> int | None:
    """The index in ``layers`` of the entry that holds ``module`` (the longest one), None if none does."""
    root = layers[0][1][0].split(".")[0]
    best, best_len = None, -1
    for i, (_, entries) in enumerate(layers):
        for e in entries:
            inside = module == e or (e != root and module.startswith(e + "."))
            if inside and len(e) > best_len:
                best, best_len = i, len(e)
    return best


def upward_imports(graph: dict[str, set[str]], layers=LAYERS) -> set[tuple[str, str]]:
    """``(module, imported module)`` for every import of an upper layer's module."""
    return {
        (mod, dep)
        for mod, deps in graph.items()
        for dep in deps
        if layer_of(dep, layers) is not None and layer_of(mod, layers) is not None
        if layer_of(dep, layers) > layer_of(mod, layers)
    }


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _dotted(node: ast.expr) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _private_module_part(target: str, importer: str) -> str | None:
    """The first private component of ``target`` whose package does not hold ``importer`` (a private
    module is its package's own: its siblings may import it, nobody else)."""
    parts = target.split(".")
    for i, p in enumerate(parts):
        if _private(p):
            package = ".".join(parts[:i])
            if not (importer == package or importer.startswith(package + ".")):
                return ".".join(parts[: i + 1])
    return None


def private_uses(roots: list[Path]) -> set[str]:
    """``"module: target.name"`` for every use of another module's private name by a module under
    ``roots``: ``from m import _x``, ``import m._x``, or ``m._x`` where ``m`` is an imported module of
    ``roots`` (``import m``, ``import a.m as m``, ``from a import m``)."""
    files: dict[str, Path] = {}
    for r in roots:
        files.update(_modules(r))
    out = set()
    for mod, path in files.items():
        aliases: dict[str, str] = {}  # local name -> module
        for node, target, names in _imports(mod, path):
            if target not in files and not any(f"{target}.{a.name}" in files for a in names):
                continue
            priv = _private_module_part(target, mod)
            if priv is not None:
                out.add(f"{mod}: {priv}")
            if isinstance(node, ast.Import):
                a = next(a for a in node.names if a.name == target)
                aliases[a.asname] = target if a.asname else None
                if not a.asname:
                    aliases[target.split(".")[0]] = target.split(".")[0]
                aliases.pop(None, None)
                continue
            for a in names:
                full = f"{target}.{a.name}"
                if full in files:
                    aliases[a.asname or a.name] = full
                    priv = _private_module_part(full, mod)
                    if priv is not None:
                        out.add(f"{mod}: {priv}")
                elif _private(a.name) and target != mod:
                    out.add(f"{mod}: {full}")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            chain = _dotted(node.value)
            if not chain or chain[0] not in aliases:
                continue
            owner = ".".join([aliases[chain[0]], *chain[1:]])
            if owner in files and owner != mod:
                out.add(f"{mod}: {owner}.{node.attr}")
    return out


STUDIES_REF = re.compile(r"^studies(\.\w+)*(:\w+)?$")


def studies_references(lib: Path = LIB) -> set[str]:
    """``"module: target"`` for every import of ``studies`` by the library, and every string naming a
    studies module (``importlib.import_module`` or a ``"module:function"`` table)."""
    out = set()
    for mod, path in _modules(lib).items():
        for _, target, _ in _imports(mod, path):
            if target == "studies" or target.startswith("studies."):
                out.add(f"{mod}: {target}")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and STUDIES_REF.match(node.value):
                if "." in node.value or ":" in node.value:
                    out.add(f"{mod}: {node.value}")
    return out


# ------------------------------------------------------------------------------------------- circles


def test_the_checker_finds_a_circle(tmp_path):
    pkg = tmp_path / "mmss_lib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from mmss_lib.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")  # a lazy, relative import counts too
    (pkg / "c.py").write_text("import mmss_lib.a\n")
    assert import_circles(import_graph(pkg)) == [["mmss_lib.a", "mmss_lib.b"]]


def test_no_import_circle_in_mmss_lib():
    circles = import_circles(import_graph())
    assert not circles, f"modules importing each other (lazily or not): {circles}"


def test_run_configuration_is_on_the_ground_floor():
    """The run configuration imports nothing of the library but its errors (and, lazily, the text
    modes); the trainer, the run folder and the sweeps read it from there."""
    graph = import_graph()
    assert graph["mmss_lib.training.config"] <= {"mmss_lib.errors", "mmss_lib.models.online_text"}
    for mod in (
        "mmss_lib.training.trainer",
        "mmss_lib.training.run_folder",
        "mmss_lib.model_selection.sweeps",
        "mmss_lib.model_selection.search",
    ):
        assert "mmss_lib.training.config" in graph[mod], mod


# -------------------------------------------------------------------------------------------- layers


def test_the_checker_finds_an_upward_import(tmp_path):
    pkg = tmp_path / "mmss_lib"
    for sub in ("data", "models", "models/baselines"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "data" / "x.py").write_text("import mmss_lib.errors\n\n\ndef f():\n    from ..models.baselines import y\n")
    (pkg / "models" / "baselines" / "y.py").write_text("from mmss_lib.data.x import f\nfrom mmss_lib import errors\n")
    (pkg / "models" / "z.py").write_text("from . import baselines\n")  # its own layer
    (pkg / "cli.py").write_text("import mmss_lib.models.z\n")  # an entry point imports anything
    (pkg / "data" / "w.py").write_text('TABLE = {"z": "mmss_lib.models.z:Z"}\n')  # imported by name
    graph = import_graph(pkg)
    assert upward_imports(graph) == {  # the package and its module
        ("mmss_lib.data.x", "mmss_lib.models.baselines"),
        ("mmss_lib.data.x", "mmss_lib.models.baselines.y"),
        ("mmss_lib.data.w", "mmss_lib.models.z"),
    }
    assert layer_of("mmss_lib.stray") is None and layer_of("mmss_lib") == 0
    assert layer_of("mmss_lib.models.baselines.y") == layer_of("mmss_lib.models")


def test_every_module_has_a_layer():
    stray = sorted(m for m in import_graph() if layer_of(m) is None)
    assert not stray, f"modules in no layer (add them to LAYERS in tests/test_layout.py): {stray}"


def test_a_lower_layer_never_imports_an_upper_one():
    found = upward_imports(import_graph())
    names = {i: name for i, (name, _) in enumerate(LAYERS)}
    new = sorted(
        f"{m} ({names[layer_of(m)]}) imports {d} ({names[layer_of(d)]})" for m, d in found - KNOWN_UPWARD_IMPORTS
    )
    assert not new, "imports of an upper layer:\n" + "\n".join(new)
    assert KNOWN_UPWARD_IMPORTS <= found, f"fixed, drop from KNOWN_UPWARD_IMPORTS: {KNOWN_UPWARD_IMPORTS - found}"


# ------------------------------------------------------------------------------------- private names


def test_the_checker_finds_private_names(tmp_path):
    pkg = tmp_path / "mmss_lib"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '1'\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "_impl.py").write_text("X = 1\n")
    (pkg / "sub" / "ok.py").write_text("from mmss_lib.sub._impl import X\nfrom ._impl import X as Y\n")  # siblings
    (pkg / "a.py").write_text("_h = 1\nH = 2\n\n\ndef f(self):\n    return self._cache, _h\n")
    (pkg / "b.py").write_text("def f():\n    from mmss_lib.a import H, _h\n")
    (pkg / "c.py").write_text("import mmss_lib.a as A\n\nA.H, A._h\n")
    (pkg / "d.py").write_text("from mmss_lib import a, __version__\n\na._h\n")
    (pkg / "e.py").write_text("import mmss_lib.a\n\nmmss_lib.a._h, mmss_lib.a.H\n")
    (pkg / "f.py").write_text("from mmss_lib.sub._impl import X\n")
    (pkg / "g.py").write_text("import numpy as np\nfrom os import _exit\n\nnp._NoValue\n")  # not ours
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "__init__.py").write_text("")
    (studies / "s.py").write_text("from mmss_lib.a import H\nimport mmss_lib.a as lib\n\nlib._h\n")
    assert private_uses([pkg, studies]) == {
        "mmss_lib.b: mmss_lib.a._h",
        "mmss_lib.c: mmss_lib.a._h",
        "mmss_lib.d: mmss_lib.a._h",
        "mmss_lib.e: mmss_lib.a._h",
        "mmss_lib.f: mmss_lib.sub._impl",
        "studies.s: mmss_lib.a._h",
    }


def test_no_module_uses_another_modules_private_names():
    found = private_uses([LIB, STUDIES])
    new = sorted(found - KNOWN_PRIVATE_USES)
    assert not new, "private names used from another module:\n" + "\n".join(new)
    assert KNOWN_PRIVATE_USES <= found, f"fixed, drop from KNOWN_PRIVATE_USES: {KNOWN_PRIVATE_USES - found}"


def test_the_library_never_imports_the_studies(tmp_path):
    pkg = tmp_path / "mmss_lib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    import studies.claims\n")
    (pkg / "b.py").write_text("T = {'x': 'studies.powered:bench_powered', 'y': 'mmss_lib.a:f'}\nS = 'studies'\n")
    assert studies_references(pkg) == {"mmss_lib.a: studies.claims", "mmss_lib.b: studies.powered:bench_powered"}
    found = studies_references()
    assert found <= KNOWN_STUDIES_REFERENCES, (
        f"the library refers to studies/: {sorted(found - KNOWN_STUDIES_REFERENCES)}"
    )
    assert KNOWN_STUDIES_REFERENCES <= found, (
        f"fixed, drop from KNOWN_STUDIES_REFERENCES: {KNOWN_STUDIES_REFERENCES - found}"
    )


def test_cli_help_lists_every_benchmark_and_stays_light():
    code = (
        "import sys; from mmss_lib.cli import main; main(['--help']); "
        "print(sorted(m for m in ('torch', 'transformers', 'optuna', 'ray', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, env=_env()
    ).stdout
    from mmss_lib.bench import BENCHES

    line = next(ln for ln in out.splitlines() if ln.strip().startswith("bench "))
    assert [b.strip() for b in line.split("benchmarks:")[1].split(",")] == [*BENCHES, "all"]
    assert out.strip().splitlines()[-1] == "[]"


# -------------------------------------------------------------------------------- public names, light

PACKAGES = (
    "data",
    "metrics",
    "features",
    "models",
    "models.baselines",
    "ssp",
    "training",
    "evaluation",
    "model_selection",
    "explore",
)
HEAVY = ("torch", "torchvision", "transformers", "optuna", "ray", "img2dataset")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package):
    pkg = importlib.import_module(f"mmss_lib.{package}")
    assert pkg.__all__ and len(set(pkg.__all__)) == len(pkg.__all__), package
    folder = LIB / package.replace(".", "/")
    submodules = {p.stem for p in folder.glob("*.py")} | {p.parent.name for p in folder.glob("*/__init__.py")}
    assert not set(pkg.__all__) & submodules, "an exported name would hide a submodule"
    for name in pkg.__all__:
        obj = getattr(pkg, name)
        if callable(obj):  # defined in the package (not an import of numpy's or torch's)
            assert obj.__module__.startswith(f"mmss_lib.{package}."), (name, obj.__module__)
        assert name in dir(pkg)
    with pytest.raises(AttributeError, match="no_such_name"):
        pkg.no_such_name  # noqa: B018


def test_importing_the_packages_imports_no_heavy_library():
    """``import mmss_lib`` and every subpackage: no torch, transformers, optuna, ray (nor torchvision,
    img2dataset); a name exported by ``mmss_lib.models`` then loads torch on first use."""
    code = (
        f"import sys, mmss_lib, {', '.join(f'mmss_lib.{p}' for p in PACKAGES)}\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "from mmss_lib.models import MMSS\n"
        "import mmss_lib.models.mmss as M\n"
        "print(MMSS is M.MMSS, 'torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, env=_env()
    ).stdout.splitlines()
    assert out == ["[]", "True True"]
