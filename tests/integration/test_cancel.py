"""DELETE /v1/api/investment/user/goods/{investment_id}: the answer, its repeat, every refusal,
and what a cancellation changes at once (the product's counters and state, the user's live
amounts, my investments)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.test_my_investments import invest
from tests.support import (
    cancel_waiters,
    cancellation_rows,
    counters,
    create_goods,
    fresh_user,
    hold_rows,
    problem,
    psql,
    snapshot_held,
    verify_ledger,
    wait_until,
)

PATH = "/v1/api/investment/user/goods"


def cancel(client: httpx.Client, user: int, investment_id: int | str) -> httpx.Response:
    return client.delete(f"{PATH}/{investment_id}", headers={"X-USER-ID": str(user)})


def position(database_url: str, user: int) -> tuple[int, int]:
    """(invested_total, invested_real_estate) of the user's investor row."""
    total, real_estate = psql(
        database_url,
        f"SELECT invested_total, invested_real_estate FROM investor WHERE user_id = {user}",
    ).split("\t")
    return int(total), int(real_estate)


def live_amount(database_url: str, goods_id: int, user: int) -> int:
    return int(
        psql(
            database_url,
            "SELECT amount FROM investment_goods_investor"
            f" WHERE goods_id = {goods_id} AND user_id = {user}",
        )
    )


def test_cancel_answers_the_cancellation_and_drops_the_counters_at_once(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url, total=10_000)
    other = fresh_user()
    mine = invest(client, user, goods_id, 3_000)["investment_id"]
    invest(client, user, goods_id, 1_000)
    invest(client, other, goods_id, 2_000)
    assert counters(database_url, goods_id) == (6_000, 2)
    assert position(database_url, user) == (4_000, 0)

    response = cancel(client, user, mine)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body == {
        "investment_id": mine,
        "goods_id": goods_id,
        "cancelled_amount": 3_000,
        "cancelled_at": body["cancelled_at"],
        "current_investing_amount": 3_000,
        "status": True,
        "state": "recruiting",
    }
    assert list(body) == list(body.keys())  # the API's key order
    assert body["cancelled_at"] == psql(
        database_url,
        "SELECT to_char(cancelled_at, 'YYYY-MM-DD HH24:MI:SS') FROM user_investment_cancellation"
        f" WHERE investment_id = {mine}",
    )
    # The user still holds 1,000 in it: still one of its two investors.
    assert counters(database_url, goods_id) == (3_000, 2)
    assert live_amount(database_url, goods_id, user) == 1_000
    assert position(database_url, user) == (1_000, 0)
    # The ledger row stays; the cancellation is a row of its own.
    assert (
        psql(
            database_url,
            f"SELECT user_investing_amount FROM user_investment_goods WHERE id = {mine}",
        )
        == "3000"
    )
    verify_ledger(database_url)


def test_the_same_delete_again_answers_the_same_body_and_writes_nothing(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url, total=10_000)
    investment = invest(client, user, goods_id, 4_000)["investment_id"]
    first = cancel(client, user, investment)
    invest(client, fresh_user(), goods_id, 500)  # the product moves on meanwhile
    again = [cancel(client, user, investment) for _ in range(3)]
    assert [r.status_code for r in again] == [200, 200, 200]
    assert {r.content for r in again} == {first.content}
    assert cancellation_rows(database_url, investment) == 1
    assert counters(database_url, goods_id) == (500, 1)
    # Even once the product is closed, the repeat is the cancellation's answer, not a 409.
    psql(database_url, f"UPDATE investment_goods SET status = false WHERE goods_id = {goods_id}")
    assert cancel(client, user, investment).content == first.content


def test_the_last_investment_cancelled_leaves_the_investors_and_a_new_one_joins_again(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url, total=10_000)
    first = invest(client, user, goods_id, 1_000)["investment_id"]
    second = invest(client, user, goods_id, 2_000)["investment_id"]
    assert cancel(client, user, first).json()["current_investing_amount"] == 2_000
    assert counters(database_url, goods_id) == (2_000, 1)
    assert cancel(client, user, second).json()["current_investing_amount"] == 0
    assert counters(database_url, goods_id) == (0, 0)
    assert live_amount(database_url, goods_id, user) == 0
    invest(client, user, goods_id, 700)
    assert counters(database_url, goods_id) == (700, 1)
    assert live_amount(database_url, goods_id, user) == 700
    verify_ledger(database_url)


def test_a_sold_out_product_recruits_again_after_a_cancellation(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url, total=5_000)
    sold = invest(client, user, goods_id, 9_000)
    assert (sold["investment_amount"], sold["state"]) == (5_000, "sold_out")
    late = fresh_user()
    assert invest(client, late, goods_id, 1_000)["investment_amount"] == 0

    body = cancel(client, user, sold["investment_id"]).json()
    assert (body["current_investing_amount"], body["status"], body["state"]) == (
        0,
        True,
        "recruiting",
    )
    assert counters(database_url, goods_id) == (0, 0)
    again = invest(client, late, goods_id, 1_000)
    assert (again["investment_amount"], again["state"]) == (1_000, "recruiting")


def test_a_partial_cancellation_of_a_sold_out_product_answers_recruiting(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url, total=5_000)
    small = invest(client, user, goods_id, 1_000)["investment_id"]
    invest(client, fresh_user(), goods_id, 4_000)
    body = cancel(client, user, small).json()
    assert (body["current_investing_amount"], body["state"], body["status"]) == (
        4_000,
        "recruiting",
        True,
    )


def test_the_users_room_is_released_per_category_and_not_for_a_repaid_product(
    client: httpx.Client, database_url: str, user: int
) -> None:
    general = create_goods(database_url, total=10**6)
    estate = create_goods(database_url, total=10**6)
    repaid = create_goods(database_url, total=10**6)
    psql(
        database_url,
        f"UPDATE investment_goods SET category = 'real_estate' WHERE goods_id = {estate}",
    )
    in_general = invest(client, user, general, 1_000)["investment_id"]
    in_estate = invest(client, user, estate, 2_000)["investment_id"]
    in_repaid = invest(client, user, repaid, 4_000)["investment_id"]
    assert position(database_url, user) == (7_000, 2_000)
    # Repaid afterwards: its investments no longer count toward the user's totals.
    psql(
        database_url,
        f"BEGIN; UPDATE investment_goods SET repaid = true WHERE goods_id = {repaid};"
        f" UPDATE investor SET invested_total = invested_total - 4000 WHERE user_id = {user}; COMMIT",
    )
    assert cancel(client, user, in_estate).status_code == 200
    assert position(database_url, user) == (1_000, 0)
    assert cancel(client, user, in_repaid).status_code == 200
    assert position(database_url, user) == (1_000, 0)
    assert cancel(client, user, in_general).status_code == 200
    assert position(database_url, user) == (0, 0)


def test_another_users_investment_or_none_is_404_and_changes_nothing(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url, total=10_000)
    investment = invest(client, user, goods_id, 1_000)["investment_id"]
    stranger = fresh_user()
    for response in (
        cancel(client, stranger, investment),
        cancel(client, user, investment + 10**9),
        cancel(client, user, 2**63 - 1),
    ):
        problem(response, 404, "INVESTMENT_NOT_FOUND")
    assert str(investment) in cancel(client, stranger, investment).json()["detail"]
    assert cancellation_rows(database_url, investment) == 0
    assert counters(database_url, goods_id) == (1_000, 1)
    assert cancel(client, user, investment).status_code == 200


@pytest.mark.parametrize(
    ("change", "state"),
    [
        ("status = false", "closed"),
        ("finished_at = now() - interval '1 second'", "finished"),
        (
            "started_at = now() + interval '1 hour', finished_at = now() + interval '2 hours'",
            "upcoming",
        ),
    ],
    ids=["closed", "finished", "not-yet-started"],
)
def test_a_product_closed_or_outside_its_period_is_409_and_changes_nothing(
    client: httpx.Client, database_url: str, user: int, change: str, state: str
) -> None:
    goods_id = create_goods(database_url, total=10_000)
    investment = invest(client, user, goods_id, 1_000)["investment_id"]
    psql(
        database_url,
        f"UPDATE investment_goods SET started_at = now() - interval '2 days' WHERE goods_id = {goods_id};"
        f" UPDATE investment_goods SET {change} WHERE goods_id = {goods_id}",
    )
    response = cancel(client, user, investment)
    problem(response, 409, "INVESTMENT_NOT_CANCELLABLE")
    assert state in response.json()["detail"]
    assert cancellation_rows(database_url, investment) == 0
    assert counters(database_url, goods_id) == (1_000, 1)
    assert position(database_url, user) == (1_000, 0)


def test_a_sold_out_product_past_its_period_is_409(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url, total=1_000)
    investment = invest(client, user, goods_id, 1_000)["investment_id"]
    psql(
        database_url, f"UPDATE investment_goods SET finished_at = now() WHERE goods_id = {goods_id}"
    )
    problem(cancel(client, user, investment), 409, "INVESTMENT_NOT_CANCELLABLE")


@pytest.mark.parametrize(
    "raw", ["abc", "0", "-1", "1.5", "%2B1", "1e3", str(2**63), "9" * 30, "１"]
)
def test_an_id_that_is_not_an_integer_in_range_is_400(
    client: httpx.Client, user: int, raw: str
) -> None:
    response = cancel(client, user, raw)
    problem(response, 400, "INVALID_INVESTMENT_ID")
    assert "investment_id" in response.json()["detail"]


def test_the_user_header_is_checked_as_everywhere(client: httpx.Client) -> None:
    problem(client.delete(f"{PATH}/1"), 400, "MISSING_USER_ID")
    problem(client.delete(f"{PATH}/1", headers={"X-USER-ID": "0"}), 400, "INVALID_USER_ID")


def test_other_methods_are_405_with_allow(client: httpx.Client) -> None:
    refused = client.delete(PATH, headers={"X-USER-ID": "1"})
    problem(refused, 405, "METHOD_NOT_ALLOWED")
    assert refused.headers["allow"] == "GET, HEAD, POST"
    for method in ("GET", "POST", "PUT", "PATCH"):
        response = client.request(method, f"{PATH}/1", headers={"X-USER-ID": "1"})
        problem(response, 405, "METHOD_NOT_ALLOWED")
        assert response.headers["allow"] == "DELETE"
    problem(
        client.delete("/v1/api/investment/goods", headers={"X-USER-ID": "1"}),
        405,
        "METHOD_NOT_ALLOWED",
    )
    problem(client.delete(f"{PATH}/1/more", headers={"X-USER-ID": "1"}), 404, "NOT_FOUND")


def test_my_investments_carry_their_id_and_leave_out_the_cancelled_ones(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url, total=10_000)
    kept = invest(client, user, goods_id, 1_000)["investment_id"]
    gone = invest(client, user, goods_id, 2_000)["investment_id"]
    items = client.get(PATH, headers={"X-USER-ID": str(user)}).json()
    assert [i["investment_id"] for i in items] == [kept, gone]
    assert cancel(client, user, gone).status_code == 200
    items = client.get(PATH, headers={"X-USER-ID": str(user)}).json()
    assert [(i["investment_id"], i["user_investing_amount"]) for i in items] == [(kept, 1_000)]
    # Pages count live investments only.
    page = client.get(PATH, params={"limit": 1}, headers={"X-USER-ID": str(user)})
    assert "Link" not in page.headers
    assert cancel(client, user, kept).status_code == 200
    problem(client.get(PATH, headers={"X-USER-ID": str(user)}), 404, "INVESTMENTS_NOT_FOUND")


def test_the_openapi_document_describes_the_cancellation_and_its_errors(
    client: httpx.Client,
) -> None:
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/v1/api/investment/user/goods/{investment_id}"]["delete"]
    assert {p["name"] for p in operation["parameters"]} == {"X-USER-ID", "investment_id"}
    assert set(operation["responses"]) == {"200", "400", "404", "409", "503"}
    described = {status: answer["description"] for status, answer in operation["responses"].items()}
    for status, code in [
        ("400", "INVALID_INVESTMENT_ID"),
        ("404", "INVESTMENT_NOT_FOUND"),
        ("409", "INVESTMENT_NOT_CANCELLABLE"),
        ("503", "SERVICE_UNAVAILABLE"),
    ]:
        assert code in described[status]
    codes = document["components"]["schemas"]["ProblemDetails"]["properties"]["code"]["enum"]
    assert {"INVALID_INVESTMENT_ID", "INVESTMENT_NOT_FOUND", "INVESTMENT_NOT_CANCELLABLE"} <= set(
        codes
    )


HEAP_XMAX_IS_MULTI = 0x1000


def xmax_is_multi(database_url: str, table: str, ctid: str) -> bool:
    """Whether the heap tuple at `ctid` of `table` has a MultiXact as its xmax (pageinspect)."""
    block, offset = ctid.strip("()").split(",")
    mask = psql(
        database_url,
        f"SELECT t_infomask FROM heap_page_items(get_raw_page('{table}', {block}))"
        f" WHERE lp = {offset}",
    )
    return bool(int(mask) & HEAP_XMAX_IS_MULTI)


def test_a_cancellation_locks_at_top_level_and_makes_no_multixact(
    client: httpx.Client, database_url: str, user: int
) -> None:
    """The row versions a cancellation replaces (the product's, the user's amount in it, the
    user's totals) carry its own transaction id as xmax, not a MultiXact: no lock was taken in a
    subtransaction on a row the transaction then updated."""
    if (
        psql(
            database_url, "SELECT count(*) FROM pg_available_extensions WHERE name = 'pageinspect'"
        )
        == "0"
    ):
        pytest.skip("pageinspect is not installed on this server")
    psql(database_url, "CREATE EXTENSION IF NOT EXISTS pageinspect")
    goods_id = create_goods(database_url, total=10_000)
    investment = invest(client, user, goods_id, 1_000)["investment_id"]
    rows = {
        "investment_goods": f"goods_id = {goods_id}",
        "investment_goods_investor": f"goods_id = {goods_id} AND user_id = {user}",
        "investor": f"user_id = {user}",
    }
    before = {
        table: psql(database_url, f"SELECT ctid FROM {table} WHERE {where}")
        for table, where in rows.items()
    }
    with snapshot_held(database_url):  # the replaced versions stay on their pages
        assert cancel(client, user, investment).status_code == 200
        for table, where in rows.items():
            assert psql(database_url, f"SELECT ctid FROM {table} WHERE {where}") != before[table]
            assert not xmax_is_multi(database_url, table, before[table]), table


def test_a_cancellation_on_a_product_held_elsewhere_is_503_in_bounded_time_and_delays_nobody(
    client: httpx.Client, database_url: str, user: int
) -> None:
    """An operator's transaction holds the product row: the cancellation waits for it at most
    DB_ACQUIRE_TIMEOUT (2 s; a lock can take two waits), answers 503 with nothing done, and an
    invest in another product meanwhile is served at once; the repeat afterwards makes it."""
    held, other = create_goods(database_url, total=10_000), create_goods(database_url, total=10_000)
    investment = invest(client, user, held, 1_000)["investment_id"]
    holder = hold_rows(database_url, [held], seconds=6)
    try:
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            pending = pool.submit(cancel, client, user, investment)
            wait_until(lambda: bool(cancel_waiters(database_url)), "the cancellation waits")
            began = time.monotonic()
            invest(client, fresh_user(), other, 500)  # while the cancellation waits
            served_in = time.monotonic() - began
            refused = pending.result()
            waited = time.monotonic() - started
    finally:
        holder.wait(30)
    problem(refused, 503, "SERVICE_UNAVAILABLE")
    assert refused.headers["Retry-After"] == "1"
    assert 1.9 < waited < 5.5
    assert served_in < 1.0
    assert cancellation_rows(database_url, investment) == 0
    assert counters(database_url, held) == (1_000, 1)
    assert cancel(client, user, investment).status_code == 200
