"""Session fixtures: a real PostgreSQL (TEST_DATABASE_URL, else embedded), a migrated database."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, free_port, migrated_database


def pytest_collection_finish(session: pytest.Session) -> None:
    """The collected suite (its modules, functions and test items) out of the collector's
    reach: in a process that has collected every test, each full collection took 60-120 ms,
    scanning them all, and stopped whatever a test was timing then (tests/support.py
    `collector_paused` for the latency a test measures). Later collections scan only what the
    tests make."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a PostgreSQL server's maintenance database, for creating test databases."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    from service.ops.embedded import EmbeddedPostgres

    (ROOT / ".data").mkdir(exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="test-pg-", dir=ROOT / ".data"))
    server = EmbeddedPostgres(data_dir, free_port())
    try:
        yield server.start()
    finally:
        server.stop("immediate")
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(postgres_server: str) -> Iterator[str]:
    """A fresh database with every migration applied, shared by the session's tests."""
    with migrated_database(postgres_server) as url:
        yield url
