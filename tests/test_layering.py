"""Imports inside robustbench_mm point down: no module imports one that (directly or not) imports it.

Read from the source with `ast`, so imports inside functions and under TYPE_CHECKING count too:
a cycle hidden in a function still ties the modules together (and breaks on a refactor).
"""

from __future__ import annotations

import ast
from pathlib import Path

import robustbench_mm

PACKAGE = Path(robustbench_mm.__file__).parent
# The report's modules from the bottom up: each may import only the ones before it.
REPORT_LAYERS = ("orderings", "robustness_table", "report_data", "report_sections", "plots", "calibration_figure",
                 "epoch_curves", "supervised_tables", "paper_eval_report", "reporting")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The package's modules `source` imports anywhere in it (top level, functions, TYPE_CHECKING)."""
    here = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[:len(here.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from . import plots` imports the module plots; `from .plots import save_png` the module plots.
            found |= {f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found & known


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(paths)
    # `from robustbench_mm import __version__` reaches the package's __init__, which imports nothing eagerly.
    return {name: imported_modules(path.read_text(), name, path.name == "__init__.py", known) - {"robustbench_mm"}
            for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_no_import_cycles_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_report_modules_import_only_the_layers_below_them():
    graph = import_graph()
    for index, name in enumerate(REPORT_LAYERS):
        above = {f"robustbench_mm.{m}" for m in REPORT_LAYERS[index + 1:]}
        assert not graph[f"robustbench_mm.{name}"] & above, f"{name} imports a module above it"


def test_the_graph_sees_imports_inside_functions_and_type_checking():
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .reporting import Group\n"
              "def f():\n    from . import plots\n    from .report_data import load_records\n")
    known = {"robustbench_mm.reporting", "robustbench_mm.plots", "robustbench_mm.report_data"}
    assert imported_modules(source, "robustbench_mm.x", False, known) == known
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
