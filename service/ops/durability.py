"""The start-up check that an acknowledged investment survives a server crash: read the server's
settings through a session like the service's own, refuse to serve when they would lose commits
(unless ALLOW_UNSAFE_DURABILITY=true, which logs a warning on every start). docs/reliability.md."""

from __future__ import annotations

import logging

import psqlpy

from service.db import connection_options
from service.settings import Settings

log = logging.getLogger("service.ops.durability")

# setting -> the values under which a commit the service acknowledged can be lost in a crash:
# fsync=off (WAL and data may never reach the disk), synchronous_commit=off (the commit returns
# before its WAL is flushed), full_page_writes=off (a torn page can make the WAL unreplayable).
UNSAFE = {"fsync": {"off"}, "synchronous_commit": {"off"}, "full_page_writes": {"off"}}

_READ = "SELECT name, setting FROM pg_settings WHERE name IN ({})".format(
    ", ".join(f"'{name}'" for name in UNSAFE)
)


def durability_problems(values: dict[str, str]) -> list[str]:
    """What in `values` (setting -> value as the server shows it) would lose commits."""
    problems = []
    for name, bad in UNSAFE.items():
        value = values.get(name)
        if value is None:
            problems.append(f"{name} could not be read")
        elif value.lower() in bad:
            problems.append(f"{name}={value}")
    return problems


async def connect_as_service(settings: Settings) -> psqlpy.Connection:
    """One session like the service's own: same URL, same connection options."""
    return await psqlpy.connect(
        dsn=settings.database_url,
        options=connection_options(settings),
        application_name="investment-preflight",
        connect_timeout_sec=10,
    )


async def read_durability(conn: psqlpy.Connection) -> dict[str, str]:
    """The settings as that session sees them."""
    # One explicit transaction: behind PgBouncer's transaction pooling, psqlpy's exchanges for
    # an unprepared statement must reach the same server connection (see db.py).
    async with conn.transaction() as transaction:
        rows = (await transaction.execute(_READ, prepared=False)).result()
    return {row["name"]: row["setting"] for row in rows}


def judge(settings: Settings, values: dict[str, str]) -> bool:
    """True when the service may serve; logs why not, or the warning of the override."""
    problems = durability_problems(values)
    if not problems:
        if settings.allow_unsafe_durability:
            log.warning("ALLOW_UNSAFE_DURABILITY=true is set (not needed: the server is durable)")
        return True
    shown = ", ".join(problems)
    if settings.allow_unsafe_durability:
        log.warning(
            "UNSAFE DURABILITY: %s; acknowledged investments can be lost in a server crash."
            " Serving anyway because ALLOW_UNSAFE_DURABILITY=true",
            shown,
        )
        return True
    log.error(
        "refusing to serve: %s would let an acknowledged investment be lost in a server crash."
        " Fix the server's settings, or set ALLOW_UNSAFE_DURABILITY=true (tests, throwaway data)",
        shown,
    )
    return False
