"""Parsing and validation of what clients send: the user header, invest bodies, periods, pages."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import orjson

from service.problems import Problem

MAX_USER_ID = 2**63 - 1
MAX_GOODS_ID = 2**63 - 1
MAX_INVESTMENT_ID = 2**63 - 1
MAX_AMOUNT = 2**53 - 1
MAX_PAGE = 1000
MAX_IDEMPOTENCY_KEY = 255

_PERIOD = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[ T]([0-9]{2}):([0-9]{2}):([0-9]{2})")
# Shared with the OpenAPI description (service/openapi.py), so both state the same rule.
CURSOR_PATTERN = r"(-?[0-9]{1,19})_([0-9]{1,19})"
KEY_PATTERN = r"[!-~](?:[ -~]*[!-~])?"  # printable ASCII, no space at either end
_CURSOR = re.compile(CURSOR_PATTERN)
_KEY = re.compile(KEY_PATTERN.encode("ascii"))


def parse_user_id(values: list[bytes]) -> int:
    """The X-USER-ID header values (all of them): one decimal integer in [1, 2^63-1]."""
    if not values or (len(values) == 1 and not values[0].strip()):
        raise Problem("MISSING_USER_ID", "the X-USER-ID header is required")
    if len(values) > 1:
        raise Problem("INVALID_USER_ID", "send exactly one X-USER-ID header")
    raw = values[0].strip()
    # bytes.isdigit(): ASCII digits only, as [0-9]{1,19}; a third of a regular expression's cost
    user_id = int(raw) if 1 <= len(raw) <= 19 and raw.isdigit() else 0
    if not 1 <= user_id <= MAX_USER_ID:
        raise Problem("INVALID_USER_ID", "X-USER-ID must be a decimal integer in [1, 2^63-1]")
    return user_id


def parse_investment_id(path: str) -> int:
    """The investment id, the last segment of a cancellation's path: one decimal integer in
    [1, 2^63-1] (a trailing slash, which the router accepts, is ignored)."""
    raw = path.rstrip("/").rpartition("/")[2]
    investment_id = int(raw) if 1 <= len(raw) <= 19 and raw.isascii() and raw.isdigit() else 0
    if not 1 <= investment_id <= MAX_INVESTMENT_ID:
        raise Problem(
            "INVALID_INVESTMENT_ID", "investment_id must be a decimal integer in [1, 2^63-1]"
        )
    return investment_id


def parse_idempotency_key(values: list[bytes]) -> str | None:
    """The optional Idempotency-Key header: 1 to 255 printable ASCII characters, or None."""
    if not values:
        return None
    if len(values) > 1:
        raise Problem("INVALID_IDEMPOTENCY_KEY", "send at most one Idempotency-Key header")
    raw = values[0].strip()
    if not 1 <= len(raw) <= MAX_IDEMPOTENCY_KEY or _KEY.fullmatch(raw) is None:
        raise Problem(
            "INVALID_IDEMPOTENCY_KEY",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters",
        )
    return raw.decode("ascii")


def check_json_content_type(values: list[bytes]) -> None:
    """A request body's Content-Type values: none (old clients send none), application/json or
    application/*+json, with any parameters (charset=utf-8); anything else is 415."""
    for value in values:
        if value == b"application/json":  # what nearly every client sends: no parsing
            continue
        media_type = value.partition(b";")[0].strip().lower()
        if not media_type:
            continue  # an empty header says no more than a missing one
        kind, _, subtype = media_type.partition(b"/")
        if kind != b"application" or not (subtype == b"json" or subtype.endswith(b"+json")):
            shown = value[:100].decode("latin-1")
            raise Problem(
                "UNSUPPORTED_MEDIA_TYPE",
                f"the body must be JSON (Content-Type application/json), not {shown!r}",
            )


def _int_in(value: Any, low: int, high: int) -> int | None:
    """`value` when it is a JSON integer (not a bool) within [low, high], else None."""
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return value
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _any_int(text: str) -> int:
    # Python converts at most 4300 digits (int_max_str_digits); a number that long is outside
    # every range accepted here, so it stands for one (-1), refused like any other out-of-range.
    return int(text) if len(text) <= 4000 else -1


def load_json(body: bytes) -> Any:
    """Decode a JSON document; integers of any size are kept (so they can be refused by range)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses integers beyond 64 bits; the standard parser keeps them, so that a huge
    # amount is reported as an invalid amount rather than as an unreadable body.
    try:
        # Decoded here, strictly: given bytes, json.loads would also guess UTF-16/32 and a BOM.
        text = body.decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant, parse_int=_any_int)
    except (ValueError, RecursionError):
        raise Problem("INVALID_BODY", "the body is not a valid JSON document") from None


def parse_invest_body(body: bytes) -> tuple[int, int]:
    """(goods_id, amount) from {"goodsId": …, "investmentAmount": …} (or the snake_case keys)."""
    if not body.strip():
        raise Problem("INVALID_BODY", "a JSON object body is required")
    document = load_json(body)
    if not isinstance(document, dict):
        raise Problem("INVALID_BODY", "the body must be a JSON object")
    goods_id = _int_in(document.get("goodsId", document.get("goods_id")), 1, MAX_GOODS_ID)
    if goods_id is None:
        raise Problem("INVALID_GOODS_ID", "goodsId must be an integer >= 1")
    amount = _int_in(
        document.get("investmentAmount", document.get("investment_amount")), 1, MAX_AMOUNT
    )
    if amount is None:
        raise Problem("INVALID_AMOUNT", "investmentAmount must be an integer in [1, 2^53-1]")
    return goods_id, amount


def parse_query(raw: bytes) -> dict[str, list[str]]:
    """A raw query string's parameters, as BlackSheep's `Request.query` reads them (so a query
    that is not UTF-8 fails the same way on either path)."""
    return parse_qs(raw.decode("utf8")) if raw else {}


def parse_time(value: str, zone: ZoneInfo) -> datetime:
    """`YYYY-MM-DD HH:MM:SS` (or with `T`) as a wall-clock time in the display zone."""
    match = _PERIOD.fullmatch(value)
    if match is None:
        raise ValueError(value)
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    return datetime(year, month, day, hour, minute, second, tzinfo=zone)


def parse_period(query: dict[str, list[str]], zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The started_at/finished_at query window; both required, started_at <= finished_at."""
    bounds = []
    for name in ("started_at", "finished_at"):
        values = query.get(name)
        if not values or len(values) != 1:
            raise Problem("INVALID_PERIOD", f"exactly one {name} (YYYY-MM-DD HH:MM:SS) is required")
        try:
            bounds.append(parse_time(values[0].strip(), zone))
        except ValueError:
            raise Problem(
                "INVALID_PERIOD", f"{name} must be a valid time as YYYY-MM-DD HH:MM:SS"
            ) from None
    started_at, finished_at = bounds
    if started_at > finished_at:
        raise Problem("INVALID_PERIOD", "started_at must not be later than finished_at")
    return started_at, finished_at


# PostgreSQL's timestamptz range in microseconds since the Unix epoch: from 4714-11-24 00:00:00 BC
# (Julian day 0) up to, not including, 294277-01-01 00:00:00 (its END_TIMESTAMP). A cursor
# outside it would fail the whole coalesced page statement, not just its own page.
TIMESTAMP_MIN_MICROS = -210_866_803_200_000_000
TIMESTAMP_END_MICROS = 9_224_318_016_000_000_000


# A cursor's moment must lie where PostgreSQL can compute it, or the whole coalesced page statement
# would fail for everybody in it: from timestamptz's lowest value, 4714-11-24 00:00:00 BC (Julian
# day 0), in microseconds since the Unix epoch; upwards timestamptz reaches past bigint, but the
# statement's `micros * interval '1 microsecond'` goes through a float8 and must stay inside an
# interval, so 2^62 (the year 148,108) bounds it.
CURSOR_MIN_MICROS = -210_866_803_200_000_000
CURSOR_MAX_MICROS = 2**62


def format_cursor(micros: int, row_id: int) -> str:
    return f"{micros}_{row_id}"


def parse_page(query: dict[str, list[str]]) -> tuple[int, tuple[int, int] | None]:
    """(limit, cursor) of a my-investments page; limit 1..1000 (default 1000)."""
    limit = MAX_PAGE
    values = query.get("limit")
    if values is not None:
        digits = values[0] if len(values) == 1 else ""
        # (length first: int() refuses more than 4300 digits with a ValueError, i.e. a 500)
        if not 1 <= len(digits) <= 4 or not digits.isascii() or not digits.isdigit():
            raise Problem("INVALID_PAGE", "limit must be an integer from 1 to 1000")
        limit = int(digits)
        if not 1 <= limit <= MAX_PAGE:
            raise Problem("INVALID_PAGE", "limit must be an integer from 1 to 1000")
    cursor = None
    values = query.get("cursor")
    if values is not None:
        match = _CURSOR.fullmatch(values[0]) if len(values) == 1 else None
        if match is None:
            raise Problem("INVALID_PAGE", "cursor must be the value given in a Link header")
        micros, row_id = int(match[1]), int(match[2])
        if not TIMESTAMP_MIN_MICROS <= micros < TIMESTAMP_END_MICROS or row_id > MAX_GOODS_ID:
            raise Problem("INVALID_PAGE", "cursor must be the value given in a Link header")
        cursor = (micros, row_id)
    return limit, cursor
