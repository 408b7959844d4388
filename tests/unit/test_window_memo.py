"""The parsed-window memo of the list handler: plain window queries only, so junk cannot grow it."""

from __future__ import annotations

from datetime import datetime

import pytest
from blacksheep import Request

from service.handlers import WINDOWS_REMEMBERED, InvestmentApi
from service.problems import Problem
from service.settings import load_settings

PLAIN = b"started_at=2021-04-01%2000:00:00&finished_at=2021-05-01%2000:00:00"


def request(query: bytes) -> Request:
    return Request("GET", b"/v1/api/investment/goods?" + query, None)


def test_plain_window_queries_are_remembered() -> None:
    api = InvestmentApi(load_settings({}))
    window = api.window(request(PLAIN))
    assert window == (
        datetime(2021, 4, 1, tzinfo=api.zone),
        datetime(2021, 5, 1, tzinfo=api.zone),
    )
    assert api._windows == {PLAIN: window}
    reversed_order = b"finished_at=2021-05-01%2000:00:00&started_at=2021-04-01%2000:00:00"
    assert api.window(request(reversed_order)) == window
    assert len(api._windows) == 2


@pytest.mark.parametrize(
    "query",
    [PLAIN + b"&junk=1", b"junk=1&" + PLAIN, PLAIN + b"&started_at=2021-04-01%2000:00:00",
     b"started_at=" + b"%20" * 60 + b"2021-04-01%2000:00:00&finished_at=2021-05-01%2000:00:00"],
)  # fmt: skip
def test_other_queries_are_parsed_and_not_kept(query: bytes) -> None:
    api = InvestmentApi(load_settings({}))
    try:
        api.window(request(query))
    except Problem as refused:  # a repeated parameter: refused as before
        assert refused.code == "INVALID_PERIOD"
    assert api._windows == {}


def test_junk_parameters_cannot_grow_the_memo() -> None:
    api = InvestmentApi(load_settings({}))
    for n in range(5_000):
        api.window(request(PLAIN + b"&junk=" + str(n).encode() * 50))
    assert api._windows == {}
    for second in range(WINDOWS_REMEMBERED + 10):
        minute, rest = divmod(second, 60)
        query = f"started_at=2021-04-01 00:00:{rest:02}&finished_at=2030-01-01 00:{minute:02}:00"
        api.window(request(query.replace(" ", "%20").encode()))
    assert len(api._windows) <= WINDOWS_REMEMBERED
