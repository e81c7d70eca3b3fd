"""bench/ is a development tool: run as modules, public functions only, no import tricks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bench.__main__ import COMMANDS, main

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / "bench"
PROJECT_PACKAGES = ("recsys", "ingest", "features", "training", "serving", "flows")
MODULES = sorted(p for p in BENCH_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def test_no_bench_module_edits_sys_path() -> None:
    offenders = [_module_name(p) for p in MODULES if "sys.path" in p.read_text()]
    assert offenders == []


def test_no_bench_module_is_named_like_a_project_package() -> None:
    # Run as a script, such a file would shadow the real package of the same name.
    assert [p.name for p in MODULES if p.stem in PROJECT_PACKAGES] == []


def _private_uses(path: Path) -> list[str]:
    """Names starting with `_` that `path` takes from the project's packages."""
    tree = ast.parse(path.read_text())
    project_aliases: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] in PROJECT_PACKAGES:
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{node.module}.{alias.name}")
                project_aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PROJECT_PACKAGES:
                    project_aliases.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__") and isinstance(node.value, ast.Name) \
                and node.value.id in project_aliases:
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_bench_uses_public_functions_only() -> None:
    uses = {_module_name(p): _private_uses(p) for p in MODULES}
    assert {name: names for name, names in uses.items() if names} == {}


def test_no_project_package_imports_bench() -> None:
    importers = []
    for package in PROJECT_PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                         else [])
                if any(n.split(".")[0] == "bench" for n in names):
                    importers.append(str(path.relative_to(REPO)))
    assert importers == []


# runpy warns when a command's module was imported before (here, by the other tests).
@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
def test_every_command_is_a_module_with_its_own_help(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    listing = capsys.readouterr().out
    assert all(command in listing for command in COMMANDS)
    for command, (module, _) in COMMANDS.items():
        assert (REPO / Path(*module.split("."))).with_suffix(".py").is_file()
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0, command
        assert f"python -m bench {command}" in capsys.readouterr().out


def test_an_unknown_command_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["nonsense"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
