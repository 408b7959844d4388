"""The bench's systems under test, through the harness: its PostgreSQL database and the service
with the bench's settings.

Everything here talks to 127.0.0.1 only, and every process it starts is stopped by its owner
(context managers), with bounded waits.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import ROOT as ROOT
from harness import postgres
from harness.postgres import pg_tool, with_database
from harness.processes import ServiceProcess

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


def server_answers(url: str) -> bool:
    try:
        psql(url, "SELECT 1", timeout=10)
    except (RuntimeError, subprocess.TimeoutExpired, OSError):
        return False
    return True


def recreate_database(server_url: str, name: str) -> str:
    """Drop and create `name` on the server of `server_url`; return its URL."""
    psql(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(server_url, f"CREATE DATABASE {name}")
    return with_database(server_url, name)


def migrate(url: str) -> None:
    """The service's own migrations (`python -m service migrate`), as deployments apply them."""
    postgres.migrate(url, settings={"LOG_LEVEL": "WARNING"}, timeout=300)


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
    from service.embedded import EmbeddedPostgres, free_port

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
        super().start()
        self.wait_ready()


@contextmanager
def running_service(
    database_url: str, workers: int, pool_size: int, log_path: Path
) -> Iterator[Service]:
    with Service(database_url, workers, pool_size, log_path) as service:
        yield service
