"""Bearer tokens in front of a route (the admin API, /metrics): a BlackSheep authentication handler
and authorization policy per realm, applied to those routes alone, and the one 401 answer."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import orjson
from blacksheep import Content, Request, Response
from blacksheep.middlewares import get_middlewares_chain
from blacksheep.server.authentication import (
    AuthenticateChallenge,
    AuthenticationHandler,
    AuthenticationStrategy,
    get_authentication_middleware,
)
from blacksheep.server.authorization import (
    AuthorizationStrategy,
    Policy,
    auth,
    get_authorization_middleware,
)
from guardpost import Identity
from guardpost.authorization import UnauthorizedError
from guardpost.common import AuthenticatedRequirement

from service.problems import PROBLEM_JSON, problem_body

Handler = Callable[[Request], Awaitable[Response]]


def unauthorized(detail: str, challenge: bytes) -> Response:
    body = orjson.dumps(problem_body("UNAUTHORIZED", detail))
    return Response(401, [(b"WWW-Authenticate", challenge)], Content(PROBLEM_JSON, body))


class BearerToken(AuthenticationHandler):
    """The scheme `realm`: a request carrying `Authorization: Bearer <token>` is authenticated;
    one carrying another credential is refused at once (a challenge with invalid_token)."""

    def __init__(self, realm: str, token: str) -> None:
        self.realm = realm
        self._token = token.encode()

    @property
    def scheme(self) -> str:
        return self.realm

    def authenticate(self, context: Request) -> Identity | None:
        header = context.get_first_header(b"authorization")
        if header is None:
            return None  # anonymous: the realm's policy refuses it
        scheme, _, given = header.strip().partition(b" ")
        # compare_digest: the time taken does not tell how much of the token was right.
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self._token):
            raise AuthenticateChallenge("Bearer", self.realm, {"error": "invalid_token"})
        return Identity({"sub": self.realm}, "Bearer")


def guarded(handler: Handler, realm: str, token: str) -> Handler:
    """`handler` behind BlackSheep's authentication and authorization middlewares for `realm`,
    chained on this route only: app-wide, they would run on every request of the hot paths."""

    @auth(realm, authentication_schemes=[realm])
    async def protected(request: Request) -> Response:
        return await handler(request)

    chain = get_middlewares_chain(  # type: ignore[no-untyped-call]
        [
            get_authentication_middleware(AuthenticationStrategy(BearerToken(realm, token))),
            get_authorization_middleware(
                AuthorizationStrategy(Policy(realm, AuthenticatedRequirement()))
            ),
        ],
        protected,
    )

    async def guarded_handler(request: Request) -> Response:
        try:
            return await chain(request)  # type: ignore[no-any-return]
        except AuthenticateChallenge as challenge:
            return unauthorized(f"the {realm} bearer token is not valid", challenge.get_header()[1])
        except UnauthorizedError:
            return unauthorized(
                f"the {realm} bearer token is required", f'Bearer realm="{realm}"'.encode()
            )

    guarded_handler.__name__ = handler.__name__
    guarded_handler.__doc__ = handler.__doc__
    return guarded_handler
