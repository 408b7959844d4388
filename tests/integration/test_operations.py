"""Operations: health, readiness, OpenAPI and docs, unknown routes, 503 without a database."""

from __future__ import annotations

import re
import time

import httpx

from tests.support import psql


def test_healthz_and_readyz(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


def test_openapi_describes_the_three_apis_and_their_errors(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    assert set(paths["/v1/api/investment/goods"]["get"]["responses"]) == {
        "200",
        "400",
        "404",
        "503",
    }
    invest = paths["/v1/api/investment/user/goods"]["post"]
    assert set(invest["responses"]) == {"200", "400", "404", "409", "413", "415", "422", "503"}
    key = next(p for p in invest["parameters"] if p["name"] == "Idempotency-Key")
    assert key["in"] == "header"
    assert key["required"] is False
    assert key["schema"]["maxLength"] == 255
    assert set(paths["/v1/api/investment/user/goods"]["get"]["responses"]) == {
        "200",
        "400",
        "404",
        "503",
    }
    body = paths["/v1/api/investment/user/goods"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    assert body["required"] == ["goodsId", "investmentAmount"]
    codes = spec["components"]["schemas"]["ProblemDetails"]["properties"]["code"]["enum"]
    for code in ["MISSING_USER_ID", "INVALID_USER_ID", "INVALID_BODY", "INVALID_GOODS_ID", "INVALID_AMOUNT",
                 "INVALID_PERIOD", "GOODS_NOT_FOUND", "INVESTMENTS_NOT_FOUND", "PAYLOAD_TOO_LARGE",
                 "IDEMPOTENCY_KEY_IN_USE", "IDEMPOTENCY_KEY_MISMATCH", "SERVICE_UNAVAILABLE"]:  # fmt: skip
        assert code in codes


def test_docs_page_is_served(client: httpx.Client) -> None:
    response = client.get("/docs", follow_redirects=True)
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]


def test_docs_load_nothing_from_elsewhere_under_a_content_security_policy(
    client: httpx.Client,
) -> None:
    """Swagger UI's page and every file it loads come from the service itself (pinned assets,
    no CDN), each under a policy that lets scripts and fetches come from this origin only."""
    page = client.get("/docs")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    directives = dict(d.strip().partition(" ")[::2] for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "http" not in page.text  # no absolute URL: nothing from another origin
    loaded = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert {"/docs/swagger-ui-bundle.js", "/docs/swagger-initializer.js"} <= set(loaded)
    for path in loaded:
        asset = client.get(path)
        assert asset.status_code == 200, path
        assert asset.headers["content-security-policy"] == policy
        assert asset.headers["x-content-type-options"] == "nosniff"
        assert asset.content
    bundle = client.get("/docs/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert b"SwaggerUIBundle" in bundle.content
    initializer = client.get("/docs/swagger-initializer.js").text
    assert '"/openapi.json"' in initializer


def test_unknown_route_is_a_problem_not_html(client: httpx.Client) -> None:
    response = client.get("/v1/api/investment/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "NOT_FOUND"


def test_migrate_command_needs_a_database_url_and_can_run_twice(database_url: str) -> None:
    import os
    import subprocess
    import sys

    from tests.support import ROOT

    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "service", "migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "DATABASE_URL" in done.stderr
    again = subprocess.run(
        [sys.executable, "-m", "service", "migrate"],
        cwd=ROOT,
        env={**env, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0, again.stderr


def test_invalid_setting_fails_at_start_naming_it(database_url: str) -> None:
    import os
    import subprocess
    import sys

    from tests.support import ROOT

    done = subprocess.run(
        [sys.executable, "-m", "service", "run"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url, "DB_POOL_SIZE": "lots"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "DB_POOL_SIZE" in done.stderr


def test_run_no_migrate_serves_without_touching_the_schema(postgres_server: str) -> None:
    """`run --no-migrate` (rolling deploys, instances behind PgBouncer) serves as it finds the
    database; without DATABASE_URL it refuses, since the embedded database needs migrating."""
    import os
    import subprocess
    import sys

    from service.sql import migrations
    from tests.support import ROOT, free_port, migrated_database

    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    refused = subprocess.run(
        [sys.executable, "-m", "service", "run", "--no-migrate"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "--no-migrate needs DATABASE_URL" in refused.stderr

    with migrated_database(postgres_server) as url:
        # The last migration looks pending: a plain `run` would apply it again and record it.
        psql(
            url,
            "DELETE FROM schema_migrations"
            " WHERE version = (SELECT max(version) FROM schema_migrations)",
        )
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "run", "--no-migrate"],
            cwd=ROOT, env={**env, "DATABASE_URL": url, "PORT": str(port), "WORKERS": "1",
                           "ALLOW_UNSAFE_DURABILITY": "true"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, "the service exited"
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the service never answered"
                time.sleep(0.1)
            count = psql(url, "SELECT count(*) FROM schema_migrations")
            assert count == str(len(migrations()) - 1)  # nothing was applied
        finally:
            process.terminate()
            process.wait(30)
