"""Starting the service: `run` (the embedded PostgreSQL when there is no DATABASE_URL, `migrate`
and `preflight` in child processes, then this process becomes `serve`), and those three commands.
What stops a start is one line naming what to change, exit code 2, no traceback."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from harness import ROOT
from service.settings import Settings, child_environment, redact

if TYPE_CHECKING:
    from service.ops.embedded import EmbeddedPostgres

log = logging.getLogger("service")
# `just run`'s embedded database, its WAL archive and the backups of `just backup`.
DEFAULT_DATA_DIR = ROOT / ".data" / "postgres"
DEFAULT_ARCHIVE_DIR = ROOT / ".data" / "wal-archive"
DEFAULT_BACKUP_DIR = ROOT / ".data" / "backups"
EMBEDDED_SERVICE_USER = "investment_app"  # trust-authenticated, loopback only, no password


class StartupFailure(Exception):
    """`run` cannot serve; the message names what to change."""


def startup_reason(error: Exception, settings: Settings) -> str:
    """An exception that stopped `run` or `serve`, as one line naming what to change."""
    first = redact(str(error)).strip().splitlines()
    reason = first[0] if first else type(error).__name__  # Rust errors append a backtrace
    if "Address already in use" in reason:  # granian's bind, past run()'s own check
        return _port_taken(settings)
    return reason


def _port_taken(settings: Settings) -> str:
    return f"port {settings.port} on {settings.host} is taken: set PORT to a free port"


def run_command(settings: Settings, args: argparse.Namespace) -> int:
    """`python -m service run [--no-migrate]`."""
    try:
        return run(settings, migrate=not args.no_migrate)
    except Exception as error:  # one line naming what to change, not a traceback
        print(f"cannot start: {startup_reason(error, settings)}", file=sys.stderr)
        return 2


def run(settings: Settings, migrate: bool = True) -> int:
    """Serve; first migrate (and start the embedded database when there is no DATABASE_URL).
    Without `migrate` the database must be migrated already: a rolling deploy, or instances
    behind PgBouncer, whose transaction pooling cannot hold the migrations' session lock."""
    from harness.sockets import port_in_use

    embedded = None
    if settings.database_url is None and not migrate:
        raise StartupFailure(
            "--no-migrate needs DATABASE_URL (the embedded database is migrated at start)"
        )
    if port_in_use(settings.host, settings.port):  # before anything is started for nothing
        raise StartupFailure(_port_taken(settings))
    if settings.database_url is None:
        from service.ops.embedded import EmbeddedPostgres

        data_dir = Path(settings.embedded_pg_data or DEFAULT_DATA_DIR)
        archive = settings.embedded_pg_archive
        embedded = EmbeddedPostgres(
            data_dir,
            settings.embedded_pg_port,
            archive_dir=Path(archive) if archive else DEFAULT_ARCHIVE_DIR,
        )
        owner_url = embedded.start()
        log.info("embedded PostgreSQL at %s (data in %s)", owner_url, data_dir)
        # Migrations as the owner (postgres), the service as its own least-privileged login.
        settings = dataclasses.replace(
            settings,
            database_url=embedded.url_as(EMBEDDED_SERVICE_USER),
            migration_database_url=owner_url,
        )
    try:
        # Migrations run in a child process: psqlpy's runtime threads would not survive the
        # fork of granian's workers if this process had started them.
        command = [sys.executable, "-m", "service", "migrate"]
        if embedded is not None:
            command += ["--demo", "--create-service-login"]
        env = child_environment(settings, owner=True)
        if migrate and subprocess.run(command, env=env, check=False).returncode != 0:
            raise StartupFailure(
                "the migrations failed (the line above says why): check DATABASE_URL"
                " and MIGRATION_DATABASE_URL"
            )
        checked = check_before_serving(settings)
        if checked is None:
            raise StartupFailure("the start-up check refused (the line above says why)")
        log.info(
            "serving on http://%s:%s with %d workers, %d database connections each",
            settings.host,
            settings.port,
            settings.workers,
            settings.pool_share(),
        )
        become_server(checked, embedded)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def check_before_serving(settings: Settings) -> Settings | None:
    """`python -m service preflight` in a child process (psqlpy's runtime threads must not be
    started in the process that granian forks); every instance runs it at its own start. The
    settings to serve with (the session role it chose), or None: do not serve."""
    import orjson

    command = [sys.executable, "-m", "service", "preflight"]
    done = subprocess.run(
        command, env=child_environment(settings), stdout=subprocess.PIPE, check=False
    )
    if done.returncode != 0:
        return None
    verdict = orjson.loads(done.stdout.splitlines()[-1])
    return dataclasses.replace(settings, db_session_role=verdict["db_session_role"])


def become_server(settings: Settings, embedded: EmbeddedPostgres | None) -> None:
    """Replace this process by `python -m service serve` (same pid: signals and supervisors see
    no difference) with `settings` as its environment, without the owner's URL: granian's process
    and its workers never hold it, not even in the environment this process was started with,
    which a fork inherits (/proc/<pid>/environ). Never returns (OSError if the exec fails)."""
    command = [sys.executable, "-m", "service", "serve"]
    if embedded is not None:  # the server stops it when it stops
        command += ["--stop-embedded", str(embedded.data_dir)]
    env = child_environment(settings)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, env)


def serve_command(settings: Settings, args: argparse.Namespace) -> int:
    """`python -m service serve [--stop-embedded DIR]`: what `run` becomes."""
    from service.ops.serving import serve

    try:
        serve(settings)
    except Exception as error:  # granian could not bind: the same one line
        print(f"cannot start: {startup_reason(error, settings)}", file=sys.stderr)
        return 2
    finally:
        if args.stop_embedded is not None:
            from service.ops.embedded import EmbeddedPostgres

            EmbeddedPostgres(args.stop_embedded, settings.embedded_pg_port).stop()
    return 0


def migrate_command(settings: Settings, args: argparse.Namespace) -> int:
    """`python -m service migrate [--demo] [--create-service-login]`: 0 done, 1 failed."""
    try:
        asyncio.run(_prepare(settings, demo=args.demo, create_login=args.create_service_login))
    except Exception as error:  # one log line (passwords redacted), not a traceback
        log.error("migrate failed: %s", error)
        return 1
    return 0


async def _prepare(settings: Settings, demo: bool, create_login: bool) -> None:
    """Migrate as the owner; then make DATABASE_URL's user a member of the service role (or, when
    it is the owner, able to SET ROLE to it)."""
    from service.ops.demo import load_demo_data
    from service.ops.migrations import migrate
    from service.ops.roles import grant_service_role

    owner = settings.owner_url
    assert owner is not None and settings.database_url is not None
    applied = await migrate(owner, settings.timezone)
    if applied:
        log.info("applied migrations %s", applied)
    await grant_service_role(owner, settings.database_url, create_login)
    if demo and await load_demo_data(owner):
        log.info(
            "loaded the demo data set, with the Online Investment-Linked Financial Business"
            " Act's caps for individuals as an example (general 5,000,000 KRW per product /"
            " 30,000,000 total / 10,000,000 real estate; qualified 20,000,000 / 100,000,000;"
            " professional none; `just limits-list`)"
        )


def preflight_command(settings: Settings, args: argparse.Namespace) -> int:
    """`python -m service preflight`: 0 serve (the session role printed as JSON), 1 do not."""
    return asyncio.run(_preflight(settings))


async def _preflight(settings: Settings) -> int:
    """Before serving: the server keeps acknowledged commits (or the override is set), and the
    role the requests will run as (printed as JSON: `{"db_session_role": ...}`): a superuser or
    owner DATABASE_URL serves as investment_service unless ALLOW_PRIVILEGED_SERVICE=true."""
    import orjson

    from service.ops.durability import connect_as_service, judge, read_durability
    from service.ops.roles import read_privileges, refusal, session_role

    login = dataclasses.replace(settings, db_session_role=None)
    try:
        conn = await connect_as_service(login)
        try:
            privileges = await read_privileges(conn)
        finally:
            conn.close()
        role = session_role(settings, privileges)
        serving = dataclasses.replace(settings, db_session_role=role)
        try:  # a session exactly like the service's, its role included
            conn = await connect_as_service(serving)
        except Exception as error:
            if role is None:
                raise
            log.error("%s", refusal(settings, role, error))
            return 1
        try:
            values = await read_durability(conn)
            privileges = await read_privileges(conn)
        finally:
            conn.close()
    except Exception as error:  # the server is unreachable: no verdict, no serving
        log.error("start-up check failed: %s", error)
        return 1
    if role is not None and privileges.privileged:
        log.error("%s", refusal(settings, role, None))
        return 1
    for warning in privileges.warnings():
        log.warning("least privilege: %s (docs/operations.md, 'The service role')", warning)
    if not judge(settings, values):
        return 1
    if role is not None:
        log.info("requests run as %s (DATABASE_URL's own role is privileged)", role)
    sys.stdout.buffer.write(orjson.dumps({"db_session_role": role}) + b"\n")
    return 0
