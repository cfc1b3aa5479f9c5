"""The house stays walkable: no import circle among the platform's modules, and the libraries that steps call
(explain/, guard/, learn/) and the shared bottom (core/) never reach back up into steps/. Imports inside functions
count too: a lazy import still ties the knot."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "plugins"
LIBRARIES = ("lm_insights.explain", "lm_insights.guard", "lm_insights.learn")
# What the bottom may use: itself, the spec model and the database helpers.
CORE_MAY_IMPORT = ("lm_insights.core", "lm_insights.spec", "lm_insights.runtime.db")


def modules() -> dict[str, Path]:
    found = {}
    for path in (PACKAGE_ROOT / "lm_insights").rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """The platform modules ``path`` imports, at any depth of the file (``from a.b import c`` names ``a.b.c`` when
    that is a module, else ``a.b``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a circle of imports."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_the_imports_it_judges():
    graph = import_graph()
    assert "lm_insights.core.partition" in graph["lm_insights.steps.extract"]
    assert "lm_insights.guard.gates" in graph["lm_insights.steps.load"]  # a lazy or top-level import alike
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_explain_guard_and_learn_never_import_steps():
    upward = [f"{name} -> {target}" for name, targets in sorted(import_graph().items())
              if name.startswith(LIBRARIES) for target in sorted(targets) if target.startswith("lm_insights.steps")]
    assert not upward, "move what they need into lm_insights/core/:\n" + "\n".join(upward)


def test_core_imports_only_the_bottom():
    upward = [f"{name} -> {target}" for name, targets in sorted(import_graph().items())
              if name.startswith("lm_insights.core") for target in sorted(targets)
              if not target.startswith(CORE_MAY_IMPORT)]
    assert not upward, "\n".join(upward)
