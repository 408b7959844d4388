"""One real service process (granian, one worker, list cache off) for the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support import ServiceProcess, fresh_user, running_service


@pytest.fixture(scope="session")
def service(database_url: str) -> Iterator[ServiceProcess]:
    with running_service(database_url, workers=1, LIST_CACHE_SECONDS="0") as process:
        yield process


@pytest.fixture
def client(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base_url, timeout=10) as http:
        yield http


@pytest.fixture
def user() -> int:
    return fresh_user()
