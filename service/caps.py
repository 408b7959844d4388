"""The investor-limits use case (GET user/limits, SPEC §4): a user's class, caps, live amounts and
room, and with a product what an invest there would be granted in full now; one prepared
statement on the primary (sql/queries.sql `investor-limits`), so the user's own invests are in
it. Caps are decided by invest_many() itself; this only shows them."""

from __future__ import annotations

from typing import Annotated, TypedDict

import orjson

from service.db import Queries
from service.problems import Problem


class Caps(TypedDict):
    per_product: int | None
    total: int | None
    real_estate: int | None


class Invested(TypedDict):
    total: int
    real_estate: int


class Remaining(TypedDict):
    total: int | None
    real_estate: int | None


def _schema(shape: type, nullable: bool) -> dict[str, object]:
    kind: object = ["integer", "null"] if nullable else "integer"
    names = list(shape.__annotations__)
    return {
        "type": "object",
        "properties": {name: {"type": kind, "minimum": 0} for name in names},
        "required": names,
    }


CLASSES = ["general", "qualified", "professional"]
# Only when asked with ?goods_id= (service/openapi.py leaves them out of `required`).
FOR_GOODS = ("goods_id", "remaining_for_goods")


class InvestorLimits(TypedDict, total=False):
    """The answer, in the API's key order (SPEC §4): caps in KRW (null: none), the live amounts
    over products not repaid, the room each cap leaves (null: no cap), and with ?goods_id= the
    largest amount an invest in that product would be granted in full now."""

    user_id: int
    investor_class: Annotated[str, {"type": "string", "enum": CLASSES}]
    limits: Annotated[Caps, _schema(Caps, nullable=True)]
    invested: Annotated[Invested, _schema(Invested, nullable=False)]
    remaining: Annotated[Remaining, _schema(Remaining, nullable=True)]
    goods_id: int
    remaining_for_goods: Annotated[int, {"type": "integer", "minimum": 0}]


def _room(cap: int | None, invested: int) -> int | None:
    return None if cap is None else max(0, cap - invested)


class Limits:
    def __init__(self, db: Queries) -> None:
        self._db = db

    async def limits(self, user_id: int, goods_id: int | None) -> bytes:
        [row] = await self._db.rows("investor-limits", [user_id, goods_id])
        klass, per_product, total, real_estate, in_total, in_estate, found, for_goods = row
        if goods_id is not None and not found:
            raise Problem("GOODS_NOT_FOUND", f"there is no product with goods_id {goods_id}")
        answer: InvestorLimits = {
            "user_id": user_id,
            "investor_class": klass,
            "limits": {"per_product": per_product, "total": total, "real_estate": real_estate},
            "invested": {"total": in_total, "real_estate": in_estate},
            "remaining": {
                "total": _room(total, in_total),
                "real_estate": _room(real_estate, in_estate),
            },
        }
        if goods_id is not None:
            answer["goods_id"] = goods_id
            answer["remaining_for_goods"] = for_goods
        return orjson.dumps(answer)
