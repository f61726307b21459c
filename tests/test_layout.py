"""The library's layout: no module of ``mmss_lib`` is part of an import circle.

Every import counts, the ones at the top of a module and the ones inside functions (a lazy import
still makes two modules depend on each other), found by reading the source with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "mmss_lib"


def _module_name(path: Path, lib: Path = LIB) -> str:
    parts = path.relative_to(lib.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(lib: Path = LIB) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` for every module under ``lib``."""
    files = {_module_name(p, lib): p for p in lib.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            graph[mod] |= {n for n in names if n in files and n != mod}
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
