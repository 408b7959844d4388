"""Background chores every worker runs for itself: no separate daemon to deploy or forget."""

from __future__ import annotations

import asyncio
import logging
import random

from service.db import DatabaseUnavailable, Queries

log = logging.getLogger("service.housekeeping")

FORGET_CHUNK = 10_000  # the LIMIT of sql/queries.sql `forget-idempotency-keys`


async def forget_old_idempotency_keys(db: Queries, retention_hours: int, every: float) -> None:
    """Delete idempotency keys older than the retention, every `every` seconds (jittered).

    Every worker of every instance runs this loop; the jitter spreads their passes, and a pass
    that finds nothing costs one index range probe. Deletion goes in bounded chunks.
    """
    if every <= 0:
        return
    while True:
        await asyncio.sleep(every * random.uniform(0.5, 1.5))
        try:
            while True:
                ((deleted,),) = await db.rows("forget-idempotency-keys", [retention_hours])
                if deleted:
                    log.info("forgot %d idempotency keys older than %dh", deleted, retention_hours)
                if deleted < FORGET_CHUNK:
                    break
        except DatabaseUnavailable as error:
            log.warning("idempotency key cleanup skipped: %s", error)
