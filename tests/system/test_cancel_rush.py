"""Cancellations under the rush, through two service instances of two workers each: racing
invests on a nearly sold-out product, the same investment cancelled by many requests at once,
and a connection killed in the middle of a cancellation.

Asserts the invariants, not timings: counters = investments - cancellations, never oversold,
one cancellation row per investment at most, the verifier silent. How long a cancellation
waited behind the invests is printed (`-s`), for the record only."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Iterator

import httpx
import pytest

from tests.load import PATH
from tests.support import (
    ServiceProcess,
    cancel_waiters,
    cancellation_rows,
    counters,
    create_goods,
    fresh_user,
    hold_rows,
    migrated_database,
    psql,
    running_services,
    verify_ledger,
    wait_until,
)

pytestmark = pytest.mark.system

TOTAL = 200_000
HOLDERS = 150  # investments of 1,000 made before the rush, all cancelled in it
NEWCOMERS = 300  # invests of 1,000 in the rush: more than could ever be free


@pytest.fixture(scope="module")
def database(postgres_server: str) -> Iterator[str]:
    with migrated_database(postgres_server) as url:
        yield url


@pytest.fixture(scope="module")
def instances(database: str) -> Iterator[list[ServiceProcess]]:
    # A cancellation waits for a held row up to DB_ACQUIRE_TIMEOUT: longer than the fault test
    # needs to find it waiting.
    with running_services(
        database, 2, workers=2, DB_POOL_SIZE="8", DB_ACQUIRE_TIMEOUT="10"
    ) as services:
        yield services


async def invest(
    client: httpx.AsyncClient, user: int, goods_id: int, amount: int
) -> httpx.Response:
    return await client.post(
        PATH,
        headers={"X-USER-ID": str(user)},
        json={"goodsId": goods_id, "investmentAmount": amount},
    )


async def cancel(client: httpx.AsyncClient, user: int, investment_id: int) -> httpx.Response:
    return await client.delete(f"{PATH}/{investment_id}", headers={"X-USER-ID": str(user)})


def clients(instances: list[ServiceProcess], connections: int) -> list[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=0)
    return [httpx.AsyncClient(base_url=i.base_url, limits=limits, timeout=60) for i in instances]


def live_sum(database: str, goods_id: int) -> int:
    return int(
        psql(
            database,
            "SELECT coalesce(sum(u.user_investing_amount), 0) FROM user_investment_goods u"
            f" WHERE u.goods_id = {goods_id} AND NOT EXISTS"
            " (SELECT 1 FROM user_investment_cancellation c WHERE c.investment_id = u.id)",
        )
    )


def test_cancellations_racing_invests_on_a_nearly_sold_out_product_never_oversell(
    instances: list[ServiceProcess], database: str
) -> None:
    goods_id = create_goods(database, total=TOTAL)
    holders = [fresh_user() for _ in range(HOLDERS)]
    newcomers = [fresh_user() for _ in range(NEWCOMERS)]

    async def before_the_rush() -> list[int]:
        pools = clients(instances, HOLDERS)
        try:
            made = await asyncio.gather(
                *(invest(pools[n % 2], user, goods_id, 1_000) for n, user in enumerate(holders))
            )
            return [r.json()["investment_id"] for r in made]
        finally:
            for pool in pools:
                await pool.aclose()

    async def rush(ids: list[int]) -> list[tuple[str, httpx.Response, float]]:
        pools = clients(instances, HOLDERS + NEWCOMERS)
        start = asyncio.Barrier(HOLDERS + NEWCOMERS)

        async def timed(
            kind: str, call: Awaitable[httpx.Response]
        ) -> tuple[str, httpx.Response, float]:
            await start.wait()
            began = time.monotonic()
            response = await call
            return kind, response, time.monotonic() - began

        try:
            requests = [
                timed("cancel", cancel(pools[n % 2], user, investment))
                for n, (user, investment) in enumerate(zip(holders, ids, strict=True))
            ] + [
                timed("invest", invest(pools[n % 2], user, goods_id, 1_000))
                for n, user in enumerate(newcomers)
            ]
            return list(await asyncio.gather(*requests))
        finally:
            for pool in pools:
                await pool.aclose()

    ids = asyncio.run(before_the_rush())
    assert counters(database, goods_id) == (HOLDERS * 1_000, HOLDERS)
    answers = asyncio.run(rush(ids))
    assert [r.status_code for _, r, _ in answers if r.status_code != 200] == []
    cancels = [r.json() for kind, r, _ in answers if kind == "cancel"]
    invests = [r.json() for kind, r, _ in answers if kind == "invest"]
    assert sorted(c["investment_id"] for c in cancels) == sorted(ids)
    assert all(c["cancelled_amount"] == 1_000 for c in cancels)
    assert all(0 <= c["current_investing_amount"] <= TOTAL for c in cancels)
    assert all(c["state"] in ("recruiting", "sold_out") for c in cancels)
    granted = sum(i["investment_amount"] for i in invests)
    # Every refusal saw the product sold out at its moment: room freed by a cancellation
    # before an invest was taken by it (outcomes of some serial order).
    assert all(i["state"] == "sold_out" for i in invests if i["investment_amount"] < 1_000)
    assert TOTAL - HOLDERS * 1_000 <= granted <= TOTAL
    current, investor_count = counters(database, goods_id)
    assert current == live_sum(database, goods_id) == granted  # every holder cancelled
    assert investor_count == sum(1 for i in invests if i["investment_amount"] > 0)
    assert int(psql(database, "SELECT count(*) FROM user_investment_cancellation")) >= HOLDERS
    verify_ledger(database)

    waits = {
        kind: sorted(seconds for k, _, seconds in answers if k == kind)
        for kind in ("cancel", "invest")
    }
    for kind, seconds in waits.items():
        print(
            f"cancel rush (busy machine, not a record): {kind} x{len(seconds)}"
            f" p50 {statistics.median(seconds) * 1000:.1f} ms"
            f" p99 {seconds[int(len(seconds) * 0.99) - 1] * 1000:.1f} ms"
            f" max {seconds[-1] * 1000:.1f} ms"
        )


def test_the_same_users_cancelling_and_investing_across_products_never_deadlock(
    instances: list[ServiceProcess], database: str
) -> None:
    """40 users each hold an investment in each of 4 products; then, all at once, each cancels
    those and invests again in all 4: invest calls lock many products and then the users'
    investor rows, each cancellation one product and then one investor row, in one global order,
    so no request meets a deadlock (it would answer 503)."""
    goods = [create_goods(database, total=10**9) for _ in range(4)]
    users = [fresh_user() for _ in range(40)]

    async def scenario() -> list[httpx.Response]:
        pools = clients(instances, 2 * len(users) * len(goods))
        try:
            made = await asyncio.gather(
                *(
                    invest(pools[n % 2], user, g, 1_000)
                    for n, user in enumerate(users)
                    for g in goods
                )
            )
            held = [(r.json()["user_id"], r.json()["investment_id"]) for r in made]
            start = asyncio.Barrier(2 * len(held))

            async def at_once(call: Awaitable[httpx.Response]) -> httpx.Response:
                await start.wait()
                return await call

            cancels = [at_once(cancel(pools[n % 2], u, i)) for n, (u, i) in enumerate(held)]
            invests = [
                at_once(invest(pools[n % 2], user, g, 2_000))
                for n, user in enumerate(reversed(users))
                for g in reversed(goods)
            ]
            return list(await asyncio.gather(*cancels, *invests))
        finally:
            for pool in pools:
                await pool.aclose()

    answers = asyncio.run(scenario())
    assert [r.text for r in answers if r.status_code != 200] == []
    for goods_id in goods:
        assert counters(database, goods_id) == (2_000 * len(users), len(users))
    verify_ledger(database)


def test_one_investment_cancelled_by_many_requests_at_once_is_cancelled_once(
    instances: list[ServiceProcess], database: str
) -> None:
    goods_id = create_goods(database, total=TOTAL)
    user, other = fresh_user(), fresh_user()

    async def scenario() -> list[httpx.Response]:
        pools = clients(instances, 40)
        try:
            investment = (await invest(pools[0], user, goods_id, 7_000)).json()["investment_id"]
            await invest(pools[1], other, goods_id, 3_000)
            start = asyncio.Barrier(40)

            async def one(n: int) -> httpx.Response:
                await start.wait()
                return await cancel(pools[n % 2], user, investment)

            return list(await asyncio.gather(*(one(n) for n in range(40))))
        finally:
            for pool in pools:
                await pool.aclose()

    answers = asyncio.run(scenario())
    assert [r.status_code for r in answers] == [200] * 40
    assert len({r.content for r in answers}) == 1
    assert answers[0].json()["current_investing_amount"] == 3_000
    assert (
        psql(
            database,
            f"SELECT count(*), sum(cancelled_amount) FROM user_investment_cancellation WHERE goods_id = {goods_id}",
        )
        == "1\t7000"
    )
    assert counters(database, goods_id) == (3_000, 1)
    verify_ledger(database)


@pytest.mark.parametrize("held", ["product", "investor"])
def test_a_connection_killed_mid_cancel_leaves_it_undone_and_a_repeat_makes_it_once(
    instances: list[ServiceProcess], database: str, held: str
) -> None:
    """Cut while waiting for the product row (nothing written yet), or for the investor row
    (the cancellation row and the product's counters already written in the transaction): either
    way the transaction is rolled back whole; the 503 says to repeat the DELETE, and the repeat
    makes the cancellation once."""
    goods_id = create_goods(database, total=TOTAL)
    user = fresh_user()
    base = instances[0].base_url
    made = httpx.post(
        base + PATH, headers={"X-USER-ID": str(user)},
        json={"goodsId": goods_id, "investmentAmount": 5_000}, timeout=10,
    )  # fmt: skip
    investment = made.json()["investment_id"]
    before = (
        counters(database, goods_id),
        psql(database, f"SELECT invested_total FROM investor WHERE user_id = {user}"),
    )
    holder = hold_rows(
        database, [goods_id], seconds=4, user_ids=[user] if held == "investor" else None
    )
    try:

        async def scenario() -> httpx.Response:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                pending = asyncio.create_task(cancel(client, user, investment))
                await asyncio.to_thread(
                    wait_until, lambda: bool(cancel_waiters(database)), "a cancellation waits"
                )
                [pid] = cancel_waiters(database)
                psql(database, f"SELECT pg_terminate_backend({pid})")
                return await pending

        cut = asyncio.run(scenario())
    finally:
        holder.wait(30)
    assert cut.status_code == 503, cut.text
    assert cut.json()["code"] == "SERVICE_UNAVAILABLE"
    assert cut.headers["Retry-After"] == "1"
    assert "Repeat the same DELETE" in cut.json()["detail"]
    assert cancellation_rows(database, investment) == 0
    assert (
        counters(database, goods_id),
        psql(database, f"SELECT invested_total FROM investor WHERE user_id = {user}"),
    ) == before

    repeats = [
        httpx.delete(f"{base}{PATH}/{investment}", headers={"X-USER-ID": str(user)}, timeout=10)
        for _ in range(2)
    ]
    assert [r.status_code for r in repeats] == [200, 200]
    assert repeats[0].content == repeats[1].content
    assert cancellation_rows(database, investment) == 1
    assert counters(database, goods_id) == (0, 0)
    verify_ledger(database)
