"""The HTTP handlers: parse and validate, one gateway call, orjson bytes. Nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
from blacksheep import Content, Request, Response

from service.batcher import InvestBatcher, PageBatcher
from service.cache import StaleBoundCache
from service.db import Database, DatabaseUnavailable
from service.goods import goods_json
from service.parsing import (
    check_json_content_type,
    format_cursor,
    parse_idempotency_key,
    parse_invest_body,
    parse_page,
    parse_period,
    parse_user_id,
)
from service.problems import Problem
from service.readiness import Readiness
from service.settings import Settings

if TYPE_CHECKING:
    from service.metrics import Metrics
    from service.worker import Worker

JSON = b"application/json"
CONTENT_TYPE = b"content-type"
USER_HEADER = b"x-user-id"
IDEMPOTENCY_HEADER = b"idempotency-key"
REPLAYED_HEADER = b"Idempotent-Replayed"
BASE = "/v1/api/investment"
# The parsed-window memo holds at most WINDOWS_REMEMBERED raw queries of at most
# WINDOW_QUERY_BYTES each (a canonical window query is about 70): under 1 MiB per worker.
WINDOWS_REMEMBERED = 1024
WINDOW_QUERY_BYTES = 160
_WINDOW_NAMES = (b"started_at=", b"finished_at=")


def json_response(body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    return Response(200, headers, Content(JSON, body))


async def read_body(request: Request, limit: int) -> bytes:
    """The JSON request body: refused with 415 when it declares another media type, and with
    413 as soon as it is known to exceed `limit` bytes."""
    check_json_content_type(request.get_headers(CONTENT_TYPE))
    declared = request.get_first_header(b"content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > limit:
            raise Problem("PAYLOAD_TOO_LARGE", f"the body must not exceed {limit} bytes")
        return await request.read() or b""  # known and small: in one call (a profiled hot spot)
    body = bytearray()  # chunked: counted as it arrives
    chunks: AsyncIterator[bytes] = request.stream()  # type: ignore[assignment]
    async for chunk in chunks:
        if chunk:
            body += chunk
            if len(body) > limit:
                raise Problem("PAYLOAD_TOO_LARGE", f"the body must not exceed {limit} bytes")
    return bytes(body)


def _plain_window_query(raw: bytes) -> bool:
    """Only started_at and finished_at, once each, short: the queries worth remembering. Other
    parameters (junk) or long spellings would let each request add an entry of its own."""
    if len(raw) > WINDOW_QUERY_BYTES or raw.count(b"&") != 1:
        return False
    first, _, second = raw.partition(b"&")
    return (first.startswith(_WINDOW_NAMES[0]) and second.startswith(_WINDOW_NAMES[1])) or (
        first.startswith(_WINDOW_NAMES[1]) and second.startswith(_WINDOW_NAMES[0])
    )


class InvestmentApi:
    """The three APIs of docs/api.md and health; the worker's gateways once it has started."""

    db: Database
    reads: Database
    batcher: InvestBatcher
    pages: PageBatcher
    readiness: Readiness

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.zone = settings.zone
        self.metrics = metrics  # invest outcomes (service/metrics.py), when enabled
        # A flood of distinct windows (each a miss) takes at most LIST_LOADS_MAX connections;
        # the rest of the pool stays with invests and pages (Settings.list_loads()).
        loads, wait = settings.list_loads(), settings.db_acquire_timeout
        self.list_cache: StaleBoundCache[bytes | None] = StaleBoundCache(
            settings.list_cache_seconds,
            max_bytes=settings.list_cache_max_bytes,
            observer=metrics,
            max_loads=loads,
            load_wait=wait,
            busy=lambda: DatabaseUnavailable(
                f"no turn among the worker's {loads} list loads within {wait:g}s"
            ),
        )
        # Clients ask for the list with few distinct windows: the parsed window per raw query
        # string spares a cached answer all parsing (a profiled hot spot).
        self._windows: dict[bytes, tuple[datetime, datetime]] = {}

    def attach(self, worker: Worker) -> None:
        """The gateways the handlers call, kept as plain attributes (one lookup per request)."""
        self.db = worker.db
        self.reads = worker.reads
        self.batcher = worker.invests
        self.pages = worker.pages
        self.readiness = worker.readiness

    def window(self, request: Request) -> tuple[datetime, datetime]:
        raw: bytes = request._raw_query  # type: ignore[attr-defined]  # no URL object built
        window = self._windows.get(raw)
        if window is None:
            window = parse_period(request.query, self.zone)  # raises on a bad window
            if _plain_window_query(raw):  # anything else is parsed each time, never kept
                if len(self._windows) >= WINDOWS_REMEMBERED:
                    self._windows.clear()
                self._windows[raw] = window
        return window

    def user_id(self, request: Request) -> int:
        return parse_user_id(request.get_headers(USER_HEADER))

    async def list_goods(self, request: Request) -> Response:
        started_at, finished_at = self.window(request)

        async def load() -> bytes | None:
            rows = await self.standby_rows("list-goods", [started_at, finished_at])
            if rows is None:
                rows = await self.db.rows("list-goods", [started_at, finished_at])
            if not rows:
                return None
            return orjson.dumps([goods_json(row) for row in rows])

        body = await self.list_cache.get((started_at, finished_at), load)
        if body is None:
            raise Problem("GOODS_NOT_FOUND", "no product's recruitment period lies in the window")
        return json_response(body)

    async def standby_rows(self, name: str, params: list[Any]) -> list[tuple[Any, ...]] | None:
        """The rows from READ_DATABASE_URL's standby when its data is at most
        READ_MAX_LAG_SECONDS old (the list's staleness bound grows by that much); None when
        there is none, or it lags, or it fails: then the primary answers."""
        if self.reads is self.db:
            return None
        try:
            ((lag,),) = await self.reads.rows("replica-lag")
            if lag > self.settings.read_max_lag_seconds:
                return None
            return await self.reads.rows(name, params)
        except DatabaseUnavailable:
            return None

    async def invest(self, request: Request) -> Response:
        body = await read_body(request, self.settings.max_body_bytes)
        user_id = self.user_id(request)
        key = parse_idempotency_key(request.get_headers(IDEMPOTENCY_HEADER))
        goods_id, amount = parse_invest_body(body)
        row = await self.batcher.invest(goods_id, user_id, amount, key)
        outcome, invested, state = row.outcome, row.investment_amount, row.state
        if outcome == "in_use":
            raise Problem(
                "IDEMPOTENCY_KEY_IN_USE", "a request with this Idempotency-Key is still in progress"
            )
        if outcome == "mismatch":
            raise Problem(
                "IDEMPOTENCY_KEY_MISMATCH",
                "this Idempotency-Key was used with another product or amount",
            )
        if not row.found:
            raise Problem("GOODS_NOT_FOUND", f"there is no product with goods_id {goods_id}")
        if self.metrics is not None and outcome != "replay":
            self.metrics.invest_outcome(amount, invested or 0)
        result = {
            "user_id": user_id,
            "goods_id": goods_id,
            "total_investing_amount": row.total_investing_amount,
            "investment_amount": invested,
            "status": bool(invested) and state == "recruiting",
            "invest_date": row.invest_date,
            "requested_amount": amount,
            "current_investing_amount": row.current_investing_amount,
            "state": state,
            "investment_id": row.investment_id,
        }
        headers = [(REPLAYED_HEADER, b"true")] if outcome == "replay" else None
        return json_response(orjson.dumps(result), headers)

    async def my_investments(self, request: Request) -> Response:
        user_id = self.user_id(request)
        limit, cursor = parse_page(request.query)
        # The items come as JSON from the statement (sql/queries.sql `my-investments-many`).
        page = await self.pages.page(user_id, limit, cursor)
        if not page.found and cursor is None:
            raise Problem("INVESTMENTS_NOT_FOUND", f"user {user_id} has no investments")
        headers = None
        following = page.next_cursor(limit)
        if following is not None:
            token = quote(format_cursor(*following))
            link = f'<{BASE}/user/goods?limit={limit}&cursor={token}>; rel="next"'
            headers = [(b"Link", link.encode())]
        return json_response(b"[" + (page.items or "").encode() + b"]", headers)

    async def healthz(self, request: Request) -> Response:
        return json_response(b'{"status":"ok"}')

    async def readyz(self, request: Request) -> Response:
        await self.readiness.check()  # its own connection: never queued behind requests
        return json_response(b'{"status":"ready"}')
