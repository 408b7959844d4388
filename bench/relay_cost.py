"""The relay's CPU per event, alone: outbox rows written at a steady rate (no service, no wrk), the
relay (`python -m service relay` of a checkout) publishing them to a nats-server of this run's
own; CPU µs per event of the relay process, its PostgreSQL backend and nats-server over the
window and the drain after it (bench/events.py `cpu_ticks`), and the relay's publish latency
p50/p99 (its /metrics histogram, read from its metric files).

The rows are written as invest_many() writes them (one INSERT every 2 ms of a row holding the
events due, as a call writes its events in one row, by a session of this process, which is not
counted), so every figure is the relay's chain only, and two checkouts can be compared back to
back on a busy machine, where invest throughput is not a measure (each checkout migrates its own
database; a checkout from before sql/migrations/014_outbox_calls.sql, whose outbox has a row per
event, is measured by running its own bench.relay_cost from it):

    python -m bench.relay_cost --rate 5000 --window 15
    python -m bench.relay_cost --rate 5000 --window 15 --checkout /tmp/before   # another tree
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import target
from bench.events import Nats, cpu_ticks, cpu_us_per_event, latency_quantiles, outbox
from bench.rush_compare import stop
from bench.target import DEFAULT_SERVER, psql
from service.ops.roles import with_user

INSERT = (  # one row a statement, as invest_many() writes one a call
    "INSERT INTO investment_event (type, at, investment_ids, user_ids, goods_ids, amounts,"
    " current_investing_amounts, investor_counts)"
    " SELECT 'accepted', now(), array_agg(n ORDER BY n), array_agg(n ORDER BY n),"
    " array_agg(1 + n % 100 ORDER BY n), array_agg(1000::bigint ORDER BY n),"
    " array_agg(1000 * n ORDER BY n), array_agg((1 + n / 7)::integer ORDER BY n)"
    " FROM generate_series($1::bigint, $2::bigint) n"
)


async def write(owner: str, rate: float, seconds: float) -> int:
    """Outbox events at `rate` per second for `seconds`, a few per statement (a row) every 2 ms."""
    import psqlpy

    conn = await psqlpy.connect(dsn=owner)
    written, started = 0, time.monotonic()
    try:
        while (now := time.monotonic()) - started < seconds:
            due = int((now - started) * rate)
            if due > written:
                await conn.execute(INSERT, [written + 1, due])
                written = due
            await asyncio.sleep(0.002)
    finally:
        conn.close()
    return written


def metric_samples(directory: Path) -> dict[str, float]:
    """The relay's metric files as /metrics shows them (name with labels → value)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    samples = {}
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("events_"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def measure(checkout: Path, server: str, rate: float, window: float, name: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    owner = target.recreate_database(server, name)
    service = with_user(owner, target.SERVICE_USER, target.SERVICE_PASSWORD)
    env = {**os.environ, "DATABASE_URL": service, "MIGRATION_DATABASE_URL": owner,
           "LOG_LEVEL": "WARNING"}  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "service", "migrate", "--create-service-login"], cwd=checkout,
        env=env, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    nats = Nats(work)
    nats.start()
    metrics = work / "metrics"
    metrics.mkdir()
    env |= {"NATS_URL": nats.url, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    with (work / "relay.log").open("ab") as out:
        relay = subprocess.Popen(
            [sys.executable, "-m", "service", "relay"], cwd=checkout, env=env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while psql(owner, "SELECT seen_at IS NULL FROM investment_event_relay") == "t":
            if time.monotonic() > deadline or relay.poll() is not None:
                raise RuntimeError(f"the relay did not start: {(work / 'relay.log').read_text()}")
            time.sleep(0.1)
        asyncio.run(write(owner, rate, 2))  # warm-up, not measured
        while outbox(owner):
            time.sleep(0.05)
        assert nats.process is not None
        before, ticks = metric_samples(metrics), cpu_ticks(relay.pid, nats.process.pid, owner)
        written = asyncio.run(write(owner, rate, window))
        drain_started = time.monotonic()
        while outbox(owner):
            time.sleep(0.02)
        drain = time.monotonic() - drain_started
        after = cpu_ticks(relay.pid, nats.process.pid, owner)
        cpu = cpu_us_per_event(ticks, after, written)
        return {
            "events_per_s": round(written / window, 1),
            "drain_s": round(drain, 2),
            # the service's pool is not running: the writer's backend is not the relay's cost
            "cpu_us_per_event": {k: cpu[k] for k in ("relay", "pg_relay", "nats")}
            | {"chain": round(cpu["relay"] + cpu["pg_relay"] + cpu["nats"], 1)},
            "latency": latency_quantiles(before, metric_samples(metrics)),
        }
    finally:
        stop(relay)
        nats.stop()
        psql(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.relay_cost", description=__doc__)
    parser.add_argument("--rate", type=float, default=5000.0, help="outbox rows per second")
    parser.add_argument("--window", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--checkout", type=Path, default=Path.cwd())
    parser.add_argument("--server", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER))
    parser.add_argument("--database", default="relay_cost")
    args = parser.parse_args(argv)
    target.create_service_login(args.server)
    for n in range(args.rounds):
        result = measure(
            args.checkout.resolve(), args.server, args.rate, args.window, args.database
        )
        print(f"{args.checkout} round {n + 1}: {result}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
