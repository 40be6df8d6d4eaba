"""The structure the code base keeps: import floors and no circles (the
import-linter contracts in `.importlinter`), every script under the
contract, short modules and functions, no private name used across modules.
"""

import ast
import configparser
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("tasks", "compat", "models", "weights", "data")
# Longest module per folder, and longest function anywhere outside tests.
MAX_LINES = {"tasks": 500, "models": 600}
MAX_FUNCTION_LINES = 80


def library_files():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_import_contracts_hold():
    lint = shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e .[test])")
    result = subprocess.run(
        [lint, "--config", str(ROOT / ".importlinter")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:]


def test_every_script_is_under_the_scripts_contract():
    """A new tasks/NAME.py must join the contract that keeps tasks/lib
    from importing scripts."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    top = config["importlinter:contract:scripts"]["layers"].split("\n")
    listed = {name.strip() for name in top[1].split("|")}
    scripts = {
        path.stem
        for path in (ROOT / "tasks").glob("*.py")
        if path.stem != "__init__"
    }
    assert scripts == listed


@pytest.mark.parametrize("folder, limit", sorted(MAX_LINES.items()))
def test_modules_are_short(folder, limit):
    long = {
        str(path.relative_to(ROOT)): count
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > limit
    }
    assert not long, f"over {limit} lines: {long}"


def test_functions_are_short():
    long = []
    for path in library_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    long.append(f"{where} {node.name} ({length} lines)")
    assert not long, long


def test_no_private_name_is_imported_across_modules():
    found = []
    for path in library_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                private = [
                    alias.name
                    for alias in node.names
                    if alias.name.startswith("_")
                    and not alias.name.startswith("__")
                ]
                if private:
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    found.append(f"{where} {node.module} {private}")
    assert not found, found
