"""The APIs and health over raw ASGI: parse → one use-case call → JSON bytes, before any
BlackSheep request or response object is built (service/entry.py routes to them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from service.parsing import (
    check_json_content_type,
    format_cursor,
    parse_idempotency_key,
    parse_invest_body,
    parse_investment_id,
    parse_page,
    parse_query,
    parse_user_id,
)
from service.problems import Problem
from service.worker import Worker

BASE = "/v1/api/investment"
Headers = list[tuple[bytes, bytes]]
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
# The request's headers by name when no name repeats (one dict lookup each), else None (scan).
Fields = dict[bytes, bytes] | None
# What a handler answers with status 200: the JSON body and headers of its own (or None).
Answer = tuple[bytes, Headers | None]
Handler = Callable[[Worker, Scope, Receive], Awaitable[Answer]]
REPLAYED = [(b"Idempotent-Replayed", b"true")]


class ClientGone(Exception):
    """The client disconnected before its request body arrived: there is nobody to answer."""


def fields_of(headers: Headers) -> Fields:
    """The headers by name, built once per request in C; None when a name repeats (each lookup
    then scans, so that every value is seen: two X-USER-ID headers are refused)."""
    fields = dict(headers)
    return fields if len(fields) == len(headers) else None


def header_values(headers: Headers, fields: Fields, name: bytes) -> list[bytes]:
    """Every value of header `name` (lower case, as granian hands names over)."""
    if fields is not None:
        value = fields.get(name)
        return [] if value is None else [value]
    return [value for key, value in headers if key == name]


def first_header(headers: Headers, fields: Fields, name: bytes) -> bytes | None:
    if fields is not None:
        return fields.get(name)
    for key, value in headers:
        if key == name:
            return value
    return None


async def read_body(headers: Headers, fields: Fields, receive: Receive, limit: int) -> bytes:
    """The JSON request body: refused with 415 when it declares another media type, and with
    413 as soon as it is known to exceed `limit` bytes."""
    check_json_content_type(header_values(headers, fields, b"content-type"))
    declared = first_header(headers, fields, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Problem("PAYLOAD_TOO_LARGE", f"the body must not exceed {limit} bytes")
    message = await receive()  # known and small: the whole body in this one message
    if message["type"] != "http.request":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise Problem("PAYLOAD_TOO_LARGE", f"the body must not exceed {limit} bytes")
        return body
    gathered = bytearray(body)  # chunked: counted as it arrives
    while True:
        if len(gathered) > limit:
            raise Problem("PAYLOAD_TOO_LARGE", f"the body must not exceed {limit} bytes")
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        gathered += message.get("body", b"")
        if not message.get("more_body", False):
            break
    if len(gathered) > limit:
        raise Problem("PAYLOAD_TOO_LARGE", f"the body must not exceed {limit} bytes")
    return bytes(gathered)


async def list_goods(worker: Worker, scope: Scope, receive: Receive) -> Answer:
    window = worker.windows.parse(scope["query_string"])
    return await worker.listing.goods(window), None


async def invest(worker: Worker, scope: Scope, receive: Receive) -> Answer:
    headers = scope["headers"]
    fields = fields_of(headers)  # five headers read: one dict beats five scans
    body = await read_body(headers, fields, receive, worker.settings.max_body_bytes)
    user_id = parse_user_id(header_values(headers, fields, b"x-user-id"))
    key = parse_idempotency_key(header_values(headers, fields, b"idempotency-key"))
    goods_id, amount = parse_invest_body(body)
    answer, replayed = await worker.investing.invest(user_id, goods_id, amount, key)
    return answer, REPLAYED if replayed else None


async def my_investments(worker: Worker, scope: Scope, receive: Receive) -> Answer:
    user_id = parse_user_id(header_values(scope["headers"], None, b"x-user-id"))
    limit, cursor = parse_page(parse_query(scope["query_string"]))
    answer, following = await worker.holdings.page(user_id, limit, cursor)
    if following is None:
        return answer, None
    token = quote(format_cursor(*following))
    link = f'<{BASE}/user/goods?limit={limit}&cursor={token}>; rel="next"'
    return answer, [(b"Link", link.encode())]


async def cancel_investment(worker: Worker, scope: Scope, receive: Receive) -> Answer:
    user_id = parse_user_id(header_values(scope["headers"], None, b"x-user-id"))
    investment_id = parse_investment_id(scope["path"])
    return await worker.cancelling.cancel(user_id, investment_id), None


async def healthz(worker: Worker, scope: Scope, receive: Receive) -> Answer:
    return b'{"status":"ok"}', None


async def readyz(worker: Worker, scope: Scope, receive: Receive) -> Answer:
    await worker.readiness.check()  # its own connection: never queued behind requests
    return b'{"status":"ready"}', None
