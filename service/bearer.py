"""Bearer tokens in front of a route (the admin API, /metrics): one check, one 401 answer."""

from __future__ import annotations

import hmac

import orjson
from blacksheep import Content, Request, Response

from service.problems import PROBLEM_JSON, problem_body


def unauthorized(detail: str, challenge: bytes) -> Response:
    body = orjson.dumps(problem_body("UNAUTHORIZED", detail))
    return Response(401, [(b"WWW-Authenticate", challenge)], Content(PROBLEM_JSON, body))


def bearer_refusal(request: Request, token: bytes, realm: str) -> Response | None:
    """None when the request carries `Authorization: Bearer <token>`, else the 401 to answer."""
    challenge = f'Bearer realm="{realm}"'.encode()
    header = request.get_first_header(b"authorization")
    if header is None:
        return unauthorized(f"the {realm} bearer token is required", challenge)
    scheme, _, given = header.strip().partition(b" ")
    # compare_digest: the time taken does not tell how much of the token was right.
    if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), token):
        return unauthorized(
            f"the {realm} bearer token is not valid", challenge + b', error="invalid_token"'
        )
    return None
