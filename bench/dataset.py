"""Dataset D: products, users and a ledger of investments, generated inside PostgreSQL.

Deterministic without any random state: every value of row i is a hash of (i, SEED), so loading
10^6 rows at once or in steps (10^4, 10^5, 10^6, ... for scenario G) gives the same rows, and any
size is a prefix of every larger one. Row i belongs to one of the first ceil(i / 10) users (row
10k+1 opens user k+1), so a ledger of N rows has N / 10 users, each holding at least one and on
average 10 investments (early users hold more).
Rows go in with INSERT ... SELECT generate_series; the product counters, investment_goods_investor
(with each user's live amount in the product) and the investors' positions are then derived from
the ledger in SQL, exactly as invest_many() keeps them. Every tenth product is of category
real_estate, so that with caps on (bench/caps.py) invests meet all three caps.

    python -m bench.dataset --investments 1000000   # DATABASE_URL: migrated on the way, must be new
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, dataclass

from bench.target import migrate, psql

SEED = 20210402  # the seed fixture's date
INVESTMENTS_PER_USER = 10
CHUNK = 1_000_000  # rows per transaction
REBUILD_INDEXES_FROM = 2_000_000  # larger loads: the ledger's and its read model's indexes rebuilt

# The window the list scenario asks for: it holds the recruiting products and nothing else.
WINDOW = ("2020-01-01 00:00:00", "2099-12-31 00:00:00")
RECRUITING_TOTAL = 10**15  # never sells out during a run
OTHER_TOTAL = 10**13  # above any ledger this generator writes (10^7 rows of <= 100,000)
# My investments' page sizes the bench measures: users holding about 10 and about 40 investments
# (users_holding), the pages of issue 18's targets.
PAGE_ITEMS = (10, 40)


@dataclass(frozen=True)
class Shape:
    products: int = 1_000
    recruiting: int = 100  # goods_id 1..recruiting, inside WINDOW and open now
    investments: int = 1_000_000

    @property
    def users(self) -> int:
        return users_for(self.investments)


def users_for(investments: int) -> int:
    return max(1, -(-investments // INVESTMENTS_PER_USER))


def _h(i: str, salt: int, modulo: str) -> str:
    """SQL: a non-negative hash of row i into [0, modulo), stable across sessions and versions."""
    return f"((hashint8extended({i}, {SEED + salt}) % ({modulo})) + ({modulo})) % ({modulo})"


def load_products(url: str, shape: Shape) -> None:
    """The products: recruiting ones inside WINDOW, the rest before it (finished, or closed);
    every tenth one real estate."""
    n, r = shape.products, shape.recruiting
    psql(
        url,
        f"""
        INSERT INTO investment_goods (goods_id, title, total_investing_amount, status,
                                      started_at, finished_at, category)
        SELECT k, '벤치 상품 ' || k,
               CASE WHEN k <= {r} THEN {RECRUITING_TOTAL} ELSE {OTHER_TOTAL} END,
               NOT (k > {r} AND k % 3 = 0),
               CASE WHEN k <= {r} THEN timestamptz '2020-01-01 00:00:00+00' + k * interval '1 hour'
                    ELSE timestamptz '2019-01-01 00:00:00+00' + k * interval '1 hour' END,
               CASE WHEN k <= {r} THEN timestamptz '2099-01-01 00:00:00+00'
                    ELSE timestamptz '2024-12-31 00:00:00+00' END,
               CASE WHEN k % 10 = 0 THEN 'real_estate' ELSE 'general' END
        FROM generate_series(1, {n}) AS k;
        """,
    )


def _ledger_rows(start: int, stop: int, products: int) -> str:
    """SQL inserting ledger rows start+1 .. stop (one hash per column)."""
    # The first row of every ten opens a new user; the other nine go to any user so far.
    user = f"CASE WHEN i % 10 = 1 THEN (i + 9) / 10 ELSE 1 + {_h('i', 1, '(i + 9) / 10')} END"
    return f"""
        INSERT INTO user_investment_goods (user_id, goods_id, user_investing_amount, invest_date)
        SELECT {user},
               1 + {_h("i", 2, str(products))},
               1000 * (1 + {_h("i", 3, "100")}),
               timestamptz '2020-01-02 00:00:00+00' + i * interval '2 seconds'
        FROM generate_series({start + 1}::bigint, {stop}::bigint) AS i;
    """


def _secondary_indexes(url: str) -> list[tuple[str, str]]:
    """(how to drop, how to build again) each index a large load would update row by row: the
    ledger's secondary ones, and every index of the tables the schema derives from it by trigger
    (my investments' read model, its primary key too), read back from the catalog."""
    out = psql(
        url,
        "SELECT 'DROP INDEX ' || quote_ident(i.indexname), i.indexdef FROM pg_indexes i"
        " JOIN pg_index x ON x.indexrelid = (quote_ident(i.indexname))::regclass"
        " WHERE i.tablename = 'user_investment_goods' AND NOT x.indisprimary"
        " UNION ALL"
        " SELECT 'ALTER TABLE ' || c.conrelid::regclass || ' DROP CONSTRAINT '"
        " || quote_ident(c.conname), 'ALTER TABLE ' || c.conrelid::regclass"
        " || ' ADD CONSTRAINT ' || quote_ident(c.conname) || ' ' || pg_get_constraintdef(c.oid)"
        " FROM pg_constraint c WHERE c.conrelid = to_regclass('my_investment_item')"
        " AND c.contype = 'p'"
        " UNION ALL"
        " SELECT 'DROP INDEX ' || quote_ident(i.indexname), i.indexdef FROM pg_indexes i"
        " JOIN pg_index x ON x.indexrelid = (quote_ident(i.indexname))::regclass"
        " WHERE i.tablename = 'my_investment_item' AND NOT x.indisprimary ORDER BY 1",
    )
    return [tuple(line.split("\t", 1)) for line in out.splitlines() if line]  # type: ignore[misc]


def extend_ledger(url: str, start: int, stop: int, products: int) -> None:
    """Append generated rows start+1 .. stop and bring counters and investors up to date."""
    if stop <= start:
        return
    indexes = _secondary_indexes(url) if stop - start >= REBUILD_INDEXES_FROM else []
    if indexes:
        # Same definitions read back from the catalog: rebuilt as the migrations made them.
        psql(url, "".join(f"{drop};\n" for drop, _ in indexes))
    for low in range(start, stop, CHUNK):
        psql(url, _ledger_rows(low, min(stop, low + CHUNK), products))
    if indexes:
        psql(url, "SET maintenance_work_mem = '512MB';\n" + "".join(f"{d};\n" for _, d in indexes))
    sync_counters(url)


def sync_counters(url: str) -> None:
    """Derive investment_goods_investor, the product counters and the investors' positions from
    the ledger."""
    psql(
        url,
        """
        SET work_mem = '256MB';
        INSERT INTO investment_goods_investor AS i (goods_id, user_id, amount)
        SELECT l.goods_id, l.user_id, sum(l.user_investing_amount) FROM user_investment_goods l
        WHERE NOT EXISTS (SELECT FROM user_investment_cancellation c WHERE c.investment_id = l.id)
        GROUP BY l.goods_id, l.user_id
        ON CONFLICT (goods_id, user_id) DO UPDATE SET amount = EXCLUDED.amount
        WHERE i.amount <> EXCLUDED.amount;
        INSERT INTO investor AS i (user_id, invested_total, invested_real_estate)
        SELECT p.user_id, coalesce(sum(p.amount) FILTER (WHERE NOT g.repaid), 0),
               coalesce(sum(p.amount) FILTER (WHERE NOT g.repaid AND g.category = 'real_estate'),
                        0)
        FROM investment_goods_investor p JOIN investment_goods g USING (goods_id)
        GROUP BY p.user_id
        ON CONFLICT (user_id) DO UPDATE
        SET invested_total = EXCLUDED.invested_total,
            invested_real_estate = EXCLUDED.invested_real_estate
        WHERE (i.invested_total, i.invested_real_estate)
              IS DISTINCT FROM (EXCLUDED.invested_total, EXCLUDED.invested_real_estate);
        UPDATE investment_goods g
        SET current_investing_amount = coalesce(l.amount, 0),
            investor_count = coalesce(v.investors, 0)
        FROM investment_goods p
        LEFT JOIN (SELECT goods_id, sum(user_investing_amount) AS amount
                   FROM user_investment_goods GROUP BY goods_id) l USING (goods_id)
        LEFT JOIN (SELECT goods_id, count(*) AS investors
                   FROM investment_goods_investor GROUP BY goods_id) v USING (goods_id)
        WHERE g.goods_id = p.goods_id
          AND (g.current_investing_amount, g.investor_count)
              IS DISTINCT FROM (coalesce(l.amount, 0), coalesce(v.investors, 0));
        """,
    )
    # The whole database: the tables derived from the ledger by the schema's own triggers too
    # (my investments' read model), so that their pages are all-visible (index-only scans).
    psql(url, "VACUUM ANALYZE")


@dataclass(frozen=True, slots=True)
class Consistency:
    products: int
    ledger_rows: int
    counter_mismatches: int  # products whose counters differ from what the ledger says
    investor_mismatches: int  # (goods, user) pairs in one of ledger / investor table only

    @property
    def ok(self) -> bool:
        return self.counter_mismatches == 0 and self.investor_mismatches == 0


def check_consistency(url: str, goods_id: int | None = None) -> Consistency:
    """Counters == ledger for every product (or one), and investors == distinct ledger users."""
    only = "" if goods_id is None else f"WHERE goods_id = {int(goods_id)}"
    also = "" if goods_id is None else f"AND g.goods_id = {int(goods_id)}"
    out = psql(
        url,
        f"""
        SET work_mem = '256MB';
        WITH l AS (SELECT goods_id, sum(user_investing_amount) AS amount,
                          count(DISTINCT user_id) AS investors, count(*) AS rows
                   FROM user_investment_goods {only} GROUP BY goods_id),
             pairs AS (SELECT DISTINCT goods_id, user_id FROM user_investment_goods {only}),
             investors AS (SELECT goods_id, user_id FROM investment_goods_investor {only})
        SELECT (SELECT count(*) FROM investment_goods {only}),
               (SELECT coalesce(sum(rows), 0) FROM l),
               (SELECT count(*) FROM investment_goods g LEFT JOIN l USING (goods_id)
                WHERE (g.current_investing_amount, g.investor_count)
                      IS DISTINCT FROM (coalesce(l.amount, 0), coalesce(l.investors, 0)) {also}),
               (SELECT count(*) FROM ((TABLE pairs EXCEPT TABLE investors)
                                      UNION ALL (TABLE investors EXCEPT TABLE pairs)) d);
        """,
    )
    products, rows, counters, investors = (int(v) for v in out.splitlines()[-1].split("\t"))
    return Consistency(products, rows, counters, investors)


def users_holding(url: str, items: int, count: int = 1000) -> list[tuple[int, int]]:
    """The `count` users whose number of investments is nearest `items` (ties: the lowest user
    ids), as (user_id, investments): a my-investments page of about `items` items each. Row i
    goes to one of the first i / 10 users, so user k holds about 1 + 9 ln(N / 10k) rows: in D,
    thousands of users hold about 10 and about a thousand hold about 40."""
    out = psql(
        url,
        "SELECT user_id, n FROM (SELECT user_id, count(*) AS n FROM user_investment_goods"
        f" GROUP BY user_id) c ORDER BY abs(n - {int(items)}), user_id LIMIT {int(count)}",
    )
    return [(int(user), int(n)) for user, n in (line.split("\t") for line in out.splitlines())]


def ledger_size(url: str) -> int:
    return int(psql(url, "SELECT count(*) FROM user_investment_goods"))


def load(url: str, shape: Shape, *, migrated: bool = False) -> dict[str, float]:
    """Migrate a new database and load `shape` into it; returns the seconds each part took."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    if not migrated:
        migrate(url)
        timings["migrate_s"] = time.monotonic() - started
    if int(psql(url, "SELECT count(*) FROM investment_goods")) != 0:
        raise RuntimeError("the database already holds products: load D into a new database")
    step = time.monotonic()
    load_products(url, shape)
    extend_ledger(url, 0, shape.investments, shape.products)
    timings["load_s"] = time.monotonic() - step
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dataset", description=__doc__)
    parser.add_argument("--products", type=int, default=Shape.products)
    parser.add_argument("--recruiting", type=int, default=Shape.recruiting)
    parser.add_argument("--investments", type=int, default=Shape.investments)
    parser.add_argument(
        "--extend-from", type=int, default=None, metavar="N",
        help="append rows N+1..investments to a database loaded up to N",
    )  # fmt: skip
    parser.add_argument("--check", action="store_true", help="verify counters against the ledger")
    args = parser.parse_args(argv)
    url = os.environ.get("DATABASE_URL")
    if not url:
        print("DATABASE_URL is required", file=sys.stderr)
        return 2
    shape = Shape(args.products, args.recruiting, args.investments)
    started = time.monotonic()
    if args.extend_from is not None:
        extend_ledger(url, args.extend_from, shape.investments, shape.products)
        timings = {"load_s": time.monotonic() - started}
    else:
        timings = load(url, shape)
    print({**asdict(shape), "users": shape.users, **{k: round(v, 1) for k, v in timings.items()}})
    if args.check:
        print(check_consistency(url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
