"""The package's import graph has no cycle, and no module imports the command line.

The graph is read statically (`ast`) from every module under learngene_jax/. An edge is `import learngene_jax.x` or
`from learngene_jax[.x] import y` (to learngene_jax.x.y when that is a module, else to learngene_jax.x), wherever it
stands: at module level, inside a function (a deferred import hides a cycle from the interpreter, not from the
reader), or under `if __name__ == "__main__":`. Two graphs are checked: the module-level imports alone (a cycle there
breaks `import`), then every import. Not edges: the implicit import of a parent package before its submodule
(every package would otherwise be in a cycle with its own submodules), imports by name string (the registries'
`importlib` of method packages, the `learngene` command's dispatch), and `if TYPE_CHECKING:` blocks (never run).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from conftest import REPO

PACKAGE = "learngene_jax"


@dataclass(frozen=True)
class Edge:
    """`source` imports `target` at `where` (path:line); `deferred` when inside a function or a `__main__` guard."""

    source: str
    target: str
    where: str
    deferred: bool


def module_names() -> dict[str, Path]:
    """Dotted module name → file, for every module of the package."""
    out = {}
    for path in sorted((REPO / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _guard(test: ast.expr) -> str | None:
    """'main' for `if __name__ == "__main__"`, 'typing' for `if TYPE_CHECKING`, else None."""
    if isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__":
        return "main"
    if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
        return "typing"
    return None


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Edge]:
    """The package-internal imports of one module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges: list[Edge] = []

    def add(target: str, node: ast.stmt, deferred: bool) -> None:
        if target.split(".")[0] == PACKAGE and target != name:
            edges.append(Edge(name, target, f"{path.relative_to(REPO)}:{node.lineno}", deferred))

    def visit(node: ast.AST, deferred: bool) -> None:
        if isinstance(node, ast.If) and (guard := _guard(node.test)) is not None:
            if guard == "main":
                for child in node.body:
                    visit(child, True)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, deferred)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], *filter(None, [base])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                add(full if full in modules else base, node, deferred)
        inner = deferred or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), False)
    return edges


def all_edges() -> list[Edge]:
    """Every package-internal import of the package."""
    modules = module_names()
    return [e for name, path in modules.items() for e in imports_of(name, path, modules)]


def cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
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


def describe(found: list[list[str]], edges: list[Edge]) -> str:
    """Each cycle with the import lines that close it."""
    lines = []
    for component in found:
        members = set(component)
        lines.append(f"cycle of {len(component)} modules:")
        lines += sorted({f"  {e.source} -> {e.target}  ({e.where}{', deferred' if e.deferred else ''})"
                         for e in edges if e.source in members and e.target in members})
    return "\n".join(lines)


def test_the_graph_is_read():
    edges = all_edges()
    pairs = {(e.source, e.target) for e in edges}
    assert ("learngene_jax.train", "learngene_jax.checkpointing") in pairs  # `from learngene_jax import a, b`
    assert ("learngene_jax.data.text", "learngene_jax.data.tokenize") in pairs  # `from learngene_jax.x import name`
    assert any(e.deferred for e in edges) and len(edges) > 200


def test_module_level_imports_have_no_cycle():
    edges = [e for e in all_edges() if not e.deferred]
    assert not (found := cycles(edges)), describe(found, edges)


def test_no_import_closes_a_cycle_even_inside_a_function():
    edges = all_edges()
    assert not (found := cycles(edges)), describe(found, edges)


def test_no_module_imports_the_command_line():
    # cli.py is the top floor: it imports the entry points and dispatches to them, never the other way round.
    importers = {e.where for e in all_edges() if e.target == f"{PACKAGE}.cli" and e.source != f"{PACKAGE}.__main__"}
    assert not importers, sorted(importers)
