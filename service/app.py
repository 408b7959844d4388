"""The composition root: configure_application(settings) assembles the BlackSheep application."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from blacksheep import Application, Request, Response

from service.admin import ADMIN_BASE, ADMIN_REALM, AdminApi
from service.batcher import InvestBatcher, PageBatcher
from service.bearer import guarded
from service.db import Database, DatabaseUnavailable, OutcomeUnknown
from service.docs_ui import docs_routes
from service.handlers import BASE, InvestmentApi
from service.housekeeping import forget_old_idempotency_keys
from service.logs import configure_logging, quiet_handled_errors
from service.metrics import Metrics
from service.observe import observe_other_routes, observed
from service.openapi import build_docs, describe, describe_admin
from service.problems import Problem, problem_response
from service.readiness import Readiness
from service.settings import Settings, load_settings

log = logging.getLogger("service.app")
Handler = Callable[[Request], Awaitable[Response]]
GC_YOUNG_THRESHOLD = 20_000  # CPython's default is 700 allocations


async def _on_problem(app: Any, request: Request, error: Problem) -> Response:
    return problem_response(error.code, error.detail)


async def _on_unavailable(app: Any, request: Request, error: DatabaseUnavailable) -> Response:
    return problem_response("SERVICE_UNAVAILABLE", str(error))


async def _on_outcome_unknown(app: Any, request: Request, error: OutcomeUnknown) -> Response:
    return problem_response(
        "INVEST_OUTCOME_UNKNOWN",
        "the investment was sent to the database and its answer was lost: it may or may not have"
        " been made. Retry only with the same Idempotency-Key, or look at my investments first.",
    )


async def _on_internal_error(app: Any, request: Request, error: Exception) -> Response:
    return problem_response("INTERNAL_ERROR", "the request could not be completed")


def _unmatched(allowed: dict[str, list[str]]) -> Callable[[Request], Awaitable[Response]]:
    """The fallback: 405 with Allow for a known path and another method, else 404."""
    allow = {path: ", ".join(sorted(methods)).encode() for path, methods in allowed.items()}

    async def not_found(request: Request) -> Response:
        path = request.url.path.decode(errors="replace")
        methods = allow.get(path)
        if methods is not None:
            return problem_response(
                "METHOD_NOT_ALLOWED",
                f"{path} accepts {methods.decode()}",
                [(b"Allow", methods)],
            )
        shown = path if len(path) <= 200 else path[:200] + "…"
        return problem_response("NOT_FOUND", f"no route for {request.method} {shown}")

    return not_found


def _route(
    method: Callable[[Request], Awaitable[Response]],
    verb: str,
    path: str,
    *,
    app: Application,
    metrics: Metrics | None,
    access_log: bool,
) -> Callable[[Request], Awaitable[Response]]:
    """A plain function for the router (it marks handlers, which bound methods cannot carry),
    and the one per-request wrapper: request id, metrics per route template, access log."""
    child = None if metrics is None else metrics.route(verb, path)
    return observed(method, app, path, child, access_log)


def configure_application(settings: Settings) -> Application:
    app = Application(show_error_details=False)
    api = InvestmentApi(settings)
    app.services.register(InvestmentApi, instance=api)  # reachable from tests and metrics

    metrics = Metrics(settings.prometheus_multiproc_dir) if settings.metrics_enabled else None
    route = functools.partial(_route, app=app, metrics=metrics, access_log=settings.access_log)
    routes = {  # handler -> (method, route template)
        "list_goods": ("GET", f"{BASE}/goods"),
        "invest": ("POST", f"{BASE}/user/goods"),
        "my_investments": ("GET", f"{BASE}/user/goods"),
        "healthz": ("GET", "/healthz"),
        "readyz": ("GET", "/readyz"),
    }
    plain: dict[str, Handler] = {name: getattr(api, name) for name in routes}
    admin = None if settings.admin_token is None else AdminApi(settings)
    admin_routes = {
        "create_goods": ("POST", ADMIN_BASE),
        "change_goods": ("PATCH", ADMIN_BASE + "/{goods_id}"),
    }
    if admin is not None:  # no token, no admin routes: they answer 404 like any unknown path
        token = settings.admin_token
        assert token is not None
        plain.update(
            {name: guarded(getattr(admin, name), ADMIN_REALM, token) for name in admin_routes}
        )
        routes.update(admin_routes)
    if metrics is not None:
        routes["metrics"] = ("GET", "/metrics")
        plain["metrics"] = metrics.scrape
        if settings.metrics_token is not None:
            plain["metrics"] = guarded(metrics.scrape, "metrics", settings.metrics_token)
    for path, handler in docs_routes().items():
        routes[f"docs {path}"] = ("GET", path)
        plain[f"docs {path}"] = handler
    handlers = {name: route(plain[name], *where) for name, where in routes.items()}
    heads = []
    for name, (verb, path) in routes.items():
        app.router.add(verb, path, handlers[name])
        if verb == "GET":  # HEAD answers as GET; the server (hyper) drops the body
            heads.append(route(plain[name], "HEAD", path))
            app.router.add("HEAD", path, heads[-1])
    allowed: dict[str, list[str]] = {}
    for verb, path in routes.values():
        if "{" not in path:
            allowed.setdefault(path, []).extend([verb, "HEAD"] if verb == "GET" else [verb])
    app.router.fallback = route(_unmatched(allowed), "ANY", "(unmatched)")

    docs = build_docs()
    describe(
        docs,
        list_goods=handlers["list_goods"],
        invest=handlers["invest"],
        my_investments=handlers["my_investments"],
        healthz=handlers["healthz"],
        readyz=handlers["readyz"],
        metrics=handlers.get("metrics"),
    )
    if admin is not None:
        describe_admin(
            docs, create_goods=handlers["create_goods"], change_goods=handlers["change_goods"]
        )
    for name in routes:
        if name.startswith("docs "):
            docs.ignore()(handlers[name])  # the docs describe the API, not themselves
    for handler in heads:
        docs.ignore()(handler)  # stated once in the description instead
    docs.bind_app(app)

    app.exceptions_handlers[Problem] = _on_problem
    app.exceptions_handlers[DatabaseUnavailable] = _on_unavailable
    app.exceptions_handlers[OutcomeUnknown] = _on_outcome_unknown
    app.exceptions_handlers[500] = _on_internal_error

    chores: list[asyncio.Task[None]] = []

    async def start(application: Application) -> None:
        db = Database(settings, settings.pool_share())
        api.db = db
        # psqlpy's smallest pool; checks share one probe, so one connection opens.
        api.readiness = Readiness(Database(settings, 2))
        api.batcher = InvestBatcher(
            db, settings, on_batch=None if metrics is None else metrics.invest_batch
        )
        api.pages = PageBatcher(db, settings)
        chores.append(
            asyncio.create_task(
                forget_old_idempotency_keys(
                    db, settings.idempotency_retention_hours, settings.idempotency_cleanup_seconds
                )
            )
        )

    async def stop(application: Application) -> None:
        for chore in chores:
            chore.cancel()
        await asyncio.gather(*chores, return_exceptions=True)
        await api.batcher.drain()
        await api.pages.drain()
        api.db.close()
        api.readiness.close()

    async def start_operations(application: Application) -> None:
        api.list_cache.observer = metrics
        if admin is not None:
            admin._db = api.db
        if metrics is not None:
            api.metrics = metrics
            metrics.start(api.db.pool.status)

    async def stop_operations(application: Application) -> None:
        if metrics is not None:
            await metrics.stop()

    async def settle_memory(application: Application) -> None:
        # Everything built so far lives as long as the worker: move it out of the cyclic
        # collector's reach, and collect the young generation less often (the collector was a
        # profiled hot spot on invest; request objects are freed by reference counting anyway).
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    app.on_start += start
    app.on_start += start_operations
    app.after_start += settle_memory
    app.on_stop += stop
    app.on_stop += stop_operations
    app.after_start += functools.partial(observe_other_routes, route=route)
    quiet_handled_errors(app.logger, settings.log_level)
    return app


def create_app() -> Application:
    """The granian target (factory): settings come from the environment of the worker."""
    settings = load_settings()
    configure_logging(settings.log_level)
    return configure_application(settings)
