"""Parsing and validation of headers, bodies, periods, pages and amounts (no database)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from service.parsing import (
    MAX_AMOUNT,
    check_json_content_type,
    format_cursor,
    parse_invest_body,
    parse_investment_id,
    parse_page,
    parse_period,
    parse_time,
    parse_user_id,
)
from service.problems import Problem

SEOUL = ZoneInfo("Asia/Seoul")


def code_of(call, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(Problem) as caught:
        call(*args)
    return caught.value.code


@pytest.mark.parametrize(
    "raw, expected",
    [(b"1", 1), (b"42", 42), (b" 7 ", 7), (b"9223372036854775807", 2**63 - 1), (b"007", 7)],
)
def test_user_id_accepts_decimal_integers_in_range(raw: bytes, expected: int) -> None:
    assert parse_user_id([raw]) == expected


@pytest.mark.parametrize("values", [[], [b""], [b"   "]])
def test_user_id_missing_or_empty(values: list[bytes]) -> None:
    assert code_of(parse_user_id, values) == "MISSING_USER_ID"


@pytest.mark.parametrize(
    "raw",
    [b"0", b"-1", b"+1", b"1.5", b"1e3", b"abc", b"9223372036854775808", b"99999999999999999999",
     b"1; DROP TABLE user_investment_goods", "١".encode(), b"0x10", b"1 2"],
)  # fmt: skip
def test_user_id_invalid(raw: bytes) -> None:
    assert code_of(parse_user_id, [raw]) == "INVALID_USER_ID"


def test_user_id_sent_twice_is_invalid() -> None:
    assert code_of(parse_user_id, [b"1", b"2"]) == "INVALID_USER_ID"


def body(**fields: object) -> bytes:
    return orjson.dumps(fields)


def test_invest_body_camel_and_snake_case() -> None:
    assert parse_invest_body(body(goodsId=3, investmentAmount=1000)) == (3, 1000)
    assert parse_invest_body(body(goods_id=3, investment_amount=1000)) == (3, 1000)
    assert parse_invest_body(body(goodsId=3, investmentAmount=5, extra="ignored")) == (3, 5)


def test_invest_body_amount_bounds() -> None:
    assert parse_invest_body(body(goodsId=1, investmentAmount=1)) == (1, 1)
    assert parse_invest_body(body(goodsId=1, investmentAmount=MAX_AMOUNT)) == (1, MAX_AMOUNT)


@pytest.mark.parametrize(
    "raw",
    [b"", b"   ", b"[]", b"[1,2]", b"1", b'"text"', b"null", b"{", b"{'goodsId': 1}",
     b'{"goodsId": 1, "investmentAmount": 5', b"\xff\xfe{}", b"[" * 5000 + b"]" * 5000,
     b'{"goodsId": 1, "investmentAmount": NaN}'],
)  # fmt: skip
def test_invest_body_not_a_json_object(raw: bytes) -> None:
    assert code_of(parse_invest_body, raw) == "INVALID_BODY"


@pytest.mark.parametrize(
    "goods_id", [None, 0, -1, 1.0, 1.5, "1", True, [1], {"id": 1}, 2**63, 10**30]
)
def test_invest_body_invalid_goods_id(goods_id: object) -> None:
    raw = (
        b'{"goodsId": %s, "investmentAmount": 100}' % orjson.dumps(goods_id)
        if goods_id != 10**30
        else b'{"goodsId": 1000000000000000000000000000000, "investmentAmount": 100}'
    )
    assert code_of(parse_invest_body, raw) == "INVALID_GOODS_ID"


def test_invest_body_missing_goods_id() -> None:
    assert code_of(parse_invest_body, body(investmentAmount=100)) == "INVALID_GOODS_ID"


@pytest.mark.parametrize(
    "raw_amount",
    [b"0", b"-1", b"1.0", b"1.5", b"1e3", b'"1000"', b"true", b"false", b"null", b"[1000]",
     str(MAX_AMOUNT + 1).encode(), b"9223372036854775808", b"1" * 400],
)  # fmt: skip
def test_invest_body_invalid_amount(raw_amount: bytes) -> None:
    assert (
        code_of(parse_invest_body, b'{"goodsId": 1, "investmentAmount": %s}' % raw_amount)
        == "INVALID_AMOUNT"
    )


def test_invest_body_missing_amount() -> None:
    assert code_of(parse_invest_body, body(goodsId=1)) == "INVALID_AMOUNT"


def test_invest_body_duplicate_keys_take_the_last() -> None:
    assert parse_invest_body(b'{"goodsId": 1, "investmentAmount": 5, "investmentAmount": 7}') == (
        1,
        7,
    )


def test_time_accepts_space_and_t_separators_in_the_display_zone() -> None:
    expected = datetime(2021, 4, 2, 0, 0, 0, tzinfo=SEOUL)
    assert parse_time("2021-04-02 00:00:00", SEOUL) == expected
    assert parse_time("2021-04-02T00:00:00", SEOUL) == expected
    assert parse_time("2021-04-02 00:00:00", SEOUL).utcoffset().total_seconds() == 9 * 3600  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "value",
    ["2021-04-02", "2021-04-02 00:00", "2021-02-30 00:00:00", "2021-13-01 00:00:00",
     "2021-04-02 24:00:00", "21-04-02 00:00:00", "2021-04-02 00:00:00Z", "2021-04-02 00:00:00+09:00",
     "2021/04/02 00:00:00", "", "'; DROP TABLE investment_goods; --", "２０２１-04-02 00:00:00"],
)  # fmt: skip
def test_time_rejects_other_forms(value: str) -> None:
    with pytest.raises(ValueError):
        parse_time(value, SEOUL)


def test_period_requires_both_bounds_in_order() -> None:
    ok = parse_period(
        {"started_at": ["2021-04-01 00:00:00"], "finished_at": ["2021-05-01 00:00:00"]}, SEOUL
    )
    assert ok[0] < ok[1]
    same = parse_period(
        {"started_at": ["2021-04-01 00:00:00"], "finished_at": ["2021-04-01 00:00:00"]}, SEOUL
    )
    assert same[0] == same[1]
    for query in (
        {},
        {"started_at": ["2021-04-01 00:00:00"]},
        {"finished_at": ["2021-04-01 00:00:00"]},
        {"started_at": ["2021-05-01 00:00:00"], "finished_at": ["2021-04-01 00:00:00"]},
        {"started_at": ["x"], "finished_at": ["2021-04-01 00:00:00"]},
        {
            "started_at": ["2021-04-01 00:00:00", "2021-04-02 00:00:00"],
            "finished_at": ["2021-05-01 00:00:00"],
        },
    ):
        assert code_of(parse_period, query, SEOUL) == "INVALID_PERIOD"


def test_page_defaults_and_bounds() -> None:
    assert parse_page({}) == (1000, None)
    assert parse_page({"limit": ["1"]}) == (1, None)
    assert parse_page({"limit": ["1000"], "cursor": [format_cursor(-5, 9)]}) == (1000, (-5, 9))
    for query in ({"limit": ["0"]}, {"limit": ["1001"]}, {"limit": ["-1"]}, {"limit": ["x"]},
                  {"limit": ["1", "2"]}, {"cursor": ["abc"]}, {"cursor": ["1_"]}, {"cursor": ["1_2_3"]}):  # fmt: skip
        assert code_of(parse_page, query) == "INVALID_PAGE"


@pytest.mark.parametrize(
    "values",
    [[], [b""], [b"application/json"], [b"application/json; charset=utf-8"],
     [b"Application/JSON;charset=UTF-8"], [b"application/problem+json"],
     [b"application/vnd.investment+json; version=1"], [b" application/json "]],
)  # fmt: skip
def test_json_content_types_are_accepted(values: list[bytes]) -> None:
    check_json_content_type(values)


@pytest.mark.parametrize(
    "values",
    [[b"text/plain"], [b"application/x-www-form-urlencoded"], [b"multipart/form-data; boundary=x"],
     [b"application/xml"], [b"text/json"], [b"application/jsonx"], [b"json"],
     [b"application/json", b"text/plain"], [b"application/json+xml"]],
)  # fmt: skip
def test_other_content_types_are_415(values: list[bytes]) -> None:
    with pytest.raises(Problem) as refused:
        check_json_content_type(values)
    assert refused.value.code == "UNSUPPORTED_MEDIA_TYPE"
    assert refused.value.status == 415


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/api/investment/user/goods/12", 12),
        ("/v1/api/investment/user/goods/12/", 12),
        ("/v1/api/investment/user/goods/007", 7),
        (f"/v1/api/investment/user/goods/{2**63 - 1}", 2**63 - 1),
    ],
)
def test_investment_id_is_the_paths_last_segment(path: str, expected: int) -> None:
    assert parse_investment_id(path) == expected


@pytest.mark.parametrize(
    "raw", ["", "0", "-1", "+1", "1.0", "1e3", "x", str(2**63), "9" * 5000, "１", " 1"]
)
def test_investment_id_invalid(raw: str) -> None:
    with pytest.raises(Problem) as refused:
        parse_investment_id(f"/v1/api/investment/user/goods/{raw}")
    assert refused.value.code == "INVALID_INVESTMENT_ID"
