"""Command line: `python -m service run|migrate` (run = migrate, demo data when embedded, serve)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

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


def serve(settings: Settings) -> None:
    """Run granian with `settings.workers` processes; returns once stopped (SIGINT/SIGTERM)."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops

    os.environ.update(settings.as_env())  # the workers read their settings from the environment
    Granian(
        "service.app:create_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        log_access=False,
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
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"invalid setting: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if args.command == "run":
        return run(settings)
    if settings.database_url is None:
        print("DATABASE_URL is required for this command", file=sys.stderr)
        return 2
    asyncio.run(_prepare(settings.database_url, settings, demo=args.demo))
    return 0


if __name__ == "__main__":
    sys.exit(main())
