"""My investments from its read model (sql/migrations/012_my_investment_item.sql): every item
carries its `investment_id`, cancelled investments are not listed, a page shows every answered
invest and cancellation at once, the order and the cursor pages hold, and a page is an index-only
scan that reads neither the products nor the cancellations.

Cancellations are written here as rows of user_investment_cancellation (the owner's INSERT), so
these tests run on a database and a service of their own: the products' counters are left as
they were, which the verifier of the session's database must never see."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from harness import ROOT
from service.sql import queries
from tests.support import create_goods, fresh_user, migrated_database, psql, running_service

PATH = "/v1/api/investment/user/goods"


@pytest.fixture(scope="module")
def own(postgres_server: str) -> Iterator[tuple[str, httpx.Client]]:
    """(the owner's URL, a client of a service on it) for a database of this module's own."""
    with (
        migrated_database(postgres_server) as url,
        running_service(url, workers=1, LIST_CACHE_SECONDS="0") as service,
        httpx.Client(base_url=service.base_url, timeout=10) as client,
    ):
        yield url, client


def invest(client: httpx.Client, user: int, goods_id: int, amount: int) -> int:
    response = client.post(
        PATH,
        headers={"X-USER-ID": str(user)},
        json={"goodsId": goods_id, "investmentAmount": amount},
    )
    assert response.status_code == 200
    investment_id: int = response.json()["investment_id"]
    return investment_id


def cancel(url: str, *investment_ids: int) -> None:
    """Cancellation rows, as the cancellation writes them (its other bookkeeping left out)."""
    psql(
        url,
        "INSERT INTO user_investment_cancellation (investment_id, user_id, goods_id,"
        " cancelled_amount, current_investing_amount, state)"
        " SELECT id, user_id, goods_id, user_investing_amount, 0, 'recruiting'"
        f" FROM user_investment_goods WHERE id IN ({','.join(map(str, investment_ids))})",
    )


def pages(client: httpx.Client, user: int, limit: int) -> list[list[dict]]:  # type: ignore[type-arg]
    """Every page of the user's investments, following the Link headers."""
    found = []
    url: str | None = f"{PATH}?limit={limit}"
    while url:
        response = client.get(url, headers={"X-USER-ID": str(user)})
        assert response.status_code == 200, response.text
        found.append(response.json())
        link = response.headers.get("Link")
        url = link.split(">")[0].lstrip("<") if link else None
    return found


def test_every_item_carries_its_investment_id(own: tuple[str, httpx.Client]) -> None:
    url, client = own
    goods_id = create_goods(url, total=10**6, title="아이디 상품")
    user = fresh_user()
    ids = [invest(client, user, goods_id, amount) for amount in (100, 200)]
    response = client.get(PATH, headers={"X-USER-ID": str(user)})
    assert response.json() == [
        {
            "goods_id": goods_id,
            "title": "아이디 상품",
            "total_investing_amount": 10**6,
            "user_investing_amount": 100,
            "invest_date": response.json()[0]["invest_date"],
            "investment_id": ids[0],
        },
        {
            "goods_id": goods_id,
            "title": "아이디 상품",
            "total_investing_amount": 10**6,
            "user_investing_amount": 200,
            "invest_date": response.json()[1]["invest_date"],
            "investment_id": ids[1],
        },
    ]
    assert response.content.startswith(f'[{{"goods_id":{goods_id},"title":'.encode())
    assert response.content.endswith(f',"investment_id":{ids[1]}}}]'.encode())


def test_each_answered_invest_and_cancellation_shows_in_the_next_page(
    own: tuple[str, httpx.Client],
) -> None:
    """Read-your-writes: the read model is written in the invest's own transaction, and the
    cancellation's, so no page read after an answer misses it."""
    url, client = own
    goods_id = create_goods(url, total=10**9)
    user = fresh_user()
    listed: list[int] = []
    for amount in range(1, 16):
        listed.append(invest(client, user, goods_id, amount))
        items = client.get(PATH, headers={"X-USER-ID": str(user)}).json()
        assert [i["investment_id"] for i in items] == listed
        if amount % 4 == 0:
            cancel(url, listed.pop(1))
            items = client.get(PATH, headers={"X-USER-ID": str(user)}).json()
            assert [i["investment_id"] for i in items] == listed


def test_cancelled_investments_are_left_out_of_every_page(own: tuple[str, httpx.Client]) -> None:
    url, client = own
    goods_id = create_goods(url, total=10**9)
    user = fresh_user()
    ids = [invest(client, user, goods_id, 10 + n) for n in range(9)]
    gone = {ids[0], ids[3], ids[4], ids[8]}  # the first, two in a row across a page, the last
    cancel(url, *gone)
    live = [i for i in ids if i not in gone]
    for limit in (1, 2, 3, 5, 1000):
        found = pages(client, user, limit)
        assert [i["investment_id"] for page in found for i in page] == live, limit
        assert all(len(page) == limit for page in found[:-1])
        assert sum(i["user_investing_amount"] for page in found for i in page) == sum(
            10 + n for n in range(9) if ids[n] not in gone
        )


def test_a_user_whose_investments_are_all_cancelled_has_none(
    own: tuple[str, httpx.Client],
) -> None:
    url, client = own
    goods_id = create_goods(url, total=10**9)
    user = fresh_user()
    ids = [invest(client, user, goods_id, 100) for _ in range(2)]
    cancel(url, *ids)
    response = client.get(PATH, headers={"X-USER-ID": str(user)})
    assert (response.status_code, response.json()["code"]) == (404, "INVESTMENTS_NOT_FOUND")


def test_items_of_the_same_moment_are_paged_by_id(own: tuple[str, httpx.Client]) -> None:
    """Investments of one invest call share their invest_date: the cursor's id decides."""
    url, client = own
    goods_id = create_goods(url, total=10**9)
    user = fresh_user()
    ids = [invest(client, user, goods_id, 1 + n) for n in range(7)]
    psql(  # the maintenance path: every row at one moment (the read model follows it)
        url,
        "BEGIN; SET LOCAL investment.ledger_maintenance = on;"
        " UPDATE user_investment_goods SET invest_date = timestamptz '2024-05-01 12:00:00+00'"
        f" WHERE user_id = {user}; COMMIT",
    )
    found = pages(client, user, 3)
    assert [len(page) for page in found] == [3, 3, 1]
    assert [i["investment_id"] for page in found for i in page] == ids
    assert {i["invest_date"] for page in found for i in page} == {"2024-05-01 21:00:00"}


def test_corrections_by_the_maintenance_path_are_followed(own: tuple[str, httpx.Client]) -> None:
    """A ledger row deleted, a cancellation withdrawn (the owner's maintenance path): the read
    model lists what is live afterwards."""
    url, client = own
    goods_id = create_goods(url, total=10**9)
    user = fresh_user()
    ids = [invest(client, user, goods_id, 100 + n) for n in range(3)]
    cancel(url, ids[1])
    psql(
        url,
        "BEGIN; SET LOCAL investment.ledger_maintenance = on;"
        f" DELETE FROM user_investment_cancellation WHERE investment_id = {ids[1]};"
        f" UPDATE user_investment_goods SET user_investing_amount = 7 WHERE id = {ids[2]};"
        " COMMIT",
    )
    items = client.get(PATH, headers={"X-USER-ID": str(user)}).json()
    assert [(i["investment_id"], i["user_investing_amount"]) for i in items] == [
        (ids[0], 100), (ids[1], 101), (ids[2], 7),
    ]  # fmt: skip


def test_a_page_is_an_index_only_scan_of_the_read_model(own: tuple[str, httpx.Client]) -> None:
    """The plan the service's sessions use (generic): one index-only range scan per request of
    my_investment_item's primary key, with no join to the products and no look at the
    cancellations; once vacuumed (the visibility map set), no heap page is read."""
    url, client = own
    goods_id = create_goods(url, total=10**9)
    user = fresh_user()
    for amount in range(1, 6):
        invest(client, user, goods_id, amount)
    statement = queries()["my-investments-many"].strip().rstrip(";")
    explain = (
        # A table of a few rows is read whole whatever the index: the planner is told not to,
        # as it decides by itself on a table of real size.
        "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off;"
        f" PREPARE page(bigint[], integer[], bigint[], bigint[]) AS {statement};"
        " EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)"
        f" EXECUTE page('{{{user}}}', '{{3}}', '{{NULL}}', '{{NULL}}');"
    )
    psql(url, "VACUUM my_investment_item")
    plan = psql(url, explain)
    assert "Index Only Scan using my_investment_item_pkey on my_investment_item" in plan, plan
    assert "investment_goods" not in plan and "user_investment_cancellation" not in plan, plan
    assert "Heap Fetches: 0" in plan, plan
    assert "Sort" not in plan, plan  # the index gives the order


def test_the_verifier_names_an_item_out_of_step_with_the_ledger(
    own: tuple[str, httpx.Client],
) -> None:
    url, client = own
    goods_id = create_goods(url, total=10**9)
    user = fresh_user()
    kept, tampered = invest(client, user, goods_id, 5), invest(client, user, goods_id, 6)
    verify = (ROOT / "sql" / "verify.sql").read_text().rstrip().removesuffix("ORDER BY 1, 2;")
    check = f"SELECT v.detail FROM ({verify}) v WHERE v.check = 'my_investments_equal_live_ledger'"
    assert psql(url, check) == ""
    psql(
        url,
        f"DELETE FROM my_investment_item WHERE investment_id = {tampered};"
        " UPDATE my_investment_item SET item = item || '0'"
        f" WHERE investment_id = {kept}",
    )
    assert set(psql(url, check).splitlines()) == {
        f"investment {tampered} is live but not listed",
        f"investment {kept} is listed with other data",
    }
    psql(url, f"SELECT my_investment_item_refresh(ARRAY[{kept}, {tampered}]::bigint[])")
    assert psql(url, check) == ""
