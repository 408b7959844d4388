"""The admin HTTP API: POST and PATCH /v1/api/admin/goods, parsed here, served by service/goods.py
(its bearer token: service/bearer.py; its description: service/openapi.py)."""

from __future__ import annotations

import orjson
from blacksheep import Content, Request, Response

from service.goods import GoodsFields, change_goods, create_goods, validate_goods
from service.handlers import JSON, read_body
from service.parsing import MAX_GOODS_ID, load_json
from service.problems import Problem
from service.settings import Settings
from service.worker import Worker

ADMIN_BASE = "/v1/api/admin/goods"
ADMIN_REALM = "admin"


class AdminApi:
    """Product administration over HTTP; the worker's database once it has started."""

    def __init__(self, settings: Settings) -> None:
        self._zone = settings.zone
        self._max_body = settings.max_body_bytes

    def attach(self, worker: Worker) -> None:
        self._db = worker.db

    async def _fields(self, request: Request, create: bool) -> GoodsFields:
        document = load_json(await read_body(request, self._max_body) or b"null")
        if not isinstance(document, dict):
            raise Problem("INVALID_BODY", "the body must be a JSON object")
        return validate_goods(document, self._zone, create=create)

    async def create_goods(self, request: Request) -> Response:
        product = await create_goods(self._db, await self._fields(request, create=True))
        return Response(201, None, Content(JSON, orjson.dumps(product)))

    async def change_goods(self, request: Request) -> Response:
        raw = request.route_values.get("goods_id") or ""
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_GOODS_ID):
            raise Problem("INVALID_GOODS_ID", "goods_id must be an integer >= 1")
        product = await change_goods(self._db, int(raw), await self._fields(request, create=False))
        return Response(200, None, Content(JSON, orjson.dumps(product)))
