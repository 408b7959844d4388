"""The HTTP layer's cost per request, in-process: the ASGI app driven with fake receive/send.

    python -m bench.hotpath [--requests N] [--endpoint …] [--concurrency C] [--coalesced]

The gateways answer at once (a fixed invest row, a fixed page, a fixed product list; no
database, no coalescing wait), so what is left is what the service does between granian's
`receive` and its `send`: routing, request and response objects, parsing, the request id,
metrics, JSON. With `--concurrency C`, C requests run at once, each in a task of its own (as
granian runs them); with `--coalesced` too, the invests and pages go through the real
coalescers and batchers, and only the statement is faked (its rows after one loop turn), so
the difference is what coalescing costs a request. It prints CPU microseconds per request
(process time); run under
`valgrind --tool=callgrind` at two request counts, the difference gives instructions per
request, which the busy machine does not blur (docs/performance.md, "The hot path").
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from service.app import configure_application
from service.batcher import InvestBatcher, InvestRow, Page, PageBatcher
from service.db import Database
from service.settings import load_settings

Message = dict[str, Any]
GOODS_ROW = (7, "개인신용 포트폴리오", 1_000_000, 1000, 1, True, "recruiting",
             "2021-03-01 00:00:00", "2021-05-01 00:00:00")  # fmt: skip
INVEST_ROW = InvestRow("done", True, 1_000_000, 1000, 2000, "recruiting", "2021-04-02 00:00:00", 9)
ITEM = (
    '{"goods_id":7,"title":"개인신용 포트폴리오","total_investing_amount":1000000,'
    '"user_investing_amount":1000,"invest_date":"2021-04-02 00:00:00"}'
)
PAGE = Page(10, None, None, ("[" + ",".join([ITEM] * 10) + "]").encode())
BODY = b'{"goodsId": 7, "investmentAmount": 1000}'
# (method, path, query, headers, body) per endpoint, as granian hands them over
REQUESTS: dict[str, tuple[str, bytes, bytes, list[tuple[bytes, bytes]], bytes]] = {
    "healthz": ("GET", b"/healthz", b"", [(b"host", b"127.0.0.1:8000")], b""),
    "list": (
        "GET",
        b"/v1/api/investment/goods",
        b"started_at=2021-04-01%2000:00:00&finished_at=2021-05-01%2000:00:00",
        [(b"host", b"127.0.0.1:8000")],
        b"",
    ),
    "invest": (
        "POST",
        b"/v1/api/investment/user/goods",
        b"",
        [
            (b"host", b"127.0.0.1:8000"),
            (b"x-user-id", b"12345"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
        ],
        BODY,
    ),
    "my-investments": (
        "GET",
        b"/v1/api/investment/user/goods",
        b"",
        [(b"host", b"127.0.0.1:8000"), (b"x-user-id", b"12345")],
        b"",
    ),
}


async def _invest(self: Any, *args: Any, **kwargs: Any) -> InvestRow:
    return INVEST_ROW


async def _page(self: Any, *args: Any) -> Page:
    return PAGE


async def _rows(self: Any, name: str, params: Any = None, **kwargs: Any) -> list[Any]:
    return [GOODS_ROW] if name == "list-goods" else []


async def _statement(self: Any, name: str, params: Any = None, **kwargs: Any) -> list[Any]:
    """The coalesced statements' rows, one per request of the batch, after one loop turn."""
    await asyncio.sleep(0)
    if name == "invest-batch":
        return [(n, *INVEST_ROW) for n in range(len(params[0]))]
    if name == "my-investments-many":  # the call's one row: PAGE for every request
        n = len(params[0])
        return [([PAGE.found] * n, [0] * n, [0] * n, [len(PAGE.body)] * n, PAGE.body * n)]
    return await _rows(self, name, params)


# What each mode replaces, (class, attribute, fake): only the statement (`--coalesced`: the
# requests go through the real coalescers and batchers), or the gateways themselves.
STATEMENTS: tuple[tuple[type, str, Any], ...] = ((Database, "rows", _statement),)
GATEWAYS: tuple[tuple[type, str, Any], ...] = (
    (InvestBatcher, "invest", _invest),
    (PageBatcher, "page", _page),
    (Database, "rows", _rows),
)


def _answer_at_once(fakes: tuple[tuple[type, str, Any], ...]) -> None:
    for owner, name, fake in fakes:
        setattr(owner, name, fake)


async def _started(app: Callable[..., Awaitable[None]]) -> asyncio.Future[None]:
    queue: asyncio.Queue[Message] = asyncio.Queue()
    await queue.put({"type": "lifespan.startup"})
    started = asyncio.Event()

    async def send(message: Message) -> None:
        started.set()

    lifespan = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, queue.get, send)
    )
    await started.wait()
    return lifespan


async def drive(endpoint: str, count: int, concurrency: int = 1) -> float:
    """CPU seconds per request over `count` requests to `endpoint`."""
    settings = load_settings(
        {"DATABASE_URL": "postgresql://bench@127.0.0.1:1/none", "LIST_CACHE_SECONDS": "60"}
    )
    app: Any = configure_application(settings)
    lifespan = await _started(app)  # noqa: F841  # kept: the app's lifespan runs meanwhile
    method, path, query, headers, body = REQUESTS[endpoint]
    request: Message = {"type": "http.request", "body": body, "more_body": False}
    statuses: list[int] = []

    async def receive() -> Message:
        return request

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    def scope() -> Message:
        return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                "method": method, "scheme": "http", "path": path.decode(), "raw_path": path,
                "query_string": query, "root_path": "", "headers": headers,
                "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}  # fmt: skip

    async def some(requests: int) -> None:
        if concurrency == 1:
            for _ in range(requests):
                await app(scope(), receive, send)
            return
        for _ in range(requests // concurrency):
            await asyncio.gather(*(app(scope(), receive, send) for _ in range(concurrency)))

    await some(max(200, concurrency))  # warm: caches, memo, the router's lru_cache
    started = time.process_time()
    await some(count)
    spent = time.process_time() - started
    count -= count % concurrency
    if set(statuses) != {200}:
        raise RuntimeError(f"{endpoint}: statuses {sorted(set(statuses))}")
    return spent / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--endpoint", choices=[*REQUESTS, "all"], default="all")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--coalesced", action="store_true")
    args = parser.parse_args()
    _answer_at_once(STATEMENTS if args.coalesced else GATEWAYS)
    for endpoint in REQUESTS if args.endpoint == "all" else [args.endpoint]:
        # granian's loop in the service (Loops.uvloop)
        seconds = uvloop.run(drive(endpoint, args.requests, args.concurrency))
        print(f"{endpoint:16} {seconds * 1e6:7.2f} µs/request (process CPU)")


if __name__ == "__main__":
    main()
