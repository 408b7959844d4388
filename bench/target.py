"""The bench's systems under test, through the harness: its PostgreSQL database (settled before
each measured window), the service with the bench's settings and the server's floor.

Everything here talks to 127.0.0.1 only, and every process it starts is stopped by its owner
(context managers), with bounded waits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.floor import READY_PATH
from harness import ROOT as ROOT
from harness import postgres
from harness.postgres import pg_tool, with_database
from harness.processes import ServiceProcess, spawn

WORK = ROOT / "bench" / ".work"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def psql(url: str, sql: str, timeout: float = 600) -> str:
    """The harness's psql for the bench's scripts: on stdin, statement by statement."""
    return postgres.psql(url, sql, timeout=timeout, script=True)


def postmaster_pid(url: str) -> int | None:
    """The pid of the server's postmaster (the parent of a session's backend), or None when the
    server's processes are not visible from here (another host or pid namespace)."""
    from bench.cpu import parent_pid

    session = subprocess.Popen(
        [pg_tool("psql"), url, "-X", "-q", "-t", "-A"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert session.stdin is not None and session.stdout is not None
    try:  # the session stays open while its backend's parent is read
        session.stdin.write("SELECT pg_backend_pid();\n")
        session.stdin.flush()
        answer = session.stdout.readline().strip()
        postmaster = parent_pid(int(answer)) if answer.isdigit() else None
    finally:
        session.stdin.close()
        session.wait(timeout=10)
    if postmaster is None:
        return None
    try:  # a pid that happens to exist here but is no postgres is not the server
        command = Path(f"/proc/{postmaster}/cmdline").read_bytes()
    except OSError:
        return None
    return postmaster if b"postgres" in command else None


def database_backends(url: str) -> set[int]:
    """The pids of the client backends connected to `url`'s database, this query's excluded."""
    rows = psql(
        url,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )
    return {int(pid) for pid in rows.split()}


AUTOVACUUM_WORKERS = (
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
)


def settle(url: str, timeout: float) -> dict[str, float | bool]:
    """Let PostgreSQL's background work finish before a measured window: CHECKPOINT (the dirty
    pages of the stage before are written now, not during the window), then wait, at most
    `timeout` seconds, until no autovacuum worker runs anywhere on the server (the cores are
    shared). Returns the seconds each part took and whether a worker was still running."""
    started = time.monotonic()
    try:
        psql(url, "CHECKPOINT", timeout=max(timeout, 60))
        checkpoint = True
    except RuntimeError:  # not a superuser (nor pg_checkpoint): the wait still helps
        checkpoint = False
    checkpointed = time.monotonic()
    deadline = checkpointed + timeout
    while True:
        running = int(psql(url, AUTOVACUUM_WORKERS))
        if running == 0 or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    return {
        "checkpoint": checkpoint,
        "checkpoint_s": round(checkpointed - started, 2),
        "autovacuum_wait_s": round(time.monotonic() - checkpointed, 2),
        "autovacuum_running": running > 0,
    }


def server_answers(url: str) -> bool:
    try:
        psql(url, "SELECT 1", timeout=10)
    except (RuntimeError, subprocess.TimeoutExpired, OSError):
        return False
    return True


def recruiting(owner: str, count: int) -> None:
    """Products 1..`count`, recruiting now, with room for any load."""
    psql(
        owner,
        "INSERT INTO investment_goods (goods_id, title, total_investing_amount, status,"
        " started_at, finished_at) SELECT n, 'bench', 1000000000000000, true,"
        " now() - interval '1 day', now() + interval '1 day'"
        f" FROM generate_series(1, {count}) n",
    )


def recreate_database(server_url: str, name: str) -> str:
    """Drop and create `name` on the server of `server_url`; return its URL."""
    psql(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(server_url, f"CREATE DATABASE {name}")
    return with_database(server_url, name)


def migrate(url: str) -> None:
    """The service's own migrations (`python -m service migrate`), as deployments apply them;
    BENCH_SERVICE_CHECKOUT's own when set (the schema the service under test was written for)."""
    checkout = os.environ.get("BENCH_SERVICE_CHECKOUT")
    if not checkout:
        postgres.migrate(url, settings={"LOG_LEVEL": "WARNING"}, timeout=300)
        return
    done = subprocess.run(
        [sys.executable, "-m", "service", "migrate"], cwd=checkout,
        env={**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"migrations of {checkout} failed:\n{done.stderr.strip()[-3000:]}")


@contextmanager
def bench_database(database_url: str | None, name: str = "bench") -> Iterator[str]:
    """The database the bench loads and measures.

    DATABASE_URL (used as given, must be empty or a previous bench database), else a fresh
    database `name` on BENCH_DATABASE_URL's server (default 127.0.0.1:5432), else a fresh
    embedded PostgreSQL that is stopped and removed afterwards.
    """
    if database_url:
        yield database_url
        return
    server = os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER)
    if server_answers(server):
        url = recreate_database(server, name)
        yield url
        return
    from harness.sockets import free_port
    from service.ops.embedded import EmbeddedPostgres

    WORK.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="pg-", dir=WORK))
    embedded = EmbeddedPostgres(data_dir, free_port())
    try:
        url = recreate_database(embedded.start(), name)
        yield url
    finally:
        embedded.destroy()


class Service(ServiceProcess):
    """`python -m service run` with the bench's settings, connected as the database's owner;
    `start` returns once it is ready."""

    ready_timeout = 60.0

    def __init__(
        self,
        database_url: str,
        workers: int,
        pool_size: int,
        log_path: Path,
        settings: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            {
                "DATABASE_URL": database_url,
                "WORKERS": str(workers),
                "DB_POOL_SIZE": str(pool_size),
                "LOG_LEVEL": "WARNING",
                **(settings or {}),
            },
            log_path,
        )

    def start(self) -> None:
        # BENCH_SERVICE_CHECKOUT: serve another checkout's code (an earlier commit's worktree),
        # to set it against this one in the same protocol (docs/performance.md).
        checkout = os.environ.get("BENCH_SERVICE_CHECKOUT")
        if os.environ.get("BENCH_SERVER") == "rsgi-probe":  # an experiment: bench/rsgi_probe.py
            if checkout:  # the probe serves this checkout's application, not another's
                raise RuntimeError("BENCH_SERVER=rsgi-probe or BENCH_SERVICE_CHECKOUT, not both")
            self.process = spawn((sys.executable, "-m", "bench.rsgi_probe"), self.env,
                                 self.log_path)  # fmt: skip
        elif checkout:
            self.process = spawn((sys.executable, "-m", "service", "run"), self.env,
                                 self.log_path, cwd=Path(checkout))  # fmt: skip
        else:
            super().start()
        self.wait_ready()


@contextmanager
def running_service(
    database_url: str, workers: int, pool_size: int, log_path: Path
) -> Iterator[Service]:
    with Service(database_url, workers, pool_size, log_path) as service:
        yield service


class FloorServer(ServiceProcess):
    """`python -m bench.floor asgi|rsgi`: the service's serve() with a raw app (bench/floor.py),
    on a free loopback port with the bench's worker count; as a context manager it starts,
    waits until it answers and stops on the way out."""

    def __init__(
        self, interface: str, workers: int, log_path: Path, settings: dict[str, str] | None = None
    ) -> None:
        super().__init__({"WORKERS": str(workers), "LOG_LEVEL": "WARNING", **(settings or {})},
                         log_path)  # fmt: skip
        self.interface = interface

    def start(self) -> None:
        self.process = spawn((sys.executable, "-m", "bench.floor", self.interface), self.env,
                             self.log_path)  # fmt: skip

    def wait_ready(self, timeout: float | None = None, path: str = READY_PATH) -> None:
        super().wait_ready(timeout, path)


SERVICE_USER, SERVICE_PASSWORD = "investment_app", "investment-app-test"


def create_service_login(server: str) -> None:
    """The service's login on `server`, when missing (tests and `just run` create it the same
    way); the migrations make it a member of the service role."""
    psql(
        server,
        f"DO $$ BEGIN CREATE ROLE {SERVICE_USER} LOGIN PASSWORD '{SERVICE_PASSWORD}';"
        " EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    )
