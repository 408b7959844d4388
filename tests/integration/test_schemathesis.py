"""Property-based tests from /openapi.json (schemathesis): no 5xx, every answer as documented.

Schemathesis reads the running service's own OpenAPI description and generates requests for each
operation: valid ones (positive mode) and ones that break the schema (negative mode: wrong types,
missing headers, out-of-range numbers, bodies that are not objects). Each answer must not be a
5xx, and its status code, content type, documented headers and body must match the description;
each operation's tally of statuses is asserted too (requests were sent, none was a 5xx, and valid
ones reached a 200).
The run is bounded (EXAMPLES per operation, derandomized, no example database) so CI is stable.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import ServiceProcess, create_goods, fresh_user, verify_ledger

EXAMPLES = 40  # per operation and generation mode
TALLY: Counter[tuple[str, int]] = Counter()  # (operation and mode, status) -> requests
ADMIN = re.compile(r"^/v1/api/admin/")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def own_goods(database_url: str) -> list[int]:
    """Products these tests may invest in and change: recruiting, upcoming, closed, finished."""
    return [
        create_goods(database_url, 10**12, title="schemathesis recruiting"),
        create_goods(database_url, 10**6, title="schemathesis small"),
        create_goods(
            database_url,
            title="schemathesis upcoming",
            started_at="now() + interval '1 day'",
            finished_at="now() + interval '2 days'",
        ),
        create_goods(database_url, title="schemathesis closed", status=False),
    ]


@pytest.fixture(scope="module")
def own_investments(service: ServiceProcess, own_goods: list[int]) -> tuple[int, list[int]]:
    """(a user, that user's investments) for the generated cancellations to find."""
    user = fresh_user()
    made = [
        httpx.post(
            f"{service.base_url}/v1/api/investment/user/goods",
            headers={"X-USER-ID": str(user)},
            json={"goodsId": own_goods[0], "investmentAmount": 1_000},
            timeout=10,
        )
        for _ in range(5)
    ]
    return user, [response.json()["investment_id"] for response in made]


@pytest.fixture(scope="module")
def admin_headers(request: pytest.FixtureRequest) -> dict[str, str] | None:
    """The bearer header when the session service has an ADMIN_TOKEN, else None."""
    try:
        token = request.getfixturevalue("admin_token")
    except pytest.FixtureLookupError:
        return None
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def api_schema(
    service: ServiceProcess, admin_headers: dict[str, str] | None, own_goods: list[int]
) -> Any:
    schema = schemathesis.openapi.from_url(f"{service.base_url}/openapi.json", timeout=10)
    if admin_headers is None:  # without the token the admin routes can only answer 401
        schema = schema.exclude(path_regex=ADMIN.pattern)
    return schema


# (method, path, generation modes). Parametrized by hand rather than with `schema.parametrize()`:
# the schema exists only once the session's service runs, and schemathesis's lazy pytest loader
# (`schemathesis.pytest.from_fixture`) fails on pytest 9 (it sets the removed `Node._nodeid`).
BOTH = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
OPERATIONS = [
    ("GET", "/v1/api/investment/goods", BOTH),
    ("POST", "/v1/api/investment/user/goods", BOTH),
    ("GET", "/v1/api/investment/user/goods", BOTH),
    ("DELETE", "/v1/api/investment/user/goods/{investment_id}", BOTH),
    ("GET", "/healthz", (GenerationMode.POSITIVE,)),
    ("GET", "/readyz", (GenerationMode.POSITIVE,)),
    ("GET", "/metrics", (GenerationMode.POSITIVE,)),
    ("POST", "/v1/api/admin/goods", BOTH),
    ("PATCH", "/v1/api/admin/goods/{goods_id}", BOTH),
]
# Operations whose valid-looking requests are not expected to reach a 200: the admin create's
# schema gives its times as bare strings, so generated ones almost never parse (0 of 40).
NO_SUCCESS_EXPECTED = {("POST", "/v1/api/admin/goods")}
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path, modes in OPERATIONS
    for mode in modes
]


def test_every_documented_operation_is_fuzzed(api_schema: Any) -> None:
    documented = {
        (result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()
    }
    assert documented <= {(method, path) for method, path, _ in OPERATIONS}


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_every_answer_is_documented_and_none_is_a_5xx(
    api_schema: Any,
    service: ServiceProcess,
    own_goods: list[int],
    own_investments: tuple[int, list[int]],
    admin_headers: dict[str, str] | None,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    operation = api_schema.find_operation_by_label(f"{method} {path}")
    if operation is None:
        pytest.skip(f"{method} {path} is not in this service's /openapi.json")
    headers = admin_headers if ADMIN.match(path) else None

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        goods_id = (case.path_parameters or {}).get("goods_id")
        if isinstance(goods_id, int) and not isinstance(goods_id, bool) and goods_id >= 1:
            # Only this module's products are changed, so no other test's product moves.
            case.path_parameters["goods_id"] = own_goods[goods_id % len(own_goods)]
        investment_id = (case.path_parameters or {}).get("investment_id")
        if mode is GenerationMode.POSITIVE and isinstance(investment_id, int):
            # Valid requests name this module's investments, as their owner (once cancelled,
            # the same DELETE answers the same 200).
            owner, investments = own_investments
            case.path_parameters["investment_id"] = investments[investment_id % len(investments)]
            case.headers = {**(case.headers or {}), "X-USER-ID": str(owner)}
        response = case.call(base_url=service.base_url, headers=headers, timeout=10)
        TALLY[(label, response.status_code)] += 1  # before validation, so a 5xx is counted too
        case.validate_response(
            response, checks=CHECKS, headers=headers,
            transport_kwargs={"base_url": service.base_url, "headers": headers, "timeout": 10},
        )  # fmt: skip

    label = f"{method} {path} {mode.value}"
    check()
    tally = {status: count for (name, status), count in TALLY.items() if name == label}
    assert sum(tally.values()) > 0, "no request was generated"
    assert [status for status in tally if status >= 500] == [], tally
    if mode is GenerationMode.POSITIVE and (method, path) not in NO_SUCCESS_EXPECTED:
        assert tally.get(200, 0) > 0, f"no generated request succeeded: {tally}"


def test_the_ledger_verifies_after_the_generated_requests(database_url: str) -> None:
    """Whatever the generated invests did, counters equal the ledger (runs after the above)."""
    verify_ledger(database_url)
    assert [key for key in TALLY if key[1] >= 500] == []
    for (label, status), count in sorted(TALLY.items()):
        print(f"schemathesis: {label} -> {status}: {count}")
    print(f"schemathesis: {sum(TALLY.values())} generated requests")
