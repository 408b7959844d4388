"""The demo data set of `just run` on the embedded database (sql/demo.sql), loaded only once."""

from __future__ import annotations

import psqlpy

from service.sql import SQL_DIR


async def load_demo_data(database_url: str) -> bool:
    """Load sql/demo.sql unless it was loaded before; True when it was loaded now."""
    conn = await psqlpy.connect(dsn=database_url, application_name="investment-demo")
    try:
        script = (SQL_DIR / "demo.sql").read_text(encoding="utf-8")
        # The marker and the data commit together: a failed load is tried again next time.
        transaction = conn.transaction()
        await transaction.begin()
        try:
            marker = await transaction.execute(
                "INSERT INTO service_meta (key, value) VALUES ('demo_data', now()::text)"
                " ON CONFLICT DO NOTHING RETURNING key",
                prepared=False,
            )
            if not marker.result():
                await transaction.rollback()
                return False
            await transaction.execute_batch(script)
        except BaseException:
            await transaction.rollback()
            raise
        await transaction.commit()
        return True
    finally:
        conn.close()
