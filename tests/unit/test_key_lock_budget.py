"""key_lock_budget(): the keyed requests per invest call that keep every session within its share."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.db import INVEST_MANY_OWN_LOCKS, key_lock_budget
from service.ops.embedded import EmbeddedPostgres
from service.settings import Settings


def test_a_call_takes_at_most_its_connections_share_of_the_lock_table() -> None:
    # PostgreSQL's default, the embedded server's, and a large one.
    assert key_lock_budget(64) == 44
    assert key_lock_budget(520) == 500
    assert key_lock_budget(4096) == 4076


@pytest.mark.parametrize("per_transaction", [21, 64, 100, 256, 512, 10_000])
@pytest.mark.parametrize(("connections", "prepared"), [(20, 0), (100, 0), (100, 100), (5000, 0)])
def test_every_connection_holding_a_full_call_at_once_fits_the_table(
    per_transaction: int, connections: int, prepared: int
) -> None:
    # However many of the server's connections (every instance's pool and every other session)
    # run a call with the largest keyed batch at the same time, with all of its own locks.
    slots = connections + prepared
    table = per_transaction * slots
    assert (key_lock_budget(per_transaction) + INVEST_MANY_OWN_LOCKS) * slots <= table


def test_a_keyed_request_always_fits_some_call() -> None:
    # PostgreSQL accepts max_locks_per_transaction down to 10.
    assert key_lock_budget(10) == 1
    assert key_lock_budget(INVEST_MANY_OWN_LOCKS) == 1


def test_the_embedded_server_lets_a_full_call_carry_its_keys_nearly_all(tmp_path: Path) -> None:
    # An opening rush of keyed invests should not need many calls where one would do.
    embedded = EmbeddedPostgres(tmp_path / "pg", 5432)
    per_transaction = int(embedded.server_settings()["max_locks_per_transaction"])
    assert key_lock_budget(per_transaction) >= 0.99 * Settings().invest_batch_max
