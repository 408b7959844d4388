"""The server's floor (bench/floor.py) as the bench starts it: granian with the bench's worker
count, answering every path with /healthz's small JSON, through the raw ASGI and RSGI apps."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from bench.floor import BODY, INTERFACES
from bench.target import FloorServer, Service
from tests.support import create_goods, fresh_user, ledger_sum

pytestmark = pytest.mark.system


@pytest.mark.parametrize("interface", INTERFACES)
def test_the_floor_answers_like_healthz_with_the_workers_asked(
    interface: str, tmp_path: Path
) -> None:
    with FloorServer(interface, 2, tmp_path / "floor.log") as server:
        posted = urllib.request.Request(  # invest's POST, as the floor-asgi-post window sends
            f"{server.base_url}/v1/api/investment/user/goods",
            data=b'{"goodsId": 1, "investmentAmount": 1000}',
            headers={"Content-Type": "application/json"},
        )
        for request in (f"{server.base_url}/healthz", f"{server.base_url}/v1/api/investment/goods",
                        posted):  # fmt: skip
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
                assert response.headers["content-type"] == "application/json"
                assert response.read() == BODY == b'{"status":"ok"}'
        assert len(server.worker_pids()) == 2
    assert server.exited()


def test_the_rsgi_probe_serves_the_services_routes_over_rsgi(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BENCH_SERVER=rsgi-probe: the bench's Service starts bench/rsgi_probe.py, which answers as
    the service does (raw routes, BlackSheep's routes, the Worker opened by the lifespan)."""
    monkeypatch.setenv("BENCH_SERVER", "rsgi-probe")
    goods_id = create_goods(database_url, total=1_000)
    user = fresh_user()
    with Service(database_url, 1, 4, tmp_path / "probe.log") as probe:
        assert "bench.rsgi_probe" in Path(f"/proc/{probe.pid}/cmdline").read_text()
        base = f"{probe.base_url}/v1/api/investment"
        invest = urllib.request.Request(
            f"{base}/user/goods",
            data=orjson.dumps({"goodsId": goods_id, "investmentAmount": 300}),
            headers={"X-USER-ID": str(user), "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(invest, timeout=10) as response:
            assert response.status == 200
            assert orjson.loads(response.read())["investment_amount"] == 300
        mine = urllib.request.Request(f"{base}/user/goods", headers={"X-USER-ID": str(user)})
        with urllib.request.urlopen(mine, timeout=10) as response:
            items = orjson.loads(response.read())
            assert [(i["goods_id"], i["user_investing_amount"]) for i in items] == [(goods_id, 300)]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{probe.base_url}/nowhere", timeout=5)
        assert refused.value.code == 404
        assert refused.value.headers["content-type"] == "application/problem+json"
    assert ledger_sum(database_url, goods_id) == 300
