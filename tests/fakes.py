"""The unit tests' fakes for the database (both implement service/db.py `Queries`; `just check`
type-checks them against it), and the real application run in process on the in-memory one.

`serving(database)` builds the service with service/app.py's `configure_application`, passing
the fake where PostgreSQL's pools go, and drives it through BlackSheep's test client: a simulator
hands each request to the ASGI entry (service/entry.py) as granian would, so the raw routes, the
BlackSheep routes, the wrappers and the exception table are the ones that serve production.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from blacksheep import Content, Response
from blacksheep.testing import TestClient
from blacksheep.testing.helpers import CookiesType, HeadersType, QueryType, get_example_scope
from blacksheep.testing.simulator import AbstractTestSimulator
from blacksheep.testing.websocket import TestWebSocket

from service.app import configure_application
from service.db import Databases, Queries, StatementRefused
from service.entry import Entry
from service.settings import Settings

Row = tuple[Any, ...]
TIME = "%Y-%m-%d %H:%M:%S"


@dataclass
class Product:
    """A product as the in-memory database keeps it; `row()` is what `list-goods` answers."""

    goods_id: int
    title: str
    total_investing_amount: int
    started_at: str  # YYYY-MM-DD HH:MM:SS in the display zone, as the API shows it
    finished_at: str
    status: bool = True
    current_investing_amount: int = 0
    investors: set[int] = field(default_factory=set)

    @property
    def state(self) -> str:
        if not self.status:
            return "closed"
        if self.current_investing_amount >= self.total_investing_amount:
            return "sold_out"
        return "recruiting"

    def row(self) -> Row:
        """The goods_item() row (service/goods.py `Goods`)."""
        return (self.goods_id, self.title, self.total_investing_amount,
                self.current_investing_amount, len(self.investors), self.status, self.state,
                self.started_at, self.finished_at)  # fmt: skip


@dataclass
class Investment:
    """A ledger row."""

    investment_id: int
    user_id: int
    goods_id: int
    amount: int
    invest_date: str


class MemoryDatabase:
    """The statements the worker sends, answered from products and a ledger in memory, with
    invest_many()'s rules in their simplest form: min(amount, remaining) while recruiting,
    0 otherwise, GOODS_NOT_FOUND for an unknown product, a replay for a repeated key. Every
    statement fails with `fail` when it is set (e.g. DatabaseUnavailable)."""

    def __init__(self, zone: ZoneInfo | None = None) -> None:
        self.zone = zone or Settings().zone  # the times' zone: the service's display zone
        self.products: dict[int, Product] = {}
        self.ledger: list[Investment] = []
        self.keys: dict[tuple[int, str], tuple[int, int, Row]] = {}  # (user, key) → answer
        self.sent: list[str] = []  # the name of every statement, in order
        self.fail: Exception | None = None
        self.closed = 0
        self.now = "2026-11-25 09:00:00"  # every investment's invest_date

    def add(self, product: Product) -> Product:
        self.products[product.goods_id] = product
        return product

    def databases(self) -> Databases:
        """This database in every role a worker gives one (service/db.py `Databases`)."""
        status = SimpleNamespace(max_size=1, size=1, available=1, waiting=0)
        return Databases(self, self, self, lambda: status)

    async def rows(
        self, name: str, params: list[Any] | None = None, *, writes: bool = False
    ) -> list[Row]:
        self.sent.append(name)
        if self.fail is not None:
            raise self.fail
        args = params or []
        if name == "list-goods":
            started_at, finished_at = (bound.astimezone(self.zone).strftime(TIME) for bound in args)
            return [
                product.row()
                for _, product in sorted(self.products.items())
                if product.started_at >= started_at and product.finished_at <= finished_at
            ]
        if name in ("invest-batch", "invest-wait"):
            goods, users, amounts, keys = args[:4]
            keys = keys or [None] * len(goods)
            return [
                (n + 1, *self._invest(*request))
                for n, request in enumerate(zip(goods, users, amounts, keys, strict=True))
            ]
        if name == "my-investments-many":  # one row for the call, as the statement answers
            found, micros, ids, bodies = zip(
                *(self._page(*request) for request in zip(*args, strict=True)), strict=True
            )
            return [(list(found), [m or 0 for m in micros], [i or 0 for i in ids],
                     [len(body) for body in bodies], b"".join(bodies))]  # fmt: skip
        answers: dict[str, list[Row]] = {
            "ready": [(1,)],
            "lock-table-settings": [(64, 100, 0)],
            "forget-idempotency-keys": [(0,)],
            "outbox-abandon": [(0,)],
        }
        if name not in answers:
            raise StatementRefused(f"the fake database does not know statement {name}")
        return answers[name]

    def close(self) -> None:
        self.closed += 1

    def _invest(self, goods_id: int, user_id: int, amount: int, key: str | None) -> Row:
        if key is not None and (user_id, key) in self.keys:
            first_goods, first_amount, answer = self.keys[(user_id, key)]
            if (first_goods, first_amount) != (goods_id, amount):
                return ("mismatch", *[None] * 7)
            return ("replay", *answer[1:])
        product = self.products.get(goods_id)
        if product is None:
            return ("done", False, *[None] * 6)
        invested = 0
        investment_id = None
        if product.state == "recruiting":
            invested = min(
                amount, product.total_investing_amount - product.current_investing_amount
            )
            product.current_investing_amount += invested
            product.investors.add(user_id)
            investment_id = len(self.ledger) + 1
            self.ledger.append(Investment(investment_id, user_id, goods_id, invested, self.now))
        answer = ("done", True, product.total_investing_amount, invested,
                  product.current_investing_amount, product.state, self.now, investment_id)  # fmt: skip
        if key is not None:
            self.keys[(user_id, key)] = (goods_id, amount, answer)
        return answer

    def _page(
        self, user_id: int, limit: int, after_micros: int | None, after_id: int | None
    ) -> Row:
        """One request's page (found, cursor, body); the cursor is (the investment's id, its
        id)."""
        mine = [
            item
            for item in self.ledger
            if item.user_id == user_id and item.investment_id > (after_id or 0)
        ][: limit + 1]
        items = [
            {
                "goods_id": item.goods_id,
                "title": self.products[item.goods_id].title,
                "total_investing_amount": self.products[item.goods_id].total_investing_amount,
                "user_investing_amount": item.amount,
                "invest_date": item.invest_date,
                "investment_id": item.investment_id,
            }
            for item in mine[:limit]
        ]
        last = mine[limit - 1].investment_id if len(mine) >= limit else None
        return (len(mine), last, last, orjson.dumps(items))


class InvestCallDatabase:
    """Answers invest-batch like invest_many() would (everything granted), one call at a time
    under the test's control: each call waits for `release` when `hold` is set. Products in
    `held` are passed over by invest-batch ('skipped') and waited for by invest-wait until
    `unheld` is set; a call carrying the amount `refuse` is refused (an ERROR)."""

    def __init__(self) -> None:
        self.calls: list[int] = []  # the batch size of every call
        self.sent: list[tuple[str, list[int]]] = []  # (statement, amounts) of every call
        self.hold = False
        self.release = asyncio.Event()
        self.fail: BaseException | None = None
        self.rows_short = False
        self.held: set[int] = set()
        self.unheld = asyncio.Event()
        self.refuse: int | None = None

    async def rows(
        self, name: str, params: list[Any] | None = None, *, writes: bool = False
    ) -> list[Row]:
        assert name in ("invest-batch", "invest-wait") and writes and params is not None
        goods, _users, amounts, _keys = params[:4]
        self.calls.append(len(goods))
        self.sent.append((name, list(amounts)))
        if self.hold:
            await self.release.wait()
        if self.fail is not None:
            raise self.fail
        if self.refuse in amounts:
            raise StatementRefused("statement invest-batch was refused")
        if name == "invest-wait":
            await self.unheld.wait()
        rows: list[Row] = [
            (n + 1, "done", True, 10**9, amount, amount, "recruiting", "2026-11-25 00:00:00", n)
            if name == "invest-wait" or goods_id not in self.held
            else (n + 1, "skipped", *[None] * 7)
            for n, (goods_id, amount) in enumerate(zip(goods, amounts, strict=True))
        ]
        return rows[:-1] if self.rows_short else rows

    def close(self) -> None:
        pass


# The fakes stand where service/db.py's Database stands: mypy (`just check`) checks that here.
FAKES: tuple[Callable[[], Queries], ...] = (MemoryDatabase, InvestCallDatabase)


class EntrySimulator(AbstractTestSimulator):
    """BlackSheep's test client, through the service's ASGI entry instead of Application.handle
    (which would pass over the raw routes): header names in lower case, the body in one
    message, as granian hands them over."""

    def __init__(self, entry: Entry) -> None:
        self.entry = entry

    async def send_request(
        self,
        method: str,
        path: str,
        headers: HeadersType = None,
        query: QueryType = None,
        content: Content | None = None,
        cookies: CookiesType = None,
    ) -> Response:
        scope = get_example_scope(method, path, headers, query=query, cookies=cookies)
        scope["headers"] = [(name.lower(), value) for name, value in scope["headers"]]
        body = b""
        if content is not None:
            body = content.body
            scope["headers"] += [(b"content-type", content.type),
                                 (b"content-length", str(len(body)).encode())]  # fmt: skip
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.entry(scope, receive, send)
        start, *parts = sent
        answer = b"".join(part.get("body", b"") for part in parts)
        headers_out = [(name, value) for name, value in start["headers"]
                       if name.lower() != b"content-type"]  # fmt: skip
        media = next((value for name, value in start["headers"]
                      if name.lower() == b"content-type"), b"application/octet-stream")  # fmt: skip
        response = Response(start["status"], headers_out, Content(media, answer))
        return response

    async def websocket_connect(self, *args: Any, **kwargs: Any) -> TestWebSocket:
        raise NotImplementedError("the service has no WebSocket route")


@asynccontextmanager
async def serving(database: MemoryDatabase, **settings: Any) -> AsyncIterator[TestClient]:
    """The real application, started with `database` in every role (and metrics off unless
    `metrics_enabled=True`), and a test client for it; stopped on the way out."""
    options: dict[str, Any] = {"metrics_enabled": False, **settings}
    entry = configure_application(Settings(**options), lambda _: database.databases())
    await entry.app.start()  # type: ignore[no-untyped-call]
    try:
        yield TestClient(entry.app, EntrySimulator(entry))
    finally:
        await entry.app.stop()  # type: ignore[no-untyped-call]
