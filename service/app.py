"""The composition root: configure_application(settings) assembles the ASGI entry and the BlackSheep
application behind it; each worker's databases come from `databases` (PostgreSQL's pools, or a
test's fakes: tests/fakes.py runs the real routes in process with them)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from blacksheep import Application, Request, Response
from blacksheep.server.routing import Router

from service import handlers, memory
from service.admin import ADMIN_BASE, ADMIN_INVESTORS, ADMIN_LIMITS, ADMIN_REALM, AdminApi
from service.bearer import guarded
from service.db import (
    Database,
    Databases,
    DatabaseUnavailable,
    OutcomeUnknown,
    open_databases,
)
from service.docs_ui import docs_routes
from service.entry import RAW, Entry
from service.handlers import BASE
from service.logs import configure_logging, quiet_handled_errors
from service.metrics import Metrics, NullMetrics
from service.observe import RawRoute, observe_other_routes, observed
from service.openapi import build_docs, describe, describe_admin, describe_metrics
from service.problems import (
    INTERNAL_ERROR_DETAIL,
    OUTCOME_UNKNOWN_DETAIL,
    Problem,
    problem_response,
)
from service.settings import Settings, load_settings
from service.worker import Worker

log = logging.getLogger("service.app")
Handler = Callable[[Request], Awaitable[Response]]


async def _on_problem(app: Any, request: Request, error: Problem) -> Response:
    return problem_response(error.code, error.detail, members=error.members)


async def _on_unavailable(app: Any, request: Request, error: DatabaseUnavailable) -> Response:
    return problem_response("SERVICE_UNAVAILABLE", str(error))


async def _on_outcome_unknown(app: Any, request: Request, error: OutcomeUnknown) -> Response:
    return problem_response("INVEST_OUTCOME_UNKNOWN", OUTCOME_UNKNOWN_DETAIL)


async def _on_internal_error(app: Any, request: Request, error: Exception) -> Response:
    return problem_response("INTERNAL_ERROR", INTERNAL_ERROR_DETAIL)


def _unmatched(
    allowed: dict[str, list[str]], router: Router, templated: list[str]
) -> Callable[[Request], Awaitable[Response]]:
    """The fallback: 405 with Allow for a known path and another method, else 404. A path of a
    route template (`.../goods/{investment_id}`) is known when the router matches it with one of
    the template's methods (`templated`)."""
    allow = {path: ", ".join(sorted(methods)).encode() for path, methods in allowed.items()}

    def template_methods(path: bytes) -> bytes | None:
        methods = [
            method
            for method in templated
            if any(route.match_by_path(path) for route in router.routes[method.encode()])
        ]
        return ", ".join(methods).encode() if methods else None

    async def not_found(request: Request) -> Response:
        path = request.url.path.decode(errors="replace")
        shown = path if len(path) <= 200 else path[:200] + "…"
        methods = allow.get(path) or template_methods(request.url.path)
        if methods is not None:
            return problem_response(
                "METHOD_NOT_ALLOWED",
                f"{shown} accepts {methods.decode()}",
                [(b"Allow", methods)],
            )
        return problem_response("NOT_FOUND", f"no route for {request.method} {shown}")

    return not_found


def _route(
    method: Callable[[Request], Awaitable[Response]],
    verb: str,
    path: str,
    *,
    app: Application,
    metrics: Metrics,
    access_log: bool,
) -> Callable[[Request], Awaitable[Response]]:
    """A plain function for the router (it marks handlers, which bound methods cannot carry),
    and the one per-request wrapper: request id, metrics per route template, access log."""
    return observed(method, app, path, metrics.route(verb, path), access_log)


def _documented(name: str) -> Handler:
    """What BlackSheep's router holds for a raw route: the route (for matching and the OpenAPI
    description); service/entry.py serves its requests with the raw handler instead."""

    async def served_raw(request: Request) -> Response:
        raise RuntimeError(f"{name} is served by service/entry.py, not by BlackSheep")

    served_raw.__name__ = name
    return served_raw


def configure_application(
    settings: Settings, databases: Callable[[Settings], Databases] = open_databases
) -> Entry:
    """The service for `settings`; each worker opens `databases(settings)` when it starts."""
    # A router of its own: BlackSheep's default one may serve one application per process.
    app = Application(show_error_details=False, router=Router())
    entry = Entry(app)
    metrics = (
        Metrics(settings.prometheus_multiproc_dir) if settings.metrics_enabled else NullMetrics()
    )
    route = functools.partial(_route, app=app, metrics=metrics, access_log=settings.access_log)

    # (method, route template, raw handler): the APIs and health, answered without
    # BlackSheep's request and response objects (service/entry.py).
    raw_routes: list[tuple[str, str, handlers.Handler]] = [
        ("GET", f"{BASE}/goods", handlers.list_goods),
        ("POST", f"{BASE}/user/goods", handlers.invest),
        ("GET", f"{BASE}/user/goods", handlers.my_investments),
        ("GET", f"{BASE}/user/limits", handlers.my_limits),
        ("DELETE", f"{BASE}/user/goods/{{investment_id}}", handlers.cancel_investment),
        ("GET", "/healthz", handlers.healthz),
        ("GET", "/readyz", handlers.readyz),
    ]
    documented: dict[handlers.Handler, Handler] = {}  # each raw handler as the router holds it
    routes: list[tuple[str, str, Handler]] = []  # (method, route template, handler)
    for verb, path, raw in raw_routes:
        documented[raw] = _documented(raw.__name__)
        routes.append((verb, path, documented[raw]))
    admin_routes: dict[str, Handler] = {}  # the admin handler of each name, as guarded
    if settings.admin_token is not None:  # no token, no admin routes: 404 like any unknown path
        admin = AdminApi(settings, lambda: entry.worker)
        for verb, path, use in (
            ("POST", ADMIN_BASE, admin.create_goods),
            ("PATCH", f"{ADMIN_BASE}/{{goods_id}}", admin.change_goods),
            ("GET", f"{ADMIN_INVESTORS}/{{user_id}}", admin.show_investor),
            ("PUT", f"{ADMIN_INVESTORS}/{{user_id}}", admin.set_investor),
            ("GET", ADMIN_LIMITS, admin.list_limits),
            ("PUT", f"{ADMIN_LIMITS}/{{investor_class}}", admin.set_limits),
        ):
            admin_routes[use.__name__] = guarded(use, ADMIN_REALM, settings.admin_token)
            routes.append((verb, path, admin_routes[use.__name__]))
    scrape: Handler = metrics.scrape
    if settings.metrics_token is not None:
        scrape = guarded(scrape, "metrics", settings.metrics_token)
    if metrics.enabled:  # off: no /metrics route (404 like any unknown path)
        routes.append(("GET", "/metrics", scrape))
    docs_pages = docs_routes()
    routes += [("GET", path, page) for path, page in docs_pages.items()]

    raw_of = {handler: raw for raw, handler in documented.items()}
    framework_log = app.logger
    routed: dict[Handler, Handler] = {}  # each handler as the router calls it (observed)
    heads: list[Handler] = []
    allowed: dict[str, list[str]] = {}
    templated: set[str] = set()  # the methods of routes with a parameter in their path
    for verb, path, handler in routes:
        verbs = [verb, "HEAD"] if verb == "GET" else [verb]  # HEAD answers as GET; the server
        for method in verbs:  # (hyper) drops the body
            child = metrics.route(method, path)
            routed_handler = observed(handler, app, path, child, settings.access_log)
            if handler in raw_of:
                served = RawRoute(raw_of[handler], path, child, settings.access_log, framework_log)
                setattr(routed_handler, RAW, served)
                entry.add(method, path, served)
            app.router.add(method, path, routed_handler)
            if method == "HEAD":
                heads.append(routed_handler)
            else:
                routed[handler] = routed_handler
        if "{" not in path:
            allowed.setdefault(path, []).extend(verbs)
        else:
            templated.update(verbs)
    app.router.fallback = route(
        _unmatched(allowed, app.router, sorted(templated)), "ANY", "(unmatched)"
    )

    docs = build_docs()
    describe(
        docs,
        list_goods=routed[documented[handlers.list_goods]],
        invest=routed[documented[handlers.invest]],
        my_investments=routed[documented[handlers.my_investments]],
        my_limits=routed[documented[handlers.my_limits]],
        cancel=routed[documented[handlers.cancel_investment]],
        healthz=routed[documented[handlers.healthz]],
        readyz=routed[documented[handlers.readyz]],
    )
    if metrics.enabled:
        describe_metrics(docs, routed[scrape])
    if admin_routes:
        describe_admin(docs, **{name: routed[guard] for name, guard in admin_routes.items()})
    for handler in [*(routed[page] for page in docs_pages.values()), *heads]:
        docs.ignore()(handler)  # the docs describe the API, not themselves; HEAD is stated once
    docs.bind_app(app)

    app.exceptions_handlers[Problem] = _on_problem
    app.exceptions_handlers[DatabaseUnavailable] = _on_unavailable
    app.exceptions_handlers[OutcomeUnknown] = _on_outcome_unknown
    app.exceptions_handlers[500] = _on_internal_error

    async def start(application: Application) -> None:
        opened = databases(settings)
        for pool in {id(db): db for db in (opened.main, opened.reads)}.values():
            if isinstance(pool, Database):  # tests/fakes.py's in-memory database is not timed
                pool.timings = metrics.call_times()
        entry.open(Worker(settings, metrics, opened))  # the one worker this process opens
        metrics.start(opened.pool_status)

    async def stop(application: Application) -> None:
        worker = entry.close()
        if worker is not None:
            await worker.close()
        await metrics.stop()

    async def settle_memory(application: Application) -> None:
        memory.settle()  # everything built so far lives as long as the worker

    app.on_start += start
    app.after_start += settle_memory
    app.on_stop += stop
    app.after_start += functools.partial(observe_other_routes, route=route)
    quiet_handled_errors(app.logger, settings.log_level)
    return entry


def create_app() -> Entry:
    """The granian target (factory): settings come from the environment of the worker."""
    settings = load_settings()
    configure_logging(settings.log_level)
    return configure_application(settings)
