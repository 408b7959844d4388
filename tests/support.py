"""Test helpers: a real PostgreSQL per test session and real service processes on loopback."""

from __future__ import annotations

import gc
import http.client
import itertools
import json
import os
import random
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest

from bench.limits import wrk_available
from harness import ROOT as ROOT
from harness import postgres as _postgres
from harness import processes as _processes
from harness.postgres import pg_tool, psql
from harness.sockets import free_port as free_port


def new_database(server_url: str) -> str:
    """Create an empty database on the server and return its URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    psql(server_url, f"CREATE DATABASE {name}")
    return _postgres.with_database(server_url, name)


def drop_database(server_url: str, url: str) -> None:
    name = url.rpartition("/")[2]
    psql(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# The least-privileged login the tests' services connect as (a member of investment_service,
# sql/migrations/006_service_role.sql); created by migrate() on the test server when missing.
SERVICE_USER = "investment_app"
SERVICE_PASSWORD = "investment-app-test"


def service_url(owner_url: str) -> str:
    """The same database, as the service's role instead of the owner."""
    from service.ops.roles import with_user

    return with_user(owner_url, SERVICE_USER, SERVICE_PASSWORD)


class ServiceProcess(_processes.ServiceProcess):
    """`python -m service run`, started at once; given the owner's URL, it connects as the
    service role (migrations, if any, as the owner)."""

    def __init__(self, database_url: str, workers: int = 1, **settings: str) -> None:
        super().__init__(
            {
                "DATABASE_URL": service_url(database_url),
                "MIGRATION_DATABASE_URL": database_url,
                "WORKERS": str(workers),
                "LOG_LEVEL": "WARNING",
                **settings,
            }
        )
        self.start()


@contextmanager
def running_service(
    database_url: str, workers: int = 1, **settings: str
) -> Iterator[ServiceProcess]:
    with ServiceProcess(database_url, workers, **settings) as service:
        yield service


@contextmanager
def running_services(
    database_url: str, count: int, workers: int = 1, **settings: str
) -> Iterator[list[ServiceProcess]]:
    """`count` alike services on one database, started together (their start-ups overlap) and
    each ready before this yields; all stopped on the way out."""
    with ExitStack() as stack:
        services = []
        for _ in range(count):
            service = ServiceProcess(database_url, workers, **settings)  # started
            stack.callback(service.stop)
            services.append(service)
        for service in services:
            service.wait_ready()
        yield services


def create_goods(
    database_url: str,
    total: int = 1_000_000,
    *,
    title: str = "테스트 상품",
    status: bool = True,
    started_at: str = "now() - interval '1 day'",
    finished_at: str = "now() + interval '1 day'",
) -> int:
    """Insert a product directly, as operators do, and return its goods_id."""
    quoted = title.replace("'", "''")
    return int(
        psql(
            database_url,
            "INSERT INTO investment_goods"
            " (title, total_investing_amount, status, started_at, finished_at)"
            f" VALUES ('{quoted}', {total}, {str(status).lower()}, {started_at}, {finished_at})"
            " RETURNING goods_id",
        )
    )


def ledger_sum(database_url: str, goods_id: int) -> int:
    return int(
        psql(
            database_url,
            "SELECT coalesce(sum(user_investing_amount), 0) FROM user_investment_goods"
            f" WHERE goods_id = {goods_id}",
        )
    )


def ledger_by_id(database_url: str, where: str = "true") -> dict[int, tuple[int, int, int]]:
    """The ledger rows that match `where`: investment id -> (user id, goods id, amount)."""
    rows = psql(
        database_url,
        "SELECT id, user_id, goods_id, user_investing_amount FROM user_investment_goods"
        f" WHERE {where}",
    )
    return {
        int(row_id): (int(user), int(goods_id), int(amount))
        for row_id, user, goods_id, amount in (line.split("\t") for line in rows.splitlines())
    }


def counters(database_url: str, goods_id: int) -> tuple[int, int]:
    """(current_investing_amount, investor_count) as stored on the product row."""
    current, investors = psql(
        database_url,
        "SELECT current_investing_amount, investor_count FROM investment_goods"
        f" WHERE goods_id = {goods_id}",
    ).split("\t")
    return int(current), int(investors)


def ledger_dates(database_url: str, user: int, zone: str = "UTC") -> str:
    """The user's ledger dates in the contract's form in `zone`, rendered by to_char() (whatever
    the session's DateStyle), one line each."""
    return psql(
        database_url,
        f"SELECT to_char(invest_date AT TIME ZONE '{zone}', 'YYYY-MM-DD HH24:MI:SS')"
        f" FROM user_investment_goods WHERE user_id = {user} ORDER BY id",
    )


@contextmanager
def database_date_style(database_url: str, style: str) -> Iterator[None]:
    """The database's own DateStyle set to `style` for the sessions that start meanwhile (the
    server's default overridden, as a deployer's could be), reset afterwards."""
    name = database_url.partition("?")[0].rpartition("/")[2]
    psql(database_url, f"ALTER DATABASE {name} SET DateStyle = '{style}'")
    try:
        yield
    finally:
        psql(database_url, f"ALTER DATABASE {name} RESET DateStyle")


def cancellation_rows(database_url: str, investment_id: int) -> int:
    """How many cancellations name the investment (0 or 1: its primary key)."""
    return int(
        psql(
            database_url,
            "SELECT count(*) FROM user_investment_cancellation"
            f" WHERE investment_id = {investment_id}",
        )
    )


_users = itertools.count(random.randrange(10**9, 2 * 10**9, 10**6))


def fresh_user() -> int:
    """A user id that no other test of this session uses."""
    return next(_users)


def kept_connection(base_url: str, gaps: tuple[float, ...], goods_id: int, user: int) -> list[str]:
    """What a pooled client meets: one kept HTTP/1.1 connection (http.client, as a pool holds
    it) that lists products, then after each of `gaps` seconds idle invests 1,000 in `goods_id`
    on the same connection. One entry a request: its status, or the exception it met (a server
    that closed the idle connection: RemoteDisconnected, a reset or a broken pipe), or "new
    connection" when the client had to open another (which a pool would not notice)."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    met: list[str] = []
    try:
        conn.request("GET", "/v1/api/investment/goods?started_at=2000-01-01%2000:00:00"
                     "&finished_at=2999-01-01%2000:00:00")  # fmt: skip
        first = conn.getresponse()
        first.read()
        met.append(str(first.status))
        assert conn.sock is not None, "the server closed the connection after its answer"
        local = conn.sock.getsockname()
        for gap in gaps:
            time.sleep(gap)
            try:
                conn.request(
                    "POST", "/v1/api/investment/user/goods",
                    json.dumps({"goodsId": goods_id, "investmentAmount": 1_000}),
                    {"X-USER-ID": str(user), "Content-Type": "application/json"},
                )  # fmt: skip
                answer = conn.getresponse()
                answer.read()
            except (http.client.HTTPException, OSError) as error:
                met.append(type(error).__name__)
                conn.close()
                continue
            same = conn.sock is not None and conn.sock.getsockname() == local
            met.append(str(answer.status) if same else "new connection")
    finally:
        conn.close()
    return met


def raw_request(base_url: str, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send bytes no HTTP client library would send; return (status, response body).

    `head` is the request line and headers without the final blank line; Content-Length and
    Connection: close are added.
    """
    message = head.rstrip(b"\r\n") + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(
        body
    )
    return raw_exchange(base_url, message + body)


def raw_exchange(base_url: str, message: bytes) -> tuple[int, bytes]:
    """Send `message` exactly as given, read until the server closes; (status, response body)."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(message)
        response = bytearray()
        while chunk := conn.recv(65536):
            response += chunk
    status_line, _, rest = bytes(response).partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), payload


def verify_ledger(database_url: str) -> dict[str, int]:
    """Run the ledger verifier (`python -m service verify`); fail on any violation."""
    done = _processes.service_command("verify", settings={"DATABASE_URL": database_url})
    assert done.returncode == 0, f"ledger violations:\n{done.stdout}\n{done.stderr}"
    summary: dict[str, int] = json.loads(done.stdout.splitlines()[-1])
    return summary


def migrate(url: str) -> None:
    """Apply the migrations as the owner and let the service role in (creating its login when
    missing)."""
    _postgres.migrate(url, service_url=service_url(url))


@contextmanager
def migrated_database(server_url: str) -> Iterator[str]:
    """A fresh database with every migration applied, dropped afterwards."""
    url = new_database(server_url)
    try:
        migrate(url)
        yield url
    finally:
        drop_database(server_url, url)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll `condition` every 50 ms until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)


_HOLD_MARK = 7_310_001  # hold_rows' advisory locks: (this, n), apart from the service's own keys


@contextmanager
def collector_paused() -> Iterator[None]:
    """This test process's garbage collector off while it measures the service's latency: a
    full collection stops every request the test has in flight (53 and 67 ms measured in
    test_isolation.py's light load run alone, 60-120 ms in a process that had collected the
    whole suite before tests/conftest.py froze it), which the latencies would count as the
    service's."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _holding_session(
    database_url: str, begin: str, held: str, seconds: float, what: str
) -> tuple[subprocess.Popen[bytes], str]:
    """Another session runs `begin`, then `held` (what it holds), then takes an advisory lock of
    its own mark and sleeps `seconds` in that transaction. Returned once the mark is granted, so
    everything before it is held: the psql process and the pg_locks condition (`FROM ...`) that
    finds the session's backend."""
    mark = random.randrange(1, 2**31)
    holder = subprocess.Popen(
        [pg_tool("psql"), database_url, "-X", "-q", "-c",
         f"{begin} {held} SELECT pg_advisory_xact_lock({_HOLD_MARK}, {mark});"
         f" SELECT pg_sleep({seconds}); COMMIT;"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    session = (
        "FROM pg_locks WHERE locktype = 'advisory' AND granted"
        f" AND classid = {_HOLD_MARK} AND objid = {mark} AND objsubid = 2"
    )
    wait_until(
        lambda: holder.poll() is None and psql(database_url, f"SELECT count(*) {session}") == "1",
        what,
    )
    return holder, session


@contextmanager
def snapshot_held(database_url: str) -> Iterator[None]:
    """Another transaction holds a snapshot taken now (REPEATABLE READ) until the block ends: no
    row version it can see is pruned or vacuumed meanwhile, so a test can inspect the version a
    later update replaced (a page read prunes dead versions when the page is nearly full)."""
    holder, session = _holding_session(
        database_url, "BEGIN ISOLATION LEVEL REPEATABLE READ;", "", 60,
        "a snapshot held by a live snapshot_held session",
    )  # fmt: skip
    try:
        yield
    finally:
        psql(database_url, f"SELECT pg_terminate_backend(pid) {session}")
        holder.wait(10)


def hold_rows(
    database_url: str,
    goods_ids: list[int],
    seconds: float,
    *,
    whole_table: bool = False,
    user_ids: list[int] | None = None,
    like_a_call: bool = False,
) -> subprocess.Popen[bytes]:
    """Another transaction locks the product rows for `seconds` (a stuck operator session);
    returns once the lock is held. Wait for the returned process to release it. With
    `whole_table`, the products table itself (ACCESS EXCLUSIVE): every statement that reads a
    product waits, as on a stuck database. With `user_ids`, those users' investor rows instead
    of products (what a write takes after its products). With `like_a_call`, the transaction
    first takes the limits lock shared, as the service's own invest calls do.

    The holder takes an advisory lock in the statement after its FOR UPDATE: once pg_locks shows
    that lock granted, every row lock is held (the query text is visible before that)."""
    ids = ", ".join(map(str, goods_ids))
    if whole_table:
        lock = "LOCK TABLE investment_goods IN ACCESS EXCLUSIVE MODE;"
    elif user_ids:
        ids = ", ".join(map(str, user_ids))
        lock = f"SELECT 1 FROM investor WHERE user_id IN ({ids}) FOR UPDATE;"
    else:
        lock = f"SELECT 1 FROM investment_goods WHERE goods_id IN ({ids}) FOR UPDATE;"
    limits = "SELECT pg_advisory_xact_lock_shared(limits_lock_key());" if like_a_call else ""
    holder, _ = _holding_session(
        database_url, "BEGIN;", f"{limits} {lock}", seconds,
        f"rows {ids} locked by a live hold_rows session",
    )  # fmt: skip
    return holder


def held_product_waiters(database_url: str) -> list[int]:
    """The service's backends waiting on a lock in a held product's own call (`invest-wait`,
    sql/queries.sql). Not the shared call: it waits at most 50 ms for a row before passing it
    over, and a backend seen in that window is idle in the pool a moment later."""
    out = psql(
        database_url,
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'investment-service'"
        " AND wait_event_type = 'Lock' AND query LIKE '%invest_many($1, $2, $3, $4, NULL, $5)%'",
    )
    return [int(pid) for pid in out.split()]


def cancel_waiters(database_url: str) -> list[int]:
    """The service's backends waiting on a lock inside cancel_investment()."""
    out = psql(
        database_url,
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'investment-service'"
        " AND wait_event_type = 'Lock' AND query LIKE '%cancel_investment(%'",
    )
    return [int(pid) for pid in out.split()]


def this_database_locks(database_url: str, where: str, count: str = "count(*)") -> int:
    """`count` over the pg_locks rows `l` (held or awaited) of this database's sessions that
    match `where`: pg_locks lists the whole cluster's, other tests' databases included."""
    return int(
        psql(
            database_url,
            f"SELECT {count} FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            f" WHERE ({where}) AND a.datname = current_database()",
        )
    )


def lock_waiters(database_url: str) -> int:
    """Sessions of this database waiting for a lock right now (pg_locks: not granted)."""
    return this_database_locks(database_url, "NOT l.granted", "count(DISTINCT l.pid)")


def wait_for_lock_waiters(database_url: str, count: int, timeout: float = 10.0) -> None:
    """Return once at least `count` sessions of this database wait for a lock."""
    wait_until(
        lambda: lock_waiters(database_url) >= count,
        f"{count} sessions waiting for a lock",
        timeout,
    )


def problem(response: httpx.Response, status: int, code: str) -> None:
    """`response` is a problem (RFC 9457, docs/api.md) with this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)


def have_wrk() -> bool:
    """Whether wrk (Debian's `wrk`, the bench's capacity tool) is installed, as the bench itself
    decides it (bench/limits.py). Missing, a test that uses it fails, unless a developer set
    ALLOW_WRK_SKIP=1 (.ci/run installs it and unsets that): then the test skips what needs it, as
    the bench does."""
    if wrk_available():
        return True
    if os.environ.get("ALLOW_WRK_SKIP") != "1":
        pytest.fail(
            "wrk is not installed (.ci/run installs it; ALLOW_WRK_SKIP=1 skips what needs it)"
        )
    return False
