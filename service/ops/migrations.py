"""Applies sql/migrations once each and sql/functions whenever changed, under an advisory lock,
recording them in schema_migrations and schema_repeatables."""

from __future__ import annotations

import hashlib
import logging

import psqlpy
import psqlpy.exceptions

from service.sql import Migration, Repeatable, migrations, repeatables

log = logging.getLogger("service.ops.migrations")

# Any constant works; it only has to be the same for every instance of this service.
MIGRATION_LOCK = 7_202_104_021

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS schema_repeatables (
    name       text        PRIMARY KEY,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
# A migration waits at most this long for a lock (say, on a table the service is busy with) and
# then fails, instead of queueing every request behind it.
LOCK_TIMEOUT = "5s"


_EXISTS = (
    "SELECT to_regclass('schema_migrations') IS NOT NULL"
    " AND to_regclass('schema_repeatables') IS NOT NULL AS found"
)
_ZONE_SET = """
SELECT coalesce((SELECT $1 = ANY (setconfig) FROM pg_db_role_setting
                 WHERE setrole = 0
                   AND setdatabase = (SELECT oid FROM pg_database
                                      WHERE datname = current_database())), false) AS set
"""


class MigrationError(RuntimeError):
    pass


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def checksum(migration: Migration | Repeatable) -> str:
    return hashlib.sha256(migration.text.encode()).hexdigest()


async def migrate(
    database_url: str,
    timezone: str,
    pending: list[Migration] | None = None,
    functions: list[Repeatable] | None = None,
) -> list[int]:
    """Apply what is not applied yet; returns the versions applied by this call.

    Safe when several instances start at once: the advisory lock makes them take turns, and the
    second finds everything recorded. An applied migration whose file changed is an error; a
    function file whose checksum changed is applied again, after the numbered migrations. The
    database's default time zone becomes the display zone, so that a zone-less literal written
    with psql means the wall-clock time the API shows (SPEC "Time").
    """
    wanted = migrations() if pending is None else pending
    conn = await psqlpy.connect(dsn=database_url, application_name="investment-migrate")
    applied_now: list[int] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK], prepared=False)
        try:
            # Only when missing: CREATE ... IF NOT EXISTS still needs the right to create, and
            # the service role (which may run this to check that nothing is pending) has none.
            if (await conn.execute(_EXISTS, prepared=False)).result()[0]["found"] is False:
                await conn.execute_batch(_CREATE_TABLE)
            rows = (await conn.execute("SELECT version, checksum FROM schema_migrations")).result()
            done = {row["version"]: row["checksum"] for row in rows}
            for migration in wanted:
                digest = checksum(migration)
                if migration.version in done:
                    if done[migration.version] != digest:
                        raise MigrationError(
                            f"migration {migration.version}_{migration.name} was changed after"
                            " it was applied; add a new migration instead"
                        )
                    continue
                log.info("applying migration %03d_%s", migration.version, migration.name)
                record = (
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES "
                    f"({migration.version}, '{migration.name}', '{digest}');"
                )
                await _apply(
                    conn, migration.text, record, f"{migration.version:03d}_{migration.name}"
                )
                applied_now.append(migration.version)
            await _apply_repeatables(conn, repeatables() if functions is None else functions)
            zone_set = (
                await conn.execute(_ZONE_SET, [f"TimeZone={timezone}"], prepared=False)
            ).result()
            if not zone_set[0]["set"]:  # ALTER DATABASE is the owner's, so only when needed
                await conn.execute_batch(
                    "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET TimeZone = %L',"
                    f" current_database(), {_literal(timezone)}); END $$"
                )
        except BaseException:
            await conn.execute_batch("ROLLBACK")
            raise
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK], prepared=False)
    finally:
        conn.close()
    return applied_now


async def _apply(conn: psqlpy.Connection, text: str, record: str, name: str) -> None:
    try:
        await conn.execute_batch(
            f"BEGIN;\nSET LOCAL lock_timeout = '{LOCK_TIMEOUT}';\n{text}\n;{record}\nCOMMIT;"
        )
    except psqlpy.exceptions.Error as error:
        raise MigrationError(
            f"migration {name} failed: {error}"
            " (migrations run as the tables' owner: MIGRATION_DATABASE_URL)"
        ) from error


async def _apply_repeatables(conn: psqlpy.Connection, files: list[Repeatable]) -> None:
    rows = (await conn.execute("SELECT name, checksum FROM schema_repeatables")).result()
    done = {row["name"]: row["checksum"] for row in rows}
    for repeatable in files:
        digest = checksum(repeatable)
        if done.get(repeatable.name) == digest:
            continue
        log.info("applying functions %s.sql", repeatable.name)
        record = (
            "INSERT INTO schema_repeatables (name, checksum) VALUES "
            f"('{repeatable.name}', '{digest}') ON CONFLICT (name) DO UPDATE"
            " SET checksum = EXCLUDED.checksum, applied_at = now();"
        )
        await _apply(conn, repeatable.text, record, f"functions/{repeatable.name}.sql")
