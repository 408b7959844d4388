"""The seed's fixture INSERT works unchanged, and wall-clock times mean the display time zone."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support import (
    create_goods,
    database_date_style,
    fresh_user,
    ledger_dates,
    migrated_database,
    psql,
    running_service,
)

SEED_FIXTURE = """
INSERT INTO investment_goods (goods_id, title, total_investing_amount, status, started_at, finished_at)
VALUES (1, '개인신용 포트폴리오', 100000, true, '2021-04-02 00:00:00', '2021-04-30 00:00:00');
"""
WINDOW = {"started_at": "2021-04-01 00:00:00", "finished_at": "2021-05-01 00:00:00"}


@pytest.fixture(scope="module")
def seed_database(postgres_server: str) -> Iterator[str]:
    with migrated_database(postgres_server) as url:
        yield url


def test_seed_fixture_is_served_at_once_with_zero_counters(seed_database: str) -> None:
    psql(seed_database, SEED_FIXTURE)
    psql(
        seed_database,
        "INSERT INTO investment_goods (title, total_investing_amount, started_at, finished_at)"
        " VALUES ('상태 생략', 5000, '2021-04-10 00:00:00', '2021-04-20 00:00:00')",
    )
    with running_service(seed_database, LIST_CACHE_SECONDS="0") as service:
        items = httpx.get(f"{service.base_url}/v1/api/investment/goods", params=WINDOW).json()
    assert items[0] == {
        "goods_id": 1,
        "title": "개인신용 포트폴리오",
        "total_investing_amount": 100000,
        "current_investing_amount": 0,
        "investor_count": 0,
        "status": False,
        "state": "finished",
        "started_at": "2021-04-02 00:00:00",  # the literal psql wrote, in Asia/Seoul
        "finished_at": "2021-04-30 00:00:00",
    }
    # goods_id and status left out: the next id after the explicit 1, recruiting allowed.
    assert items[1]["goods_id"] == 2
    assert items[1]["title"] == "상태 생략"
    assert psql(seed_database, "SELECT status FROM investment_goods WHERE goods_id = 2") == "t"


def test_display_time_zone_setting_changes_the_wall_clock(seed_database: str) -> None:
    with running_service(seed_database, LIST_CACHE_SECONDS="0", TIMEZONE="UTC") as service:
        items = httpx.get(
            f"{service.base_url}/v1/api/investment/goods",
            params={"started_at": "2021-04-01 00:00:00", "finished_at": "2021-04-30 00:00:00"},
        ).json()
    seed = next(item for item in items if item["goods_id"] == 1)
    assert seed["started_at"] == "2021-04-01 15:00:00"  # 00:00 in Seoul is 15:00 UTC the day before
    assert seed["finished_at"] == "2021-04-29 15:00:00"


def test_database_refuses_oversell_and_non_positive_amounts(seed_database: str) -> None:
    for statement in [
        "UPDATE investment_goods SET current_investing_amount = total_investing_amount + 1 WHERE goods_id = 1",
        "UPDATE investment_goods SET current_investing_amount = -1 WHERE goods_id = 1",
        "INSERT INTO user_investment_goods (user_id, goods_id, user_investing_amount) VALUES (1, 1, 0)",
        "INSERT INTO user_investment_goods (user_id, goods_id, user_investing_amount) VALUES (1, 1, -5)",
        "INSERT INTO investment_goods (title, total_investing_amount, started_at, finished_at) VALUES ('x', 0, now(), now())",
    ]:
        with pytest.raises(RuntimeError, match="violates check constraint"):
            psql(seed_database, statement)


def test_dates_keep_their_form_whatever_the_databases_date_style(seed_database: str) -> None:
    """A page renders its dates by a cast to text, whose form the session's DateStyle decides:
    the service's sessions pin it to ISO, so a server or database set otherwise changes nothing
    (the date as to_char() renders it in the display zone)."""
    with database_date_style(seed_database, "SQL, DMY"):
        assert "/" in psql(seed_database, "SELECT now()::timestamp::text")  # 'SQL' style here
        goods_id = create_goods(seed_database)
        user = fresh_user()
        with running_service(seed_database, TIMEZONE="UTC") as service:
            invested = httpx.post(
                f"{service.base_url}/v1/api/investment/user/goods",
                headers={"X-USER-ID": str(user)},
                json={"goodsId": goods_id, "investmentAmount": 5},
            )
            assert invested.status_code == 200, invested.text
            page = httpx.get(
                f"{service.base_url}/v1/api/investment/user/goods",
                headers={"X-USER-ID": str(user)},
            ).json()
    assert [item["invest_date"] for item in page] == [ledger_dates(seed_database, user)]
