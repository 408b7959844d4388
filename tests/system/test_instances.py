"""Several instances on one database, and one of them killed (-9) in the middle of the load.

Three service instances (separate granian processes on separate ports, each with its own pool)
share one PostgreSQL. A driver spreads thousands of invests from many users over them, across many
products of which several sell out. Every order carries an Idempotency-Key; an order whose
instance dies is retried on another instance with the same key, as a client would. Afterwards:
the ledger verifier finds nothing, no product's ledger exceeds its total, every sold-out product
has exactly one partial fill, and the positive answers and the ledger rows match one to one.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.load import check_ledger, drive, make_orders
from tests.support import (
    ServiceProcess,
    migrated_database,
    running_services,
)

pytestmark = pytest.mark.system

ORDERS = 5_000


@pytest.fixture
def database(postgres_server: str) -> Iterator[str]:
    with migrated_database(postgres_server) as url:
        yield url


@pytest.fixture
def instances(database: str) -> Iterator[list[ServiceProcess]]:
    with running_services(database, 3, workers=1, DB_POOL_SIZE="16") as services:
        yield services


def test_three_instances_share_one_database_without_a_lost_or_extra_row(
    instances: list[ServiceProcess], database: str
) -> None:
    # 150 orders a product, as in the spread test below: every other product still sells out.
    orders, totals = make_orders(database, seed=1, count=3_000)
    asyncio.run(drive([i.base_url for i in instances], orders))
    assert all(order.attempts[-1] == "200" for order in orders)
    check_ledger(database, orders, totals)
    replays = [o for o in orders if len(o.attempts) > 1]
    assert replays == []  # nothing failed, so nothing was retried


def test_load_spread_over_many_products_on_two_instances_of_two_workers(database: str) -> None:
    """Coalesced calls carry many products at once: 40 products (20 sell out), a third of the
    orders without Idempotency-Key, a tenth cancelled once invested, 2 instances of 2 workers
    each."""
    orders, totals = make_orders(database, seed=7, count=6_000, products=40, users=600, cancels=0.1)
    for order in orders[::3]:
        order.key = None
    with running_services(database, 2, workers=2, DB_POOL_SIZE="16") as services:
        asyncio.run(drive([s.base_url for s in services], orders, concurrency=160))
    assert all(order.attempts == ["200"] for order in orders)
    check_ledger(database, orders, totals)


def test_an_instance_killed_mid_load_loses_no_accepted_investment(
    instances: list[ServiceProcess], database: str
) -> None:
    orders, totals = make_orders(database, seed=2, cancels=0.1)
    victim = instances[0]
    asyncio.run(drive([i.base_url for i in instances], orders, kill=(ORDERS // 3, victim)))
    assert victim.process.wait(10) == -signal.SIGKILL
    failed = Counter(a for o in orders for a in o.attempts + o.cancel_attempts if not a.isdigit())
    assert failed, "the kill happened after the load"
    check_ledger(database, orders, totals)
    retried = sum(1 for o in orders if len(o.attempts) > 1)
    print(  # the figures the README's reliability section quotes
        f"\nkilled one instance of 3 after {ORDERS // 3} answers: {sum(failed.values())} attempts"
        f" failed ({dict(failed)}), {retried} orders retried with their keys, 0 lost or doubled"
    )
