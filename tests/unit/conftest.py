"""Unit-test fixtures: the framework's log lines, as the JSON the service writes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from service.logs import JsonFormatter


class Lines(logging.Handler):
    """Keeps each record as the service's JsonFormatter writes it, parsed back."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))


@pytest.fixture
def lines() -> Iterator[list[dict[str, Any]]]:
    """What the test logs through "blacksheep.server" (where routes log their 500s)."""
    handler = Lines()
    logger = logging.getLogger("blacksheep.server")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)
