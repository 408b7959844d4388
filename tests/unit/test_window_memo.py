"""The parsed-window memo of the list use case: plain window queries only, so junk cannot grow it."""

from __future__ import annotations

from datetime import datetime

import pytest

from service.listing import WINDOWS_REMEMBERED, Windows
from service.problems import Problem
from service.settings import load_settings

PLAIN = b"started_at=2021-04-01%2000:00:00&finished_at=2021-05-01%2000:00:00"


def test_plain_window_queries_are_remembered() -> None:
    windows = Windows(load_settings({}))
    window = windows.parse(PLAIN)
    assert window == (
        datetime(2021, 4, 1, tzinfo=windows.zone),
        datetime(2021, 5, 1, tzinfo=windows.zone),
    )
    assert windows._windows == {PLAIN: window}
    reversed_order = b"finished_at=2021-05-01%2000:00:00&started_at=2021-04-01%2000:00:00"
    assert windows.parse(reversed_order) == window
    assert len(windows._windows) == 2


@pytest.mark.parametrize(
    "query",
    [PLAIN + b"&junk=1", b"junk=1&" + PLAIN, PLAIN + b"&started_at=2021-04-01%2000:00:00",
     b"started_at=" + b"%20" * 60 + b"2021-04-01%2000:00:00&finished_at=2021-05-01%2000:00:00"],
)  # fmt: skip
def test_other_queries_are_parsed_and_not_kept(query: bytes) -> None:
    windows = Windows(load_settings({}))
    try:
        windows.parse(query)
    except Problem as refused:  # a repeated parameter: refused as before
        assert refused.code == "INVALID_PERIOD"
    assert windows._windows == {}


def test_junk_parameters_cannot_grow_the_memo() -> None:
    windows = Windows(load_settings({}))
    for n in range(5_000):
        windows.parse(PLAIN + b"&junk=" + str(n).encode() * 50)
    assert windows._windows == {}
    for second in range(WINDOWS_REMEMBERED + 10):
        minute, rest = divmod(second, 60)
        query = f"started_at=2021-04-01 00:00:{rest:02}&finished_at=2030-01-01 00:{minute:02}:00"
        windows.parse(query.replace(" ", "%20").encode())
    assert len(windows._windows) <= WINDOWS_REMEMBERED
