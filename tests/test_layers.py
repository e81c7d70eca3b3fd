"""The package layering of docs/architecture.md holds: imports run one way, modules stay small.

Command-line files (`cli.py`, `__main__.py`) are the composition root and may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Lowest first: a package may import only packages before it in this list.
LAYERS = ["recsys", "ingest", "features", "training", "serving", "flows", "bench"]
MAX_LINES = 500


def _modules() -> list[Path]:
    return sorted(p for layer in LAYERS for p in (REPO / layer).rglob("*.py"))


def _is_cli(path: Path) -> bool:
    return path.name in ("cli.py", "__main__.py")


def _project_imports(tree: ast.AST) -> list[tuple[int, str, bool]]:
    """(line, top-level package, inside a function) of every import of a project package."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            for name in names:
                top = name.split(".")[0]
                if top in LAYERS:
                    found.append((child.lineno, top, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def test_every_layer_is_a_package() -> None:
    assert all((REPO / layer / "__init__.py").is_file() for layer in LAYERS)
    assert not (REPO / "infra" / "__init__.py").exists(), "infra/ holds deployment files only"


@pytest.mark.parametrize("path", [p for p in _modules() if not _is_cli(p)],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_imports_run_one_way_and_not_inside_functions(path: Path) -> None:
    own = path.relative_to(REPO).parts[0]
    allowed = set(LAYERS[:LAYERS.index(own) + 1])
    problems = []
    for line, top, in_function in _project_imports(ast.parse(path.read_text())):
        if top not in allowed:
            problems.append(f"line {line}: {own} imports {top}, a layer above it")
        elif in_function:
            problems.append(f"line {line}: import of {top} hidden inside a function")
    assert not problems, problems


def test_no_production_module_over_the_limit() -> None:
    long = {str(p.relative_to(REPO)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
