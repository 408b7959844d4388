"""The server's floor (bench/floor.py) as the bench starts it: granian with the bench's worker
count, answering every path with /healthz's small JSON, through the raw ASGI and RSGI apps."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from bench.floor import BODY, INTERFACES
from bench.target import FloorServer

pytestmark = pytest.mark.system


@pytest.mark.parametrize("interface", INTERFACES)
def test_the_floor_answers_like_healthz_with_the_workers_asked(
    interface: str, tmp_path: Path
) -> None:
    with FloorServer(interface, 2, tmp_path / "floor.log") as server:
        for path in ("/healthz", "/v1/api/investment/goods"):
            with urllib.request.urlopen(f"{server.base_url}{path}", timeout=5) as response:
                assert response.status == 200
                assert response.headers["content-type"] == "application/json"
                assert response.read() == BODY == b'{"status":"ok"}'
        assert len(server.worker_pids()) == 2
    assert server.exited()
