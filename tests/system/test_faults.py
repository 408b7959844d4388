"""A slow database with an exhausted pool, and a graceful shutdown under load."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from tests.load import PATH
from tests.support import (
    ServiceProcess,
    create_goods,
    fresh_user,
    hold_rows,
    ledger_sum,
    running_service,
    verify_ledger,
    wait_for_lock_waiters,
)

pytestmark = pytest.mark.system

WINDOW = {"started_at": "2000-01-01 00:00:00", "finished_at": "2999-01-01 00:00:00"}


async def timed(
    client: httpx.AsyncClient, method: str, url: str, **kwargs: object
) -> tuple[int, str, float]:
    started = time.monotonic()
    response = await client.request(method, url, **kwargs)  # type: ignore[arg-type]
    code = response.json().get("code", "") if response.status_code != 200 else ""
    return response.status_code, code, time.monotonic() - started


def test_a_stuck_database_and_an_exhausted_pool_answer_503_within_the_bounds(
    database_url: str,
) -> None:
    """Both connections of the pool wait on the locked products table (two invest calls in
    flight) until statement_timeout ends them; the requests queued behind get 503 once the
    acquire timeout passes. Nothing hangs, nothing is written, and the service serves again once
    the lock goes. (A held product row no longer stalls anything but its own requests:
    tests/system/test_isolation.py.)"""
    goods = [create_goods(database_url, total=10**9) for _ in range(2)]
    user = fresh_user()
    with running_service(
        database_url, workers=1, DB_POOL_SIZE="2", DB_ACQUIRE_TIMEOUT="0.5",
        DB_STATEMENT_TIMEOUT="1", LIST_CACHE_SECONDS="0", INVEST_CALLS_IN_FLIGHT="2",
        INVEST_BATCH_MAX="1",
    ) as service:  # fmt: skip
        holder = hold_rows(database_url, goods, seconds=4, whole_table=True)
        try:

            async def scenario() -> list[tuple[int, str, float]]:
                async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
                    invests = [
                        asyncio.create_task(
                            timed(client, "POST", PATH, headers={"X-USER-ID": str(user)},
                                  json={"goodsId": goods_id, "investmentAmount": 1_000})
                        )
                        for goods_id in goods for _ in range(10)
                    ]  # fmt: skip
                    # Both connections of the pool now wait on the locked table.
                    await asyncio.to_thread(wait_for_lock_waiters, database_url, 2)
                    reads = [
                        timed(client, "GET", "/v1/api/investment/goods", params=WINDOW)
                        if n % 2
                        else timed(client, "GET", PATH, headers={"X-USER-ID": str(user)})
                        for n in range(10)
                    ]
                    return await asyncio.gather(*invests, *reads)

            answers = asyncio.run(scenario())
        finally:
            holder.wait(30)
        invests, reads = answers[:20], answers[20:]
        assert all(status == 503 and code == "SERVICE_UNAVAILABLE" for status, code, _ in invests)
        # The two calls end at statement_timeout; the requests queued behind, at 0.5 s.
        assert max(seconds for *_, seconds in invests) < 3.5
        assert all(status in (503, 200, 404) for status, _, _ in reads)
        assert any(status == 503 for status, _, _ in reads), "the pool was never exhausted"
        assert max(seconds for *_, seconds in reads) < 3.5
        assert ledger_sum(database_url, goods[0]) == ledger_sum(database_url, goods[1]) == 0

        after = httpx.post(
            service.base_url + PATH, headers={"X-USER-ID": str(user)},
            json={"goodsId": goods[0], "investmentAmount": 1_000}, timeout=10,
        )  # fmt: skip
        assert after.status_code == 200
    verify_ledger(database_url)


def test_sigterm_under_load_finishes_in_flight_requests_then_exits(database_url: str) -> None:
    """Invests are in flight (their product row held by another transaction) when SIGTERM
    arrives: each still gets its 200 and its ledger row, an idle kept-alive connection is
    closed at once (its idle timeout is 75 s: shutdown does not wait for it), the process exits
    within the bound, and nothing is accepted afterwards."""
    # One request per call and enough calls in flight, so that all 20 can be seen waiting on
    # their rows in the database before the signal.
    goods = [create_goods(database_url, total=10**9) for _ in range(20)]
    users = [fresh_user() for _ in range(20)]
    # Each held product's requests wait in a call of their own (INVEST_WAIT_CALLS of them per
    # worker), up to DB_ACQUIRE_TIMEOUT: enough of both for all 20 to wait out the hold.
    service = ServiceProcess(
        database_url, workers=2, INVEST_BATCH_MAX="1", INVEST_WAIT_CALLS="20",
        DB_ACQUIRE_TIMEOUT="10",
    )  # fmt: skip
    try:
        service.wait_ready()
        holder = hold_rows(database_url, goods, seconds=3)

        async def scenario() -> tuple[list[httpx.Response | BaseException], float, bool]:
            limits = httpx.Limits(max_connections=40)
            async with httpx.AsyncClient(
                base_url=service.base_url, timeout=30, limits=limits
            ) as client:
                in_flight = [
                    asyncio.create_task(
                        client.post(PATH, headers={"X-USER-ID": str(user)},
                                    json={"goodsId": goods_id, "investmentAmount": 1_000})
                    )
                    for user, goods_id in zip(users, goods, strict=True)
                ]  # fmt: skip
                await asyncio.to_thread(wait_for_lock_waiters, database_url, len(in_flight))
                assert not any(task.done() for task in in_flight)
                reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                await reader.readuntil(b'"ok"}')  # answered; now idle, kept
                service.process.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(reader.read(), 5) == b""
                writer.close()
                answers = await asyncio.gather(*in_flight, return_exceptions=True)
                exited = await asyncio.to_thread(service.process.wait, 15)
                waited = time.monotonic()
                try:
                    await client.get("/healthz")
                    accepted_after = True
                except httpx.HTTPError:
                    accepted_after = False
                return answers, waited, accepted_after and exited is not None

        signalled = time.monotonic()
        answers, exited_at, accepted_after = asyncio.run(scenario())
        holder.wait(30)
    finally:
        service.stop()
    assert [a.status_code if isinstance(a, httpx.Response) else repr(a) for a in answers] == [
        200
    ] * 20
    assert [ledger_sum(database_url, goods_id) for goods_id in goods] == [1_000] * 20
    assert exited_at - signalled < 15
    assert service.process.returncode is not None
    assert not accepted_after
    verify_ledger(database_url)
