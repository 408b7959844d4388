"""The outbox relay: every accepted investment and cancellation to NATS JetStream, exactly once,
in event_id order (docs/reliability.md "Events: the outbox and its relay").

`python -m service relay` runs it; `python -m service run` starts that process next to granian's
workers when NATS_URL is set (service/ops/serving.py), so every instance runs one. One of them is
active per database: the one whose session holds the relay's advisory lock (sql/queries.sql
`relay-lock`); the others stand by and try again every second. The lock goes with the session,
so a relay whose process is killed or whose connection is cut hands over within a second, and
every statement of the active relay runs on that session: a relay that lost it can no longer
number or delete anything.

The active relay, in rounds (`relay-round`, one statement each, at most every
RELAY_POLL_SECONDS while it keeps up, at once while a backlog is left):
  1. deletes what JetStream acknowledged (by `seq`, the outbox rows whose every event it holds:
     a row holds an invest call's events; and the numbering rounds JetStream holds wholly);
  2. when every numbered event is in JetStream, numbers the outbox rows it can see as one round
     (one row recording their `seq` values, where each one's events end and the first event_id;
     all committed, so event_id order is commit order), and answers the outbox rows holding
     the next FETCH_BATCHES x RELAY_BATCH events after the stream's last, in event_id order;
     the relay renders their events (`events_of`: subject, JSON body);
  3. publishes them, RELAY_BATCH at a time, Nats-Msg-Id = event_id; every message but the first
     after connecting carries Nats-Expected-Last-Msg-Id = the event before it, so JetStream
     stores a message only right after its predecessor (a message lost in a broken connection
     cannot be overtaken by the next one) and drops one it already has (deduplication is
     checked first); so the last message's publish ack acknowledges the batch.
After connecting it reads the last event_id the stream holds, and its next round deletes every
row up to it: an event acknowledged before a crash, whose row was not deleted, is not published
again however long ago that was. So the stream must hold this database's events only: the relay
creates it with the database's stream key in its description, and publishes into no other; and
it numbers nothing while the stream is ahead of the database's counter (a database restored to
an earlier point would hand out numbers the stream holds). NATS down: the relay backs off (up
to 5 s between tries) and the outbox grows; the service answers as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import psqlpy
from psqlpy.exceptions import Error as PsqlpyError

from service.db import connection_options
from service.metrics import RelayMetrics
from service.settings import Settings
from service.sql import queries

log = logging.getLogger("service.relay")

STREAM = "INVESTMENTS"
STANDBY_SECONDS = 1.0  # a standing-by relay tries the lock this often
ANNOUNCE_SECONDS = 5.0  # the active relay's heartbeat (investment_event_relay.seen_at)
BACKLOG_SECONDS = 1.0  # the backlog gauges are refreshed this often
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
# The relay's statements: numbering after a long stop can touch many rows at once.
STATEMENT_TIMEOUT_MS = 60_000
# Events a round's statement answers, in publish batches of RELAY_BATCH: a backlog after an
# outage is read in few statements.
FETCH_BATCHES = 20


class Event(NamedTuple):
    """An event as the relay publishes it (docs/api.md "Events"): `events_of` renders it."""

    event_id: int
    subject: str
    body: str  # the message's JSON body
    recorded_at: float  # epoch seconds


# An event's JSON body (docs/api.md "Events"); `at` as the API shows it.
BODY = (
    '{"event_id":%d,"type":"%s","investment_id":%d,"user_id":%d,"goods_id":%d,"amount":%d,'
    '"at":"%s","current_investing_amount":%d,"investor_count":%d}'
)


def events_of(rows: Sequence[tuple[Any, ...]], after: int, limit: int) -> list[Event]:
    """The events of `relay-round`'s rows (each: its first event_id, type, `at` rendered, recorded
    at, the events' columns as arrays), in event_id order: those after `after`, at most `limit`."""
    events: list[Event] = []
    last = after + limit
    for first_id, type_, at, recorded_at, *columns in rows:
        subject = "investments." + type_
        event_id = first_id
        for investment_id, user_id, goods_id, amount, current, investors in zip(
            *columns, strict=True
        ):
            if event_id > after:
                if event_id > last:
                    return events
                body = BODY % (event_id, type_, investment_id, user_id, goods_id, amount, at,
                               current, investors)  # fmt: skip
                events.append(Event(event_id, subject, body, recorded_at))
            event_id += 1
    return events


class StreamMismatch(Exception):
    """INVESTMENTS holds another database's events: nothing is published into it."""


class StreamAhead(Exception):
    """The stream holds event_ids this database never handed out: the database went back in
    time (restored to an earlier point, or a failover that lost commits). Publishing would
    skip its next events as stored; nothing is published until an operator decides."""

    def __init__(self, stored: int, numbered: int) -> None:
        super().__init__(
            f"the JetStream stream {STREAM} holds events up to {stored}, this database handed"
            f" out numbers up to {numbered} only (restored to an earlier point?): nothing is"
            " published until investment_event_relay.last_event_id is set to at least"
            f" {stored} (docs/reliability.md, 'Events')"
        )


class PublishFailed(Exception):
    """A round was not wholly acknowledged: the connection to NATS is dropped and made again."""


class Backoff:
    """Growing, jittered waits while a dependency is down; reset by a success."""

    def __init__(self) -> None:
        self.wait = BACKOFF_FIRST

    def reset(self) -> None:
        self.wait = BACKOFF_FIRST

    async def sleep(self) -> None:
        await asyncio.sleep(self.wait * random.uniform(0.5, 1.0))
        self.wait = min(BACKOFF_MAX, self.wait * 2)


class Session:
    """The relay's own database session; its statements by name (sql/queries.sql)."""

    def __init__(self, conn: psqlpy.Connection) -> None:
        self.conn = conn
        self._queries = queries()

    @classmethod
    async def open(cls, settings: Settings) -> Session:
        # No JIT: `relay-round`'s generic plan is costed above jit_above_cost, and compiling
        # it took ~50 ms of the backend's CPU every round (a round of 500 events runs in ~4 ms
        # without). No sequential scan where an index serves: the plan is made once (generic),
        # maybe while the outbox is small, and must find the outbox's recent rows by its `xid`
        # index however many dead rows the outbox holds until autovacuum's next pass.
        options = connection_options(settings) + (
            f" -c statement_timeout={STATEMENT_TIMEOUT_MS} -c jit=off -c enable_seqscan=off"
        )
        conn = await psqlpy.connect(
            dsn=settings.relay_url,
            options=options,
            application_name=f"investment-relay-{os.getpid()}",  # which process holds it
            connect_timeout_sec=max(1, int(settings.db_acquire_timeout + 0.999)),
        )
        return cls(conn)

    async def rows(self, name: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        async with asyncio.timeout(STATEMENT_TIMEOUT_MS / 1000 + 5):
            result = await self.conn.execute(self._queries[name], params, prepared=True)
        return result.result(as_tuple=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


def stream_description(key: str) -> str:
    """The stream's description: the database whose events it holds (investment_event_relay
    .stream_key)."""
    return f"investment events of database {key}"


def stream_config(settings: Settings, key: str) -> Any:
    """INVESTMENTS as the relay creates it: file-backed, kept max-age hours (limits retention:
    consumers read it at their own pace, any number of them), replicated as configured, and a
    duplicate window longer than a round's publish timeout (a round that timed out is published
    again at once; a later restart starts after the stream's last event_id instead)."""
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

    return StreamConfig(
        name=STREAM,
        description=stream_description(key),
        subjects=["investments.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        num_replicas=settings.nats_stream_replicas,
        max_age=settings.nats_stream_max_age_hours * 3600.0,
        duplicate_window=settings.nats_duplicate_window_seconds,
    )


class Relay:
    def __init__(self, settings: Settings, metrics: RelayMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._backlog_at = 0.0

    async def run(self) -> None:
        """Forever: connect, stand by or lead; a lost database session is made again."""
        backoff = Backoff()
        while True:
            session = None
            try:
                session = await Session.open(self.settings)
                backoff.reset()
                while True:
                    [(held,)] = await session.rows("relay-lock")
                    await self._refresh_backlog(session, force=True)
                    if held:
                        log.info("relay active: this process publishes the outbox")
                        await self._lead(session)
                    await asyncio.sleep(STANDBY_SECONDS * random.uniform(0.8, 1.2))
            except (PsqlpyError, TimeoutError, OSError) as error:
                log.warning("relay's database session failed (%s): reconnecting", error)
            finally:
                self.metrics.active.set(0)
                self.metrics.nats_up.set(0)
                if session is not None:
                    session.close()
            await backoff.sleep()

    async def _refresh_backlog(self, session: Session, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._backlog_at >= BACKLOG_SECONDS:
            self._backlog_at = now
            [(count, oldest)] = await session.rows("relay-backlog")
            self.metrics.backlog(count, oldest)

    async def _lead(self, session: Session) -> None:
        """Holds the lock until the session fails (raises)."""
        self.metrics.active.set(1)
        [(key,)] = await session.rows("relay-announce")
        announced = time.monotonic()
        publisher: Publisher | None = None
        backoff = Backoff()
        nats_down = False  # said once, until NATS answers again
        began = time.monotonic()  # the last round's start
        caught_up = True  # the last round answered fewer events than it could
        try:
            while True:
                if time.monotonic() - announced >= ANNOUNCE_SECONDS:
                    await session.rows("relay-announce")
                    announced = time.monotonic()
                await self._refresh_backlog(session)
                if publisher is None:
                    try:
                        publisher = await Publisher.open(self.settings, key)
                    except StreamMismatch as error:  # an operator must act: said every time
                        log.error("%s", error)
                        await backoff.sleep()
                        continue
                    except Exception as error:  # NATS down or refusing: the outbox waits
                        (log.debug if nats_down else log.warning)(
                            "NATS unreachable (%s): retrying", error
                        )
                        nats_down = True
                        await backoff.sleep()
                        continue
                    [(numbered,)] = await session.rows("relay-counter")
                    if publisher.stored > numbered:  # an operator must act: said every time
                        log.error("%s", StreamAhead(publisher.stored, numbered))
                        await publisher.close()
                        publisher = None
                        await backoff.sleep()
                        continue
                    if nats_down:
                        log.info("NATS reachable again: publishing")
                        nats_down = False
                    self.metrics.nats_up.set(1)
                # A round at most every RELAY_POLL_SECONDS while the relay keeps up (under load:
                # rounds of many events, each paying the statement and the ack once); the next
                # at once while a backlog is left.
                if caught_up:
                    wait = began + self.settings.relay_poll_seconds - time.monotonic()
                    await asyncio.sleep(max(0.0, wait))
                began = time.monotonic()
                # Numbers only once the stream is known not to be ahead of this database.
                fetch = FETCH_BATCHES * self.settings.relay_batch
                rows = await session.rows("relay-round", [publisher.stored, fetch])
                events = events_of(rows, publisher.stored, fetch)
                try:
                    for start in range(0, len(events), self.settings.relay_batch):
                        batch = events[start : start + self.settings.relay_batch]
                        self.metrics.acknowledged(await publisher.publish(batch))
                except PublishFailed as error:
                    log.warning("publishing failed (%s): reconnecting to NATS", error)
                    nats_down = True
                    self.metrics.nats_up.set(0)
                    await publisher.close()
                    publisher = None
                    await backoff.sleep()
                    continue
                backoff.reset()
                caught_up = len(events) < fetch
        finally:
            if publisher is not None:
                await publisher.close()


def chained_headers(event: Event) -> dict[str, str]:
    """A chained message's headers: its Nats-Msg-Id and, as its expected predecessor, the event
    before it (what `chained_frame` writes, for the round's last message, sent by nats-py)."""
    return {
        "Nats-Msg-Id": str(event.event_id),
        "Nats-Expected-Last-Msg-Id": str(event.event_id - 1),
    }


def chained_frame(event: Event) -> bytes:
    """The NATS protocol frame of a chained message (HPUB, no reply subject): its Nats-Msg-Id
    and, as its expected predecessor, the event before it. A body is a few hundred bytes, far
    below any server's max_payload."""
    header = b"NATS/1.0\r\nNats-Msg-Id: %d\r\nNats-Expected-Last-Msg-Id: %d\r\n\r\n" % (
        event.event_id,
        event.event_id - 1,
    )
    body = event.body.encode()
    return b"HPUB %s %d %d\r\n%s%s\r\n" % (
        event.subject.encode(),
        len(header),
        len(header) + len(body),
        header,
        body,
    )


class Publisher:
    """One connection to NATS; `stored` is the last event_id JetStream holds, as far as known."""

    def __init__(self, nc: Any, js: Any, settings: Settings, stored: int) -> None:
        self.nc = nc
        self.js = js
        self.timeout = settings.nats_publish_timeout
        self.stored = stored
        self.chained = False  # the stream's last message is `stored`, as this connection saw

    @classmethod
    async def open(cls, settings: Settings, key: str) -> Publisher:
        import nats
        from nats.js.errors import NotFoundError

        assert settings.nats_url is not None

        async def quiet(error: Exception) -> None:  # logged by the relay when it matters
            log.debug("NATS: %s", error)

        # One try of each server (nats-py tries 60 times by default, 2 s apart, even when
        # reconnecting is off); the relay's own backoff paces the next try.
        async with asyncio.timeout(2 * len(settings.nats_url.split(",")) + 2):
            nc = await nats.connect(
                servers=settings.nats_url.split(","),
                connect_timeout=2,
                allow_reconnect=False,  # a broken connection ends the round; the relay reconnects
                max_reconnect_attempts=1,
                reconnect_time_wait=0.05,
                error_cb=quiet,
                name="investment-relay",
                skip_subject_validation=True,  # the subjects are the relay's own
            )
        try:
            js = nc.jetstream(
                timeout=settings.nats_publish_timeout,
                publish_async_max_pending=max(4000, settings.relay_batch),
            )
            try:
                info = await js.stream_info(STREAM)
            except NotFoundError:
                info = await js.add_stream(stream_config(settings, key))
                log.info("created the JetStream stream %s: %s", STREAM, info.config)
            if info.config.description != stream_description(key):
                raise StreamMismatch(
                    f"the JetStream stream {STREAM} holds other events"
                    f" ({info.config.description!r}, not {stream_description(key)!r}):"
                    " nothing is published until it is removed (`nats stream rm"
                    f" {STREAM}`) or NATS_URL names this database's NATS"
                )
            stored = await last_event_id(js, info.state.last_seq)
        except BaseException:
            await nc.close()
            raise
        return cls(nc, js, settings, stored)

    async def publish(self, events: Sequence[Event]) -> list[float]:
        """Publish `events` (consecutive event_ids after `stored`) and await the last one's ack;
        each one's latency from its outbox row. PublishFailed unless all were stored (or were
        duplicates of stored ones).

        Only the last message of a round asks for an ack (and the first after connecting, which
        goes alone): every other one carries Nats-Expected-Last-Msg-Id = its predecessor, so
        JetStream stores it only right after its predecessor, and the last one's ack says that
        the whole chain before it is stored. A message lost or refused breaks the chain: every
        later one is refused, the last one's ack is an error, the round is published again.
        The messages between are written as one buffer of ready protocol frames
        (`chained_frame`)."""
        try:
            if not self.chained:  # the first after connecting goes alone
                first, events_left = events[0], events[1:]
                await self._acked(first, {"Nats-Msg-Id": str(first.event_id)})
                self.chained = True
            else:
                events_left = events
            if events_left:
                *between, last = events_left
                if between:
                    await self._send_frames(b"".join(map(chained_frame, between)))
                await self._acked(last, chained_headers(last))
        except Exception as error:
            raise PublishFailed(f"{type(error).__name__}: {error}") from error
        now = time.time()
        self.stored = events[-1].event_id
        return [now - event.recorded_at for event in events]

    async def _acked(self, event: Event, headers: dict[str, str]) -> None:
        """Publish `event` asking for JetStream's ack, and wait for the ack at most the publish
        timeout (a timeout cancels the ack's future)."""
        ack = await self.js.publish_async(event.subject, event.body.encode(), headers=headers)
        async with asyncio.timeout(self.timeout):
            await ack

    async def _send_frames(self, frames: bytes) -> None:
        """Queue protocol frames on the connection, behind what it holds and ahead of the
        round's last message. nats-py's `publish()` builds and queues one message at a time
        (its header checks, ~8 µs a message in a busy microbenchmark); it has no call for many,
        so this uses the queue publish() feeds (`_send_command`; nats-py is pinned by uv.lock,
        and the events tests publish through it to a real nats-server). Like publish(), refused
        once the connection is closed (the relay connects without reconnecting)."""
        if not self.nc.is_connected:
            raise ConnectionError("the connection to NATS is closed")
        await self.nc._send_command(frames)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.close()


async def last_event_id(js: Any, last_seq: int) -> int:
    """The Nats-Msg-Id of the stream's last message (0: none, or not one of ours)."""
    from nats.js.errors import NotFoundError

    if not last_seq:
        return 0
    try:
        message = await js.get_msg(STREAM, last_seq)
    except NotFoundError:
        return 0
    value = (message.headers or {}).get("Nats-Msg-Id", "")
    return int(value) if value.isdigit() else 0


async def run_until_stopped(
    relay: Callable[[], Awaitable[None]], signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    """Run `relay` until SIGTERM or SIGINT."""
    task = asyncio.ensure_future(relay())
    loop = asyncio.get_running_loop()
    for number in signals:
        loop.add_signal_handler(number, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
