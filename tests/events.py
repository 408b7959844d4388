"""Test helpers for the events (docs/reliability.md "Events"): a nats-server of the test's own
(free loopback port, temporary store, killed and restarted at will), the relay as a process, and
the stream read back."""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from bench.events import backlog as backlog  # unpublished events, the oldest's age
from harness import nats as harness_nats
from harness import processes as _processes
from harness.sockets import free_port
from tests.support import ROOT, service_url

STREAM = "INVESTMENTS"


class NatsServer(harness_nats.NatsServer):
    """nats-server with JetStream on a free loopback port and a temporary store directory."""

    def __init__(self) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="test-nats-")), ROOT / ".data" / "logs")

    def close(self) -> None:
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.store, ignore_errors=True)


@contextmanager
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


def relay_settings(database_url: str, nats_url: str, **settings: str) -> dict[str, str]:
    """The relay's environment: the service's role, small rounds and a quick poll."""
    return {
        "DATABASE_URL": service_url(database_url),
        "NATS_URL": nats_url,
        "LOG_LEVEL": "INFO",
        "RELAY_BATCH": "50",
        "RELAY_POLL_SECONDS": "0.005",
        "NATS_PUBLISH_TIMEOUT": "2",
        **settings,
    }


class RelayProcess:
    """`python -m service relay` in a session of its own."""

    def __init__(self, env: dict[str, str], name: str) -> None:
        import os

        self.env = {**os.environ, **env}
        self.log_path = ROOT / ".data" / "logs" / f"relay-{name}-{free_port()}.log"
        self.process = _processes.spawn((*_processes.SERVICE, "relay"), self.env, self.log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        _processes.stop_process(self.process, timeout=5, sig=signal.SIGKILL)

    def stop(self) -> None:
        _processes.stop_process(self.process, timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def _stream_messages(nats_url: str) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(servers=nats_url.split(","), connect_timeout=2, allow_reconnect=False)
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(STREAM)
        except NotFoundError:
            return []
        messages = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            if info.state.messages == 0:
                break
            message = await js.get_msg(STREAM, seq)
            assert message.data is not None and message.subject is not None
            messages.append((message.subject, message.headers or {}, orjson.loads(message.data)))
        return messages
    finally:
        await nc.close()


def stream_messages(nats_url: str) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    """Every message of INVESTMENTS in stream order: (subject, headers, body)."""
    return asyncio.run(_stream_messages(nats_url))


async def _stream_config(nats_url: str) -> Any:
    import nats

    nc = await nats.connect(servers=nats_url.split(","), connect_timeout=2, allow_reconnect=False)
    try:
        return (await nc.jetstream().stream_info(STREAM)).config
    finally:
        await nc.close()


def stream_config(nats_url: str) -> Any:
    return asyncio.run(_stream_config(nats_url))


def active_relay_pid(database_url: str) -> int | None:
    """The process whose session holds the relay's lock (its application_name names it)."""
    from tests.support import psql

    name = psql(
        database_url,
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE l.locktype = 'advisory' AND l.classid = 7202104 AND l.objid = 25"
        " AND l.objsubid = 2 AND l.granted",
    )
    return int(name.rpartition("-")[2]) if name else None


class InvestLoad:
    """invest_many() calls from `calls` concurrent sessions on `goods` (never sold out), and
    now and then cancel_investment() of one of them, in a thread of its own until stop(): the
    ledger is what they did (a call whose connection was killed may or may not have committed;
    its events follow the ledger either way)."""

    def __init__(self, database_url: str, goods: list[int], calls: int = 4) -> None:
        import threading

        self.url = database_url
        self.goods = goods
        self.calls = calls
        self.done = 0
        self.cancelled = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        await asyncio.gather(*(self._caller(n) for n in range(self.calls)))

    async def _caller(self, n: int) -> None:
        import random

        import psqlpy

        users = [10_000 * (n + 1) + i for i in range(20)]
        made: list[tuple[int, int]] = []  # (user, investment_id) of this caller's invests
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = await psqlpy.connect(dsn=self.url)
                if made and random.random() < 0.2:
                    user, investment = made.pop(random.randrange(len(made)))
                    await conn.execute(
                        "SELECT outcome FROM cancel_investment($1, $2)", [user, investment]
                    )
                    self.cancelled += 1
                    continue
                size = random.randint(1, 4)
                goods = [random.choice(self.goods) for _ in range(size)]
                investors = [random.choice(users) for _ in goods]
                result = await conn.execute(
                    "SELECT investment_id FROM invest_many($1, $2, $3, NULL, NULL, 2000)"
                    " ORDER BY ord",
                    [goods, investors, [random.randint(1, 10) for _ in goods]],
                )
                ids = [row[0] for row in result.result(as_tuple=True)]
                made += [(u, i) for u, i in zip(investors, ids, strict=True) if i is not None]
                self.done += 1
            except Exception:
                self.failed += 1
                if conn is not None:
                    conn.close()
                conn = None
                await asyncio.sleep(0.05)
        if conn is not None:
            conn.close()
