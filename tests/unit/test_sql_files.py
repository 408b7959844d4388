"""The SQL folder: named queries parse, migrations are numbered and unique."""

from __future__ import annotations

import re

import pytest

from service.sql import migrations, parse_named_queries, queries


def test_every_named_query_the_service_uses_exists() -> None:
    names = set(queries())
    assert {
        "list-goods",
        "list-goods-standby",
        "invest-batch",
        "my-investments-many",
        "ready",
    } <= names


def statements(sql: str) -> int:
    """How many statements `sql` holds: its `;` separators outside quotes and comments, plus one.

    A prepared statement is one command, so every named query must count exactly one."""
    code = re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", " ", sql, flags=re.S)
    return 1 + code.rstrip().rstrip(";").count(";")


def test_every_named_query_is_one_statement() -> None:
    counts = {name: statements(sql) for name, sql in queries().items()}
    assert counts == dict.fromkeys(queries(), 1)


@pytest.mark.parametrize(
    ("sql", "count"),
    [
        ("SELECT 1", 1),
        ("SELECT 1;", 1),
        ("SELECT ';' AS \"a;b\" -- c; d\n/* e; f */", 1),
        ("SELECT 'it''s; fine'", 1),
        ("SELECT 1; SELECT 2", 2),
        ("SELECT 1;\nDELETE FROM t;", 2),
        ("SELECT 'x'; SELECT 2 -- y", 2),
    ],
)
def test_statements_counts_only_real_separators(sql: str, count: int) -> None:
    assert statements(sql) == count


def test_a_named_query_of_two_statements_is_caught() -> None:
    parsed = parse_named_queries("-- name: a\nSELECT 1;\n-- name: b\nSELECT 2; SELECT 3;")
    assert statements(parsed["a"]) == 1
    assert statements(parsed["b"]) == 2


def test_named_query_parser_splits_and_strips_comments() -> None:
    parsed = parse_named_queries(
        "-- header\n-- name: a\n-- why\nSELECT 1;\n\n-- name: b-c\nSELECT 2\n;"
    )
    assert parsed == {"a": "SELECT 1", "b-c": "SELECT 2"}
    with pytest.raises(ValueError):
        parse_named_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")


def test_migrations_are_numbered_in_order() -> None:
    versions = [m.version for m in migrations()]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert versions[0] == 1
