"""One real service process (granian, one worker, list cache off) for the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support import ServiceProcess, fresh_user, running_service

ADMIN_TOKEN = "integration-admin-token-0123456789"


@pytest.fixture(scope="session")
def service(database_url: str) -> Iterator[ServiceProcess]:
    with running_service(
        database_url, workers=1, LIST_CACHE_SECONDS="0", ADMIN_TOKEN=ADMIN_TOKEN
    ) as process:
        yield process


@pytest.fixture(scope="session")
def admin_token() -> str:
    """The session service's ADMIN_TOKEN (its admin API is enabled)."""
    return ADMIN_TOKEN


@pytest.fixture(scope="session")
def two_workers(database_url: str) -> Iterator[ServiceProcess]:
    """A second service: 2 workers, list cache on, access log on, no ADMIN_TOKEN (admin off)."""
    with running_service(
        database_url, workers=2, LIST_CACHE_SECONDS="5", ACCESS_LOG="true", LOG_LEVEL="INFO"
    ) as process:
        yield process


@pytest.fixture
def client(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base_url, timeout=10) as http:
        yield http


@pytest.fixture
def user() -> int:
    return fresh_user()
