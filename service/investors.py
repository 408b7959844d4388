"""Investors and caps: a user's class and live positions, each class's caps, and the refusal every
change of them shares (LIMIT_BELOW_INVESTED); the use cases of the admin API and of
`python -m service investor|limits`. The decisions are SQL's (sql/functions/admin_limits.sql)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypedDict

from service.db import Queries
from service.parsing import MAX_AMOUNT, MAX_USER_ID
from service.problems import Problem
from service.shapes import TIME, schema_of

CLASSES = ("general", "qualified", "professional")
CAPS = ("per_product", "total", "real_estate")
CLASS = {"type": "string", "enum": list(CLASSES)}
CAP = {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_AMOUNT}


class Caps(TypedDict):
    """A class's caps in KRW; null: no cap."""

    per_product: Annotated[int | None, CAP]
    total: Annotated[int | None, CAP]
    real_estate: Annotated[int | None, CAP]


class Invested(TypedDict):
    """A user's live amounts over products not repaid: all of them, and the real-estate ones."""

    total: int
    real_estate: int


class Investor(TypedDict):
    """`GET`/`PUT /v1/api/admin/investors/{user_id}`'s answer."""

    user_id: int
    investor_class: Annotated[str, CLASS]
    invested: Annotated[Invested, schema_of(Invested)]
    limits: Annotated[Caps, schema_of(Caps)]


class ClassLimits(TypedDict):
    """One class's caps, as `GET /v1/api/admin/limits` lists them and `PUT` answers."""

    investor_class: Annotated[str, CLASS]
    per_product: Annotated[int | None, CAP]
    total: Annotated[int | None, CAP]
    real_estate: Annotated[int | None, CAP]
    updated_at: Annotated[str, TIME]


def limit_below_invested(cap: str, users: int, user_id: int) -> Problem:
    """The refusal of a change that would put `users` investors (the lowest id `user_id`) over
    their class's `cap`."""
    who = (
        f"user {user_id} would be"
        if users == 1
        else f"{users} users (the lowest id {user_id}) would be"
    )
    return Problem(
        "LIMIT_BELOW_INVESTED",
        f"{who} over the {cap} cap of their class with what they have invested; nothing was"
        " changed",
    )


def parse_user_id(raw: str) -> int:
    """A path's user id: a decimal integer in [1, 2^63-1], as X-USER-ID."""
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_USER_ID):
        raise Problem("INVALID_USER_ID", "user_id must be an integer from 1 to 2^63-1")
    return int(raw)


def parse_class(raw: str) -> str:
    """A path's investor class."""
    if raw not in CLASSES:
        raise Problem("INVALID_INVESTOR_CLASS", f"the class must be one of {', '.join(CLASSES)}")
    return raw


def validate_investor(values: Mapping[str, Any]) -> str:
    """`{"investor_class": ...}`: the class to set."""
    unknown = sorted(set(values) - {"investor_class"})
    if unknown:
        raise Problem("INVALID_INVESTOR", f"unknown fields: {', '.join(unknown)}")
    value = values.get("investor_class")
    if value not in CLASSES:
        raise Problem("INVALID_INVESTOR", f"investor_class must be one of {', '.join(CLASSES)}")
    return str(value)


def validate_limits(values: Mapping[str, Any]) -> tuple[int | None, int | None, int | None]:
    """All three caps, each an integer in [0, 2^53-1] or null (no cap): a PUT replaces them
    whole, so a cap left out is refused rather than read as "none"."""
    unknown = sorted(set(values) - set(CAPS))
    if unknown:
        raise Problem("INVALID_LIMITS", f"unknown fields: {', '.join(unknown)}")
    missing = [name for name in CAPS if name not in values]
    if missing:
        raise Problem("INVALID_LIMITS", f"required (null for no cap): {', '.join(missing)}")
    for name in CAPS:
        value = values[name]
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_AMOUNT
        ):
            raise Problem("INVALID_LIMITS", f"{name} must be null or an integer in [0, 2^53-1]")
    return values["per_product"], values["total"], values["real_estate"]


def _investor(row: tuple[Any, ...]) -> Investor:
    user_id, investor_class, total, real_estate, per_product, cap_total, cap_estate = row
    return {
        "user_id": user_id,
        "investor_class": investor_class,
        "invested": {"total": total, "real_estate": real_estate},
        "limits": {"per_product": per_product, "total": cap_total, "real_estate": cap_estate},
    }


def _class_limits(row: tuple[Any, ...]) -> ClassLimits:
    return dict(zip(ClassLimits.__annotations__, row, strict=True))  # type: ignore[return-value]


async def show_investor(db: Queries, user_id: int) -> Investor:
    """The user's class, positions and caps; a user never registered is general with 0."""
    [row] = await db.rows("admin-investor", [user_id])
    return _investor(row)


async def set_investor_class(db: Queries, user_id: int, investor_class: str) -> Investor:
    """Register the user in the class; LIMIT_BELOW_INVESTED when their positions exceed one of
    its caps."""
    [(outcome, cap, *row)] = await db.rows("admin-investor-set", [user_id, investor_class])
    if outcome == "limit_below_invested":
        raise limit_below_invested(cap, 1, user_id)
    return _investor(tuple(row))


async def list_limits(db: Queries) -> list[ClassLimits]:
    """Every class's caps, general first."""
    return [_class_limits(row) for row in await db.rows("admin-limits")]


async def set_limits(
    db: Queries, investor_class: str, caps: tuple[int | None, int | None, int | None]
) -> ClassLimits:
    """Replace the class's caps; LIMIT_BELOW_INVESTED when a user of the class is over one."""
    [(outcome, cap, users, user_id, *row)] = await db.rows(
        "admin-limits-set", [investor_class, *caps]
    )
    if outcome == "limit_below_invested":
        raise limit_below_invested(cap, users, user_id)
    return _class_limits(tuple(row))
