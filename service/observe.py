"""The one wrapper around every route: request id, timing into metrics, the optional access log.

An error a handler raises is rendered here by the application's exception handlers (the same
table as without the wrapper), so that its response, too, carries X-Request-ID and is counted.
Unhandled errors are logged by BlackSheep while the request id is set, so their log line has it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from time import perf_counter

from blacksheep import Application, Request, Response

from service.logs import REQUEST_ID_HEADER, parse_request_id, request_id
from service.metrics import RouteMetrics

Handler = Callable[[Request], Awaitable[Response]]
RESPONSE_HEADER = b"X-Request-ID"

access = logging.getLogger("service.access")


def observed(
    handler: Handler,
    app: Application,
    route: str,
    metrics: RouteMetrics | None,
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
            if metrics is not None:
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
