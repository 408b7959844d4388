"""What a my-investments page costs PostgreSQL, statement by statement, and what keeping the read
model costs an invest: the alternatives of docs/performance.md ("My investments against a plain
implementation: a read model"), measured in one session each as bench.sqlcost measures (the
backend's CPU from /proc, the service's session options, prepared statements, generic plans).

    python -m bench.pagecost    # a fresh database `bench_pagecost` on BENCH_DATABASE_URL's server

The database: dataset D (1,000,000 investments by default), 1 % of them cancelled, vacuumed. The
page statements (requests for users holding about 10 and about 40 investments, 10 and 100 per
call, the first page of 1,000):
  read-model                    sql/queries.sql `my-investments-many`: the read model's index
  read-model-to-char            the same with the date rendered by to_char(), not a cast (as it
                                was until the service's sessions pinned DateStyle to ISO)
  ledger-join                   the statement before the read model (bench/pages/ledger-join.sql):
                                the ledger's by-user covering index and the product's head per
                                item; lists cancelled investments and has no investment_id
  ledger-join-not-exists        that one with investment_id and a NOT EXISTS per item against
                                the cancellations (what a plain query does)
  ledger-join-cancelled-array   that one with investment_id and the user's cancelled ids read
                                once per page (an index on the cancellations by user)
The ledger's by-user index is built again for the ledger-* statements. Then invest-batch
(10 and 100 per call) with the read model's trigger and without the ledger's by-user index (as
migrated) against the trigger disabled and that index back, alternated; and the size per million
investments of each relation.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from typing import Any

import psqlpy
import uvloop

from bench import dataset
from bench.cpu import TICKS_PER_SECOND
from bench.sqlcost import _ticks, loaded_database
from harness import ROOT
from harness.postgres import psql
from service.db import connection_options
from service.settings import Settings
from service.sql import queries

PAGES = ROOT / "bench" / "pages"
LEDGER_BY_USER = (
    "CREATE INDEX IF NOT EXISTS user_investment_goods_by_user ON user_investment_goods"
    " (user_id, invest_date, id) INCLUDE (goods_id, user_investing_amount)"
)
CANCELLED_BY_USER = (
    "CREATE INDEX IF NOT EXISTS user_investment_cancellation_by_user"
    " ON user_investment_cancellation (user_id) INCLUDE (investment_id)"
)
# invest-batch as migrated (the trigger, no by-user index) and as before the read model.
WITH_READ_MODEL = (
    "ALTER TABLE user_investment_goods ENABLE TRIGGER my_investment_item_added",
    "DROP INDEX IF EXISTS user_investment_goods_by_user",
)
WITHOUT_READ_MODEL = (
    "ALTER TABLE user_investment_goods DISABLE TRIGGER my_investment_item_added",
    LEDGER_BY_USER,
)
PARTS = ("pages", "invest")
RELATIONS = (
    "my_investment_item",
    "my_investment_item_pkey",
    "my_investment_item_by_goods",
    "user_investment_goods",
    "user_investment_goods_pkey",
    "user_investment_goods_by_user",
)


def statements() -> dict[str, str]:
    read_model = queries()["my-investments-many"]
    by_to_char = read_model.replace(
        "date_trunc('second', m.invest_date::timestamp)::text",
        "to_char(m.invest_date, 'YYYY-MM-DD HH24:MI:SS')",
    )
    assert by_to_char != read_model, "the read model's statement no longer renders the date so"
    # The read model's scan (from its SELECT to its ORDER BY) replaced by the ledger's.
    start = read_model.index("        SELECT m.item")
    end = read_model.index("        LIMIT r.page + 1")
    rows = "".join(
        line + "\n"
        for line in (PAGES / "ledger-join.sql").read_text().splitlines()
        if not line.startswith("--")
    )
    ledger = read_model[:start] + rows + read_model[end:]
    scan = "        WHERE l.user_id = r.user_id\n"
    live = {  # the ledger statement with the investment's id and without cancelled ones
        "ledger-join-not-exists": "NOT EXISTS (SELECT 1 FROM user_investment_cancellation c"
        " WHERE c.investment_id = l.id)",
        "ledger-join-cancelled-array": "l.id <> ALL (coalesce((SELECT array_agg(c.investment_id)"
        " FROM user_investment_cancellation c WHERE c.user_id = r.user_id), '{}'))",
    }
    closing = "|| '\"}'\n"  # the item's end, after its date
    with_id = "|| '\",\"investment_id\":' || l.id::text || '}'\n"
    assert scan in ledger and closing in ledger, "bench/pages/ledger-join.sql changed"
    found = {"read-model": read_model, "read-model-to-char": by_to_char, "ledger-join": ledger}
    for name, condition in live.items():
        found[name] = ledger.replace(scan, f"{scan}          AND {condition}\n").replace(
            closing, with_id
        )
    return found


async def cost(
    conn: psqlpy.Connection, pid: int, sql: str, params: Callable[[], list[Any]], calls: int
) -> float:
    """PostgreSQL CPU µs per call of `sql` (warmed up first)."""
    for _ in range(5):
        await conn.execute(sql, params(), prepared=True)
    batches = [params() for _ in range(calls)]
    before = _ticks(pid)
    for batch in batches:
        await conn.execute(sql, batch, prepared=True)
    return (_ticks(pid) - before) / TICKS_PER_SECOND * 1e6 / calls


async def measure(
    url: str, users: int, requests: int, rounds: int, parts: tuple[str, ...] = PARTS
) -> dict[str, Any]:
    admin = await psqlpy.connect(dsn=url)
    conn = await psqlpy.connect(dsn=url, options=connection_options(Settings()))
    try:
        pid = (await conn.execute("SELECT pg_backend_pid()")).result(as_tuple=True)[0][0]
        rng = random.Random(1)
        holders = {
            items: [user for user, _ in dataset.users_holding(url, items)]
            for items in dataset.PAGE_ITEMS
        }
        pages: dict[str, list[float]] = {}
        for _ in range(rounds if "pages" in parts else 0):
            for items in dataset.PAGE_ITEMS:
                for size in (10, 100):
                    for name, sql in statements().items():

                        def params(items: int = items, size: int = size) -> list[Any]:
                            return [[rng.choice(holders[items]) for _ in range(size)],
                                    [1000] * size, [None] * size, [None] * size]  # fmt: skip

                        calls = max(20, requests // size)
                        per_call = await cost(conn, pid, sql, params, calls)
                        key = f"{name} ~{items} items x{size}"
                        pages.setdefault(key, []).append(round(per_call / size, 1))
        invest = queries()["invest-batch"]
        invests: dict[str, list[float]] = {}
        # In the order with, without, without, with, …: invests bloat the hot products' rows
        # (vacuumed before each figure, still a drift) and the ledger grows, so that a drift
        # weighs on both sides alike.
        order = [("with", WITH_READ_MODEL), ("without", WITHOUT_READ_MODEL)]
        for turn in range(rounds if "invest" in parts else 0):
            for label, setup in order if turn % 2 == 0 else order[::-1]:
                for statement in setup:
                    await admin.execute(statement)
                await admin.execute("VACUUM investment_goods")
                for size in (10, 100):

                    def orders(size: int = size) -> list[Any]:
                        goods = [rng.randint(1, 100) for _ in range(size)]
                        buyers = [rng.randint(1, users) for _ in range(size)]
                        amounts = [rng.randint(1_000, 100_000) for _ in range(size)]
                        return [goods, buyers, amounts, None]

                    per_call = await cost(conn, pid, invest, orders, max(20, requests // size))
                    key = f"invest-batch x{size}, {label} the read model"
                    invests.setdefault(key, []).append(round(per_call / size, 1))
        for statement in WITH_READ_MODEL:
            await admin.execute(statement)
        return {"pages": pages, "invests": invests}
    finally:
        conn.close()
        admin.close()


def sizes(url: str) -> dict[str, float]:
    """MB per million investments of each relation (absent ones left out)."""
    rows = int(psql(url, "SELECT count(*) FROM user_investment_goods"))
    out = {}
    for name in RELATIONS:
        found = psql(url, f"SELECT pg_relation_size(to_regclass('{name}'))")
        if found:
            out[name] = round(int(found) / 2**20 * 10**6 / rows, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pagecost", description=__doc__)
    parser.add_argument("--investments", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=20_000, help="per figure")
    parser.add_argument("--rounds", type=int, default=2, help="each figure this many times")
    parser.add_argument("--cancelled-percent", type=int, default=1)
    parser.add_argument("--only", choices=PARTS, default=None, help="pages or invest alone")
    args = parser.parse_args(argv)
    with loaded_database("bench_pagecost", args.investments) as (url, shape):
        psql(
            url,
            "INSERT INTO user_investment_cancellation (investment_id, user_id, goods_id,"
            " cancelled_amount, current_investing_amount, state)"
            " SELECT id, user_id, goods_id, user_investing_amount, 0, 'recruiting'"
            f" FROM user_investment_goods WHERE id % 100 < {int(args.cancelled_percent)}",
        )
        size_of = sizes(url)  # as migrated: the read model, no by-user index on the ledger
        psql(url, LEDGER_BY_USER)
        psql(url, CANCELLED_BY_USER)
        psql(url, "VACUUM ANALYZE")
        size_of |= {k: v for k, v in sizes(url).items() if k not in size_of}
        parts = PARTS if args.only is None else (args.only,)
        figures = uvloop.run(measure(url, shape.users, args.requests, args.rounds, parts))
    print("| page statement | PostgreSQL CPU µs / page (each round) |\n|---|---|")
    for name, values in figures["pages"].items():
        print(f"| {name} | {' · '.join(f'{v:g}' for v in values)} |")
    print("\n| invest | PostgreSQL CPU µs / invest (each round) |\n|---|---|")
    for name, values in figures["invests"].items():
        print(f"| {name} | {' · '.join(f'{v:g}' for v in values)} |")
    print("\n| relation | MB per million investments |\n|---|---:|")
    for name, mb in size_of.items():
        print(f"| {name} | {mb:g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
