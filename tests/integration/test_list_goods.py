"""GET /v1/api/investment/goods: window, ordering, states, counters, errors."""

from __future__ import annotations

import random

import httpx
import pytest

from tests.support import create_goods, fresh_user, problem

PATH = "/v1/api/investment/goods"


def window(year: int) -> dict[str, str]:
    return {"started_at": f"{year}-01-01 00:00:00", "finished_at": f"{year}-12-31 23:59:59"}


@pytest.fixture
def year() -> int:
    """A year of its own for each test, so windows do not see other tests' products."""
    return random.randrange(2200, 9000)


def at(year: int, rest: str) -> str:
    return f"timestamp '{year}-{rest}'"


def test_products_inside_the_window_in_goods_id_order(
    client: httpx.Client, database_url: str, year: int
) -> None:
    inside = [
        create_goods(
            database_url,
            title=f"안쪽 {i}",
            started_at=at(year, "03-01 00:00:00"),
            finished_at=at(year, "04-01 00:00:00"),
        )
        for i in range(3)
    ]
    create_goods(
        database_url,
        title="걸침",
        started_at=at(year - 1, "12-01 00:00:00"),
        finished_at=at(year, "01-10 00:00:00"),
    )
    create_goods(
        database_url,
        title="넘침",
        started_at=at(year, "12-01 00:00:00"),
        finished_at=at(year + 1, "01-10 00:00:00"),
    )
    edge = create_goods(
        database_url,
        title="경계",
        started_at=at(year, "01-01 00:00:00"),
        finished_at=at(year, "12-31 23:59:59"),
    )
    response = client.get(PATH, params=window(year))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    items = response.json()
    assert [item["goods_id"] for item in items] == sorted([*inside, edge])
    first = items[0]
    assert set(first) == {
        "goods_id",
        "title",
        "total_investing_amount",
        "current_investing_amount",
        "investor_count",
        "status",
        "state",
        "started_at",
        "finished_at",
    }
    assert first["title"] == "안쪽 0"
    assert first["started_at"] == f"{year}-03-01 00:00:00"
    assert first["finished_at"] == f"{year}-04-01 00:00:00"


def test_iso_t_form_is_accepted(client: httpx.Client, database_url: str, year: int) -> None:
    create_goods(
        database_url, started_at=at(year, "03-01 00:00:00"), finished_at=at(year, "04-01 00:00:00")
    )
    response = client.get(
        PATH,
        params={"started_at": f"{year}-01-01T00:00:00", "finished_at": f"{year}-12-31T00:00:00"},
    )
    assert response.status_code == 200


def test_empty_window_is_404(client: httpx.Client, year: int) -> None:
    response = client.get(PATH, params=window(year))
    assert response.status_code == 404
    assert response.json()["code"] == "GOODS_NOT_FOUND"


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"started_at": "2021-01-01 00:00:00"},
        {"finished_at": "2021-01-01 00:00:00"},
        {"started_at": "2021-05-01 00:00:00", "finished_at": "2021-04-01 00:00:00"},
        {"started_at": "yesterday", "finished_at": "2021-04-01 00:00:00"},
        {"started_at": "2021-02-30 00:00:00", "finished_at": "2021-04-01 00:00:00"},
        {
            "started_at": "2021-01-01 00:00:00'; DROP TABLE investment_goods; --",
            "finished_at": "2021-04-01 00:00:00",
        },
    ],
)
def test_invalid_period(client: httpx.Client, params: dict[str, str]) -> None:
    problem(client.get(PATH, params=params), 400, "INVALID_PERIOD")


def test_remembered_windows_answer_like_parsed_ones(
    client: httpx.Client, database_url: str, year: int
) -> None:
    """The handler remembers parsed windows per raw query string: repeats and bad windows
    answer exactly as the first time, and the same window spelled differently agrees."""
    goods_id = create_goods(
        database_url, started_at=at(year, "03-01 00:00:00"), finished_at=at(year, "04-01 00:00:00")
    )
    bad = {"started_at": f"{year}-05-01 00:00:00", "finished_at": f"{year}-04-01 00:00:00"}
    spelled_with_t = {k: v.replace(" ", "T") for k, v in window(year).items()}
    for _ in range(3):
        for params in (window(year), spelled_with_t):
            answer = client.get(PATH, params=params)
            assert answer.status_code == 200
            assert [item["goods_id"] for item in answer.json()] == [goods_id]
        refused = client.get(PATH, params=bad)
        assert refused.status_code == 400
        assert refused.json()["code"] == "INVALID_PERIOD"


def test_every_state_and_the_seed_status(client: httpx.Client, database_url: str) -> None:
    # Windows around now: products of each state, identified by title.
    tag = f"s{random.randrange(10**6)}"
    ids = {
        "recruiting": create_goods(database_url, title=f"{tag} 모집중"),
        "upcoming": create_goods(
            database_url,
            title=f"{tag} 예정",
            started_at="now() + interval '1 day'",
            finished_at="now() + interval '2 days'",
        ),
        "finished": create_goods(
            database_url,
            title=f"{tag} 종료",
            started_at="now() - interval '2 days'",
            finished_at="now() - interval '1 hour'",
        ),
        "closed": create_goods(database_url, title=f"{tag} 마감", status=False),
        "sold_out": create_goods(database_url, title=f"{tag} 완판", total=100),
    }
    invest = client.post(
        "/v1/api/investment/user/goods",
        headers={"X-USER-ID": str(fresh_user())},
        json={"goodsId": ids["sold_out"], "investmentAmount": 100},
    )
    assert invest.json()["state"] == "sold_out"
    response = client.get(
        PATH, params={"started_at": "2000-01-01 00:00:00", "finished_at": "2999-12-31 00:00:00"}
    )
    by_id = {item["goods_id"]: item for item in response.json()}
    for state, goods_id in ids.items():
        assert by_id[goods_id]["state"] == state
        assert by_id[goods_id]["status"] is (state in ("recruiting", "upcoming"))


def test_list_shows_counters_after_investments(
    client: httpx.Client, database_url: str, year: int
) -> None:
    # A recruiting product whose window is found by its own (wide) period.
    goods_id = create_goods(
        database_url,
        total=10_000,
        started_at="now() - interval '1 day'",
        finished_at=f"timestamp '{year}-06-01 00:00:00'",
    )
    alice, bob = fresh_user(), fresh_user()
    for who, amount in [(alice, 1000), (alice, 2000), (bob, 500)]:
        client.post(
            "/v1/api/investment/user/goods",
            headers={"X-USER-ID": str(who)},
            json={"goodsId": goods_id, "investmentAmount": amount},
        )
    items = client.get(
        PATH, params={"started_at": "2000-01-01 00:00:00", "finished_at": f"{year}-06-01 00:00:00"}
    ).json()
    item = next(i for i in items if i["goods_id"] == goods_id)
    assert (item["current_investing_amount"], item["investor_count"]) == (3500, 2)
