"""A database that goes away: bounded 503s while it is down, recovery without a restart."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from service.ops.embedded import EmbeddedPostgres
from tests.load import check_ledger, drive, make_orders
from tests.support import (
    ROOT,
    collector_paused,
    create_goods,
    free_port,
    fresh_user,
    hold_rows,
    migrate,
    psql,
    running_service,
)

pytestmark = pytest.mark.system

WAITING_ON_LOCKS = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE application_name = 'investment-service' AND wait_event_type = 'Lock'"
)

REQUESTS = [
    ("GET", "/readyz", {}),
    (
        "GET",
        "/v1/api/investment/goods",
        {"params": {"started_at": "2000-01-01 00:00:00", "finished_at": "2999-01-01 00:00:00"}},
    ),
    ("GET", "/v1/api/investment/user/goods", {"headers": {"X-USER-ID": "1"}}),
]


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, so stopping it disturbs nothing else."""
    (ROOT / ".data").mkdir(exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="outage-pg-", dir=ROOT / ".data"))
    server = EmbeddedPostgres(data_dir, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(data_dir, ignore_errors=True)


def test_database_down_answers_503_then_recovers(own_postgres: EmbeddedPostgres) -> None:
    url = own_postgres.url
    migrate(url)
    goods_id = create_goods(url, total=10**9)
    invest = (
        "POST",
        "/v1/api/investment/user/goods",
        {
            "headers": {"X-USER-ID": str(fresh_user())},
            "json": {"goodsId": goods_id, "investmentAmount": 10},
        },
    )
    with (
        running_service(url, workers=2, DB_ACQUIRE_TIMEOUT="1", LIST_CACHE_SECONDS="0") as service,
        httpx.Client(base_url=service.base_url, timeout=15) as client,
    ):
        assert client.request(*invest[:2], **invest[2]).status_code == 200

        own_postgres.stop("immediate")
        for method, path, kwargs in [*REQUESTS, invest]:
            started = time.monotonic()
            response = client.request(method, path, **kwargs)
            elapsed = time.monotonic() - started
            assert response.status_code == 503, (path, response.text)
            assert response.json()["code"] == "SERVICE_UNAVAILABLE"
            assert response.headers["Retry-After"] == "1"
            assert elapsed < 5, f"{path} took {elapsed:.1f}s while the database was down"
        assert client.get("/healthz").status_code == 200  # the workers are alive

        own_postgres.start()
        deadline = time.monotonic() + 10
        while client.request(*invest[:2], **invest[2]).status_code != 200:
            assert time.monotonic() < deadline, "no recovery within 10 s of the database's return"
            time.sleep(0.2)
        for method, path, kwargs in REQUESTS[:2]:
            assert client.request(method, path, **kwargs).status_code == 200


def test_database_restart_under_load_loses_nothing(own_postgres: EmbeddedPostgres) -> None:
    """Keyed invests keep coming while the database stops and starts again: answers while it is
    down are bounded 503s, the service recovers by itself, retries with the same keys settle
    every order exactly once, and the ledger verifies."""
    url = own_postgres.url
    migrate(url)
    orders, totals = make_orders(url, seed=3, count=1_500, products=6, users=300, cancels=0.1)

    def met(answer: str) -> int:
        return sum(order.attempts.count(answer) for order in orders)

    async def until(load: asyncio.Task[None], condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            assert not load.done(), f"the load ended before {what}"
            assert time.monotonic() < deadline, f"not within 30 s: {what}"
            await asyncio.sleep(0.05)

    async def scenario(base_url: str) -> None:
        load = asyncio.create_task(
            drive([base_url], orders, concurrency=24, retry_on=frozenset({409, 503}))
        )
        await until(load, lambda: met("200") >= 100, "100 orders answered before the outage")
        await asyncio.to_thread(own_postgres.stop, "immediate")
        before = met("503")
        await until(load, lambda: met("503") >= before + 24, "24 answers 503 during the outage")
        await asyncio.to_thread(own_postgres.start)
        await asyncio.wait_for(load, 120)

    with running_service(url, workers=2, DB_ACQUIRE_TIMEOUT="1", DB_POOL_SIZE="8") as service:
        asyncio.run(scenario(service.base_url))
        assert service.process.poll() is None  # no restart was needed

    attempts = [(a, s) for o in orders for a, s in zip(o.attempts, o.seconds, strict=True)]
    unavailable = [s for a, s in attempts if a == "503"]
    assert unavailable, "the outage happened after the load"
    assert max(unavailable) < 5, f"a 503 took {max(unavailable):.1f}s"
    assert {a for a, _ in attempts} <= {"200", "409", "503"}
    check_ledger(url, orders, totals)
    print(
        f"\ndatabase restart under load: {len(orders)} orders, {len(unavailable)} answers 503"
        f" (slowest {max(unavailable):.2f}s), all settled once after the restart"
    )


def test_readiness_has_its_own_connection(own_postgres: EmbeddedPostgres) -> None:
    """Every connection of the request pool waits on a locked product row (the peak of an
    opening, or a stuck operator session): /readyz still answers 200 at once, because the
    database does answer. Stopped, the database reads as not ready."""
    url = own_postgres.url
    migrate(url)
    goods = [create_goods(url, total=10**9) for _ in range(2)]
    with running_service(
        url, workers=1, DB_POOL_SIZE="2", DB_STATEMENT_TIMEOUT="30", DB_ACQUIRE_TIMEOUT="30",
        LIST_CACHE_SECONDS="0", INVEST_CALLS_IN_FLIGHT="2", INVEST_BATCH_MAX="1",  # two calls: the pool
    ) as service:  # fmt: skip
        holder = hold_rows(url, goods, seconds=30)
        try:

            async def scenario() -> list[tuple[int, float]]:
                async with httpx.AsyncClient(base_url=service.base_url, timeout=60) as client:
                    invests = [
                        asyncio.create_task(
                            client.post("/v1/api/investment/user/goods",
                                        headers={"X-USER-ID": str(fresh_user())},
                                        json={"goodsId": goods_id, "investmentAmount": 10})
                        )
                        for goods_id in goods for _ in range(5)
                    ]  # fmt: skip
                    # Exhausted: both connections of the pool wait on the row locks.
                    deadline = time.monotonic() + 10
                    while psql(url, WAITING_ON_LOCKS) != "2":
                        assert time.monotonic() < deadline, "the pool was never exhausted"
                        await asyncio.sleep(0.05)
                    answers = []
                    for _ in range(20):
                        started = time.monotonic()
                        try:
                            status = (await client.get("/readyz", timeout=1)).status_code
                        except httpx.TimeoutException:
                            status = 0  # as a balancer's check would time out
                        answers.append((status, time.monotonic() - started))
                    assert not any(task.done() for task in invests), "the invests did not wait"
                    for task in invests:
                        task.cancel()
                    await asyncio.gather(*invests, return_exceptions=True)
                    return answers

            with collector_paused():
                answers = asyncio.run(scenario())
            assert [status for status, _ in answers] == [200] * 20
            slowest = max(seconds for _, seconds in answers)
            assert slowest < 0.1, f"/readyz took {slowest * 1000:.0f} ms with the pool exhausted"

            own_postgres.stop("immediate")
            started = time.monotonic()
            down = httpx.get(service.base_url + "/readyz", timeout=10)
            elapsed = time.monotonic() - started
        finally:
            holder.kill()
            holder.wait(30)
        assert down.status_code == 503
        assert down.json()["code"] == "SERVICE_UNAVAILABLE"
        assert elapsed < 1.5, f"/readyz took {elapsed:.1f}s to say the database is gone"
        print(
            f"\nreadiness: with the request pool exhausted, 20 × /readyz 200, slowest"
            f" {slowest * 1000:.1f} ms; database stopped: 503 in {elapsed * 1000:.0f} ms"
        )
