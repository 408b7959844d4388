"""The service's database role: a login role that is a member of the NOLOGIN group
investment_service (its grants: sql/migrations/006_service_role.sql), set up by the owner after
migrating, and checked at start (docs/operations.md, "The service role")."""

from __future__ import annotations

import logging
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psqlpy

from service.migrations import MIGRATION_LOCK

log = logging.getLogger("service.roles")

SERVICE_GROUP = "investment_service"

_PRIVILEGED = """
SELECT r.rolsuper,
       has_table_privilege('user_investment_goods', 'UPDATE')
       OR has_table_privilege('user_investment_goods', 'DELETE')
       OR has_table_privilege('user_investment_goods', 'TRUNCATE') AS alters_ledger
FROM pg_roles r WHERE r.rolname = current_user
"""


_STATE = """
SELECT pg_has_role(r.oid, $2, 'MEMBER') AS member,
       has_database_privilege(r.oid, current_database(), 'CONNECT') AS connect
FROM pg_roles r WHERE r.rolname = $1
"""


class RoleError(RuntimeError):
    pass


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def with_user(url: str, user: str, password: str | None = None) -> str:
    """The same server and database as `url`, as another role."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    login = quote(user, safe="") + ("" if password is None else ":" + quote(password, safe=""))
    return urlunsplit(parts._replace(netloc=f"{login}@{host}"))


def url_user(url: str) -> tuple[str, str | None]:
    """(user, password) of a postgresql:// URL; the user defaults to postgres like libpq's tools."""
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password is not None else None
    return unquote(parts.username or "postgres"), password


async def grant_service_role(owner_url: str, service_url: str, create: bool) -> str | None:
    """Make the service URL's user a member of investment_service (and allowed to connect).

    Returns the user, or None when the service connects as the owner itself. A missing login is
    created (with the URL's password, if any) only when `create` is true: `just run`'s embedded
    server, `just cluster` and the tests; on any other server a DBA creates it (docs/operations.md).
    """
    user, password = url_user(service_url)
    if user == url_user(owner_url)[0]:
        return None
    conn = await psqlpy.connect(dsn=owner_url, application_name="investment-migrate")
    try:
        # Instances starting at once take turns (concurrent GRANTs of one role can fail with
        # "tuple concurrently updated"), and one that finds everything in place changes nothing.
        await conn.execute("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK], prepared=False)
        await _grant(conn, user, password, create)
    finally:
        conn.close()  # ends the session, and with it the advisory lock
    return user


async def _grant(conn: psqlpy.Connection, user: str, password: str | None, create: bool) -> None:
    state = (await conn.execute(_STATE, [user, SERVICE_GROUP], prepared=False)).result()
    if state and state[0]["member"] and state[0]["connect"]:
        return
    if not state:
        if not create:
            raise RoleError(
                f"the service role {user!r} does not exist: create it as in"
                " docs/operations.md (CREATE ROLE ... LOGIN), then migrate again"
            )
        secret = "" if password is None else f" PASSWORD {_literal(password)}"
        await conn.execute_batch(f"CREATE ROLE {_identifier(user)} LOGIN{secret}")
        log.info("created the service login role %s", user)
    await conn.execute_batch(
        f"GRANT {SERVICE_GROUP} TO {_identifier(user)};"
        " DO $$ BEGIN EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I',"
        f" current_database(), {_literal(user)}); END $$"
    )


async def privilege_warnings(conn: psqlpy.Connection) -> list[str]:
    """What makes the connected role more than the service needs (logged at start, not fatal:
    an existing deployment that connects as the owner keeps working until it is moved)."""
    async with conn.transaction() as transaction:
        rows = (await transaction.execute(_PRIVILEGED, prepared=False)).result()
    if not rows:
        return []
    warnings = []
    if rows[0]["rolsuper"]:
        warnings.append("the service connects as a superuser")
    elif rows[0]["alters_ledger"]:
        warnings.append("the service's role may UPDATE, DELETE or TRUNCATE the ledger")
    return warnings
