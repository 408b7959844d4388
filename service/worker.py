"""One worker's state: its databases, readiness probe, coalescers, list cache, use cases and
chores, built once when the worker starts (in its own event loop) and closed when it stops.

Everything it serves with comes in by parameter: the composition root (service/app.py) passes
PostgreSQL's pools and the metrics; tests/fakes.py passes an in-memory database."""

from __future__ import annotations

import asyncio
import logging

from service.batcher import InvestBatcher, PageBatcher
from service.cancelling import Cancelling
from service.caps import Limits
from service.db import Databases, DatabaseUnavailable, key_locks_per_call
from service.holdings import Holdings
from service.housekeeping import abandon_outbox, forget_old_idempotency_keys
from service.investing import Investing
from service.listing import GoodsListing, Windows
from service.metrics import Metrics
from service.readiness import Readiness
from service.settings import Settings

log = logging.getLogger("service.worker")


class Worker:
    """Built once in the application's start hook; the handlers reach everything through it."""

    def __init__(self, settings: Settings, metrics: Metrics, databases: Databases) -> None:
        self.settings = settings
        self.db = databases.main
        self.reads = databases.reads  # READ_DATABASE_URL: a standby for the product list
        self.readiness = Readiness(databases.ready)
        self.invests = InvestBatcher(
            self.db, settings, on_batch=metrics.invest_batch,
            waits=metrics.queue_wait("invest"), held_waits=metrics.queue_wait("invest_held"),
        )  # fmt: skip
        self.pages = PageBatcher(self.db, settings, waits=metrics.queue_wait("page"))
        self.windows = Windows(settings)
        self.listing = GoodsListing(self.db, settings, metrics, self.reads)
        self.investing = Investing(self.invests, metrics)
        self.holdings = Holdings(self.pages)
        self.limits = Limits(self.db)  # the primary: read-your-writes
        self.cancelling = Cancelling(self.db, settings)
        self._chores = [
            asyncio.create_task(
                forget_old_idempotency_keys(
                    self.db, settings.idempotency_retention_hours,
                    settings.idempotency_cleanup_seconds,
                )
            ),
            asyncio.create_task(
                abandon_outbox(
                    self.db, settings.relay_abandon_hours, settings.idempotency_cleanup_seconds
                )
            ),
            asyncio.create_task(self._learn_key_budget()),
        ]  # fmt: skip

    async def _learn_key_budget(self) -> None:
        """The server's lock table bounds the keyed requests per invest call; until it is read
        (or if the database is down at start), PostgreSQL's default is assumed: never more."""
        try:
            self.invests.key_locks = await key_locks_per_call(self.db)
        except DatabaseUnavailable as error:
            log.warning("lock table settings not read (%s): keyed requests per call stay at %d",
                        error, self.invests.key_locks)  # fmt: skip

    async def close(self) -> None:
        for chore in self._chores:
            chore.cancel()
        await asyncio.gather(*self._chores, return_exceptions=True)
        await self.invests.drain()
        await self.pages.drain()
        self.db.close()
        if self.reads is not self.db:
            self.reads.close()
        self.readiness.close()
