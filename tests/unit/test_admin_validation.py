"""validate_goods(): the one set of product rules for the admin API and the CLI (no database)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from service.goods import MAX_TITLE, GoodsFields, validate_goods
from service.parsing import MAX_AMOUNT
from service.problems import Problem

SEOUL = ZoneInfo("Asia/Seoul")
VALID = {
    "title": "개인신용 포트폴리오",
    "total_investing_amount": 1_000_000,
    "started_at": "2026-12-01 10:00:00",
    "finished_at": "2026-12-31 18:00:00",
}


def refused(values: dict[str, Any], create: bool = True) -> str:
    with pytest.raises(Problem) as caught:
        validate_goods(values, SEOUL, create=create)
    assert caught.value.code == "INVALID_GOODS"
    return caught.value.detail


def test_a_valid_product_is_accepted_with_times_in_the_display_zone() -> None:
    fields = validate_goods(VALID, SEOUL, create=True)
    assert fields == GoodsFields(
        "개인신용 포트폴리오",
        1_000_000,
        datetime(2026, 12, 1, 10, tzinfo=SEOUL),
        datetime(2026, 12, 31, 18, tzinfo=SEOUL),
        None,
    )


def test_t_separator_and_surrounding_spaces_are_accepted() -> None:
    values = {**VALID, "title": "  상품  ", "started_at": "2026-12-01T10:00:00"}
    fields = validate_goods(values, SEOUL, create=True)
    assert fields.title == "상품"
    assert fields.started_at == datetime(2026, 12, 1, 10, tzinfo=SEOUL)


@pytest.mark.parametrize(
    "missing", ["title", "total_investing_amount", "started_at", "finished_at"]
)
def test_create_requires_every_field_but_status(missing: str) -> None:
    values = {k: v for k, v in VALID.items() if k != missing}
    assert missing in refused(values)


@pytest.mark.parametrize("title", ["", "   ", "x" * (MAX_TITLE + 1), 7, "tab\tinside", "new\nline"])
def test_title_must_be_1_to_30_printable_characters(title: Any) -> None:
    assert "title" in refused({**VALID, "title": title})


def test_title_of_exactly_30_characters_is_accepted() -> None:
    assert validate_goods({**VALID, "title": "가" * MAX_TITLE}, SEOUL, create=True).title


@pytest.mark.parametrize("total", [0, -1, MAX_AMOUNT + 1, 1.5, "1000", True])
def test_total_must_be_a_positive_integer(total: Any) -> None:
    assert "total_investing_amount" in refused({**VALID, "total_investing_amount": total})


@pytest.mark.parametrize(
    "time", ["2026-12-01", "2026/12/01 10:00:00", "2026-13-01 10:00:00", "tomorrow", 1700000000]
)
def test_times_must_be_valid_in_the_spec_format(time: Any) -> None:
    assert "started_at" in refused({**VALID, "started_at": time})


@pytest.mark.parametrize("finished_at", ["2026-12-01 10:00:00", "2026-11-30 10:00:00"])
def test_finish_must_be_after_start(finished_at: str) -> None:
    assert "after" in refused({**VALID, "finished_at": finished_at})


def test_status_must_be_a_boolean() -> None:
    assert "status" in refused({**VALID, "status": "false"})
    assert validate_goods({**VALID, "status": False}, SEOUL, create=True).status is False


def test_unknown_fields_are_refused() -> None:
    assert "total" in refused({**VALID, "total": 5})


def test_a_change_needs_at_least_one_field_and_keeps_the_others_unset() -> None:
    refused({}, create=False)
    refused({"title": None}, create=False)
    fields = validate_goods({"total_investing_amount": 5}, SEOUL, create=False)
    assert fields == GoodsFields(total_investing_amount=5)
    assert fields.params() == [None, 5, None, None, None, None, None, None, None]


def test_a_change_checks_the_same_rules() -> None:
    refused({"total_investing_amount": 0}, create=False)
    refused({"title": ""}, create=False)
    refused(
        {"started_at": "2026-12-02 00:00:00", "finished_at": "2026-12-01 00:00:00"}, create=False
    )


def test_the_rules_are_accepted_and_passed_on() -> None:
    values = {"category": "real_estate", "min_amount": 10_000, "amount_unit": 1_000, "repaid": True}
    fields = validate_goods(values, SEOUL, create=False)
    assert fields == GoodsFields(
        category="real_estate", min_amount=10_000, amount_unit=1_000, repaid=True
    )
    assert fields.params()[5:] == ["real_estate", 10_000, 1_000, True]
    created = validate_goods({**VALID, **values}, SEOUL, create=True)
    assert (created.category, created.repaid) == ("real_estate", True)


@pytest.mark.parametrize("category", ["REAL_ESTATE", "realestate", "", 1, True])
def test_category_is_general_or_real_estate(category: Any) -> None:
    assert "category" in refused({"category": category}, create=False)


@pytest.mark.parametrize("name", ["min_amount", "amount_unit"])
@pytest.mark.parametrize("value", [0, -1, MAX_AMOUNT + 1, 1.5, "10", True])
def test_min_amount_and_amount_unit_are_positive_integers(name: str, value: Any) -> None:
    assert name in refused({name: value}, create=False)


@pytest.mark.parametrize("name", ["min_amount", "amount_unit"])
def test_min_amount_and_amount_unit_take_1_and_the_largest_amount(name: str) -> None:
    for value in (1, MAX_AMOUNT):
        assert getattr(validate_goods({name: value}, SEOUL, create=False), name) == value


@pytest.mark.parametrize("repaid", ["true", 1, 0])
def test_repaid_must_be_a_boolean(repaid: Any) -> None:
    assert "repaid" in refused({"repaid": repaid}, create=False)
