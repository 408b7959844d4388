"""What synchronous replication costs an invest: the same keyed invest load through `just
cluster`'s front haproxy, in one run, against (1) the Patroni topology with synchronous_mode on,
(2) the same topology with it switched off (Patroni's PATCH /config: asynchronous streaming),
twice each, alternating, and (3) the single-server topology on the local PostgreSQL (skipped
when none answers on :5432). Each window is followed by pgbench's one-row commits on the primary
(4 clients, 5 s): the commit's own price, without the service around it.

python -m bench.replication [--seconds 10] [--concurrency 16] [--rounds 2]

Everything (three servers, PgBouncer, three instances, two haproxies and this client) shares one
machine's cores: the figures compare the setups with each other, on that machine, at that moment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx

from bench.limits import run_pgbench
from deploy import patroni
from deploy.cluster import down, up
from deploy.config import ClusterConfig
from harness import ROOT
from harness.postgres import psql, with_database
from harness.sockets import free_port, port_in_use

PATH = "/v1/api/investment/user/goods"
LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _config(runtime: Path, **more: Any) -> ClusterConfig:
    return ClusterConfig(
        runtime=runtime, port=free_port(), stats_port=free_port(),
        instance_ports=(free_port(), free_port(), free_port()), pgbouncer_port=free_port(),
        instance_env={"LOG_LEVEL": "WARNING"}, **more,
    )  # fmt: skip


async def window(
    base_url: str, goods: list[int], seconds: float, concurrency: int
) -> dict[str, float | None]:
    """Keyed invests from `concurrency` clients for `seconds`: throughput and latency."""
    latencies: list[float] = []
    failed = 0
    stop = time.monotonic() + seconds

    async def client(number: int, http: httpx.AsyncClient) -> None:
        nonlocal failed
        serial = 0
        while time.monotonic() < stop:
            serial += 1
            started = time.monotonic()
            response = await http.post(
                PATH,
                headers={
                    "X-USER-ID": str(1_500_000_000 + number * 100_000 + serial),
                    "Idempotency-Key": f"bench-{number}-{serial}-{started}",
                },
                json={"goodsId": goods[serial % len(goods)], "investmentAmount": 1_000},
            )
            if response.status_code == 200:
                latencies.append(time.monotonic() - started)
            else:
                failed += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:
        await asyncio.gather(*(client(n, http) for n in range(concurrency)))
    latencies.sort()
    return {
        "invests_per_s": round(len(latencies) / seconds, 1),
        # None when no invest succeeded: `failed` says how many did not
        "p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1)
        if latencies
        else None,
        "failed": failed,
    }


def _products(url: str) -> list[int]:
    return [
        int(psql(url, "INSERT INTO investment_goods (title, total_investing_amount, status,"
                      " started_at, finished_at) VALUES ('bench', 1000000000000, true,"
                      " now() - interval '1 day', now() + interval '1 day') RETURNING goods_id"))
        for _ in range(8)
    ]  # fmt: skip


def commits(url: str, seconds: int = 5) -> dict[str, float]:
    """pgbench: one-row INSERT commits from 4 clients (synchronous_commit on, as the service)."""
    psql(url, "CREATE TABLE IF NOT EXISTS bench_commit (n int)")
    with tempfile.TemporaryDirectory() as work:
        done = run_pgbench(
            url, "commit", "INSERT INTO bench_commit VALUES (1);\n", seconds, Path(work), clients=4
        )
    if done.get("tps") is None or done.get("latency_avg_ms") is None:
        raise RuntimeError(f"pgbench failed: {done.get('error', done)}")
    return {"commit_ms": done["latency_avg_ms"], "commits_per_s": round(done["tps"])}


def _synchronous(state: dict[str, Any], on: bool) -> None:
    """Switch synchronous_mode through the leader's REST API; wait until the primary's
    synchronous_standby_names says so."""
    name = patroni.leader(state) if on else None
    members = state["patroni"]["members"]
    api = next(m["api"] for m in members if name is None or m["name"] == name)
    request = urllib.request.Request(
        f"{api}/config", method="PATCH", data=json.dumps({"synchronous_mode": on}).encode()
    )
    urllib.request.urlopen(request, timeout=5).close()
    deadline = time.monotonic() + 30
    url = str(state["patroni"]["primary_url"])
    while bool(psql(url, "SHOW synchronous_standby_names")) != on:
        if time.monotonic() > deadline:
            raise RuntimeError("synchronous_standby_names did not follow synchronous_mode")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replication", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    (ROOT / ".data").mkdir(exist_ok=True)
    results: dict[str, dict[str, float | None]] = {}

    def run(goods: list[int], base_url: str, database_url: str) -> dict[str, float | None]:
        asyncio.run(window(base_url, goods, 2, args.concurrency))  # warm-up, not counted
        figures = asyncio.run(window(base_url, goods, args.seconds, args.concurrency))
        return figures | commits(database_url)

    runtime = Path(tempfile.mkdtemp(prefix="replication-bench-", dir=ROOT / ".data"))
    try:
        config = _config(
            runtime, patroni=True, etcd_port=free_port(), etcd_peer_port=free_port(),
            patroni_api_ports=(free_port(), free_port(), free_port()),
            member_ports=(free_port(), free_port(), free_port()), primary_port=free_port(),
            replica_port=free_port(), database_stats_port=free_port(),
        )  # fmt: skip
        state = up(config)
        url = str(state["database_url"])
        goods = _products(url)
        for turn in range(1, args.rounds + 1):
            for on in (True, False):
                _synchronous(state, on)
                mode = "synchronous" if on else "asynchronous"
                results[f"patroni, {mode} ({turn})"] = run(goods, str(state["url"]), url)
    finally:
        down(runtime)
        shutil.rmtree(runtime, ignore_errors=True)

    if port_in_use("127.0.0.1", 5432):
        name = f"bench_replication_{int(time.time())}"
        psql(LOCAL, f"CREATE DATABASE {name}")
        runtime = Path(tempfile.mkdtemp(prefix="replication-bench-", dir=ROOT / ".data"))
        try:
            state = up(_config(runtime, database_url=with_database(LOCAL, name)))
            url = str(state["database_url"])
            results["single server"] = run(_products(url), str(state["url"]), url)
        finally:
            down(runtime)
            shutil.rmtree(runtime, ignore_errors=True)
            psql(LOCAL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    print(f"\n{args.seconds:g} s of keyed invests, {args.concurrency} clients, through haproxy")
    print("| setup | invests/s | p50 ms | p99 ms | failed | pgbench commits/s | commit ms |")
    print("|---|---|---|---|---|---|---|")
    for setup, f in results.items():
        print(f"| {setup} | {f['invests_per_s']} | {f['p50_ms']} | {f['p99_ms']} | {f['failed']}"
              f" | {f['commits_per_s']} | {f['commit_ms']} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
