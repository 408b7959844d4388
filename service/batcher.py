"""The coalesced database calls: invests across products in one invest_many() call, and many
users' my-investments pages in one statement (service/coalesce.py does the waiting).

A product whose row is held elsewhere (an operator's transaction, another instance's call) must
not stall everybody's invests: the shared call passes it over (SKIP LOCKED) and its requests, in
arrival order, go to a call of their own that waits for that row, on its own connection, until
their deadline. While such requests are unanswered, later requests for that product follow them
there, so each product's requests are still served first come, first served. As soon as one of
those calls finds the row free (it was another call's lock, held for milliseconds), the product
rejoins the shared call: its requests still waiting go back ahead of every later one, in order,
so only a product held for long (an operator's transaction) stays on the slow path."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, NamedTuple, TypeVar

from service.coalesce import Coalescer, Observer, Overloaded
from service.db import (
    DEFAULT_MAX_LOCKS_PER_TRANSACTION,
    DatabaseUnavailable,
    LockNotAvailable,
    OutcomeUnknown,
    Queries,
    key_lock_budget,
)
from service.settings import Settings

T = TypeVar("T")
R = TypeVar("R")


class Invest(NamedTuple):
    goods_id: int
    user_id: int
    amount: int
    key: str | None
    deadline: float = 0.0  # loop time by which it is sent, or answered 503


class InvestRow(NamedTuple):
    """A row of sql/queries.sql `invest-batch`, without its ord column."""

    outcome: str  # done | replay | in_use | mismatch | skipped | limit | invalid_amount
    found: bool | None
    total_investing_amount: int | None
    investment_amount: int | None
    current_investing_amount: int | None
    state: str | None
    invest_date: str | None
    investment_id: int | None
    # 'limit' (or a replay of one): the binding cap and the room left; 'invalid_amount': the
    # product's rule (min_amount, amount_unit) and its value.
    refused: str | None = None
    refused_value: int | None = None


class PageRequest(NamedTuple):
    user_id: int
    limit: int
    cursor: tuple[int, int] | None  # (microseconds since the epoch, ledger id) of the row before


class Page(NamedTuple):
    """One request's page, of sql/queries.sql `my-investments-many`."""

    found: int  # rows read: up to the page size plus one (then a next page exists)
    last_micros: int | None  # the cursor of the page's last item, when the page is full
    last_id: int | None
    body: bytes  # the response body: the page's items as a JSON array, UTF-8

    def next_cursor(self, limit: int) -> tuple[int, int] | None:
        if self.found <= limit or self.last_micros is None or self.last_id is None:
            return None
        return self.last_micros, self.last_id


def pages(
    found: list[int],
    last_micros: list[int],
    last_id: list[int],
    lengths: list[int],
    bodies: bytes,
) -> list[Page]:
    """The pages of sql/queries.sql `my-investments-many`'s one row: a figure per page in each
    list (a cursor of 0, 0 when the page is not full) and the bodies one after the other."""
    answer = []
    end = 0
    for page_found, micros, investment_id, length in zip(
        found, last_micros, last_id, lengths, strict=True
    ):
        start, end = end, end + length
        cursor = investment_id != 0
        answer.append(Page(page_found, micros if cursor else None,
                           investment_id if cursor else None, bodies[start:end]))  # fmt: skip
    if end != len(bodies):
        raise ValueError(f"page bodies of {end} bytes in all, {len(bodies)} received")
    return answer


# The answer for a key whose first request is still unanswered in this worker.
IN_USE = InvestRow("in_use", None, None, None, None, None, None, None)


def _lost() -> Exception:
    return OutcomeUnknown("the invest call was sent and its answer was lost")


def _coalescer(
    call: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
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


def _keyed(item: Invest) -> int:
    return item.key is not None


def _params(batch: list[Invest]) -> list[Any]:
    keys = [item.key for item in batch]
    return [
        [item.goods_id for item in batch],
        [item.user_id for item in batch],
        [item.amount for item in batch],
        keys if any(keys) else None,
    ]


class _HeldProduct:
    """The requests for one product that the shared call passed over, and its own calls."""

    __slots__ = ("coalescer", "free", "held_until", "unanswered")

    def __init__(self, coalescer: Callable[[_HeldProduct], Coalescer[Invest, InvestRow]]) -> None:
        self.coalescer = coalescer(self)  # its calls are this product's
        self.unanswered = 0
        # Loop time until which the product counts as held although nobody waits for it: its
        # last call found the row still locked. Until then its requests come here directly
        # instead of making a shared call wait for the row first.
        self.held_until = 0.0
        # Its last call found the row free: the product rejoins the shared call at the end of
        # the next one (InvestBatcher._rejoin), and until then its own calls pause.
        self.free = False


class InvestBatcher:
    """One invest_many() call at a time per worker (INVEST_CALLS_IN_FLIGHT), for any products:
    invests that arrive meanwhile go together in the next call, in arrival order. Requests for a
    product held elsewhere wait in a call of that product's own (at most INVEST_WAIT_CALLS such
    calls per worker hold a connection at once). A call carries at most `key_locks` keyed
    requests (their advisory locks fill PostgreSQL's lock table: service/db.py).

    A held product whose own call found its row free rejoins the shared call: at the end of a
    shared call (the only one in flight, so no other call carries its requests), the requests
    still waiting in its own queue, then that call's requests for it, go back to the front of
    the shared queue in arrival order, ahead of its later requests."""

    def __init__(
        self,
        db: Queries,
        settings: Settings,
        on_batch: Callable[[int], None] | None = None,
        key_locks: int | None = None,
        waits: Observer | None = None,
        held_waits: Observer | None = None,
    ) -> None:
        self._db = db
        self._held_waits = held_waits
        self._settings = settings
        self._key_locks = key_locks or key_lock_budget(DEFAULT_MAX_LOCKS_PER_TRANSACTION)
        self._shared: Coalescer[Invest, InvestRow | asyncio.Future[InvestRow]] = _coalescer(
            self._call,
            settings,
            settings.invest_batch_max,
            settings.invest_calls_in_flight,
            lost=_lost,
            on_batch=on_batch,
            cost=_keyed,
            max_cost=self._key_locks,
            waits=waits,
            spacing=settings.invest_call_spacing_seconds,
            spacing_full=settings.invest_call_spacing_full,
            spacing_arrivals=settings.invest_call_spacing_arrivals,
        )
        self._held: dict[int, _HeldProduct] = {}
        self._shared_calls = 0  # shared calls in flight (`_call`), their answers not yet given
        self.rejoined = 0  # products that left the slow path when their row was found free
        self._wait_slots = asyncio.Semaphore(settings.invest_wait_calls)
        self._keys_in_flight: set[tuple[int, str]] = set()
        self._loop = asyncio.get_running_loop()
        self._max_wait = settings.db_acquire_timeout

    async def invest(
        self, goods_id: int, user_id: int, amount: int, key: str | None = None
    ) -> InvestRow:
        # INVEST_QUEUE_MAX bounds every invest waiting in this worker (not yet in a call), held
        # products' included.
        waiting = self._shared.waiting
        if self._held:
            waiting += sum(product.coalescer.waiting for product in self._held.values())
        if waiting >= self._settings.invest_queue_max:
            raise Overloaded(f"{self._settings.invest_queue_max} invests already wait")
        deadline = self._loop.time() + self._max_wait
        item = Invest(goods_id, user_id, amount, key, deadline)
        if key is None:
            answer = await self._shared.submit(item, deadline)
        else:
            # A retry that arrives while its first request is unanswered here is answered at
            # once; across workers and instances the database's advisory lock decides the same.
            held = (user_id, key)
            if held in self._keys_in_flight:
                return IN_USE
            future = self._shared.submit(item, deadline)
            self._keys_in_flight.add(held)
            future.add_done_callback(partial(self._key_answered, held))
            answer = await future
        # Handed to its product's own call, or back to the shared one when the product
        # rejoined it (then possibly on again). Shielded: a client that leaves does not take its
        # request out of that call (SPEC: a disconnect does not cancel an invest).
        while not isinstance(answer, InvestRow):
            answer = await asyncio.shield(answer)
        return answer

    def _key_answered(self, held: tuple[int, str], future: asyncio.Future[Any]) -> None:
        answer = None if future.cancelled() or future.exception() else future.result()
        if isinstance(answer, asyncio.Future):  # handed on: answered when that one is
            answer.add_done_callback(partial(self._key_answered, held))
        else:
            self._keys_in_flight.discard(held)

    async def _call(self, batch: list[Invest]) -> list[InvestRow | asyncio.Future[Any]]:
        """One invest_many() call for the batch, but for the products already held: those
        requests, and the ones the call passed over, go behind the earlier requests for their
        product, in arrival order (back in the shared queue when the product rejoins it). Only
        once the call has answered: when it fails (or is split and retried) nothing was done and
        nothing was handed over, so each request is answered once and performed at most once."""
        self._shared_calls += 1
        try:
            sent = [n for n, item in enumerate(batch) if item.goods_id not in self._held]
            rows = await self._invest_rows("invest-batch", [batch[n] for n in sent]) if sent else []
        except BaseException:
            # Nothing done; the batch may be split and retried at once: no product rejoins
            # here, as a retry would send its later requests ahead of its waiting ones.
            self._end_shared_call({})
            raise
        answered = dict(zip(sent, rows, strict=True))
        rejoining = self._rejoining()
        alone = self._shared_calls == 1
        answers: list[InvestRow | asyncio.Future[Any]] = []
        for n, item in enumerate(batch):
            answer = answered.get(n)
            if answer is not None and answer.outcome != "skipped":
                answers.append(answer)
            elif item.goods_id in rejoining or (
                alone and answer is None and item.goods_id not in self._held
            ):
                # Held when the call started; free now, or forgotten (nothing for it left
                # unanswered): behind the requests for it taken back, ahead of the later ones.
                future: asyncio.Future[Any] = self._loop.create_future()
                rejoining.setdefault(item.goods_id, []).append((item, future, item.deadline))
                answers.append(future)
            else:
                answers.append(self._hand_over(item))
        self._end_shared_call(rejoining)
        return answers

    def _rejoining(self) -> dict[int, list[tuple[Invest, asyncio.Future[Any], float]]]:
        """At the end of a shared call that is the only one in flight: the held products whose
        own call found the row free and has no call running now, each with the requests still
        waiting in its queue (taken out of it, in arrival order). They leave `_held`."""
        if self._shared_calls != 1:
            return {}
        rejoining: dict[int, list[tuple[Invest, asyncio.Future[Any], float]]] = {}
        for goods_id, product in list(self._held.items()):
            if product.free and not product.coalescer.calling:
                rejoining[goods_id] = list(product.coalescer.take_waiting())
                del self._held[goods_id]
        self.rejoined += len(rejoining)
        return rejoining

    def _end_shared_call(
        self, rejoining: dict[int, list[tuple[Invest, asyncio.Future[Any], float]]]
    ) -> None:
        """The rejoining products' requests go to the front of the shared queue, in arrival
        order; then the held products' own calls may run again."""
        self._shared_calls -= 1
        entries = [entry for waiting in rejoining.values() for entry in waiting]
        if entries:
            self._shared.push_front(entries)
        if self._shared_calls == 0:
            for product in self._held.values():
                product.coalescer.resume()

    def _hand_over(self, item: Invest) -> asyncio.Future[InvestRow]:
        """Queue `item` behind the earlier requests for its product, in that product's calls."""
        product = self._held.get(item.goods_id)
        if product is None:
            product = self._held[item.goods_id] = _HeldProduct(
                lambda held: Coalescer(
                    partial(self._call_held, item.goods_id, held),
                    max_batch=self._settings.invest_batch_max,
                    max_waiting=self._settings.invest_queue_max,
                    max_wait=self._max_wait,
                    lost=_lost,
                    cost=_keyed,
                    max_cost=self._key_locks,
                    waits=self._held_waits,
                    # Free again: its requests wait for the shared call in flight to take them.
                    paused=lambda: held.free and self._shared_calls > 0,
                )
            )
        try:
            future = product.coalescer.submit(item, item.deadline)
        except Overloaded as error:
            future = self._loop.create_future()
            future.set_exception(error)
            future.exception()  # retrieved, even when its request has gone
            if not product.unanswered:
                del self._held[item.goods_id]
            return future
        product.unanswered += 1
        future.add_done_callback(partial(self._held_answered, item.goods_id, product))
        return future

    def _held_answered(
        self, goods_id: int, product: _HeldProduct, _: asyncio.Future[InvestRow]
    ) -> None:
        product.unanswered -= 1
        if product.unanswered:
            return
        if product.held_until > self._loop.time():
            self._loop.call_at(product.held_until, self._forget_held, goods_id, product)
        else:  # nobody left to keep the order for
            self._forget_held(goods_id, product)

    def _forget_held(self, goods_id: int, product: _HeldProduct) -> None:
        product_now = self._held.get(goods_id)
        if (
            product_now is product
            and not product.unanswered
            and (product.held_until <= self._loop.time())
        ):
            del self._held[goods_id]

    async def _call_held(
        self, goods_id: int, product: _HeldProduct, batch: list[Invest]
    ) -> list[InvestRow | DatabaseUnavailable]:
        """One product's requests, waiting for its row until the earliest deadline among them;
        when that passes, the expired ones are answered 503 and the rest wait on."""
        answers: list[InvestRow | DatabaseUnavailable | None] = [None] * len(batch)
        try:
            async with asyncio.timeout_at(max(item.deadline for item in batch)):
                await self._wait_slots.acquire()
        except TimeoutError:  # every deadline passed while other products' calls waited
            return [self._still_held(goods_id)] * len(batch)
        try:
            waiting = list(range(len(batch)))
            while waiting:
                now = self._loop.time()
                waiting = [n for n in waiting if batch[n].deadline > now]
                if not waiting:
                    break
                wait_ms = math.ceil((min(batch[n].deadline for n in waiting) - now) * 1000)
                try:
                    rows = await self._invest_rows(
                        "invest-wait", [batch[n] for n in waiting], wait_ms
                    )
                except LockNotAvailable:
                    continue  # the earliest deadline passed; nothing was done
                for n, row in zip(waiting, rows, strict=True):
                    answers[n] = row
                break
        finally:
            self._wait_slots.release()
        still_held = None in answers
        product.held_until = self._loop.time() + self._max_wait if still_held else 0.0
        product.free = not still_held
        return [self._still_held(goods_id) if answer is None else answer for answer in answers]

    async def _invest_rows(self, name: str, batch: list[Invest], *more: Any) -> list[InvestRow]:
        """invest_many()'s answer rows to `batch` through statement `name`, in batch order."""
        rows = await self._db.rows(name, [*_params(batch), *more], writes=True)
        if len(rows) != len(batch):
            raise RuntimeError(f"{len(rows)} answers to {len(batch)} requests")
        return [InvestRow(*row[1:]) for row in rows]

    def _still_held(self, goods_id: int) -> DatabaseUnavailable:
        return DatabaseUnavailable(
            f"product {goods_id} stayed locked by another transaction for {self._max_wait:g}s"
        )

    @property
    def keys_in_flight(self) -> int:
        return len(self._keys_in_flight)

    @property
    def key_locks(self) -> int:
        return self._key_locks

    @key_locks.setter
    def key_locks(self, budget: int) -> None:
        """The server's budget, once the worker has read it (service/worker.py)."""
        self._key_locks = budget
        self._shared.max_cost = budget
        for product in self._held.values():
            product.coalescer.max_cost = budget

    @property
    def held_products(self) -> int:
        return len(self._held)

    async def drain(self) -> None:
        await self._shared.drain()
        for product in list(self._held.values()):
            await product.coalescer.drain()


class PageBatcher:
    """My-investments pages of many users in one statement, split per user here."""

    def __init__(self, db: Queries, settings: Settings, waits: Observer | None = None) -> None:
        self._db = db
        self._coalescer: Coalescer[PageRequest, Page] = _coalescer(
            self._call, settings, settings.read_batch_max, settings.read_calls_in_flight,
            waits=waits, spacing=settings.read_call_spacing_seconds,
            spacing_full=settings.read_call_spacing_full,
        )  # fmt: skip

    async def page(self, user_id: int, limit: int, cursor: tuple[int, int] | None) -> Page:
        return await self._coalescer.run(PageRequest(user_id, limit, cursor))

    async def _call(self, batch: list[PageRequest]) -> list[Page]:
        params: list[Any] = [
            [request.user_id for request in batch],
            [request.limit for request in batch],
            [None if request.cursor is None else request.cursor[0] for request in batch],
            [None if request.cursor is None else request.cursor[1] for request in batch],
        ]
        [(found, last_micros, last_id, lengths, bodies)] = await self._db.rows(
            "my-investments-many", params
        )
        return pages(found, last_micros, last_id, lengths, bodies)

    async def drain(self) -> None:
        await self._coalescer.drain()
