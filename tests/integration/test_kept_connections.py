"""The gateway keeps the connection of an answered call for the next call (service/db.py): for
KEEP_SECONDS after its answer, never one that a failed call leaves in doubt, and never while
other calls wait for the pool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from service.db import KEEP_SECONDS, Database, StatementRefused
from service.settings import Settings
from tests.support import psql, service_url

BACKEND = "SELECT pg_backend_pid()"


async def backend_of(database: Database) -> int:
    """The server process behind the connection the next call would take (kept or pooled),
    which is kept again afterwards."""
    conn = database._kept_connection(time.perf_counter()) or await database.pool.connection()
    try:
        [(pid,)] = (await conn.execute(BACKEND)).result(as_tuple=True)
        return int(pid)
    finally:
        database._kept.append((conn, time.perf_counter()))


def run(url: str, scenario: Callable[[Database], Awaitable[None]]) -> None:
    async def main() -> None:
        database = Database(Settings(database_url=service_url(url)), 4)
        try:
            await scenario(database)
        finally:
            database.close()

    asyncio.run(main())


def test_calls_one_after_another_share_one_kept_connection(database_url: str) -> None:
    async def scenario(database: Database) -> None:
        for _ in range(20):
            assert await database.rows("ready") == [(1,)]
        assert len(database._kept) == 1
        pid = await backend_of(database)
        for _ in range(5):
            await database.rows("ready", writes=True)
            assert await backend_of(database) == pid
        pooled = database.pool.status()
        counted = database.status()
        assert pooled.available == 0  # checked out of psqlpy's pool...
        assert counted.available == 1  # ...and free for a call, as the gauges say
        assert counted.size == pooled.size == 1

    run(database_url, scenario)


def test_more_calls_than_connections_are_all_answered_in_time(database_url: str) -> None:
    """Calls waiting for the exhausted pool get the connections that answered calls give back
    (a kept one would leave them waiting until DB_ACQUIRE_TIMEOUT); afterwards the connections
    are kept, never more than the pool's bound."""

    async def scenario(database: Database) -> None:
        database._queries["slow"] = "SELECT 1 FROM pg_sleep(0.2)"
        started = asyncio.get_running_loop().time()
        answers = await asyncio.gather(
            *(database.rows("slow") for _ in range(4)),
            *(database.rows("ready") for _ in range(12)),
        )
        assert answers == [[(1,)]] * 16
        assert asyncio.get_running_loop().time() - started < 2  # none waited out DB_ACQUIRE_TIMEOUT
        assert 1 <= len(database._kept) <= 4
        assert database.pool.status().available == 4 - len(database._kept)

    run(database_url, scenario)


def test_a_kept_connection_the_server_closed_is_not_used(database_url: str) -> None:
    """A writing call after the server ended the kept connection's session (a restart, a
    failover, an idle timeout) runs on a new connection from the pool, which checks it: not an
    unknown outcome. psqlpy cannot tell a closed connection, so a kept one serves only within
    KEEP_SECONDS of its last answer."""

    async def scenario(database: Database) -> None:
        await database.rows("ready")
        pid = await backend_of(database)
        psql(database_url, f"SELECT pg_terminate_backend({pid})")
        await asyncio.sleep(KEEP_SECONDS + 0.2)
        assert len(database._kept) == 1  # still kept, and no longer used
        assert await database.rows("ready", writes=True) == [(1,)]
        assert await backend_of(database) != pid

    run(database_url, scenario)


def test_a_failed_call_gives_its_connection_back_to_the_pool(database_url: str) -> None:
    async def scenario(database: Database) -> None:
        await database.rows("ready")
        assert len(database._kept) == 1
        now = datetime.now(UTC)
        refused = ["refused", -1, True, now, now, None, None, None, None]
        with pytest.raises(StatementRefused):  # a CHECK constraint: rolled back
            await database.rows("admin-goods-create", refused, writes=True)
        assert database._kept == []
        assert database.pool.status().available == 1
        assert await database.rows("ready") == [(1,)]

    run(database_url, scenario)
