"""Idempotency-Key on invest (SPEC §2): replay, mismatch, per-user keys, validation."""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest

from tests.support import (
    ServiceProcess,
    counters,
    create_goods,
    fresh_user,
    ledger_sum,
    psql,
    raw_request,
)

PATH = "/v1/api/investment/user/goods"


def invest(
    client: httpx.Client, user: int, goods_id: int, amount: int, key: str | None
) -> httpx.Response:
    headers = {"X-USER-ID": str(user)}
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(
        PATH, headers=headers, json={"goodsId": goods_id, "investmentAmount": amount}
    )


def ledger_rows(database_url: str, user: int) -> int:
    return int(
        psql(database_url, f"SELECT count(*) FROM user_investment_goods WHERE user_id = {user}")
    )


def test_a_retry_replays_the_first_answer_and_writes_nothing(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url, total=100_000)
    key = str(uuid.uuid4())
    first = invest(client, user, goods_id, 30_000, key)
    assert first.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    for _ in range(3):
        again = invest(client, user, goods_id, 30_000, key)
        assert again.status_code == 200
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
    assert ledger_rows(database_url, user) == 1
    assert ledger_sum(database_url, goods_id) == 30_000
    assert counters(database_url, goods_id) == (30_000, 1)


def test_a_replay_is_the_original_answer_even_after_the_product_changed(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url, total=100_000)
    first = invest(client, user, goods_id, 40_000, "order-1")
    assert first.json()["state"] == "recruiting"
    assert invest(client, fresh_user(), goods_id, 60_000, None).json()["state"] == "sold_out"
    replay = invest(client, user, goods_id, 40_000, "order-1")
    assert replay.json() == first.json()
    assert replay.json()["current_investing_amount"] == 40_000


def test_the_same_key_with_another_body_is_refused_with_422(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url, total=100_000)
    other_goods = create_goods(database_url, total=100_000)
    assert invest(client, user, goods_id, 10_000, "k").status_code == 200
    for goods, amount in ((goods_id, 10_001), (other_goods, 10_000)):
        response = invest(client, user, goods, amount, "k")
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "IDEMPOTENCY_KEY_MISMATCH"
    assert ledger_rows(database_url, user) == 1
    assert counters(database_url, other_goods) == (0, 0)


def test_keys_belong_to_a_user(client: httpx.Client, database_url: str) -> None:
    goods_id = create_goods(database_url, total=100_000)
    first, second = fresh_user(), fresh_user()
    a = invest(client, first, goods_id, 10_000, "shared-key")
    b = invest(client, second, goods_id, 10_000, "shared-key")
    assert a.status_code == b.status_code == 200
    assert "Idempotent-Replayed" not in b.headers
    assert a.json()["investment_id"] != b.json()["investment_id"]
    assert ledger_sum(database_url, goods_id) == 20_000


def test_a_request_without_a_key_is_never_deduplicated(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url, total=100_000)
    for _ in range(2):
        assert invest(client, user, goods_id, 1_000, None).status_code == 200
    assert ledger_rows(database_url, user) == 2


def test_a_replayed_unknown_product_is_still_404(
    client: httpx.Client, database_url: str, user: int
) -> None:
    for _ in range(2):
        response = invest(client, user, 9_000_000_000, 1_000, "missing")
        assert response.status_code == 404
        assert response.json()["code"] == "GOODS_NOT_FOUND"


def test_a_zero_grant_is_replayed_as_it_was(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url, total=100_000, status=False)
    first = invest(client, user, goods_id, 5_000, "closed")
    assert first.json()["investment_amount"] == 0
    assert first.json()["state"] == "closed"
    psql(database_url, f"UPDATE investment_goods SET status = true WHERE goods_id = {goods_id}")
    replay = invest(client, user, goods_id, 5_000, "closed")
    assert replay.json() == first.json()
    assert ledger_sum(database_url, goods_id) == 0


def test_a_key_of_255_characters_is_accepted(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url)
    key = "k" * 254 + "~"
    assert invest(client, user, goods_id, 1, key).status_code == 200
    assert invest(client, user, goods_id, 1, key).headers["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize(
    "key",
    ["k" * 256, "", "   ", "한글키", "tab\tinside", "bell\x07"],
    ids=["256-chars", "empty", "blank", "non-ascii", "tab", "control-char"],
)
def test_an_invalid_key_is_400_and_writes_nothing(
    service: ServiceProcess, database_url: str, user: int, key: str
) -> None:
    goods_id = create_goods(database_url)
    status, body = raw_request(
        service.base_url,
        b"POST %s HTTP/1.1\r\nHost: x\r\nX-USER-ID: %d\r\nIdempotency-Key: %s\r\n"
        b"Content-Type: application/json" % (PATH.encode(), user, key.encode()),
        orjson.dumps({"goodsId": goods_id, "investmentAmount": 1_000}),
    )
    assert status == 400
    if key != "bell\x07":  # granian's HTTP parser refuses a control character itself
        assert orjson.loads(body)["code"] == "INVALID_IDEMPOTENCY_KEY"
    assert ledger_sum(database_url, goods_id) == 0


def test_two_key_headers_are_400(client: httpx.Client, database_url: str, user: int) -> None:
    goods_id = create_goods(database_url)
    response = client.post(
        PATH,
        headers=[("X-USER-ID", str(user)), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
        json={"goodsId": goods_id, "investmentAmount": 1_000},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_IDEMPOTENCY_KEY"


def test_an_injection_string_as_key_is_just_a_key(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url)
    key = "'; DROP TABLE user_investment_goods; --"
    assert invest(client, user, goods_id, 1_000, key).status_code == 200
    assert invest(client, user, goods_id, 1_000, key).headers["Idempotent-Replayed"] == "true"
    stored = psql(
        database_url,
        f"SELECT idempotency_key FROM investment_idempotency WHERE user_id = {user}",
    )
    assert stored == key
    assert ledger_rows(database_url, user) == 1
