"""The invest use case: one request through the worker's coalesced invest_many() call, answered
as the InvestResult JSON bytes (the shape declared here and described by service/openapi.py)."""

from __future__ import annotations

from typing import Annotated, TypedDict

import orjson

from service.batcher import InvestBatcher
from service.metrics import Metrics
from service.problems import Problem
from service.shapes import STATE, TIME


class InvestResult(TypedDict):
    """SPEC §2's answer, in the API's key order. A TypedDict: the answer is a plain dict (a
    third of a dataclass's cost to build and write), its keys checked by mypy."""

    user_id: int
    goods_id: int
    total_investing_amount: int
    investment_amount: int
    status: bool
    invest_date: Annotated[str, TIME]
    requested_amount: int
    current_investing_amount: int
    state: Annotated[str, STATE]
    investment_id: int | None


RULES = {
    "min_amount": "at least the product's min_amount, {value}",
    "amount_unit": "a multiple of the product's amount_unit, {value}",
}


def refuse(outcome: str, refused: str, value: int | None, amount: int) -> None:
    """Raise the problem for a request invest_many() refused (or a replay of a refusal): 400
    INVALID_AMOUNT for a product's amount rule, 422 INVESTMENT_LIMIT_EXCEEDED for a cap."""
    if outcome == "invalid_amount":
        rule = RULES[refused].format(value=value)
        raise Problem(
            "INVALID_AMOUNT",
            f"investmentAmount {amount} must be {rule} ({refused})",
            {"rule": refused, refused: value},
        )
    raise Problem(
        "INVESTMENT_LIMIT_EXCEEDED",
        f"this investment would exceed the investor's {refused} limit; at most {value} more"
        " can be invested now",
        {"limit": refused, "remaining": value},
    )


class Investing:
    """Invests through the worker's InvestBatcher; counts outcomes into the metrics."""

    def __init__(self, invests: InvestBatcher, metrics: Metrics) -> None:
        self._invests = invests
        self._metrics = metrics

    async def invest(
        self, user_id: int, goods_id: int, amount: int, key: str | None
    ) -> tuple[bytes, bool]:
        """(the InvestResult JSON, whether it replays an earlier answer of the same key)."""
        row = await self._invests.invest(goods_id, user_id, amount, key)
        outcome, invested, state = row.outcome, row.investment_amount, row.state
        if outcome == "in_use":
            raise Problem(
                "IDEMPOTENCY_KEY_IN_USE", "a request with this Idempotency-Key is still in progress"
            )
        if outcome == "mismatch":
            raise Problem(
                "IDEMPOTENCY_KEY_MISMATCH",
                "this Idempotency-Key was used with another product or amount",
            )
        if not row.found:
            raise Problem("GOODS_NOT_FOUND", f"there is no product with goods_id {goods_id}")
        if row.refused is not None:
            refuse(outcome, row.refused, row.refused_value, amount)
        if outcome != "replay":
            self._metrics.invest_outcome(amount, invested or 0)
        result: InvestResult = {
            "user_id": user_id,
            "goods_id": goods_id,
            "total_investing_amount": row.total_investing_amount,  # type: ignore[typeddict-item]
            "investment_amount": invested,  # type: ignore[typeddict-item]
            "status": bool(invested) and state == "recruiting",
            "invest_date": row.invest_date,  # type: ignore[typeddict-item]
            "requested_amount": amount,
            "current_investing_amount": row.current_investing_amount,  # type: ignore[typeddict-item]
            "state": state,  # type: ignore[typeddict-item]
            "investment_id": row.investment_id,
        }
        return orjson.dumps(result), outcome == "replay"
