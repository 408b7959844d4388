"""The service's role may do only what the APIs need (sql/migrations/006_service_role.sql), and the
ledger is append-only for everyone but the explicit maintenance path (sql/functions/ledger_append_only.sql)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import ServiceProcess, create_goods, migrated_database, psql, service_url

# Every table of the schema and what the service role may do with it: a new table fails here
# until its migration grants what the service needs (and no more).
EXPECTED = {
    "investment_goods": {"SELECT", "INSERT", "UPDATE"},
    "user_investment_goods": {"SELECT", "INSERT"},
    "investment_goods_investor": {"SELECT", "INSERT", "UPDATE"},
    "investor_class_limit": {"SELECT", "UPDATE"},
    "investor": {"SELECT", "INSERT", "UPDATE"},
    "user_investment_cancellation": {"SELECT", "INSERT"},
    "my_investment_item": {"SELECT"},
    "investment_idempotency": {"SELECT", "INSERT", "DELETE"},
    # The outbox: invest_many() inserts, the relay deletes what JetStream holds; its numbering
    # rounds: the relay inserts and deletes them (service/relay.py).
    "investment_event": {"SELECT", "INSERT", "DELETE"},
    "investment_event_round": {"SELECT", "INSERT", "DELETE"},
    "investment_event_relay": {"SELECT", "UPDATE"},
    "schema_migrations": {"SELECT"},
    "schema_repeatables": {"SELECT"},
    "service_meta": set(),
}
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def refused(url: str, sql: str) -> str:
    with pytest.raises(RuntimeError) as failure:
        psql(url, sql)
    return str(failure.value)


@pytest.fixture(scope="module")
def ledger_database(postgres_server: str) -> Iterator[str]:
    """A database of this module's own: its ledger rows are written directly, without the
    counters, which the session database's verifier runs would rightly report."""
    with migrated_database(postgres_server) as url:
        yield url


@pytest.fixture
def ledger_row(ledger_database: str) -> int:
    goods_id = create_goods(ledger_database)
    return int(
        psql(
            ledger_database,
            "INSERT INTO user_investment_goods (user_id, goods_id, user_investing_amount)"
            f" VALUES (1, {goods_id}, 10) RETURNING id",
        )
    )


def test_the_service_role_has_exactly_the_privileges_the_apis_need(database_url: str) -> None:
    checks = ", ".join(
        f"has_table_privilege('investment_service', c.oid, '{p}') AS {p.lower()}"
        for p in PRIVILEGES
    )
    rows = psql(
        database_url,
        f"SELECT c.relname, {checks} FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1",
    ).splitlines()
    granted = {}
    for row in rows:
        name, *flags = row.split("\t")
        granted[name] = {p for p, flag in zip(PRIVILEGES, flags, strict=True) if flag == "t"}
    assert granted == EXPECTED
    attributes = psql(
        database_url,
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls FROM pg_roles"
        " WHERE rolname IN ('investment_service', 'investment_app')",
    )
    assert set(attributes.replace("\n", "\t").split("\t")) == {"f"}


def test_service_role_cannot_update_delete_or_alter_the_ledger(
    ledger_database: str, ledger_row: int
) -> None:
    app = service_url(ledger_database)
    assert "permission denied" in refused(
        app, f"UPDATE user_investment_goods SET user_investing_amount = 1 WHERE id = {ledger_row}"
    )
    assert "permission denied" in refused(
        app, f"DELETE FROM user_investment_goods WHERE id = {ledger_row}"
    )
    assert "permission denied" in refused(app, "TRUNCATE user_investment_goods")
    assert "must be owner" in refused(app, "ALTER TABLE user_investment_goods ADD COLUMN x int")
    assert "must be owner" in refused(app, "DROP TABLE user_investment_goods")
    assert "permission denied" in refused(app, "CREATE TABLE shadow_ledger (id bigint)")
    # The maintenance setting is no way around the missing privilege.
    assert "permission denied" in refused(
        app,
        "BEGIN; SET LOCAL investment.ledger_maintenance = on;"
        f" DELETE FROM user_investment_goods WHERE id = {ledger_row}; COMMIT",
    )
    assert (
        psql(ledger_database, f"SELECT count(*) FROM user_investment_goods WHERE id = {ledger_row}")
        == "1"
    )


def test_ledger_is_append_only_even_for_the_owner(ledger_database: str, ledger_row: int) -> None:
    for statement in (
        f"UPDATE user_investment_goods SET user_investing_amount = 1 WHERE id = {ledger_row}",
        f"DELETE FROM user_investment_goods WHERE id = {ledger_row}",
        # With its cancellations (their foreign key refuses a TRUNCATE of the ledger alone).
        "TRUNCATE user_investment_goods, user_investment_cancellation",
        "DELETE FROM user_investment_cancellation",
    ):
        assert "append-only" in refused(ledger_database, statement)
    # Nothing changed.
    assert (
        psql(
            ledger_database,
            f"SELECT user_investing_amount FROM user_investment_goods WHERE id = {ledger_row}",
        )
        == "10"
    )


def test_ledger_maintenance_path_allows_a_deliberate_correction(
    ledger_database: str, ledger_row: int
) -> None:
    psql(
        ledger_database,
        "BEGIN; SET LOCAL investment.ledger_maintenance = on;"
        f" UPDATE user_investment_goods SET user_investing_amount = 11 WHERE id = {ledger_row};"
        " COMMIT",
    )
    assert (
        psql(
            ledger_database,
            f"SELECT user_investing_amount FROM user_investment_goods WHERE id = {ledger_row}",
        )
        == "11"
    )
    # SET LOCAL ended with its transaction: the next statement is refused again.
    assert "append-only" in refused(
        ledger_database, f"DELETE FROM user_investment_goods WHERE id = {ledger_row}"
    )


def test_the_running_service_connects_as_the_service_role(
    database_url: str, service: ServiceProcess, client: object
) -> None:
    import httpx

    assert isinstance(client, httpx.Client)
    assert client.get("/readyz").status_code == 200
    users = psql(
        database_url,
        "SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name = 'investment-service'"
        " AND datname = current_database()",
    )
    assert users == "investment_app"


def test_migrate_as_the_service_role_only_checks_that_nothing_is_pending(database_url: str) -> None:
    # An instance given only the service role's URL (the owner migrated beforehand) starts.
    import os
    import subprocess
    import sys

    from tests.support import ROOT

    done = subprocess.run(
        [sys.executable, "-m", "service", "migrate"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": service_url(database_url)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
