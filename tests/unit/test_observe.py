"""The per-route wrapper in process (BlackSheep's test client): ids on errors, 500s logged with it."""

from __future__ import annotations

import asyncio

from blacksheep import Request, Response
from blacksheep.testing import TestClient

from service.app import _on_internal_error, _on_problem, _route
from service.metrics import NullMetrics
from service.problems import Problem


async def fails(request: Request) -> Response:
    raise RuntimeError("the handler broke")


async def refuses(request: Request) -> Response:
    raise Problem("INVALID_PERIOD", "no")


def call(path: str, headers: list[tuple[bytes, bytes]]) -> Response:
    from blacksheep import Application

    app = Application(show_error_details=False)
    app.exceptions_handlers[Problem] = _on_problem
    app.exceptions_handlers[500] = _on_internal_error
    app.router.add_get(
        "/fails", _route(fails, "GET", "/fails", app=app, metrics=NullMetrics(), access_log=False)
    )
    app.router.add_get(
        "/refuses",
        _route(refuses, "GET", "/refuses", app=app, metrics=NullMetrics(), access_log=False),
    )

    async def run() -> Response:
        await app.start()
        return await TestClient(app).get(path, headers=headers)

    return asyncio.run(run())


def test_an_unhandled_error_is_a_500_problem_with_the_id_and_logged_with_it(
    lines: list[dict[str, object]],
) -> None:
    response = call("/fails", [(b"X-Request-ID", b"trace-me-500")])
    assert response.status == 500
    assert response.get_first_header(b"X-Request-ID") == b"trace-me-500"
    (entry,) = [line for line in lines if line["level"] == "ERROR"]
    assert entry["request_id"] == "trace-me-500"
    assert "RuntimeError: the handler broke" in str(entry["exc"])


def test_a_problem_keeps_its_status_and_gets_the_id() -> None:
    response = call("/refuses", [(b"X-Request-ID", b"trace-me-400")])
    assert response.status == 400
    assert response.get_first_header(b"X-Request-ID") == b"trace-me-400"
