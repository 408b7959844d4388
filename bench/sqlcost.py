"""PostgreSQL's CPU per request of the service's coalesced statements, at 1, 10 and 100 requests
per call (my investments for users holding about 10 and about 40 investments): one session (the
service's session options, its prepared statements), the CPU of that session's backend read from
/proc before and after, divided by the requests served. Beside it, what the same calls cost this
process, the client (psqlpy, on uvloop as in the service): its CPU per call, all threads (psqlpy's
Tokio threads too) and the event loop's thread alone, which is what a call costs a worker besides
its requests.

python -m bench.sqlcost   # a fresh database `bench_sqlcost` on BENCH_DATABASE_URL's server
python -m bench.sqlcost --events   # the same with the outbox written (as while a relay runs)

One session and no other load, unlike pgbench's 50 clients: the service sends at most one invest
call per worker at a time, so lock waits and 50 backends contending for 2 cores are not what it
pays. Needs the server's processes visible from here (a local server).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import psqlpy
import uvloop

from bench import dataset
from bench.cpu import TICKS_PER_SECOND, read_stat
from harness.postgres import psql, with_database
from service.db import connection_options
from service.settings import Settings
from service.sql import queries

PER_CALL = (1, 10, 100)
REQUESTS = 3_000  # per statement and size, by default: calls = requests / size (at least 20)


def _ticks(pid: int) -> int:
    stat = read_stat(pid)
    if stat is None:
        raise RuntimeError(f"the backend {pid} is not visible from here (/proc)")
    return stat.utime + stat.stime


async def measure(
    url: str, users: int, recruiting: int, seed: int = 1, requests: int = REQUESTS
) -> dict[str, Any]:
    conn = await psqlpy.connect(dsn=url, options=connection_options(Settings()))
    try:
        pid = (await conn.execute("SELECT pg_backend_pid()")).result(as_tuple=True)[0][0]
        named = queries()
        rng = random.Random(seed)

        def invest(size: int) -> list[Any]:
            return [
                [rng.randint(1, recruiting) for _ in range(size)],
                [rng.randint(1, users) for _ in range(size)],
                [rng.randint(1_000, 100_000) for _ in range(size)],
                None,
            ]

        # the users holding nearest 10 and 40 investments, as the capacity stage picks them
        holders = {
            items: [user for user, _ in dataset.users_holding(url, items)]
            for items in dataset.PAGE_ITEMS
        }

        def pages(items: int) -> Callable[[int], list[Any]]:
            def params(size: int) -> list[Any]:
                return [[rng.choice(holders[items]) for _ in range(size)], [1000] * size,
                        [None] * size, [None] * size]  # fmt: skip

            return params

        # (label, statement, its parameters for a call of `size` requests)
        statements: list[tuple[str, str, Callable[[int], list[Any]]]] = [
            ("invest-batch", "invest-batch", invest)
        ]
        statements += [
            (f"my-investments-many ~{items} items", "my-investments-many", pages(items))
            for items in dataset.PAGE_ITEMS
        ]
        figures: dict[str, Any] = {}
        for label, name, params in statements:
            for size in PER_CALL:
                calls = max(20, requests // size)
                for _ in range(5):  # warm: prepared, plans cached
                    await conn.execute(named[name], params(size), prepared=True)
                batches = [params(size) for _ in range(calls)]
                before = _ticks(pid)
                process, loop_thread = time.process_time(), time.thread_time()
                for batch in batches:
                    await conn.execute(named[name], batch, prepared=True)
                process, loop_thread = (
                    time.process_time() - process,
                    time.thread_time() - loop_thread,
                )
                used = (_ticks(pid) - before) / TICKS_PER_SECOND
                figures[f"{label} x{size}"] = {
                    "requests_per_call": size,
                    "calls": calls,
                    "postgres_cpu_us_per_request": round(used * 1e6 / (calls * size), 1),
                    "client_cpu_us_per_call": round(process * 1e6 / calls, 1),
                    "client_loop_thread_us_per_call": round(loop_thread * 1e6 / calls, 1),
                }
        return figures
    finally:
        conn.close()


@contextmanager
def loaded_database(name: str, investments: int) -> Iterator[tuple[str, dataset.Shape]]:
    """A fresh database `name` on BENCH_DATABASE_URL's server holding dataset D of `investments`
    investments, as (its URL, D's shape); dropped afterwards."""
    server = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    url = with_database(server, name)
    psql(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(server, f"CREATE DATABASE {name}")
    try:
        shape = replace(dataset.Shape(), investments=investments)
        dataset.load(url, shape)
        yield url, shape
    finally:
        psql(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sqlcost", description=__doc__)
    parser.add_argument("--investments", type=int, default=100_000)
    # CPU is read in clock ticks (10 ms): 3,000 requests resolve 3.3 µs per request.
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument(
        "--events", action="store_true", help="with the outbox written (a relay configured)"
    )
    parser.add_argument("--database", default="bench_sqlcost")
    args = parser.parse_args(argv)
    with loaded_database(args.database, args.investments) as (url, shape):
        if args.events:  # as while a relay runs: invest_many() writes the outbox
            psql(url, "UPDATE investment_event_relay SET seen_at = now() + interval '1 day'")
        figures = uvloop.run(measure(url, shape.users, shape.recruiting, requests=args.requests))
    print(
        "| statement | requests per call | calls | PostgreSQL CPU µs / request "
        "| client CPU µs / call | of which the event loop's thread |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, f in figures.items():
        statement = name.rsplit(" ", 1)[0]
        print(
            f"| {statement} | {f['requests_per_call']} | {f['calls']} | "
            f"{f['postgres_cpu_us_per_request']:,.1f} | {f['client_cpu_us_per_call']:,.1f} | "
            f"{f['client_loop_thread_us_per_call']:,.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
