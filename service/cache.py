"""Per-instance cache of serialized product lists: bounded staleness, single flight per key."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar

V = TypeVar("V")


class CacheObserver(Protocol):
    def hit(self, age: float) -> None: ...

    def miss(self) -> None: ...


class StaleBoundCache(Generic[V]):
    """Values never served more than `max_age` seconds after the load that produced them began.

    The age is counted from the moment the load was started (not when it finished), so what a
    client sees is never older than the bound. While one load for a key is in flight, other
    requests for that key wait for it instead of starting their own (single flight). A failed
    load is not cached: every waiter gets the error. `max_age == 0` disables caching.
    """

    def __init__(
        self,
        max_age: float,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age = max_age
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._loading: dict[Hashable, asyncio.Future[tuple[float, V]]] = {}
        self.hits = 0
        self.misses = 0
        self.observer: CacheObserver | None = None  # metrics, set by the composition root

    async def get(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        if self.max_age <= 0:
            self.misses += 1
            if self.observer is not None:
                self.observer.miss()
            return await load()
        entry = self._entries.get(key)
        if entry is not None:
            age = self._clock() - entry[0]
            if age < self.max_age:
                self.hits += 1
                if self.observer is not None:
                    self.observer.hit(age)
                self._entries.move_to_end(key)
                return entry[1]
        self.misses += 1
        if self.observer is not None:
            self.observer.miss()
        flight = self._loading.get(key)
        if flight is None:
            flight = asyncio.get_running_loop().create_future()
            self._loading[key] = flight
            self._start_load(key, load, flight)
        # shield: a waiter that is cancelled must not cancel the load the others wait for.
        return (await asyncio.shield(flight))[1]

    def _start_load(
        self,
        key: Hashable,
        load: Callable[[], Awaitable[V]],
        flight: asyncio.Future[tuple[float, V]],
    ) -> None:
        started = self._clock()

        async def run() -> None:
            try:
                value = await load()
            except BaseException as error:  # every waiter sees the failure; nothing is cached
                flight.set_exception(error)
                flight.exception()  # marks it retrieved when nobody waits any more
            else:
                self._entries[key] = (started, value)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
                flight.set_result((started, value))
            finally:
                del self._loading[key]

        asyncio.get_running_loop().create_task(run())

    def age(self, key: Hashable) -> float | None:
        entry = self._entries.get(key)
        return None if entry is None else self._clock() - entry[0]
