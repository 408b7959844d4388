"""The raw routes' wrapper in process: the same answers as the application's exception handlers
(problem details, Retry-After on SERVICE_UNAVAILABLE only), the request id, 500s logged with it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import pytest

from service.coalesce import Overloaded
from service.db import DatabaseUnavailable, OutcomeUnknown
from service.handlers import Answer, Receive, Scope
from service.metrics import NULL_ROUTE
from service.observe import RawRoute
from service.problems import Problem

FRAMEWORK_LOG = logging.getLogger("blacksheep.server")


def answer_to(error: Exception | None, request_id: bytes = b"trace-me") -> list[dict[str, Any]]:
    async def handler(worker: Any, scope: Scope, receive: Receive) -> Answer:
        if error is not None:
            raise error
        return b"[]", [(b"Link", b"<next>")]

    route = RawRoute(handler, "/x", NULL_ROUTE, False, FRAMEWORK_LOG)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"method": "GET", "raw_path": b"/x", "query_string": b"",
             "headers": [(b"x-request-id", request_id)]}  # fmt: skip
    asyncio.run(route(None, scope, receive, send))  # type: ignore[arg-type]
    return sent


def test_an_answer_goes_out_in_two_sends_with_its_headers_and_the_id() -> None:
    start, body = answer_to(None)
    assert start == {"type": "http.response.start", "status": 200, "headers": [
        (b"Link", b"<next>"), (b"X-Request-ID", b"trace-me"),
        (b"content-type", b"application/json"), (b"content-length", b"2"),
    ]}  # fmt: skip
    assert body == {"type": "http.response.body", "body": b"[]", "more_body": False}


@pytest.mark.parametrize(
    ("error", "status", "code", "retry_after"),
    [
        (Problem("INVALID_PAGE", "no"), 400, "INVALID_PAGE", False),
        (DatabaseUnavailable("down"), 503, "SERVICE_UNAVAILABLE", True),
        (Overloaded("full"), 503, "SERVICE_UNAVAILABLE", True),
        (OutcomeUnknown("lost"), 503, "INVEST_OUTCOME_UNKNOWN", False),
    ],
)
def test_errors_are_the_exception_tables_problems(
    error: Exception, status: int, code: str, retry_after: bool
) -> None:
    start, body = answer_to(error)
    assert start["status"] == status
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"X-Request-ID"] == b"trace-me"
    assert (headers.get(b"Retry-After") == b"1") is retry_after
    problem = orjson.loads(body["body"])
    assert (problem["status"], problem["code"]) == (status, code)


def test_an_unhandled_error_is_a_500_problem_logged_with_the_request_id(
    lines: list[dict[str, Any]],
) -> None:
    start, body = answer_to(RuntimeError("the handler broke"), b"trace-me-500")
    assert start["status"] == 500
    assert (b"X-Request-ID", b"trace-me-500") in start["headers"]
    assert orjson.loads(body["body"])["code"] == "INTERNAL_ERROR"
    (entry,) = [line for line in lines if line["level"] == "ERROR"]
    assert entry["request_id"] == "trace-me-500"
    assert "RuntimeError: the handler broke" in entry["exc"]
