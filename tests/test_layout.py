"""The package's layering: networks and modules know nothing of the config, and the paper's
mathematics depends on nothing but torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lit_ebm"
MODELS = [*sorted((PACKAGE / "generators").glob("*.py")), *sorted((PACKAGE / "modules").glob(
    "*.py")), PACKAGE / "energy.py", PACKAGE / "registry.py", PACKAGE / "objectives.py",
    PACKAGE / "generator_objectives.py"]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, by its dotted name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", MODELS, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_models_do_not_import_the_config(path: Path) -> None:
    config = {name for name in imported_modules(path) if name.startswith("lit_ebm.config")}
    assert not config, f"{path.name} imports {config}: take plain arguments instead"


@pytest.mark.parametrize("name", ["objectives.py", "generator_objectives.py"])
def test_objectives_hold_only_mathematics(name: str) -> None:
    imported = imported_modules(PACKAGE / name)
    allowed = {"__future__", "math", "torch", "torch.nn.functional", "lit_ebm.objectives"}
    assert imported <= allowed, imported


MAX_FILE_LINES, MAX_FUNCTION_LINES = 300, 50


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_and_functions_stay_small(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_FILE_LINES, f"split {path.name} by idea"
    functions = [node for node in ast.walk(ast.parse(text))
                 if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    long = [f"{f.name} ({f.end_lineno - f.lineno + 1} lines)" for f in functions
            if f.end_lineno is not None and f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: {long}"


def test_what_a_run_trains_is_named_without_torch() -> None:
    assert imported_modules(PACKAGE / "objective_names.py") == set()
