"""Investor caps through the service (SPEC §4): 422 INVESTMENT_LIMIT_EXCEEDED and its replay,
INVALID_AMOUNT from a product's rules, GET user/limits, and their OpenAPI description."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.integration.test_idempotency import invest as invest_keyed
from tests.integration.test_limits import capped_user, caps, product  # noqa: F401 (a fixture)
from tests.support import counters, fresh_user, hold_rows, problem, verify_ledger

INVEST = "/v1/api/investment/user/goods"
LIMITS = "/v1/api/investment/user/limits"


def invest(
    client: httpx.Client, user: int, goods_id: int, amount: int, key: str | None = None
) -> httpx.Response:
    return invest_keyed(client, user, goods_id, amount, key)


def test_over_a_cap_is_422_with_the_binding_cap_and_nothing_written(
    client: httpx.Client,
    database_url: str,
    caps: Any,  # noqa: F811
) -> None:
    caps(5_000, 8_000, None)
    first, second = product(database_url), product(database_url)
    user = capped_user(database_url)
    assert invest(client, user, first, 5_000).status_code == 200
    refused = invest(client, user, first, 1)
    problem(refused, 422, "INVESTMENT_LIMIT_EXCEEDED")
    assert (refused.json()["limit"], refused.json()["remaining"]) == ("per_product", 0)
    refused = invest(client, user, second, 4_000, key="big")
    problem(refused, 422, "INVESTMENT_LIMIT_EXCEEDED")
    assert (refused.json()["limit"], refused.json()["remaining"]) == ("total", 3_000)
    assert counters(database_url, second) == (0, 0)
    # The keyed retry answers the same 422, even once room is free (a cap raised).
    caps(5_000, 100_000, None)
    replayed = invest(client, user, second, 4_000, key="big")
    assert replayed.status_code == 422
    assert replayed.json() == refused.json()
    assert counters(database_url, second) == (0, 0)
    assert invest(client, user, second, 4_000, key="other").json()["investment_amount"] == 4_000
    verify_ledger(database_url)


def test_a_products_amount_rules_are_400_invalid_amount(
    client: httpx.Client, database_url: str
) -> None:
    goods_id = product(database_url, min_amount=10_000, amount_unit=1_000)
    user = fresh_user()
    below = invest(client, user, goods_id, 9_000)
    problem(below, 400, "INVALID_AMOUNT")
    assert below.json()["rule"] == "min_amount" and below.json()["min_amount"] == 10_000
    assert "10000" in below.json()["detail"] and "min_amount" in below.json()["detail"]
    off_unit = invest(client, user, goods_id, 10_500)
    problem(off_unit, 400, "INVALID_AMOUNT")
    assert off_unit.json()["rule"] == "amount_unit" and off_unit.json()["amount_unit"] == 1_000
    assert "amount_unit" in off_unit.json()["detail"]
    assert invest(client, user, goods_id, 11_000).json()["investment_amount"] == 11_000
    assert counters(database_url, goods_id) == (11_000, 1)


def test_limits_without_caps_are_null(client: httpx.Client) -> None:
    user = fresh_user()
    answer = client.get(LIMITS, headers={"X-USER-ID": str(user)})
    assert answer.status_code == 200
    assert answer.json() == {
        "user_id": user,
        "investor_class": "general",
        "limits": {"per_product": None, "total": None, "real_estate": None},
        "invested": {"total": 0, "real_estate": 0},
        "remaining": {"total": None, "real_estate": None},
    }


def test_limits_show_the_users_own_invests_and_the_room_in_a_product(
    client: httpx.Client,
    database_url: str,
    caps: Any,  # noqa: F811
) -> None:
    caps(5_000, 30_000, 10_000)
    estate = product(database_url, total=100_000, category="real_estate", amount_unit=1_000)
    small = product(database_url, total=2_500)
    user = capped_user(database_url)
    assert invest(client, user, estate, 3_000).status_code == 200
    answer = client.get(LIMITS, params={"goods_id": estate}, headers={"X-USER-ID": str(user)})
    assert answer.status_code == 200
    assert answer.json() == {
        "user_id": user,
        "investor_class": "qualified",
        "limits": {"per_product": 5_000, "total": 30_000, "real_estate": 10_000},
        "invested": {"total": 3_000, "real_estate": 3_000},
        "remaining": {"total": 27_000, "real_estate": 7_000},
        "goods_id": estate,
        "remaining_for_goods": 2_000,  # per_product: 5,000 - 3,000
    }
    headers = {"X-USER-ID": str(user)}
    small_room = client.get(LIMITS, params={"goods_id": small}, headers=headers).json()
    assert small_room["remaining_for_goods"] == 2_500  # the product's own remaining amount
    # What it says is granted in full; one more is refused.
    assert invest(client, user, estate, 2_000).json()["investment_amount"] == 2_000
    problem(invest(client, user, estate, 1_000), 422, "INVESTMENT_LIMIT_EXCEEDED")


def test_limits_refusals(client: httpx.Client) -> None:
    problem(client.get(LIMITS), 400, "MISSING_USER_ID")
    problem(client.get(LIMITS, headers={"X-USER-ID": "x"}), 400, "INVALID_USER_ID")
    headers = {"X-USER-ID": "1"}
    for bad in ("0", "-1", "abc", "1.5", str(2**63), "1&goods_id=2"):
        problem(
            client.get(LIMITS, params={"goods_id": bad}, headers=headers), 400, "INVALID_GOODS_ID"
        )
    problem(client.get(LIMITS, params={"goods_id": 2**62}, headers=headers), 404, "GOODS_NOT_FOUND")


def test_the_openapi_document_describes_caps(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    operation = document["paths"][LIMITS]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"X-USER-ID", "goods_id"}
    assert set(operation["responses"]) == {"200", "400", "404", "503"}
    invest_op = document["paths"][INVEST]["post"]
    assert "INVESTMENT_LIMIT_EXCEEDED" in invest_op["responses"]["422"]["description"]
    text = str(document)
    assert "remaining_for_goods" in text and "real_estate" in text
    assert "'limit'" in text and "'remaining'" in text and "'rule'" in text


def test_a_refused_request_changes_no_other_answer_through_the_service(
    service: Any,
    database_url: str,
    caps: Any,  # noqa: F811
) -> None:
    """Requests held behind a locked product go together once it is free: the capped user's
    request over its cap (80 > 50) is refused and takes nothing, so the next user's request finds
    the product's whole remainder (100), as if the refused one had not been made."""
    caps(50, None, None)
    goods_id = product(database_url, total=100)
    capped, plain = capped_user(database_url), fresh_user()
    holder = hold_rows(database_url, [goods_id], seconds=0.8)
    try:

        async def together() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as client:

                async def send(user: int, amount: int) -> httpx.Response:
                    return await client.post(
                        INVEST,
                        headers={"X-USER-ID": str(user)},
                        json={"goodsId": goods_id, "investmentAmount": amount},
                    )

                first = asyncio.create_task(send(capped, 80))
                await asyncio.sleep(0.1)  # arrival order: the capped user's first
                second = asyncio.create_task(send(plain, 100))
                return [await first, await second]

        refused, granted = asyncio.run(together())
    finally:
        holder.wait(10)
    problem(refused, 422, "INVESTMENT_LIMIT_EXCEEDED")
    assert (refused.json()["limit"], refused.json()["remaining"]) == ("per_product", 50)
    assert granted.status_code == 200, granted.text
    assert granted.json()["investment_amount"] == 100
    assert granted.json()["state"] == "sold_out"
    assert counters(database_url, goods_id) == (100, 1)
