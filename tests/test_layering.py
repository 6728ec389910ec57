"""Imports inside robustbench_mm point down: the stage layers hold, and no module imports itself back.

The layers are declared once, as an import-linter contract in pyproject.toml (`make test` runs
`lint-imports` too); the tests here run it and show it catches a planted upward import. The
cycle check below also covers imports inside one layer, which the layers contract does not.

Read from the source with `ast`, so imports inside functions and under TYPE_CHECKING count too:
a cycle hidden in a function still ties the modules together (and breaks on a refactor).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import robustbench_mm

PACKAGE = Path(robustbench_mm.__file__).parent
REPO = PACKAGE.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"



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


def test_the_graph_sees_imports_inside_functions_and_type_checking():
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .build import Group\n"
              "def f():\n    from . import figures\n    from robustbench_mm.report.records import load_records\n")
    known = {"robustbench_mm.report.build", "robustbench_mm.report.figures", "robustbench_mm.report.records"}
    assert imported_modules(source, "robustbench_mm.report.x", False, known) == known
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_the_declared_layers_hold():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    shutil.copytree(PACKAGE, tmp_path / "robustbench_mm", ignore=shutil.ignore_patterns("__pycache__"))
    storage = tmp_path / "robustbench_mm" / "common" / "storage.py"
    storage.write_text(storage.read_text() + "\nfrom robustbench_mm.report.build import write_report  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1
    assert "robustbench_mm.common is not allowed to import robustbench_mm.report" in result.stdout
