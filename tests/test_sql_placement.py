"""Every SQL statement lives in a repository module of shared/storage: the stores
(``*_store.py``), the change feed, the engine (connection settings, database admin) and
the table definitions. Anywhere else in the source packages, a string that reads as SQL,
or a query built with SQLAlchemy's statement constructors, fails this test."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("server", "shared", "worker", "tui", "recserve", "bench")
STORAGE = ROOT / "shared" / "storage"
SQL = re.compile(
    r"^\s*(SELECT\s|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TEMPORARY\s+)?"
    r"(TABLE|DATABASE|INDEX)|DROP\s+(TABLE|DATABASE|INDEX)|ALTER\s+TABLE|PRAGMA\s|LISTEN\s"
    r"|NOTIFY\s|COPY\s|SHOW\s|TRUNCATE\s|VACUUM\b)"
)
CONSTRUCTORS = {"select", "insert", "update", "delete", "text", "func", "tuple_", "union"}


def allowed(path: Path) -> bool:
    if path.parent == STORAGE:
        return path.name.endswith("_store.py") or path.name in {
            "change_feed.py",
            "engine.py",
            "tables.py",
        }
    return STORAGE / "migrations" in path.parents


def offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if SQL.match(node.value):
                found.append(f"line {node.lineno}: SQL text {node.value[:40]!r}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.partition(".")[0] in {"sqlalchemy", "sqlmodel"}:
                names = {alias.name for alias in node.names} & CONSTRUCTORS
                if names:
                    found.append(f"line {node.lineno}: imports {sorted(names)}")
        elif isinstance(node, ast.Attribute) and node.attr == "__table__":
            found.append(f"line {node.lineno}: uses a table object directly")
    return found


def source_files() -> list[Path]:
    files = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "proto" not in path.relative_to(ROOT).parts and not allowed(path):
                files.append(path)
    return files


def test_sql_lives_only_in_the_repositories() -> None:
    report = {
        str(path.relative_to(ROOT)): found for path in source_files() if (found := offences(path))
    }
    assert not report, f"SQL outside shared/storage's repositories: {report}"


def test_the_check_sees_sql() -> None:
    """The patterns catch what they are meant to catch (so the test above can fail)."""
    probe = ast.parse(
        'from sqlmodel import select\nq = "SELECT id FROM t"\nImpression.__table__.insert()\n'
    )
    kinds = [type(n).__name__ for n in ast.walk(probe)]
    assert "ImportFrom" in kinds
    assert SQL.match("SELECT id FROM feedback_event")
    assert SQL.match("CREATE TEMPORARY TABLE x (a int)")
    assert not SQL.match("Select the newest events")  # prose is not SQL
    assert STORAGE / "event_store.py" and allowed(STORAGE / "event_store.py")
    assert not allowed(ROOT / "server" / "invalidation.py")
