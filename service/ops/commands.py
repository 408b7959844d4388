"""The commands that act on a database and exit: `goods`, `investor` and `limits` (administration,
the use cases of service/goods.py and service/investors.py), `verify` (the ledger verifier,
verify.py), `backup` and `restore` (backup.py). Each returns its exit code and says why it failed
in one line on stderr."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from service.settings import Settings, redact

if TYPE_CHECKING:
    from service.db import Queries


def _administer(settings: Settings, use_case: Callable[[Queries], Awaitable[list[Any]]]) -> int:
    """Run an administration use case on DATABASE_URL and print what it answers as JSON, one
    object per line: 0 done, 1 refused (an unknown product, a change below what is invested, the
    database), 2 invalid input (a 400's code)."""
    import orjson

    from service.db import DatabaseUnavailable
    from service.problems import Problem

    async def run() -> list[Any]:
        from service.db import Database

        db = Database(settings, 2)  # psqlpy wants a pool of at least 2
        try:
            return await use_case(db)
        finally:
            db.close()

    try:
        documents = asyncio.run(run())
    except Problem as problem:
        print(f"{problem.code}: {problem.detail}", file=sys.stderr)
        return 2 if problem.status == 400 else 1
    except DatabaseUnavailable as error:
        print(f"SERVICE_UNAVAILABLE: {redact(str(error))}", file=sys.stderr)
        return 1
    for document in documents:
        sys.stdout.buffer.write(orjson.dumps(document) + b"\n")
    return 0


def goods_command(settings: Settings, args: argparse.Namespace) -> int:
    """`python -m service goods add|close|rules|list` (service/goods.py)."""
    from service.goods import (
        change_goods,
        close_goods,
        create_goods,
        list_all_goods,
        validate_goods,
    )
    from service.parsing import MAX_GOODS_ID
    from service.problems import Problem

    async def use_case(db: Queries) -> list[Any]:
        if args.goods_command == "add":
            values = {"title": args.title, "total_investing_amount": args.total,
                      "started_at": args.start, "finished_at": args.finish}  # fmt: skip
            return [await create_goods(db, validate_goods(values, settings.zone, create=True))]
        if args.goods_command == "close":
            return [await close_goods(db, args.goods_id)]
        if args.goods_command == "rules":
            if not 1 <= args.goods_id <= MAX_GOODS_ID:
                raise Problem("INVALID_GOODS_ID", "goods_id must be an integer >= 1")
            rules = {"category": args.category, "min_amount": args.min_amount,
                     "amount_unit": args.amount_unit, "repaid": args.repaid}  # fmt: skip
            fields = validate_goods(rules, settings.zone, create=False)
            return [await change_goods(db, args.goods_id, fields)]
        return await list_all_goods(db)

    return _administer(settings, use_case)


def investor_command(settings: Settings, args: argparse.Namespace) -> int:
    """`python -m service investor set|show` (service/investors.py)."""
    from service import investors

    async def use_case(db: Queries) -> list[Any]:
        user_id = investors.parse_user_id(args.user_id)
        if args.investor_command == "set":
            investor_class = investors.validate_investor({"investor_class": args.investor_class})
            return [await investors.set_investor_class(db, user_id, investor_class)]
        return [await investors.show_investor(db, user_id)]

    return _administer(settings, use_case)


def limits_command(settings: Settings, args: argparse.Namespace) -> int:
    """`python -m service limits set|list` (service/investors.py)."""
    from service import investors

    async def use_case(db: Queries) -> list[Any]:
        if args.limits_command == "set":
            investor_class = investors.parse_class(args.investor_class)
            caps = investors.validate_limits(
                {"per_product": args.per_product, "total": args.total,
                 "real_estate": args.real_estate}
            )  # fmt: skip
            return [await investors.set_limits(db, investor_class, caps)]
        return list(await investors.list_limits(db))

    return _administer(settings, use_case)


def verify_command(settings: Settings, args: argparse.Namespace) -> int:
    """`python -m service verify`: 0 no violation, 1 violations (one JSON line each), 2 could not
    verify."""
    assert settings.database_url is not None
    return asyncio.run(_verify(settings.database_url))


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


def backup_command(settings: Settings, args: argparse.Namespace) -> int:
    """`python -m service backup [--into DIR]` of the owner's database: 0 done, 1 failed."""
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


def relay_command(settings: Settings, args: argparse.Namespace) -> int:
    """`python -m service relay`: the outbox relay (service/relay.py) until SIGTERM or SIGINT;
    `run` starts it next to the workers when NATS_URL is set."""
    from service.metrics import RelayMetrics
    from service.relay import Relay, run_until_stopped

    if settings.nats_url is None:
        print("NATS_URL is required for the relay", file=sys.stderr)
        return 2
    import nats  # noqa: F401  imported before the collector is settled (Publisher.open uses it)
    import uvloop

    from service import memory

    # Its metrics go to PROMETHEUS_MULTIPROC_DIR, which `run` gives it: the workers' /metrics.
    relay = Relay(settings, RelayMetrics())
    memory.settle()  # as in the workers: the relay allocates per event, frees by refcount
    uvloop.run(run_until_stopped(relay.run))  # the workers' event loop (service/ops/serving.py)
    return 0
