"""No import circle in heur.core: imports run one way.

The graph has an edge a -> b for every import of heur.core module b written anywhere in module
a: at the top and inside functions (``from .b import x``, ``from . import b``,
``from heur.core.b import x``, ``import heur.core.b``). Function-level imports count because
they are how the old circle preflight -> probes_cca -> runs -> preflight hid: a lazy import
defers a dependency, it does not remove it. Names in strings (the probe registry's
"module:Class" entries, imported by importlib) are not edges: that indirection is what lets a
registry list its plugins without the plugins' modules depending back on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "core"


def _targets(node: ast.AST, modules: set[str]) -> set[str]:
    out: set[str] = set()
    if isinstance(node, ast.ImportFrom):
        if node.level == 1:  # from .b import x / from . import b / from .b.c import x
            out |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[:2] == ["heur", "core"]:
                out |= {parts[2]} if len(parts) > 2 else {a.name for a in node.names}
    elif isinstance(node, ast.Import):
        for a in node.names:
            parts = a.name.split(".")
            if parts[:2] == ["heur", "core"] and len(parts) > 2:
                out.add(parts[2])
    return out & modules


def import_graph(core: Path = CORE) -> dict[str, set[str]]:
    """Module name (file stem) -> the heur.core modules it imports anywhere in its body."""
    modules = {p.stem for p in core.glob("*.py") if p.stem != "__init__"}
    graph = {}
    for m in sorted(modules):
        tree = ast.parse((core / f"{m}.py").read_text(), filename=f"{m}.py")
        graph[m] = set().union(*(_targets(n, modules) for n in ast.walk(tree))) - {m}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) for every back edge a depth-first walk
    finds; empty exactly when the graph is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    found: list[list[str]] = []

    def walk(u: str) -> None:
        state[u] = 1
        path.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                found.append(path[path.index(v):] + [v])
            elif v not in state:
                walk(v)
        path.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m)
    return found


def test_the_checker_sees_function_level_imports_and_cycles(tmp_path):
    (tmp_path / "a.py").write_text("from .b import f\n")
    (tmp_path / "b.py").write_text("def f():\n    from heur.core.c import g\n")
    (tmp_path / "c.py").write_text("import os\n\ndef g():\n    from . import a\n")
    (tmp_path / "d.py").write_text("import heur.core.a\nREGISTRY = {'x': 'heur.core.d:X'}\n")
    graph = import_graph(tmp_path)
    assert graph == {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    (tmp_path / "c.py").write_text("def g():\n    pass\n")
    assert cycles(import_graph(tmp_path)) == []


def test_no_import_circle_in_core():
    found = cycles(import_graph())
    assert not found, "import circles in heur.core: " + "; ".join(" -> ".join(c) for c in found)
