"""The two 503s of an invest, from real faults: SERVICE_UNAVAILABLE (nothing was done: retry as
it is, after Retry-After) and INVEST_OUTCOME_UNKNOWN (the call was sent and its answer lost:
retry only with the same Idempotency-Key)."""

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
    ledger_sum,
    psql,
    running_service,
    verify_ledger,
)

pytestmark = pytest.mark.system


def test_a_call_cut_while_it_runs_answers_outcome_unknown_and_a_keyed_retry_settles_it(
    database_url: str,
) -> None:
    goods = create_goods(database_url, total=10**9)
    keyed, plain = fresh_user(), fresh_user()
    # Requests for the held product wait for it up to DB_ACQUIRE_TIMEOUT, longer than the hold.
    with running_service(
        database_url, workers=1, DB_STATEMENT_TIMEOUT="20", DB_ACQUIRE_TIMEOUT="10"
    ) as service:
        holder = hold_rows(database_url, [goods], seconds=6)
        try:

            async def scenario() -> list[httpx.Response]:
                async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
                    first = asyncio.create_task(
                        client.post(
                            PATH,
                            headers={"X-USER-ID": str(keyed), "Idempotency-Key": "cut-1"},
                            json={"goodsId": goods, "investmentAmount": 1_000},
                        )
                    )
                    deadline = time.monotonic() + 10
                    while not (pids := held_product_waiters(database_url)):
                        assert time.monotonic() < deadline, "the invest call never waited"
                        await asyncio.sleep(0.05)
                    # A plain request queued behind the call in flight goes in the next call.
                    second = asyncio.create_task(
                        client.post(
                            PATH,
                            headers={"X-USER-ID": str(plain)},
                            json={"goodsId": goods, "investmentAmount": 2_000},
                        )
                    )
                    psql(database_url, f"SELECT pg_terminate_backend({pids[0]})")
                    return [await first, await second]

            cut, queued = asyncio.run(scenario())
        finally:
            holder.wait(30)
        assert cut.status_code == 503, cut.text
        problem = cut.json()
        assert problem["code"] == "INVEST_OUTCOME_UNKNOWN"
        assert "Retry-After" not in cut.headers
        assert "Idempotency-Key" in problem["detail"]
        # The request behind it was never sent with the cut call: it is served normally.
        assert queued.status_code == 200, queued.text
        assert queued.json()["investment_amount"] == 2_000

        # The terminated transaction was rolled back; the keyed retry performs it, once.
        retried = [
            httpx.post(
                service.base_url + PATH,
                headers={"X-USER-ID": str(keyed), "Idempotency-Key": "cut-1"},
                json={"goodsId": goods, "investmentAmount": 1_000},
                timeout=10,
            )
            for _ in range(2)
        ]
        assert [r.status_code for r in retried] == [200, 200]
        assert retried[0].json()["investment_amount"] == 1_000
        assert "Idempotent-Replayed" not in retried[0].headers
        assert retried[1].headers["Idempotent-Replayed"] == "true"
        assert retried[1].json()["investment_id"] == retried[0].json()["investment_id"]
    assert ledger_sum(database_url, goods) == 3_000
    verify_ledger(database_url)


def test_a_call_the_database_refused_answers_service_unavailable_with_retry_after(
    database_url: str,
) -> None:
    """statement_timeout ends the call with an ERROR: rolled back, known, safe to retry as is."""
    goods = create_goods(database_url, total=10**9)
    user = fresh_user()
    with running_service(database_url, workers=1, DB_STATEMENT_TIMEOUT="0.5") as service:
        holder = hold_rows(database_url, [goods], seconds=2)
        try:
            refused = httpx.post(
                service.base_url + PATH,
                headers={"X-USER-ID": str(user)},
                json={"goodsId": goods, "investmentAmount": 1_000},
                timeout=10,
            )
        finally:
            holder.wait(30)
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "SERVICE_UNAVAILABLE"
        assert refused.headers["Retry-After"] == "1"
        assert ledger_sum(database_url, goods) == 0
        again = httpx.post(
            service.base_url + PATH,
            headers={"X-USER-ID": str(user)},
            json={"goodsId": goods, "investmentAmount": 1_000},
            timeout=10,
        )
        assert again.status_code == 200
    assert ledger_sum(database_url, goods) == 1_000
    verify_ledger(database_url)


def test_a_full_queue_answers_503_at_once_with_retry_after(database_url: str) -> None:
    """INVEST_QUEUE_MAX=2: with one call stuck on a locked row, four more invests arrive; two
    wait in the queue, the other two are refused at once (while the call is still stuck), with
    Retry-After, and nothing they asked for is written."""
    goods = create_goods(database_url, total=10**9)
    users = [fresh_user() for _ in range(5)]
    with running_service(
        database_url, workers=1, INVEST_QUEUE_MAX="2", DB_ACQUIRE_TIMEOUT="10",
        DB_STATEMENT_TIMEOUT="20",
    ) as service:  # fmt: skip
        holder = hold_rows(database_url, [goods], seconds=8)
        try:

            async def scenario() -> tuple[list[httpx.Response], list[httpx.Response], bool]:
                async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:

                    def invest(user: int) -> asyncio.Task[httpx.Response]:
                        return asyncio.create_task(
                            client.post(PATH, headers={"X-USER-ID": str(user)},
                                        json={"goodsId": goods, "investmentAmount": 1_000})
                        )  # fmt: skip

                    first = invest(users[0])
                    deadline = time.monotonic() + 10
                    while not held_product_waiters(database_url):
                        assert time.monotonic() < deadline, "the invest call never waited"
                        await asyncio.sleep(0.05)
                    more = [invest(user) for user in users[1:]]
                    # The refusals come back while the row is still locked: nothing else can.
                    done, _ = await asyncio.wait(
                        more, timeout=2.5, return_when=asyncio.ALL_COMPLETED
                    )
                    still_stuck = bool(held_product_waiters(database_url))
                    refused = [task.result() for task in done]
                    served = await asyncio.gather(first, *(t for t in more if t not in done))
                    return refused, list(served), still_stuck

            refused, served, still_stuck = asyncio.run(scenario())
        finally:
            holder.wait(30)
    assert still_stuck, "the row was released before the refusals were seen"
    assert len(refused) == 2, [r.status_code for r in refused]
    for answer in refused:
        assert answer.status_code == 503, answer.text
        assert answer.json()["code"] == "SERVICE_UNAVAILABLE"
        assert answer.headers["Retry-After"] == "1"
    assert [r.status_code for r in served] == [200, 200, 200]
    assert ledger_sum(database_url, goods) == 3_000
    verify_ledger(database_url)
