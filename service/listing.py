"""The product list use case: the products whose recruitment period lies in a window, as JSON bytes
from a per-worker cache (≤ LIST_CACHE_SECONDS stale), and the memo of parsed window queries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from service.cache import StaleBoundCache
from service.db import DatabaseUnavailable, Queries
from service.goods import goods_json
from service.metrics import Metrics
from service.parsing import parse_period, parse_query
from service.problems import Problem
from service.settings import Settings

# The parsed-window memo holds at most WINDOWS_REMEMBERED raw queries of at most
# WINDOW_QUERY_BYTES each (a canonical window query is about 70): under 1 MiB per worker.
WINDOWS_REMEMBERED = 1024
WINDOW_QUERY_BYTES = 160
_WINDOW_NAMES = (b"started_at=", b"finished_at=")

Window = tuple[datetime, datetime]


def _plain_window_query(raw: bytes) -> bool:
    """Only started_at and finished_at, once each, short: the queries worth remembering. Other
    parameters (junk) or long spellings would let each request add an entry of its own."""
    if len(raw) > WINDOW_QUERY_BYTES or raw.count(b"&") != 1:
        return False
    first, _, second = raw.partition(b"&")
    return (first.startswith(_WINDOW_NAMES[0]) and second.startswith(_WINDOW_NAMES[1])) or (
        first.startswith(_WINDOW_NAMES[1]) and second.startswith(_WINDOW_NAMES[0])
    )


class Windows:
    """Clients ask for the list with few distinct windows: the parsed window per raw query string
    spares a cached answer all parsing (a profiled hot spot)."""

    def __init__(self, settings: Settings) -> None:
        self.zone = settings.zone
        self._windows: dict[bytes, Window] = {}

    def parse(self, raw: bytes) -> Window:
        window = self._windows.get(raw)
        if window is None:
            window = parse_period(parse_query(raw), self.zone)  # raises on a bad window
            if _plain_window_query(raw):  # anything else is parsed each time, never kept
                if len(self._windows) >= WINDOWS_REMEMBERED:
                    self._windows.clear()
                self._windows[raw] = window
        return window


class GoodsListing:
    """The list of products in a window, serialized once per LIST_CACHE_SECONDS per worker."""

    def __init__(
        self,
        db: Queries,
        settings: Settings,
        metrics: Metrics,
        reads: Queries | None = None,
    ) -> None:
        self._db = db
        # READ_DATABASE_URL: a standby read while its data is at most READ_MAX_LAG_SECONDS old.
        self._reads = reads if reads is not None and reads is not db else None
        self._max_lag = settings.read_max_lag_seconds
        # A flood of distinct windows (each a miss) takes at most LIST_LOADS_MAX connections;
        # the rest of the pool stays with invests and pages (Settings.list_loads()).
        loads, wait = settings.list_loads(), settings.db_acquire_timeout
        self.cache: StaleBoundCache[bytes | None] = StaleBoundCache(
            settings.list_cache_seconds,
            max_bytes=settings.list_cache_max_bytes,
            observer=metrics,
            max_loads=loads,
            load_wait=wait,
            busy=lambda: DatabaseUnavailable(
                f"no turn among the worker's {loads} list loads within {wait:g}s"
            ),
        )

    async def goods(self, window: Window) -> bytes:
        """The JSON array of the window's products; Problem GOODS_NOT_FOUND when there is none."""
        started_at, finished_at = window

        async def load() -> bytes | None:
            rows = await self._standby_rows(started_at, finished_at)
            if not rows:
                rows = await self._db.rows("list-goods", [started_at, finished_at])
            if not rows:
                return None
            return orjson.dumps([goods_json(row) for row in rows])

        body = await self.cache.get(window, load)
        if body is None:
            raise Problem("GOODS_NOT_FOUND", "no product's recruitment period lies in the window")
        return body

    async def _standby_rows(
        self, started_at: datetime, finished_at: datetime
    ) -> list[tuple[Any, ...]]:
        """The rows from READ_DATABASE_URL's standby while its data is at most
        READ_MAX_LAG_SECONDS old (the list's staleness bound grows by that much), checked by the
        same statement on the same server; none when there is no standby, or it lags, or it
        fails, or the window is empty there: then the primary answers."""
        if self._reads is None:
            return []
        try:
            return await self._reads.rows(
                "list-goods-standby", [started_at, finished_at, self._max_lag]
            )
        except DatabaseUnavailable:
            return []
