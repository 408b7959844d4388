"""A database that goes away: bounded 503s while it is down, recovery without a restart."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.embedded import EmbeddedPostgres
from tests.conftest import migrate
from tests.support import ROOT, create_goods, free_port, fresh_user, running_service

pytestmark = pytest.mark.system

REQUESTS = [
    ("GET", "/readyz", {}),
    (
        "GET",
        "/v1/api/investment/goods",
        {"params": {"started_at": "2000-01-01 00:00:00", "finished_at": "2999-01-01 00:00:00"}},
    ),
    ("GET", "/v1/api/investment/user/goods", {"headers": {"X-USER-ID": "1"}}),
]


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, so stopping it disturbs nothing else."""
    (ROOT / ".data").mkdir(exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="outage-pg-", dir=ROOT / ".data"))
    server = EmbeddedPostgres(data_dir, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(data_dir, ignore_errors=True)


def test_database_down_answers_503_then_recovers(own_postgres: EmbeddedPostgres) -> None:
    url = own_postgres.url
    migrate(url)
    goods_id = create_goods(url, total=10**9)
    invest = (
        "POST",
        "/v1/api/investment/user/goods",
        {
            "headers": {"X-USER-ID": str(fresh_user())},
            "json": {"goodsId": goods_id, "investmentAmount": 10},
        },
    )
    with (
        running_service(url, workers=2, DB_ACQUIRE_TIMEOUT="1", LIST_CACHE_SECONDS="0") as service,
        httpx.Client(base_url=service.base_url, timeout=15) as client,
    ):
        assert client.request(*invest[:2], **invest[2]).status_code == 200

        own_postgres.stop("immediate")
        for method, path, kwargs in [*REQUESTS, invest]:
            started = time.monotonic()
            response = client.request(method, path, **kwargs)
            elapsed = time.monotonic() - started
            assert response.status_code == 503, (path, response.text)
            assert response.json()["code"] == "SERVICE_UNAVAILABLE"
            assert response.headers["Retry-After"] == "1"
            assert elapsed < 5, f"{path} took {elapsed:.1f}s while the database was down"
        assert client.get("/healthz").status_code == 200  # the workers are alive

        own_postgres.start()
        deadline = time.monotonic() + 10
        while client.request(*invest[:2], **invest[2]).status_code != 200:
            assert time.monotonic() < deadline, "no recovery within 10 s of the database's return"
            time.sleep(0.2)
        for method, path, kwargs in REQUESTS[:2]:
            assert client.request(method, path, **kwargs).status_code == 200
