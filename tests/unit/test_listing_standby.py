"""The product list on READ_DATABASE_URL's standby: one statement that answers only within the
lag bound (so the bound and the rows come from the same server); the primary answers whenever the
standby gives nothing (it lags, fails, or holds none of the window)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import uvloop

from service.db import DatabaseUnavailable
from service.listing import GoodsListing
from service.metrics import NullMetrics
from service.settings import Settings

ROW = (1, "상품", 1000, 0, 0, True, "recruiting", "2026-01-01 00:00:00", "2026-12-31 00:00:00")
WINDOW = (datetime(2020, 1, 1), datetime(2030, 1, 1))


class Answers:
    """A database that answers each statement from a table (or raises), recording the calls."""

    def __init__(self, answer: list[tuple[Any, ...]] | Exception) -> None:
        self.answer = answer
        self.calls: list[tuple[str, list[Any] | None]] = []

    async def rows(
        self, name: str, params: list[Any] | None = None, *, writes: bool = False
    ) -> list[tuple[Any, ...]]:
        self.calls.append((name, params))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def close(self) -> None:
        pass


def listed(standby: Answers, primary: Answers) -> list[int]:
    async def go() -> bytes:
        settings = Settings(read_max_lag_seconds=1.5, list_cache_seconds=0)
        return await GoodsListing(primary, settings, NullMetrics(), standby).goods(WINDOW)

    return [item["goods_id"] for item in orjson.loads(uvloop.run(go()))]


def test_the_standby_answers_within_its_bound_in_one_statement() -> None:
    standby, primary = Answers([ROW]), Answers([])
    assert listed(standby, primary) == [1]
    assert standby.calls == [("list-goods-standby", [*WINDOW, 1.5])]  # the bound goes with it
    assert primary.calls == []


def test_the_primary_answers_when_the_standby_gives_nothing_or_fails() -> None:
    for standby in (Answers([]), Answers(DatabaseUnavailable("down"))):
        primary = Answers([ROW])
        assert listed(standby, primary) == [1]
        assert primary.calls == [("list-goods", [*WINDOW])]
