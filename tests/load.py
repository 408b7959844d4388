"""Load drivers for the reliability tests: keyed invests sent until each has an answer, and a
flood of requests on thousands of connections at once (raw sockets: every answer timed)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from dataclasses import dataclass, field

import httpx
import orjson

from bench import caps
from tests.support import ServiceProcess, create_goods, ledger_by_id, psql, verify_ledger

PATH = "/v1/api/investment/user/goods"
GONE = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
SOLD_OUT_TOTAL = 3_000_000  # well below the ~6.4 M each product is asked for: sells out
OPEN_TOTAL = 500_000_000  # far above it: stays open


def caps_on(database: str) -> None:
    """The Act's caps (bench/caps.py ACT: general 5,000,000 per product, 30,000,000 in total,
    10,000,000 in real estate), set through the admin function, so the load runs invest_many()'s
    capped path (every user's investor row locked and checked) without changing what its orders
    are granted: no user of these loads comes near a cap, and the verifier checks that none is
    over one."""
    caps.load(database, caps.ACT)


@dataclass
class Order:
    user: int
    goods_id: int
    amount: int
    key: str | None  # None: a plain request, without Idempotency-Key
    answer: dict[str, object] | None = None
    attempts: list[str] = field(default_factory=list)  # what each attempt met
    seconds: list[float] = field(default_factory=list)  # how long each attempt took
    cancel: bool = False  # once invested, cancelled (DELETE, repeated until it answers 200)
    cancelled: dict[str, object] | None = None
    cancel_attempts: list[str] = field(default_factory=list)


def make_orders(
    database: str,
    seed: int,
    count: int = 5_000,
    products: int = 20,
    users: int = 800,
    cancels: float = 0.0,
) -> tuple[list[Order], dict[int, int]]:
    """`count` orders of 1,000-50,000 from `users` users over `products` products, every other
    one of which sells out, a `cancels` share of them cancelled once invested, with investor
    caps on (caps_on); returns (orders, {goods_id: total})."""
    rng = random.Random(seed)
    caps_on(database)
    totals = {}
    for index in range(products):
        total = SOLD_OUT_TOTAL + 1_000 * index + 7 if index % 2 == 0 else OPEN_TOTAL
        totals[create_goods(database, total=total)] = total
    goods = list(totals)
    people = rng.sample(range(10**9, 2 * 10**9), users)
    orders = [
        Order(people[i % users], goods[i % products], 1_000 * rng.randint(1, 50), f"order-{i}")
        for i in range(count)
    ]
    rng.shuffle(orders)
    for order in orders:
        order.cancel = rng.random() < cancels
    return orders, totals


async def drive(
    urls: list[str],
    orders: list[Order],
    concurrency: int = 96,
    kill: tuple[int, ServiceProcess] | None = None,
    retry_on: frozenset[int] = frozenset({409}),
) -> None:
    """Send every order until it has a 200, retrying with the same key after a lost connection
    or a status in `retry_on`; `kill` = (after how many answers, whom to kill -9). An order to
    cancel that was invested is then cancelled, the same DELETE repeated after a lost connection
    or a 503 until it answers 200 (a repeat is always safe)."""
    live = list(urls)
    queue: asyncio.Queue[Order] = asyncio.Queue()
    for order in orders:
        queue.put_nowait(order)
    answered = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(number: int, client: httpx.AsyncClient) -> None:
        nonlocal answered
        turn = number
        while not queue.empty():
            order = queue.get_nowait()
            while order.answer is None:
                assert len(order.attempts) < 50, order
                url = live[turn % len(live)]
                turn += 1
                started = time.monotonic()
                headers = {"X-USER-ID": str(order.user)}
                if order.key is not None:
                    headers["Idempotency-Key"] = order.key
                try:
                    response = await client.post(
                        url + PATH,
                        headers=headers,
                        json={"goodsId": order.goods_id, "investmentAmount": order.amount},
                    )
                except GONE as error:
                    order.attempts.append(type(error).__name__)
                    order.seconds.append(time.monotonic() - started)
                    if url in live and len(live) > 1 and isinstance(error, httpx.ConnectError):
                        live.remove(url)
                    continue
                order.attempts.append(str(response.status_code))
                order.seconds.append(time.monotonic() - started)
                if response.status_code in retry_on:  # 409: its first attempt is still running
                    await asyncio.sleep(0.1)
                    continue
                assert response.status_code == 200, response.text
                order.answer = response.json()
                answered += 1
                if kill is not None and answered == kill[0]:
                    os.killpg(kill[1].process.pid, signal.SIGKILL)
            if order.cancel and order.answer["investment_id"] is not None:
                turn = await cancel(order, client, turn)

    async def cancel(order: Order, client: httpx.AsyncClient, turn: int) -> int:
        assert order.answer is not None
        path = f"{PATH}/{order.answer['investment_id']}"
        while order.cancelled is None:
            assert len(order.cancel_attempts) < 50, order
            url = live[turn % len(live)]
            turn += 1
            try:
                response = await client.delete(url + path, headers={"X-USER-ID": str(order.user)})
            except GONE as error:
                order.cancel_attempts.append(type(error).__name__)
                if url in live and len(live) > 1 and isinstance(error, httpx.ConnectError):
                    live.remove(url)
                continue
            order.cancel_attempts.append(str(response.status_code))
            if response.status_code == 503:
                await asyncio.sleep(0.1)
                continue
            assert response.status_code == 200, response.text
            order.cancelled = response.json()
        return turn

    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await asyncio.gather(*(worker(n, client) for n in range(concurrency)))


def check_ledger(database: str, orders: list[Order], totals: dict[int, int]) -> None:
    assert all(order.answer is not None for order in orders)
    verify_ledger(database)
    ledger = ledger_by_id(database)
    answers = {}
    for order in orders:
        body = order.answer
        assert body is not None
        assert body["requested_amount"] == order.amount
        if body["investment_amount"]:
            answers[body["investment_id"]] = (order.user, order.goods_id, body["investment_amount"])
    assert answers == ledger  # every positive answer is one ledger row, and nothing else is
    cancelled = {
        int(o.cancelled["investment_id"]): int(o.cancelled["cancelled_amount"])  # type: ignore[call-overload]
        for o in orders
        if o.cancelled is not None
    }
    assert all(o.cancelled is not None for o in orders if o.cancel and o.answer["investment_id"])  # type: ignore[index]
    assert cancelled == cancellations_by_id(database)  # one row per cancelled order, no other
    assert all(amount == answers[i][2] for i, amount in cancelled.items())
    for goods_id, total in totals.items():
        granted = [o.answer for o in orders if o.goods_id == goods_id and o.answer]
        invested = sum(int(a["investment_amount"]) for a in granted)  # type: ignore[call-overload]
        live = invested - sum(
            amount for i, amount in cancelled.items() if answers[i][1] == goods_id
        )
        assert live <= total
        partial = [a for a in granted if 0 < a["investment_amount"] < a["requested_amount"]]  # type: ignore[operator]
        if total == OPEN_TOTAL:
            assert invested < total and partial == []
        elif not cancelled:
            assert invested == total and len(partial) == 1


def cancellations_by_id(database: str) -> dict[int, int]:
    """The cancellation rows: investment id -> cancelled amount."""
    rows = psql(
        database, "SELECT investment_id, cancelled_amount FROM user_investment_cancellation"
    )
    return {int(i): int(a) for i, a in (line.split("\t") for line in rows.splitlines())}


@dataclass(frozen=True)
class Answer:
    """What one request of a flood met: the status (None: no answer), the problem's `code`,
    Retry-After, and the seconds from its connection's opening to the end of the answer."""

    status: int | None
    code: str | None
    retry_after: str | None
    seconds: float
    error: str | None = None  # why there was no answer: refused, reset, timed out


def http_request(
    method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    """One HTTP/1.1 request, Connection: close, as a flood sends it."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


def invest_request(goods_id: int, user: int, amount: int = 1_000) -> bytes:
    body = orjson.dumps({"goodsId": goods_id, "investmentAmount": amount})
    return http_request("POST", PATH, {"X-USER-ID": str(user)}, body)


def _parse(response: bytes) -> tuple[int, str | None, str | None]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    code = None
    if headers.get("content-type", "").startswith("application/problem+json"):
        code = orjson.loads(body).get("code")
    return int(status_line.split()[1]), code, headers.get("retry-after")


async def _exchange(
    port: int, request: bytes, opened: asyncio.Event, timeout: float, started: list[float]
) -> Answer:
    begun = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except (OSError, TimeoutError) as error:
        return Answer(None, None, None, time.monotonic() - begun, type(error).__name__)
    started.append(time.monotonic())
    try:
        await opened.wait()  # every connection is open before any request is sent
        begun = time.monotonic()
        async with asyncio.timeout(timeout):
            writer.write(request)
            await writer.drain()
            response = await reader.read()  # Connection: close: the answer ends at EOF
        if not response:
            return Answer(None, None, None, time.monotonic() - begun, "closed")
        return Answer(*_parse(response), time.monotonic() - begun)
    except (OSError, TimeoutError) as error:
        return Answer(None, None, None, time.monotonic() - begun, type(error).__name__)
    finally:
        writer.close()


async def flood(port: int, requests: list[bytes], timeout: float = 30.0) -> list[Answer]:
    """Open one connection per request to 127.0.0.1:`port`, all at once; once every one is open
    (or failed), send every request; each answer in order, timed from the send. A request with
    no answer within `timeout` seconds (from its connect, then from its send) is an Answer
    without status. Needs a file descriptor per request (service.door.raise_open_files_limit)."""
    opened = asyncio.Event()
    started: list[float] = []
    exchanges = [
        asyncio.create_task(_exchange(port, request, opened, timeout, started))
        for request in requests
    ]
    connecting = asyncio.gather(*(asyncio.shield(task) for task in exchanges))
    while len(started) + sum(task.done() for task in exchanges) < len(requests):
        await asyncio.sleep(0.01)
    opened.set()
    return list(await connecting)
