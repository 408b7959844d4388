"""Investor caps and product amount rules decided inside invest_many() (SPEC §4): the answers of a
call equal the requests served one by one in array order on locked state, never over a cap and
never a refusal while room was free; a refusal writes nothing and changes no other answer; keyed
refusals replay; the positions (per product and per investor) stay equal to the ledger.

The capped users here are `qualified` (registered by the test), and the tests set that class's
caps and put them back, so the other tests of the session (general users, no caps) are untouched."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.test_invest_many import invest_many
from tests.support import counters, create_goods, fresh_user, psql, verify_ledger

CLASS = "qualified"


def set_caps(url: str, per_product: int | None, total: int | None, real_estate: int | None) -> None:
    def value(v: int | None) -> str:
        return "NULL" if v is None else str(v)

    psql(
        url,
        f"UPDATE investor_class_limit SET per_product = {value(per_product)},"
        f" total = {value(total)}, real_estate = {value(real_estate)}"
        f" WHERE investor_class = '{CLASS}'",
    )


@pytest.fixture
def caps(database_url: str) -> Iterator[Any]:
    """set_caps for the test's class; afterwards no caps again, and the test's users move to a
    class without caps (later tests set other caps, which they may be over)."""
    yield lambda *values: set_caps(database_url, *values)
    set_caps(database_url, None, None, None)
    psql(
        database_url,
        f"UPDATE investor SET investor_class = 'professional' WHERE investor_class = '{CLASS}'",
    )


def capped_user(url: str) -> int:
    user = fresh_user()
    psql(url, f"INSERT INTO investor (user_id, investor_class) VALUES ({user}, '{CLASS}')")
    return user


def product(url: str, total: int = 10**9, **rules: Any) -> int:
    goods_id = create_goods(url, total=total)
    if rules:
        sets = ", ".join(
            f"{name} = {value!r}" if isinstance(value, str) else f"{name} = {value}"
            for name, value in rules.items()
        )
        psql(url, f"UPDATE investment_goods SET {sets} WHERE goods_id = {goods_id}")
    return goods_id


def positions(url: str, user: int) -> tuple[int, int]:
    out = psql(
        url, f"SELECT invested_total, invested_real_estate FROM investor WHERE user_id = {user}"
    )
    total, real_estate = out.split("\t")
    return int(total), int(real_estate)


def amount_in(url: str, goods_id: int, user: int) -> int:
    out = psql(
        url,
        "SELECT amount FROM investment_goods_investor"
        f" WHERE goods_id = {goods_id} AND user_id = {user}",
    )
    return int(out) if out else 0


def answers(rows: list[dict[str, Any]]) -> list[tuple[str, int | None, str | None, int | None]]:
    return [(r["outcome"], r["invested"], r["refused"] or None, r["refused_value"]) for r in rows]


def test_per_product_cap_refuses_with_the_room_left(database_url: str, caps: Any) -> None:
    caps(100, None, None)
    goods = product(database_url)
    user = capped_user(database_url)
    rows = invest_many(database_url, [(goods, user, 60, None), (goods, user, 60, None)])
    assert answers(rows) == [("done", 60, None, None), ("limit", 0, "per_product", 40)]
    assert rows[1]["id"] is None
    rows = invest_many(database_url, [(goods, user, 40, None), (goods, user, 1, None)])
    assert answers(rows) == [("done", 40, None, None), ("limit", 0, "per_product", 0)]
    assert amount_in(database_url, goods, user) == 100
    assert counters(database_url, goods) == (100, 1)
    verify_ledger(database_url)


def test_a_refusal_changes_no_other_answer_in_its_call(database_url: str, caps: Any) -> None:
    """Serial order in the array: the refused request takes nothing, so the product's remaining
    amount and the user's room are what the later requests would have found without it."""
    caps(None, 100, None)
    small = product(database_url, total=100)
    other = product(database_url)
    user, plain = capped_user(database_url), fresh_user()
    rows = invest_many(
        database_url,
        [
            (other, user, 60, None),
            (small, user, 80, None),  # 80 > the 40 its total cap leaves: refused
            (small, plain, 100, None),  # finds the whole 100 still there
            (other, user, 40, None),  # exactly the room left
            (other, user, 10, None),
        ],
    )
    assert answers(rows) == [
        ("done", 60, None, None),
        ("limit", 0, "total", 40),
        ("done", 100, None, None),
        ("done", 40, None, None),
        ("limit", 0, "total", 0),
    ]
    assert rows[2]["state"] == "sold_out"
    assert positions(database_url, user) == (100, 0)
    verify_ledger(database_url)


def test_the_grant_is_judged_after_the_products_remainder(database_url: str, caps: Any) -> None:
    """A request asking more than its product has left is judged by what it would get: the
    remainder fits the user's room, so it is granted, not refused."""
    caps(50, None, None)
    goods = product(database_url, total=130)
    user, plain = capped_user(database_url), fresh_user()
    rows = invest_many(database_url, [(goods, plain, 100, None), (goods, user, 500, None)])
    assert answers(rows) == [("done", 100, None, None), ("done", 30, None, None)]
    assert rows[1]["state"] == "sold_out"


def test_real_estate_and_repaid_products(database_url: str, caps: Any) -> None:
    caps(None, 1_000, 300)
    estate = product(database_url, category="real_estate")
    estate2 = product(database_url, category="real_estate")
    general = product(database_url)
    repaid = product(database_url, repaid=True)
    user = capped_user(database_url)
    psql(
        database_url,
        f"UPDATE investor SET invested_total = 600 WHERE user_id = {user}",
    )  # as if repaid-free investments were there: only the totals count here
    rows = invest_many(
        database_url,
        [
            (estate, user, 200, None),
            (estate2, user, 200, None),  # real estate: 100 left
            (repaid, user, 900, None),  # repaid: counts toward no total
            (general, user, 300, None),  # total: 1000 - 800 = 200 left
            (estate2, user, 100, None),
            (general, user, 200, None),  # total: 100 left
        ],
    )
    assert answers(rows) == [
        ("done", 200, None, None),
        ("limit", 0, "real_estate", 100),
        ("done", 900, None, None),
        ("limit", 0, "total", 200),
        ("done", 100, None, None),
        ("limit", 0, "total", 100),
    ]
    assert positions(database_url, user) == (900, 300)
    # Back to what the ledger says, and to a class without caps (the 900 in the repaid product
    # stays over the per_product caps later tests set for this class).
    psql(
        database_url,
        "UPDATE investor SET invested_total = 300, investor_class = 'professional'"
        f" WHERE user_id = {user}",
    )


def test_amount_rules_are_the_products(database_url: str) -> None:
    goods = product(database_url, min_amount=10_000, amount_unit=5_000)
    user = fresh_user()
    rows = invest_many(
        database_url,
        [
            (goods, user, 5_000, None),
            (goods, user, 12_000, None),
            (goods, user, 15_000, None),
            (2**62, user, 1, None),  # unknown product: not found, no rule
        ],
    )
    assert answers(rows) == [
        ("invalid_amount", 0, "min_amount", 10_000),
        ("invalid_amount", 0, "amount_unit", 5_000),
        ("done", 15_000, None, None),
        ("done", 0, None, None),
    ]
    assert [r["found"] for r in rows] == [True, True, True, False]
    assert counters(database_url, goods) == (15_000, 1)


def test_a_keyed_refusal_is_replayed(database_url: str, caps: Any) -> None:
    caps(100, None, None)
    goods = product(database_url)
    user = capped_user(database_url)
    rows = invest_many(database_url, [(goods, user, 150, "k1")])
    assert answers(rows) == [("limit", 0, "per_product", 100)]
    caps(1_000, None, None)  # room now; the key still answers what it answered
    rows = invest_many(database_url, [(goods, user, 150, "k1"), (goods, user, 150, "k2")])
    assert answers(rows) == [("replay", 0, "per_product", 100), ("done", 150, None, None)]
    rows = invest_many(database_url, [(goods, user, 151, "k1")])
    assert rows[0]["outcome"] == "mismatch"


def test_positions_follow_the_ledger(database_url: str) -> None:
    """No caps at all: amounts per (product, user), investor totals and investor_count."""
    goods, estate = product(database_url), product(database_url, category="real_estate")
    a, b = fresh_user(), fresh_user()
    invest_many(
        database_url,
        [(goods, a, 10, None), (estate, a, 20, None), (goods, b, 5, None), (goods, a, 1, None)],
    )
    assert amount_in(database_url, goods, a) == 11
    assert amount_in(database_url, goods, b) == 5
    assert positions(database_url, a) == (31, 20)
    assert counters(database_url, goods) == (16, 2)
    verify_ledger(database_url)


def serial(
    requests: list[tuple[int, int, int]],
    products: dict[int, dict[str, Any]],
    capped: set[int],
    caps: tuple[int | None, int | None, int | None],
    state: dict[str, dict[Any, int]],
) -> list[tuple[str, int, str | None, int | None]]:
    """The requests served one by one: SPEC §4's rules, written plainly."""
    out: list[tuple[str, int, str | None, int | None]] = []
    per_product, total, real_estate = caps
    for goods, user, asked in requests:
        p = products[goods]
        g = min(asked, p["total"] - state["current"].get(goods, 0))
        counts = not p["repaid"]
        estate = counts and p["category"] == "real_estate"
        if g > 0 and user in capped:
            rooms = []
            if per_product is not None:
                rooms.append((per_product - state["amount"].get((goods, user), 0), "per_product"))
            if counts and total is not None:
                rooms.append((total - state["total"].get(user, 0), "total"))
            if estate and real_estate is not None:
                rooms.append((real_estate - state["estate"].get(user, 0), "real_estate"))
            if rooms:
                room, cap = min(rooms, key=lambda r: r[0])  # first of the least
                if g > room:
                    out.append(("limit", 0, cap, max(room, 0)))
                    continue
        g = max(g, 0)
        state["current"][goods] = state["current"].get(goods, 0) + g
        state["amount"][(goods, user)] = state["amount"].get((goods, user), 0) + g
        if counts:
            state["total"][user] = state["total"].get(user, 0) + g
        if estate:
            state["estate"][user] = state["estate"].get(user, 0) + g
        out.append(("done", g, None, None))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_calls_equal_the_serial_order(database_url: str, caps: Any, seed: int) -> None:
    chance = random.Random(seed)
    limits = (700, 1_500, 800)
    caps(*limits)
    products: dict[int, dict[str, Any]] = {}
    for n in range(5):
        spec = {
            "total": chance.choice([500, 2_000, 10**6]),
            "category": "real_estate" if n % 2 else "general",
            "repaid": n == 4,
        }
        goods_id = product(
            database_url, total=spec["total"], category=spec["category"], repaid=spec["repaid"]
        )
        products[goods_id] = spec
    capped = {capped_user(database_url) for _ in range(3)}
    users = [*capped, fresh_user(), fresh_user()]
    state: dict[str, dict[Any, int]] = {"current": {}, "amount": {}, "total": {}, "estate": {}}
    for _ in range(4):
        requests = [
            (
                chance.choice(list(products)),
                chance.choice(users),
                chance.choice([50, 100, 250, 400]),
            )
            for _ in range(chance.randint(20, 120))
        ]
        rows = invest_many(database_url, [(*r, None) for r in requests])
        assert answers(rows) == serial(requests, products, capped, limits, state)
    for user in capped:
        total, estate = positions(database_url, user)
        assert total == state["total"].get(user, 0) <= limits[1]
        assert estate == state["estate"].get(user, 0) <= limits[2]
    verify_ledger(database_url)


def test_concurrent_calls_of_one_user_fill_every_cap_exactly(database_url: str, caps: Any) -> None:
    """Hundreds of invests of one capped user at once, in many calls across four products: no
    cap is passed, and every cap is filled (a refusal while room was free would leave some)."""
    caps(300, 1_000, 400)
    goods = [product(database_url), product(database_url)]
    estate = [product(database_url, category="real_estate") for _ in range(2)]
    user = capped_user(database_url)
    everything = goods + estate
    refused: list[int] = []

    def calls() -> None:
        chance = random.Random()
        for _ in range(10):
            batch = [(chance.choice(everything), user, 10, None) for _ in range(8)]
            rows = invest_many(database_url, batch, wait_ms=20_000)  # never passed over
            refused.extend(1 for r in rows if r["outcome"] == "limit")

    threads = [threading.Thread(target=calls) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    amounts = {g: amount_in(database_url, g, user) for g in everything}
    assert all(a <= 300 for a in amounts.values())
    assert sum(amounts[g] for g in estate) == 400  # the real-estate cap, filled
    assert sum(amounts.values()) == 1_000  # min(total cap, demand 4,800)
    assert positions(database_url, user) == (1_000, 400)
    assert len(refused) == 480 - 100
    verify_ledger(database_url)
