"""The database gateway: a psqlpy pool per worker, a bounded acquire, named prepared statements."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from psqlpy import Connection, ConnectionPool, QueryResult
from psqlpy.exceptions import Error as PsqlpyError

from service.settings import Settings
from service.sql import queries

log = logging.getLogger("service.db")


class DatabaseUnavailable(Exception):
    """No connection within the acquire timeout, or the database failed the statement: nothing
    was done, so the request may be retried as it is."""


class OutcomeUnknown(Exception):
    """A writing statement was sent, then its answer was lost (the connection broke, or the
    call timed out while it ran): it may or may not have been committed."""


# A statement the server refused with an ERROR was rolled back (each runs in its own transaction);
# any other failure after sending (FATAL, a closed socket, a timeout) leaves the outcome unknown.
_SERVER_ERROR = "db error: ERROR:"


def connection_options(settings: Settings) -> str:
    """Session settings every connection starts with: the display zone, a statement bound,
    commits that return only once their WAL is flushed (an acknowledged investment survives a
    crash, whatever the server's or the role's default; service/durability.py checks the rest),
    and generic plans: the statements' plans do not depend on their parameters, and planning
    them anew for each call (PostgreSQL's default for the first calls and whenever a custom plan
    looks cheaper) cost more CPU than running them (invest_many at 1 request per call: 1,273 µs
    of PostgreSQL CPU with custom plans, 543 µs generic)."""
    statement_ms = max(1, int(settings.db_statement_timeout * 1000))
    return (
        f"-c TimeZone={settings.timezone} -c statement_timeout={statement_ms}"
        " -c synchronous_commit=on -c plan_cache_mode=force_generic_plan"
    )


def open_pool(settings: Settings, size: int, url: str | None = None) -> ConnectionPool:
    """A pool on `url` (default DATABASE_URL)."""
    dsn = url or settings.database_url
    if dsn is None:
        raise ValueError("DATABASE_URL is not set")
    return ConnectionPool(
        dsn=dsn,
        max_db_pool_size=size,
        options=connection_options(settings),
        application_name="investment-service",
        connect_timeout_sec=max(1, int(settings.db_acquire_timeout + 0.999)),
        tcp_user_timeout_sec=max(1, int(settings.db_statement_timeout + 1)),
    )


class Database:
    """Runs the named statements of sql/queries.sql; every failure becomes DatabaseUnavailable."""

    def __init__(self, settings: Settings, pool_size: int, url: str | None = None) -> None:
        self.pool = open_pool(settings, pool_size, url)
        self._queries = queries()
        self._acquire_timeout = settings.db_acquire_timeout
        self._prepared = settings.db_prepared_statements
        # A backstop for a database that stops answering altogether; statement_timeout (server
        # side) normally ends a slow statement first.
        self._call_timeout = settings.db_statement_timeout + 1.0

    async def rows(
        self, name: str, params: list[Any] | None = None, *, writes: bool = False
    ) -> list[tuple[Any, ...]]:
        """The statement's rows. With `writes`, a failure after sending raises OutcomeUnknown."""
        # asyncio.timeout, not wait_for: no extra Task per call (a profiled hot spot).
        try:
            async with asyncio.timeout(self._acquire_timeout):
                conn = await self.pool.connection()
        except TimeoutError:
            raise DatabaseUnavailable(
                f"no database connection within {self._acquire_timeout:g}s"
            ) from None
        except PsqlpyError as error:
            log.warning("database connection failed: %s", error)
            raise DatabaseUnavailable("database connection failed") from error
        query = self._queries[name]
        try:
            async with asyncio.timeout(self._call_timeout):
                if self._prepared:
                    result = await conn.execute(query, params, prepared=True)
                else:
                    result = await self._unprepared(conn, query, params)
        except TimeoutError:
            if writes:
                raise OutcomeUnknown(f"database did not answer {name}") from None
            raise DatabaseUnavailable(f"database did not answer {name}") from None
        except PsqlpyError as error:
            log.warning("statement %s failed: %s", name, error)
            if writes and _SERVER_ERROR not in str(error):
                raise OutcomeUnknown(f"the answer to {name} was lost") from error
            raise DatabaseUnavailable(f"statement {name} failed") from error
        finally:
            conn.close()
        return result.result(as_tuple=True)

    @staticmethod
    async def _unprepared(conn: Connection, query: str, params: list[Any] | None) -> QueryResult:
        # DB_PREPARED_STATEMENTS=false, for PgBouncer's transaction pooling before 1.21. psqlpy
        # still parses a named statement (for the parameter types), drops it and runs the query
        # unnamed: three exchanges that must reach the same server connection, so they share
        # one explicit transaction.
        async with conn.transaction() as transaction:
            return await transaction.execute(query, params, prepared=False)

    def close(self) -> None:
        self.pool.close()
