"""Per-instance cache of serialized product lists: bounded staleness and bytes, single flight."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar

V = TypeVar("V")

# What an entry costs besides its value: the key (a tuple of two datetimes), the entry tuple and
# its slot in the dict, measured with sys.getsizeof and rounded up. Counting it bounds even
# entries whose value is empty (a window with no product, cached as None).
ENTRY_OVERHEAD = 512


def value_bytes(value: object) -> int:
    """The bytes a cached value holds: its length for bytes, nothing for None."""
    return len(value) if isinstance(value, bytes | bytearray) else 0


class CacheObserver(Protocol):
    def hit(self, age: float) -> None: ...

    def miss(self) -> None: ...


class Unobserved:
    """The observer of a cache nobody counts: hits and misses go nowhere."""

    def hit(self, age: float) -> None:
        pass

    def miss(self) -> None:
        pass


UNOBSERVED = Unobserved()


class StaleBoundCache(Generic[V]):
    """Values never served more than `max_age` seconds after the load that produced them began,
    and never more than `max_bytes` held at once (values plus ENTRY_OVERHEAD each).

    The age is counted from the moment the load was started (not when it finished), so what a
    client sees is never older than the bound. While one load for a key is in flight, other
    requests for that key wait for it instead of starting their own (single flight). A failed
    load is not cached: every waiter gets the error. `max_age == 0` disables caching.

    Entries are kept in the order they were loaded: expired ones are dropped from the front on
    every store, and when a new value does not fit, the oldest go first (with a short
    `max_age` they are the next to expire anyway). A value larger than the whole budget is
    served but not kept.

    At most `max_loads` loads run at once (0: no bound), so a flood of distinct keys (each a
    miss) takes at most that many database connections; a load waits at most `load_wait`
    seconds for its turn, then fails with `busy()` (for every request waiting on it) without
    having run. Its age counts from its turn, when it starts.
    """

    def __init__(
        self,
        max_age: float,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int = 32 * 1024 * 1024,
        size: Callable[[V], int] = value_bytes,
        observer: CacheObserver = UNOBSERVED,
        max_loads: int = 0,
        load_wait: float = 2.0,
        busy: Callable[[], Exception] = lambda: TimeoutError("no turn to load"),
    ) -> None:
        self.max_age = max_age
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, V, int]] = OrderedDict()
        self._loading: dict[Hashable, asyncio.Future[tuple[float, V]]] = {}
        self.bytes = 0  # held now: values plus ENTRY_OVERHEAD each
        self._observer = observer  # the metrics (service/metrics.py; NullMetrics when off)
        self._turns = asyncio.Semaphore(max_loads) if max_loads > 0 else None
        self._load_wait = load_wait
        self._busy = busy
        self.loading = 0  # loads running now (past their turn)

    async def get(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        if self.max_age <= 0:
            self._observer.miss()
            return (await self._load(load))[1]
        entry = self._entries.get(key)
        if entry is not None:
            age = self._clock() - entry[0]
            if age < self.max_age:
                self._observer.hit(age)
                return entry[1]
        self._observer.miss()
        flight = self._loading.get(key)
        if flight is None:
            flight = asyncio.get_running_loop().create_future()
            self._loading[key] = flight
            self._start_load(key, load, flight)
        # shield: a waiter that is cancelled must not cancel the load the others wait for.
        return (await asyncio.shield(flight))[1]

    async def _load(self, load: Callable[[], Awaitable[V]]) -> tuple[float, V]:
        """(when the load started, its value), once it has its turn."""
        turns = self._turns
        if turns is not None:
            try:
                async with asyncio.timeout(self._load_wait):
                    await turns.acquire()
            except TimeoutError:
                raise self._busy() from None
        self.loading += 1
        try:
            started = self._clock()
            return started, await load()
        finally:
            self.loading -= 1
            if turns is not None:
                turns.release()

    def _start_load(
        self,
        key: Hashable,
        load: Callable[[], Awaitable[V]],
        flight: asyncio.Future[tuple[float, V]],
    ) -> None:
        async def run() -> None:
            try:
                started, value = await self._load(load)
            except BaseException as error:  # every waiter sees the failure; nothing is cached
                flight.set_exception(error)
                flight.exception()  # marks it retrieved when nobody waits any more
            else:
                self._store(key, started, value)
                flight.set_result((started, value))
            finally:
                del self._loading[key]

        asyncio.get_running_loop().create_task(run())

    def _store(self, key: Hashable, started: float, value: V) -> None:
        self._drop(key)
        cost = self._size(value) + ENTRY_OVERHEAD
        self._drop_expired()
        if cost > self.max_bytes:
            return
        while self._entries and (
            self.bytes + cost > self.max_bytes or len(self._entries) >= self.max_entries
        ):
            self._drop(next(iter(self._entries)))
        self._entries[key] = (started, value, cost)
        self.bytes += cost

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[2]

    def _drop_expired(self) -> None:
        # Load order is nearly start order, so the expired ones are at the front; one that
        # finished out of order is dropped on a later store (and never served: get checks age).
        oldest_kept = self._clock() - self.max_age
        while self._entries:
            key, (started, _, _) = next(iter(self._entries.items()))
            if started > oldest_kept:
                return
            self._drop(key)

    def __len__(self) -> int:
        return len(self._entries)

    def age(self, key: Hashable) -> float | None:
        entry = self._entries.get(key)
        return None if entry is None else self._clock() - entry[0]
