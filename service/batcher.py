"""The coalesced database calls: invests across products in one invest_many() call, and many
users' my-investments pages in one statement (service/coalesce.py does the waiting)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

from service.coalesce import Coalescer
from service.db import Database, OutcomeUnknown
from service.settings import Settings

T = TypeVar("T")
R = TypeVar("R")


class Invest(NamedTuple):
    goods_id: int
    user_id: int
    amount: int
    key: str | None


class InvestRow(NamedTuple):
    """A row of sql/queries.sql `invest-batch`, without its ord column."""

    outcome: str  # done | replay | in_use | mismatch
    found: bool | None
    total_investing_amount: int | None
    investment_amount: int | None
    current_investing_amount: int | None
    state: str | None
    invest_date: str | None
    investment_id: int | None


class PageRequest(NamedTuple):
    user_id: int
    limit: int
    cursor: tuple[int, int] | None  # (microseconds since the epoch, ledger id) of the row before


class Page(NamedTuple):
    """A row of sql/queries.sql `my-investments-many`, without its ord column."""

    items: str | None  # the page's JSON objects, joined by commas; None when there is none
    found: int  # rows read: up to the page size plus one (then a next page exists)
    last_micros: int | None  # the cursor of the page's last item, when the page is full
    last_id: int | None

    def next_cursor(self, limit: int) -> tuple[int, int] | None:
        if self.found <= limit or self.last_micros is None or self.last_id is None:
            return None
        return self.last_micros, self.last_id


# The answer for a key whose first request is still unanswered in this worker.
IN_USE = InvestRow("in_use", None, None, None, None, None, None, None)


def _lost() -> Exception:
    return OutcomeUnknown("the invest call was sent and its answer was lost")


def _coalescer(
    call: Callable[[list[T]], Awaitable[list[R]]],
    settings: Settings,
    max_batch: int,
    calls_in_flight: int,
    **options: Any,
) -> Coalescer[T, R]:
    """Invests and pages wait the same way: at most INVEST_QUEUE_MAX of each per worker, each
    for at most DB_ACQUIRE_TIMEOUT before it is sent."""
    return Coalescer(
        call,
        max_batch=max_batch,
        max_waiting=settings.invest_queue_max,
        max_wait=settings.db_acquire_timeout,
        calls_in_flight=calls_in_flight,
        **options,
    )


class InvestBatcher:
    """One invest_many() call at a time per worker (INVEST_CALLS_IN_FLIGHT), for any products:
    invests that arrive meanwhile go together in the next call, in arrival order."""

    def __init__(
        self, db: Database, settings: Settings, on_batch: Callable[[int], None] | None = None
    ) -> None:
        self._db = db
        self._coalescer: Coalescer[Invest, InvestRow] = _coalescer(
            self._call,
            settings,
            settings.invest_batch_max,
            settings.invest_calls_in_flight,
            lost=_lost,
            on_batch=on_batch,
        )
        self._keys_in_flight: set[tuple[int, str]] = set()

    async def invest(
        self, goods_id: int, user_id: int, amount: int, key: str | None = None
    ) -> InvestRow:
        if key is None:
            return await self._coalescer.run(Invest(goods_id, user_id, amount, None))
        # A retry that arrives while its first request is unanswered here is answered at once;
        # across workers and instances the database's advisory lock decides the same.
        held = (user_id, key)
        if held in self._keys_in_flight:
            return IN_USE
        future = self._coalescer.submit(Invest(goods_id, user_id, amount, key))
        self._keys_in_flight.add(held)
        future.add_done_callback(lambda _: self._keys_in_flight.discard(held))
        return await future

    async def _call(self, batch: list[Invest]) -> list[InvestRow]:
        keys = [item.key for item in batch]
        rows = await self._db.rows(
            "invest-batch",
            [
                [item.goods_id for item in batch],
                [item.user_id for item in batch],
                [item.amount for item in batch],
                keys if any(keys) else None,
            ],
            writes=True,
        )
        return [InvestRow._make(row[1:]) for row in rows]

    @property
    def keys_in_flight(self) -> int:
        return len(self._keys_in_flight)

    async def drain(self) -> None:
        await self._coalescer.drain()


class PageBatcher:
    """My-investments pages of many users in one statement, split per user here."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._coalescer: Coalescer[PageRequest, Page] = _coalescer(
            self._call, settings, settings.read_batch_max, settings.read_calls_in_flight
        )

    async def page(self, user_id: int, limit: int, cursor: tuple[int, int] | None) -> Page:
        return await self._coalescer.run(PageRequest(user_id, limit, cursor))

    async def _call(self, batch: list[PageRequest]) -> list[Page]:
        params: list[Any] = [
            [request.user_id for request in batch],
            [request.limit for request in batch],
            [None if request.cursor is None else request.cursor[0] for request in batch],
            [None if request.cursor is None else request.cursor[1] for request in batch],
        ]
        return [Page._make(row[1:]) for row in await self._db.rows("my-investments-many", params)]

    async def drain(self) -> None:
        await self._coalescer.drain()
