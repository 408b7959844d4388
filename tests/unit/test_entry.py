"""The raw-ASGI entry in process: every spelling the router accepts reaches the raw handlers, and
what the router refuses (405 with Allow, 404) stays BlackSheep's."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from service.app import configure_application
from service.settings import load_settings

Message = dict[str, Any]


async def exchange(requests: list[tuple[str, str]]) -> list[list[Message]]:
    # No database is reached: health, 405 and 404 need none (the pool connects lazily).
    settings = load_settings({"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    app: Any = configure_application(settings)
    lifespan: asyncio.Queue[Message] = asyncio.Queue()
    await lifespan.put({"type": "lifespan.startup"})
    started = asyncio.Event()

    async def started_send(message: Message) -> None:
        started.set()

    task = asyncio.ensure_future(app({"type": "lifespan"}, lifespan.get, started_send))
    await started.wait()
    answers = []
    for method, path in requests:
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message, sent: list[Message] = sent) -> None:
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
                 "query_string": b"", "root_path": "", "headers": [], "scheme": "http",
                 "http_version": "1.1", "client": None, "server": None}  # fmt: skip
        await app(scope, receive, send)
        answers.append(sent)
    await lifespan.put({"type": "lifespan.shutdown"})
    await task
    return answers


@pytest.mark.parametrize("path", ["/healthz", "/HEALTHZ", "/healthz/", "/Healthz/"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_every_spelling_the_router_accepts_is_answered_raw(method: str, path: str) -> None:
    # BlackSheep's own handler for a raw route raises (a 500): only the raw one answers 200.
    [[start, body]] = asyncio.run(exchange([(method, path)]))
    assert start["status"] == 200
    assert body == {"type": "http.response.body", "body": b'{"status":"ok"}', "more_body": False}
    names = [name for name, _ in start["headers"]]
    assert names == [b"X-Request-ID", b"content-type", b"content-length"]


def test_other_methods_and_paths_stay_with_blacksheep() -> None:
    refused, unknown = asyncio.run(exchange([("DELETE", "/healthz"), ("GET", "/healthz/x")]))
    assert refused[0]["status"] == 405
    assert (b"Allow", b"GET, HEAD") in refused[0]["headers"]
    assert orjson.loads(refused[1]["body"])["code"] == "METHOD_NOT_ALLOWED"
    assert unknown[0]["status"] == 404
    assert orjson.loads(unknown[1]["body"])["code"] == "NOT_FOUND"
