"""bench/floor.py: the floor runs on exactly the granian options the service's serve() gives, with
only the application swapped."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any, ClassVar
from unittest.mock import patch

import granian
import granian.server
import pytest
from granian.constants import Interfaces

from bench import floor
from service.ops.serving import serve
from service.settings import load_settings


class _Recorder:
    """Stands in for granian's server class: keeps what it was built with, serves nothing."""

    built: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def __init__(self, target: str, **options: Any) -> None:
        self.built.append((target, options))

    def serve(self) -> None:
        pass


@pytest.fixture
def environ() -> Iterator[None]:
    """serve() writes the settings into this process's environment: put it back afterwards."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize("interface", floor.INTERFACES)
def test_the_floor_keeps_every_server_option_of_the_service(environ: None, interface: str) -> None:
    settings = load_settings(
        {"WORKERS": "3", "DB_POOL_SIZE": "30", "SERVER_RUNTIME_THREADS": "2",
         "HTTP_IDLE_TIMEOUT": "7", "METRICS_ENABLED": "false"}
    )  # fmt: skip
    _Recorder.built.clear()
    with patch.object(granian, "Granian", _Recorder):
        serve(settings)
    floor.serve_floor(settings, interface, server=_Recorder)

    (service_target, service), (floor_target, options) = _Recorder.built
    assert service_target == "service.app:create_app"
    assert floor_target == f"bench.floor:{interface}"
    assert options["interface"] == Interfaces(interface)
    assert options["factory"] is False
    changed = {
        key for key in service.keys() | options.keys() if service.get(key) != options.get(key)
    }
    assert changed == {"factory"} | ({"interface"} if interface == "rsgi" else set())
    assert options["workers"] == 3 and options["runtime_threads"] == 2
    assert granian.Granian is granian.server.Server  # and granian is itself again


def test_the_asgi_floor_reads_a_posts_body_before_it_answers() -> None:
    """Invest's POST on the floor pays the body's `receive`, as the service does."""
    events: list[str] = []
    body = [{"type": "http.request", "body": b'{"a"', "more_body": True},
            {"type": "http.request", "body": b": 1}", "more_body": False}]  # fmt: skip

    async def receive() -> dict[str, Any]:
        events.append("receive")
        return body.pop(0)

    async def send(message: dict[str, Any]) -> None:
        events.append(message["type"])

    for method, received in (("GET", 0), ("POST", 2)):
        events.clear()
        asyncio.run(floor.asgi({"type": "http", "method": method}, receive, send))
        assert events == ["receive"] * received + ["http.response.start", "http.response.body"]
