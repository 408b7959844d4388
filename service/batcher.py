"""Invest coalescing (group commit): one database call per product at a time, the rest queue up.

While a call for a product is in flight, further investments for that product wait and go
together in the next call, in arrival order, through invest_batch() (first come, first served).
One product per call keeps lock order trivial across instances. With at most `max_batch`
requests waiting, a request waits for at most one in-flight call before its own starts.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from service.db import Database

if TYPE_CHECKING:
    from service.metrics import Metrics

InvestRow = tuple[Any, ...]  # a row of sql/queries.sql `invest-batch`, without its ord column
_Waiting = tuple[int, int, str | None, "asyncio.Future[InvestRow]"]
# The answer for a key whose first request is still unanswered (same columns as invest-batch).
IN_USE: InvestRow = ("in_use", None, None, None, None, None, None, None)


class InvestBatcher:
    def __init__(self, db: Database, max_batch: int) -> None:
        self._db = db
        self._max_batch = max_batch
        self._waiting: dict[int, list[_Waiting]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._keys_in_flight: set[tuple[int, str]] = set()
        self.batch_sizes: list[int] = []  # recent batch sizes, for metrics and tests
        self.metrics: Metrics | None = None  # set by the composition root when metrics are on

    async def invest(
        self, goods_id: int, user_id: int, amount: int, key: str | None = None
    ) -> InvestRow:
        """(outcome, found, total, invested, current, state, invest_date, investment_id)."""
        loop = asyncio.get_running_loop()
        result: asyncio.Future[InvestRow] = loop.create_future()
        if key is not None:
            # A retry that arrives while its first request waits here is answered at once;
            # across workers and instances the database's advisory lock decides the same.
            held = (user_id, key)
            if held in self._keys_in_flight:
                return IN_USE
            self._keys_in_flight.add(held)
            result.add_done_callback(lambda _: self._keys_in_flight.discard(held))
        queue = self._waiting.get(goods_id)
        if queue is not None:
            queue.append((user_id, amount, key, result))
        else:
            self._waiting[goods_id] = [(user_id, amount, key, result)]
            task = loop.create_task(self._drain(goods_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # The call goes on if this request is cancelled (client gone): an accepted
        # investment is still written, only its answer is not delivered.
        return await asyncio.shield(result)

    async def _drain(self, goods_id: int) -> None:
        queue = self._waiting[goods_id]
        try:
            while queue:
                batch = queue[: self._max_batch]
                del queue[: self._max_batch]
                self._record(len(batch))
                keys = [item[2] for item in batch]
                try:
                    rows = await self._db.rows(
                        "invest-batch",
                        [
                            goods_id,
                            [item[0] for item in batch],
                            [item[1] for item in batch],
                            keys if any(key is not None for key in keys) else None,
                        ],
                    )
                    if len(rows) != len(batch):
                        raise RuntimeError(f"invest_batch answered {len(rows)} of {len(batch)}")
                except Exception as error:
                    for *_, result in batch:
                        result.set_exception(error)
                        result.exception()  # retrieved even if its request has gone
                    continue
                for (*_, result), row in zip(batch, rows, strict=True):
                    result.set_result(row[1:])
        finally:
            del self._waiting[goods_id]

    def _record(self, size: int) -> None:
        self.batch_sizes.append(size)
        if self.metrics is not None:
            self.metrics.invest_batch(size)
        if len(self.batch_sizes) > 4096:
            del self.batch_sizes[:2048]

    async def drain(self) -> None:
        """Wait for every call in flight (graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
