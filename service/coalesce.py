"""Request coalescing: while a worker's database call is in flight, requests wait and go together
in the next call (group commit), so one database round trip serves many requests.

No timer delays a call on an idle service: a request that finds fewer than `calls_in_flight` calls
running starts one at once. Under load a coalescer may space its calls (`spacing`): a call that
would start within `spacing` seconds of the previous call's start, with fewer than `spacing_full`
requests waiting, waits for that moment (or for `spacing_full` to wait), so that a steady trickle
of requests goes in fewer, larger calls instead of a call per few requests. Only while requests
arrive fast enough for the wait to gather `spacing_arrivals` of them (their rate is measured
between calls) and overlap (a lone request after a call that carried one goes at once: a client
that sends one request at a time gains nothing from a wait); a request that finds no call started
within `spacing` still goes at once.

Waiting is bounded twice: at most `max_waiting` requests wait (more are refused at once), and a
request not sent within `max_wait` seconds is answered 503 (nothing was done for it). Whatever
happens to a call or its task, every request is answered: the call's own error, else the `lost`
error (the call's outcome is not known).

One request's trouble stays its own: a call may answer a request with an exception of its own,
and a call the database refused with an ERROR (rolled back, so nothing was done) is split in
halves and retried, down to single requests, so that only the request that causes the error gets
it and the others their normal answers, in their arrival order.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from service.db import DatabaseUnavailable, OutcomeUnknown, StatementRefused

T = TypeVar("T")
R = TypeVar("R")


class Observer(Protocol):
    """Where each request's wait is recorded (service/metrics.py, a histogram's tally)."""

    def observe_each(self, values: list[float]) -> None: ...


class Overloaded(DatabaseUnavailable):
    """Too many requests already wait for the database in this worker; nothing was done."""


class Coalescer(Generic[T, R]):
    """`call(items)` answers a list of items with one result per item, in order; a result that
    is an exception is raised to that item's request alone.

    `cost(item)` (default 0) bounds what one call may carry besides its size: a call takes
    items in arrival order while their summed cost stays within `max_cost` (the first item
    always goes), e.g. the advisory locks of keyed invests.

    `waits`, when given, records for each request how long it waited until the call that
    carries it started: `max_wait` before its deadline it was submitted (a request handed on
    from another coalescer keeps its first deadline, so its wait counts from its arrival).

    `paused()`, when given and true, starts no call: requests wait (their deadlines still run)
    for whoever paused it to take them (`take_waiting`) or `resume()` it. Requests taken from
    one coalescer can go ahead of everything waiting in another (`push_front`), keeping their
    futures and deadlines.

    `spacing`, `spacing_full` and `spacing_arrivals` space the calls under load (the module's
    docstring); `spacing` 0 (the default) starts every call at once."""

    def __init__(
        self,
        call: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_batch: int,
        max_waiting: int,
        max_wait: float,
        calls_in_flight: int = 1,
        lost: Callable[[], Exception] = lambda: DatabaseUnavailable("the database call failed"),
        on_batch: Callable[[int], None] | None = None,
        cost: Callable[[T], int] | None = None,
        max_cost: int = 0,
        waits: Observer | None = None,
        paused: Callable[[], bool] | None = None,
        spacing: float = 0.0,
        spacing_full: int = 0,
        spacing_arrivals: float = 8.0,
    ) -> None:
        self._call = call
        self._max_batch = max_batch
        self._max_waiting = max_waiting
        self._max_wait = max_wait
        self._calls_in_flight = calls_in_flight
        self._lost = lost
        self._on_batch = on_batch
        self._cost = cost
        self.max_cost = max_cost
        self._waits = waits
        self._paused = paused
        self._spacing = spacing
        self._spacing_full = spacing_full
        self._last_start = -math.inf  # loop time of the last call's start, when spaced
        # Arrivals per second between call starts (a moving average), and the count behind it.
        self._spacing_rate = spacing_arrivals / spacing if spacing else 0.0
        self._rate = 0.0
        self._last_size = 0  # requests the last call carried
        self._arrived = 0
        self._arrived_at_start = 0
        self._spaced: list[asyncio.Future[None]] = []  # calls waiting for their spacing
        self._waiting: deque[tuple[T, asyncio.Future[R], float]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        # Counted here, not by len(_tasks): a task that has just finished leaves the set only
        # when its done callback runs, and a request arriving in between must start a call.
        self._running = 0
        self._expiry: asyncio.TimerHandle | None = None
        # Built inside the worker's running loop. Looked up once: on Python 3.11 every
        # asyncio.get_running_loop() is a getpid() system call (a profiled hot spot).
        self._loop = asyncio.get_running_loop()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        """Nothing waits and no call runs."""
        return not self._waiting and self._running == 0

    @property
    def calling(self) -> bool:
        """A call runs (or is about to start)."""
        return self._running > 0

    def submit(self, item: T, deadline: float | None = None) -> asyncio.Future[R]:
        """The future answer to `item`; raises Overloaded when the queue is full. `deadline`
        (loop time; default: `max_wait` from now) is when it is answered 503 if not yet sent."""
        if len(self._waiting) >= self._max_waiting:
            raise Overloaded(f"{self._max_waiting} requests already wait for the database")
        loop = self._loop
        result: asyncio.Future[R] = loop.create_future()
        if deadline is None:
            deadline = loop.time() + self._max_wait
        self._waiting.append((item, result, deadline))
        self._arrived += 1
        if self._spaced and len(self._waiting) >= self._spacing_full:
            _resolve_all(self._spaced)
        if not self._start() and self._expiry is None:
            self._arm()
        return result

    def _start(self) -> bool:
        """Start a call unless enough run or the coalescer is paused; whether it started."""
        if self._running >= self._calls_in_flight or (self._paused and self._paused()):
            return False
        self._running += 1
        task = self._loop.create_task(self._drain())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def resume(self) -> None:
        """Start a call for the requests that wait, if none runs (after a pause)."""
        if self._waiting:
            self._start()

    def take_waiting(self) -> list[tuple[T, asyncio.Future[R], float]]:
        """Every request not yet sent, in arrival order, with its future and deadline: whoever
        takes them answers them (`push_front` into another coalescer)."""
        taken = list(self._waiting)
        self._waiting.clear()
        self._disarm()
        return taken

    def push_front(self, entries: list[tuple[T, asyncio.Future[R], float]]) -> None:
        """Put requests, in their order, ahead of every request waiting here (they arrived
        earlier). Those whose deadline has passed are answered 503 now."""
        now = self._loop.time()
        _fail([e for e in entries if e[2] <= now], self._not_sent())
        self._waiting.extendleft(reversed([e for e in entries if e[2] > now]))
        self._disarm()  # the front, and so the next deadline, may have changed
        if self._waiting and not self._start():
            self._arm()

    async def run(self, item: T) -> R:
        # Not shielded, and it need not be: a request cancelled here (its client gone) stays in
        # its batch, so an accepted investment is still written; only its answer is dropped.
        return await self.submit(item)

    async def _drain(self) -> None:
        batch: list[tuple[T, asyncio.Future[R], float]] = []
        finished = False
        try:
            while self._waiting and not (self._paused and self._paused()):
                if self._spacing:
                    if (
                        len(self._waiting) < self._spacing_full
                        and self._rate >= self._spacing_rate
                        and (len(self._waiting) > 1 or self._last_size > 1)
                        and await self._spaced_wait()
                    ):
                        continue  # waited: the queue may have changed (deadlines, a pause)
                    self._started_now()
                batch = self._next_batch()
                self._last_size = len(batch)
                if self._on_batch is not None:
                    self._on_batch(len(batch))
                if self._waits is not None:
                    # waited = now - (deadline - max_wait); one loop.time() per call
                    sent = self._loop.time() + self._max_wait
                    self._waits.observe_each([sent - deadline for _, _, deadline in batch])
                await self._answer(batch)
                batch = []
            finished = True
        finally:
            # Reached normally with nothing left (or paused: the rest wait for their deadline
            # or whoever takes them); otherwise this task is dying (cancelled, or a bug above):
            # no request may be left without an answer.
            self._running -= 1
            _fail(batch, self._lost())
            if not finished and self._running == 0:
                self._fail_waiting(DatabaseUnavailable("the database call was interrupted"))
            elif self._waiting and self._expiry is None:
                self._arm()

    def _started_now(self) -> None:
        """A call starts: the arrival rate since the previous start joins the average."""
        now = self._loop.time()
        elapsed = now - self._last_start
        if 0 < elapsed < math.inf:
            rate = (self._arrived - self._arrived_at_start) / elapsed
            self._rate += (rate - self._rate) / 4
        self._last_start = now
        self._arrived_at_start = self._arrived

    async def _spaced_wait(self) -> bool:
        """Wait until `spacing` after the last call's start, or until `spacing_full` requests
        wait; whether it waited."""
        delay = self._last_start + self._spacing - self._loop.time()
        if delay <= 0:
            return False
        if self._expiry is None:  # their deadlines run while they wait
            self._arm()
        wake: asyncio.Future[None] = self._loop.create_future()  # this call's own: a cancelled
        self._spaced.append(wake)  # task cancels what it awaits
        timer = self._loop.call_later(delay, _resolve_all, [wake])
        try:
            await wake
        finally:
            timer.cancel()
            self._spaced.remove(wake)
        return True

    def _next_batch(self) -> list[tuple[T, asyncio.Future[R], float]]:
        count = min(self._max_batch, len(self._waiting))
        if self._cost is None:
            return [self._waiting.popleft() for _ in range(count)]
        batch = [self._waiting.popleft()]
        spent = self._cost(batch[0][0])
        while len(batch) < count:
            spent += self._cost(self._waiting[0][0])
            if spent > self.max_cost:
                break
            batch.append(self._waiting.popleft())
        return batch

    async def _answer(self, batch: list[tuple[T, asyncio.Future[R], float]]) -> None:
        """One call for `batch`; when the database refuses it, the halves in turn (arrival
        order kept), so a refusal reaches only the requests that cause it."""
        try:
            results = await self._call([item for item, _, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} answers to {len(batch)} requests")
        except StatementRefused as error:
            if len(batch) == 1:
                _fail(batch, error)
                return
            half = len(batch) // 2
            await self._answer(batch[:half])
            await self._answer(batch[half:])
        except (DatabaseUnavailable, OutcomeUnknown) as error:
            _fail(batch, error)
        except Exception:
            _fail(batch, self._lost())
        else:
            for (_, future, _), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    _fail([(None, future, 0.0)], result)
                else:
                    future.set_result(result)

    def _fail_waiting(self, error: Exception) -> None:
        """Answer every request not yet sent with `error`."""
        waiting = list(self._waiting)
        self._waiting.clear()
        _fail(waiting, error)

    def _disarm(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _arm(self) -> None:
        if self._waiting:
            self._expiry = self._loop.call_at(self._waiting[0][2], self._expire)
        else:
            self._expiry = None

    def _expire(self) -> None:
        """Answer the requests that waited past their deadline (the oldest wait at the front)."""
        now = self._loop.time()
        expired = []
        while self._waiting and self._waiting[0][2] <= now:
            expired.append(self._waiting.popleft())
        _fail(expired, self._not_sent())
        self._arm()

    def _not_sent(self) -> DatabaseUnavailable:
        return DatabaseUnavailable(f"not sent to the database within {self._max_wait:g}s")

    async def drain(self) -> None:
        """Wait until every call in flight and every waiting request is answered (shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _resolve_all(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _fail(batch: list[tuple[Any, asyncio.Future[Any], float]], error: BaseException) -> None:
    for _, future, _ in batch:
        if not future.done():
            future.set_exception(error)
            future.exception()  # retrieved, even when its request has gone
