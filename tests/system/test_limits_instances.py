"""One user's hundreds of concurrent invests, across products and every kind of cap, through two
service instances (two workers each) on one database: no cap is ever exceeded and none is left
unfilled while requests for it kept coming (a refusal while room was free would leave some)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.support import create_goods, migrated_database, psql, running_services, verify_ledger

pytestmark = pytest.mark.system

PER_PRODUCT, TOTAL, REAL_ESTATE = 300_000, 1_000_000, 400_000
AMOUNT = 10_000  # every cap is a multiple: a filled cap is filled exactly


@pytest.fixture
def database(postgres_server: str) -> Iterator[str]:
    with migrated_database(postgres_server) as url:
        # The database is this test's own: the general class (every user) gets caps.
        psql(
            url,
            f"UPDATE investor_class_limit SET per_product = {PER_PRODUCT}, total = {TOTAL},"
            f" real_estate = {REAL_ESTATE} WHERE investor_class = 'general'",
        )
        yield url


async def _send(urls: list[str], user: int, orders: list[tuple[int, str]]) -> list[httpx.Response]:
    clients = [httpx.AsyncClient(base_url=url, timeout=30) for url in urls]
    gate = asyncio.Semaphore(120)

    async def one(n: int, goods_id: int, key: str) -> httpx.Response:
        async with gate:
            return await clients[n % len(clients)].post(
                "/v1/api/investment/user/goods",
                headers={"X-USER-ID": str(user), "Idempotency-Key": key},
                json={"goodsId": goods_id, "investmentAmount": AMOUNT},
            )

    try:
        return await asyncio.gather(*(one(n, *order) for n, order in enumerate(orders)))
    finally:
        for client in clients:
            await client.aclose()


def test_one_users_concurrent_invests_through_two_instances_fill_every_cap_exactly(
    database: str,
) -> None:
    general = [create_goods(database, total=10**9) for _ in range(2)]
    estate = [create_goods(database, total=10**9) for _ in range(2)]
    psql(
        database,
        "UPDATE investment_goods SET category = 'real_estate'"
        f" WHERE goods_id IN ({estate[0]}, {estate[1]})",
    )
    user = 4_242_424_242
    chance = random.Random(5)
    products = general + estate
    orders = [(chance.choice(products), f"o{n}") for n in range(400)]  # 4,000,000 asked
    with running_services(database, 2, workers=2, DB_POOL_SIZE="8") as services:
        urls = [service.base_url for service in services]
        answers = asyncio.run(_send(urls, user, orders))
        statuses = Counter(a.status_code for a in answers)
        assert set(statuses) <= {200, 422}, statuses
        granted = Counter()
        for (goods_id, _), answer in zip(orders, answers, strict=True):
            if answer.status_code == 200:
                assert answer.json()["investment_amount"] == AMOUNT
                granted[goods_id] += AMOUNT
            else:
                body = answer.json()
                assert body["code"] == "INVESTMENT_LIMIT_EXCEEDED"
                assert body["limit"] in ("per_product", "total", "real_estate")
                assert 0 <= body["remaining"] < AMOUNT
        # The keyed retries of everything answer the same, through the other instance.
        retried = asyncio.run(_send(urls[::-1], user, orders))
        assert [a.status_code for a in retried] == [a.status_code for a in answers]
        limits = httpx.get(
            f"{urls[0]}/v1/api/investment/user/limits", headers={"X-USER-ID": str(user)}
        ).json()
    assert all(amount <= PER_PRODUCT for amount in granted.values())
    assert sum(granted[g] for g in estate) == REAL_ESTATE  # filled
    assert sum(granted.values()) == TOTAL  # = min(total cap, 4,000,000 asked)
    assert statuses[200] == TOTAL // AMOUNT
    assert limits["invested"] == {"total": TOTAL, "real_estate": REAL_ESTATE}
    assert limits["remaining"] == {"total": 0, "real_estate": 0}
    assert psql(
        database,
        f"SELECT sum(user_investing_amount) FROM user_investment_goods WHERE user_id = {user}",
    ) == str(TOTAL)
    verify_ledger(database)
