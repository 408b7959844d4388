"""Loads the hand-written SQL in sql/: named queries (`-- name: x`), numbered migrations (tables,
indexes) and repeatable ones (sql/functions/*.sql: stored functions, re-applied when changed)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_NAME = re.compile(r"^--\s*name:\s*([a-z0-9-]+)\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    text: str


def parse_named_queries(text: str) -> dict[str, str]:
    """Split a .sql file into {name: statement}; each statement runs up to the next name."""
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.strip().splitlines() if not line.lstrip().startswith("--")]
        statement = "\n".join(lines).strip().rstrip(";").strip()
        if not statement:
            raise ValueError(f"named query {name!r} is empty")
        if name in queries:
            raise ValueError(f"named query {name!r} appears twice")
        queries[name] = statement
    return queries


@cache
def queries() -> dict[str, str]:
    return parse_named_queries((SQL_DIR / "queries.sql").read_text(encoding="utf-8"))


@dataclass(frozen=True, slots=True)
class Repeatable:
    name: str
    text: str


def repeatables(directory: Path = SQL_DIR / "functions") -> list[Repeatable]:
    """The repeatable migrations in name order: each file replaces its functions as a whole."""
    found: list[Repeatable] = []
    for path in sorted(directory.glob("*.sql")):
        if re.fullmatch(r"[a-z0-9_]+\.sql", path.name) is None:
            raise ValueError(f"function file {path.name!r} is not named name.sql")
        found.append(Repeatable(path.stem, path.read_text(encoding="utf-8")))
    return found


def migrations(directory: Path = SQL_DIR / "migrations") -> list[Migration]:
    """The migrations in version order; file names are NNN_name.sql with unique numbers."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = re.fullmatch(r"(\d+)_([a-z0-9_]+)\.sql", path.name)
        if match is None:
            raise ValueError(f"migration file {path.name!r} is not named NNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration numbers in {directory}")
    return found
