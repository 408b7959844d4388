"""The demo data set of `just run` on the embedded database (sql/demo.sql), loaded only once."""

from __future__ import annotations

import psqlpy

from service.sql import SQL_DIR


async def load_demo_data(database_url: str) -> bool:
    """Load sql/demo.sql unless it was loaded before; True when it was loaded now."""
    conn = await psqlpy.connect(dsn=database_url, application_name="investment-demo")
    try:
        marker = await conn.execute(
            "INSERT INTO service_meta (key, value) VALUES ('demo_data', now()::text)"
            " ON CONFLICT DO NOTHING RETURNING key",
            prepared=False,
        )
        if not marker.result():
            return False
        script = (SQL_DIR / "demo.sql").read_text(encoding="utf-8")
        await conn.execute_batch(f"BEGIN;\n{script}\nCOMMIT;")
        return True
    finally:
        conn.close()
