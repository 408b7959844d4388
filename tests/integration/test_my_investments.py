"""GET /v1/api/investment/user/goods: one item per ledger row, order, pages, errors."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support import ServiceProcess, create_goods, fresh_user, psql

PATH = "/v1/api/investment/user/goods"


def invest(client: httpx.Client, user: int, goods_id: int, amount: int) -> dict:  # type: ignore[type-arg]
    response = client.post(
        PATH,
        headers={"X-USER-ID": str(user)},
        json={"goodsId": goods_id, "investmentAmount": amount},
    )
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def test_one_item_per_investment_in_order(
    client: httpx.Client, database_url: str, user: int
) -> None:
    first = create_goods(database_url, total=1_000_000, title="첫 상품")
    second = create_goods(database_url, total=5_000, title="둘째 상품")
    invest(client, user, first, 100)
    invest(client, user, second, 4_000)
    invest(client, user, first, 300)
    invest(client, user, second, 9_000)  # partial: 1,000 remains
    invest(client, user, second, 10)  # sold out: no ledger row, so no item
    response = client.get(PATH, headers={"X-USER-ID": str(user)})
    assert response.status_code == 200
    items = response.json()
    assert [(i["goods_id"], i["user_investing_amount"]) for i in items] == [
        (first, 100),
        (second, 4_000),
        (first, 300),
        (second, 1_000),
    ]
    assert items[0] == {
        "goods_id": first,
        "title": "첫 상품",
        "total_investing_amount": 1_000_000,
        "user_investing_amount": 100,
        "invest_date": items[0]["invest_date"],
        "investment_id": items[0]["investment_id"],
    }
    assert "Link" not in response.headers


def test_order_is_by_invest_date_then_id(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url)
    later = invest(client, user, goods_id, 1)["investment_id"]
    earlier = invest(client, user, goods_id, 2)["investment_id"]
    psql(
        database_url,
        "BEGIN; SET LOCAL investment.ledger_maintenance = on;"
        f" UPDATE user_investment_goods SET invest_date = invest_date - interval '1 hour' WHERE id = {earlier};"
        " COMMIT",
    )
    items = client.get(PATH, headers={"X-USER-ID": str(user)}).json()
    assert [i["user_investing_amount"] for i in items] == [2, 1]
    assert later < earlier


def test_no_investments_is_404(client: httpx.Client, user: int) -> None:
    response = client.get(PATH, headers={"X-USER-ID": str(user)})
    assert response.status_code == 404
    assert response.json()["code"] == "INVESTMENTS_NOT_FOUND"


def test_missing_and_invalid_user(client: httpx.Client) -> None:
    assert client.get(PATH).json()["code"] == "MISSING_USER_ID"
    for value in ["x", "0", "-1", "1;DROP TABLE user_investment_goods"]:
        response = client.get(PATH, headers={"X-USER-ID": value})
        assert (response.status_code, response.json()["code"]) == (400, "INVALID_USER_ID")


def test_pages_follow_the_link_header(client: httpx.Client, database_url: str, user: int) -> None:
    goods_id = create_goods(database_url)
    for amount in range(1, 8):
        invest(client, user, goods_id, amount)
    seen: list[int] = []
    url: str | None = f"{PATH}?limit=3"
    pages = 0
    while url:
        response = client.get(url, headers={"X-USER-ID": str(user)})
        assert response.status_code == 200
        items = response.json()
        assert len(items) <= 3
        seen += [i["user_investing_amount"] for i in items]
        pages += 1
        link = response.headers.get("Link")
        url = link.split(">")[0].lstrip("<") if link else None
        if url:
            assert link.endswith('rel="next"')
    assert seen == list(range(1, 8))
    assert pages == 3


def test_exactly_full_page_has_no_next_link(
    client: httpx.Client, database_url: str, user: int
) -> None:
    goods_id = create_goods(database_url)
    for amount in (1, 2):
        invest(client, user, goods_id, amount)
    response = client.get(PATH, params={"limit": 2}, headers={"X-USER-ID": str(user)})
    assert len(response.json()) == 2
    assert "Link" not in response.headers


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"cursor": "garbage"}]
)
def test_invalid_page_parameters(client: httpx.Client, user: int, params: dict[str, str]) -> None:
    response = client.get(PATH, params=params, headers={"X-USER-ID": str(user)})
    assert (response.status_code, response.json()["code"]) == (400, "INVALID_PAGE")


def test_concurrent_pages_of_many_users_each_get_their_own_rows(
    service: ServiceProcess, database_url: str
) -> None:
    """Requests waiting in the worker are answered by one statement for many users, first pages
    and cursor pages alike: each user gets exactly their own rows, in order, and a user with none
    gets 404 in the same batch as users with rows."""
    goods = [create_goods(database_url, total=10**9, title=f"상품 {n}") for n in range(3)]
    users = [fresh_user() for _ in range(40)]
    expected: dict[int, list[tuple[int, int]]] = {}
    for index, user in enumerate(users):
        count = index % 6  # 0..5 investments; every sixth user has none
        orders = [(goods[(index + n) % 3], 100 + index * 10 + n) for n in range(count)]
        expected[user] = orders
        if orders:
            with httpx.Client(base_url=service.base_url, timeout=10) as client:
                for goods_id, amount in orders:
                    invest(client, user, goods_id, amount)

    async def crawl() -> dict[int, tuple[int, list[tuple[int, int]]]]:
        """Every user's pages of 2 at once, round after round, following the Link headers."""
        seen: dict[int, tuple[int, list[tuple[int, int]]]] = {}
        limits = httpx.Limits(max_connections=len(users))
        async with httpx.AsyncClient(base_url=service.base_url, timeout=30, limits=limits) as c:
            pending = {user: f"{PATH}?limit=2" for user in users}
            while pending:
                answers = await asyncio.gather(
                    *(c.get(url, headers={"X-USER-ID": str(u)}) for u, url in pending.items())
                )
                following = {}
                for user, answer in zip(pending, answers, strict=True):
                    status, items = seen.get(user, (answer.status_code, []))
                    if answer.status_code == 200:
                        items += [
                            (i["goods_id"], i["user_investing_amount"]) for i in answer.json()
                        ]
                    seen[user] = (status, items)
                    if "link" in answer.headers:
                        following[user] = answer.headers["link"].split(">")[0].lstrip("<")
                pending = following
        return seen

    seen = asyncio.run(crawl())
    for user in users:
        status, items = seen[user]
        if expected[user]:
            assert (status, items) == (200, expected[user]), user
        else:
            assert (status, items) == (404, []), user


def test_titles_that_need_escaping_come_back_as_valid_json(
    client: httpx.Client, database_url: str, user: int
) -> None:
    """The statement writes the items' JSON itself: quotes, backslashes, control characters and
    non-ASCII titles must survive it exactly."""
    titles = ['따옴표 "q" \\ 역슬래시', "tab\tnew\nline\u0001", "이모지 🚀 </script>"]
    goods = [create_goods(database_url, total=10**6, title=title) for title in titles]
    for goods_id in goods:
        invest(client, user, goods_id, 1_000)
    response = client.get(PATH, headers={"X-USER-ID": str(user)})
    assert response.status_code == 200
    assert [item["title"] for item in response.json()] == titles


def test_items_show_the_products_title_and_total_as_they_are_now(
    client: httpx.Client, database_url: str, user: int
) -> None:
    """The product's part of an item is kept with the product (investment_goods.item_head, a
    generated column): a later change of the title or total shows in every item at once."""
    goods_id = create_goods(database_url, total=10**6, title="옛 이름")
    invest(client, user, goods_id, 1_000)
    psql(
        database_url,
        "UPDATE investment_goods SET title = '새 \"이름\"', total_investing_amount = 2000000"
        f" WHERE goods_id = {goods_id}",
    )
    response = client.get(PATH, headers={"X-USER-ID": str(user)})
    assert response.status_code == 200
    [item] = response.json()
    assert (item["title"], item["total_investing_amount"]) == ('새 "이름"', 2_000_000)
    assert response.content.startswith(f'[{{"goods_id":{goods_id},"title":'.encode())
