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


def _name(rel: Path) -> str:
    """Dotted module name under heur.core of a file path relative to core/ ("probes/cca.py" ->
    "probes.cca", "probes/__init__.py" -> "probes")."""
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.AST, here: str, is_package: bool, modules: set[str]) -> set[str]:
    """The heur.core modules that import statement ``node`` in module ``here`` names."""
    wanted: list[str] = []
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = here.split(".") if here else []
            if not is_package:
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            prefix = ".".join(base + ([node.module] if node.module else []))
        elif node.module and node.module.split(".")[:2] == ["heur", "core"]:
            prefix = ".".join(node.module.split(".")[2:])
        else:
            return set()
        wanted += [f"{prefix}.{a.name}".lstrip(".") for a in node.names] + [prefix]
    elif isinstance(node, ast.Import):
        wanted += [".".join(a.name.split(".")[2:]) for a in node.names if a.name.split(".")[:2] == ["heur", "core"]]
    out = set()
    for w in wanted:  # the longest prefix that is a module: "probes.Probe" -> "probes"
        parts = w.split(".")
        while parts and ".".join(parts) not in modules:
            parts.pop()
        if parts:
            out.add(".".join(parts))
    return out


def import_graph(core: Path = CORE) -> dict[str, set[str]]:
    """Module name (dotted, under heur.core) -> the heur.core modules it imports anywhere in its
    body; a submodule also depends on its package (importing it runs the package's __init__)."""
    files = {_name(p.relative_to(core)): p for p in core.rglob("*.py")}
    files.pop("", None)  # core/__init__.py
    modules = set(files)
    graph = {}
    for m, path in sorted(files.items()):
        tree = ast.parse(path.read_text(), filename=str(path))
        pkg = path.name == "__init__.py"
        graph[m] = set().union(*(_targets(n, m, pkg, modules) for n in ast.walk(tree)))
        if "." in m:
            graph[m].add(m.rsplit(".", 1)[0])
        graph[m].discard(m)
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
                found.append(path[path.index(v) :] + [v])
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


def test_the_checker_resolves_subpackages(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("from ..a import f\n")
    (tmp_path / "pkg" / "m.py").write_text("from . import Base\nfrom .n import g\n")
    (tmp_path / "pkg" / "n.py").write_text("from heur.core.pkg import m\n")
    (tmp_path / "a.py").write_text("def f():\n    from heur.core.pkg.n import g\n")
    graph = import_graph(tmp_path)
    assert graph == {"a": {"pkg.n"}, "pkg": {"a"}, "pkg.m": {"pkg", "pkg.n"}, "pkg.n": {"pkg", "pkg.m"}}
    assert {frozenset(c) for c in cycles(graph)} == {frozenset({"a", "pkg.n", "pkg"}), frozenset({"pkg.m", "pkg.n"})}


def test_no_import_circle_in_core():
    found = cycles(import_graph())
    assert not found, "import circles in heur.core: " + "; ".join(" -> ".join(c) for c in found)


def test_measurement_code_imports_only_measurement_code():
    """core/measure knows nothing of presets, configs or run directories: it imports no heur.core
    module outside core/measure."""
    graph = import_graph()
    outside = {
        m: sorted(t for t in ts if t.split(".")[0] != "measure")
        for m, ts in graph.items()
        if m.split(".")[0] == "measure"
    }
    assert graph.keys() >= {"measure.similarity", "measure.curvature", "measure.connectivity"}
    assert {m: ts for m, ts in outside.items() if ts} == {}


UI_LIBRARIES = {"textual", "textual_plotext", "rich", "plotext", "matplotlib"}


def _top_imports(path: Path) -> set[str]:
    """The top-level package names a file imports anywhere in its body."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and not n.level and n.module:
            out.add(n.module.split(".")[0])
    return out


def test_the_engine_and_the_figures_import_no_ui_library():
    """core/ (the engine) and figures/ (what each panel shows, shared by the TUI and the reports)
    never import a UI or plotting library: the faces draw, they describe."""
    root = CORE.parent
    found = {
        str(p.relative_to(root)): sorted(_top_imports(p) & UI_LIBRARIES)
        for d in ("core", "figures")
        for p in (root / d).rglob("*.py")
    }
    assert {k: v for k, v in found.items() if v} == {}
    assert _top_imports(root / "tui" / "plotting.py") >= {"textual_plotext"}  # the checker sees imports
