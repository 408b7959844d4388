"""Spaced calls (service/coalesce.py, READ_CALL_SPACING_SECONDS for the pages): an idle
coalescer calls at once; under load a call waits for its spacing after the previous call's start
unless enough requests wait; the wait keeps every request's deadline and answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from service.coalesce import Coalescer
from service.db import DatabaseUnavailable

SPACING = 0.05


class Calls:
    """A fake database call: records each batch and the loop time it started, answers each item
    with itself doubled; `hold` keeps a call open until `release` is set."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.started: list[float] = []
        self.hold = False
        self.release = asyncio.Event()

    async def __call__(self, items: list[int]) -> Sequence[int]:
        self.batches.append(list(items))
        self.started.append(asyncio.get_running_loop().time())
        if self.hold:
            await self.release.wait()
        return [item * 2 for item in items]


def spaced(
    calls: Calls,
    *,
    full: int = 4,
    max_wait: float = 5.0,
    spacing: float = SPACING,
    arrivals: float = 0.0,
) -> Coalescer[int, int]:
    """A coalescer spacing its calls; by default at any arrival rate (`arrivals` 0)."""
    return Coalescer(
        calls, max_batch=100, max_waiting=100, max_wait=max_wait, calls_in_flight=2,
        spacing=spacing, spacing_full=full, spacing_arrivals=arrivals,
    )  # fmt: skip


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_an_idle_coalescer_calls_at_once() -> None:
    async def scenario() -> None:
        calls = Calls()
        coalescer = spaced(calls)
        loop = asyncio.get_running_loop()
        submitted = loop.time()
        assert await coalescer.run(21) == 42
        assert calls.started[0] - submitted < SPACING / 2  # no spacing before the first call
        await asyncio.sleep(SPACING * 1.5)  # idle for longer than the spacing: at once again
        again = loop.time()
        assert await coalescer.run(1) == 2
        assert calls.started[1] - again < SPACING / 2

    asyncio.run(scenario())


def test_under_load_a_call_waits_for_its_spacing_and_takes_what_arrived_meanwhile() -> None:
    async def scenario() -> None:
        calls = Calls()
        coalescer = spaced(calls)
        # Read before the first call starts: the spacing counts from that start, and the fake's
        # own reading of it may come later (a busy machine can pause the process in between).
        before = asyncio.get_running_loop().time()
        assert await coalescer.run(1) == 2  # the first call, at once
        # Right after it: a trickle of 3 requests (fewer than `full`) waits for the spacing and
        # goes in one call.
        answers = [coalescer.submit(n) for n in (2, 3)]
        await settle()
        assert len(calls.batches) == 1  # not yet: within the spacing of the first call's start
        answers.append(coalescer.submit(4))
        assert await asyncio.gather(*answers) == [4, 6, 8]
        assert calls.batches == [[1], [2, 3, 4]]
        assert calls.started[1] - before >= SPACING

    asyncio.run(scenario())


def test_enough_waiting_requests_start_a_call_before_its_spacing() -> None:
    async def scenario() -> None:
        calls = Calls()
        coalescer = spaced(calls, full=4)
        assert await coalescer.run(1) == 2
        answers = [coalescer.submit(n) for n in range(3)]
        await settle()
        assert len(calls.batches) == 1
        answers.append(coalescer.submit(3))  # the fourth: `full`, so the call goes now
        assert await asyncio.gather(*answers) == [0, 2, 4, 6]
        assert calls.batches[1] == [0, 1, 2, 3]
        assert calls.started[1] - calls.started[0] < SPACING / 2

    asyncio.run(scenario())


def test_without_spacing_the_next_call_starts_at_once() -> None:
    async def scenario() -> None:
        calls = Calls()
        coalescer = spaced(calls, spacing=0.0)
        assert await coalescer.run(1) == 2
        assert await coalescer.run(2) == 4
        assert calls.started[1] - calls.started[0] < SPACING / 2

    asyncio.run(scenario())


def test_a_request_whose_deadline_passes_during_the_spacing_is_answered_503() -> None:
    async def scenario() -> None:
        calls = Calls()
        coalescer = spaced(calls, max_wait=SPACING / 5)
        assert await coalescer.run(1) == 2
        late = [coalescer.submit(2), coalescer.submit(3)]
        for answer in late:
            with pytest.raises(DatabaseUnavailable, match="not sent"):
                await answer
        assert calls.batches == [[1]]  # never sent: nothing was done for them
        await asyncio.sleep(SPACING)
        assert coalescer.idle
        assert await coalescer.run(3) == 6  # and the coalescer still serves

    asyncio.run(scenario())


def test_a_call_cancelled_while_it_waits_for_its_spacing_answers_every_request() -> None:
    async def scenario() -> None:
        calls = Calls()
        coalescer = spaced(calls)
        assert await coalescer.run(1) == 2
        waiting = [coalescer.submit(n) for n in (2, 3)]
        await settle()
        for task in list(coalescer._tasks):  # e.g. the worker stopping
            task.cancel()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(r, DatabaseUnavailable) for r in results)
        assert calls.batches == [[1]]

    asyncio.run(scenario())


def test_two_calls_in_flight_keep_their_spacing_and_a_full_queue_still_overlaps() -> None:
    async def scenario() -> None:
        calls = Calls()
        calls.hold = True
        coalescer = spaced(calls, full=4)
        first = coalescer.submit(1)  # at once; held open
        await settle()
        trickle = [coalescer.submit(n) for n in (2, 3)]
        await settle()
        assert calls.batches == [[1]]  # a second call beside it waits: within the spacing
        trickle += [coalescer.submit(n) for n in (4, 5)]  # `full`: the second call goes now
        await settle()
        assert calls.batches == [[1], [2, 3, 4, 5]]
        calls.release.set()
        assert await asyncio.gather(first, *trickle) == [2, 4, 6, 8, 10]

    asyncio.run(scenario())


def test_requests_arriving_too_slowly_to_gather_are_not_spaced() -> None:
    async def scenario() -> None:
        calls = Calls()
        # Spaced only while 3 or more arrive per spacing (60 a second): one at a time, each
        # after the last one's answer and a pause, is slower than that.
        coalescer = spaced(calls, full=100, arrivals=3)
        for n in range(6):
            assert await coalescer.run(n) == 2 * n
            await asyncio.sleep(SPACING / 2)  # 40 a second at most
        gaps = [b - a for a, b in zip(calls.started, calls.started[1:], strict=False)]
        assert max(gaps) < SPACING * 0.9  # none waited for a spacing
        # Bursts of 20 at once: fast enough, and the calls are spaced again.
        for _ in range(3):
            assert len(await asyncio.gather(*(coalescer.submit(n) for n in range(20)))) == 20
        # Unspaced, the calls of a burst start together; half the spacing leaves room for a
        # busy machine's pause between a call's start and the fake's reading of it.
        assert calls.started[-1] - calls.started[-2] >= SPACING / 2

    asyncio.run(scenario())


def test_a_client_sending_one_request_at_a_time_is_never_spaced() -> None:
    async def scenario() -> None:
        calls = Calls()
        # Fast enough for the spacing (any rate, `arrivals` 0), but alone: each request goes in
        # a call of its own, and a call of one gathers nothing by waiting.
        coalescer = spaced(calls, full=100)
        for n in range(10):
            assert await coalescer.run(n) == 2 * n
        gaps = [b - a for a, b in zip(calls.started, calls.started[1:], strict=False)]
        assert max(gaps) < SPACING / 2
        # Two at once after a call of one: they overlap, and the next call waits its spacing.
        assert await asyncio.gather(coalescer.submit(1), coalescer.submit(2)) == [2, 4]
        assert calls.batches[-1] == [1, 2]
        assert calls.started[-1] - calls.started[-2] >= SPACING / 2

    asyncio.run(scenario())
