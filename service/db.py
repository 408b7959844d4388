"""The database gateway: a psqlpy pool per worker, a bounded acquire, named prepared statements,
and the connections of answered calls kept for the next call."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any, NamedTuple, Protocol, runtime_checkable

from psqlpy import Connection, ConnectionPool, QueryResult
from psqlpy.exceptions import Error as PsqlpyError

from service.settings import Settings
from service.sql import queries

log = logging.getLogger("service.db")


class DatabaseUnavailable(Exception):
    """No connection within the acquire timeout, or the database failed the statement: nothing
    was done, so the request may be retried as it is."""


class StatementRefused(DatabaseUnavailable):
    """The server refused the statement with an ERROR (it was rolled back, so nothing was done)
    for a reason that may lie in one request's values: a coalesced call is split and retried
    without it (service/coalesce.py). Timeouts and cancellations are not this: they say nothing
    about any one request."""


class LockNotAvailable(DatabaseUnavailable):
    """The statement waited longer than its lock_timeout for a row lock; rolled back."""


class OutcomeUnknown(Exception):
    """A writing statement was sent, then its answer was lost (the connection broke, or the
    call timed out while it ran): it may or may not have been committed."""


# A statement the server refused with an ERROR was rolled back (each runs in its own transaction);
# any other failure after sending (FATAL, a closed socket, a timeout) leaves the outcome unknown.
_SERVER_ERROR = "db error: ERROR:"
# ERRORs that depend on time or on other sessions, not on the statement's values.
_TRANSIENT = ("canceling statement due to", "deadlock detected", "could not serialize")
_LOCK_TIMEOUT = "canceling statement due to lock timeout"


def connection_options(settings: Settings) -> str:
    """Session settings every connection starts with: the display zone and ISO dates (a page's
    and an event's dates are rendered by a cast to text, whose form DateStyle decides), a
    statement bound, commits that return only once their WAL is flushed (an acknowledged
    investment survives a crash, whatever the server's or the role's default;
    service/ops/durability.py checks the rest), and generic plans: the statements' plans do not
    depend on their parameters, and planning them anew for each call (PostgreSQL's default for
    the first calls and whenever a custom plan looks cheaper) cost more CPU than running them
    (invest_many at 1 request per call: 1,273 µs of PostgreSQL CPU with custom plans, 543 µs
    generic); and DB_SESSION_ROLE, the role a superuser or owner DATABASE_URL serves as
    (service/ops/roles.py `session_role`)."""
    statement_ms = max(1, int(settings.db_statement_timeout * 1000))
    options = (
        f"-c TimeZone={settings.timezone} -c DateStyle=ISO,YMD -c statement_timeout={statement_ms}"
        " -c synchronous_commit=on -c plan_cache_mode=force_generic_plan"
    )
    if settings.db_session_role is not None:  # a privileged login serves as the service role
        options += f" -c role={settings.db_session_role}"
    return options


def open_pool(settings: Settings, size: int, url: str | None = None) -> ConnectionPool:
    """A pool on `url` (default DATABASE_URL)."""
    dsn = url or settings.database_url
    if dsn is None:
        raise ValueError("DATABASE_URL is not set")
    return ConnectionPool(
        dsn=dsn,
        max_db_pool_size=size,
        options=connection_options(settings),
        application_name="investment-service",
        connect_timeout_sec=max(1, int(settings.db_acquire_timeout + 0.999)),
        tcp_user_timeout_sec=max(1, int(settings.db_statement_timeout + 1)),
    )


@runtime_checkable
class Queries(Protocol):
    """What the use cases ask of a database: the rows of a named statement of sql/queries.sql,
    and closing it. `Database` answers for PostgreSQL; tests/fakes.py answers in memory."""

    async def rows(
        self, name: str, params: list[Any] | None = None, *, writes: bool = False
    ) -> list[tuple[Any, ...]]:
        """The statement's rows; DatabaseUnavailable when nothing was done, and with `writes`,
        OutcomeUnknown when a statement was sent and its answer lost."""
        ...

    def close(self) -> None: ...


# How long after its last answer a kept connection may serve the next call (Database): under
# load a worker's calls follow each other within milliseconds.
KEEP_SECONDS = 0.05


class PoolStatus(NamedTuple):
    """A pool's sizes: its bound, the connections open, those free for a call, the callers
    waiting for one."""

    max_size: int
    size: int
    available: int
    waiting: int


class Timings(Protocol):
    """Where a pool's calls are timed (service/metrics.py CallTimes)."""

    def acquired(self, seconds: float) -> None: ...

    def called(self, name: str, seconds: float) -> None: ...


class Database:
    """Runs the named statements of sql/queries.sql; every failure becomes DatabaseUnavailable.
    With `timings` set, each call's wait for a connection and its statement are timed."""

    timings: Timings | None = None

    def __init__(self, settings: Settings, pool_size: int, url: str | None = None) -> None:
        self.pool = open_pool(settings, pool_size, url)
        # The connections of answered calls, kept checked out for the next call, with when
        # they answered, most recent last. Taking one from psqlpy's pool is a round trip through
        # its Tokio threads (a wake-up each way) before the statement's own: 55-80 µs of a
        # worker's CPU per call (docs/performance.md "Kept connections"). Still bounded by the
        # pool: a call takes a kept one first and the pool's only when none is left. A kept
        # connection serves only within KEEP_SECONDS of its last answer: psqlpy cannot tell
        # whether the server has closed one (its is_closed() says whether close() was called),
        # while its pool checks the socket before it hands one out, so a call after a restart,
        # a failover or an idle timeout gets a live connection (and a writing call that finds
        # the database gone is answered "nothing was done", not "outcome unknown"). One that
        # failed or timed out goes back to the pool; so does every one while calls wait for
        # the pool (it is exhausted): they get what answered calls give back.
        self._kept: list[tuple[Connection, float]] = []
        self._acquiring = 0  # calls waiting for psqlpy's pool: they get what calls give back
        self._queries = queries()
        self._acquire_timeout = settings.db_acquire_timeout
        self._prepared = settings.db_prepared_statements
        # A backstop for a database that stops answering altogether; statement_timeout (server
        # side) normally ends a slow statement first.
        self._call_timeout = settings.db_statement_timeout + 1.0

    async def rows(
        self, name: str, params: list[Any] | None = None, *, writes: bool = False
    ) -> list[tuple[Any, ...]]:
        """The statement's rows. With `writes`, a failure after sending raises OutcomeUnknown."""
        # asyncio.timeout, not wait_for: no extra Task per call (a profiled hot spot).
        started = perf_counter()
        conn = self._kept_connection(started)
        if conn is None:
            self._acquiring += 1
            try:
                async with asyncio.timeout(self._acquire_timeout):
                    conn = await self.pool.connection()
            except TimeoutError:
                raise DatabaseUnavailable(
                    f"no database connection within {self._acquire_timeout:g}s"
                ) from None
            except PsqlpyError as error:
                log.warning("database connection failed: %s", error)
                raise DatabaseUnavailable("database connection failed") from error
            finally:
                self._acquiring -= 1
        acquired = perf_counter()
        answered = False
        timings = self.timings
        if timings is not None:
            timings.acquired(acquired - started)
        query = self._queries[name]
        try:
            async with asyncio.timeout(self._call_timeout):
                if self._prepared:
                    result = await conn.execute(query, params, prepared=True)
                else:
                    result = await self._unprepared(conn, query, params)
            answered = True
        except TimeoutError:
            if writes:
                raise OutcomeUnknown(f"database did not answer {name}") from None
            raise DatabaseUnavailable(f"database did not answer {name}") from None
        except PsqlpyError as error:
            text = str(error)
            if _LOCK_TIMEOUT in text:  # expected while a product is held: not worth a warning
                raise LockNotAvailable(f"{name} waited too long for a row lock") from error
            log.warning("statement %s failed: %s", name, error)
            if _SERVER_ERROR not in text:
                if writes:
                    raise OutcomeUnknown(f"the answer to {name} was lost") from error
                raise DatabaseUnavailable(f"statement {name} failed") from error
            if any(transient in text for transient in _TRANSIENT):
                raise DatabaseUnavailable(f"statement {name} failed") from error
            raise StatementRefused(f"statement {name} was refused") from error
        finally:
            done = perf_counter()
            if answered and not self._acquiring:
                self._kept.append((conn, done))
            else:  # to the pool: a waiting call's, or checked before it is handed out again
                conn.close()
            if timings is not None:
                timings.called(name, done - acquired)
        return result.result(as_tuple=True)

    def _kept_connection(self, now: float) -> Connection | None:
        """The most recently answered kept connection if it answered within KEEP_SECONDS of
        `now` (perf_counter), else None; the older ones go back to the pool."""
        kept = self._kept
        if kept and now - kept[-1][1] <= KEEP_SECONDS:
            return kept.pop()[0]
        self._return_kept()
        return None

    def _return_kept(self) -> None:
        """Every kept connection back to the pool."""
        while self._kept:
            self._kept.pop()[0].close()

    @staticmethod
    async def _unprepared(conn: Connection, query: str, params: list[Any] | None) -> QueryResult:
        # DB_PREPARED_STATEMENTS=false, for PgBouncer's transaction pooling before 1.21. psqlpy
        # still parses a named statement (for the parameter types), drops it and runs the query
        # unnamed: three exchanges that must reach the same server connection, so they share
        # one explicit transaction.
        async with conn.transaction() as transaction:
            return await transaction.execute(query, params, prepared=False)

    def status(self) -> PoolStatus:
        """The pool's sizes for the metrics' gauges, a kept connection counted as available."""
        status = self.pool.status()
        return PoolStatus(
            status.max_size, status.size, status.available + len(self._kept), status.waiting
        )

    def close(self) -> None:
        self._return_kept()
        self.pool.close()


class Databases(NamedTuple):
    """The databases one worker serves with (service/worker.py closes them when it stops)."""

    main: Queries  # invests, pages, the admin API, the chores; the list unless `reads` serves it
    reads: Queries  # the product list: READ_DATABASE_URL's standby, or `main` again
    ready: Queries  # /readyz alone, outside the request pool (service/readiness.py)
    pool_status: Callable[[], Any]  # the request pool's sizes, sampled by the metrics' gauges


def open_databases(settings: Settings) -> Databases:
    """The worker's PostgreSQL pools: DB_POOL_SIZE's share, and psqlpy's smallest pool (2) for
    the standby and the readiness probe (checks share one probe, so one connection opens)."""
    main = Database(settings, settings.pool_share())
    reads = (
        Database(settings, 2, settings.read_database_url) if settings.read_database_url else main
    )
    return Databases(main, reads, Database(settings, 2), main.status)


# Lock-table entries one invest_many() call takes besides its keys: every relation it locks is one
# entry (all modes together) once PostgreSQL moves its fast-path locks into the shared table (it
# does when another session asks for a strong lock, e.g. CREATE INDEX), and its transaction id is
# one more. pg_locks shows 18 taken, 19 while the outbox of sql/migrations/011_outbox.sql is
# written (its table and its relay row's table always, its sequence then): the tables it reads
# or writes (the investor positions among them), the indexes it reads through or arbitrates an
# upsert on, the ledger's id sequence and the transaction id (PostgreSQL does not lock an index
# it only inserts into). 20 leaves room for one more.
# tests/integration/test_key_lock_budget.py counts them again on every path of a call.
INVEST_MANY_OWN_LOCKS = 20


# PostgreSQL's own default: what a server is assumed to allow until the worker has read it.
DEFAULT_MAX_LOCKS_PER_TRANSACTION = 64


def key_lock_budget(max_locks_per_transaction: int) -> int:
    """How many keyed requests one invest call may carry: max_locks_per_transaction less the
    entries the call takes for itself (INVEST_MANY_OWN_LOCKS), and at least 1.

    PostgreSQL sizes its shared lock table, for the whole server, at max_locks_per_transaction ×
    (max_connections + max_prepared_transactions) entries (more, in fact: its background processes
    count as connections), so that every session can hold max_locks_per_transaction on average;
    an advisory lock is never fast-path, so each key takes an entry until its call commits. A call
    that stays within max_locks_per_transaction therefore never takes more than its connection's
    share, however many calls hold keys at once: at most one per connection, and every instance's
    pool (DB_POOL_SIZE each) and every other session draw on the same max_connections. So the
    budget needs neither the pool size nor the number of instances, and the shares of the
    sessions the service does not open stay theirs. A larger budget (e.g. the table divided among
    the pool's connections only) would be safe only if nothing else used the server, and several
    instances sharing it would multiply it. At least 1: a keyed request must fit in some call,
    and one entry over the average fits in what the background processes leave."""
    return max(1, max_locks_per_transaction - INVEST_MANY_OWN_LOCKS)


async def key_locks_per_call(database: Queries) -> int:
    """The server's key_lock_budget(), read once at start (sql/queries.sql `lock-table-settings`).

    With PostgreSQL's default max_locks_per_transaction (64) a call carries 44 keyed requests;
    the embedded server starts with 520 (service/ops/embedded.py): 500, INVEST_BATCH_MAX."""
    [(per_transaction, connections, prepared)] = await database.rows("lock-table-settings")
    budget = key_lock_budget(per_transaction)
    log.info(
        "lock table: %d entries (max_locks_per_transaction %d × %d connections and prepared"
        " transactions); an invest call carries at most %d keyed requests",
        per_transaction * (connections + prepared), per_transaction, connections + prepared,
        budget,
    )  # fmt: skip
    return budget
