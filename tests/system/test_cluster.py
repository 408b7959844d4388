"""The local topology of `just cluster`: requests round-trip through haproxy and PgBouncer.

Starts the cluster with the recipe's own code (deploy/cluster.py) against a fresh database on the
session's server, sends a concurrent rush through the balancer and asserts the invariants end to
end: the ledger sums to the total, counters equal the ledger, more than one instance answered
(haproxy's stats), and the instances' transactions went through PgBouncer (its admin console).

Without haproxy or PgBouncer (and no root to apt-get them) the test fails: CI (.ci/run) installs
them. A developer without them may set ALLOW_CLUSTER_SKIP=1 to skip it instead; .ci/run unsets it.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from deploy.cluster import down, haproxy_servers, up
from tests.events import active_relay_pid, stream_config, stream_messages
from tests.support import (
    ROOT,
    counters,
    create_goods,
    drop_database,
    free_port,
    fresh_user,
    kept_connection,
    ledger_sum,
    new_database,
    psql,
    wait_until,
)
from tests.system.topology import require_tools, small_cluster

pytestmark = pytest.mark.system

TOTAL = 500_000
REQUESTS = 300  # 300 × 3,000 = 900,000: the rush sells the product out
AMOUNT = 3_000


@pytest.fixture(scope="module")
def cluster(postgres_server: str) -> Iterator[dict[str, object]]:
    require_tools("haproxy/PgBouncer")
    url = new_database(postgres_server)
    (ROOT / ".data").mkdir(exist_ok=True)
    runtime = Path(tempfile.mkdtemp(prefix="cluster-test-", dir=ROOT / ".data"))
    config = small_cluster(
        runtime,
        database_url=url,
        instance_env={"LOG_LEVEL": "WARNING", "LIST_CACHE_SECONDS": "0"},
        # `just cluster`'s three-node JetStream cluster (R3)
        nats_ports=(free_port(), free_port(), free_port()),
        nats_route_ports=(free_port(), free_port(), free_port()),
    )
    try:
        yield up(config)
    finally:
        down(runtime)
        shutil.rmtree(runtime, ignore_errors=True)
        drop_database(postgres_server, url)


async def rush(base_url: str, goods_id: int, users: list[int]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        return await asyncio.gather(
            *(
                client.post(
                    "/v1/api/investment/user/goods",
                    headers={"X-USER-ID": str(user)},
                    json={"goodsId": goods_id, "investmentAmount": AMOUNT},
                )
                for user in users
            )
        )


def test_invest_round_trips_through_haproxy_and_pgbouncer(cluster: dict[str, object]) -> None:
    url = str(cluster["database_url"])
    base_url = str(cluster["url"])
    goods_id = create_goods(url, total=TOTAL)
    users = [fresh_user() for _ in range(REQUESTS // 2)]

    responses = asyncio.run(rush(base_url, goods_id, users + users))

    assert [r.status_code for r in responses if r.status_code != 200] == []
    granted = [r.json()["investment_amount"] for r in responses]
    assert sum(granted) == TOTAL
    assert len([g for g in granted if 0 < g < AMOUNT]) == 1  # TOTAL is no multiple: one remainder
    assert ledger_sum(url, goods_id) == TOTAL
    investors = int(
        psql(
            url,
            f"SELECT count(DISTINCT user_id) FROM user_investment_goods WHERE goods_id = {goods_id}",
        )
    )
    assert counters(url, goods_id) == (TOTAL, investors)

    # Read back through the balancer: the product list and one investor's ledger.
    listed = httpx.get(
        f"{base_url}/v1/api/investment/goods",
        params={"started_at": "2000-01-01 00:00:00", "finished_at": "2100-01-01 00:00:00"},
        timeout=10,
    )
    assert listed.status_code == 200
    (item,) = [g for g in listed.json() if g["goods_id"] == goods_id]
    assert (item["current_investing_amount"], item["state"]) == (TOTAL, "sold_out")
    first = next(user for user, g in zip(users + users, granted, strict=True) if g > 0)
    mine = httpx.get(
        f"{base_url}/v1/api/investment/user/goods", headers={"X-USER-ID": str(first)}, timeout=10
    )
    assert mine.status_code == 200
    assert {row["goods_id"] for row in mine.json()} == {goods_id}

    # More than one instance answered the rush.
    answered = {
        row["svname"]: int(row["hrsp_2xx"]) for row in haproxy_servers(str(cluster["stats_url"]))
    }
    assert len(answered) == 3
    assert sum(1 for count in answered.values() if count > 0) >= 2, answered

    # The instances' database work went through PgBouncer, on the database's pool, and only
    # PgBouncer's few server connections reached PostgreSQL.
    database = url.rpartition("/")[2]
    admin = str(cluster["pgbouncer_admin_url"])
    (pool,) = [row for row in console(admin, "SHOW STATS") if row["database"] == database]
    assert int(pool["total_xact_count"]) > 0
    assert any(row["database"] == database for row in console(admin, "SHOW POOLS"))
    direct = psql(
        url,
        "SELECT count(*) FROM pg_stat_activity"
        f" WHERE datname = '{database}' AND application_name = 'investment-service'",
    )
    assert 0 < int(direct) <= 8 + 4  # default_pool_size + reserve_pool_size


# Beyond haproxy's purge of idle instance connections (pool-purge-delay, 5 s) and beyond the 10 s
# after which haproxy once closed idle client connections; two connections each, concurrently.
IDLE_GAPS = (4.0, 6.0, 11.0)


def test_kept_connections_through_haproxy_are_answered_after_idle_gaps(
    cluster: dict[str, object],
) -> None:
    """A pooled client behind haproxy: after each idle gap its next request (an invest) is
    answered on the same connection, and haproxy met no failed response from an instance
    (a 502 is haproxy sending a request into an instance connection that was closing)."""
    url, base_url = str(cluster["database_url"]), str(cluster["url"])
    stats = str(cluster["stats_url"])
    goods_id = create_goods(url, total=10**9)

    def failures() -> int:
        return sum(
            int(row["eresp"] or 0) + int(row["hrsp_5xx"] or 0) for row in haproxy_servers(stats)
        )

    before = failures()
    with ThreadPoolExecutor(2 * len(IDLE_GAPS)) as pool:
        kept = [
            pool.submit(kept_connection, base_url, (gap,), goods_id, fresh_user())
            for gap in IDLE_GAPS * 2
        ]
        met = [future.result() for future in kept]
    assert met == [["200", "200"]] * len(kept), met
    assert failures() == before
    assert ledger_sum(url, goods_id) == 1_000 * len(kept)


def rush_of_40(cluster: dict[str, object]) -> tuple[int, set[int]]:
    """A rush of 40 users on a new product through the balancer: the product, its ledger ids."""
    url = str(cluster["database_url"])
    goods_id = create_goods(url, total=TOTAL)
    responses = asyncio.run(rush(str(cluster["url"]), goods_id, [fresh_user() for _ in range(40)]))
    assert {r.status_code for r in responses} == {200}
    ledger = psql(url, f"SELECT id FROM user_investment_goods WHERE goods_id = {goods_id}")
    return goods_id, {int(i) for i in ledger.split()}


def published(nats_url: str, goods_id: int) -> list[int] | None:
    """The investment ids of the product's events in the stream; None while JetStream does not
    answer (after a server's loss it elects new leaders for what that server led)."""
    try:
        messages = stream_messages(nats_url)
    except Exception:
        return None
    return [body["investment_id"] for _, _, body in messages if body["goods_id"] == goods_id]


def test_the_rush_reaches_the_three_node_jetstream_cluster_once(
    cluster: dict[str, object],
) -> None:
    """The instances' relays: one active, publishing through NATS_URL's three servers into an
    R3 stream, every ledger row of a product once; and again with one nats-server lost."""
    url = str(cluster["database_url"])
    nats_url = str(cluster["nats_url"])
    goods_id, ids = rush_of_40(cluster)
    wait_until(lambda: set(published(nats_url, goods_id) or ()) == ids, "the rush's events", 30)
    assert sorted(published(nats_url, goods_id) or ()) == sorted(ids)
    assert stream_config(nats_url).num_replicas == 3
    assert active_relay_pid(url) is not None  # one instance's relay holds the lock
    held = psql(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'investment-relay-%'",
    )
    assert int(held) == 3  # every instance runs one (two stand by)

    # One nats-server lost (SIGKILL): the other two are a majority, the R3 stream still takes
    # the next rush's events, once.
    (lost,) = [e for e in cluster["processes"] if e["name"] == "nats1"]  # type: ignore[attr-defined]
    # Run with the Go runtime's settings of docs/deploy.md "Events".
    assert b"GOGC=400" in Path(f"/proc/{lost['pid']}/environ").read_bytes().split(b"\0")
    os.kill(int(lost["pid"]), signal.SIGKILL)
    goods_id, ids = rush_of_40(cluster)
    wait_until(
        lambda: set(published(nats_url, goods_id) or ()) == ids, "events with a server lost", 60
    )
    assert sorted(published(nats_url, goods_id) or ()) == sorted(ids)


def console(admin_url: str, command: str) -> list[dict[str, str]]:
    """Rows of a PgBouncer admin console command, by column name."""
    done = subprocess.run(
        ["psql", admin_url, "-X", "--csv", "-c", command],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    return list(csv.DictReader(io.StringIO(done.stdout)))
