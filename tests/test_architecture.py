"""The package boundaries hold: the import contracts of pyproject.toml, app.py's imports, and SQL only in annotations/.

ui sits on annotations, which sits on core; training/ is imported only by bench/ and tests/; only the store
(annotations/) talks SQL. `lint-imports pyproject.toml` prints the same report as the first test.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# An .execute( call, or a statement's opening keywords in a string literal.
SQL = re.compile(r"\.execute(many|script)?\(|\b(SELECT\s+[\w*(]|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET"
                 r"|DELETE\s+FROM|CREATE\s+(TABLE|INDEX|VIEW|TRIGGER)|DROP\s+(TABLE|INDEX|VIEW))\b")


def test_the_import_contracts_hold():
    pytest.importorskip("importlinter")
    # One contract per line of pyproject.toml's [tool.importlinter]; --no-cache keeps the tree clean.
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; "
                               "sys.exit(c(prog_name='lint-imports'))",
         "pyproject.toml", "--no-cache", "--no-logo"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"broken import contracts:\n{result.stdout}{result.stderr}"
    assert "0 broken" in result.stdout, result.stdout


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (function-level imports too), as dotted names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names.add(str(node.args[0].value))
    return names


def test_app_py_does_not_import_training():
    # app.py is a script, not a package, so import-linter does not see it.
    imported = imported_modules(REPO / "app.py")
    assert imported, "app.py imports nothing?"
    assert not {name for name in imported if name == "training" or name.startswith("training.")}


def sql_lines(path: Path) -> list[str]:
    """The lines of a Python file that run or spell out SQL (comments and docstrings included: SQL in a
    docstring is a sign the code near it talks to the database)."""
    return [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if SQL.search(line)]


def test_the_sql_pattern_finds_sql_and_not_prose():
    assert SQL.search('db.execute("SELECT id FROM frames WHERE video_id = ?", [v])')
    assert SQL.search('conn.executescript(SCHEMA)') and SQL.search('"INSERT OR IGNORE INTO labelers"')
    assert SQL.search("UPDATE frames SET revision = revision + 1")
    assert not SQL.search("# select the frames to show; insert into the queue later")
    assert not SQL.search("Select a model version, then update the settings")


def test_only_the_store_holds_sql():
    # annotations/ is the store; bench/ times it and tests/ check what it wrote, so both may query it too.
    files = [REPO / "app.py"] + sorted(p for top in ("core", "ui", "training") for p in (REPO / top).rglob("*.py"))
    found = [line for path in files for line in sql_lines(path)]
    assert not found, "SQL outside annotations/ (the store's functions are the way in):\n" + "\n".join(found)
