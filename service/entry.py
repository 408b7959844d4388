"""The ASGI callable granian serves: the three APIs and health go straight to their raw handlers
(service/handlers.py); every other request, and the lifespan, to the BlackSheep application.

BlackSheep's router still decides which route a request takes (its matching rules: any case, a
trailing slash), and holds every route, so the OpenAPI description, 404 and 405 with Allow are
unchanged; for a hot route the raw handler answers instead of the BlackSheep one, without
BlackSheep's request and response objects (about 4 µs a request; docs/performance.md).
"""

from __future__ import annotations

from typing import Any

from blacksheep import Application

from service.handlers import Receive, Scope
from service.observe import RawRoute, Send
from service.worker import Worker

RAW = "raw_route"  # the attribute of a BlackSheep route's handler naming its raw route


class Entry:
    """Routes with the application's router, serves hot routes with the open Worker."""

    def __init__(self, app: Application) -> None:
        self.app = app
        self._match = app.router.get_match_by_method_and_path  # lru-cached per (method, path)
        # The templates as clients spell them: one dict lookup instead of the router's call.
        self._exact: dict[tuple[str, bytes], RawRoute] = {}
        self._worker: Worker | None = None

    def add(self, method: str, path: str, raw: RawRoute) -> None:
        """`raw` answers `method` on the route template `path` (also held by the router)."""
        self._exact[(method, path.encode())] = raw

    def open(self, worker: Worker) -> None:
        """The worker this process serves with, from the application's start hook on."""
        self._worker = worker

    def close(self) -> Worker | None:
        worker, self._worker = self._worker, None
        return worker

    @property
    def worker(self) -> Worker:
        if self._worker is None:
            raise RuntimeError("the worker is not open (the application has not started)")
        return self._worker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        worker = self._worker
        if worker is not None and scope["type"] == "http":
            raw_path = scope.get("raw_path") or scope["path"].encode()
            raw = self._exact.get((scope["method"], raw_path))
            if raw is None:  # another spelling the router accepts (any case, a trailing slash)
                match = self._match(scope["method"], raw_path)
                raw = getattr(match.handler, RAW, None) if match else None
            if raw is not None:
                await raw(worker, scope, receive, send)
                return
        app: Any = self.app
        await app(scope, receive, send)
