"""The opening rush: >= 1,000 concurrent invests at one product through 2 granian workers.

Asserts the invariants, not timings: the ledger sums to the total exactly, exactly one request is
partially filled, every positive 200 is exactly one ledger row, investor_count is exact, no 5xx.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.support import (
    ServiceProcess,
    counters,
    create_goods,
    fresh_user,
    migrated_database,
    psql,
    running_service,
)

pytestmark = pytest.mark.system

TOTAL = 1_234_567  # odd: amounts in whole thousands can never sum to it exactly
REQUESTS = 1_200
USERS = 500


@pytest.fixture(scope="module")
def rush_database(postgres_server: str) -> Iterator[str]:
    with migrated_database(postgres_server) as url:
        yield url


@pytest.fixture(scope="module")
def rush_service(rush_database: str) -> Iterator[ServiceProcess]:
    """One service of 2 workers for both rushes (each on a product of its own)."""
    with running_service(rush_database, workers=2) as service:
        yield service


async def fire(base_url: str, goods_id: int, orders: list[tuple[int, int]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(orders), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
        # Every request starts once all are ready to go, not after a guessed pause.
        start = asyncio.Barrier(len(orders))

        async def one(user: int, amount: int) -> httpx.Response:
            await start.wait()
            return await client.post(
                "/v1/api/investment/user/goods",
                headers={"X-USER-ID": str(user)},
                json={"goodsId": goods_id, "investmentAmount": amount},
            )

        return await asyncio.gather(*(one(user, amount) for user, amount in orders))


@pytest.mark.parametrize("amounts", [(7_000,), (3_000, 11_000, 1_000)], ids=["equal", "mixed"])
def test_rush_never_oversells_and_every_grant_is_one_ledger_row(
    rush_database: str, rush_service: ServiceProcess, amounts: tuple[int, ...]
) -> None:
    url = rush_database
    goods_id = create_goods(url, total=TOTAL)
    users = [fresh_user() for _ in range(USERS)]
    orders = [(users[i % USERS], amounts[i % len(amounts)]) for i in range(REQUESTS)]
    assert sum(amount for _, amount in orders) > TOTAL

    assert len(rush_service.worker_pids()) == 2
    responses = asyncio.run(fire(rush_service.base_url, goods_id, orders))

    assert [r.status_code for r in responses if r.status_code != 200] == []
    bodies = [r.json() for r in responses]
    granted = [b for b in bodies if b["investment_amount"] > 0]
    partial = [b for b in granted if b["investment_amount"] < b["requested_amount"]]
    assert len(partial) == 1
    assert partial[0]["status"] is False and partial[0]["state"] == "sold_out"
    assert all(
        b["investment_id"] is None and b["status"] is False
        for b in bodies
        if b["investment_amount"] == 0
    )
    assert sum(b["investment_amount"] for b in granted) == TOTAL

    ledger = dict(
        tuple(map(int, line.split("\t")))  # type: ignore[misc]
        for line in psql(
            url,
            f"SELECT id, user_investing_amount FROM user_investment_goods WHERE goods_id = {goods_id}",
        ).splitlines()
    )
    assert sum(ledger.values()) == TOTAL
    answered = {b["investment_id"]: b["investment_amount"] for b in granted}
    assert len(answered) == len(granted)  # no two answers share a ledger row
    assert answered == ledger  # one to one, same amounts

    current, investor_count = counters(url, goods_id)
    assert current == TOTAL
    assert investor_count == len({b["user_id"] for b in granted})
    assert investor_count == int(
        psql(url, f"SELECT count(*) FROM investment_goods_investor WHERE goods_id = {goods_id}")
    )
