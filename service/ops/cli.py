"""`python -m service`'s commands as one table: each command's name, help line, arguments, and
the function that runs it (start.py: run, serve, migrate, preflight; commands.py: goods, investor,
limits, verify, backup, restore). service/__main__.py parses, looks the command up here, calls
it, exits."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.goods import CATEGORIES
from service.investors import CAPS, CLASSES
from service.logs import configure_logging
from service.ops import commands, start
from service.settings import Settings, SettingsError, load_settings

DESCRIPTION = (
    "The investment service. `run` starts it: migrations (and demo data on the embedded"
    " database), the start-up checks, then `serve`. The other commands are its operations."
)


def _none(parser: argparse.ArgumentParser) -> None:
    """A command without arguments."""


@dataclass(frozen=True)
class Command:
    """One command. `needs_database_url`: refused (exit 2) without DATABASE_URL; `psqlpy`: it
    ran psqlpy, so the process exits at once (leave())."""

    name: str
    help: str
    call: Callable[[Settings, argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None] = _none
    needs_database_url: bool = False
    psqlpy: bool = False

    def __call__(self, settings: Settings, args: argparse.Namespace) -> int:
        """Run the command; its exit code."""
        if self.needs_database_url and settings.database_url is None:
            print("DATABASE_URL is required for this command", file=sys.stderr)
            return 2
        code = self.call(settings, args)
        return leave(code) if self.psqlpy else code


def _run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-migrate",
        action="store_true",
        help="serve a database that is migrated already (rolling deploys, behind PgBouncer)",
    )


def _serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stop-embedded", type=Path, help="stop this embedded PostgreSQL's data folder at exit"
    )


def _migrate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--demo", action="store_true", help="also load the demo data (once)")
    parser.add_argument(
        "--create-service-login",
        action="store_true",
        help="create DATABASE_URL's user as a login when missing (with MIGRATION_DATABASE_URL)",
    )


def _goods(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="goods_command", required=True)
    add = actions.add_parser("add", help="register a product; prints it as JSON")
    add.add_argument("--title", required=True)
    add.add_argument("--total", required=True, type=int, help="total investing amount (KRW)")
    add.add_argument("--start", required=True, help="YYYY-MM-DD HH:MM:SS, display time zone")
    add.add_argument("--finish", required=True, help="YYYY-MM-DD HH:MM:SS, display time zone")
    close = actions.add_parser("close", help="close a product (status false); prints it as JSON")
    close.add_argument("goods_id", type=int)
    rules = actions.add_parser(
        "rules", help="set a product's rules (at least one option); prints it as JSON"
    )
    rules.add_argument("goods_id", type=int)
    rules.add_argument("--category", choices=CATEGORIES, help="real_estate counts toward that cap")
    rules.add_argument("--min-amount", type=int, help="the smallest amount an invest may ask")
    rules.add_argument("--amount-unit", type=int, help="an invest's amount is a multiple of it")
    rules.add_argument("--repaid", type=_boolean, help="true: no longer counts toward the totals")
    actions.add_parser("list", help="print every product with its rules, one JSON per line")


def _boolean(text: str) -> bool:
    if text not in ("true", "false"):
        raise argparse.ArgumentTypeError("true or false")
    return text == "true"


def _cap(text: str) -> int | None:
    """A cap on the command line: an integer, or `none` for no cap."""
    if text == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("an integer (KRW) or none") from None


def _investor(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="investor_command", required=True)
    put = actions.add_parser("set", help="set a user's investor class; prints the investor")
    put.add_argument("user_id")
    put.add_argument("investor_class", choices=CLASSES)
    show = actions.add_parser("show", help="a user's class, live positions and caps as JSON")
    show.add_argument("user_id")


def _limits(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="limits_command", required=True)
    put = actions.add_parser("set", help="replace a class's caps (KRW, or none); prints them")
    put.add_argument("investor_class", choices=CLASSES)
    for cap in CAPS:
        option = "--" + cap.replace("_", "-")
        put.add_argument(option, required=True, type=_cap, metavar="KRW|none")
    actions.add_parser("list", help="every class's caps, one JSON object per line")


def _backup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--into", type=Path, default=start.DEFAULT_BACKUP_DIR, help="backups folder"
    )


def _restore(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backup", type=Path, help="a folder written by `backup`")
    parser.add_argument("--data-dir", type=Path, required=True, help="fresh data directory")
    parser.add_argument(
        "--time",
        default="latest",
        help="YYYY-MM-DD HH:MM:SS[.ffffff][+zone] (no zone: TIMEZONE), or latest (the default)",
    )
    parser.add_argument(
        "--archive", type=Path, default=start.DEFAULT_ARCHIVE_DIR, help="WAL archive"
    )
    parser.add_argument("--port", type=int, default=0, help="port of the restored server")
    parser.add_argument(
        "--keep-running", action="store_true", help="leave the restored server running"
    )


COMMANDS = {
    command.name: command
    for command in [
        Command(
            "run",
            "migrate and serve (embedded PostgreSQL when no DATABASE_URL)",
            start.run_command,
            _run,
        ),
        Command(
            "serve",
            "what `run` becomes once migrated and checked: serve, nothing else",
            start.serve_command,
            _serve,
        ),
        Command(
            "migrate",
            "apply the migrations to DATABASE_URL",
            start.migrate_command,
            _migrate,
            needs_database_url=True,
            psqlpy=True,
        ),
        Command(
            "preflight",
            "check DATABASE_URL's durability settings and role before serving",
            start.preflight_command,
            needs_database_url=True,
            psqlpy=True,
        ),
        Command(
            "relay",
            "publish the outbox to NATS JetStream (NATS_URL); `run` starts it when NATS_URL is set",
            commands.relay_command,
            needs_database_url=True,
            psqlpy=True,
        ),
        Command(
            "goods",
            "administer products (DATABASE_URL)",
            commands.goods_command,
            _goods,
            needs_database_url=True,
            psqlpy=True,
        ),
        Command(
            "investor",
            "administer investors' classes (DATABASE_URL)",
            commands.investor_command,
            _investor,
            needs_database_url=True,
            psqlpy=True,
        ),
        Command(
            "limits",
            "administer the caps of each investor class (DATABASE_URL)",
            commands.limits_command,
            _limits,
            needs_database_url=True,
            psqlpy=True,
        ),
        Command(
            "verify",
            "check every ledger invariant on DATABASE_URL; exit 1 on any violation",
            commands.verify_command,
            needs_database_url=True,
            psqlpy=True,
        ),
        Command(
            "backup",
            "base backup of MIGRATION_DATABASE_URL (else DATABASE_URL) with pg_basebackup",
            commands.backup_command,
            _backup,
        ),
        Command(
            "restore",
            "restore a base backup + WAL archive into a fresh data directory",
            commands.restore_command,
            _restore,
            psqlpy=True,
        ),
    ]
}


def parser() -> argparse.ArgumentParser:
    """Every command of the table; an unknown one is argparse's usage error (exit 2)."""
    parser = argparse.ArgumentParser(prog="python -m service", description=DESCRIPTION)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.arguments(subparsers.add_parser(command.name, help=command.help))
    return parser


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
