"""The SQL folder: named queries parse, migrations are numbered and unique."""

from __future__ import annotations

import pytest

from service.sql import migrations, parse_named_queries, queries


def test_every_named_query_the_service_uses_exists() -> None:
    names = set(queries())
    assert {
        "list-goods",
        "invest-batch",
        "my-investments-many",
        "ready",
    } <= names
    assert all(";" not in sql.rstrip().rstrip(";")[-1:] for sql in queries().values())


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
