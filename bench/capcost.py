"""What investor caps cost an invest call: PostgreSQL's CPU per request of `invest-batch` on one
database, one session (bench.sqlcost's method), with the caps off, with the Act's caps on for
every user (general: 5,000,000 per product, 30,000,000 in total, 10,000,000 in real estate; a
third of the products real estate), and with caps small enough that most calls have a user
passing one (then the call decides its requests one by one: the serial path).

python -m bench.capcost   # a fresh database `bench_capcost` on BENCH_DATABASE_URL's server

The three settings are measured in turns (off, Act, binding, off, Act, binding, ...) so that a
machine that is not quiet moves them alike; each figure is the median of the rounds.
"""

from __future__ import annotations

import argparse
import random
import statistics
from typing import Any

import psqlpy
import uvloop

from bench import dataset
from bench.cpu import TICKS_PER_SECOND
from bench.sqlcost import _ticks, loaded_database
from harness.postgres import psql
from service.db import connection_options
from service.settings import Settings
from service.sql import queries

PER_CALL = (10, 100)
CAPS = {
    "off": (None, None, None),
    "act": (5_000_000, 30_000_000, 10_000_000),
    "binding": (150_000, 400_000, 200_000),
}


def _caps_sql(caps: tuple[int | None, int | None, int | None]) -> str:
    per_product, total, real_estate = ("NULL" if v is None else str(v) for v in caps)
    return (
        f"UPDATE investor_class_limit SET per_product = {per_product}, total = {total},"
        f" real_estate = {real_estate} WHERE investor_class = 'general'"
    )


async def measure(
    url: str, users: int, recruiting: int, requests: int, rounds: int, seed: int = 1
) -> dict[str, dict[str, Any]]:
    conn = await psqlpy.connect(dsn=url, options=connection_options(Settings()))
    statement = queries()["invest-batch"]
    rng = random.Random(seed)
    try:
        pid = (await conn.execute("SELECT pg_backend_pid()")).result(as_tuple=True)[0][0]

        def params(size: int) -> list[Any]:
            return [
                [rng.randint(1, recruiting) for _ in range(size)],
                [rng.randint(1, users) for _ in range(size)],
                [1_000 * rng.randint(1, 100) for _ in range(size)],
                None,
            ]

        samples: dict[str, list[float]] = {}
        refused: dict[str, int] = {}
        for _ in range(rounds):
            for name, caps in CAPS.items():
                await conn.execute(_caps_sql(caps))
                for size in PER_CALL:
                    calls = max(20, requests // size)
                    for _ in range(3):  # warm: prepared, plans cached
                        await conn.execute(statement, params(size), prepared=True)
                    batches = [params(size) for _ in range(calls)]
                    before = _ticks(pid)
                    for batch in batches:
                        rows = (await conn.execute(statement, batch, prepared=True)).result(
                            as_tuple=True
                        )
                        refused[f"{name} x{size}"] = refused.get(f"{name} x{size}", 0) + sum(
                            1 for row in rows if row[1] == "limit"
                        )
                    used = (_ticks(pid) - before) / TICKS_PER_SECOND
                    samples.setdefault(f"{name} x{size}", []).append(used * 1e6 / (calls * size))
        await conn.execute(_caps_sql(CAPS["off"]))
        return {
            label: {
                "postgres_cpu_us_per_request": round(statistics.median(values), 1),
                "rounds": len(values),
                "refused": refused[label],
            }
            for label, values in samples.items()
        }
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capcost", description=__doc__)
    parser.add_argument("--investments", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=3_000, help="per setting, size, round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with loaded_database("bench_capcost", args.investments) as (url, shape):
        psql(url, "UPDATE investment_goods SET category = 'real_estate' WHERE goods_id % 3 = 0")
        dataset.sync_counters(url)  # the real-estate totals, after the categories
        figures = uvloop.run(
            measure(url, shape.users, shape.recruiting, args.requests, args.rounds)
        )
    print("| caps | requests per call | PostgreSQL CPU µs / request | vs off | refused (limit) |")
    print("|---|---:|---:|---:|---:|")
    for label, figure in figures.items():
        name, size = label.split(" x")
        off = figures[f"off x{size}"]["postgres_cpu_us_per_request"]
        ratio = figure["postgres_cpu_us_per_request"] / off if off else float("nan")
        print(
            f"| {name} | {size} | {figure['postgres_cpu_us_per_request']:,.1f} | {ratio:.2f}× |"
            f" {figure['refused']:,} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
