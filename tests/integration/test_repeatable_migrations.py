"""sql/functions/*.sql are repeatable migrations: applied after the numbered ones, again whenever a
file's checksum changes, never when it has not; a failing file changes nothing."""

from __future__ import annotations

import asyncio

import pytest

from service.ops.migrations import MigrationError, migrate
from service.sql import Repeatable, repeatables
from tests.support import migrated_database, psql


def recorded(url: str) -> dict[str, str]:
    rows = psql(url, "SELECT name, checksum FROM schema_repeatables ORDER BY name").splitlines()
    return dict(row.split("\t") for row in rows)  # type: ignore[misc]


def test_function_files_are_applied_again_only_when_they_change(postgres_server: str) -> None:
    with migrated_database(postgres_server) as url:
        files = repeatables()
        first = recorded(url)
        assert sorted(first) == sorted(f.name for f in files)

        asyncio.run(migrate(url, "Asia/Seoul"))
        assert recorded(url) == first  # nothing changed, nothing applied

        changed = Repeatable(
            "ledger_append_only",
            next(f.text for f in files if f.name == "ledger_append_only")
            + "\nCOMMENT ON FUNCTION user_investment_goods_append_only() IS 'changed';\n",
        )
        asyncio.run(migrate(url, "Asia/Seoul", functions=[changed]))
        assert recorded(url)["ledger_append_only"] != first["ledger_append_only"]
        assert (
            psql(url, "SELECT obj_description('user_investment_goods_append_only()'::regprocedure)")
            == "changed"
        )

        broken = Repeatable("invest_many", "CREATE OR REPLACE FUNCTION invest_many( oops")
        with pytest.raises(MigrationError, match=r"functions/invest_many\.sql"):
            asyncio.run(migrate(url, "Asia/Seoul", functions=[broken]))
        assert recorded(url)["invest_many"] == first["invest_many"]
