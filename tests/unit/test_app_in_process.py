"""The real application in process (tests/fakes.py `serving`): the three APIs, health, the
router's 404 and 405, HEAD and the request id, through the same entry, wrappers and exception
table as production, with the in-memory database where PostgreSQL's pools go."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from blacksheep import Content, Response
from blacksheep.testing import TestClient

from service.db import DatabaseUnavailable, OutcomeUnknown
from service.handlers import BASE
from tests.fakes import MemoryDatabase, Product, serving

WINDOW = "started_at=2026-11-01%2000:00:00&finished_at=2026-12-31%2000:00:00"
Scenario = Callable[[TestClient, MemoryDatabase], Awaitable[None]]


def products() -> MemoryDatabase:
    database = MemoryDatabase()
    database.add(
        Product(1, "개인신용 포트폴리오", 1_000_000, "2026-11-20 00:00:00", "2026-12-20 00:00:00")
    )
    database.add(Product(2, "부동산 포트폴리오", 500, "2026-11-21 00:00:00", "2026-12-21 00:00:00"))
    database.add(
        Product(3, "outside the window", 100, "2027-01-01 00:00:00", "2027-02-01 00:00:00")
    )
    return database


def run(scenario: Scenario, database: MemoryDatabase | None = None, **settings: Any) -> None:
    async def main() -> None:
        db = database or products()
        async with serving(db, **settings) as client:
            await scenario(client, db)

    asyncio.run(main())


def invest_body(goods_id: int, amount: int) -> Content:
    return Content(
        b"application/json", orjson.dumps({"goodsId": goods_id, "investmentAmount": amount})
    )


async def problem(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status == status
    assert response.content_type() == b"application/problem+json"
    body: dict[str, Any] = orjson.loads(await response.read() or b"")
    assert (body["status"], body["code"]) == (status, code)
    return body


def test_the_list_answers_the_products_in_the_window() -> None:
    async def scenario(client: TestClient, db: MemoryDatabase) -> None:
        response = await client.get(f"{BASE}/goods?{WINDOW}")
        assert response.status == 200
        assert response.content_type() == b"application/json"
        listed = orjson.loads(await response.read() or b"")
        assert [item["goods_id"] for item in listed] == [1, 2]
        assert listed[0] == {
            "goods_id": 1, "title": "개인신용 포트폴리오", "total_investing_amount": 1_000_000,
            "current_investing_amount": 0, "investor_count": 0, "status": True,
            "state": "recruiting", "started_at": "2026-11-20 00:00:00",
            "finished_at": "2026-12-20 00:00:00",
        }  # fmt: skip
        empty = await client.get(
            f"{BASE}/goods?started_at=2020-01-01%2000:00:00&finished_at=2020-02-01%2000:00:00"
        )
        await problem(empty, 404, "GOODS_NOT_FOUND")
        await problem(await client.get(f"{BASE}/goods"), 400, "INVALID_PERIOD")

    run(scenario)


@pytest.mark.parametrize(
    ("user", "code"),
    [(None, "MISSING_USER_ID"), (b"", "MISSING_USER_ID"), (b"abc", "INVALID_USER_ID"),
     (b"-1", "INVALID_USER_ID"), (b"0", "INVALID_USER_ID")],
)  # fmt: skip
def test_an_invest_with_a_bad_user_header_is_a_400_that_reaches_no_database(
    user: bytes | None, code: str
) -> None:
    async def scenario(client: TestClient, db: MemoryDatabase) -> None:
        headers = [] if user is None else [(b"X-USER-ID", user)]
        response = await client.post(f"{BASE}/user/goods", headers, content=invest_body(1, 100))
        await problem(response, 400, code)
        assert "invest-batch" not in db.sent

    run(scenario)


def test_an_invest_is_granted_through_the_database_and_shows_in_my_investments() -> None:
    async def scenario(client: TestClient, db: MemoryDatabase) -> None:
        user = [(b"X-USER-ID", b"42")]
        response = await client.post(f"{BASE}/user/goods", user, content=invest_body(2, 300))
        assert response.status == 200
        result = orjson.loads(await response.read() or b"")
        assert result == {
            "user_id": 42, "goods_id": 2, "total_investing_amount": 500,
            "investment_amount": 300, "status": True, "invest_date": db.now,
            "requested_amount": 300, "current_investing_amount": 300, "state": "recruiting",
            "investment_id": 1,
        }  # fmt: skip
        sold_out = await client.post(f"{BASE}/user/goods", user, content=invest_body(2, 300))
        last = orjson.loads(await sold_out.read() or b"")
        assert (last["investment_amount"], last["status"], last["state"]) == (
            200,
            False,
            "sold_out",
        )
        assert db.products[2].current_investing_amount == 500

        mine = await client.get(f"{BASE}/user/goods", user)
        assert mine.status == 200
        items = orjson.loads(await mine.read() or b"")
        assert [item["user_investing_amount"] for item in items] == [300, 200]
        first_page = await client.get(f"{BASE}/user/goods?limit=1", user)
        assert [len(orjson.loads(await first_page.read() or b""))] == [1]
        link = first_page.get_first_header(b"Link") or b""
        assert link.startswith(f"<{BASE}/user/goods?limit=1&cursor=".encode())
        assert link.endswith(b'>; rel="next"')
        second = await client.get(link[1 : link.index(b">")].decode(), user)
        assert [
            item["user_investing_amount"] for item in orjson.loads(await second.read() or b"")
        ] == [200]
        assert second.get_first_header(b"Link") is None
        nobody = await client.get(f"{BASE}/user/goods", [(b"X-USER-ID", b"7")])
        await problem(nobody, 404, "INVESTMENTS_NOT_FOUND")

    run(scenario)


def test_an_unknown_product_is_a_404_and_a_repeated_key_a_replay() -> None:
    async def scenario(client: TestClient, db: MemoryDatabase) -> None:
        user = [(b"X-USER-ID", b"42")]
        unknown = await client.post(f"{BASE}/user/goods", user, content=invest_body(99, 1))
        await problem(unknown, 404, "GOODS_NOT_FOUND")
        keyed = [*user, (b"Idempotency-Key", b"order-1")]
        first = await client.post(f"{BASE}/user/goods", keyed, content=invest_body(1, 10))
        again = await client.post(f"{BASE}/user/goods", keyed, content=invest_body(1, 10))
        assert first.get_first_header(b"Idempotent-Replayed") is None
        assert again.get_first_header(b"Idempotent-Replayed") == b"true"
        assert await first.read() == await again.read()
        assert len(db.ledger) == 1
        other = await client.post(f"{BASE}/user/goods", keyed, content=invest_body(1, 11))
        await problem(other, 422, "IDEMPOTENCY_KEY_MISMATCH")

    run(scenario)


def test_the_router_answers_404_and_405_with_allow_as_problems() -> None:
    async def scenario(client: TestClient, db: MemoryDatabase) -> None:
        await problem(await client.get("/v1/api/nothing"), 404, "NOT_FOUND")
        refused = await client.delete(f"{BASE}/goods")
        await problem(refused, 405, "METHOD_NOT_ALLOWED")
        assert refused.get_first_header(b"Allow") == b"GET, HEAD"
        both = await client.put(f"{BASE}/user/goods")
        await problem(both, 405, "METHOD_NOT_ALLOWED")
        assert both.get_first_header(b"Allow") == b"GET, HEAD, POST"

    run(scenario)


def test_head_answers_as_get_and_the_request_id_is_echoed_on_every_route() -> None:
    async def scenario(client: TestClient, db: MemoryDatabase) -> None:
        got = await client.get(f"{BASE}/goods?{WINDOW}")
        head = await client.head(f"{BASE}/goods?{WINDOW}")
        assert head.status == 200
        assert head.get_first_header(b"content-length") == got.get_first_header(b"content-length")
        traced = [(b"X-Request-ID", b"trace-in-process")]
        for path in (f"{BASE}/goods?{WINDOW}", "/healthz", "/no/such/route", "/openapi.json"):
            response = await client.get(path, traced)
            assert response.get_first_header(b"X-Request-ID") == b"trace-in-process", path
        own = (await client.get("/healthz")).get_first_header(b"X-Request-ID")
        assert own and own != b"trace-in-process"  # none given: the service makes one

    run(scenario)


def test_health_and_readiness_follow_the_database() -> None:
    async def scenario(client: TestClient, db: MemoryDatabase) -> None:
        healthz = await client.get("/healthz")
        assert (healthz.status, await healthz.read()) == (200, b'{"status":"ok"}')
        readyz = await client.get("/readyz")
        assert (readyz.status, await readyz.read()) == (200, b'{"status":"ready"}')
        db.fail = DatabaseUnavailable("no database connection within 2s")
        down = await client.get("/readyz")
        await problem(down, 503, "SERVICE_UNAVAILABLE")
        assert down.get_first_header(b"Retry-After") == b"1"
        assert (await client.get("/healthz")).status == 200  # liveness needs no database
        await problem(await client.get(f"{BASE}/goods?{WINDOW}"), 503, "SERVICE_UNAVAILABLE")

    run(scenario)


def test_the_worker_closes_the_databases_it_was_given_when_the_app_stops() -> None:
    db = products()
    run(lambda client, db: asyncio.sleep(0), db)
    assert db.closed == 2  # the request pool and the readiness probe's (reads is the same one)
    assert "lock-table-settings" in db.sent  # the worker read the key budget at start


def test_metrics_off_is_no_route_and_on_counts_the_requests_in_process() -> None:
    async def off(client: TestClient, db: MemoryDatabase) -> None:
        assert (await client.get(f"{BASE}/goods?{WINDOW}")).status == 200
        await problem(await client.get("/metrics"), 404, "NOT_FOUND")

    async def on(client: TestClient, db: MemoryDatabase) -> None:
        assert (await client.get(f"{BASE}/goods?{WINDOW}")).status == 200
        user = [(b"X-USER-ID", b"5")]
        assert (
            await client.post(f"{BASE}/user/goods", user, content=invest_body(1, 1))
        ).status == 200
        text = (await (await client.get("/metrics")).read() or b"").decode()
        assert f'http_requests_total{{method="GET",route="{BASE}/goods",status="200"}} 1.0' in text
        assert 'invest_outcomes_total{outcome="full"} 1.0' in text
        assert 'list_cache_requests_total{result="miss"} 1.0' in text

    run(off)
    run(on, metrics_enabled=True)


def test_a_cancellation_whose_answer_was_lost_is_503_with_retry_after_and_says_repeat() -> None:
    """Unlike an invest's, a cancellation's lost answer needs no key: the same DELETE again
    answers the stored cancellation, or makes it once."""

    async def scenario(client: TestClient, db: MemoryDatabase) -> None:
        db.fail = OutcomeUnknown("the answer to cancel-investment was lost")
        lost = await client.delete(f"{BASE}/user/goods/12", [(b"X-USER-ID", b"42")])
        body = await problem(lost, 503, "SERVICE_UNAVAILABLE")
        assert lost.get_first_header(b"Retry-After") == b"1"
        assert "Repeat the same DELETE" in body["detail"]
        assert db.sent == ["cancel-investment"]
        invalid = await client.delete(f"{BASE}/user/goods/x", [(b"X-USER-ID", b"42")])
        await problem(invalid, 400, "INVALID_INVESTMENT_ID")
        assert db.sent == ["cancel-investment"]  # refused before the database

    run(scenario)
