"""POST /v1/api/investment/user/goods: every row of SPEC §2's table, validation, counters."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support import counters, create_goods, fresh_user, ledger_sum, problem, psql

PATH = "/v1/api/investment/user/goods"
TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def invest(client: httpx.Client, user: int, goods_id: int, amount: int) -> httpx.Response:
    return client.post(
        PATH,
        headers={"X-USER-ID": str(user)},
        json={"goodsId": goods_id, "investmentAmount": amount},
    )


def test_recruiting_amount_below_remaining_is_invested_in_full(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url, total=100_000)
    response = invest(client, user, goods_id, 30_000)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["user_id"] == user
    assert body["goods_id"] == goods_id
    assert body["total_investing_amount"] == 100_000
    assert body["investment_amount"] == 30_000
    assert body["requested_amount"] == 30_000
    assert body["status"] is True
    assert body["current_investing_amount"] == 30_000
    assert body["state"] == "recruiting"
    assert TIME.match(body["invest_date"])
    assert isinstance(body["investment_id"], int)
    assert (
        psql(
            database_url,
            f"SELECT user_id, user_investing_amount FROM user_investment_goods WHERE id = {body['investment_id']}",
        )
        == f"{user}\t30000"
    )


def test_invest_sells_out_with_remainder(client: httpx.Client, database_url: str) -> None:
    goods_id = create_goods(database_url, total=100_000)
    assert invest(client, fresh_user(), goods_id, 70_000).json()["status"] is True
    body = invest(client, fresh_user(), goods_id, 50_000).json()
    assert body["investment_amount"] == 30_000
    assert body["requested_amount"] == 50_000
    assert body["status"] is False
    assert body["state"] == "sold_out"
    assert body["current_investing_amount"] == 100_000
    assert ledger_sum(database_url, goods_id) == 100_000


def test_amount_equal_to_remaining_sells_out_with_status_false(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url, total=50_000)
    body = invest(client, user, goods_id, 50_000).json()
    assert (body["investment_amount"], body["status"], body["state"]) == (50_000, False, "sold_out")


@pytest.mark.parametrize(
    "kind, columns",
    [
        ("closed", {"status": False}),
        (
            "finished",
            {"started_at": "now() - interval '10 days'", "finished_at": "now() - interval '1 day'"},
        ),
        (
            "upcoming",
            {"started_at": "now() + interval '1 day'", "finished_at": "now() + interval '10 days'"},
        ),
    ],
)
def test_not_recruiting_invests_nothing(
    client: httpx.Client, database_url: str, user: int, kind: str, columns: dict
) -> None:  # type: ignore[type-arg]
    goods_id = create_goods(database_url, total=100_000, **columns)
    response = invest(client, user, goods_id, 10_000)
    assert response.status_code == 200
    body = response.json()
    assert body["investment_amount"] == 0
    assert body["status"] is False
    assert body["state"] == kind
    assert body["investment_id"] is None
    assert ledger_sum(database_url, goods_id) == 0
    assert counters(database_url, goods_id) == (0, 0)


def test_sold_out_invests_nothing(client: httpx.Client, database_url: str) -> None:
    goods_id = create_goods(database_url, total=10_000)
    invest(client, fresh_user(), goods_id, 10_000)
    body = invest(client, fresh_user(), goods_id, 1).json()
    assert (body["investment_amount"], body["status"], body["state"]) == (0, False, "sold_out")
    assert ledger_sum(database_url, goods_id) == 10_000


def test_finished_at_boundary_is_finished(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(
        database_url, started_at="now() - interval '1 day'", finished_at="now()"
    )
    assert invest(client, user, goods_id, 100).json()["state"] == "finished"


def test_unknown_product_is_404(client: httpx.Client, user: int) -> None:
    problem(invest(client, user, 9_000_000_000_000, 100), 404, "GOODS_NOT_FOUND")


def test_snake_case_body_and_unknown_keys(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url)
    response = client.post(
        PATH,
        headers={"X-USER-ID": str(user)},
        json={"goods_id": goods_id, "investment_amount": 10, "note": "x"},
    )
    assert response.status_code == 200
    assert response.json()["investment_amount"] == 10


def test_counters_follow_the_ledger_and_count_distinct_investors(
    client: httpx.Client, database_url: str
) -> None:
    goods_id = create_goods(database_url, total=1_000_000)
    alice, bob = fresh_user(), fresh_user()
    for who, amount in [(alice, 100), (bob, 200), (alice, 300), (alice, 400)]:
        assert invest(client, who, goods_id, amount).status_code == 200
    assert counters(database_url, goods_id) == (1000, 2)
    assert ledger_sum(database_url, goods_id) == 1000


def test_missing_user_id(client: httpx.Client, database_url: str) -> None:
    goods_id = create_goods(database_url)
    problem(
        client.post(PATH, json={"goodsId": goods_id, "investmentAmount": 1}), 400, "MISSING_USER_ID"
    )
    problem(
        client.post(
            PATH, headers={"X-USER-ID": ""}, json={"goodsId": goods_id, "investmentAmount": 1}
        ),
        400,
        "MISSING_USER_ID",
    )


@pytest.mark.parametrize(
    "value", ["abc", "0", "-5", "1.5", "9223372036854775808", "1 OR 1=1", "' OR '1'='1"]
)
def test_invalid_user_id(client: httpx.Client, database_url: str, value: str) -> None:
    goods_id = create_goods(database_url)
    problem(
        client.post(
            PATH, headers={"X-USER-ID": value}, json={"goodsId": goods_id, "investmentAmount": 1}
        ),
        400,
        "INVALID_USER_ID",
    )
    assert ledger_sum(database_url, goods_id) == 0


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"x"', b"\xff\xfe\xfd", b"{" * 3000])
def test_body_not_a_json_object(client: httpx.Client, user: int, raw: bytes) -> None:
    problem(
        client.post(
            PATH, headers={"X-USER-ID": str(user), "content-type": "application/json"}, content=raw
        ),
        400,
        "INVALID_BODY",
    )


@pytest.mark.parametrize("goods_id", [None, 0, -1, "1", 1.5, True, 2**63])
def test_invalid_goods_id(client: httpx.Client, user: int, goods_id: object) -> None:
    problem(
        client.post(
            PATH,
            headers={"X-USER-ID": str(user)},
            json={"goodsId": goods_id, "investmentAmount": 100},
        ),
        400,
        "INVALID_GOODS_ID",
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"0",
        b"-100",
        b"100.0",
        b"1e5",
        b'"100"',
        b"true",
        b"null",
        b"9007199254740992",
        b"123456789012345678901234567890",
    ],
)
def test_invalid_amount(client: httpx.Client, database_url: str, user: int, raw: bytes) -> None:
    goods_id = create_goods(database_url)
    body = b'{"goodsId": %d, "investmentAmount": %s}' % (goods_id, raw)
    problem(
        client.post(PATH, headers={"X-USER-ID": str(user)}, content=body), 400, "INVALID_AMOUNT"
    )
    assert ledger_sum(database_url, goods_id) == 0


def test_largest_amount_is_accepted(client: httpx.Client, database_url: str, user: int) -> None:
    goods_id = create_goods(database_url, total=2**62)
    body = invest(client, user, goods_id, 2**53 - 1).json()
    assert body["investment_amount"] == 2**53 - 1


def test_oversized_body_is_413_and_writes_nothing(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url)
    padding = "x" * (16 * 1024)
    response = client.post(
        PATH,
        headers={"X-USER-ID": str(user)},
        json={"goodsId": goods_id, "investmentAmount": 5, "pad": padding},
    )
    problem(response, 413, "PAYLOAD_TOO_LARGE")

    def chunks():  # no Content-Length: the limit holds for a chunked body too
        yield b'{"goodsId": %d, "investmentAmount": 5, "pad": "' % goods_id
        for _ in range(20):
            yield b"y" * 1024
        yield b'"}'

    problem(
        client.post(PATH, headers={"X-USER-ID": str(user)}, content=chunks()),
        413,
        "PAYLOAD_TOO_LARGE",
    )
    assert ledger_sum(database_url, goods_id) == 0


def test_body_just_under_the_limit_is_accepted(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url)
    prefix = b'{"goodsId": %d, "investmentAmount": 5, "pad": "' % goods_id
    raw = prefix + b"z" * (16 * 1024 - len(prefix) - 2) + b'"}'
    assert len(raw) == 16 * 1024
    assert client.post(PATH, headers={"X-USER-ID": str(user)}, content=raw).status_code == 200
