"""X-Request-ID: a valid one is echoed, otherwise one is generated; on every response."""

from __future__ import annotations

import re

import httpx
import orjson
import pytest

from tests.support import ServiceProcess

GENERATED = re.compile(r"[0-9a-f]{32}")
LIST = "/v1/api/investment/goods"
INVEST = "/v1/api/investment/user/goods"


def test_a_given_id_is_echoed(client: httpx.Client) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "gateway-7f3a:0001"})
    assert response.status_code == 200
    assert response.headers.get_list("x-request-id") == ["gateway-7f3a:0001"]


def test_an_id_is_generated_when_none_is_given(client: httpx.Client) -> None:
    first = client.get("/healthz").headers["x-request-id"]
    second = client.get("/healthz").headers["x-request-id"]
    assert GENERATED.fullmatch(first) and GENERATED.fullmatch(second)
    assert first != second


@pytest.mark.parametrize("given", ["x" * 129, "has space", "tab\there", ""])
def test_an_invalid_id_is_replaced(client: httpx.Client, given: str) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": given})
    assert GENERATED.fullmatch(response.headers["x-request-id"])


def test_an_id_of_128_visible_characters_is_kept(client: httpx.Client) -> None:
    given = "A" * 100 + "~!@#$%^&*()_+-={}[]|:;<>?,./'"[:28]
    assert len(given) == 128
    assert client.get("/healthz", headers={"X-Request-ID": given}).headers["x-request-id"] == given


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", LIST, {"params": {"started_at": "bad"}}, 400),
        ("GET", INVEST, {}, 400),  # no X-USER-ID
        (
            "GET",
            LIST,
            {"params": {"started_at": "1900-01-01 00:00:00", "finished_at": "1900-01-02 00:00:00"}},
            404,
        ),
        ("GET", "/v1/api/investment/nothing-here", {}, 404),
        ("DELETE", "/healthz", {}, 405),
        ("POST", INVEST, {"headers": {"X-USER-ID": "1"}, "content": b"x" * 20000}, 413),
        (
            "POST",
            INVEST,
            {"headers": {"X-USER-ID": "1"}, "json": {"goodsId": 999999999, "investmentAmount": 1}},
            404,
        ),
        ("GET", "/openapi.json", {}, 200),
    ],
)
def test_the_id_is_on_errors_and_unknown_routes_too(
    client: httpx.Client, method: str, path: str, kwargs: dict, status: int
) -> None:
    headers = {**kwargs.pop("headers", {}), "X-Request-ID": f"req-{status}-{method}"}
    response = client.request(method, path, headers=headers, **kwargs)
    assert response.status_code == status
    assert response.headers["x-request-id"] == f"req-{status}-{method}"


def test_the_access_log_is_json_with_the_request_id(two_workers: ServiceProcess) -> None:
    response = httpx.get(
        f"{two_workers.base_url}/healthz", headers={"X-Request-ID": "access-log-check-1"}
    )
    assert response.status_code == 200
    for _ in range(50):
        lines = [
            orjson.loads(line)
            for line in two_workers.log_path.read_bytes().splitlines()
            if line.startswith(b"{")
        ]
        found = [entry for entry in lines if entry.get("request_id") == "access-log-check-1"]
        if found:
            break
        import time

        time.sleep(0.05)
    (entry,) = found
    assert entry["logger"] == "service.access"
    assert entry["route"] == "/healthz"
    assert entry["status"] == 200
    assert entry["method"] == "GET"
    assert entry["duration_ms"] >= 0


def test_no_access_log_by_default(service: ServiceProcess, client: httpx.Client) -> None:
    client.get("/healthz", headers={"X-Request-ID": "no-access-log-expected"})
    assert b"no-access-log-expected" not in service.log_path.read_bytes()
