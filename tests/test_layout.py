"""The package layout: no import cycle between the subpackages of vertexflow.

Read from the source with :mod:`ast` (nothing is imported). The graph has a
node per ``vertexflow.X``: a subpackage (all its modules together) or a module
at the top of the package. An import in a module of ``X`` of anything under
``vertexflow.Y`` is an edge X -> Y. Imports under ``if TYPE_CHECKING:`` are
left out (they never run); imports inside functions count (a lazy import is
still a dependency). Edges between two top-level modules (``config`` and
``config_file``) are left out: those are modules of one package, vertexflow
itself, not of two.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import vertexflow

ROOT = Path(vertexflow.__file__).parent

#: (importing module, imported name, line)
Site = tuple[str, str, int]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit_one(other)
            else:
                visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        visit(node)

    visit(tree)
    return found


def _targets(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """The absolute names ``node`` imports, from a module of ``package``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        parts = package.split(".")
        base = ".".join(parts[:len(parts) - node.level + 1])
    else:
        base = ""
    module = ".".join(p for p in (base, node.module) if p)
    if module.count(".") == 0:  # ``from vertexflow import x`` / ``from .. import x`` at the top
        return [f"{module}.{alias.name}" for alias in node.names]
    return [module]


def _node(name: str) -> str:
    return ".".join(name.split(".")[:2])


def import_graph(root: Path = ROOT) -> dict[tuple[str, str], list[Site]]:
    """Edges between ``vertexflow.X`` nodes, with the import sites behind each."""
    edges: dict[tuple[str, str], list[Site]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        is_init = parts[-1] == "__init__"
        if is_init:
            parts.pop()
        module = ".".join(parts)
        package = module if is_init else module.rpartition(".")[0]
        top_level = len(parts) == 2 and not is_init
        for node in _imports(ast.parse(path.read_text(), str(path))):
            for target in _targets(node, package):
                if target != "vertexflow" and not target.startswith("vertexflow."):
                    continue
                a, b = _node(module), _node(target)
                if a == b:
                    continue
                b_top_level = b != "vertexflow" and (root / f"{b.split('.')[1]}.py").is_file()
                if top_level and b_top_level:
                    continue  # two modules of the package vertexflow itself
                edges[(a, b)].append((module, target, node.lineno))
    return edges


def cycles(edges: dict[tuple[str, str], list[Site]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def describe(component: list[str], edges: dict[tuple[str, str], list[Site]]) -> str:
    lines = [" <-> ".join(component)]
    for (a, b), sites in sorted(edges.items()):
        if a in component and b in component:
            lines += [f"  {a} -> {b}: {module} line {line} imports {target}" for module, target, line in sites]
    return "\n".join(lines)


def test_the_graph_sees_the_imports() -> None:
    edges = import_graph()
    assert ("vertexflow.middleware", "vertexflow.transforms") in edges  # wrap puts the stages in
    assert ("vertexflow.ops", "vertexflow.errors") in edges


def test_no_import_cycle_between_subpackages() -> None:
    edges = import_graph()
    found = cycles(edges)
    assert not found, "import cycles between packages:\n" + "\n".join(describe(c, edges) for c in found)


def test_transforms_hold_codecs_only() -> None:
    """The stages as codecs; the decorator that applies them is middleware's."""
    edges = import_graph()
    assert ("vertexflow.transforms", "vertexflow.middleware") not in edges
