"""The cancel use case: one DELETE through its own cancel_investment() call, not the invests'
coalesced one (docs/reliability.md "How a cancellation stays atomic under the rush"), answered
as the CancelResult JSON bytes (the shape declared here and described by service/openapi.py)."""

from __future__ import annotations

import asyncio
from typing import Annotated, NamedTuple, TypedDict

import orjson

from service.db import DatabaseUnavailable, OutcomeUnknown, Queries
from service.problems import Problem
from service.settings import Settings
from service.shapes import STATE, TIME

# The cancellation was sent and its answer lost. Unlike an invest's, a plain repeat is safe: the
# same DELETE answers the stored cancellation if this one was made, or makes it once.
CANCEL_OUTCOME_UNKNOWN_DETAIL = (
    "the cancellation was sent to the database and its answer was lost: it may or may not have"
    " been made. Repeat the same DELETE: it answers the cancellation either way."
)


class CancelRow(NamedTuple):
    """The row of sql/queries.sql `cancel-investment`."""

    outcome: str  # done | replay | not_found | not_cancellable
    investment_id: int
    goods_id: int | None
    cancelled_amount: int | None
    cancelled_at: str | None
    current_investing_amount: int | None
    status: bool | None
    state: str | None


class CancelResult(TypedDict):
    """The answer to a cancellation (the first one's, again for a repeat), in the API's key
    order; the product's fields are as they were right after it."""

    investment_id: int
    goods_id: int
    cancelled_amount: int
    cancelled_at: Annotated[str, TIME]
    current_investing_amount: int
    status: bool
    state: Annotated[str, STATE]


class Cancelling:
    """Cancels through the worker's pool, one statement per request, at most
    CANCEL_CALLS_IN_FLIGHT at once: a cancellation waiting for a product row held elsewhere
    (at most DB_ACQUIRE_TIMEOUT) holds one of those, never a connection invests, pages or lists
    count on. A request that gets no turn within DB_ACQUIRE_TIMEOUT is answered 503."""

    def __init__(self, db: Queries, settings: Settings) -> None:
        self._db = db
        self._turns = asyncio.Semaphore(settings.cancel_calls_in_flight)
        self._wait = settings.db_acquire_timeout
        self._lock_wait_ms = max(1, int(settings.db_acquire_timeout * 1000))

    async def cancel(self, user_id: int, investment_id: int) -> bytes:
        try:
            async with asyncio.timeout(self._wait):
                await self._turns.acquire()
        except TimeoutError:
            raise DatabaseUnavailable(
                f"no turn among the worker's cancellations within {self._wait:g}s"
            ) from None
        try:
            rows = await self._db.rows(
                "cancel-investment", [user_id, investment_id, self._lock_wait_ms], writes=True
            )
        except OutcomeUnknown:
            raise DatabaseUnavailable(CANCEL_OUTCOME_UNKNOWN_DETAIL) from None
        finally:
            self._turns.release()
        row = CancelRow._make(rows[0])
        if row.outcome == "not_found":
            raise Problem(
                "INVESTMENT_NOT_FOUND", f"user {user_id} has no investment {investment_id}"
            )
        if row.outcome == "not_cancellable":
            raise Problem(
                "INVESTMENT_NOT_CANCELLABLE",
                f"investment {investment_id} is in product {row.goods_id}, which is {row.state}:"
                " an investment is cancelled only while its product recruits or is sold out"
                " within its period",
            )
        result: CancelResult = {
            "investment_id": row.investment_id,
            "goods_id": row.goods_id,  # type: ignore[typeddict-item]
            "cancelled_amount": row.cancelled_amount,  # type: ignore[typeddict-item]
            "cancelled_at": row.cancelled_at,  # type: ignore[typeddict-item]
            "current_investing_amount": row.current_investing_amount,  # type: ignore[typeddict-item]
            "status": row.status,  # type: ignore[typeddict-item]
            "state": row.state,  # type: ignore[typeddict-item]
        }
        return orjson.dumps(result)
