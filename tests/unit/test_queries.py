"""The database seam: PostgreSQL's Database and every fake in tests/fakes.py are `Queries`, with
the protocol's very signature for `rows` (mypy checks the types in `just check`; this checks
what a test run can see: the methods, their parameters and defaults)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from service.db import Database, Queries
from tests.fakes import FAKES


def parameters(method: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]


@pytest.mark.parametrize("implementation", [Database, *FAKES], ids=lambda kind: kind.__name__)
def test_every_database_is_queries_with_its_rows_signature(implementation: Any) -> None:
    assert issubclass(implementation, Queries)
    assert inspect.iscoroutinefunction(implementation.rows)
    assert parameters(implementation.rows) == parameters(Queries.rows)
    assert parameters(implementation.close) == parameters(Queries.close)


def test_a_database_without_close_is_not_queries() -> None:
    class RowsOnly:
        async def rows(
            self, name: str, params: list[Any] | None = None, *, writes: bool = False
        ) -> list[tuple[Any, ...]]:
            return []

    assert not isinstance(RowsOnly(), Queries)
    assert all(isinstance(make(), Queries) for make in FAKES)
