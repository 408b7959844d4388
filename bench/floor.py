"""The server's floor: a raw ASGI app and a raw RSGI app answering /healthz's small JSON, served by
the service's own serve() with only the application swapped.

    python -m bench.floor asgi|rsgi    # HOST, PORT, WORKERS, … read as `python -m service run` does

serve() (service/ops/serving.py) builds `granian.Granian(...)` when it is called; the floor runs it
with that class replaced by one that changes the target and the interface and keeps every other
option (workers, loop, HTTP/1 settings, runtime mode and threads, backlog, …), so the floor
follows the service's server settings without a second copy of them. Any path answers 200 with
the same body and content type as the service's /healthz: the floor is what granian itself costs.
A request with a body (the bench's `floor-asgi-post` window sends invest's POST) has it read
first, as the service reads an invest's: that `receive` is a hand-off of its own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

BODY = b'{"status":"ok"}'
INTERFACES = ("asgi", "rsgi")
# The path the bench waits on: the floor answers it, the service would answer 404 (so a floor
# that somehow runs the service's application is never taken for the floor).
READY_PATH = "/bench-floor"

_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))],
}
_BODY = {"type": "http.response.body", "body": BODY}
_RSGI_HEADERS = [("content-type", "application/json"), ("content-length", str(len(BODY)))]


async def asgi(
    scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
) -> None:
    """Raw ASGI: the small JSON for every request, after its body if it has one; lifespan
    acknowledged (the service's interface runs it too)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["method"] == "POST":
        while (await receive()).get("more_body", False):
            pass
    await send(_START)
    await send(_BODY)


async def rsgi(scope: Any, protocol: Any) -> None:
    """Raw RSGI (granian's own interface): the same answer in one call, after the body."""
    if scope.method == "POST":
        await protocol()
    protocol.response_bytes(200, _RSGI_HEADERS, BODY)


def serve_floor(settings: Any, interface: str, server: Callable[..., Any] | None = None) -> None:
    """The service's serve() running the `interface` floor app instead of the service; `server`
    is the class serve() would have used (granian's, unless a test records the options)."""
    serve_instead(settings, f"bench.floor:{interface}", interface, factory=False, server=server)


def serve_instead(
    settings: Any,
    target: str,
    interface: str,
    *,
    factory: bool,
    server: Callable[..., Any] | None = None,
) -> None:
    """The service's serve() with granian's target and interface swapped, every other option
    kept (also bench/rsgi_probe.py's way to serve)."""
    from unittest.mock import patch

    import granian
    from granian.constants import Interfaces

    from service.ops.serving import serve

    service_server = server or granian.Granian

    def swapped_server(_target: str, **options: Any) -> Any:
        options.update(factory=factory, interface=Interfaces(interface))
        return service_server(target, **options)

    # patch.object restores granian.Granian afterwards; the process serves nothing else.
    with patch.object(granian, "Granian", swapped_server):
        serve(settings)


def main(argv: list[str] | None = None) -> int:
    from service.ops.cli import settings_for_command

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in INTERFACES:
        print(f"usage: python -m bench.floor {'|'.join(INTERFACES)}", file=sys.stderr)
        return 2
    settings = settings_for_command()
    if settings is None:
        return 2
    serve_floor(settings, args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
