"""/readyz's own path to the database: a connection outside the request pool, a bounded probe.

At peak every connection of the request pool can be busy for seconds (invests queued on a hot
row), which says nothing about whether the database answers. Readiness must not wait in that
queue: a balancer would take every saturated instance out at once. So the probe runs on a pool
of its own, concurrent checks share one probe (one connection in use per worker), and it is
bounded well below a balancer's check timeout (haproxy's is 2 s in deploy/), so a database that
hangs reads as not ready instead of as a check that timed out.
"""

from __future__ import annotations

import asyncio

from service.db import DatabaseUnavailable, Queries

READY_TIMEOUT = 1.0  # seconds; half of the balancer's check timeout


class Readiness:
    """Runs the `ready` statement on a database of its own; raises DatabaseUnavailable when it fails
    or takes longer than READY_TIMEOUT."""

    def __init__(self, db: Queries, timeout: float = READY_TIMEOUT) -> None:
        self.db = db
        self.timeout = timeout
        self._flight: asyncio.Future[None] | None = None

    async def check(self) -> None:
        flight = self._flight
        if flight is None:
            flight = self._flight = asyncio.ensure_future(self._probe())
            flight.add_done_callback(self._landed)
        # shield: a check whose client went away must not cancel the probe others wait for.
        await asyncio.shield(flight)

    def _landed(self, flight: asyncio.Future[None]) -> None:
        self._flight = None
        if not flight.cancelled():
            flight.exception()  # retrieved, even when every waiter has gone

    async def _probe(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.db.rows("ready")
        except TimeoutError:
            raise DatabaseUnavailable(
                f"the database did not answer the readiness probe within {self.timeout:g}s"
            ) from None

    def close(self) -> None:
        self.db.close()
