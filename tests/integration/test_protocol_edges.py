"""HTTP edges of the contract's common rules (docs/api.md): HEAD on every GET route, 415 for non-JSON bodies."""

from __future__ import annotations

import httpx
import pytest

from tests.support import ServiceProcess, create_goods, raw_exchange, raw_request

INVEST = "/v1/api/investment/user/goods"
GOODS = "/v1/api/investment/goods"
ADMIN = "/v1/api/admin/goods"
WINDOW = "started_at=2000-01-01%2000:00:00&finished_at=2999-01-01%2000:00:00"
# Headers that differ between any two answers.
PER_ANSWER = {"date", "x-request-id"}


@pytest.mark.parametrize(
    "target, headers",
    [("/healthz", {}), ("/readyz", {}), (f"{GOODS}?{WINDOW}", {}),
     (f"{GOODS}?started_at=nonsense", {}), (INVEST, {"X-USER-ID": "1"}), (INVEST, {}),
     (f"{INVEST}?limit=0", {"X-USER-ID": "1"}), ("/openapi.json", {}), ("/docs", {}),
     ("/docs/swagger-ui.css", {})],
)  # fmt: skip
def test_head_answers_like_get_without_a_body(
    client: httpx.Client, target: str, headers: dict[str, str]
) -> None:
    got = client.get(target, headers=headers)
    head = client.head(target, headers=headers)
    assert head.status_code == got.status_code
    assert head.content == b""

    def same(response: httpx.Response) -> dict[str, str]:
        return {k: v for k, v in response.headers.items() if k not in PER_ANSWER}

    assert same(head) == same(got)
    assert head.headers["content-length"] == str(len(got.content))


def test_head_sends_no_body_bytes_on_the_wire(service: ServiceProcess) -> None:
    """On one kept-alive connection, HEAD then GET: the GET answer follows the HEAD headers
    directly (a body sent after HEAD would be read as the start of the next answer)."""
    host = service.base_url.removeprefix("http://").encode()
    both = (
        b"HEAD /healthz HTTP/1.1\r\nHost: %s\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (host, host)
    )
    status, rest = raw_exchange(service.base_url, both)
    assert status == 200
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest.endswith(b'\r\n\r\n{"status":"ok"}')


def test_metrics_answers_head(client: httpx.Client) -> None:
    head = client.head("/metrics")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("text/plain")
    assert int(head.headers["content-length"]) > 0


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "application/xml", "text/json", "text/html; charset=utf-8"],
)  # fmt: skip
def test_invest_with_a_non_json_content_type_is_415(
    client: httpx.Client, database_url: str, user: int, content_type: str
) -> None:
    goods_id = create_goods(database_url)
    response = client.post(
        INVEST,
        headers={"X-USER-ID": str(user), "Content-Type": content_type},
        content=b'{"goodsId": %d, "investmentAmount": 1000}' % goods_id,
    )
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert client.get(INVEST, headers={"X-USER-ID": str(user)}).status_code == 404  # nothing


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON;charset=UTF-8",
     "application/vnd.investment+json", None],
)  # fmt: skip
def test_invest_with_json_or_no_content_type_is_served(
    service: ServiceProcess, database_url: str, user: int, content_type: str | None
) -> None:
    goods_id = create_goods(database_url)
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nX-USER-ID: %d" % (INVEST.encode(), user)
    if content_type is not None:  # raw: no client library leaves Content-Type out on its own
        head += b"\r\nContent-Type: " + content_type.encode()
    body = b'{"goodsId": %d, "investmentAmount": 1000}' % goods_id
    status, payload = raw_request(service.base_url, head, body)
    assert status == 200, payload
    assert b'"investment_amount":1000' in payload


def test_admin_post_and_patch_with_a_non_json_content_type_are_415(
    client: httpx.Client, admin_token: str, database_url: str
) -> None:
    goods_id = create_goods(database_url)
    body = b'{"title": "x", "total_investing_amount": 1000,' \
           b' "started_at": "2031-01-01 00:00:00", "finished_at": "2031-02-01 00:00:00"}'  # fmt: skip
    auth = {"Authorization": f"Bearer {admin_token}", "Content-Type": "text/plain"}
    for method, path in (("POST", ADMIN), ("PATCH", f"{ADMIN}/{goods_id}")):
        refused = client.request(method, path, headers=auth, content=body)
        assert refused.status_code == 415, refused.text
        assert refused.json()["code"] == "UNSUPPORTED_MEDIA_TYPE"
        unauthenticated = client.request(
            method, path, headers={"Content-Type": "text/plain"}, content=body
        )
        assert unauthenticated.status_code == 401  # the token is checked first


def test_415_is_in_the_openapi_description(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert "415" in spec["paths"][INVEST]["post"]["responses"]
    assert "415" in spec["paths"][ADMIN]["post"]["responses"]
    codes = spec["components"]["schemas"]["ProblemDetails"]["properties"]["code"]["enum"]
    assert "UNSUPPORTED_MEDIA_TYPE" in codes
