"""Command line: `python -m service run|migrate|goods` (run = migrate, demo data when embedded,
serve; goods = product administration, service/admin.py)."""

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

from service.logs import GRANIAN_LOG_CONFIG, configure_logging
from service.settings import Settings, SettingsError, load_settings

log = logging.getLogger("service")
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT / ".data" / "postgres"


async def _prepare(url: str, settings: Settings, demo: bool) -> None:
    from service.demo import load_demo_data
    from service.migrations import migrate

    applied = await migrate(url, settings.timezone)
    if applied:
        log.info("applied migrations %s", applied)
    if demo and await load_demo_data(url):
        log.info("loaded the demo data set")


@contextmanager
def metrics_directory(enabled: bool) -> Iterator[None]:
    """prometheus-client multiprocess mode: one directory the workers share, set in the
    environment before granian forks them, empty at start; a temporary one is removed at exit."""
    if not enabled:
        yield
        return
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
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

    from service.verify import verify

    try:
        found, summary = await verify(url)
    except Exception as error:  # no database, no schema: not a verdict on the ledger
        print(f"could not verify: {error}", file=sys.stderr)
        return 2
    for violation in found:
        print(orjson.dumps(violation).decode())
    print(orjson.dumps({"violations": len(found), **summary}).decode())
    return 1 if found else 0


def serve(settings: Settings) -> None:
    """Run granian with `settings.workers` processes; returns once stopped (SIGINT/SIGTERM)."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings

    os.environ.update(settings.as_env())  # the workers read their settings from the environment
    with metrics_directory(settings.metrics_enabled):
        Granian(
            "service.app:create_app",
            factory=True,
            address=settings.host,
            port=settings.port,
            interface=Interfaces.ASGI,
            workers=settings.workers,
            loop=Loops.uvloop,
            http=HTTPModes.http1,
            # The whole request head must arrive within HTTP_HEADER_TIMEOUT of the connection
            # opening, or the connection is closed: a slow-header client holds nothing longer.
            http1_settings=HTTP1Settings(
                header_read_timeout=max(1, round(settings.http_header_timeout * 1000))
            ),
            log_access=False,
            log_dictconfig=GRANIAN_LOG_CONFIG,
            backlog=4096,
            respawn_failed_workers=True,
            workers_kill_timeout=30,
        ).serve()


def run(settings: Settings) -> int:
    embedded = None
    if settings.database_url is None:
        from service.embedded import EmbeddedPostgres

        data_dir = Path(os.environ.get("EMBEDDED_PG_DATA", DEFAULT_DATA_DIR))
        port = int(os.environ.get("EMBEDDED_PG_PORT", "55432"))
        embedded = EmbeddedPostgres(data_dir, port)
        url = embedded.start()
        log.info("embedded PostgreSQL at %s (data in %s)", url, data_dir)
        settings = dataclasses.replace(settings, database_url=url)
    try:
        # Migrations run in a child process: psqlpy's runtime threads would not survive the
        # fork of granian's workers if this process had started them.
        command = [sys.executable, "-m", "service", "migrate"]
        if embedded is not None:
            command.append("--demo")
        env = {**os.environ, **settings.as_env()}
        if subprocess.run(command, env=env, check=False).returncode != 0:
            log.error("migrations failed; not serving")
            return 1
        log.info(
            "serving on http://%s:%s with %d workers, %d database connections each",
            settings.host,
            settings.port,
            settings.workers,
            settings.pool_share(),
        )
        serve(settings)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="migrate and serve (embedded PostgreSQL when no DATABASE_URL)")
    migrate = commands.add_parser("migrate", help="apply the migrations to DATABASE_URL")
    migrate.add_argument("--demo", action="store_true", help="also load the demo data (once)")
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
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"invalid setting: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if args.command == "run":
        return run(settings)
    if settings.database_url is None:
        print("DATABASE_URL is required for this command", file=sys.stderr)
        return 2
    if args.command == "goods":
        from service.admin import run_goods_command

        return leave(run_goods_command(settings, args))
    if args.command == "verify":
        return leave(asyncio.run(_verify(settings.database_url)))
    asyncio.run(_prepare(settings.database_url, settings, demo=args.demo))
    return leave(0)


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
