"""The goods-id sequence under concurrent inserts (sql/functions/goods_id_sequence.sql): product
creates that leave goods_id out never fail on the primary key, even while other sessions insert
products with explicit ids, or a session shadows the sequence with a temporary table."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.ops.migrations import migrate
from service.sql import Repeatable, repeatables
from tests.support import create_goods, migrated_database, psql, service_url

SESSIONS = 6
INSERTS = 1500  # per session; every third one with an explicit id


@pytest.fixture
def goods_database(postgres_server: str) -> Iterator[str]:
    with migrated_database(postgres_server) as url:
        yield url


def _script(session: int) -> str:
    lines = ["\\set ON_ERROR_STOP 0"]
    for i in range(INSERTS):
        if i % 3 == 2:
            # Far above anything handed out so far, unique per session and statement; ON CONFLICT
            # because only the creates without an id are under test.
            explicit = 10**9 + session * 10**6 + i * 1000
            lines.append(
                "INSERT INTO investment_goods (goods_id, title, total_investing_amount, started_at,"
                f" finished_at) VALUES ({explicit}, 'explicit', 100, now(), now() + interval '1 day')"
                " ON CONFLICT (goods_id) DO NOTHING;"
            )
        else:
            lines.append(
                "INSERT INTO investment_goods (title, total_investing_amount, started_at,"
                " finished_at) VALUES ('created', 100, now(), now() + interval '1 day');"
            )
    return "\n".join(lines) + "\n"


def test_concurrent_creates_and_explicit_ids_never_collide(
    goods_database: str, tmp_path: Path
) -> None:
    sessions = []
    for session in range(SESSIONS):
        script = tmp_path / f"session{session}.sql"
        script.write_text(_script(session))
        command = ["psql", goods_database, "-X", "-q", "-f", str(script)]
        sessions.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        )
    errors = []
    for process in sessions:
        _, err = process.communicate(timeout=120)
        errors += [line for line in err.splitlines() if "ERROR" in line]
    assert errors == [], f"{len(errors)} failed creates, first: {errors[:3]}"
    created = int(
        psql(goods_database, "SELECT count(*) FROM investment_goods WHERE title = 'created'")
    )
    assert created == SESSIONS * (INSERTS - INSERTS // 3)
    # The sequence is past every id in the table: the next create cannot collide either.
    assert (
        psql(
            goods_database,
            "SELECT (SELECT last_value FROM investment_goods_goods_id_seq)"
            " >= (SELECT max(goods_id) FROM investment_goods)",
        )
        == "t"
    )


def test_seed_style_explicit_id_moves_the_sequence_forward_only(goods_database: str) -> None:
    psql(
        goods_database,
        "INSERT INTO investment_goods (goods_id, title, total_investing_amount, started_at, finished_at)"
        " VALUES (500, 'high', 100, now(), now() + interval '1 day')",
    )
    psql(
        goods_database,
        "INSERT INTO investment_goods (goods_id, title, total_investing_amount, started_at, finished_at)"
        " VALUES (7, 'low', 100, now(), now() + interval '1 day')",
    )
    assert create_goods(goods_database, 100, title="next", started_at="now()") == 501


def test_every_security_definer_function_searches_pg_temp_last(goods_database: str) -> None:
    rows = psql(
        goods_database,
        "SELECT p.proname, coalesce(array_to_string(p.proconfig, ';'), '') FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE p.prosecdef AND n.nspname = 'public' ORDER BY 1",
    ).splitlines()
    settings = dict(row.split("\t") for row in rows)
    assert {"investment_goods_lock_ids", "investment_goods_sync_id_sequence"} <= set(settings)
    for name, config in settings.items():
        assert config == "search_path=pg_catalog, public, pg_temp", name


def test_a_temporary_table_cannot_stand_in_for_the_sequence(goods_database: str) -> None:
    # A database migrated before the fix: the function file as it was, then today's migrate
    # applies the changed file again (a repeatable migration).
    fixed = next(f for f in repeatables() if f.name == "goods_id_sequence")
    old = Repeatable(fixed.name, fixed.text.replace(", pg_temp AS", " AS").replace("public.", ""))
    asyncio.run(migrate(goods_database, "Asia/Seoul", functions=[old]))
    asyncio.run(migrate(goods_database, "Asia/Seoul"))
    before = int(psql(goods_database, "SELECT last_value FROM investment_goods_goods_id_seq"))
    explicit = before + 500
    # As the service role (the admin API inserts products): the shadow claims the sequence is
    # far ahead, so a trigger that read it would leave the real one behind the explicit id.
    psql(
        service_url(goods_database),
        "CREATE TEMP TABLE investment_goods_goods_id_seq (last_value bigint, is_called boolean);"
        " INSERT INTO investment_goods_goods_id_seq VALUES (1000000000000, true);"
        " INSERT INTO investment_goods (goods_id, title, total_investing_amount, started_at,"
        f" finished_at) VALUES ({explicit}, 'explicit', 100, now(), now() + interval '1 day')",
    )
    assert int(psql(goods_database, "SELECT last_value FROM investment_goods_goods_id_seq")) == (
        explicit
    )
    created = psql(
        service_url(goods_database),
        "INSERT INTO investment_goods (title, total_investing_amount, started_at, finished_at)"
        " VALUES ('next', 100, now(), now() + interval '1 day') RETURNING goods_id",
    )
    assert int(created) == explicit + 1
