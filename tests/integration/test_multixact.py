"""invest_many() makes no MultiXact: the product rows (and every other row a call writes) are
locked and updated by one and the same transaction id, sequentially and under contention.

PostgreSQL's MultiXact counter is server-wide and other databases may make MultiXacts meanwhile,
so the test counts only the MultiXacts that have one of its own transactions as a member (each
call records its transaction id)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.postgres import pg_tool, psql
from tests.support import create_goods


def _next_multixact(url: str) -> int:
    return int(
        psql(
            url, "CHECKPOINT; SELECT next_multixact_id FROM pg_control_checkpoint()", script=True
        ).splitlines()[-1]
    )


def _ours(url: str, since: int, until: int) -> int:
    """MultiXacts created in [since, until) with a member among this test's transactions."""
    if until <= since:
        return 0
    return int(
        psql(
            url,
            "SELECT count(DISTINCT m) FROM generate_series("
            f"{since}::bigint, {until - 1}::bigint) m"
            " CROSS JOIN LATERAL pg_get_multixact_members(m::text::xid) p"
            " WHERE p.xid::text IN"
            " (SELECT (x::bigint % 4294967296)::text FROM multixact_probe_calls)",
        )
    )


def _pgbench(url: str, script: Path, clients: int, per_client: int) -> None:
    done = subprocess.run(
        [
            pg_tool("pgbench"),
            "-n",
            "-c",
            str(clients),
            "-t",
            str(per_client),
            "-f",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def probe_calls(database_url: str) -> Iterator[None]:
    """The transaction ids of the probe's calls, in a table of the shared test database that
    goes with the test (test_least_privilege lists every table the service's role may read)."""
    psql(database_url, "CREATE TABLE IF NOT EXISTS multixact_probe_calls (x text)")
    yield
    psql(database_url, "DROP TABLE IF EXISTS multixact_probe_calls")


@pytest.mark.usefixtures("probe_calls")
def test_invest_calls_make_no_multixact(database_url: str, tmp_path: Path) -> None:
    goods = [create_goods(database_url, total=10**12) for _ in range(3)]
    script = tmp_path / "invest.sql"
    script.write_text(
        "\\set u random(1, 50)\n"
        "BEGIN;\n"
        f"SELECT count(*) FROM invest_many(ARRAY[{goods[0]}, {goods[1]}, {goods[2]}]::bigint[],"
        " ARRAY[:u, :u + 1, :u]::bigint[], ARRAY[10, 20, 30]::bigint[], NULL);\n"
        "INSERT INTO multixact_probe_calls VALUES (pg_current_xact_id()::text);\n"
        "COMMIT;\n"
    )
    before = _next_multixact(database_url)
    _pgbench(database_url, script, clients=1, per_client=200)
    sequential = _next_multixact(database_url)
    _pgbench(database_url, script, clients=8, per_client=40)
    concurrent = _next_multixact(database_url)
    # With a cap every user soon reaches: calls whose set-wise grants would pass it take their
    # amounts back and decide one by one (docs/reliability.md "Investor caps").
    psql(
        database_url,
        "UPDATE investor_class_limit SET per_product = 400 WHERE investor_class = 'general'",
    )
    try:
        _pgbench(database_url, script, clients=8, per_client=40)
    finally:
        psql(
            database_url,
            "UPDATE investor_class_limit SET per_product = NULL WHERE investor_class = 'general'",
        )
    capped = _next_multixact(database_url)
    assert psql(database_url, "SELECT count(*) FROM multixact_probe_calls") == "840"
    assert _ours(database_url, before, sequential) == 0
    assert _ours(database_url, sequential, concurrent) == 0
    assert _ours(database_url, concurrent, capped) == 0
    # Every call before the cap did invest (520 calls × 60 per call); then some were refused.
    invested = psql(
        database_url,
        "SELECT sum(current_investing_amount) FROM investment_goods"
        f" WHERE goods_id IN ({goods[0]}, {goods[1]}, {goods[2]})",
    )
    assert 520 * 60 <= int(invested) < 840 * 60
