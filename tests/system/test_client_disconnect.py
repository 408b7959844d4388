"""A client that disconnects while its invest waits does not cancel it (docs/api.md): the invest is
made as if the client had waited, and a retry with the same Idempotency-Key replays it."""

from __future__ import annotations

import json
import select
import socket
import struct
import time

import httpx
import pytest

from tests.load import PATH
from tests.support import (
    counters,
    create_goods,
    fresh_user,
    hold_rows,
    psql,
    running_service,
    verify_ledger,
    wait_until,
)

pytestmark = pytest.mark.system


def send_invest(base_url: str, user: int, goods_id: int, amount: int, key: str) -> socket.socket:
    """Send a keyed invest over a raw socket and return the socket without reading the answer."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    body = json.dumps({"goodsId": goods_id, "investmentAmount": amount}).encode()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nX-USER-ID: {user}\r\nIdempotency-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    conn = socket.create_connection((host, int(port)), timeout=10)
    conn.sendall(head.encode() + body)
    return conn


def hang_up(conn: socket.socket, *, reset: bool) -> None:
    """Close before any answer arrived: a FIN (the client went away), or a RST (it crashed, or a
    proxy between gave up)."""
    readable, _, _ = select.select([conn], [], [], 0)
    assert not readable, "the service answered before the client hung up"
    if reset:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def service_waits_on_a_lock(url: str) -> bool:
    return (
        psql(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'investment-service'"
            " AND wait_event_type = 'Lock'",
        )
        != "0"
    )


def retry(base_url: str, user: int, goods_id: int, amount: int, key: str) -> httpx.Response:
    """The same request again, until it is no longer in use (its first call has committed)."""
    deadline = time.monotonic() + 10
    with httpx.Client(base_url=base_url, timeout=10) as client:
        while True:
            response = client.post(
                PATH,
                headers={"X-USER-ID": str(user), "Idempotency-Key": key},
                json={"goodsId": goods_id, "investmentAmount": amount},
            )
            if response.status_code != 409:
                return response
            assert response.json()["code"] == "IDEMPOTENCY_KEY_IN_USE", response.text
            assert time.monotonic() < deadline, "the key stayed in use for 10 s"
            time.sleep(0.1)


def test_invests_whose_clients_hang_up_while_they_wait_are_made_and_replayed_on_retry(
    database_url: str,
) -> None:
    goods = create_goods(database_url, total=10**9)
    sent, queued = fresh_user(), fresh_user()
    with running_service(database_url, workers=1) as service:
        holder = hold_rows(database_url, [goods], seconds=1.5)
        try:
            # The first invest's call is sent and waits for the held row; its client resets.
            first = send_invest(service.base_url, sent, goods, 1_000, "gone-1")
            wait_until(lambda: service_waits_on_a_lock(database_url), "the invest call waits")
            hang_up(first, reset=True)
            # The second arrives while that call is in flight: it waits for the worker's next
            # call, not yet sent, when its client closes the connection.
            second = send_invest(service.base_url, queued, goods, 2_000, "gone-2")
            time.sleep(0.2)
            hang_up(second, reset=False)
        finally:
            holder.wait(30)
        for user, amount, key in [(sent, 1_000, "gone-1"), (queued, 2_000, "gone-2")]:
            replayed = retry(service.base_url, user, goods, amount, key)
            assert replayed.status_code == 200, replayed.text
            assert replayed.headers.get("Idempotent-Replayed") == "true", (key, replayed.headers)
            assert replayed.json()["investment_amount"] == amount
    rows = psql(
        database_url,
        "SELECT user_id, user_investing_amount FROM user_investment_goods"
        f" WHERE goods_id = {goods} ORDER BY id",
    )
    assert rows.splitlines() == [f"{sent}\t1000", f"{queued}\t2000"]
    assert counters(database_url, goods) == (3_000, 2)
    verify_ledger(database_url)
