"""The OpenAPI description (BlackSheep's handler): the three APIs, operations, administration, and
every error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from blacksheep.server.openapi.common import ContentInfo, DirectSchema, HeaderInfo, ResponseInfo
from blacksheep.server.openapi.v3 import OpenAPIHandler
from openapidocs.v3 import (
    HTTPSecurity,
    Info,
    MediaType,
    Parameter,
    ParameterLocation,
    RequestBody,
    SecurityRequirement,
)
from openapidocs.v3 import Schema as OpenApiSchema

from service import cancelling, holdings, investing
from service.goods import FIELDS, MAX_TITLE, Goods
from service.parsing import (
    CURSOR_PATTERN,
    KEY_PATTERN,
    MAX_AMOUNT,
    MAX_GOODS_ID,
    MAX_IDEMPOTENCY_KEY,
    MAX_INVESTMENT_ID,
    MAX_PAGE,
    MAX_USER_ID,
)
from service.problems import PROBLEMS
from service.shapes import TIME_PATTERN, schema_of

Handler = Callable[..., Any]

INTEGER = {"type": "integer"}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or list(properties)}


# Each response shape is declared once, by the module that produces it; the schemas follow.
GOODS = schema_of(Goods)
INVEST_RESULT = schema_of(investing.InvestResult)
MY_INVESTMENT = schema_of(holdings.MyInvestment)
CANCEL_RESULT = schema_of(cancelling.CancelResult)
INVEST_REQUEST = {
    "type": "object",
    "properties": {
        "goodsId": {"type": "integer", "minimum": 1, "maximum": MAX_GOODS_ID},
        "investmentAmount": {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT},
    },
    "required": ["goodsId", "investmentAmount"],
}
GOODS_FIELDS = {  # the admin API's request body
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": MAX_TITLE},
        "total_investing_amount": {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT},
        "started_at": {"type": "string", "example": "2026-12-01 10:00:00"},
        "finished_at": {"type": "string", "example": "2026-12-31 18:00:00"},
        "status": {"type": "boolean", "description": "false closes the product"},
    },
}
PROBLEM = _object(
    {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": INTEGER,
        "detail": {"type": "string"},
        "code": {"type": "string", "enum": sorted(PROBLEMS)},
    }
)


class Schema:
    """Stand-ins that carry a JSON schema into BlackSheep's generator (see `register`)."""


class GoodsList(Schema):
    pass


class InvestResult(Schema):
    pass


class MyInvestmentList(Schema):
    pass


class CancelResult(Schema):
    pass


class ProblemDetails(Schema):
    pass


class Health(Schema):
    pass


class AdminGoods(Schema):
    pass


_SCHEMAS: dict[type, dict[str, Any]] = {
    GoodsList: {"type": "array", "items": GOODS},
    InvestResult: INVEST_RESULT,
    MyInvestmentList: {"type": "array", "items": MY_INVESTMENT, "maxItems": MAX_PAGE},
    CancelResult: CANCEL_RESULT,
    ProblemDetails: PROBLEM,
    Health: _object({"status": {"type": "string"}}),
    AdminGoods: GOODS,
}


def _ok(
    description: str, schema: type, headers: dict[str, HeaderInfo] | None = None
) -> ResponseInfo:
    return ResponseInfo(description, headers=headers, content=[ContentInfo(schema)])


def _problem(*codes: str) -> ResponseInfo:
    headers = {}
    if "SERVICE_UNAVAILABLE" in codes:
        headers["Retry-After"] = HeaderInfo(int, "seconds, on 503 SERVICE_UNAVAILABLE only")
    if "UNAUTHORIZED" in codes:
        headers["WWW-Authenticate"] = HeaderInfo(str, "Bearer challenge")
    return ResponseInfo(
        "Problem details; `code` is one of: " + ", ".join(codes),
        headers=headers or None,
        content=[ContentInfo(ProblemDetails, content_type="application/problem+json")],
    )


UNAVAILABLE = _problem("SERVICE_UNAVAILABLE")


def _parameter(
    name: str, location: ParameterLocation, description: str, schema: OpenApiSchema, required: bool
) -> Parameter:
    return Parameter(name, location, schema, description=description, required=required)


# BlackSheep derives parameters from handler signatures; ours take the raw Request, so the
# parameters are declared here and attached when each operation is created.
USER_ID = _parameter(
    "X-USER-ID",
    ParameterLocation.HEADER,
    "The user, a decimal integer (set by the gateway)",
    OpenApiSchema(type="integer", minimum=1, maximum=MAX_USER_ID, example=1),
    True,
)
IDEMPOTENCY_KEY = _parameter(
    "Idempotency-Key",
    ParameterLocation.HEADER,
    "Optional, per user, kept at least 24 h: a retry with the same key and body replays the"
    " first answer and writes nothing; another body: 422; while the first runs: 409",
    OpenApiSchema(
        type="string", min_length=1, max_length=MAX_IDEMPOTENCY_KEY, pattern=f"^{KEY_PATTERN}$"
    ),
    False,
)
INVESTMENT_ID = _parameter(
    "investment_id",
    ParameterLocation.PATH,
    "The investment: the invest answer's investment_id (my investments' items carry it too)",
    OpenApiSchema(type="integer", minimum=1, maximum=MAX_INVESTMENT_ID, example=12),
    True,
)
WINDOW = [
    _parameter(
        name,
        ParameterLocation.QUERY,
        f"Window {edge}, YYYY-MM-DD HH:MM:SS in the display time zone",
        OpenApiSchema(type="string", pattern=TIME_PATTERN, example=example),
        True,
    )
    for name, edge, example in (
        ("started_at", "start", "2021-04-01 00:00:00"),
        ("finished_at", "end", "2021-05-01 00:00:00"),
    )
]
PAGE = [
    _parameter(
        "limit",
        ParameterLocation.QUERY,
        f"Page size, 1 to {MAX_PAGE} (default {MAX_PAGE})",
        OpenApiSchema(type="integer", minimum=1, maximum=MAX_PAGE),
        False,
    ),
    _parameter(
        "cursor",
        ParameterLocation.QUERY,
        "Where the page starts: the value given in the previous page's Link header",
        OpenApiSchema(type="string", pattern=f"^{CURSOR_PATTERN}$"),
        False,
    ),
]


def _with_parameters(*parameters: Parameter) -> Callable[[Any, Any], None]:
    def on_created(handler: Any, operation: Any) -> None:
        operation.parameters = list(parameters)

    return on_created


def _invest_operation(handler: Any, operation: Any) -> None:
    operation.parameters = [USER_ID, IDEMPOTENCY_KEY]
    schema = DirectSchema(INVEST_REQUEST)  # type: ignore[no-untyped-call]
    operation.request_body = RequestBody(
        content={"application/json": MediaType(schema=schema)},
        required=True,
        description="goodsId and investmentAmount (snake_case goods_id / investment_amount too)."
        " Content-Type application/json or application/*+json, or none; any other is 415.",
    )


def build_docs() -> OpenAPIHandler:
    docs = OpenAPIHandler(
        info=Info(
            title="Investment service",
            version="1.0.0",
            description="List investment products, invest, list and cancel my investments"
            " (contract v1)."
            " Every GET operation also answers HEAD: the same status and headers, no body.",
        ),
        ui_path="/docs",
        json_spec_path="/openapi.json",
        yaml_spec_path="/openapi.yaml",
    )
    docs.ui_providers = []  # /docs is service/docs_ui.py: pinned assets, no CDN
    for stand_in, schema in _SCHEMAS.items():
        docs.set_type_schema(stand_in, schema)
    return docs


def describe(
    docs: OpenAPIHandler,
    *,
    list_goods: Handler,
    invest: Handler,
    my_investments: Handler,
    cancel: Handler,
    healthz: Handler,
    readyz: Handler,
) -> None:
    """Attach the documentation of each route to its handler (as routed)."""
    docs(
        summary="List investment products",
        description="Products whose whole recruitment period lies inside the window, by goods_id.",
        tags=["investment"],
        responses={
            200: _ok("The products in the window", GoodsList),
            400: _problem("INVALID_PERIOD"),
            404: _problem("GOODS_NOT_FOUND"),
            503: UNAVAILABLE,
        },
        on_created=_with_parameters(*WINDOW),
    )(list_goods)
    docs(
        summary="Invest",
        description=(
            "Invests min(amount, remaining) atomically. Not recruiting: 200 with"
            " investment_amount 0 and status false; this request sells it out: status false."
        ),
        tags=["investment"],
        responses={
            200: _ok(
                "What was invested",
                InvestResult,
                {"Idempotent-Replayed": HeaderInfo(str, "true when this answer is a replay")},
            ),
            400: _problem(
                "MISSING_USER_ID",
                "INVALID_USER_ID",
                "INVALID_BODY",
                "INVALID_GOODS_ID",
                "INVALID_AMOUNT",
                "INVALID_IDEMPOTENCY_KEY",
            ),
            404: _problem("GOODS_NOT_FOUND"),
            409: _problem("IDEMPOTENCY_KEY_IN_USE"),
            413: _problem("PAYLOAD_TOO_LARGE"),
            415: _problem("UNSUPPORTED_MEDIA_TYPE"),
            422: _problem("IDEMPOTENCY_KEY_MISMATCH"),
            # INVEST_OUTCOME_UNKNOWN: the call was sent and its answer lost; retry only with the
            # same Idempotency-Key (or look at my investments first). No Retry-After.
            503: _problem("SERVICE_UNAVAILABLE", "INVEST_OUTCOME_UNKNOWN"),
        },
        on_created=_invest_operation,
    )(invest)
    docs(
        summary="My investments",
        description="One item per investment, by invest_date then id; pages of at most 1000.",
        tags=["investment"],
        responses={
            200: _ok(
                "The user's investments",
                MyInvestmentList,
                {"Link": HeaderInfo(str, 'The next page, as <url>; rel="next", when there is one')},
            ),
            400: _problem("MISSING_USER_ID", "INVALID_USER_ID", "INVALID_PAGE"),
            404: _problem("INVESTMENTS_NOT_FOUND"),
            503: UNAVAILABLE,
        },
        on_created=_with_parameters(USER_ID, *PAGE),
    )(my_investments)
    docs(
        summary="Cancel an investment",
        description=(
            "Cancels the user's investment wholly, while its product recruits or is sold out"
            " within its period and is not closed: the product's counters drop at once (a"
            " sold-out product recruits again) and my investments no longer lists it. The same"
            " DELETE again answers 200 with the same body. A 503 means: repeat the same DELETE"
            " (it may have been made; a repeat answers it either way)."
        ),
        tags=["investment"],
        responses={
            200: _ok("The cancellation, and the product right after it", CancelResult),
            400: _problem("MISSING_USER_ID", "INVALID_USER_ID", "INVALID_INVESTMENT_ID"),
            404: _problem("INVESTMENT_NOT_FOUND"),
            409: _problem("INVESTMENT_NOT_CANCELLABLE"),
            503: UNAVAILABLE,
        },
        on_created=_with_parameters(USER_ID, INVESTMENT_ID),
    )(cancel)
    docs(summary="Liveness", tags=["operations"], responses={200: _ok("Serving", Health)})(healthz)
    docs(
        summary="Readiness",
        tags=["operations"],
        responses={200: _ok("The database answers", Health), 503: UNAVAILABLE},
    )(readyz)


def describe_metrics(docs: OpenAPIHandler, scrape: Handler) -> None:
    """Attach the documentation of /metrics (served when METRICS_ENABLED) to its handler."""
    text = ContentInfo(str, content_type="text/plain")
    docs(
        summary="Prometheus metrics",
        description="Every worker's metrics in the Prometheus text exposition format.",
        tags=["operations"],
        responses={200: ResponseInfo("The metrics", content=[text])},
    )(scrape)


GOODS_ID = _parameter(
    "goods_id",
    ParameterLocation.PATH,
    "The product",
    OpenApiSchema(type="integer", minimum=1, maximum=MAX_GOODS_ID),
    True,
)


def _admin_operation(
    required: list[str], description: str, path_goods_id: bool = False
) -> Callable[[Any, Any], None]:
    def on_created(handler: Any, operation: Any) -> None:
        schema = DirectSchema({**GOODS_FIELDS, "required": required})  # type: ignore[no-untyped-call]
        operation.request_body = RequestBody(
            content={"application/json": MediaType(schema=schema)},
            required=True,
            description=description,
        )
        operation.security = [SecurityRequirement("adminToken", [])]
        if path_goods_id:
            operation.parameters = [GOODS_ID]

    return on_created


def describe_admin(docs: OpenAPIHandler, *, create_goods: Handler, change_goods: Handler) -> None:
    """The admin routes (only when ADMIN_TOKEN is set) and their bearer scheme."""
    schemes = docs.components.security_schemes or {}
    schemes["adminToken"] = HTTPSecurity(
        scheme="bearer", description="ADMIN_TOKEN (admin routes exist only when it is set)"
    )
    docs.components.security_schemes = schemes
    common: dict[int | str, str | ResponseInfo] = {
        401: _problem("UNAUTHORIZED"),
        413: _problem("PAYLOAD_TOO_LARGE"),
        415: _problem("UNSUPPORTED_MEDIA_TYPE"),
        503: UNAVAILABLE,
    }
    docs(
        summary="Register a product",
        description="Times in the display time zone; the list cache may show the change only"
        " after LIST_CACHE_SECONDS.",
        tags=["administration"],
        responses={
            201: _ok("The new product", AdminGoods),
            400: _problem("INVALID_BODY", "INVALID_GOODS"),
            **common,
        },
        on_created=_admin_operation(list(FIELDS[:4]), "The product; status defaults to true"),
    )(create_goods)
    docs(
        summary="Change a product",
        description="Changes title, total, period or status (false closes it). The total may not"
        " go below what is already invested (409, nothing changed). The list cache may show the"
        " old product for up to LIST_CACHE_SECONDS.",
        tags=["administration"],
        responses={
            200: _ok("The changed product", AdminGoods),
            400: _problem("INVALID_BODY", "INVALID_GOODS", "INVALID_GOODS_ID"),
            404: _problem("GOODS_NOT_FOUND"),
            409: _problem("TOTAL_BELOW_INVESTED"),
            **common,
        },
        on_created=_admin_operation([], "The fields to change (at least one)", path_goods_id=True),
    )(change_goods)
