"""Caps administration: investors' classes, classes' caps and product rules over the admin API and
`python -m service investor|limits|goods rules`, the LIMIT_BELOW_INVESTED refusals, and positions
kept exact when a product's repaid flag or category changes (checked against the ledger)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.support import (
    ROOT,
    counters,
    create_goods,
    fresh_user,
    migrated_database,
    pg_tool,
    problem,
    psql,
    this_database_locks,
    wait_until,
)

INVESTORS = "/v1/api/admin/investors"
LIMITS = "/v1/api/admin/limits"
GOODS = "/v1/api/admin/goods"
NO_CAPS = {"per_product": None, "total": None, "real_estate": None}
LIMITS_LOCK = 7202104024  # the limits lock every invest and cancellation takes shared


@pytest.fixture
def admin(client: httpx.Client, admin_token: str) -> httpx.Client:
    client.headers["Authorization"] = f"Bearer {admin_token}"
    return client


@pytest.fixture
def caps(database_url: str) -> Iterator[None]:
    """No caps and every investor general, before and after: the session's tests share the
    database, and a cap set here must only meet the investors the test registered."""

    def reset() -> None:
        psql(
            database_url,
            "UPDATE investor_class_limit SET per_product = NULL, total = NULL, real_estate = NULL;"
            " UPDATE investor SET investor_class = 'general' WHERE investor_class <> 'general'",
        )

    reset()
    yield
    reset()


def invested(database_url: str, user: int, goods_id: int, amount: int) -> None:
    """A live investment with everything the invest path keeps for it: the ledger row, the
    product's counters, the user's amount in the product and the user's positions (written as
    the owner, so these tests do not depend on how invest decides caps)."""
    psql(
        database_url,
        f"""
        WITH ledger AS (
            INSERT INTO user_investment_goods (user_id, goods_id, user_investing_amount,
                                               invest_date)
            VALUES ({user}, {goods_id}, {amount}, now()) RETURNING 1
        ), position AS (
            INSERT INTO investment_goods_investor AS gi (goods_id, user_id, amount)
            VALUES ({goods_id}, {user}, {amount})
            ON CONFLICT (goods_id, user_id) DO UPDATE SET amount = gi.amount + EXCLUDED.amount
            RETURNING gi.amount = {amount} AS first
        ), product AS (
            UPDATE investment_goods
            SET current_investing_amount = current_investing_amount + {amount},
                investor_count = investor_count + (SELECT first::integer FROM position)
            WHERE goods_id = {goods_id}
            RETURNING category, repaid, (SELECT count(*) FROM ledger)
        )
        INSERT INTO investor AS i (user_id, invested_total, invested_real_estate)
        SELECT {user}, CASE WHEN NOT repaid THEN {amount} ELSE 0 END,
               CASE WHEN NOT repaid AND category = 'real_estate' THEN {amount} ELSE 0 END
        FROM product
        ON CONFLICT (user_id) DO UPDATE
        SET invested_total = i.invested_total + EXCLUDED.invested_total,
            invested_real_estate = i.invested_real_estate + EXCLUDED.invested_real_estate
        """,
    )


def real_estate(database_url: str, goods_id: int) -> None:
    """Make a product (with no investments yet) a real-estate one."""
    psql(
        database_url,
        f"UPDATE investment_goods SET category = 'real_estate' WHERE goods_id = {goods_id}",
    )


def holder(database_url: str, real_estate_amount: int, other_amount: int) -> int:
    """A new user holding these live amounts in a new real-estate product and a new other one."""
    user = fresh_user()
    estate = create_goods(database_url, title="부동산 상품")
    real_estate(database_url, estate)
    invested(database_url, user, estate, real_estate_amount)
    invested(database_url, user, create_goods(database_url, title="일반 상품"), other_amount)
    return user


def positions(database_url: str, user: int) -> tuple[int, int]:
    """(invested_total, invested_real_estate) as stored for the user."""
    total, estate = psql(
        database_url,
        f"SELECT invested_total, invested_real_estate FROM investor WHERE user_id = {user}",
    ).split("\t")
    return int(total), int(estate)


def from_ledger(database_url: str, user: int) -> tuple[int, int]:
    """What the positions must be: the user's live ledger amounts over products not repaid, and
    over those of category real_estate."""
    total, estate = psql(
        database_url,
        "SELECT coalesce(sum(l.user_investing_amount) FILTER (WHERE NOT g.repaid), 0),"
        " coalesce(sum(l.user_investing_amount)"
        "          FILTER (WHERE NOT g.repaid AND g.category = 'real_estate'), 0)"
        " FROM user_investment_goods l JOIN investment_goods g USING (goods_id)"
        f" WHERE l.user_id = {user} AND NOT EXISTS (SELECT FROM user_investment_cancellation c"
        "                                           WHERE c.investment_id = l.id)",
    ).split("\t")
    return int(total), int(estate)


def product_row(database_url: str, goods_id: int) -> str:
    return psql(
        database_url,
        "SELECT title, total_investing_amount, status, category, min_amount, amount_unit, repaid,"
        f" current_investing_amount, investor_count FROM investment_goods WHERE goods_id = {goods_id}",
    )


def class_of(database_url: str, user: int) -> str:
    return psql(database_url, f"SELECT investor_class FROM investor WHERE user_id = {user}")


def set_caps(admin: httpx.Client, investor_class: str, **caps: int | None) -> httpx.Response:
    return admin.put(f"{LIMITS}/{investor_class}", json={**NO_CAPS, **caps})


def register(admin: httpx.Client, user: int, investor_class: str) -> None:
    response = admin.put(f"{INVESTORS}/{user}", json={"investor_class": investor_class})
    assert response.status_code == 200, response.text


# --- investors ----------------------------------------------------------------------------------


def test_an_unregistered_user_is_general_with_nothing_invested(admin: httpx.Client) -> None:
    user = fresh_user()
    response = admin.get(f"{INVESTORS}/{user}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "user_id": user,
        "investor_class": "general",
        "invested": {"total": 0, "real_estate": 0},
        "limits": NO_CAPS,
    }


def test_setting_a_class_registers_the_user_with_their_positions_and_caps(
    admin: httpx.Client, database_url: str, caps: None
) -> None:
    user = holder(database_url, 700, 300)
    assert set_caps(admin, "qualified", per_product=20_000, total=100_000).status_code == 200
    response = admin.put(f"{INVESTORS}/{user}", json={"investor_class": "qualified"})
    assert response.status_code == 200, response.text
    expected = {
        "user_id": user,
        "investor_class": "qualified",
        "invested": {"total": 1000, "real_estate": 700},
        "limits": {"per_product": 20_000, "total": 100_000, "real_estate": None},
    }
    assert response.json() == expected
    assert admin.get(f"{INVESTORS}/{user}").json() == expected
    assert class_of(database_url, user) == "qualified"
    assert positions(database_url, user) == (1000, 700)  # the class change moved nothing
    back = admin.put(f"{INVESTORS}/{user}", json={"investor_class": "general"}).json()
    assert back["investor_class"] == "general" and back["invested"] == expected["invested"]


def test_a_new_user_registered_has_a_row_with_nothing_invested(
    admin: httpx.Client, database_url: str
) -> None:
    user = fresh_user()
    register(admin, user, "professional")
    assert (
        psql(
            database_url,
            f"SELECT investor_class, invested_total, invested_real_estate FROM investor"
            f" WHERE user_id = {user}",
        )
        == "professional\t0\t0"
    )


@pytest.mark.parametrize(
    ("cap", "limits"),
    [("per_product", {"per_product": 599}), ("total", {"total": 899}),
     ("real_estate", {"real_estate": 599})],
)  # fmt: skip
def test_a_class_whose_cap_the_user_exceeds_is_refused_naming_the_user(
    admin: httpx.Client, database_url: str, caps: None, cap: str, limits: dict[str, int]
) -> None:
    user = holder(database_url, 600, 300)
    register(admin, user, "professional")
    assert set_caps(admin, "qualified", **limits).status_code == 200
    response = admin.put(f"{INVESTORS}/{user}", json={"investor_class": "qualified"})
    problem(response, 409, "LIMIT_BELOW_INVESTED")
    detail = response.json()["detail"]
    assert f"user {user} " in detail and cap in detail
    assert class_of(database_url, user) == "professional"
    # exactly at the caps is within them
    at = {name: value + 1 for name, value in limits.items()}
    assert set_caps(admin, "qualified", **at).status_code == 200
    register(admin, user, "qualified")
    assert class_of(database_url, user) == "qualified"


# --- limits -------------------------------------------------------------------------------------


def test_limits_lists_every_class_and_a_put_replaces_all_three_caps(
    admin: httpx.Client, caps: None
) -> None:
    listed = admin.get(LIMITS)
    assert listed.status_code == 200, listed.text
    assert [row["investor_class"] for row in listed.json()] == [
        "general",
        "qualified",
        "professional",
    ]
    assert all(
        {k: row[k] for k in NO_CAPS} == NO_CAPS and len(row["updated_at"]) == 19
        for row in listed.json()
    )
    act = {"per_product": 20_000_000, "total": 100_000_000, "real_estate": None}
    response = admin.put(f"{LIMITS}/qualified", json=act)
    assert response.status_code == 200, response.text
    assert {k: v for k, v in response.json().items() if k != "updated_at"} == {
        "investor_class": "qualified",
        **act,
    }
    assert response.json() in admin.get(LIMITS).json()
    removed = admin.put(f"{LIMITS}/qualified", json=NO_CAPS).json()
    assert {k: removed[k] for k in NO_CAPS} == NO_CAPS


def test_general_caps_can_be_set_and_removed(admin: httpx.Client, caps: None) -> None:
    large = {"per_product": 2**53 - 1, "total": 2**53 - 1, "real_estate": 2**53 - 1}
    assert admin.put(f"{LIMITS}/general", json=large).json()["total"] == 2**53 - 1
    assert admin.get(f"{INVESTORS}/{fresh_user()}").json()["limits"] == large
    assert admin.put(f"{LIMITS}/general", json=NO_CAPS).status_code == 200


def test_lowering_a_cap_below_what_users_hold_is_refused_naming_how_many(
    admin: httpx.Client, database_url: str, caps: None
) -> None:
    users = [fresh_user() for _ in range(3)]
    goods_id = create_goods(database_url, title="한도 낮추기")
    for user, amount in zip(users, (500, 800, 900), strict=True):
        invested(database_url, user, goods_id, amount)
        register(admin, user, "qualified")
    assert set_caps(admin, "qualified", total=10_000).status_code == 200
    before = admin.get(LIMITS).json()

    many = set_caps(admin, "qualified", total=799)
    problem(many, 409, "LIMIT_BELOW_INVESTED")
    assert "2 users" in many.json()["detail"] and str(users[1]) in many.json()["detail"]
    one = set_caps(admin, "qualified", per_product=899)
    problem(one, 409, "LIMIT_BELOW_INVESTED")
    assert f"user {users[2]} " in one.json()["detail"] and "per_product" in one.json()["detail"]
    assert admin.get(LIMITS).json() == before  # nothing changed
    # the cap exactly at the largest position is allowed
    assert set_caps(admin, "qualified", per_product=900, total=900).status_code == 200


def test_a_real_estate_cap_counts_only_real_estate_positions(
    admin: httpx.Client, database_url: str, caps: None
) -> None:
    user = holder(database_url, 400, 5000)
    register(admin, user, "qualified")
    problem(set_caps(admin, "qualified", real_estate=399), 409, "LIMIT_BELOW_INVESTED")
    assert set_caps(admin, "qualified", real_estate=400).status_code == 200


def test_a_cap_change_waits_for_invests_in_flight_and_decides_on_what_they_did(
    admin: httpx.Client, database_url: str, caps: None
) -> None:
    """An invest holds the limits lock shared until it commits: the cap change queues behind it,
    then sees its amount, and refuses a cap the invest made too low."""
    user = fresh_user()
    goods_id = create_goods(database_url, title="진행 중 투자")
    invested(database_url, user, goods_id, 100)
    register(admin, user, "qualified")
    in_flight = subprocess.Popen(
        [pg_tool("psql"), database_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
         f"BEGIN; SELECT pg_advisory_xact_lock_shared({LIMITS_LOCK});"
         # Everything an invest of 500 writes, so the shared database still verifies.
         f" INSERT INTO user_investment_goods (user_id, goods_id, user_investing_amount)"
         f"  VALUES ({user}, {goods_id}, 500);"
         f" UPDATE investment_goods SET current_investing_amount = current_investing_amount + 500"
         f"  WHERE goods_id = {goods_id};"
         f" UPDATE investor SET invested_total = invested_total + 500 WHERE user_id = {user};"
         f" UPDATE investment_goods_investor SET amount = amount + 500"
         f"  WHERE goods_id = {goods_id} AND user_id = {user};"
         " SELECT pg_sleep(1.5); COMMIT;"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        held = (
            f"l.locktype = 'advisory' AND l.granted AND l.mode = 'ShareLock'"
            f" AND l.classid = {LIMITS_LOCK >> 32} AND l.objid = {LIMITS_LOCK % 2**32}"
            " AND a.query LIKE '%pg_sleep%'"
        )
        wait_until(
            lambda: this_database_locks(database_url, held) == 1, "the invest holds the lock"
        )
        response = set_caps(admin, "qualified", total=300)
    finally:
        assert in_flight.wait(30) == 0
    problem(response, 409, "LIMIT_BELOW_INVESTED")
    assert positions(database_url, user) == (600, 0)


# --- product rules ------------------------------------------------------------------------------


def test_a_product_is_created_and_changed_with_its_rules(
    admin: httpx.Client, database_url: str
) -> None:
    body = {
        "title": "규칙 있는 상품",
        "total_investing_amount": 10_000_000,
        "started_at": "2035-01-01 00:00:00",
        "finished_at": "2035-02-01 00:00:00",
        "category": "real_estate",
        "min_amount": 100_000,
        "amount_unit": 10_000,
    }
    created = admin.post(GOODS, json=body)
    assert created.status_code == 201, created.text
    product = created.json()
    assert {k: product[k] for k in ("category", "min_amount", "amount_unit", "repaid")} == {
        "category": "real_estate",
        "min_amount": 100_000,
        "amount_unit": 10_000,
        "repaid": False,
    }
    changed = admin.patch(
        f"{GOODS}/{product['goods_id']}",
        json={"category": "general", "min_amount": 1, "amount_unit": 5_000, "repaid": True},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json() == {
        **product,
        "category": "general",
        "min_amount": 1,
        "amount_unit": 5_000,
        "repaid": True,
    }
    assert product_row(database_url, product["goods_id"]).split("\t")[3:7] == [
        "general",
        "1",
        "5000",
        "t",
    ]


def test_min_amount_and_amount_unit_leave_existing_investments_alone(
    admin: httpx.Client, database_url: str
) -> None:
    user = fresh_user()
    goods_id = create_goods(database_url, title="단위 변경")
    invested(database_url, user, goods_id, 1234)
    before = (counters(database_url, goods_id), positions(database_url, user))
    response = admin.patch(f"{GOODS}/{goods_id}", json={"min_amount": 5000, "amount_unit": 1000})
    assert response.status_code == 200, response.text
    assert (response.json()["min_amount"], response.json()["amount_unit"]) == (5000, 1000)
    assert (counters(database_url, goods_id), positions(database_url, user)) == before
    assert (
        psql(
            database_url,
            f"SELECT amount FROM investment_goods_investor WHERE goods_id = {goods_id}"
            f" AND user_id = {user}",
        )
        == "1234"
    )


def test_repaid_and_category_changes_keep_every_position_equal_to_the_ledger(
    admin: httpx.Client, database_url: str
) -> None:
    users = [fresh_user() for _ in range(3)]
    goods_id = create_goods(database_url, title="상환 이동")
    elsewhere = create_goods(database_url, title="다른 부동산")
    real_estate(database_url, elsewhere)
    invested(database_url, users[0], goods_id, 1000)
    invested(database_url, users[0], goods_id, 250)  # two investments, one position
    invested(database_url, users[1], goods_id, 400)
    invested(database_url, users[1], elsewhere, 700)
    invested(database_url, users[2], elsewhere, 50)  # not an investor of the product

    def exact() -> list[tuple[int, int]]:
        found = [positions(database_url, user) for user in users]
        assert found == [from_ledger(database_url, user) for user in users]
        return found

    assert exact() == [(1250, 0), (1100, 700), (50, 50)]
    steps = [
        ({"category": "real_estate"}, [(1250, 1250), (1100, 1100), (50, 50)]),
        ({"repaid": True}, [(0, 0), (700, 700), (50, 50)]),
        ({"category": "general"}, [(0, 0), (700, 700), (50, 50)]),  # repaid: nothing counts
        ({"repaid": False}, [(1250, 0), (1100, 700), (50, 50)]),
        ({"repaid": True, "category": "real_estate"}, [(0, 0), (700, 700), (50, 50)]),
        ({"repaid": False}, [(1250, 1250), (1100, 1100), (50, 50)]),
        ({"category": "general", "title": "상환 이동 끝"}, [(1250, 0), (1100, 700), (50, 50)]),
    ]
    for change, expected in steps:
        response = admin.patch(f"{GOODS}/{goods_id}", json=change)
        assert response.status_code == 200, (change, response.text)
        assert exact() == expected, change
    assert counters(database_url, goods_id) == (1650, 2)  # the product's own counters stay


def test_category_to_real_estate_over_a_cap_is_refused_and_changes_nothing(
    admin: httpx.Client, database_url: str, caps: None
) -> None:
    users = [fresh_user() for _ in range(2)]
    goods_id = create_goods(database_url, title="부동산 전환")
    estate = create_goods(database_url, title="기존 부동산")
    real_estate(database_url, estate)
    invested(database_url, users[0], goods_id, 600)
    invested(database_url, users[1], goods_id, 300)
    invested(database_url, users[1], estate, 500)
    for user in users:
        register(admin, user, "qualified")
    assert set_caps(admin, "qualified", real_estate=799).status_code == 200
    before = (product_row(database_url, goods_id), [positions(database_url, u) for u in users])
    response = admin.patch(f"{GOODS}/{goods_id}", json={"category": "real_estate", "title": "x"})
    problem(response, 409, "LIMIT_BELOW_INVESTED")
    assert f"user {users[1]} " in response.json()["detail"]
    assert "real_estate" in response.json()["detail"]
    assert (
        product_row(database_url, goods_id),
        [positions(database_url, u) for u in users],
    ) == before
    assert set_caps(admin, "qualified", real_estate=800).status_code == 200
    assert admin.patch(f"{GOODS}/{goods_id}", json={"category": "real_estate"}).status_code == 200
    assert [positions(database_url, u) for u in users] == [(600, 600), (800, 800)]


def test_repaid_back_to_false_over_a_total_cap_is_refused_naming_how_many(
    admin: httpx.Client, database_url: str, caps: None
) -> None:
    users = [fresh_user() for _ in range(2)]
    goods_id = create_goods(database_url, title="상환 취소")
    other = create_goods(database_url, title="새 투자")
    for user in users:
        invested(database_url, user, goods_id, 500)
        register(admin, user, "qualified")
    assert admin.patch(f"{GOODS}/{goods_id}", json={"repaid": True}).status_code == 200
    for user in users:  # invested again while the first product no longer counted
        invested(database_url, user, other, 600)
    assert set_caps(admin, "qualified", total=1000).status_code == 200
    before = (product_row(database_url, goods_id), [positions(database_url, u) for u in users])
    response = admin.patch(f"{GOODS}/{goods_id}", json={"repaid": False})
    problem(response, 409, "LIMIT_BELOW_INVESTED")
    assert "2 users" in response.json()["detail"] and "total" in response.json()["detail"]
    assert (
        product_row(database_url, goods_id),
        [positions(database_url, u) for u in users],
    ) == before
    assert [positions(database_url, u) for u in users] == [(600, 0), (600, 0)]


def test_a_rules_change_of_an_unknown_product_is_404(admin: httpx.Client) -> None:
    problem(admin.patch(f"{GOODS}/987654321", json={"repaid": True}), 404, "GOODS_NOT_FOUND")


# --- validation and authentication --------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [{}, {"investor_class": "vip"}, {"investor_class": None}, {"investor_class": 2},
     {"investor_class": "general", "extra": True}],
)  # fmt: skip
def test_every_invalid_investor_body_is_400_invalid_investor(
    admin: httpx.Client, database_url: str, body: dict[str, Any]
) -> None:
    user = fresh_user()
    problem(admin.put(f"{INVESTORS}/{user}", json=body), 400, "INVALID_INVESTOR")
    assert class_of(database_url, user) == ""


@pytest.mark.parametrize("user", ["abc", "0", "-1", "1.0", "9223372036854775808"])
def test_an_invalid_user_id_in_the_path_is_400(admin: httpx.Client, user: str) -> None:
    problem(admin.get(f"{INVESTORS}/{user}"), 400, "INVALID_USER_ID")
    put = admin.put(f"{INVESTORS}/{user}", json={"investor_class": "general"})
    problem(put, 400, "INVALID_USER_ID")


@pytest.mark.parametrize(
    "body",
    [{}, {"per_product": 1, "total": 1}, {**NO_CAPS, "total": -1}, {**NO_CAPS, "total": 1.5},
     {**NO_CAPS, "real_estate": "1000"}, {**NO_CAPS, "per_product": True},
     {**NO_CAPS, "total": 2**53}, {**NO_CAPS, "per_borrower": 1}],
)  # fmt: skip
def test_every_invalid_limits_body_is_400_invalid_limits(
    admin: httpx.Client, body: dict[str, Any], caps: None
) -> None:
    before = admin.get(LIMITS).json()
    problem(admin.put(f"{LIMITS}/qualified", json=body), 400, "INVALID_LIMITS")
    assert admin.get(LIMITS).json() == before


@pytest.mark.parametrize("investor_class", ["vip", "General", "real_estate"])
def test_an_unknown_class_in_the_path_is_400(admin: httpx.Client, investor_class: str) -> None:
    problem(admin.put(f"{LIMITS}/{investor_class}", json=NO_CAPS), 400, "INVALID_INVESTOR_CLASS")


@pytest.mark.parametrize("content", [b"[]", b"not json", b"null"])
def test_a_body_that_is_not_a_json_object_is_400_invalid_body(
    admin: httpx.Client, content: bytes
) -> None:
    problem(admin.put(f"{INVESTORS}/1", content=content), 400, "INVALID_BODY")
    problem(admin.put(f"{LIMITS}/general", content=content), 400, "INVALID_BODY")


def test_a_non_json_content_type_is_415(admin: httpx.Client) -> None:
    headers = {"Content-Type": "text/plain"}
    put = admin.put(f"{LIMITS}/general", content=b"{}", headers=headers)
    problem(put, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_every_new_admin_route_needs_the_token(client: httpx.Client, database_url: str) -> None:
    user = fresh_user()
    for response in (
        client.get(f"{INVESTORS}/{user}"),
        client.put(f"{INVESTORS}/{user}", json={"investor_class": "qualified"}),
        client.get(LIMITS),
        client.put(f"{LIMITS}/general", json={**NO_CAPS, "total": 1}),
        client.get(f"{LIMITS}", headers={"Authorization": "Bearer wrong-token-0123456789"}),
    ):
        problem(response, 401, "UNAUTHORIZED")
    assert class_of(database_url, user) == ""
    assert psql(database_url, "SELECT count(*) FROM investor_class_limit WHERE total = 1") == "0"


def test_the_admin_routes_are_absent_without_a_token(two_workers: Any) -> None:
    with httpx.Client(base_url=two_workers.base_url, timeout=10) as http:
        problem(http.get(LIMITS), 404, "NOT_FOUND")
        problem(http.get(f"{INVESTORS}/1"), 404, "NOT_FOUND")
        assert LIMITS not in http.get("/openapi.json").json()["paths"]


def test_openapi_documents_the_caps_administration(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    investor = paths[f"{INVESTORS}/{{user_id}}"]
    limits = paths[LIMITS]["get"]
    put_limits = paths[f"{LIMITS}/{{investor_class}}"]["put"]
    change = paths[f"{GOODS}/{{goods_id}}"]["patch"]
    assert set(investor["get"]["responses"]) == {"200", "400", "401", "503"}
    assert set(investor["put"]["responses"]) == {"200", "400", "401", "409", "413", "415", "503"}
    assert set(limits["responses"]) == {"200", "401", "503"}
    assert set(put_limits["responses"]) == {"200", "400", "401", "409", "413", "415", "503"}
    for operation in (investor["get"], investor["put"], limits, put_limits):
        assert operation["security"] == [{"adminToken": []}]
    body = put_limits["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["per_product", "total", "real_estate"]
    rules = change["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert rules["category"]["enum"] == ["general", "real_estate"]
    assert {"min_amount", "amount_unit", "repaid"} <= set(rules)
    schemas = spec["components"]["schemas"]
    assert {"category", "min_amount", "amount_unit", "repaid"} <= set(
        schemas["AdminGoods"]["properties"]
    )
    assert set(schemas["Investor"]["properties"]) == {
        "user_id", "investor_class", "invested", "limits",
    }  # fmt: skip
    codes = set(schemas["ProblemDetails"]["properties"]["code"]["enum"])
    assert {"LIMIT_BELOW_INVESTED", "INVALID_INVESTOR", "INVALID_LIMITS",
            "INVALID_INVESTOR_CLASS"} <= codes  # fmt: skip
    assert "LIMIT_BELOW_INVESTED" in change["responses"]["409"]["description"]


# --- command line -------------------------------------------------------------------------------


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_cli_investor_limits_and_rules(database_url: str, caps: None) -> None:
    user = fresh_user()
    goods_id = create_goods(database_url, title="명령줄 규칙")
    invested(database_url, user, goods_id, 900)

    done = cli(database_url, "investor", "set", str(user), "qualified")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["investor_class"] == "qualified"
    shown = cli(database_url, "investor", "show", str(user))
    assert orjson.loads(shown.stdout) == {
        "user_id": user,
        "investor_class": "qualified",
        "invested": {"total": 900, "real_estate": 0},
        "limits": NO_CAPS,
    }

    done = cli(database_url, "limits", "set", "qualified", "--per-product", "1000", "--total",
               "none", "--real-estate", "0")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {k: v for k, v in orjson.loads(done.stdout).items() if k != "updated_at"} == {
        "investor_class": "qualified", "per_product": 1000, "total": None, "real_estate": 0,
    }  # fmt: skip
    listed = [
        orjson.loads(line) for line in cli(database_url, "limits", "list").stdout.splitlines()
    ]
    assert [row["investor_class"] for row in listed] == ["general", "qualified", "professional"]
    assert listed[1]["per_product"] == 1000

    refused = cli(database_url, "limits", "set", "qualified", "--per-product", "899", "--total",
                  "none", "--real-estate", "none")  # fmt: skip
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.startswith("LIMIT_BELOW_INVESTED: user ")

    rules = cli(database_url, "goods", "rules", str(goods_id), "--category", "real_estate",
                "--min-amount", "100", "--amount-unit", "100")  # fmt: skip
    assert rules.returncode == 1 and "LIMIT_BELOW_INVESTED" in rules.stderr  # real estate cap 0
    assert product_row(database_url, goods_id).split("\t")[3:7] == ["general", "1", "1", "f"]
    rules = cli(database_url, "goods", "rules", str(goods_id), "--min-amount", "100",
                "--amount-unit", "100", "--repaid", "true")  # fmt: skip
    assert rules.returncode == 0, rules.stderr
    product = orjson.loads(rules.stdout)
    assert (product["min_amount"], product["amount_unit"], product["repaid"]) == (100, 100, True)
    assert positions(database_url, user) == (0, 0) == from_ledger(database_url, user)


@pytest.mark.parametrize(
    ("args", "returncode", "message"),
    [
        (["investor", "show", "0"], 2, "INVALID_USER_ID"),
        (["investor", "set", "1", "vip"], 2, "invalid choice"),
        (["limits", "set", "qualified", "--per-product", "-1", "--total", "none",
          "--real-estate", "none"], 2, "INVALID_LIMITS"),
        (["limits", "set", "qualified", "--per-product", "lots", "--total", "none",
          "--real-estate", "none"], 2, "KRW"),
        (["limits", "set", "qualified", "--total", "none", "--real-estate", "none"], 2,
         "--per-product"),
        (["goods", "rules", "1"], 2, "INVALID_GOODS"),
        (["goods", "rules", "1", "--min-amount", "0"], 2, "INVALID_GOODS"),
        (["goods", "rules", "0", "--repaid", "true"], 2, "INVALID_GOODS_ID"),
        (["goods", "rules", "987654321", "--repaid", "true"], 1, "GOODS_NOT_FOUND"),
        (["goods", "rules", "1", "--repaid", "yes"], 2, "true or false"),
    ],
)  # fmt: skip
def test_cli_refuses_invalid_input(
    database_url: str, args: list[str], returncode: int, message: str
) -> None:
    before = psql(
        database_url, "SELECT count(*), sum(hashtext(l::text)) FROM investor_class_limit l"
    )
    done = cli(database_url, *args)
    assert done.returncode == returncode, (done.stdout, done.stderr)
    assert message in done.stderr and done.stdout == ""
    assert (
        psql(database_url, "SELECT count(*), sum(hashtext(l::text)) FROM investor_class_limit l")
        == before
    )


# --- the demo data ------------------------------------------------------------------------------


def test_the_demo_data_loads_the_acts_caps_as_an_example(postgres_server: str) -> None:
    from bench.caps import ACT

    with migrated_database(postgres_server) as url:
        done = cli(url, "migrate", "--demo")
        assert done.returncode == 0, done.stderr
        assert "Online Investment-Linked Financial Business Act's caps" in done.stderr
        listed = [orjson.loads(line) for line in cli(url, "limits", "list").stdout.splitlines()]
        assert {row["investor_class"]: {k: row[k] for k in NO_CAPS} for row in listed} == ACT
        assert orjson.loads(cli(url, "investor", "show", "2").stdout)["investor_class"] == (
            "qualified"
        )
        rules = psql(
            url,
            "SELECT count(*) FILTER (WHERE category = 'real_estate'),"
            " count(*) FILTER (WHERE min_amount > 1 AND amount_unit > 1),"
            " count(*) FILTER (WHERE repaid) FROM investment_goods",
        )
        assert rules == "3\t1\t1"
        # every demo investment fits its user's caps (from the ledger, whatever keeps positions)
        over = psql(
            url,
            """
            WITH live AS (
                SELECT l.user_id, l.goods_id, sum(l.user_investing_amount) AS amount,
                       bool_or(g.repaid) AS repaid, bool_or(g.category = 'real_estate') AS estate
                FROM user_investment_goods l JOIN investment_goods g USING (goods_id)
                GROUP BY l.user_id, l.goods_id
            ), per_user AS (
                SELECT user_id, max(amount) AS largest,
                       coalesce(sum(amount) FILTER (WHERE NOT repaid), 0) AS total,
                       coalesce(sum(amount) FILTER (WHERE NOT repaid AND estate), 0) AS estate
                FROM live GROUP BY user_id
            )
            SELECT count(*) FROM per_user p
            LEFT JOIN investor i USING (user_id)
            JOIN investor_class_limit c ON c.investor_class = coalesce(i.investor_class, 'general')
            WHERE p.largest > c.per_product OR p.total > c.total OR p.estate > c.real_estate
            """,
        )
        assert over == "0"
        assert int(psql(url, "SELECT count(DISTINCT user_id) FROM user_investment_goods")) == 3
