"""The one wrapper around every route: request id, timing into metrics, the optional access log.

An error a handler raises is rendered here by the application's exception handlers (the same
table as without the wrapper), so that its response, too, carries X-Request-ID and is counted.
Unhandled errors are logged by BlackSheep while the request id is set, so their log line has it.
`RawRoute` gives the raw-ASGI routes (service/entry.py) the same, without BlackSheep's objects.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

import orjson
from blacksheep import Application, Request, Response

from service.db import DatabaseUnavailable, OutcomeUnknown
from service.handlers import ClientGone, Receive, Scope, first_header
from service.handlers import Handler as RawHandler
from service.logs import REQUEST_ID_HEADER, parse_request_id, request_id
from service.metrics import RouteMetrics
from service.problems import (
    INTERNAL_ERROR_DETAIL,
    OUTCOME_UNKNOWN_DETAIL,
    PROBLEM_JSON,
    PROBLEMS,
    RETRY_AFTER,
    Problem,
    problem_body,
)
from service.worker import Worker

Handler = Callable[[Request], Awaitable[Response]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Header = tuple[bytes, bytes]
RESPONSE_HEADER = b"X-Request-ID"
JSON = b"application/json"

access = logging.getLogger("service.access")


def observed(
    handler: Handler,
    app: Application,
    route: str,
    metrics: RouteMetrics,
    access_log: bool,
) -> Handler:
    """`handler` with the request id, its metrics child and (when enabled) an access log line."""
    if access_log:  # asked for explicitly: written whatever LOG_LEVEL says
        access.setLevel(logging.INFO)

    async def observed_handler(request: Request) -> Response:
        started = perf_counter()
        rid = parse_request_id(request.get_first_header(REQUEST_ID_HEADER))
        token = request_id.set(rid)
        try:
            try:
                response = await handler(request)
            except Exception as error:
                response = await app.handle_request_handler_exception(request, error)
            response.add_header(RESPONSE_HEADER, rid)
            metrics.observe(response.status, perf_counter() - started)
            if access_log:
                access.info(
                    "%s %s %d",
                    request.method,
                    route,
                    response.status,
                    extra={
                        "method": request.method,
                        "path": request.url.path.decode(errors="replace"),
                        "route": route,
                        "status": response.status,
                        "duration_ms": round((perf_counter() - started) * 1000, 3),
                    },
                )
            return response
        finally:
            request_id.reset(token)

    observed_handler.observed = True  # type: ignore[attr-defined]
    observed_handler.__name__ = handler.__name__
    observed_handler.__doc__ = handler.__doc__
    return observed_handler


async def observe_other_routes(app: Application, route: Callable[..., Handler]) -> None:
    """After start: routes that others added (the OpenAPI docs) get the same wrapper, once."""
    for method, entry in app.router.iter_with_methods():  # type: ignore[no-untyped-call]
        if not getattr(entry.handler, "observed", False):
            pattern = entry.pattern.decode() if isinstance(entry.pattern, bytes) else entry.pattern
            handler = _as_get(entry.handler) if method == "HEAD" else entry.handler
            entry.handler = route(handler, method, pattern)


def _as_get(handler: Handler) -> Handler:
    """HEAD through a GET handler. The server (hyper, in granian) sends a HEAD answer's status
    and headers, Content-Length included, and drops its body; BlackSheep's own HEAD answers
    (the spec files) instead declare a Content-Length with no body, which granian answers by
    closing the connection."""

    async def head(request: Request) -> Response:
        request.method = "GET"
        try:
            return await handler(request)
        finally:
            request.method = "HEAD"

    head.__name__ = handler.__name__
    return head


class RawRoute:
    """A raw-ASGI route (service/handlers.py) with what `observed` gives a BlackSheep route: the
    request id, its metrics child, the access log line, and errors rendered as problem details
    by the same table as the application's exception handlers (service/app.py)."""

    __slots__ = ("_access_log", "_framework_log", "_handler", "_metrics", "_route")

    def __init__(
        self,
        handler: RawHandler,
        route: str,
        metrics: RouteMetrics,
        access_log: bool,
        framework_log: logging.Logger,
    ) -> None:
        self._handler = handler
        self._route = route
        self._metrics = metrics
        self._access_log = access_log
        self._framework_log = framework_log  # BlackSheep's: the same lines as its own routes
        if access_log:
            access.setLevel(logging.INFO)

    async def __call__(self, worker: Worker, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        rid = parse_request_id(first_header(scope["headers"], None, REQUEST_ID_HEADER))
        token = request_id.set(rid)
        try:
            try:
                body, extra = await self._handler(worker, scope, receive)
                status, content_type = 200, JSON
            except ClientGone:
                return
            except Exception as error:
                status, extra, body = self._problem(scope, error)
                content_type = PROBLEM_JSON
            headers = [(RESPONSE_HEADER, rid), (b"content-type", content_type),
                       (b"content-length", str(len(body)).encode())]  # fmt: skip
            if extra is not None:
                headers[:0] = extra
            self._metrics.observe(status, perf_counter() - started)
            if self._access_log:
                self._log(scope, status, started)
            # the fewest sends ASGI allows: the head, then the whole body
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
        finally:
            request_id.reset(token)

    def _problem(self, scope: Scope, error: Exception) -> tuple[int, list[Header] | None, bytes]:
        """What service/app.py's exception handlers answer for `error`, logged as BlackSheep logs
        it: handled errors at INFO (shown only with LOG_LEVEL=DEBUG), others at ERROR."""
        extra: list[Header] | None = None
        members = None
        if isinstance(error, Problem):
            code, detail, members = error.code, error.detail, error.members
        elif isinstance(error, DatabaseUnavailable):
            code, detail = "SERVICE_UNAVAILABLE", str(error)
        elif isinstance(error, OutcomeUnknown):
            code, detail = "INVEST_OUTCOME_UNKNOWN", OUTCOME_UNKNOWN_DETAIL
        else:
            self._framework_log.error(
                'Unhandled exception - "%s %s"', scope["method"], _target(scope), exc_info=error
            )
            code, detail = "INTERNAL_ERROR", INTERNAL_ERROR_DETAIL
        if code != "INTERNAL_ERROR" and self._framework_log.isEnabledFor(logging.INFO):
            self._framework_log.info(
                'Handled error: "%s %s". %s', scope["method"], _target(scope), error
            )
        if code == "SERVICE_UNAVAILABLE":
            extra = [(b"Retry-After", RETRY_AFTER)]
        return PROBLEMS[code][0], extra, orjson.dumps(problem_body(code, detail, members))

    def _log(self, scope: Scope, status: int, started: float) -> None:
        access.info(
            "%s %s %d",
            scope["method"],
            self._route,
            status,
            extra={
                "method": scope["method"],
                "path": _raw_path(scope).decode(errors="replace"),
                "route": self._route,
                "status": status,
                "duration_ms": round((perf_counter() - started) * 1000, 3),
            },
        )


def _raw_path(scope: Scope) -> bytes:
    raw: bytes | None = scope.get("raw_path")
    return raw if raw is not None else scope["path"].encode()


def _target(scope: Scope) -> str:
    query: bytes = scope["query_string"]
    path = _raw_path(scope)
    return (path + b"?" + query if query else path).decode(errors="replace")
