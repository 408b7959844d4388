"""Swagger UI at /docs, served by the service itself: no CDN, a Content-Security-Policy.

The assets come from the pinned `swagger-ui-bundle-v2` package (Swagger UI 5.31.0, Apache-2.0,
by the spec-first maintainers of connexion; see pyproject.toml), so the docs work offline and
no third party can change the script that runs next to an admin token typed into the page.
The page's own script is a file too, so the policy needs no 'unsafe-inline' for scripts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache, partial

from blacksheep import Content, Request, Response
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/docs"
SPEC_PATH = "/openapi.json"
# Scripts, fetches and frames from this origin only. Swagger UI sets inline styles and uses
# data: images in its stylesheet; neither can run code.
CSP = (
    b"default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:;"
    b" style-src 'self' 'unsafe-inline'; font-src 'self'; base-uri 'none'; form-action 'self';"
    b" frame-ancestors 'none'"
)
PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Investment service API</title>
<link rel="stylesheet" href="{DOCS_PATH}/swagger-ui.css">
<link rel="icon" type="image/png" href="{DOCS_PATH}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{DOCS_PATH}/swagger-ui-bundle.js"></script>
<script src="{DOCS_PATH}/swagger-initializer.js"></script>
</body>
</html>
""".encode()
INITIALIZER = f"""window.ui = SwaggerUIBundle({{
  url: "{SPEC_PATH}",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
}});
""".encode()
# file name -> media type, of the package's files the page uses
ASSETS = {
    "swagger-ui.css": b"text/css; charset=utf-8",
    "swagger-ui-bundle.js": b"text/javascript; charset=utf-8",
    "favicon-32x32.png": b"image/png",
}
Handler = Callable[[Request], Awaitable[Response]]
JS = b"text/javascript; charset=utf-8"
HTML = b"text/html; charset=utf-8"


@cache
def _asset(name: str) -> bytes:
    """Read once per worker, on first use: a worker that never serves the docs holds nothing."""
    data: bytes = (swagger_ui_path / name).read_bytes()
    return data


def _response(media_type: bytes, body: bytes) -> Response:
    headers = [
        (b"Content-Security-Policy", CSP),
        (b"X-Content-Type-Options", b"nosniff"),
        (b"Cache-Control", b"public, max-age=3600"),
    ]
    return Response(200, headers, Content(media_type, body))


def docs_routes() -> dict[str, Handler]:
    """path -> GET handler: the page, its initializer and the package's assets."""

    def serve(media_type: bytes, body: Callable[[], bytes]) -> Handler:
        async def docs_file(request: Request) -> Response:
            return _response(media_type, body())

        return docs_file

    routes = {
        DOCS_PATH: serve(HTML, lambda: PAGE),
        f"{DOCS_PATH}/swagger-initializer.js": serve(JS, lambda: INITIALIZER),
    }
    for name, media_type in ASSETS.items():
        routes[f"{DOCS_PATH}/{name}"] = serve(media_type, partial(_asset, name))
    return routes
