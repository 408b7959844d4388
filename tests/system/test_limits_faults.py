"""Caps and faults: an invest call of a capped user cut while it runs (its connection terminated)
is rolled back whole, and the keyed retry performs it exactly once, within the cap; a keyed
refusal replays as the same 422."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.load import PATH
from tests.support import (
    create_goods,
    fresh_user,
    held_product_waiters,
    hold_rows,
    psql,
    running_service,
    verify_ledger,
)

pytestmark = pytest.mark.system

CLASS = "qualified"


def test_a_capped_call_cut_mid_call_is_performed_once_by_its_keyed_retry(
    database_url: str,
) -> None:
    goods = create_goods(database_url, total=10**9)
    user = fresh_user()
    psql(
        database_url,
        f"INSERT INTO investor (user_id, investor_class) VALUES ({user}, '{CLASS}');"
        f" UPDATE investor_class_limit SET per_product = 5000 WHERE investor_class = '{CLASS}'",
    )
    headers = {"X-USER-ID": str(user)}
    try:
        with running_service(
            database_url, workers=1, DB_STATEMENT_TIMEOUT="20", DB_ACQUIRE_TIMEOUT="10"
        ) as service:
            base = service.base_url

            def invest(amount: int, key: str) -> httpx.Response:
                return httpx.post(
                    base + PATH,
                    headers={**headers, "Idempotency-Key": key},
                    json={"goodsId": goods, "investmentAmount": amount},
                    timeout=10,
                )

            assert invest(3_000, "first").json()["investment_amount"] == 3_000
            holder = hold_rows(database_url, [goods], seconds=4)
            try:

                async def cut() -> httpx.Response:
                    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                        sent = asyncio.create_task(
                            client.post(
                                PATH,
                                headers={**headers, "Idempotency-Key": "cut"},
                                json={"goodsId": goods, "investmentAmount": 2_000},
                            )
                        )
                        deadline = time.monotonic() + 10
                        while not (pids := held_product_waiters(database_url)):
                            assert time.monotonic() < deadline, "the invest call never waited"
                            await asyncio.sleep(0.05)
                        psql(database_url, f"SELECT pg_terminate_backend({pids[0]})")
                        return await sent

                answer = asyncio.run(cut())
            finally:
                holder.wait(30)
            assert answer.status_code == 503 and answer.json()["code"] == "INVEST_OUTCOME_UNKNOWN"
            # Rolled back whole: the retry performs it (the cap's room was not taken), once.
            retried = [invest(2_000, "cut") for _ in range(2)]
            assert [r.status_code for r in retried] == [200, 200]
            assert retried[0].json()["investment_amount"] == 2_000
            assert retried[1].headers["Idempotent-Replayed"] == "true"
            # The cap is full now: refused, and the refusal replays.
            refused = [invest(1_000, "over") for _ in range(2)]
            assert [r.status_code for r in refused] == [422, 422]
            assert refused[0].json() == refused[1].json()
            assert (refused[0].json()["limit"], refused[0].json()["remaining"]) == (
                "per_product",
                0,
            )
    finally:
        psql(
            database_url,
            f"UPDATE investor_class_limit SET per_product = NULL WHERE investor_class = '{CLASS}';"
            f" UPDATE investor SET investor_class = 'professional' WHERE user_id = {user}",
        )
    assert (
        psql(
            database_url,
            f"SELECT sum(user_investing_amount) FROM user_investment_goods WHERE user_id = {user}",
        )
        == "5000"
    )
    verify_ledger(database_url)
