"""The invest batcher's waiting, with a fake database: coalescing, the queue cap, the deadline,
a dying call, and what happens to Idempotency-Keys in flight when it dies."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.batcher import Invest, InvestBatcher, InvestRow
from service.coalesce import Overloaded
from service.db import DatabaseUnavailable, OutcomeUnknown
from service.settings import Settings


class FakeDatabase:
    """Answers invest-batch like invest_many() would (everything granted), one call at a time
    under the test's control: each call waits for `release` when `hold` is set."""

    def __init__(self) -> None:
        self.calls: list[int] = []  # the batch size of every call
        self.hold = False
        self.release = asyncio.Event()
        self.fail: BaseException | None = None
        self.rows_short = False

    async def rows(self, name: str, params: list[Any], *, writes: bool = False) -> list[Any]:
        assert name == "invest-batch" and writes
        goods, _users, amounts, _keys = params
        self.calls.append(len(goods))
        if self.hold:
            await self.release.wait()
        if self.fail is not None:
            raise self.fail
        rows = [
            (n + 1, "done", True, 10**9, amount, amount, "recruiting", "2026-11-25 00:00:00", n)
            for n, amount in enumerate(amounts)
        ]
        return rows[:-1] if self.rows_short else rows


def batcher(db: FakeDatabase, **settings: Any) -> InvestBatcher:
    values = {"invest_queue_max": 100, "db_acquire_timeout": 5.0, **settings}
    return InvestBatcher(db, Settings(**values))  # type: ignore[arg-type]


async def one_call_in_flight(
    **settings: Any,
) -> tuple[FakeDatabase, InvestBatcher, asyncio.Task[InvestRow]]:
    """A batcher whose first call (one invest, user 1, goods 1) is held in the fake database."""
    db = FakeDatabase()
    db.hold = True
    invests = batcher(db, **settings)
    in_flight = asyncio.create_task(invests.invest(1, 1, 1))
    await until(lambda: db.calls == [1])
    return db, invests, in_flight


async def until(condition: Any) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def test_an_idle_batcher_calls_at_once_and_coalesces_what_arrives_meanwhile() -> None:
    async def scenario() -> None:
        db = FakeDatabase()
        db.hold = True
        invests = batcher(db)
        first = asyncio.create_task(invests.invest(1, 1, 10))
        await until(lambda: db.calls == [1])  # no timer: the first request went alone, at once
        rest = [asyncio.create_task(invests.invest(goods, 2, 20 + goods)) for goods in range(7)]
        await until(lambda: all(not t.done() for t in rest))
        db.release.set()
        answers = await asyncio.gather(first, *rest)
        assert db.calls == [1, 7]  # everything that waited went in one call, across products
        assert [a.investment_amount for a in answers] == [10, *(20 + g for g in range(7))]
        assert all(isinstance(a, InvestRow) and a.outcome == "done" for a in answers)

    asyncio.run(scenario())


def test_a_full_queue_refuses_at_once_and_the_waiting_are_still_served() -> None:
    async def scenario() -> None:
        db, invests, in_flight = await one_call_in_flight(invest_queue_max=3)
        waiting = [asyncio.create_task(invests.invest(1, 2, 2)) for _ in range(3)]
        await until(lambda: invests._shared.waiting == 3)
        with pytest.raises(Overloaded):
            await invests.invest(1, 3, 3, "key-refused")
        assert invests.keys_in_flight == 0  # a refused request holds no key
        db.release.set()
        assert len(await asyncio.gather(in_flight, *waiting)) == 4

    asyncio.run(scenario())


def test_a_request_not_sent_before_its_deadline_is_answered_503_and_never_sent() -> None:
    async def scenario() -> None:
        db, invests, in_flight = await one_call_in_flight(db_acquire_timeout=0.05)
        late = asyncio.create_task(invests.invest(2, 2, 2, "late-key"))
        with pytest.raises(DatabaseUnavailable, match="not sent"):
            await asyncio.wait_for(late, 2)
        assert invests.keys_in_flight == 0
        db.release.set()
        await in_flight
        await invests.drain()
        assert db.calls == [1]  # the expired request never reached the database

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (OutcomeUnknown("connection lost"), OutcomeUnknown),
        (DatabaseUnavailable("statement timeout"), DatabaseUnavailable),
        (RuntimeError("a bug"), OutcomeUnknown),
        ("rows_short", OutcomeUnknown),
    ],
    ids=["outcome-unknown", "unavailable", "unexpected-error", "wrong-row-count"],
)
def test_a_failed_call_answers_every_request_of_its_batch(failure: Any, expected: type) -> None:
    async def scenario() -> None:
        db = FakeDatabase()
        if failure == "rows_short":
            db.rows_short = True
        else:
            db.fail = failure
        invests = batcher(db)
        results = await asyncio.gather(
            *(invests.invest(g, 1, 5, f"key-{g}") for g in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, expected) for r in results), results
        assert invests.keys_in_flight == 0
        db.fail, db.rows_short = None, False
        assert (await invests.invest(1, 1, 5, "key-1")).outcome == "done"  # works again

    asyncio.run(scenario())


def test_a_dying_drain_task_answers_everyone_and_releases_every_key() -> None:
    async def scenario() -> None:
        db, invests, in_flight = await one_call_in_flight()
        sent = [in_flight]
        queued = [asyncio.create_task(invests.invest(g, 2, 1, f"queued-{g}")) for g in range(4)]
        await until(lambda: invests._shared.waiting == 4)
        for task in list(invests._shared._tasks):
            task.cancel()  # the drain task dies mid-call
        results = await asyncio.gather(*sent, *queued, return_exceptions=True)
        assert isinstance(results[0], OutcomeUnknown)  # it was sent: the outcome is unknown
        assert all(isinstance(r, DatabaseUnavailable) for r in results[1:])  # never sent
        assert invests.keys_in_flight == 0
        assert invests._shared.waiting == 0
        db.hold = False
        assert (await invests.invest(1, 1, 1, "sent-again")).outcome == "done"

    asyncio.run(scenario())


def test_a_retry_of_a_key_still_waiting_is_in_use_without_a_call() -> None:
    async def scenario() -> None:
        db = FakeDatabase()
        db.hold = True
        invests = batcher(db)
        first = asyncio.create_task(invests.invest(1, 7, 5, "same"))
        await until(lambda: db.calls == [1])
        assert (await invests.invest(1, 7, 5, "same")).outcome == "in_use"
        assert not first.done()
        db.release.set()
        assert (await first).outcome == "done"
        assert db.calls == [1]

    asyncio.run(scenario())


def test_calls_in_flight_bounds_concurrent_calls() -> None:
    async def scenario() -> None:
        db, invests, in_flight = await one_call_in_flight(invest_calls_in_flight=2)
        tasks = [in_flight]
        tasks.append(asyncio.create_task(invests.invest(2, 1, 1)))
        await until(lambda: db.calls == [1, 1])  # a second call starts while the first runs
        tasks += [asyncio.create_task(invests.invest(g, 1, 1)) for g in range(4)]
        await until(lambda: invests._shared.waiting == 4)  # no third call: they wait
        assert db.calls == [1, 1]
        db.release.set()
        await asyncio.gather(*tasks)
        assert db.calls == [1, 1, 4]

    asyncio.run(scenario())


def test_a_request_arriving_just_as_the_last_call_ends_starts_a_new_call() -> None:
    """The drain task has left its loop but not yet left the task set when this request comes
    (it is submitted from a callback of the previous answer): it must not wait for nobody."""

    async def scenario() -> None:
        db = FakeDatabase()
        invests = batcher(db, db_acquire_timeout=1.0)
        follow: list[asyncio.Future[InvestRow]] = []
        first = invests._shared.submit(Invest(1, 1, 1, None))
        first.add_done_callback(
            lambda _: follow.append(invests._shared.submit(Invest(2, 2, 2, None)))
        )
        await first
        await until(lambda: bool(follow))
        assert (await asyncio.wait_for(follow[0], 0.5)).outcome == "done"
        assert db.calls == [1, 1]

    asyncio.run(scenario())
