"""What an invest costs when each invest_many() call carries few requests: wrk with few connections
(the regime of the seed's JMeter plan, where JMeter's own CPU keeps the service's concurrency low)
against a fresh instance of the service (`python -m service run`, 2 workers) on 100 recruiting
products. Per accepted invest: the CPU of the workers and of their PostgreSQL backends (/proc, as
bench/events.py reads it); from the instance's /metrics, the invest calls per second, the requests
per call, the mean statement time per call and the mean queue wait per request.

    python -m bench.smallcalls                                   # 8, 64 and 500 connections
    python -m bench.smallcalls --connections 8 --variant '' --variant TOKIO_WORKER_THREADS=1

Each `--variant` is a comma-separated list of KEY=VALUE set in the instance's environment (''
for none); the variants are measured back to back for each connection count, `--rounds` times,
so two settings can be compared on a machine whose speed drifts between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import waits
from bench.events import cpu_ticks, cpu_us_per_event, invest_load
from bench.limits import run_wrk
from bench.target import (
    DEFAULT_SERVER,
    create_service_login,
    psql,
    recreate_database,
)

PRODUCTS = 100


def variant(text: str) -> dict[str, str]:
    """`KEY=VALUE,KEY=VALUE` as an environment ('' : none)."""
    pairs = [item.strip() for item in text.split(",") if item.strip()]
    for pair in pairs:
        if "=" not in pair or not pair.split("=", 1)[0]:
            raise argparse.ArgumentTypeError(f"not KEY=VALUE: {pair!r}")
    return dict(pair.split("=", 1) for pair in pairs)


def figures(
    accepted: int, seconds: float, cpu: Mapping[str, float], counted: waits.Scrape
) -> dict[str, Any]:
    """One window's figures: throughput, CPU µs per accepted invest, and the calls' shape."""
    return {
        "accepted_per_s": round(accepted / seconds, 1),
        "cpu_us": {"workers": cpu["workers"], "pg_workers": cpu["pg_workers"]},
        **waits.calls_shape(counted, accepted, seconds),
    }


@contextmanager
def environment(extra: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def measure(
    server: str, connections: int, seconds: float, extra: Mapping[str, str], work: Path
) -> dict[str, Any]:
    owner = recreate_database(server, "bench_smallcalls")
    try:
        with (
            environment(extra),
            invest_load(owner, PRODUCTS, work, "smallcalls", connections) as load,
        ):
            process, url, target, script = load
            before, ticks = waits.scrape(url), cpu_ticks(process.pid, None, owner)
            result = run_wrk(target, "smallcalls", script, seconds, work, connections)
            after, counted = (
                cpu_ticks(process.pid, None, owner),
                waits.between(before, waits.scrape(url)),
            )
        accepted = (result["requests"] or 0) - result["non_2xx"]
        cpu = cpu_us_per_event(ticks, after, accepted)
        out = figures(accepted, seconds, cpu, counted)
        return out | {"p99_ms": result["p99_ms"], "non_2xx": result["non_2xx"]}
    finally:
        psql(server, "DROP DATABASE IF EXISTS bench_smallcalls WITH (FORCE)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.smallcalls", description=__doc__)
    parser.add_argument("--connections", default="8,64,500")
    parser.add_argument("--window", type=float, default=12.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--variant", type=variant, action="append", default=None)
    parser.add_argument("--server", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER))
    args = parser.parse_args(argv)
    variants: list[dict[str, str]] = args.variant or [{}]
    work = Path(tempfile.mkdtemp(prefix="bench-smallcalls-"))
    create_service_login(args.server)
    for round_number in range(1, args.rounds + 1):
        for connections in (int(c) for c in args.connections.split(",")):
            for extra in variants:
                result = measure(args.server, connections, args.window, extra, work)
                line = {"round": round_number, "connections": connections, "env": extra}
                print(json.dumps(line | result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
