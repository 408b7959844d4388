"""The service's database role: a login role that is a member of the NOLOGIN group
investment_service (its grants: sql/migrations/006_service_role.sql), set up by the owner after
migrating, and checked at start; a superuser or owner DATABASE_URL serves as investment_service
(docs/operations.md, "The service role")."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psqlpy
import psqlpy.exceptions

from service.ops.migrations import MIGRATION_LOCK
from service.settings import Settings, redact

log = logging.getLogger("service.ops.roles")

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
    owner = user == url_user(owner_url)[0]
    conn = await psqlpy.connect(dsn=owner_url, application_name="investment-migrate")
    try:
        # Instances starting at once take turns (concurrent GRANTs of one role can fail with
        # "tuple concurrently updated"), and one that finds everything in place changes nothing.
        await conn.execute("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK], prepared=False)
        if owner:
            await _let_owner_serve_as_service(conn, user)
        else:
            await _grant(conn, user, password, create)
    finally:
        conn.close()  # ends the session, and with it the advisory lock
    return None if owner else user


async def _can_set_service_role(conn: psqlpy.Connection) -> bool:
    try:
        async with conn.transaction() as transaction:
            await transaction.execute(f"SET LOCAL ROLE {SERVICE_GROUP}", prepared=False)
    except psqlpy.exceptions.Error:
        return False
    return True


async def _let_owner_serve_as_service(conn: psqlpy.Connection, user: str) -> None:
    """DATABASE_URL is the owner: its request sessions take investment_service (session_role),
    which it must be allowed to SET (a superuser always is)."""
    if not (await read_privileges(conn)).privileged or await _can_set_service_role(conn):
        return
    try:
        await conn.execute_batch(f"GRANT {SERVICE_GROUP} TO {_identifier(user)}")
    except psqlpy.exceptions.Error as error:  # the preflight refuses to serve, saying why
        log.warning("could not grant %s to the owner %s: %s", SERVICE_GROUP, user, error)
        return
    log.info("granted %s to the owner %s (its requests run as that role)", SERVICE_GROUP, user)


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


@dataclass(frozen=True)
class Privileges:
    """What the session's current role may do beyond the service's needs."""

    superuser: bool
    alters_ledger: bool

    @property
    def privileged(self) -> bool:
        return self.superuser or self.alters_ledger

    def warnings(self) -> list[str]:
        if self.superuser:
            return ["the service connects as a superuser"]
        if self.alters_ledger:
            return ["the service's role may UPDATE, DELETE or TRUNCATE the ledger"]
        return []


async def read_privileges(conn: psqlpy.Connection) -> Privileges:
    async with conn.transaction() as transaction:
        rows = (await transaction.execute(_PRIVILEGED, prepared=False)).result()
    if not rows:
        return Privileges(superuser=False, alters_ledger=False)
    return Privileges(superuser=rows[0]["rolsuper"], alters_ledger=rows[0]["alters_ledger"])


def session_role(settings: Settings, login: Privileges) -> str | None:
    """The role the request sessions take: DB_SESSION_ROLE when given; investment_service when
    DATABASE_URL's role is a superuser or may alter the ledger (the owner), unless
    ALLOW_PRIVILEGED_SERVICE=true; else None (the login role itself, already least-privileged)."""
    if settings.db_session_role is not None:
        return settings.db_session_role
    if login.privileged and not settings.allow_privileged_service:
        return SERVICE_GROUP
    return None


def refusal(settings: Settings, role: str, error: Exception | None) -> str:
    """Why the request sessions could not become `role` (error: SET ROLE failed; None: it was
    set, yet the session can still alter the ledger, e.g. a pooler dropped the option)."""
    user = url_user(settings.database_url or "")[0]
    cause = (
        f"{user!r} cannot SET ROLE {role} ({redact(str(error))})"
        if error is not None
        else f"a session with `-c role={role}` still may alter the ledger (a pooler that drops"
        " the options startup parameter?)"
    )
    return (
        f"refusing to serve as a privileged role: {cause}. Migrate with this DATABASE_URL (it"
        f" grants {role} to the owner), connect as the service's own login, or set"
        " ALLOW_PRIVILEGED_SERVICE=true (docs/operations.md, 'The service role')"
    )
