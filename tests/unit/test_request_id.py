"""The X-Request-ID parser and the JSON log line (no server)."""

from __future__ import annotations

import logging
import re

import orjson
import pytest

from service.logs import JsonFormatter, new_request_id, parse_request_id, request_id

GENERATED = re.compile(rb"[0-9a-f]{32}")


@pytest.mark.parametrize(
    "given",
    [b"abc-123", b"x", b"A" * 128, b"req_01HZX/9:+=@!~", b"0123456789abcdef0123456789abcdef"],
)
def test_a_valid_client_id_is_kept(given: bytes) -> None:
    assert parse_request_id(given) == given


@pytest.mark.parametrize(
    "given",
    [None, b"", b"A" * 129, b"has space", b"tab\tinside", b"new\nline", b"\x7f", "한글".encode()],
)
def test_a_missing_or_invalid_id_is_replaced_by_a_generated_one(given: bytes | None) -> None:
    generated = parse_request_id(given)
    assert GENERATED.fullmatch(generated)
    assert generated != given


def test_generated_ids_differ() -> None:
    assert len({new_request_id() for _ in range(1000)}) == 1000


def test_log_line_is_one_json_object_with_the_request_id_and_extra_fields() -> None:
    record = logging.LogRecord(
        "service.test", logging.ERROR, __file__, 1, "failed %s", ("x",), None
    )
    record.status = 500
    token = request_id.set(b"abc-123")
    try:
        line = JsonFormatter().format(record)
    finally:
        request_id.reset(token)
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry["message"] == "failed x"
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "service.test"
    assert entry["request_id"] == "abc-123"
    assert entry["status"] == 500


def test_log_line_outside_a_request_has_no_request_id_and_keeps_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("s", logging.ERROR, __file__, 1, "m", None, sys.exc_info())
    entry = orjson.loads(JsonFormatter().format(record))
    assert "request_id" not in entry
    assert "ValueError: boom" in entry["exc"]
