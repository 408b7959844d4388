"""Products: the goods_item() row as the API shows it, and the administration use cases (register,
change, list with their rules), shared by the admin API and `python -m service goods`. The admin
views add the product's rules (category, min_amount, amount_unit, repaid: what invest checks and
what the caps count) to the list's item."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, NamedTuple
from zoneinfo import ZoneInfo

from service.db import Queries
from service.investors import limit_below_invested
from service.parsing import MAX_AMOUNT, MAX_GOODS_ID, parse_time
from service.problems import Problem
from service.shapes import STATE, TIME

MAX_TITLE = 30  # investment_goods.title is varchar(30), as in the seed
CATEGORIES = ("general", "real_estate")
RULES = ("category", "min_amount", "amount_unit", "repaid")
FIELDS = ("title", "total_investing_amount", "started_at", "finished_at", "status", *RULES)


class Goods(NamedTuple):
    """A row of goods_item() (sql/migrations/004_goods_item.sql), the columns of `list-goods` and
    the `admin-goods-*` statements: SPEC §1's product item, its fields in the API's key order."""

    goods_id: int
    title: str
    total_investing_amount: int
    current_investing_amount: int
    investor_count: int
    status: bool
    state: Annotated[str, STATE]
    started_at: Annotated[str, TIME]
    finished_at: Annotated[str, TIME]


def goods_json(row: tuple[Any, ...]) -> dict[str, Any]:
    """A goods_item() row as the API's product item (the one place such rows become JSON): the
    dict of Goods._make(row)._asdict() without the tuple in between (a list load has many rows)."""
    return dict(zip(Goods._fields, row, strict=True))


class GoodsRules(NamedTuple):
    """What the admin views add to the product item (the `admin-goods-*` statements' last
    columns): the rules of sql/migrations/008_limits.sql."""

    category: Annotated[str, {"type": "string", "enum": list(CATEGORIES)}]
    min_amount: int
    amount_unit: int
    repaid: bool


ADMIN_GOODS_KEYS = Goods._fields + GoodsRules._fields


def admin_goods_json(row: tuple[Any, ...]) -> dict[str, Any]:
    """An `admin-goods-*` row (the product item, then its rules) as the admin API shows it."""
    return dict(zip(ADMIN_GOODS_KEYS, row, strict=True))


@dataclass(frozen=True, slots=True)
class GoodsFields:
    """Validated product fields; None means "not given" (kept as is by a change)."""

    title: str | None = None
    total_investing_amount: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    status: bool | None = None
    category: str | None = None
    min_amount: int | None = None
    amount_unit: int | None = None
    repaid: bool | None = None

    def params(self) -> list[Any]:
        return [self.title, self.total_investing_amount, self.started_at, self.finished_at,
                self.status, self.category, self.min_amount, self.amount_unit,
                self.repaid]  # fmt: skip


def validate_goods(values: Mapping[str, Any], zone: ZoneInfo, *, create: bool) -> GoodsFields:
    """The admin rules (API and CLI): title 1-30 characters, total an integer in [1, 2^53-1],
    times as `YYYY-MM-DD HH:MM:SS` in the display zone with finished_at after started_at,
    status a boolean; category general or real_estate, min_amount and amount_unit integers in
    [1, 2^53-1], repaid a boolean. `create` requires the first four; a change requires at least
    one field."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise Problem("INVALID_GOODS", f"unknown fields: {', '.join(unknown)}")
    given = {key: value for key, value in values.items() if value is not None}
    if create:
        missing = [key for key in FIELDS[:4] if key not in given]
        if missing:
            raise Problem("INVALID_GOODS", f"required: {', '.join(missing)}")
    elif not given:
        raise Problem("INVALID_GOODS", f"give at least one of {', '.join(FIELDS)}")
    title = given.get("title")
    if title is not None:
        if not isinstance(title, str) or not 1 <= len(title.strip()) <= MAX_TITLE:
            raise Problem("INVALID_GOODS", f"title must be text of 1 to {MAX_TITLE} characters")
        if not title.isprintable():
            raise Problem("INVALID_GOODS", "title must not contain control characters")
        title = title.strip()
    total = given.get("total_investing_amount")
    if total is not None and (
        not isinstance(total, int) or isinstance(total, bool) or not 1 <= total <= MAX_AMOUNT
    ):
        raise Problem("INVALID_GOODS", "total_investing_amount must be an integer in [1, 2^53-1]")
    bounds: dict[str, datetime] = {}
    for name in ("started_at", "finished_at"):
        raw = given.get(name)
        if raw is None:
            continue
        try:
            if not isinstance(raw, str):
                raise ValueError(name)
            bounds[name] = parse_time(raw.strip(), zone)
        except ValueError:
            raise Problem(
                "INVALID_GOODS", f"{name} must be a time as YYYY-MM-DD HH:MM:SS"
            ) from None
    if len(bounds) == 2 and bounds["finished_at"] <= bounds["started_at"]:
        raise Problem("INVALID_GOODS", "finished_at must be after started_at")
    for name in ("status", "repaid"):
        if not isinstance(given.get(name, False), bool):
            raise Problem("INVALID_GOODS", f"{name} must be true or false")
    category = given.get("category")
    if category is not None and category not in CATEGORIES:
        raise Problem("INVALID_GOODS", f"category must be one of {', '.join(CATEGORIES)}")
    for name in ("min_amount", "amount_unit"):
        value = given.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_AMOUNT
        ):
            raise Problem("INVALID_GOODS", f"{name} must be an integer in [1, 2^53-1]")
    return GoodsFields(
        title, total, bounds.get("started_at"), bounds.get("finished_at"), given.get("status"),
        category, given.get("min_amount"), given.get("amount_unit"), given.get("repaid"),
    )  # fmt: skip


async def create_goods(db: Queries, fields: GoodsFields) -> dict[str, Any]:
    status = True if fields.status is None else fields.status
    params = [fields.title, fields.total_investing_amount, status, fields.started_at,
              fields.finished_at, fields.category, fields.min_amount, fields.amount_unit,
              fields.repaid]  # fmt: skip
    rows = await db.rows("admin-goods-create", params)
    return admin_goods_json(rows[0])


async def change_goods(db: Queries, goods_id: int, fields: GoodsFields) -> dict[str, Any]:
    """Apply the given fields atomically (admin_change_goods(), sql/functions/admin_limits.sql);
    Problem when the product is unknown or refuses them, and then nothing was changed. The total
    may not fall below what is already invested, and a change of category or repaid may not put
    an investor over a cap: both are decided on the locked row (and, for caps, under the
    exclusive limits lock), so no invest can slip in between."""
    rows = await db.rows("admin-goods-update", [goods_id, *fields.params()])
    if not rows:
        raise Problem("GOODS_NOT_FOUND", f"there is no product with goods_id {goods_id}")
    (outcome, cap, users, user_id), product = rows[0][:4], admin_goods_json(rows[0][4:])
    if outcome == "total_below_invested":
        raise Problem(
            "TOTAL_BELOW_INVESTED",
            f"total_investing_amount may not go below the {product['current_investing_amount']}"
            " already invested; nothing was changed",
        )
    if outcome == "period":
        raise Problem("INVALID_GOODS", "finished_at must be after started_at")
    if outcome == "limit_below_invested":
        raise limit_below_invested(cap, users, user_id)
    return product


async def close_goods(db: Queries, goods_id: int) -> dict[str, Any]:
    if not 1 <= goods_id <= MAX_GOODS_ID:
        raise Problem("INVALID_GOODS_ID", "goods_id must be an integer >= 1")
    return await change_goods(db, goods_id, GoodsFields(status=False))


async def list_all_goods(db: Queries) -> list[dict[str, Any]]:
    """Every product with its rules, by goods_id."""
    return [admin_goods_json(row) for row in await db.rows("admin-goods-list")]
