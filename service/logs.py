"""Structured logs: one JSON object per line (orjson), carrying the request id of the request."""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from service.settings import redact

REQUEST_ID_HEADER = b"x-request-id"
# What a client may send as its own id: 1 to 128 visible ASCII characters (no spaces).
_VALID_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")

# The id of the request being served, for every log line written while serving it.
request_id: ContextVar[bytes | None] = ContextVar("request_id", default=None)

# LogRecord attributes that are not extra fields given by the caller.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class _Ids:
    """Request ids of this process: 16 random hex digits, then a 16-digit counter (32 in all, like
    a uuid4 in hex, unique without a system call per request). A forked worker starts anew."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count(int.from_bytes(os.urandom(4)))


_ids = _Ids()
os.register_at_fork(after_in_child=_ids.reset)


def new_request_id() -> bytes:
    return f"{_ids.prefix}{next(_ids.counter):016x}".encode()


def parse_request_id(value: bytes | None) -> bytes:
    """The client's X-Request-ID when it is 1-128 visible ASCII characters, else a new id."""
    if value is not None and _VALID_REQUEST_ID.fullmatch(value) is not None:
        return value
    return new_request_id()


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", "pid", "request_id"?, extra fields…, "exc"?}`,
    database passwords redacted (service/settings.py `redact`)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        current = request_id.get()
        if current is not None:
            entry["request_id"] = current.decode("ascii", "replace")
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        # Whatever a message, an extra field or a traceback quotes, no database password leaves.
        return redact(orjson.dumps(entry, default=str).decode())


def configure_logging(level: str) -> None:
    """Every logger of the process writes JSON lines to stderr at `level` and above."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)


# granian's own log configuration (its `log_dictconfig`): the same JSON lines for its messages.
GRANIAN_LOG_CONFIG: dict[str, Any] = {
    "formatters": {
        "generic": {"()": "service.logs.JsonFormatter"},
        "access": {"()": "service.logs.JsonFormatter"},
    },
}


def quiet_handled_errors(framework_logger: logging.Logger, level: str) -> None:
    """BlackSheep logs every handled error (each 4xx) at INFO: keep that to LOG_LEVEL=DEBUG, so a
    flood of client errors costs no logging unless asked for. Unhandled errors stay at ERROR."""
    framework_logger.setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
