"""invest_many() (sql/functions/invest_many.sql) called directly with the batches the service's
coalescing sends: several products per call, first come first served per product, keys mixed with
plain requests, a request that cannot be served never failing the others, and a fixed clock."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

import pytest
from psqlpy import Connection, ConnectionPool

from tests.support import (
    counters,
    create_goods,
    fresh_user,
    hold_rows,
    psql,
    verify_ledger,
    wait_for_lock_waiters,
    wait_until,
)

COLUMNS = (
    "ord", "outcome", "found", "total", "invested", "current", "state", "date", "id", "refused",
    "refused_value",
)  # fmt: skip


def invest_many(
    url: str,
    requests: list[tuple[int, int, int, str | None]],
    at: str | None = None,
    wait_ms: int | None = None,
) -> list[dict[str, Any]]:
    """One call: requests are (goods_id, user_id, amount, key); one dict per answer row. Without
    `wait_ms` a held product is passed over (the shared call); with it, waited for."""

    def array(values: list[Any], kind: str) -> str:
        items = ["NULL" if v is None else (f"'{v}'" if kind == "text" else str(v)) for v in values]
        return f"ARRAY[{', '.join(items)}]::{kind}[]"

    goods, users, amounts, keys = (list(column) for column in zip(*requests, strict=True))
    key_array = "NULL" if all(k is None for k in keys) else array(keys, "text")
    clock = "NULL" if at is None else at
    out = psql(
        url,
        "SELECT * FROM invest_many("
        f"{array(goods, 'bigint')}, {array(users, 'bigint')}, {array(amounts, 'bigint')},"
        f" {key_array}, {clock}, {'NULL' if wait_ms is None else wait_ms})",
    )
    rows = []
    for line in out.splitlines():
        values = line.split("\t")
        values += [""] * (len(COLUMNS) - len(values))  # psql() strips the last line's NULLs
        row: dict[str, Any] = dict(zip(COLUMNS, values, strict=True))
        for name in ("ord", "total", "invested", "current", "id", "refused_value"):
            row[name] = int(row[name]) if row[name] else None
        row["found"] = {"t": True, "f": False, "": None}[row["found"]]
        rows.append(row)
    assert [r["ord"] for r in rows] == list(range(1, len(requests) + 1))
    return rows


def ledger(url: str, goods_id: int) -> list[tuple[int, int, int]]:
    """(id, user, amount) of a product's ledger rows, by id."""
    out = psql(
        url,
        "SELECT id, user_id, user_investing_amount FROM user_investment_goods"
        f" WHERE goods_id = {goods_id} ORDER BY id",
    )
    return [tuple(map(int, line.split("\t"))) for line in out.splitlines()]  # type: ignore[misc]


def test_one_call_serves_several_products_first_come_first_served_per_product(
    database_url: str,
) -> None:
    small = create_goods(database_url, total=100)
    large = create_goods(database_url, total=10_000)
    a, b, c, d = (fresh_user() for _ in range(4))
    rows = invest_many(
        database_url,
        [
            (large, a, 500, None),
            (small, b, 60, None),
            (large, c, 700, None),
            (small, c, 60, None),  # crosses the small product's total: gets the remaining 40
            (small, d, 5, None),  # after it sold out, in the same call: nothing
            (large, d, 800, None),
        ],
    )
    assert [r["invested"] for r in rows] == [500, 60, 700, 40, 0, 800]
    assert [r["state"] for r in rows] == [
        "recruiting", "recruiting", "recruiting", "sold_out", "sold_out", "recruiting",
    ]  # fmt: skip
    assert [r["current"] for r in rows] == [500, 60, 1_200, 100, 100, 2_000]
    assert rows[4]["id"] is None
    # One ledger row per positive grant, ids in arrival order, counters equal to the ledger.
    ids = [r["id"] for r in rows if r["invested"]]
    assert ids == sorted(ids)
    assert ledger(database_url, small) == [(rows[1]["id"], b, 60), (rows[3]["id"], c, 40)]
    assert ledger(database_url, large) == [
        (rows[0]["id"], a, 500), (rows[2]["id"], c, 700), (rows[5]["id"], d, 800),
    ]  # fmt: skip
    assert counters(database_url, small) == (100, 2)
    assert counters(database_url, large) == (2_000, 3)
    verify_ledger(database_url)


def test_requests_that_cannot_be_served_never_fail_their_batch(database_url: str) -> None:
    open_goods = create_goods(database_url, total=10**6)
    closed = create_goods(database_url, total=10**6, status=False)
    upcoming = create_goods(
        database_url,
        started_at="now() + interval '1 day'",
        finished_at="now() + interval '2 days'",
    )
    user = fresh_user()
    missing = 2**62  # no such product
    rows = invest_many(
        database_url,
        [
            (missing, user, 10, None),
            (closed, user, 10, None),
            (upcoming, user, 10, None),
            (open_goods, user, 2**53 - 1, None),  # far above the total: gets what remains
            (open_goods, user, 10, None),
        ],
    )
    assert rows[0]["found"] is False and rows[0]["invested"] == 0 and rows[0]["state"] == ""
    assert (rows[1]["state"], rows[1]["invested"]) == ("closed", 0)
    assert (rows[2]["state"], rows[2]["invested"]) == ("upcoming", 0)
    assert (rows[3]["state"], rows[3]["invested"]) == ("sold_out", 10**6)
    assert (rows[4]["state"], rows[4]["invested"]) == ("sold_out", 0)
    assert counters(database_url, open_goods) == (10**6, 1)
    verify_ledger(database_url)


def test_keys_and_plain_requests_mixed_in_one_call(database_url: str) -> None:
    goods = create_goods(database_url, total=10**6)
    other = create_goods(database_url, total=10**6)
    u1, u2 = fresh_user(), fresh_user()
    first = invest_many(
        database_url,
        [
            (goods, u1, 100, "k-1"),
            (goods, u2, 200, None),
            (other, u1, 300, "k-2"),
            (goods, u1, 100, "k-1"),  # the same key again in the same call: in use
        ],
    )
    assert [r["outcome"] for r in first] == ["done", "done", "done", "in_use"]
    assert first[3]["invested"] is None
    again = invest_many(
        database_url,
        [
            (goods, u1, 100, "k-1"),  # replay
            (other, u1, 999, "k-2"),  # another amount: mismatch
            (goods, u2, 200, None),  # plain: a new investment
            (goods, u2, 200, "k-1"),  # another user's key space: new
        ],
    )
    assert [r["outcome"] for r in again] == ["replay", "mismatch", "done", "done"]
    assert again[0]["id"] == first[0]["id"] and again[0]["invested"] == 100
    assert again[0]["current"] == first[0]["current"] and again[0]["date"] == first[0]["date"]
    assert again[1]["invested"] is None
    assert [amount for _, _, amount in ledger(database_url, goods)] == [100, 200, 200, 200]
    assert counters(database_url, goods) == (700, 2)
    verify_ledger(database_url)


@pytest.mark.parametrize(
    ("at", "state", "invested"),
    [
        ("'2030-01-01 00:00:00'", "upcoming", 0),  # one second before started_at
        ("'2030-01-01 00:00:01'", "recruiting", 10),  # = started_at
        ("'2030-01-31 23:59:59'", "recruiting", 10),  # one second before finished_at
        ("'2030-02-01 00:00:00'", "finished", 0),  # = finished_at
    ],
    ids=["before-start", "at-start", "before-finish", "at-finish"],
)
def test_the_period_boundaries_on_a_fixed_clock(
    database_url: str, at: str, state: str, invested: int
) -> None:
    """started_at is the first recruiting moment, finished_at the first finished one."""
    goods = create_goods(
        database_url,
        started_at="'2030-01-01 00:00:01'",
        finished_at="'2030-02-01 00:00:00'",
    )
    [row] = invest_many(database_url, [(goods, fresh_user(), 10, None)], at=at)
    assert (row["state"], row["invested"]) == (state, invested)
    assert row["date"] == at.strip("'")


def test_calls_locking_the_same_products_in_any_request_order_never_deadlock(
    database_url: str,
) -> None:
    """Each call that waits for its products locks them in ascending goods_id whatever order its
    requests came in; calls naming the same products in opposite orders, at once, all complete."""
    products = [create_goods(database_url, total=10**9) for _ in range(6)]
    errors: list[BaseException] = []

    def caller(number: int) -> None:
        order = products if number % 2 else list(reversed(products))
        try:
            for _ in range(15):
                invest_many(
                    database_url, [(g, fresh_user(), 1, None) for g in order], wait_ms=60_000
                )
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert all(counters(database_url, g) == (90, 90) for g in products)
    verify_ledger(database_url)


def test_a_product_held_elsewhere_is_passed_over_and_the_others_are_served(
    database_url: str,
) -> None:
    """The shared call never waits for a row lock: the held product's requests come back
    'skipped' with nothing done (no ledger row, no stored key), the free product's are done."""
    held, free = create_goods(database_url, total=1000), create_goods(database_url, total=1000)
    holder = hold_rows(database_url, [held], 2)
    try:
        rows = invest_many(
            database_url,
            [(held, fresh_user(), 10, "skip-key-1"), (free, fresh_user(), 10, None),
             (held, fresh_user(), 10, None)],
        )  # fmt: skip
    finally:
        holder.wait()
    assert [r["outcome"] for r in rows] == ["skipped", "done", "skipped"]
    assert [r["invested"] for r in rows] == [None, 10, None]
    assert counters(database_url, held) == (0, 0) and counters(database_url, free) == (10, 1)
    stored = "SELECT count(*) FROM investment_idempotency WHERE idempotency_key = 'skip-key-1'"
    assert psql(database_url, stored) == "0"
    verify_ledger(database_url)


def test_a_row_held_by_another_call_is_waited_for_up_to_half_a_second(
    database_url: str,
) -> None:
    """A product row held by another call of the service (its transaction holds the limits lock
    shared, as every invest call's does) is waited for past the first wait (two lock waits of
    25 ms at most), for at most 500 ms in all: held 0.3 s it is served, held 3 s it is passed
    over after about half a second. A row held by another transaction (an operator's) is passed
    over after the first wait."""
    product = create_goods(database_url, total=1000)

    def timed(holder: Any) -> tuple[str, float]:
        started = time.monotonic()
        try:
            [row] = invest_many(database_url, [(product, fresh_user(), 10, None)])
        finally:
            took = time.monotonic() - started
            holder.wait()
        return row["outcome"], took

    outcome, took = timed(hold_rows(database_url, [product], 0.3, like_a_call=True))
    assert outcome == "done" and took < 1.0, (outcome, took)
    outcome, took = timed(hold_rows(database_url, [product], 3, like_a_call=True))
    assert outcome == "skipped" and 0.45 < took < 2.0, (outcome, took)
    outcome, took = timed(hold_rows(database_url, [product], 2))
    assert outcome == "skipped" and took < 0.4, (outcome, took)
    assert counters(database_url, product) == (10, 1)


def test_calls_waiting_together_for_a_row_held_elsewhere_are_each_delayed_50_ms_at_most(
    database_url: str,
) -> None:
    """Three shared calls for a product whose row another transaction holds, sent 5 ms apart:
    the later ones queue behind the first for the row's tuple lock, then wait for the holder
    (two lock waits in one attempt), and still each is passed over within the 50 ms that one
    held row may cost a shared call (docs/reliability.md). With 50 ms for each wait, the second
    took 101-103 ms: the first's wait less its 5 ms head start, then its own."""
    held, free = create_goods(database_url, total=1000), create_goods(database_url, total=1000)

    async def three_calls() -> list[tuple[str, float]]:
        pool = ConnectionPool(dsn=database_url, max_db_pool_size=3)
        connections = [await pool.connection() for _ in range(3)]

        async def call(
            connection: Connection, goods_id: int, after: float = 0
        ) -> tuple[str, float]:
            await asyncio.sleep(after)
            started = time.monotonic()
            rows = await connection.execute(
                "SELECT outcome FROM invest_many($1, $2, $3, NULL)",
                [[goods_id], [fresh_user()], [10]],
            )
            return rows.result()[0]["outcome"], time.monotonic() - started

        try:
            for connection in connections:  # each session has compiled the functions
                assert (await call(connection, free))[0] == "done"
            return await asyncio.gather(
                *(call(c, held, 0.005 * n) for n, c in enumerate(connections))
            )
        finally:
            for connection in connections:
                connection.close()
            pool.close()

    holder = hold_rows(database_url, [held], 3)
    try:
        answers = asyncio.run(three_calls())
    finally:
        holder.wait()
    assert [outcome for outcome, _ in answers] == ["skipped"] * 3, answers
    assert max(took for _, took in answers) < 0.075, answers
    assert counters(database_url, held) == (0, 0) and counters(database_url, free) == (30, 3)


def test_a_waiting_call_gives_up_at_its_lock_wait(database_url: str) -> None:
    """With wait_ms, the call waits for the held row at most that long, then fails as a whole
    (a lock timeout: rolled back, nothing done)."""
    held = create_goods(database_url, total=1000)
    holder = hold_rows(database_url, [held], 2)
    try:
        with pytest.raises(RuntimeError, match="lock timeout"):
            invest_many(database_url, [(held, fresh_user(), 10, None)], wait_ms=200)
    finally:
        holder.wait()
    assert counters(database_url, held) == (0, 0)
    [row] = invest_many(database_url, [(held, fresh_user(), 10, None)], wait_ms=200)
    assert row["outcome"] == "done" and row["invested"] == 10


def test_a_replay_answers_from_the_key_it_read_even_if_cleanup_deletes_it_meanwhile(
    database_url: str,
) -> None:
    """The replay's answer is read with its outcome, in one statement: a key deleted before the
    call returns (the hourly cleanup) still replays the stored answer, not a missing product.
    The call is paused after that statement by a new request for a held product."""
    goods, held = create_goods(database_url, total=1000), create_goods(database_url, total=1000)
    user = fresh_user()
    [first] = invest_many(database_url, [(goods, user, 7, "race-key")])
    assert first["outcome"] == "done"
    holder = hold_rows(database_url, [held], 3)
    replaying: list[list[dict[str, Any]]] = []
    call = threading.Thread(
        target=lambda: replaying.append(
            invest_many(
                database_url, [(goods, user, 7, "race-key"), (held, fresh_user(), 1, None)],
                wait_ms=20_000,
            )
        )
    )  # fmt: skip
    call.start()
    try:
        wait_for_lock_waiters(database_url, 1)
        psql(database_url, "DELETE FROM investment_idempotency WHERE idempotency_key = 'race-key'")
    finally:
        holder.wait()
    call.join(30)
    [[replay, other]] = replaying
    assert replay["outcome"] == "replay" and replay["found"] is True
    assert (replay["invested"], replay["id"]) == (7, first["id"])
    assert other["outcome"] == "done"


def test_a_cancel_that_ends_a_shared_calls_wait_for_a_row_ends_only_that_wait(
    database_url: str,
) -> None:
    """PostgreSQL can report a lock timeout as a cancel "due to user request" (a timeout that
    fires as its wait is granted, then the row's second wait clears the mark that names it): so
    a cancel that ends the shared call's wait for its rows ends only that wait, as a timeout
    does. Here a real cancel reaches the call while it waits for a row another call of the
    service holds: the call still answers, the held product passed over after the 500 ms, the
    free one served. (Before, the whole call failed, and the service answered its every request
    503.)"""
    held, free = create_goods(database_url, total=1000), create_goods(database_url, total=1000)
    holder = hold_rows(database_url, [held], 3, like_a_call=True)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            call = pool.submit(
                invest_many,
                database_url,
                [(held, fresh_user(), 10, None), (free, fresh_user(), 10, None)],
            )
            # Cancelled the moment it waits for a lock: its tries of 25 ms have gaps between.
            cancel = (
                "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND query LIKE '%invest_many(%'"
                " AND pid <> pg_backend_pid()"
            )
            wait_until(lambda: psql(database_url, cancel) == "1", "the call cancelled in its wait")
            rows = call.result(timeout=10)
    finally:
        holder.wait()
    assert [r["outcome"] for r in rows] == ["skipped", "done"], rows
    assert counters(database_url, held) == (0, 0) and counters(database_url, free) == (10, 1)


def test_a_statement_timeout_while_a_shared_call_waits_for_a_row_still_ends_the_call(
    database_url: str,
) -> None:
    """Only a cancel "due to user request" ends just the wait: the statement's own bound ends
    the whole call, nothing done."""
    held, free = create_goods(database_url, total=1000), create_goods(database_url, total=1000)
    holder = hold_rows(database_url, [held], 2, like_a_call=True)
    try:
        with pytest.raises(RuntimeError, match="canceling statement due to statement timeout"):
            psql(
                database_url,
                f"SET statement_timeout = 150; SELECT * FROM invest_many(ARRAY[{held}, {free}],"
                f" ARRAY[{fresh_user()}, {fresh_user()}], ARRAY[10, 10], NULL)",
            )
    finally:
        holder.wait()
    assert counters(database_url, held) == (0, 0) and counters(database_url, free) == (0, 0)
