"""Command line: `python -m service run|migrate|preflight|goods|verify|backup|restore` (run =
migrate, demo data when embedded, start-up checks, serve; goods = product administration,
service/goods.py; backup/restore: service/ops/backup.py)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.logs import GRANIAN_LOG_CONFIG, configure_logging
from service.settings import Settings, SettingsError, child_environment, load_settings, redact

if TYPE_CHECKING:
    from service.ops.embedded import EmbeddedPostgres

log = logging.getLogger("service")
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT / ".data" / "postgres"
DEFAULT_ARCHIVE_DIR = ROOT / ".data" / "wal-archive"
DEFAULT_BACKUP_DIR = ROOT / ".data" / "backups"
EMBEDDED_SERVICE_USER = "investment_app"  # trust-authenticated, loopback only, no password


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
        log.info("loaded the demo data set")


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


@contextmanager
def metrics_directory(settings: Settings) -> Iterator[None]:
    """prometheus-client multiprocess mode: one directory the workers share, set in the
    environment before granian forks them, empty at start; a temporary one is removed at exit."""
    if not settings.metrics_enabled:
        yield
        return
    given = settings.prometheus_multiproc_dir
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="investment-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # samples of an earlier run would be summed in
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(path, ignore_errors=True)
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


async def _verify(url: str) -> int:
    import orjson

    from service.ops.verify import verify

    try:
        found, summary = await verify(url)
    except Exception as error:  # no database, no schema: not a verdict on the ledger
        print(f"could not verify: {redact(str(error))}", file=sys.stderr)
        return 2
    for violation in found:
        print(orjson.dumps(violation).decode())
    print(orjson.dumps({"violations": len(found), **summary}).decode())
    return 1 if found else 0


async def _goods(settings: Settings, args: argparse.Namespace) -> list[dict[str, Any]]:
    from service.db import Database
    from service.goods import close_goods, create_goods, list_all_goods, validate_goods

    db = Database(settings, 2)  # psqlpy wants a pool of at least 2
    try:
        if args.goods_command == "add":
            values = {"title": args.title, "total_investing_amount": args.total,
                      "started_at": args.start, "finished_at": args.finish}  # fmt: skip
            return [await create_goods(db, validate_goods(values, settings.zone, create=True))]
        if args.goods_command == "close":
            return [await close_goods(db, args.goods_id)]
        return await list_all_goods(db)
    finally:
        db.close()


def goods_command(settings: Settings, args: argparse.Namespace) -> int:
    """`python -m service goods add|close|list` (service/goods.py): 0 done, 1 refused (unknown
    product, total below invested, database), 2 invalid input."""
    import orjson

    from service.db import DatabaseUnavailable
    from service.problems import Problem

    try:
        products = asyncio.run(_goods(settings, args))
    except Problem as problem:
        print(f"{problem.code}: {problem.detail}", file=sys.stderr)
        return 2 if problem.status == 400 else 1
    except DatabaseUnavailable as error:
        print(f"SERVICE_UNAVAILABLE: {redact(str(error))}", file=sys.stderr)
        return 1
    for product in products:
        sys.stdout.buffer.write(orjson.dumps(product) + b"\n")
    return 0


def serve(settings: Settings) -> None:
    """Run granian with `settings.workers` processes; returns once stopped (SIGINT/SIGTERM)."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops, RuntimeModes
    from granian.http import HTTP1Settings

    from service.door import backpressure

    os.environ.update(settings.as_env())  # the workers read their settings from the environment
    if settings.db_runtime_threads:  # psqlpy's Tokio runtime sizes itself from this at first use
        os.environ["TOKIO_WORKER_THREADS"] = str(settings.db_runtime_threads)
    with metrics_directory(settings):
        Granian(
            "service.app:create_app",
            factory=True,
            address=settings.host,
            port=settings.port,
            interface=Interfaces.ASGI,
            workers=settings.workers,
            runtime_mode=RuntimeModes(settings.server_runtime_mode),
            runtime_threads=settings.server_runtime_threads,
            loop=Loops.uvloop,
            http=HTTPModes.http1,
            # The whole request head must arrive within HTTP_HEADER_TIMEOUT of the connection
            # opening, or the connection is closed: a slow-header client holds nothing longer.
            http1_settings=HTTP1Settings(
                header_read_timeout=max(1, round(settings.http_header_timeout * 1000))
            ),
            log_access=False,
            log_dictconfig=GRANIAN_LOG_CONFIG,
            # Connections past a worker's backpressure wait in its listen queue (min(backlog,
            # net.core.somaxconn), one per worker: SO_REUSEPORT), answered by nobody until one
            # of its connections closes. So backpressure admits everything the queues admit,
            # and they answer 503 beyond capacity (docs/operations.md, "Overload").
            backlog=4096,
            backpressure=backpressure(settings),
            respawn_failed_workers=True,
            workers_kill_timeout=30,
        ).serve()


def run(settings: Settings, migrate: bool = True) -> int:
    """Serve; first migrate (and start the embedded database when there is no DATABASE_URL).
    Without `migrate` the database must be migrated already: a rolling deploy, or instances
    behind PgBouncer, whose transaction pooling cannot hold the migrations' session lock."""
    from harness.sockets import port_in_use

    embedded = None
    if settings.database_url is None and not migrate:
        log.error("--no-migrate needs DATABASE_URL (the embedded database is migrated at start)")
        return 2
    if port_in_use(settings.host, settings.port):  # before anything is started for nothing
        raise StartupFailure(
            f"port {settings.port} on {settings.host} is taken: set PORT to a free port"
        )
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


class StartupFailure(Exception):
    """`run` cannot serve; the message names what to change."""


def startup_reason(error: Exception, settings: Settings) -> str:
    """An exception that stopped `run` or `serve`, as one line naming what to change."""
    first = redact(str(error)).strip().splitlines()
    reason = first[0] if first else type(error).__name__  # Rust errors append a backtrace
    if "Address already in use" in reason:  # granian's bind, past run()'s own check
        return f"port {settings.port} on {settings.host} is taken: set PORT to a free port"
    return reason


def restore_command(settings: Settings, args: argparse.Namespace) -> int:
    """`python -m service restore`: restore, start, verify the ledger, report (and stop)."""
    from datetime import datetime

    from harness.sockets import free_port
    from service.ops.backup import BackupError, restore

    target = None
    if args.time != "latest":
        try:
            moment = datetime.fromisoformat(args.time)
        except ValueError:
            print(
                f"--time must be YYYY-MM-DD HH:MM:SS or latest, got {args.time!r}", file=sys.stderr
            )
            return 2
        target = (moment if moment.tzinfo else moment.replace(tzinfo=settings.zone)).isoformat()
    try:
        server = restore(args.backup, args.archive, args.data_dir, target, args.port or free_port())
    except BackupError as error:
        print(f"restore failed: {redact(str(error))}", file=sys.stderr)
        return 1
    try:
        code = asyncio.run(_verify(server.url))
        print(f"restored to {target or 'the end of the archive'} in {server.data_dir}")
        if args.keep_running:
            print(f"running at {server.url}")
        else:
            print(f"serve it with: EMBEDDED_PG_DATA={server.data_dir} just run")
    finally:
        if not args.keep_running:
            server.stop()
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_command = commands.add_parser(
        "run", help="migrate and serve (embedded PostgreSQL when no DATABASE_URL)"
    )
    serve_command.add_argument(
        "--no-migrate",
        action="store_true",
        help="serve a database that is migrated already (rolling deploys, behind PgBouncer)",
    )
    server = commands.add_parser(
        "serve", help="what `run` becomes once migrated and checked: serve, nothing else"
    )
    server.add_argument(
        "--stop-embedded", type=Path, help="stop this embedded PostgreSQL's data folder at exit"
    )
    migrate = commands.add_parser("migrate", help="apply the migrations to DATABASE_URL")
    migrate.add_argument("--demo", action="store_true", help="also load the demo data (once)")
    migrate.add_argument(
        "--create-service-login",
        action="store_true",
        help="create DATABASE_URL's user as a login when missing (with MIGRATION_DATABASE_URL)",
    )
    commands.add_parser(
        "preflight", help="check DATABASE_URL's durability settings and role before serving"
    )
    goods = commands.add_parser("goods", help="administer products (DATABASE_URL)")
    actions = goods.add_subparsers(dest="goods_command", required=True)
    add = actions.add_parser("add", help="register a product; prints it as JSON")
    add.add_argument("--title", required=True)
    add.add_argument("--total", required=True, type=int, help="total investing amount (KRW)")
    add.add_argument("--start", required=True, help="YYYY-MM-DD HH:MM:SS, display time zone")
    add.add_argument("--finish", required=True, help="YYYY-MM-DD HH:MM:SS, display time zone")
    close = actions.add_parser("close", help="close a product (status false); prints it as JSON")
    close.add_argument("goods_id", type=int)
    actions.add_parser("list", help="print every product, one JSON object per line")
    commands.add_parser(
        "verify", help="check every ledger invariant on DATABASE_URL; exit 1 on any violation"
    )
    backup = commands.add_parser(
        "backup",
        help="base backup of MIGRATION_DATABASE_URL (else DATABASE_URL) with pg_basebackup",
    )
    backup.add_argument("--into", type=Path, default=DEFAULT_BACKUP_DIR, help="backups folder")
    restore = commands.add_parser(
        "restore", help="restore a base backup + WAL archive into a fresh data directory"
    )
    restore.add_argument("backup", type=Path, help="a folder written by `backup`")
    restore.add_argument("--data-dir", type=Path, required=True, help="fresh data directory")
    restore.add_argument(
        "--time",
        default="latest",
        help="YYYY-MM-DD HH:MM:SS[.ffffff][+zone] (no zone: TIMEZONE), or latest (the default)",
    )
    restore.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE_DIR, help="WAL archive")
    restore.add_argument("--port", type=int, default=0, help="port of the restored server")
    restore.add_argument(
        "--keep-running", action="store_true", help="leave the restored server running"
    )
    args = parser.parse_args(argv)
    settings = settings_for_command()
    if settings is None:
        return 2
    if args.command == "run":
        try:
            return run(settings, migrate=not args.no_migrate)
        except Exception as error:  # one line naming what to change, not a traceback
            print(f"cannot start: {startup_reason(error, settings)}", file=sys.stderr)
            return 2
    if args.command == "serve":
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
    if args.command == "restore":
        return leave(restore_command(settings, args))
    if args.command == "backup":
        if settings.owner_url is None:
            print("MIGRATION_DATABASE_URL or DATABASE_URL is required", file=sys.stderr)
            return 2
        from service.ops.backup import BackupError, base_backup, describe

        try:
            print(describe(base_backup(settings.owner_url, args.into)))
        except BackupError as error:
            print(f"backup failed: {redact(str(error))}", file=sys.stderr)
            return 1
        return 0
    if settings.database_url is None:
        print("DATABASE_URL is required for this command", file=sys.stderr)
        return 2
    if args.command == "goods":
        return leave(goods_command(settings, args))
    if args.command == "verify":
        return leave(asyncio.run(_verify(settings.database_url)))
    if args.command == "preflight":
        return leave(asyncio.run(_preflight(settings)))
    try:
        asyncio.run(_prepare(settings, demo=args.demo, create_login=args.create_service_login))
    except Exception as error:  # one log line (passwords redacted), not a traceback
        log.error("migrate failed: %s", error)
        return leave(1)
    return leave(0)


def settings_for_command() -> Settings | None:
    """The settings from the environment, with logging configured; None (the reason printed as
    one line on stderr) when a setting is invalid: the command exits 2."""
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"invalid setting: {error}", file=sys.stderr)
        return None
    configure_logging(settings.log_level)
    return settings


def leave(code: int) -> int:
    """Exit at once after a command that used psqlpy: its runtime threads can abort the
    interpreter's finalization ("PyGILState_Release: thread state must be current"), which
    would turn finished, committed work into a failed exit status."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
