"""The admin HTTP API: products (POST and PATCH /v1/api/admin/goods, served by service/goods.py),
investors' classes and the classes' caps (/v1/api/admin/investors, /v1/api/admin/limits, served by
service/investors.py), parsed here (its bearer token: service/bearer.py; its description:
service/openapi.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from blacksheep import Content, Request, Response

from service import investors
from service.goods import GoodsFields, change_goods, create_goods, validate_goods
from service.parsing import MAX_GOODS_ID, check_json_content_type, load_json
from service.problems import Problem
from service.settings import Settings
from service.worker import Worker

ADMIN_ROOT = "/v1/api/admin"
ADMIN_BASE = f"{ADMIN_ROOT}/goods"
ADMIN_INVESTORS = f"{ADMIN_ROOT}/investors"
ADMIN_LIMITS = f"{ADMIN_ROOT}/limits"
ADMIN_REALM = "admin"
JSON = b"application/json"


async def read_body(request: Request, limit: int) -> bytes:
    """The JSON request body: refused with 415 when it declares another media type, and with
    413 as soon as it is known to exceed `limit` bytes."""
    check_json_content_type(request.get_headers(b"content-type"))
    declared = request.get_first_header(b"content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > limit:
            raise Problem("PAYLOAD_TOO_LARGE", f"the body must not exceed {limit} bytes")
        return await request.read() or b""
    body = bytearray()  # chunked: counted as it arrives
    chunks: AsyncIterator[bytes] = request.stream()  # type: ignore[assignment]
    async for chunk in chunks:
        if chunk:
            body += chunk
            if len(body) > limit:
                raise Problem("PAYLOAD_TOO_LARGE", f"the body must not exceed {limit} bytes")
    return bytes(body)


def _ok(status: int, document: Any) -> Response:
    return Response(status, None, Content(JSON, orjson.dumps(document)))


class AdminApi:
    """Administration over HTTP, with the database of the worker `worker()` returns."""

    def __init__(self, settings: Settings, worker: Callable[[], Worker]) -> None:
        self._zone = settings.zone
        self._max_body = settings.max_body_bytes
        self._worker = worker

    async def _document(self, request: Request) -> dict[str, Any]:
        document = load_json(await read_body(request, self._max_body) or b"null")
        if not isinstance(document, dict):
            raise Problem("INVALID_BODY", "the body must be a JSON object")
        return document

    async def _fields(self, request: Request, create: bool) -> GoodsFields:
        return validate_goods(await self._document(request), self._zone, create=create)

    async def create_goods(self, request: Request) -> Response:
        fields = await self._fields(request, create=True)
        return _ok(201, await create_goods(self._worker().db, fields))

    async def change_goods(self, request: Request) -> Response:
        raw = request.route_values.get("goods_id") or ""
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_GOODS_ID):
            raise Problem("INVALID_GOODS_ID", "goods_id must be an integer >= 1")
        fields = await self._fields(request, create=False)
        return _ok(200, await change_goods(self._worker().db, int(raw), fields))

    async def show_investor(self, request: Request) -> Response:
        user_id = investors.parse_user_id(request.route_values.get("user_id") or "")
        return _ok(200, await investors.show_investor(self._worker().db, user_id))

    async def set_investor(self, request: Request) -> Response:
        user_id = investors.parse_user_id(request.route_values.get("user_id") or "")
        investor_class = investors.validate_investor(await self._document(request))
        changed = await investors.set_investor_class(self._worker().db, user_id, investor_class)
        return _ok(200, changed)

    async def list_limits(self, request: Request) -> Response:
        return _ok(200, await investors.list_limits(self._worker().db))

    async def set_limits(self, request: Request) -> Response:
        investor_class = investors.parse_class(request.route_values.get("investor_class") or "")
        caps = investors.validate_limits(await self._document(request))
        return _ok(200, await investors.set_limits(self._worker().db, investor_class, caps))
