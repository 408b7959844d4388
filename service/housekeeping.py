"""Background chores every worker runs for itself: no separate daemon to deploy or forget."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from service.db import DatabaseUnavailable, Queries

log = logging.getLogger("service.housekeeping")

FORGET_CHUNK = 10_000  # the LIMIT of sql/queries.sql `forget-idempotency-keys` and `outbox-abandon`


async def _every(every: float, what: str, chore: Callable[[], Awaitable[None]]) -> None:
    """Run `chore` every `every` seconds (jittered; 0: never). Every worker of every instance
    runs it; the jitter spreads their passes."""
    if every <= 0:
        return
    while True:
        await asyncio.sleep(every * random.uniform(0.5, 1.5))
        try:
            await chore()
        except DatabaseUnavailable as error:
            log.warning("%s skipped: %s", what, error)


async def _in_chunks(db: Queries, name: str, params: list[int], done: str) -> None:
    """Run a deleting statement until it deletes less than a chunk, logging what it did."""
    while True:
        ((deleted,),) = await db.rows(name, params)
        if deleted:
            log.info(done, deleted)
        if deleted < FORGET_CHUNK:
            break


async def forget_old_idempotency_keys(db: Queries, retention_hours: int, every: float) -> None:
    """Delete idempotency keys older than the retention, every `every` seconds (jittered).

    A pass that finds nothing costs one index range probe. Deletion goes in bounded chunks.
    """
    await _every(every, "idempotency key cleanup", lambda: _in_chunks(
        db, "forget-idempotency-keys", [retention_hours],
        f"forgot %d idempotency keys older than {retention_hours}h",
    ))  # fmt: skip


async def abandon_outbox(db: Queries, abandon_hours: int, every: float) -> None:
    """Once no relay has run for `abandon_hours` (NATS_URL taken away from every instance),
    switch the outbox off and empty it, so that nothing grows without a relay; a relay that
    starts again switches it back on (docs/reliability.md)."""
    await _every(every, "outbox cleanup", lambda: _in_chunks(
        db, "outbox-abandon", [abandon_hours],
        f"no outbox relay for {abandon_hours}h: deleted %d unpublished events",
    ))  # fmt: skip
