"""The admin HTTP API: POST and PATCH /v1/api/admin/goods, parsed here, served by service/goods.py
(its bearer token: service/bearer.py; its description: service/openapi.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import orjson
from blacksheep import Content, Request, Response

from service.goods import GoodsFields, change_goods, create_goods, validate_goods
from service.parsing import MAX_GOODS_ID, check_json_content_type, load_json
from service.problems import Problem
from service.settings import Settings
from service.worker import Worker

ADMIN_BASE = "/v1/api/admin/goods"
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


class AdminApi:
    """Product administration over HTTP, with the database of the worker `worker()` returns."""

    def __init__(self, settings: Settings, worker: Callable[[], Worker]) -> None:
        self._zone = settings.zone
        self._max_body = settings.max_body_bytes
        self._worker = worker

    async def _fields(self, request: Request, create: bool) -> GoodsFields:
        document = load_json(await read_body(request, self._max_body) or b"null")
        if not isinstance(document, dict):
            raise Problem("INVALID_BODY", "the body must be a JSON object")
        return validate_goods(document, self._zone, create=create)

    async def create_goods(self, request: Request) -> Response:
        fields = await self._fields(request, create=True)
        product = await create_goods(self._worker().db, fields)
        return Response(201, None, Content(JSON, orjson.dumps(product)))

    async def change_goods(self, request: Request) -> Response:
        raw = request.route_values.get("goods_id") or ""
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_GOODS_ID):
            raise Problem("INVALID_GOODS_ID", "goods_id must be an integer >= 1")
        fields = await self._fields(request, create=False)
        product = await change_goods(self._worker().db, int(raw), fields)
        return Response(200, None, Content(JSON, orjson.dumps(product)))
