"""The cluster's database: DATABASE_URL, else one on the local PostgreSQL, else an embedded one;
migrated directly (never through PgBouncer) as its owner, with the service's login set up."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from deploy.config import ClusterConfig, ClusterError, log
from deploy.state import save
from harness import postgres
from harness.sockets import port_in_use

LOCAL_POSTGRES = ("127.0.0.1", 5432)
LOCAL_DATABASE = "investment_cluster"
SERVICE_USER = "investment_app"


def _local_database() -> str | None:
    """The cluster's database on the local PostgreSQL (created once), if that server answers."""
    if shutil.which("psql") is None or not port_in_use(*LOCAL_POSTGRES, timeout=0.5):
        return None
    server = f"postgresql://postgres@{LOCAL_POSTGRES[0]}:{LOCAL_POSTGRES[1]}/postgres"
    try:
        exists = f"SELECT 1 FROM pg_database WHERE datname = '{LOCAL_DATABASE}'"
        if not postgres.psql(server, exists, timeout=30):
            postgres.psql(server, f"CREATE DATABASE {LOCAL_DATABASE}", timeout=30)
    except RuntimeError as error:
        log(f"local PostgreSQL not usable ({error}); using an embedded one")
        return None
    return postgres.with_database(server, LOCAL_DATABASE)


def open_database(config: ClusterConfig, state: dict[str, Any]) -> tuple[str, bool]:
    """(direct URL, load demo data): DATABASE_URL, else the local server, else an embedded one
    (recorded in `state` before it starts, so that `down` stops it)."""
    if config.database_url:
        return config.database_url, False
    local = _local_database()
    if local is not None:
        return local, True
    from service.ops.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(config.runtime / "postgres", config.embedded_pg_port)
    state["embedded"] = {"data_dir": str(server.data_dir), "port": server.port}
    save(config.runtime, state)
    return server.start(), True


def stop_embedded(data_dir: Path, timeout: float = 30.0) -> None:
    """Fast shutdown of the embedded server through its postmaster's pid (SIGINT)."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        log(f"stopping the embedded PostgreSQL (pid {pid})")
        os.kill(pid, signal.SIGINT)
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + timeout
    while (data_dir / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def service_url(owner_url: str) -> str:
    """The same database as the service's least-privileged login (SERVICE_USER, no password:
    the local servers trust loopback; sql/migrations/006_service_role.sql)."""
    from service.ops.roles import with_user

    return with_user(owner_url, SERVICE_USER)


def migrate(url: str, demo: bool, config: ClusterConfig) -> None:
    """Migrate as the owner; create the service's login and make it a member of its role."""
    try:
        postgres.migrate(
            url, service_url=service_url(url), demo=demo, settings={"TIMEZONE": config.timezone}
        )
    except RuntimeError as error:
        raise ClusterError(str(error)) from None
