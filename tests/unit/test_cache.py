"""The list cache: bounded staleness, single flight, failures not cached (no database)."""

from __future__ import annotations

import asyncio

import pytest

from service.cache import ENTRY_OVERHEAD, StaleBoundCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_serves_within_the_bound_and_reloads_after_it() -> None:
    async def scenario() -> None:
        clock = Clock()
        cache: StaleBoundCache[int] = StaleBoundCache(1.0, clock=clock)
        loads = 0

        async def load() -> int:
            nonlocal loads
            loads += 1
            return loads

        assert await cache.get("k", load) == 1
        clock.now += 0.99
        assert await cache.get("k", load) == 1
        clock.now += 0.01  # exactly at the bound: never served past it
        assert await cache.get("k", load) == 2
        assert loads == 2

    asyncio.run(scenario())


def test_age_counts_from_the_start_of_the_load() -> None:
    async def scenario() -> None:
        clock = Clock()
        cache: StaleBoundCache[str] = StaleBoundCache(1.0, clock=clock)

        async def slow_load() -> str:
            clock.now += 0.8  # the database took 0.8 s
            return "v"

        await cache.get("k", slow_load)
        assert cache.age("k") == pytest.approx(0.8)

    asyncio.run(scenario())


def test_concurrent_misses_share_one_load() -> None:
    async def scenario() -> None:
        cache: StaleBoundCache[str] = StaleBoundCache(1.0)
        loads = 0
        gate = asyncio.Event()

        async def load() -> str:
            nonlocal loads
            loads += 1
            await gate.wait()
            return "v"

        waiters = [asyncio.create_task(cache.get("k", load)) for _ in range(50)]
        await asyncio.sleep(0)
        gate.set()
        assert await asyncio.gather(*waiters) == ["v"] * 50
        assert loads == 1

    asyncio.run(scenario())


def test_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    async def scenario() -> None:
        cache: StaleBoundCache[str] = StaleBoundCache(1.0)
        calls = 0

        async def failing() -> str:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0)
            raise RuntimeError("database down")

        results = await asyncio.gather(
            *(cache.get("k", failing) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in results)
        assert calls == 1

        async def ok() -> str:
            return "v"

        assert await cache.get("k", ok) == "v"

    asyncio.run(scenario())


def test_zero_disables_caching() -> None:
    async def scenario() -> None:
        cache: StaleBoundCache[int] = StaleBoundCache(0)
        counter = iter(range(10))

        async def load() -> int:
            return next(counter)

        assert [await cache.get("k", load) for _ in range(3)] == [0, 1, 2]

    asyncio.run(scenario())


def test_number_of_windows_is_bounded() -> None:
    async def scenario() -> None:
        cache: StaleBoundCache[int] = StaleBoundCache(10.0, max_entries=3)

        for key in range(10):

            async def load(k: int = key) -> int:
                return k

            await cache.get(key, load)
        assert len(cache._entries) == 3

    asyncio.run(scenario())


def test_bytes_held_stay_within_the_bound() -> None:
    """Lists of 10 kB under a 35 kB budget (overhead included): at most three are held, the
    oldest go first, and every answer is still the value its own load produced."""

    async def scenario() -> None:
        cache: StaleBoundCache[bytes] = StaleBoundCache(10.0, max_bytes=35_000)

        for key in range(50):

            async def load(k: int = key) -> bytes:
                return bytes([k]) * 10_000

            assert await cache.get(key, load) == bytes([key]) * 10_000
            assert cache.bytes <= 35_000
        assert sorted(cache._entries) == [47, 48, 49]
        assert cache.bytes == 3 * (10_000 + ENTRY_OVERHEAD)

    asyncio.run(scenario())


def test_a_value_larger_than_the_budget_is_served_but_not_kept() -> None:
    async def scenario() -> None:
        cache: StaleBoundCache[bytes] = StaleBoundCache(10.0, max_bytes=4_096)
        loads = 0

        async def load() -> bytes:
            nonlocal loads
            loads += 1
            return b"x" * 5_000

        assert await cache.get("big", load) == b"x" * 5_000
        assert await cache.get("big", load) == b"x" * 5_000
        assert loads == 2
        assert len(cache) == 0 and cache.bytes == 0

    asyncio.run(scenario())


def test_expired_entries_are_dropped_when_the_next_one_is_stored() -> None:
    async def scenario() -> None:
        clock = Clock()
        cache: StaleBoundCache[bytes | None] = StaleBoundCache(1.0, clock=clock)

        async def empty() -> bytes | None:
            return None

        for key in range(5):
            await cache.get(key, empty)
        assert len(cache) == 5 and cache.bytes == 5 * ENTRY_OVERHEAD
        clock.now += 1.0
        await cache.get("fresh", empty)
        assert list(cache._entries) == ["fresh"]
        assert cache.bytes == ENTRY_OVERHEAD

    asyncio.run(scenario())


def test_a_reloaded_key_is_counted_once() -> None:
    async def scenario() -> None:
        clock = Clock()
        cache: StaleBoundCache[bytes] = StaleBoundCache(1.0, clock=clock, max_bytes=10**6)

        async def load() -> bytes:
            return b"v" * 100

        for _ in range(5):
            await cache.get("k", load)
            clock.now += 0.6  # every other get reloads the same key
        assert cache.bytes == 100 + ENTRY_OVERHEAD

    asyncio.run(scenario())


class Busy(Exception):
    pass


class Overlapping:
    """A load that counts how many of its calls run at once (`peak`); each takes 10 ms, then
    answers 1 or, with `fails`, raises as a failed database query would."""

    def __init__(self, fails: bool = False) -> None:
        self.fails = fails
        self.running = self.peak = 0

    async def __call__(self) -> int:
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(0.01)
        self.running -= 1
        if self.fails:
            raise ValueError("the database failed")
        return 1


def test_at_most_max_loads_run_at_once() -> None:
    """A flood of distinct keys (each a miss) runs at most `max_loads` loads at a time."""

    async def scenario() -> None:
        cache: StaleBoundCache[int] = StaleBoundCache(1.0, max_loads=3, load_wait=5.0)
        load = Overlapping()
        assert await asyncio.gather(*(cache.get(key, load) for key in range(40))) == [1] * 40
        assert load.peak == 3
        assert cache.loading == 0

    asyncio.run(scenario())


def test_a_load_that_gets_no_turn_in_time_fails_busy_without_running() -> None:
    async def scenario() -> None:
        cache: StaleBoundCache[str] = StaleBoundCache(
            1.0, max_loads=1, load_wait=0.05, busy=lambda: Busy("no turn")
        )
        gate = asyncio.Event()
        ran = []

        async def stuck() -> str:
            await gate.wait()
            return "first"

        async def load() -> str:
            ran.append("second")
            return "second"

        first = asyncio.create_task(cache.get("a", stuck))
        await asyncio.sleep(0)
        waiters = [asyncio.create_task(cache.get("b", load)) for _ in range(3)]
        for waiter in waiters:  # every request waiting on the load gets the failure
            with pytest.raises(Busy):
                await waiter
        assert ran == [] and len(cache) == 0  # never ran, nothing cached
        gate.set()
        assert await first == "first"
        assert await cache.get("b", load) == "second"  # the turn is free again

    asyncio.run(scenario())


def test_the_bound_holds_with_caching_disabled_and_after_failures() -> None:
    async def scenario() -> None:
        cache: StaleBoundCache[int] = StaleBoundCache(0.0, max_loads=2, load_wait=5.0)
        load = Overlapping(fails=True)
        results = await asyncio.gather(
            *(cache.get(1, load) for _ in range(10)), return_exceptions=True
        )
        assert all(isinstance(result, ValueError) for result in results)
        assert load.peak == 2 and cache.loading == 0

    asyncio.run(scenario())


def test_age_counts_from_the_turn_of_a_load_that_waited() -> None:
    async def scenario() -> None:
        clock = Clock()
        cache: StaleBoundCache[str] = StaleBoundCache(1.0, clock=clock, max_loads=1, load_wait=5.0)
        gate = asyncio.Event()

        async def stuck() -> str:
            await gate.wait()
            clock.now += 0.5  # the first load ends 0.5 s after the second one asked
            return "a"

        async def quick() -> str:
            return "b"

        first = asyncio.create_task(cache.get("a", stuck))
        await asyncio.sleep(0)
        second = asyncio.create_task(cache.get("b", quick))
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, second)
        assert cache.age("b") == 0  # it started after its wait: its value is that fresh
        assert cache.age("a") == pytest.approx(0.5)

    asyncio.run(scenario())
