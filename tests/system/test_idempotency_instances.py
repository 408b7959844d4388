"""Idempotency-Key across several service instances: one ledger row per key, 409 in flight, cleanup."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.support import (
    ServiceProcess,
    create_goods,
    fresh_user,
    held_product_waiters,
    hold_rows,
    psql,
    running_services,
    wait_until,
)

pytestmark = pytest.mark.system

PATH = "/v1/api/investment/user/goods"


@pytest.fixture(scope="module")
def instances(database_url: str) -> Iterator[list[ServiceProcess]]:
    """Three instances (separate granian processes and pools) on one database."""
    with running_services(
        database_url,
        3,
        workers=1,
        IDEMPOTENCY_CLEANUP_SECONDS="0.3",
        # A request for a held product waits for it until this deadline.
        DB_ACQUIRE_TIMEOUT="10",
    ) as services:
        yield services


async def _retries(
    urls: list[str], user: int, goods_id: int, key: str, count: int
) -> list[httpx.Response]:
    headers = {"X-USER-ID": str(user), "Idempotency-Key": key}
    body = {"goodsId": goods_id, "investmentAmount": 1_000}
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=count)) as client:
        return await asyncio.gather(
            *(
                client.post(urls[i % len(urls)] + PATH, headers=headers, json=body)
                for i in range(count)
            )
        )


def test_fifty_concurrent_retries_over_three_instances_write_one_row(
    instances: list[ServiceProcess], database_url: str
) -> None:
    goods_id = create_goods(database_url, total=10**9)
    urls = [instance.base_url for instance in instances]
    for round_ in range(5):
        user = fresh_user()
        responses = asyncio.run(_retries(urls, user, goods_id, f"retry-{round_}", 50))
        statuses = Counter(r.status_code for r in responses)
        assert set(statuses) <= {200, 409}, [r.text for r in responses]
        assert statuses[200] + statuses[409] == 50
        answers = [r.json() for r in responses if r.status_code == 200]
        assert all(answer == answers[0] for answer in answers)
        # Exactly one request performed the investment; every other 200 is a replay of it.
        performed = [
            r for r in responses if r.status_code == 200 and "Idempotent-Replayed" not in r.headers
        ]
        assert len(performed) == 1, statuses
        assert all(
            r.headers.get("Idempotent-Replayed") == "true"
            for r in responses
            if r.status_code == 200 and r is not performed[0]
        )
        assert answers[0]["investment_amount"] == 1_000
        for conflict in (r for r in responses if r.status_code == 409):
            assert conflict.json()["code"] == "IDEMPOTENCY_KEY_IN_USE"
        rows = psql(
            database_url,
            f"SELECT id, user_investing_amount FROM user_investment_goods WHERE user_id = {user}",
        )
        assert rows == f"{answers[0]['investment_id']}\t1000"
    assert (
        psql(
            database_url,
            f"SELECT current_investing_amount FROM investment_goods WHERE goods_id = {goods_id}",
        )
        == "5000"
    )


def test_a_retry_while_the_first_is_in_flight_is_409_on_every_instance(
    instances: list[ServiceProcess], database_url: str
) -> None:
    goods_id = create_goods(database_url, total=100_000)
    user = fresh_user()
    headers = {"X-USER-ID": str(user), "Idempotency-Key": "slow-one"}
    body = {"goodsId": goods_id, "investmentAmount": 1_000}
    # Another transaction holds the product row: the first request waits inside its own
    # transaction, holding the key.
    holder = hold_rows(database_url, [goods_id], seconds=3)
    try:

        async def scenario() -> tuple[httpx.Response, list[httpx.Response]]:
            async with httpx.AsyncClient(timeout=30) as client:
                first = asyncio.ensure_future(
                    client.post(instances[0].base_url + PATH, headers=headers, json=body)
                )
                # The first request holds the key once its product's own call waits on the row.
                await asyncio.to_thread(
                    wait_until, lambda: bool(held_product_waiters(database_url)),
                    "the first request waiting in its product's own call",
                )  # fmt: skip
                assert not first.done()
                retries = [
                    await client.post(instance.base_url + PATH, headers=headers, json=body)
                    for instance in instances
                ]
                return await first, retries

        first, retries = asyncio.run(scenario())
    finally:
        holder.wait(30)
    for retry in retries:
        assert retry.status_code == 409, [
            (r.status_code, r.headers.get("Idempotent-Replayed"), r.text[:80]) for r in retries
        ]
        assert retry.json()["code"] == "IDEMPOTENCY_KEY_IN_USE"
    assert first.status_code == 200
    assert first.json()["investment_amount"] == 1_000
    replay = httpx.post(instances[1].base_url + PATH, headers=headers, json=body, timeout=10)
    assert replay.status_code == 200
    assert replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"


def test_keys_older_than_the_retention_are_forgotten_by_the_service_itself(
    instances: list[ServiceProcess], database_url: str
) -> None:
    goods_id = create_goods(database_url, total=100_000)
    old_user, new_user = fresh_user(), fresh_user()
    for user in (old_user, new_user):
        response = httpx.post(
            instances[0].base_url + PATH,
            headers={"X-USER-ID": str(user), "Idempotency-Key": "aged"},
            json={"goodsId": goods_id, "investmentAmount": 1_000},
            timeout=10,
        )
        assert response.status_code == 200
    psql(
        database_url,
        "UPDATE investment_idempotency SET created_at = now() - interval '24 hours 1 minute'"
        f" WHERE user_id = {old_user}",
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        left = psql(
            database_url, f"SELECT count(*) FROM investment_idempotency WHERE user_id = {old_user}"
        )
        if left == "0":
            break
        time.sleep(0.2)
    assert left == "0", "the old key was not forgotten"
    assert (
        psql(
            database_url, f"SELECT count(*) FROM investment_idempotency WHERE user_id = {new_user}"
        )
        == "1"
    )
    # The ledger is untouched by forgetting a key.
    assert (
        psql(database_url, f"SELECT count(*) FROM user_investment_goods WHERE user_id = {old_user}")
        == "1"
    )
