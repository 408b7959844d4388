"""The ledger verifier (`python -m service verify`): silent on a sound ledger, names every breach."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.support import (
    ROOT,
    counters,
    create_goods,
    fresh_user,
    ledger_sum,
    migrated_database,
    psql,
    verify_ledger,
)


def run_verify(database_url: str) -> tuple[int, list[dict[str, object]]]:
    done = subprocess.run(
        [sys.executable, "-m", "service", "verify"],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture
def scratch(postgres_server: str) -> Iterator[str]:
    """A migrated database of its own, to break on purpose."""
    with migrated_database(postgres_server) as url:
        yield url


def test_the_ledger_written_through_the_service_verifies(
    client: httpx.Client, database_url: str
) -> None:
    goods_id = create_goods(database_url, total=10_000)
    answers = []
    for amount in (3_000, 3_000, 5_000, 1_000):
        response = client.post(
            "/v1/api/investment/user/goods",
            headers={"X-USER-ID": str(fresh_user()), "Idempotency-Key": "v"},
            json={"goodsId": goods_id, "investmentAmount": amount},
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        answers.append(
            (
                answer["requested_amount"],
                answer["investment_amount"],
                answer["status"],
                answer["current_investing_amount"],
                answer["state"],
            )
        )
    assert answers == [
        (3_000, 3_000, True, 3_000, "recruiting"),
        (3_000, 3_000, True, 6_000, "recruiting"),
        (5_000, 4_000, False, 10_000, "sold_out"),  # the remainder sells it out
        (1_000, 0, False, 10_000, "sold_out"),  # nothing written
    ]
    assert ledger_sum(database_url, goods_id) == 10_000
    assert counters(database_url, goods_id) == (10_000, 3)
    summary = verify_ledger(database_url)
    assert summary["violations"] == 0
    assert summary["ledger_rows"] >= 3


def ledger_row(url: str, goods_id: int, user: int, amount: int) -> None:
    psql(
        url,
        "INSERT INTO user_investment_goods (user_id, goods_id, user_investing_amount)"
        f" VALUES ({user}, {goods_id}, {amount})",
    )


BREACHES = {
    "current_equals_ledger": lambda url, g: ledger_row(url, g, 1, 500),
    "investor_count_equals_ledger": lambda url, g: psql(
        url, f"UPDATE investment_goods SET investor_count = 3 WHERE goods_id = {g}"
    ),
    "investor_table_equals_ledger": lambda url, g: psql(
        url, f"INSERT INTO investment_goods_investor VALUES ({g}, 42, 500)"
    ),
    # An investment of 100 whose cancellation names another amount: the product shows it live.
    "cancellation_matches_investment": lambda url, g: psql(
        url,
        "INSERT INTO user_investment_goods (id, user_id, goods_id, user_investing_amount)"
        f" VALUES (777001, 7, {g}, 100);"
        f" INSERT INTO investment_goods_investor VALUES ({g}, 7, 100);"
        f" UPDATE investment_goods SET current_investing_amount = 100, investor_count = 1"
        f" WHERE goods_id = {g};"
        " INSERT INTO user_investment_cancellation (investment_id, user_id, goods_id,"
        " cancelled_amount, current_investing_amount, state)"
        f" VALUES (777001, 7, {g}, 99, 0, 'recruiting')",
    ),
    # Counters right, but the user's live amount in the product is not its ledger sum.
    "investor_amount_equals_ledger": lambda url, g: psql(
        url,
        "INSERT INTO user_investment_goods (user_id, goods_id, user_investing_amount)"
        f" VALUES (7, {g}, 100);"
        f" INSERT INTO investment_goods_investor VALUES ({g}, 7, 60);"
        f" UPDATE investment_goods SET current_investing_amount = 100, investor_count = 1"
        f" WHERE goods_id = {g}",
    ),
    "ledger_within_total": lambda url, g: ledger_row(url, g, 1, 1_001),
    "current_within_total": lambda url, g: psql(
        url,
        "ALTER TABLE investment_goods DROP CONSTRAINT investment_goods_current_within_total;"
        f" UPDATE investment_goods SET current_investing_amount = 1001 WHERE goods_id = {g}",
    ),
    "positive_amounts": lambda url, g: psql(
        url,
        "ALTER TABLE user_investment_goods DROP CONSTRAINT user_investment_goods_amount_positive;"
        f" INSERT INTO user_investment_goods (user_id, goods_id, user_investing_amount) VALUES (1, {g}, -5)",
    ),
    "idempotent_answers_in_ledger": lambda url, g: psql(
        url,
        "INSERT INTO investment_idempotency (user_id, idempotency_key, goods_id, requested_amount,"
        " found, investment_amount, invest_date, investment_id)"
        f" VALUES (1, 'k', {g}, 100, true, 100, '2026-01-01 00:00:00', 987654)",
    ),
}


@pytest.mark.parametrize("check", sorted(BREACHES))
def test_each_breach_is_named_and_fails_the_run(scratch: str, check: str) -> None:
    goods_id = create_goods(scratch, total=1_000)
    assert run_verify(scratch) == (
        0,
        [{"violations": 0, "products": 1, "ledger_rows": 0, "ledger_sum": 0, "cancellations": 0}],
    )
    BREACHES[check](scratch, goods_id)
    code, lines = run_verify(scratch)
    assert code == 1
    named = {line["check"] for line in lines if "check" in line}
    assert check in named
    assert all(line["goods_id"] == goods_id for line in lines if "check" in line)
    assert lines[-1]["violations"] == len(lines) - 1


def test_no_database_is_exit_2_not_a_verdict(postgres_server: str) -> None:
    base = postgres_server.rpartition("/")[0]
    code, lines = run_verify(f"{base}/no_such_database_here")
    assert code == 2
    assert lines == []


def test_the_demo_data_loads_once_and_verifies(scratch: str) -> None:
    env = {**os.environ, "DATABASE_URL": scratch}
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "service", "migrate", "--demo"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    summary = verify_ledger(scratch)
    assert summary["products"] == 6
    assert summary["ledger_rows"] > 0
    states = psql(
        scratch,
        "SELECT count(DISTINCT goods_state(status, current_investing_amount,"
        " total_investing_amount, started_at, finished_at, now())) FROM investment_goods",
    )
    assert states == "5"  # one product in every state
