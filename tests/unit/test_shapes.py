"""Each response shape is declared once: what the use cases write is what the OpenAPI schema says."""

from __future__ import annotations

from service.cancelling import CancelRow
from service.goods import Goods, goods_json
from service.investing import InvestResult
from service.openapi import CANCEL_RESULT, GOODS, INVEST_RESULT, MY_INVESTMENT
from service.shapes import STATE, TIME


def test_the_invest_answer_has_the_schema_keys_in_order() -> None:
    assert list(InvestResult.__annotations__) == list(INVEST_RESULT["properties"])
    assert INVEST_RESULT["required"] == list(INVEST_RESULT["properties"])
    assert INVEST_RESULT["properties"]["investment_id"] == {"type": ["integer", "null"]}
    assert INVEST_RESULT["properties"]["invest_date"] == TIME
    assert INVEST_RESULT["properties"]["state"] == STATE


def test_a_product_has_the_schema_keys_in_order() -> None:
    row = (7, "t", 100, 10, 1, True, "recruiting", "2021-03-01 00:00:00", "2021-05-01 00:00:00")
    assert list(goods_json(row)) == list(GOODS["properties"]) == list(Goods._fields)
    assert GOODS["properties"]["status"] == {"type": "boolean"}
    assert GOODS["properties"]["started_at"] == TIME


def test_my_investment_items_are_described_as_the_statement_renders_them() -> None:
    assert list(MY_INVESTMENT["properties"]) == [
        "goods_id", "title", "total_investing_amount", "user_investing_amount", "invest_date",
        "investment_id",
    ]  # fmt: skip
    assert MY_INVESTMENT["properties"]["invest_date"] == TIME


def test_a_cancellation_is_described_as_the_use_case_answers_it() -> None:
    assert list(CANCEL_RESULT["properties"]) == [
        "investment_id", "goods_id", "cancelled_amount", "cancelled_at",
        "current_investing_amount", "status", "state",
    ]  # fmt: skip
    assert list(CANCEL_RESULT["properties"]) == list(CancelRow._fields[1:])
    assert CANCEL_RESULT["properties"]["cancelled_at"] == TIME
    assert CANCEL_RESULT["properties"]["state"] == STATE
