"""An experiment, not a way to serve: the service's whole application over RSGI (granian's own
interface) instead of ASGI, through a thin adapter, to measure what the interface costs the hot
path (docs/performance.md, "Alternatives measured").

    BENCH_SERVER=rsgi-probe python -m bench.run --only capacity

The bench then starts `python -m bench.rsgi_probe` (settings read as `python -m service serve`
reads them, on a database the bench has migrated) where it would start `python -m service run`.
Each request's RSGI scope becomes the ASGI scope the service's entry (service/entry.py) expects,
its body one `http.request` message, and the ASGI answer one `response_bytes` call: the raw
routes, BlackSheep's routes and the lifespan (as `__rsgi_init__` / `__rsgi_del__`) run unchanged.
It does not stream (answers are gathered whole), does not report a client that leaves, and connects
with the URL it is given (`run` would switch to the service's role): it serves the bench, not
clients.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from service.entry import Entry

TARGET = "bench.rsgi_probe:create"


class RsgiService:
    """The service's entry behind granian's RSGI interface."""

    def __init__(self, entry: Entry) -> None:
        self.entry = entry

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        app: Any = self.entry.app
        loop.run_until_complete(app.start())  # the lifespan's start: opens the Worker

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        app: Any = self.entry.app
        loop.run_until_complete(app.stop())

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        path: str = scope.path
        asgi_scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": scope.http_version,
            "scheme": scope.scheme,
            "method": scope.method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": scope.query_string.encode(),
            "root_path": "",
            "headers": [(name.encode(), value.encode()) for name, value in scope.headers.items()],
            "client": None,
            "server": None,
        }
        answer: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": await proto(), "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer.update(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                headers = [(k.decode(), v.decode()) for k, v in answer.get("headers", [])]
                proto.response_bytes(answer["status"], headers, b"".join(chunks))

        await self.entry(asgi_scope, receive, send)


def create() -> RsgiService:
    """The granian target (factory), as service.app:create_app is for ASGI."""
    from service.app import create_app

    return RsgiService(create_app())


def main() -> int:
    from bench.floor import serve_instead
    from service.ops.cli import settings_for_command

    settings = settings_for_command()
    if settings is None:
        return 2
    serve_instead(settings, TARGET, "rsgi", factory=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
