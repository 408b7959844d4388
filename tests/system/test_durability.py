"""Durability is checked at start (service/ops/durability.py): a server that could lose acknowledged
commits (fsync=off) is refused, unless ALLOW_UNSAFE_DURABILITY=true, which warns at every start."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.ops.embedded import EmbeddedPostgres
from tests.support import ROOT, ServiceProcess, free_port, migrate, psql, running_service

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def unsafe_postgres() -> Iterator[str]:
    (ROOT / ".data").mkdir(exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="unsafe-pg-", dir=ROOT / ".data"))
    server = EmbeddedPostgres(data_dir, free_port(), settings={"fsync": "off"})
    server.start()
    try:
        assert psql(server.url, "SHOW fsync") == "off"
        migrate(server.url)
        yield server.url
    finally:
        server.stop("immediate")
        shutil.rmtree(data_dir, ignore_errors=True)


def test_service_refuses_a_server_without_fsync(unsafe_postgres: str) -> None:
    service = ServiceProcess(unsafe_postgres, LOG_LEVEL="INFO")
    try:
        code = service.process.wait(timeout=60)
    finally:
        service.stop()
    assert code != 0
    assert "refusing to serve: fsync=off" in service.log()


def test_override_serves_and_warns_at_every_start(unsafe_postgres: str) -> None:
    for _ in range(2):
        with running_service(unsafe_postgres, ALLOW_UNSAFE_DURABILITY="true") as service:
            pass
        assert "UNSAFE DURABILITY: fsync=off" in service.log()
        assert "ALLOW_UNSAFE_DURABILITY=true" in service.log()


def test_sessions_commit_synchronously_whatever_the_database_default(database_url: str) -> None:
    # A database (or role) default of synchronous_commit=off does not reach the service's
    # sessions: they set it on themselves, and the start-up check reads it as they see it.
    name = database_url.rpartition("/")[2]
    psql(database_url, f"ALTER DATABASE {name} SET synchronous_commit = off")
    try:
        with running_service(database_url, LOG_LEVEL="INFO") as service:
            pass
        assert "refusing" not in service.log() and "UNSAFE" not in service.log()
    finally:
        psql(database_url, f"ALTER DATABASE {name} RESET synchronous_commit")
