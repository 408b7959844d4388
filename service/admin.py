"""Product administration without SQL: the bearer-token admin API and `python -m service goods`.

Both go through validate_goods() (one set of rules) and the `admin-goods-*` statements of
sql/queries.sql. A change of total is refused when it would fall below what is already invested;
the UPDATE's WHERE decides that on the locked row, so no invest can slip in between.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from blacksheep import Content, Request, Response
from blacksheep.server.openapi.common import ContentInfo, HeaderInfo, ParameterInfo, ResponseInfo
from blacksheep.server.openapi.common import ParameterSource as Source
from blacksheep.server.openapi.v3 import OpenAPIHandler
from openapidocs.v3 import (
    HTTPSecurity,
    MediaType,
    Parameter,
    ParameterLocation,
    RequestBody,
    SecurityRequirement,
)
from openapidocs.v3 import Schema as OpenApiSchema

from service.bearer import bearer_refusal
from service.db import Database, DatabaseUnavailable
from service.handlers import GOODS_KEYS, JSON, goods_json, read_body
from service.parsing import MAX_AMOUNT, MAX_GOODS_ID, load_json, parse_time
from service.problems import Problem
from service.settings import Settings

ADMIN_BASE = "/v1/api/admin/goods"
MAX_TITLE = 30  # investment_goods.title is varchar(30), as in the seed
FIELDS = ("title", "total_investing_amount", "started_at", "finished_at", "status")


@dataclass(frozen=True, slots=True)
class GoodsFields:
    """Validated product fields; None means "not given" (kept as is by a change)."""

    title: str | None = None
    total_investing_amount: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    status: bool | None = None

    def params(self) -> list[Any]:
        return [self.title, self.total_investing_amount, self.started_at, self.finished_at,
                self.status]  # fmt: skip


def validate_goods(values: Mapping[str, Any], zone: ZoneInfo, *, create: bool) -> GoodsFields:
    """The admin rules (API and CLI): title 1-30 characters, total an integer in [1, 2^53-1],
    times as `YYYY-MM-DD HH:MM:SS` in the display zone with finished_at after started_at,
    status a boolean. `create` requires all but status; a change requires at least one field."""
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
    status = given.get("status")
    if status is not None and not isinstance(status, bool):
        raise Problem("INVALID_GOODS", "status must be true or false")
    return GoodsFields(title, total, bounds.get("started_at"), bounds.get("finished_at"), status)


async def create_goods(db: Database, fields: GoodsFields) -> dict[str, Any]:
    status = True if fields.status is None else fields.status
    params = [fields.title, fields.total_investing_amount, status, fields.started_at,
              fields.finished_at]  # fmt: skip
    rows = await db.rows("admin-goods-create", params)
    return goods_json(rows[0])


async def change_goods(db: Database, goods_id: int, fields: GoodsFields) -> dict[str, Any]:
    """Apply the given fields atomically; Problem when the product is unknown or refuses them."""
    for _ in range(3):  # "conflict": the row changed between the update and its explanation
        rows = await db.rows("admin-goods-update", [goods_id, *fields.params()])
        if not rows:
            raise Problem("GOODS_NOT_FOUND", f"there is no product with goods_id {goods_id}")
        outcome, *product = rows[0]
        if outcome == "changed":
            return goods_json(tuple(product))
        if outcome == "total_below_invested":
            invested = product[GOODS_KEYS.index("current_investing_amount")]
            raise Problem(
                "TOTAL_BELOW_INVESTED",
                f"total_investing_amount may not go below the {invested} already invested;"
                " nothing was changed",
            )
        if outcome == "period":
            raise Problem("INVALID_GOODS", "finished_at must be after started_at")
    raise DatabaseUnavailable("the product kept changing; try again")


class AdminApi:
    """POST and PATCH /v1/api/admin/goods, for holders of ADMIN_TOKEN; `db` is set at start."""

    db: Database

    def __init__(self, settings: Settings, token: str) -> None:
        self._token = token.encode()
        self._zone = settings.zone
        self._max_body = settings.max_body_bytes

    def _refusal(self, request: Request) -> Response | None:
        """None when the request carries the admin token, else the 401 to answer."""
        return bearer_refusal(request, self._token, "admin")

    async def _fields(self, request: Request, create: bool) -> GoodsFields:
        document = load_json(await read_body(request, self._max_body) or b"null")
        if not isinstance(document, dict):
            raise Problem("INVALID_BODY", "the body must be a JSON object")
        return validate_goods(document, self._zone, create=create)

    async def create_goods(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        product = await create_goods(self.db, await self._fields(request, create=True))
        return Response(201, None, Content(JSON, orjson.dumps(product)))

    async def change_goods(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        raw = request.route_values.get("goods_id") or ""
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_GOODS_ID):
            raise Problem("INVALID_GOODS_ID", "goods_id must be an integer >= 1")
        product = await change_goods(self.db, int(raw), await self._fields(request, create=False))
        return Response(200, None, Content(JSON, orjson.dumps(product)))


# OpenAPI: the admin operations, described next to them (service/openapi.py has the shared parts).

_GOODS_FIELDS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": MAX_TITLE},
        "total_investing_amount": {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT},
        "started_at": {"type": "string", "example": "2026-12-01 10:00:00"},
        "finished_at": {"type": "string", "example": "2026-12-31 18:00:00"},
        "status": {"type": "boolean", "description": "false closes the product"},
    },
}


def describe_admin(docs: OpenAPIHandler, handlers: Mapping[str, Callable[..., Any]]) -> None:
    from blacksheep.server.openapi.common import DirectSchema

    from service.openapi import GOODS, ProblemDetails

    class AdminGoods:
        pass

    docs.set_type_schema(AdminGoods, GOODS)
    schemes = docs.components.security_schemes or {}
    schemes["adminToken"] = HTTPSecurity(
        scheme="bearer", description="ADMIN_TOKEN (admin routes exist only when it is set)"
    )
    docs.components.security_schemes = schemes

    def problem(*codes: str) -> ResponseInfo:
        return ResponseInfo(
            "Problem details; `code` is one of: " + ", ".join(codes),
            headers={"WWW-Authenticate": HeaderInfo(str, "Bearer challenge")}
            if "UNAUTHORIZED" in codes
            else None,
            content=[ContentInfo(ProblemDetails, content_type="application/problem+json")],
        )

    def body(
        required: list[str], description: str, path_goods_id: bool = False
    ) -> Callable[[Any, Any], None]:
        def on_created(handler: Any, operation: Any) -> None:
            schema = DirectSchema({**_GOODS_FIELDS_SCHEMA, "required": required})  # type: ignore[no-untyped-call]
            operation.request_body = RequestBody(
                content={"application/json": MediaType(schema=schema)},
                required=True,
                description=description,
            )
            operation.security = [SecurityRequirement("adminToken", [])]
            if path_goods_id:  # (BlackSheep's `parameters=` finds no goods_id in the signature)
                operation.parameters = [GOODS_ID_PARAMETER]

        return on_created

    GOODS_ID_PARAMETER = Parameter(
        "goods_id",
        ParameterLocation.PATH,
        OpenApiSchema(type="integer", minimum=1, maximum=MAX_GOODS_ID),
        description="The product",
        required=True,
    )
    common: dict[int | str, str | ResponseInfo] = {
        401: problem("UNAUTHORIZED"),
        413: problem("PAYLOAD_TOO_LARGE"),
        415: problem("UNSUPPORTED_MEDIA_TYPE"),
        503: problem("SERVICE_UNAVAILABLE"),
    }
    docs(
        summary="Register a product",
        description="Times in the display time zone; the list cache may show the change only"
        " after LIST_CACHE_SECONDS.",
        tags=["administration"],
        responses={
            201: ResponseInfo("The new product", content=[ContentInfo(AdminGoods)]),
            400: problem("INVALID_BODY", "INVALID_GOODS"),
            **common,
        },
        on_created=body(list(FIELDS[:4]), "The product; status defaults to true"),
    )(handlers["create_goods"])
    docs(
        summary="Change a product",
        description="Changes title, total, period or status (false closes it). The total may not"
        " go below what is already invested (409, nothing changed). The list cache may show the"
        " old product for up to LIST_CACHE_SECONDS.",
        tags=["administration"],
        parameters={"goods_id": ParameterInfo("The product", value_type=int, source=Source.PATH)},
        responses={
            200: ResponseInfo("The changed product", content=[ContentInfo(AdminGoods)]),
            400: problem("INVALID_BODY", "INVALID_GOODS", "INVALID_GOODS_ID"),
            404: problem("GOODS_NOT_FOUND"),
            409: problem("TOTAL_BELOW_INVESTED"),
            **common,
        },
        on_created=body([], "The fields to change (at least one)", path_goods_id=True),
    )(handlers["change_goods"])


# The command line: python -m service goods add|close|list (arguments: service/__main__.py)


async def _goods_command(settings: Settings, args: argparse.Namespace) -> list[dict[str, Any]]:
    db = Database(settings, 2)  # psqlpy wants a pool of at least 2
    try:
        if args.goods_command == "add":
            values = {"title": args.title, "total_investing_amount": args.total,
                      "started_at": args.start, "finished_at": args.finish}  # fmt: skip
            return [await create_goods(db, validate_goods(values, settings.zone, create=True))]
        if args.goods_command == "close":
            if not 1 <= args.goods_id <= MAX_GOODS_ID:
                raise Problem("INVALID_GOODS_ID", "goods_id must be an integer >= 1")
            return [await change_goods(db, args.goods_id, GoodsFields(status=False))]
        return [goods_json(row) for row in await db.rows("admin-goods-list")]
    finally:
        db.close()


def run_goods_command(settings: Settings, args: argparse.Namespace) -> int:
    """0 done, 1 refused (unknown product, total below invested, database), 2 invalid input."""
    try:
        products = asyncio.run(_goods_command(settings, args))
    except Problem as problem:
        print(f"{problem.code}: {problem.detail}", file=sys.stderr)
        return 2 if problem.status == 400 else 1
    except DatabaseUnavailable as error:
        print(f"SERVICE_UNAVAILABLE: {error}", file=sys.stderr)
        return 1
    for product in products:
        sys.stdout.buffer.write(orjson.dumps(product) + b"\n")
    return 0
