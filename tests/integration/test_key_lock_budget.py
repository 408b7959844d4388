"""The lock table and Idempotency-Keys: the keys per invest call that key_locks_per_call() allows
fit in every session at once, and today's bound (INVEST_BATCH_MAX keys per call) does not."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from psqlpy import ConnectionPool, Transaction
from psqlpy.exceptions import Error as PsqlpyError

from service.db import INVEST_MANY_OWN_LOCKS, Database, key_locks_per_call
from service.ops.embedded import EmbeddedPostgres
from service.settings import Settings
from tests.support import (
    ROOT,
    create_goods,
    free_port,
    fresh_user,
    migrated_database,
    psql,
    service_url,
    this_database_locks,
    verify_ledger,
)

OUT_OF_LOCKS = "out of shared memory"


def budget(url: str) -> int:
    """key_locks_per_call() as the service computes it, through its own role and pool."""

    async def read() -> int:
        database = Database(Settings(database_url=service_url(url)), 2)
        try:
            return await key_locks_per_call(database)
        finally:
            database.close()

    return asyncio.run(read())


def sessions_to_open(url: str) -> int:
    """As many sessions as one instance's pool opens (DB_POOL_SIZE), or as the server has free
    with 10 to spare for everyone else, whichever is smaller."""
    free = int(
        psql(
            url,
            "SELECT current_setting('max_connections')::integer"
            " - current_setting('superuser_reserved_connections')::integer"
            " - (SELECT count(*) FROM pg_stat_activity)",
        )
    )
    sessions = min(Settings().db_pool_size, free - 10)
    assert sessions >= 10, f"the server has only {free} free connections"
    return sessions


def products(url: str, count: int) -> list[int]:
    """`count` recruiting products: one per session, so that no call waits for another's row."""
    out = psql(
        url,
        "INSERT INTO investment_goods"
        " (title, total_investing_amount, status, started_at, finished_at)"
        f" SELECT '잠금 ' || n, 1000000000, true, now() - interval '1 day', now() + interval '1 day'"
        f" FROM generate_series(1, {count}) n RETURNING goods_id",
    )
    return [int(line) for line in out.splitlines()]


def held_keys(url: str) -> int:
    """Advisory locks granted right now to the sessions of this database."""
    return this_database_locks(url, "l.locktype = 'advisory' AND l.granted")


async def _calls_at_once(
    url: str, goods_ids: list[int], keys_per_call: int, *, commit: bool
) -> tuple[list[str | None], int]:
    """One session per product, each in an open transaction that has called invest_many() with
    `keys_per_call` keyed requests for its product; once every call has answered (so every
    session holds its keys at the same time), count the keys held, then commit or roll back.
    Returns each call's error (None: it succeeded) and the keys held."""
    pool = ConnectionPool(dsn=url, max_db_pool_size=len(goods_ids))
    connections = [await pool.connection() for _ in goods_ids]
    transactions = [connection.transaction() for connection in connections]

    async def call(transaction: Transaction, goods_id: int) -> str | None:
        users = [fresh_user() for _ in range(keys_per_call)]
        try:
            await transaction.begin()
            rows = await transaction.execute(
                "SELECT outcome FROM invest_many($1, $2, $3, $4)",
                [[goods_id] * keys_per_call, users, [1] * keys_per_call,
                 [f"lock-{n}" for n in range(keys_per_call)]],
            )  # fmt: skip
        except PsqlpyError as error:
            return str(error)
        outcomes = [row["outcome"] for row in rows.result()]
        assert outcomes == ["done"] * keys_per_call
        return None

    try:
        errors = await asyncio.gather(*map(call, transactions, goods_ids))
        held = held_keys(url)
    finally:
        for transaction in transactions:
            with contextlib.suppress(PsqlpyError):  # a failed call's transaction is over
                await (transaction.commit() if commit else transaction.rollback())
        for connection in connections:
            connection.close()
        pool.close()
    return errors, held


def calls_at_once(
    url: str, goods_ids: list[int], keys_per_call: int, *, commit: bool = False
) -> tuple[list[str | None], int]:
    return asyncio.run(_calls_at_once(url, goods_ids, keys_per_call, commit=commit))


@pytest.mark.parametrize("outbox", [False, True], ids=["no-relay", "outbox-written"])
def test_invest_many_takes_no_more_lock_entries_than_it_reserves(
    database_url: str, outbox: bool
) -> None:
    """Every path of one call (a new investor, a later one, a sell-out, a replay, a key in use
    twice, a mismatch, an unknown product), its locks counted in pg_locks before it commits;
    with a relay configured, the outbox rows it writes too."""
    goods_id = create_goods(database_url, total=100)
    other = create_goods(database_url)
    a, b = fresh_user(), fresh_user()
    psql(
        database_url,
        f"SELECT count(*) FROM invest_many(ARRAY[{goods_id}, {goods_id}], ARRAY[{a}, {a}],"
        " ARRAY[10, 10], ARRAY['first', 'second'])",
    )
    out = psql(
        database_url,
        f"UPDATE investment_event_relay SET seen_at = {'now()' if outbox else 'NULL'};"
        " BEGIN;"
        " SELECT count(*) FROM invest_many("
        f"ARRAY[{goods_id}, {goods_id}, {goods_id}, {goods_id}, {other}, {other}, {2**62},"
        f" {goods_id}], ARRAY[{a}, {a}, {b}, {b}, {b}, {b}, {b}, {a}],"
        " ARRAY[10, 99, 20, 500, 30, 30, 1, 11],"
        " ARRAY['first', 'second', 'b1', 'b2', 'b3', 'b3', 'b4', 'a2']);"
        " SELECT locktype, count(*) FROM (SELECT DISTINCT locktype, relation, transactionid,"
        "     classid, objid, objsubid FROM pg_locks"
        "     WHERE pid = pg_backend_pid() AND locktype <> 'virtualxid'"
        "       AND relation IS DISTINCT FROM 'pg_locks'::regclass) l"
        " GROUP BY locktype ORDER BY locktype;"
        " ROLLBACK;"
        " UPDATE investment_event_relay SET seen_at = NULL;",
        script=True,
    )
    counts = dict(line.split("\t") for line in out.splitlines()[1:] if "\t" in line)
    # Every key but the second b3 (in use by the first): a replay and a mismatch lock theirs
    # too, before they find their stored answer. One more: the limits lock, taken shared.
    assert int(counts.pop("advisory")) == 7 + 1
    own = sum(map(int, counts.values()))
    assert set(counts) == {"relation", "transactionid"}
    assert own <= INVEST_MANY_OWN_LOCKS, counts


def test_the_largest_allowed_calls_hold_their_keys_in_every_session_at_once(
    database_url: str,
) -> None:
    keys_per_call = budget(database_url)
    sessions = sessions_to_open(database_url)
    goods_ids = products(database_url, sessions)
    errors, held = calls_at_once(database_url, goods_ids, keys_per_call, commit=True)
    assert errors == [None] * sessions
    assert held == sessions * (keys_per_call + 1)  # and each call's limits lock
    written = psql(
        database_url,
        "SELECT count(*), count(DISTINCT goods_id) FROM user_investment_goods"
        f" WHERE goods_id IN ({', '.join(map(str, goods_ids))})",
    )
    assert written == f"{sessions * keys_per_call}\t{sessions}"
    verify_ledger(database_url)


@pytest.fixture(scope="module")
def default_server() -> Iterator[str]:
    """A private server with PostgreSQL's default lock table (max_locks_per_transaction 64,
    max_connections 100, as on a stock install): filling its lock table disturbs no one else."""
    (ROOT / ".data").mkdir(exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="test-locks-", dir=ROOT / ".data"))
    server = EmbeddedPostgres(
        data_dir,
        free_port(),
        settings={
            "max_locks_per_transaction": "64",
            "max_connections": "100",
            "shared_buffers": "32MB",
        },
    )
    try:
        server_url = server.start()
        with migrated_database(server_url) as url:
            yield url
    finally:
        server.stop("immediate")
        shutil.rmtree(data_dir, ignore_errors=True)


def test_on_a_default_server_the_budget_fits_and_a_full_keyed_call_per_session_does_not(
    default_server: str,
) -> None:
    keys_per_call = budget(default_server)
    assert keys_per_call == 64 - INVEST_MANY_OWN_LOCKS
    sessions = sessions_to_open(default_server)
    goods_ids = products(default_server, sessions)
    errors, held = calls_at_once(default_server, goods_ids, keys_per_call)
    assert errors == [None] * sessions
    assert held == sessions * (keys_per_call + 1)  # and each call's limits lock
    # Without the budget a call carries up to INVEST_BATCH_MAX keyed requests: the same sessions
    # then run out of lock-table entries, and those calls fail for everybody in them.
    full = Settings().invest_batch_max
    errors, held = calls_at_once(default_server, goods_ids, full)
    failed = [error for error in errors if error is not None]
    assert failed, f"{sessions} calls of {full} keys each fit ({held} held)"
    assert all(OUT_OF_LOCKS in error and "max_locks_per_transaction" in error for error in failed)
    assert held < sessions * full
