"""Errors as RFC 9457 problem details: one exception type, one table from code to status."""

from __future__ import annotations

import orjson
from blacksheep import Content, Response

PROBLEM_JSON = b"application/problem+json"

# code -> (HTTP status, title). The contract's stable, machine-readable error codes (docs/api.md).
PROBLEMS: dict[str, tuple[int, str]] = {
    "MISSING_USER_ID": (400, "Missing user id"),
    "INVALID_USER_ID": (400, "Invalid user id"),
    "INVALID_BODY": (400, "Invalid request body"),
    "INVALID_GOODS_ID": (400, "Invalid goods id"),
    "INVALID_GOODS": (400, "Invalid product"),
    "INVALID_AMOUNT": (400, "Invalid investment amount"),
    "INVALID_PERIOD": (400, "Invalid period"),
    "INVALID_PAGE": (400, "Invalid page parameters"),
    "INVALID_IDEMPOTENCY_KEY": (400, "Invalid idempotency key"),
    "INVALID_INVESTMENT_ID": (400, "Invalid investment id"),
    "UNAUTHORIZED": (401, "Unauthorized"),
    "GOODS_NOT_FOUND": (404, "Goods not found"),
    "INVESTMENTS_NOT_FOUND": (404, "Investments not found"),
    "INVESTMENT_NOT_FOUND": (404, "Investment not found"),
    "NOT_FOUND": (404, "Not found"),
    "METHOD_NOT_ALLOWED": (405, "Method not allowed"),
    "IDEMPOTENCY_KEY_IN_USE": (409, "Idempotency key in use"),
    "TOTAL_BELOW_INVESTED": (409, "Total below the invested amount"),
    "INVESTMENT_NOT_CANCELLABLE": (409, "Investment not cancellable"),
    "PAYLOAD_TOO_LARGE": (413, "Payload too large"),
    "UNSUPPORTED_MEDIA_TYPE": (415, "Unsupported media type"),
    "IDEMPOTENCY_KEY_MISMATCH": (422, "Idempotency key reused with another request"),
    "INTERNAL_ERROR": (500, "Internal error"),
    "SERVICE_UNAVAILABLE": (503, "Service unavailable"),
    "INVEST_OUTCOME_UNKNOWN": (503, "Investment outcome unknown"),
}

# Seconds a client should wait before retrying a 503 SERVICE_UNAVAILABLE (nothing was done).
# INVEST_OUTCOME_UNKNOWN has none: a plain retry could invest twice.
RETRY_AFTER = b"1"
OUTCOME_UNKNOWN_DETAIL = (
    "the investment was sent to the database and its answer was lost: it may or may not have"
    " been made. Retry only with the same Idempotency-Key, or look at my investments first."
)
INTERNAL_ERROR_DETAIL = "the request could not be completed"


class Problem(Exception):
    """A request that cannot be served; `code` is a key of PROBLEMS."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status, self.title = PROBLEMS[code]


def problem_body(code: str, detail: str) -> dict[str, object]:
    status, title = PROBLEMS[code]
    return {
        "type": f"/problems/{code.lower().replace('_', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }


def problem_response(
    code: str, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> Response:
    status = PROBLEMS[code][0]
    if code == "SERVICE_UNAVAILABLE":
        headers = [*(headers or []), (b"Retry-After", RETRY_AFTER)]
    body = orjson.dumps(problem_body(code, detail))
    return Response(status, headers, Content(PROBLEM_JSON, body))
