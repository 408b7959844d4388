"""The ledger verifier (`python -m service verify`, `just verify`): sql/verify.sql, live."""

from __future__ import annotations

from typing import Any

import psqlpy

from service.sql import SQL_DIR

SUMMARY = (
    "SELECT (SELECT count(*) FROM investment_goods) AS products,"
    " count(*) AS ledger_rows, coalesce(sum(user_investing_amount), 0)::bigint AS ledger_sum,"
    " (SELECT count(*) FROM user_investment_cancellation) AS cancellations"
    " FROM user_investment_goods"
)


async def verify(database_url: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(violations, summary): every broken invariant as {check, goods_id, detail}, and totals.

    One REPEATABLE READ, read-only transaction compares the counters and the ledger as of the
    same moment, even while the service is writing.
    """
    query = (SQL_DIR / "verify.sql").read_text(encoding="utf-8")
    conn = await psqlpy.connect(dsn=database_url, application_name="investment-verify")
    try:
        transaction = conn.transaction(
            isolation_level=psqlpy.IsolationLevel.RepeatableRead,
            read_variant=psqlpy.ReadVariant.ReadOnly,
        )
        await transaction.begin()
        try:
            found = (await transaction.execute(query)).result()
            summary = (await transaction.execute(SUMMARY)).result()[0]
        finally:
            await transaction.rollback()
    finally:
        conn.close()
    return [dict(row) for row in found], dict(summary)
