"""The composition root: configure_application(settings) assembles the BlackSheep application."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from blacksheep import Application, Request, Response

from service.batcher import InvestBatcher
from service.db import Database, DatabaseUnavailable
from service.handlers import BASE, InvestmentApi
from service.openapi import build_docs, describe
from service.problems import Problem, problem_response
from service.settings import Settings, load_settings

log = logging.getLogger("service.app")


async def _on_problem(app: Any, request: Request, error: Problem) -> Response:
    return problem_response(error.code, error.detail)


async def _on_unavailable(app: Any, request: Request, error: DatabaseUnavailable) -> Response:
    return problem_response("SERVICE_UNAVAILABLE", str(error))


async def _on_internal_error(app: Any, request: Request, error: Exception) -> Response:
    return problem_response("INTERNAL_ERROR", "the request could not be completed")


async def _not_found(request: Request) -> Response:
    return problem_response(
        "NOT_FOUND", f"no route for {request.method} {request.url.path.decode()}"
    )


def _route(
    method: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """A plain function for the router (it marks handlers, which bound methods cannot carry)."""

    async def handler(request: Request) -> Response:
        return await method(request)

    handler.__name__ = method.__name__
    handler.__doc__ = method.__doc__
    return handler


def configure_application(settings: Settings) -> Application:
    app = Application(show_error_details=False)
    api = InvestmentApi(settings)
    app.services.register(InvestmentApi, instance=api)  # reachable from tests and metrics

    handlers = {
        name: _route(getattr(api, name))
        for name in ("list_goods", "invest", "my_investments", "healthz", "readyz")
    }
    app.router.add_get(f"{BASE}/goods", handlers["list_goods"])
    app.router.add_post(f"{BASE}/user/goods", handlers["invest"])
    app.router.add_get(f"{BASE}/user/goods", handlers["my_investments"])
    app.router.add_get("/healthz", handlers["healthz"])
    app.router.add_get("/readyz", handlers["readyz"])
    app.router.fallback = _not_found

    docs = build_docs()
    describe(docs, handlers)
    docs.bind_app(app)

    app.exceptions_handlers[Problem] = _on_problem
    app.exceptions_handlers[DatabaseUnavailable] = _on_unavailable
    app.exceptions_handlers[500] = _on_internal_error

    async def start(application: Application) -> None:
        db = Database(settings, settings.pool_share())
        api.db = db
        api.batcher = InvestBatcher(db, settings.invest_batch_max)

    async def stop(application: Application) -> None:
        await api.batcher.drain()
        api.db.close()

    app.on_start += start
    app.on_stop += stop
    return app


def create_app() -> Application:
    """The granian target (factory): settings come from the environment of the worker."""
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    return configure_application(settings)
