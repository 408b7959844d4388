"""Bearer tokens in process: BlackSheep's authentication handler and policy on guarded routes only."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from blacksheep import Application, Request, Response
from blacksheep.server.routing import Router
from blacksheep.testing import TestClient

from service.bearer import guarded

TOKEN = "scrape-token-0123456789abcdef"


async def secret(request: Request) -> Response:
    return Response(200, None, None)


async def public(request: Request) -> Response:
    assert request.user is None or not request.user.is_authenticated()  # nothing ran for it
    return Response(204, None, None)


def call(path: str, authorization: str | None) -> Response:
    app = Application(router=Router(), show_error_details=False)  # not the shared default
    app.router.add_get("/secret", guarded(secret, "metrics", TOKEN))
    app.router.add_get("/public", public)
    headers = [] if authorization is None else [(b"Authorization", authorization.encode())]

    async def run() -> Response:
        await app.start()
        response = await TestClient(app).get(path, headers=headers)
        await response.read()
        return response

    return asyncio.run(run())


def test_the_token_opens_the_guarded_route() -> None:
    assert call("/secret", f"Bearer {TOKEN}").status == 200
    assert call("/secret", f"bearer  {TOKEN} ").status == 200


def test_no_token_is_a_401_problem_with_the_realms_challenge() -> None:
    response = call("/secret", None)
    assert response.status == 401
    assert response.get_first_header(b"WWW-Authenticate") == b'Bearer realm="metrics"'
    assert response.content is not None and response.content.type == b"application/problem+json"
    body = orjson.loads(response.content.body or b"")
    assert body["code"] == "UNAUTHORIZED"
    assert body["detail"] == "the metrics bearer token is required"


@pytest.mark.parametrize("authorization", ["", "Bearer", f"Bearer {TOKEN}x", f"Basic {TOKEN}"])
def test_another_credential_is_a_401_with_invalid_token(authorization: str) -> None:
    response = call("/secret", authorization)
    assert response.status == 401
    assert response.get_first_header(b"WWW-Authenticate") == (
        b'Bearer realm="metrics", error="invalid_token"'
    )


def test_other_routes_run_no_authentication() -> None:
    assert call("/public", "Bearer anything").status == 204
