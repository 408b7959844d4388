"""The rules of investors' classes and classes' caps (service/investors.py): one set for the admin
API and the command line (no database)."""

from __future__ import annotations

from typing import Any

import pytest

from service.investors import (
    CLASSES,
    limit_below_invested,
    parse_class,
    parse_user_id,
    validate_investor,
    validate_limits,
)
from service.parsing import MAX_AMOUNT, MAX_USER_ID
from service.problems import Problem

CAPS = {"per_product": 5_000_000, "total": 30_000_000, "real_estate": 10_000_000}


def refused(code: str, check: Any, *args: Any) -> str:
    with pytest.raises(Problem) as caught:
        check(*args)
    assert caught.value.code == code
    return caught.value.detail


@pytest.mark.parametrize("investor_class", CLASSES)
def test_each_class_is_accepted(investor_class: str) -> None:
    assert validate_investor({"investor_class": investor_class}) == investor_class
    assert parse_class(investor_class) == investor_class


@pytest.mark.parametrize(
    "body",
    [{}, {"investor_class": None}, {"investor_class": "General"}, {"investor_class": "vip"},
     {"investor_class": 1}, {"investor_class": ["general"]},
     {"investor_class": "general", "user_id": 5}],
)  # fmt: skip
def test_an_investor_body_needs_one_known_class(body: dict[str, Any]) -> None:
    refused("INVALID_INVESTOR", validate_investor, body)


@pytest.mark.parametrize("raw", ["", "vip", "General", "real_estate"])
def test_an_unknown_class_in_the_path_is_refused(raw: str) -> None:
    assert "general" in refused("INVALID_INVESTOR_CLASS", parse_class, raw)


@pytest.mark.parametrize("raw", ["", "0", "-1", "abc", "1.5", "١٢", str(MAX_USER_ID + 1)])
def test_a_path_user_id_is_an_integer_from_1_to_2_63_minus_1(raw: str) -> None:
    refused("INVALID_USER_ID", parse_user_id, raw)
    assert parse_user_id(str(MAX_USER_ID)) == MAX_USER_ID


def test_caps_are_integers_or_null_from_0_up() -> None:
    assert validate_limits(CAPS) == (5_000_000, 30_000_000, 10_000_000)
    none = {"per_product": None, "total": None, "real_estate": None}
    assert validate_limits(none) == (None, None, None)
    edges = {"per_product": 0, "total": MAX_AMOUNT, "real_estate": None}
    assert validate_limits(edges) == (0, MAX_AMOUNT, None)


@pytest.mark.parametrize("name", list(CAPS))
def test_every_cap_must_be_given(name: str) -> None:
    body = {k: v for k, v in CAPS.items() if k != name}
    assert name in refused("INVALID_LIMITS", validate_limits, body)


@pytest.mark.parametrize("name", list(CAPS))
@pytest.mark.parametrize("value", [-1, MAX_AMOUNT + 1, 1.5, "1000", True, [1]])
def test_a_cap_out_of_range_or_not_an_integer_is_refused(name: str, value: Any) -> None:
    assert name in refused("INVALID_LIMITS", validate_limits, {**CAPS, name: value})


def test_an_unknown_cap_is_refused() -> None:
    assert "per_borrower" in refused("INVALID_LIMITS", validate_limits, {**CAPS, "per_borrower": 1})


def test_the_refusal_names_the_user_or_how_many() -> None:
    one = limit_below_invested("total", 1, 42)
    assert (one.code, one.status) == ("LIMIT_BELOW_INVESTED", 409)
    assert "user 42 " in one.detail and "total" in one.detail
    many = limit_below_invested("per_product", 3, 7)
    assert "3 users" in many.detail and "7" in many.detail and "per_product" in many.detail
