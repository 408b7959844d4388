"""The invest batcher's waiting, with a fake database: coalescing, the queue cap, the deadline,
a dying call, what happens to Idempotency-Keys in flight when it dies, a refused call split down
to the request that causes it, and held products waiting in calls of their own, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.batcher import Invest, InvestBatcher, InvestRow
from service.coalesce import Overloaded
from service.db import DatabaseUnavailable, LockNotAvailable, OutcomeUnknown, StatementRefused
from service.settings import Settings
from tests.fakes import InvestCallDatabase


def batcher(db: InvestCallDatabase, **settings: Any) -> InvestBatcher:
    # Calls unspaced unless a test asks: these tests step the loop, not its timers.
    values = {"invest_queue_max": 100, "db_acquire_timeout": 5.0,
              "invest_call_spacing_seconds": 0.0, **settings}  # fmt: skip
    return InvestBatcher(db, Settings(**values))


async def one_call_in_flight(
    **settings: Any,
) -> tuple[InvestCallDatabase, InvestBatcher, asyncio.Task[InvestRow]]:
    """A batcher whose first call (one invest, user 1, goods 1) is held in the fake database."""
    db = InvestCallDatabase()
    db.hold = True
    invests = batcher(db, **settings)
    in_flight = asyncio.create_task(invests.invest(1, 1, 1))
    await until(lambda: db.calls == [1])
    return db, invests, in_flight


async def until_slow(condition: Any, seconds: float = 2.0) -> None:
    """Like until(), for a condition that waits on loop timers."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def until(condition: Any) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def test_an_idle_batcher_calls_at_once_and_coalesces_what_arrives_meanwhile() -> None:
    async def scenario() -> None:
        db = InvestCallDatabase()
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
        db = InvestCallDatabase()
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
        db = InvestCallDatabase()
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
        db = InvestCallDatabase()
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


def test_a_refused_call_is_split_until_only_the_request_that_causes_it_fails() -> None:
    """One request makes the statement fail (rolled back): the call is retried in halves, in
    arrival order, so the other seven get their normal answers and only that one the error."""

    async def scenario() -> None:
        db, invests, in_flight = await one_call_in_flight()
        db.refuse = 13
        rest = [asyncio.create_task(invests.invest(1, 2, amount)) for amount in range(10, 18)]
        await until(lambda: invests._shared.waiting == 8)
        db.release.set()
        answers = await asyncio.gather(in_flight, *rest, return_exceptions=True)
        refused = [a for a in answers if isinstance(a, BaseException)]
        assert len(refused) == 1 and isinstance(refused[0], StatementRefused)
        assert isinstance(answers[1 + 3], StatementRefused)  # the request with amount 13
        served = [a.investment_amount for a in answers if isinstance(a, InvestRow)]
        assert served == [1, 10, 11, 12, 14, 15, 16, 17]
        # 8 → 4 (refused) → 2 (served) + 2 (refused) → 1 + 1; then the other 4, served.
        assert [len(amounts) for _, amounts in db.sent] == [1, 8, 4, 2, 2, 1, 1, 4]

    asyncio.run(scenario())


def test_a_held_product_waits_in_its_own_call_and_the_others_go_on() -> None:
    """Product 7 is held elsewhere: its requests go to a call of their own that waits, in
    arrival order, while requests for other products keep being served."""

    async def scenario() -> None:
        db = InvestCallDatabase()
        db.held = {7}
        invests = batcher(db)
        first = asyncio.create_task(invests.invest(7, 1, 100))
        await until(lambda: invests.held_products == 1)
        later = [asyncio.create_task(invests.invest(7, 2, 101 + n)) for n in range(3)]
        for n in range(5):  # other products: answered while product 7 waits
            row = await invests.invest(1 + n, 3, 5)
            assert row.outcome == "done"
        assert not first.done() and not any(t.done() for t in later)
        db.unheld.set()
        answers = await asyncio.gather(first, *later)
        assert [a.investment_amount for a in answers] == [100, 101, 102, 103]
        waited = [amounts for name, amounts in db.sent if name == "invest-wait"]
        assert [amount for amounts in waited for amount in amounts] == [100, 101, 102, 103]
        # Requests queued after the product was found held never went to the shared call.
        shared = [a for name, amounts in db.sent if name == "invest-batch" for a in amounts]
        assert 101 not in shared and 102 not in shared and 103 not in shared
        assert invests.held_products == 0

    asyncio.run(scenario())


def test_a_held_product_still_locked_at_the_deadline_is_answered_503() -> None:
    async def scenario() -> None:
        db = InvestCallDatabase()
        db.held = {7}
        invests = batcher(db, db_acquire_timeout=0.2)

        async def wait_for_row(name: str, params: list[Any], *, writes: bool = False) -> Any:
            if name == "invest-wait":  # the product stays locked past the lock wait
                db.sent.append((name, list(params[2])))
                await asyncio.sleep(params[4] / 1000)
                raise LockNotAvailable("invest-wait waited too long for a row lock")
            return await InvestCallDatabase.rows(db, name, params, writes=writes)

        db.rows = wait_for_row  # type: ignore[method-assign]
        started = asyncio.get_running_loop().time()
        with pytest.raises(DatabaseUnavailable, match="stayed locked"):
            await invests.invest(7, 1, 100)
        assert asyncio.get_running_loop().time() - started < 0.5
        assert (await invests.invest(8, 1, 100)).outcome == "done"
        # Still held when last tried: the next request for it goes straight to its own call,
        # no shared call waits for the row first; forgotten once DB_ACQUIRE_TIMEOUT passes.
        assert invests.held_products == 1
        with pytest.raises(DatabaseUnavailable, match="stayed locked"):
            await invests.invest(7, 2, 101)
        assert ("invest-batch", [101]) not in db.sent and ("invest-wait", [101]) in db.sent
        await until_slow(lambda: invests.held_products == 0)

    asyncio.run(scenario())


def test_a_client_leaving_does_not_take_its_invest_out_of_a_held_products_call() -> None:
    async def scenario() -> None:
        db = InvestCallDatabase()
        db.held = {7}
        invests = batcher(db)
        leaving = asyncio.create_task(invests.invest(7, 1, 100, "key-left"))
        await until(lambda: invests.held_products == 1)
        leaving.cancel()
        await asyncio.sleep(0)
        db.unheld.set()
        await until(lambda: invests.held_products == 0)
        assert ("invest-wait", [100]) in db.sent
        assert invests.keys_in_flight == 0

    asyncio.run(scenario())


def test_a_call_carries_at_most_the_key_budget_of_keyed_requests() -> None:
    async def scenario() -> None:
        db, _, in_flight = await one_call_in_flight()
        invests = InvestBatcher(db, Settings(invest_queue_max=100), key_locks=2)
        db.hold = True
        first = asyncio.create_task(invests.invest(1, 1, 1))
        await until(lambda: len(db.calls) == 2)
        rest = [
            asyncio.create_task(invests.invest(1, 2, n, f"key-{n}" if n % 2 else None))
            for n in range(8)
        ]
        await until(lambda: invests._shared.waiting == 8)
        db.release.set()
        await asyncio.gather(in_flight, first, *rest)
        # 8 waiting, 4 of them keyed: calls of at most 2 keys, plain requests filling in.
        assert db.sent[2:] == [("invest-batch", [0, 1, 2, 3, 4]), ("invest-batch", [5, 6, 7])]

    asyncio.run(scenario())


def test_the_queue_cap_counts_the_requests_waiting_for_a_held_product() -> None:
    """INVEST_QUEUE_MAX bounds every invest waiting in the worker: those handed to a held
    product's call and not yet in it count as much as those waiting for the shared call."""

    async def scenario() -> None:
        db = InvestCallDatabase()
        db.held = {7}
        invests = batcher(db, invest_queue_max=2)
        in_call = asyncio.create_task(invests.invest(7, 1, 100))  # in the held product's call
        await until(lambda: ("invest-wait", [100]) in db.sent)
        waiting = [asyncio.create_task(invests.invest(7, 2, 101 + n)) for n in range(2)]
        await until(lambda: invests._held[7].coalescer.waiting == 2)
        with pytest.raises(Overloaded):
            await invests.invest(8, 3, 5)  # another product: the worker's queue is full
        db.unheld.set()
        assert len(await asyncio.gather(in_call, *waiting)) == 3

    asyncio.run(scenario())


def test_a_refused_call_hands_a_held_products_request_over_once() -> None:
    """A request for a product already held shares a shared call that the database refuses:
    it is handed to its product's call only once the call has answered, so the split retry
    neither answers it 503 while it is still made, nor makes it twice."""

    async def scenario() -> None:
        db = InvestCallDatabase()
        db.held = {7}
        invests = batcher(db)
        first_held = asyncio.create_task(invests.invest(7, 1, 100))
        await until(lambda: ("invest-wait", [100]) in db.sent)
        db.hold, db.release = True, asyncio.Event()
        busy = asyncio.create_task(invests.invest(1, 2, 5))
        await until(lambda: ("invest-batch", [5]) in db.sent)
        queued = [
            asyncio.create_task(invests.invest(goods, user, amount))
            for goods, user, amount in ((7, 3, 200), (1, 4, 13), (1, 5, 6))
        ]
        await until(lambda: invests._shared.waiting == 3)
        db.refuse = 13
        db.release.set()
        await until(lambda: ("invest-batch", [6]) in db.sent)
        db.unheld.set()
        answers = await asyncio.gather(first_held, busy, *queued, return_exceptions=True)
        assert [getattr(a, "investment_amount", type(a).__name__) for a in answers] == [
            100,
            5,
            200,
            "StatementRefused",
            6,
        ]
        waited = [a for name, amounts in db.sent if name == "invest-wait" for a in amounts]
        assert sorted(waited) == [100, 200]

    asyncio.run(scenario())


class Waits:
    def __init__(self) -> None:
        self.seen: list[float] = []

    def observe_each(self, values: list[float]) -> None:
        self.seen.extend(values)


def test_each_request_s_wait_until_its_call_started_is_recorded() -> None:
    """The first request goes at once (waited ~0); those that arrive while its call is held
    wait until it ends, and each records that wait once, when its own call starts."""

    async def scenario() -> None:
        db = InvestCallDatabase()
        db.hold = True
        waits = Waits()
        invests = InvestBatcher(db, Settings(invest_queue_max=100), waits=waits)
        first = asyncio.create_task(invests.invest(1, 1, 10))
        await until(lambda: db.calls == [1])
        rest = [asyncio.create_task(invests.invest(2, user, 10)) for user in range(2, 5)]
        await asyncio.sleep(0.2)
        db.release.set()
        await asyncio.gather(first, *rest)
        assert len(waits.seen) == 4
        assert 0 <= waits.seen[0] < 0.05, waits.seen
        assert all(0.2 <= wait < 1.0 for wait in waits.seen[1:]), waits.seen

    asyncio.run(scenario())


def test_a_held_product_s_requests_record_their_wait_from_arrival() -> None:
    """Requests for a product held elsewhere record in `held_waits`, counted from their arrival
    (a request handed over by the shared call keeps its first deadline)."""

    async def scenario() -> None:
        db = InvestCallDatabase()
        db.held = {7}
        shared, held = Waits(), Waits()
        invests = InvestBatcher(
            db, Settings(invest_queue_max=100, db_acquire_timeout=5.0),
            waits=shared, held_waits=held,
        )  # fmt: skip
        first = asyncio.create_task(invests.invest(7, 1, 100))
        await until(lambda: invests.held_products == 1)
        later = [asyncio.create_task(invests.invest(7, 2, 101 + n)) for n in range(2)]
        await asyncio.sleep(0.2)
        db.unheld.set()
        await asyncio.gather(first, *later)
        # Each passed through the shared queue at once (the later ones are handed over
        # there without a call of the shared statement).
        assert len(shared.seen) == 3 and max(shared.seen) < 0.05, shared.seen
        assert len(held.seen) == 3, held.seen
        assert held.seen[0] < 0.05, held.seen  # handed over at once, its own call started
        assert all(0.2 <= wait < 1.0 for wait in held.seen[1:]), held.seen

    asyncio.run(scenario())


def gated(db: InvestCallDatabase) -> asyncio.Event:
    """Shared calls (invest-batch) wait for the returned event while it is unset (those
    waiting are in `db.sent` already)."""
    gate = asyncio.Event()
    gate.set()
    plain = db.rows

    async def rows(name: str, params: list[Any], *, writes: bool = False) -> Any:
        if name == "invest-batch" and not gate.is_set():
            db.sent.append((name, list(params[2])))
            await gate.wait()
            db.sent.pop(db.sent.index((name, list(params[2]))))
        return await plain(name, params, writes=writes)

    db.rows = rows  # type: ignore[method-assign]
    return gate


def test_a_held_product_whose_row_is_found_free_rejoins_the_shared_call_in_order() -> None:
    """Product 7 was passed over (another call held its row). Its own call finds the row free
    while a shared call is in flight: the requests still waiting in its queue, then those of
    the shared call in flight, go back to the front of the shared queue, ahead of its later
    requests, in arrival order; none of them takes a call of its own."""

    async def scenario() -> None:
        db = InvestCallDatabase()
        db.held = {7}
        gate = gated(db)
        invests = batcher(db)
        r1 = asyncio.create_task(invests.invest(7, 1, 100))
        await until(lambda: ("invest-wait", [100]) in db.sent)  # its own call, waiting
        r2 = [asyncio.create_task(invests.invest(g, 2, a)) for g, a in ((1, 1), (7, 101))]
        await until(lambda: invests._held[7].coalescer.waiting == 1)  # 101 queued behind 100
        gate.clear()
        r3 = [asyncio.create_task(invests.invest(g, 3, a)) for g, a in ((1, 2), (7, 102))]
        await until(lambda: ("invest-batch", [2]) in db.sent)  # in flight, 102 left out
        r4 = [asyncio.create_task(invests.invest(g, 4, a)) for g, a in ((7, 103), (2, 3))]
        await until(lambda: invests._shared.waiting == 2)
        db.held = set()
        db.unheld.set()  # the row is free: its own call answers 100
        assert (await r1).investment_amount == 100
        await asyncio.sleep(0.01)
        assert invests._held[7].coalescer.waiting == 1  # paused: no call of its own for 101
        gate.set()
        answers = await asyncio.gather(*r2, *r3, *r4)
        assert [a.investment_amount for a in answers] == [1, 101, 2, 102, 103, 3]
        assert [a for n, a in db.sent if n == "invest-wait"] == [[100]]
        assert db.sent[-1] == ("invest-batch", [101, 102, 103, 3])
        assert invests.held_products == 0 and invests.rejoined == 1
        assert (await invests.invest(7, 5, 104)).outcome == "done"
        assert db.sent[-1] == ("invest-batch", [104])

    asyncio.run(scenario())


def test_a_rejoining_product_s_request_past_its_deadline_is_answered_503_not_sent() -> None:
    """A request taken back from a held product's queue after its deadline is answered 503
    when it rejoins the shared queue, and never sent."""

    async def scenario() -> None:
        db = InvestCallDatabase()
        db.held = {7}
        gate = gated(db)
        invests = batcher(db, db_acquire_timeout=0.3)
        r1 = asyncio.create_task(invests.invest(7, 1, 100))
        await until(lambda: ("invest-wait", [100]) in db.sent)
        r2 = [asyncio.create_task(invests.invest(g, 2, a)) for g, a in ((1, 1), (7, 101))]
        await until(lambda: invests._held[7].coalescer.waiting == 1)
        gate.clear()
        r3 = asyncio.create_task(invests.invest(1, 3, 2))
        await until(lambda: ("invest-batch", [2]) in db.sent)
        db.held = set()
        db.unheld.set()
        assert (await r1).investment_amount == 100
        await asyncio.sleep(0.4)  # 101's deadline passes while it waits, paused
        gate.set()
        first, late = await asyncio.gather(*r2, return_exceptions=True)
        assert getattr(first, "investment_amount", first) == 1
        assert isinstance(late, DatabaseUnavailable), late
        assert (await r3).investment_amount == 2
        assert all(101 not in amounts for _, amounts in db.sent)

    asyncio.run(scenario())


def test_invest_calls_are_spaced_under_load_and_a_lone_invest_is_not() -> None:
    """INVEST_CALL_SPACING_SECONDS reaches the shared call: invests that overlap wait for the
    spacing after the previous call's start and go together; one at a time they go at once."""

    async def scenario() -> None:
        spacing = 0.05
        db = InvestCallDatabase()
        invests = batcher(db, invest_call_spacing_seconds=spacing, invest_call_spacing_arrivals=1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for user in range(1, 6):  # one at a time, as fast as the fake answers
            assert (await invests.invest(1, user, 10)).outcome == "done"
        assert db.calls == [1] * 5
        assert loop.time() - started < spacing  # none waited
        pair = [invests.invest(1, user, 10) for user in (6, 7)]
        assert [r.outcome for r in await asyncio.gather(*pair)] == ["done", "done"]
        after_pair = loop.time()  # just after the pair's call started (the fake answers at once)
        trickle = [invests.invest(1, user, 10) for user in (8, 9, 10)]
        await asyncio.gather(*trickle)
        assert db.calls == [1] * 5 + [2, 3]  # the three waited together
        assert loop.time() - after_pair >= spacing / 2  # for the spacing, not at once

    asyncio.run(scenario())
