"""Hostile input through real HTTP: every bad input gets the contract's status and code, never a 5xx,
and writes nothing (the ledger, the counters and the tables are as before).

Bytes that httpx refuses to send go through `raw_request` (a plain socket). What the service does
with duplicate JSON keys is pinned here: the last occurrence wins, deterministically.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import httpx
import orjson
import psqlpy
import pytest

from tests.support import (
    ServiceProcess,
    create_goods,
    fresh_user,
    ledger_sum,
    problem,
    psql,
    raw_exchange,
    raw_request,
    verify_ledger,
)

INVEST = "/v1/api/investment/user/goods"
MINE = "/v1/api/investment/user/goods"
GOODS = "/v1/api/investment/goods"
LIMIT = 16384  # MAX_BODY_BYTES (SPEC: 16 KiB)
WINDOW = {"started_at": "2000-01-01 00:00:00", "finished_at": "2100-01-01 00:00:00"}
G = b"@G@"  # stands for this module's product id in the bodies below

SQL_INJECTION = [
    "1; DROP TABLE user_investment_goods; --",
    "1' OR '1'='1",
    "1 OR 1=1",
    "' UNION SELECT * FROM investment_goods --",
    "1); DELETE FROM investment_goods; --",
    "$$; TRUNCATE investment_goods; $$",
    "1/**/OR/**/1=1",
    "\\'; SELECT pg_sleep(10); --",
]


# (id, investmentAmount as raw JSON, code): in a body that is valid but for the amount. SPEC says
# float, string, boolean, zero, negative or larger than 2^53-1 -> 400; some are not JSON at all.
BAD_AMOUNTS = [
    ("nan", b"NaN", "INVALID_BODY"),
    ("infinity", b"Infinity", "INVALID_BODY"),
    ("minus-infinity", b"-Infinity", "INVALID_BODY"),
    ("hex", b"0x10", "INVALID_BODY"),
    ("leading-zero", b"010", "INVALID_BODY"),
    ("plus-sign", b"+10", "INVALID_BODY"),
    ("amount-nested-5000", b"[" * 5000 + b"]" * 5000, "INVALID_BODY"),
    ("amount-nested-500", b"[" * 500 + b"]" * 500, "INVALID_AMOUNT"),
    ("amount-2^53", b"9007199254740992", "INVALID_AMOUNT"),
    ("amount-2^63", b"9223372036854775808", "INVALID_AMOUNT"),
    ("amount-2^64", b"18446744073709551616", "INVALID_AMOUNT"),
    ("amount-10^100", b"1" + b"0" * 100, "INVALID_AMOUNT"),
    ("amount-5000-digits", b"1" + b"0" * 5000, "INVALID_AMOUNT"),
    ("amount-minus-5000-digits", b"-1" + b"0" * 5000, "INVALID_AMOUNT"),
    ("amount-1e400", b"1e400", "INVALID_AMOUNT"),
    ("amount-minus-1e400", b"-1e400", "INVALID_AMOUNT"),
    ("amount-1e2", b"1e2", "INVALID_AMOUNT"),
    ("amount-1E+2", b"1E+2", "INVALID_AMOUNT"),
    ("amount-1.0", b"1.0", "INVALID_AMOUNT"),
    ("amount-100.5", b"100.5", "INVALID_AMOUNT"),
    ("amount-1e-400", b"1e-400", "INVALID_AMOUNT"),
    ("amount-zero", b"0", "INVALID_AMOUNT"),
    ("amount-minus-zero", b"-0", "INVALID_AMOUNT"),
    ("amount-minus-zero-float", b"-0.0", "INVALID_AMOUNT"),
    ("amount-negative", b"-1000", "INVALID_AMOUNT"),
    ("amount-string", b'"1000"', "INVALID_AMOUNT"),
    ("amount-string-float", b'"1e3"', "INVALID_AMOUNT"),
    ("amount-true", b"true", "INVALID_AMOUNT"),
    ("amount-false", b"false", "INVALID_AMOUNT"),
    ("amount-null", b"null", "INVALID_AMOUNT"),
    ("amount-object", b'{"value":1}', "INVALID_AMOUNT"),
    ("amount-array", b"[1]", "INVALID_AMOUNT"),
    ("amount-sql", b'"1; DROP TABLE investment_goods"', "INVALID_AMOUNT"),
]
# (id, goodsId as raw JSON): in a body investing 1, refused with INVALID_GOODS_ID.
BAD_GOODS_IDS = [
    ("goods-zero", b"0"),
    ("goods-negative", b"-1"),
    ("goods-2^63", b"9223372036854775808"),
    ("goods-2^64", b"18446744073709551616"),
    ("goods-5000-digits", b"9" * 5000),
    ("goods-float", b"@G@.0"),
    ("goods-1e2", b"1e2"),
    ("goods-string", b'"@G@"'),
    ("goods-true", b"true"),
    ("goods-null", b"null"),
    ("goods-sql", b'"1 OR 1=1"'),
]

# (id, body, code): posted with a valid user and Content-Type application/json.
BAD_BODIES: list[tuple[str, bytes, str]] = [
    # not a JSON object at all
    ("empty", b"", "INVALID_BODY"),
    ("whitespace", b" \r\n\t ", "INVALID_BODY"),
    ("array", b'[{"goodsId":@G@,"investmentAmount":1}]', "INVALID_BODY"),
    ("empty-array", b"[]", "INVALID_BODY"),
    ("string", b'"goodsId"', "INVALID_BODY"),
    ("number", b"1", "INVALID_BODY"),
    ("null", b"null", "INVALID_BODY"),
    ("true", b"true", "INVALID_BODY"),
    ("truncated", b'{"goodsId":@G@,"investmentAmount":1', "INVALID_BODY"),
    ("trailing-garbage", b'{"goodsId":@G@,"investmentAmount":1}x', "INVALID_BODY"),
    ("two-documents", b'{"goodsId":@G@,"investmentAmount":1}{}', "INVALID_BODY"),
    ("single-quotes", b"{'goodsId':@G@,'investmentAmount':1}", "INVALID_BODY"),
    ("trailing-comma", b'{"goodsId":@G@,"investmentAmount":1,}', "INVALID_BODY"),
    ("comment", b'{"goodsId":@G@,/*x*/"investmentAmount":1}', "INVALID_BODY"),
    ("form-encoded", b"goodsId=@G@&investmentAmount=1", "INVALID_BODY"),
    # invalid UTF-8 (and other encodings)
    ("invalid-utf8-bytes", b"\xff\xfe\xfd", "INVALID_BODY"),
    ("invalid-utf8-in-key", b'{"goodsId":@G@,"investmentAmount":1,"\xc3\x28":1}', "INVALID_BODY"),
    ("invalid-utf8-in-value", b'{"goodsId":@G@,"investmentAmount":1,"x":"\xff"}', "INVALID_BODY"),
    ("overlong-utf8", b'{"goodsId":@G@,"investmentAmount":1,"x":"\xc0\xaf"}', "INVALID_BODY"),
    ("utf16", '{"goodsId":1,"investmentAmount":1}'.encode("utf-16"), "INVALID_BODY"),
    ("utf8-bom", b'\xef\xbb\xbf{"goodsId":@G@,"investmentAmount":1}', "INVALID_BODY"),
    ("nul-byte", b'{"goodsId":@G@,\x00"investmentAmount":1}', "INVALID_BODY"),
    # deep nesting that fits in 16 KiB (100k levels is the 413 case below)
    ("nested-8000", b"[" * 8000 + b"]" * 8000, "INVALID_BODY"),
    ("nested-object-2000", b'{"a":' * 2000 + b"1" + b"}" * 2000, "INVALID_BODY"),
    # amounts missing or misspelt (BAD_AMOUNTS below: the amount's values)
    ("amount-missing", b'{"goodsId":@G@}', "INVALID_AMOUNT"),
    ("amount-wrong-case", b'{"goodsId":@G@,"InvestmentAmount":1}', "INVALID_AMOUNT"),
    # goods ids missing (BAD_GOODS_IDS below: the goods id's values)
    ("goods-missing", b'{"investmentAmount":1}', "INVALID_GOODS_ID"),
    ("empty-object", b"{}", "INVALID_GOODS_ID"),
    # duplicate keys: the last occurrence wins, so an invalid last value is refused
    (
        "duplicate-amount-last-invalid",
        b'{"goodsId":@G@,"investmentAmount":5,"investmentAmount":"x"}',
        "INVALID_AMOUNT",
    ),
    (
        "duplicate-goods-last-invalid",
        b'{"goodsId":@G@,"investmentAmount":5,"goodsId":0}',
        "INVALID_GOODS_ID",
    ),
    *(
        (name, b'{"goodsId":@G@,"investmentAmount":' + value + b"}", code)
        for name, value, code in BAD_AMOUNTS
    ),
    *(
        (name, b'{"goodsId":' + value + b',"investmentAmount":1}', "INVALID_GOODS_ID")
        for name, value in BAD_GOODS_IDS
    ),
]


def raw_problem(raw: tuple[int, bytes], status: int, code: str) -> None:
    got, payload = raw
    assert got == status, payload[:300]
    body = orjson.loads(payload)
    assert body["status"] == status and body["code"] == code, body


def table_counts_sql(goods: int) -> str:
    """Row counts of every table the service writes (a dropped table makes the query fail), the
    ledger's total, and the product's ledger sum and counters: one row, as text."""
    return (
        "SELECT ROW((SELECT count(*) FROM investment_goods),"
        " (SELECT count(*) FROM user_investment_goods),"
        " (SELECT count(*) FROM investment_goods_investor),"
        " (SELECT coalesce(sum(user_investing_amount), 0) FROM user_investment_goods),"
        " (SELECT coalesce(sum(user_investing_amount), 0) FROM user_investment_goods"
        f"   WHERE goods_id = {goods}),"
        " (SELECT current_investing_amount || '/' || investor_count FROM investment_goods"
        f"   WHERE goods_id = {goods}))::text AS counts"
    )


@pytest.fixture(scope="module")
def table_counts(database_url: str) -> Iterator[Callable[[int], str]]:
    """table_counts_sql on one connection kept for the module: a psql process before and after
    each of the ~200 tests below cost more than the tests themselves."""
    loop = asyncio.new_event_loop()
    connection = loop.run_until_complete(psqlpy.connect(dsn=database_url))

    def counts(goods: int) -> str:
        rows = loop.run_until_complete(connection.fetch(table_counts_sql(goods))).result()
        return str(rows[0]["counts"])

    try:
        yield counts
    finally:
        connection.close()
        loop.close()


@pytest.fixture(scope="module")
def goods(database_url: str) -> int:
    """A recruiting product too large to sell out here: any write would show in its ledger."""
    return create_goods(database_url, 10**15, title="hostile input")


@pytest.fixture
def nothing_written(table_counts: Callable[[int], str], goods: int) -> Iterator[None]:
    """Fails the test when anything was written: the ledger, the counters, any table's rows."""
    before = table_counts(goods)
    yield
    assert table_counts(goods) == before


def body_for(template: bytes, goods: int) -> bytes:
    return template.replace(G, str(goods).encode())


@pytest.mark.parametrize(
    ("body", "code"), [pytest.param(body, code, id=name) for name, body, code in BAD_BODIES]
)
def test_bad_invest_body_is_refused_with_its_code(
    client: httpx.Client, goods: int, user: int, nothing_written: None, body: bytes, code: str
) -> None:
    response = client.post(
        INVEST,
        content=body_for(body, goods),
        headers={"X-USER-ID": str(user), "Content-Type": "application/json"},
    )
    problem(response, 400, code)


def test_duplicate_keys_last_one_wins_and_writes_exactly_once(
    client: httpx.Client, database_url: str, goods: int
) -> None:
    """orjson keeps the last of duplicate keys; the same bytes always give the same answer."""
    before = ledger_sum(database_url, goods)
    body = body_for(b'{"goodsId":@G@,"investmentAmount":"x","investmentAmount":7}', goods)
    answers = []
    for _ in range(3):
        response = client.post(
            INVEST,
            content=body,
            headers={"X-USER-ID": str(fresh_user()), "Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        answers.append(response.json()["investment_amount"])
    assert answers == [7, 7, 7]
    assert ledger_sum(database_url, goods) == before + 21
    verify_ledger(database_url)


def test_camel_case_key_wins_over_snake_case(
    client: httpx.Client, database_url: str, goods: int, user: int
) -> None:
    before = ledger_sum(database_url, goods)
    body = body_for(
        b'{"goods_id":999999999,"goodsId":@G@,"investment_amount":"x","investmentAmount":3}', goods
    )
    response = client.post(INVEST, content=body, headers={"X-USER-ID": str(user)})
    assert response.status_code == 200, response.text
    assert response.json()["goods_id"] == goods and response.json()["investment_amount"] == 3
    assert ledger_sum(database_url, goods) == before + 3


@pytest.mark.parametrize(
    "content_type, refused",
    [("text/plain", (415, "UNSUPPORTED_MEDIA_TYPE")),
     ("application/x-www-form-urlencoded", (415, "UNSUPPORTED_MEDIA_TYPE")),
     ("multipart/form-data; boundary=x", (415, "UNSUPPORTED_MEDIA_TYPE")),
     ("application/xml", (415, "UNSUPPORTED_MEDIA_TYPE")),
     ("application/json; charset=latin-1", (400, "INVALID_BODY")), (None, (400, "INVALID_BODY"))],
)  # fmt: skip
def test_a_body_that_is_not_json_is_refused_by_its_label_or_by_itself(
    client: httpx.Client,
    goods: int,
    user: int,
    nothing_written: None,
    content_type: str | None,
    refused: tuple[int, str],
) -> None:
    """An explicit non-JSON Content-Type is 415 whatever the body; under a JSON label (any
    parameters) or none, a body that is not a JSON object is 400 INVALID_BODY."""
    headers = {"X-USER-ID": str(user)}
    if content_type is not None:
        headers["Content-Type"] = content_type
    for body in (b"goodsId=%d&investmentAmount=1" % goods, b"<invest goodsId='1'/>", b"--x\r\n"):
        problem(client.post(INVEST, content=body, headers=headers), *refused)


def test_json_object_under_text_plain_is_415_and_writes_nothing(
    client: httpx.Client, goods: int, user: int, nothing_written: None
) -> None:
    response = client.post(
        INVEST,
        content=b'{"goodsId":%d,"investmentAmount":11}' % goods,
        headers={"X-USER-ID": str(user), "Content-Type": "text/plain"},
    )
    problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_oversized_body_with_content_length_is_413(
    client: httpx.Client, goods: int, user: int, nothing_written: None
) -> None:
    padding = b" " * LIMIT
    body = b'{"goodsId":%d,"investmentAmount":1}' % goods + padding
    response = client.post(INVEST, content=body, headers={"X-USER-ID": str(user)})
    problem(response, 413, "PAYLOAD_TOO_LARGE")


def test_oversized_chunked_body_without_content_length_is_413(
    client: httpx.Client, goods: int, user: int, nothing_written: None
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"goodsId":%d,"investmentAmount":1}' % goods
        for _ in range(64):  # 256 KiB in 4 KiB chunks
            yield b" " * 4096

    response = client.post(INVEST, content=chunks(), headers={"X-USER-ID": str(user)})
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    problem(response, 413, "PAYLOAD_TOO_LARGE")


def test_100k_levels_of_nesting_is_413(
    client: httpx.Client, user: int, nothing_written: None
) -> None:
    response = client.post(INVEST, content=b"[" * 100_000, headers={"X-USER-ID": str(user)})
    problem(response, 413, "PAYLOAD_TOO_LARGE")


def test_declared_huge_content_length_is_413_before_the_body(
    service: ServiceProcess, user: int, nothing_written: None
) -> None:
    """Content-Length: 10^9 with no body sent: refused at once, not after waiting for 1 GB."""
    head = (
        b"POST %s HTTP/1.1\r\nHost: x\r\nX-USER-ID: %d\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000000\r\nConnection: close\r\n\r\n" % (INVEST.encode(), user)
    )
    status, payload = raw_exchange(service.base_url, head)
    assert status == 413
    assert orjson.loads(payload)["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize("value", SQL_INJECTION)
def test_sql_in_user_header_is_invalid_user_id(
    client: httpx.Client, goods: int, nothing_written: None, value: str
) -> None:
    body = b'{"goodsId":%d,"investmentAmount":1}' % goods
    problem(client.post(INVEST, content=body, headers={"X-USER-ID": value}), 400, "INVALID_USER_ID")
    problem(client.get(MINE, headers={"X-USER-ID": value}), 400, "INVALID_USER_ID")


@pytest.mark.parametrize("value", SQL_INJECTION)
def test_sql_in_idempotency_key_is_only_a_key(
    client: httpx.Client, database_url: str, goods: int, value: str
) -> None:
    """A printable key is a valid key: the invest happens once, its retry replays, SQL is data."""
    user = fresh_user()
    before = ledger_sum(database_url, goods)
    body = b'{"goodsId":%d,"investmentAmount":13}' % goods
    headers = {"X-USER-ID": str(user), "Idempotency-Key": value}
    first = client.post(INVEST, content=body, headers=headers)
    again = client.post(INVEST, content=body, headers=headers)
    assert first.status_code == again.status_code == 200, first.text
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert ledger_sum(database_url, goods) == before + 13


@pytest.mark.parametrize(
    "key",
    [b"a" * 256, b"key\x7f", b"\xff\xfe", b"\xc3\xa9t\xc3\xa9", b"tab\tinside", b"-- \x01"],
    ids=["256-chars", "del", "invalid-utf8", "utf8-accents", "tab", "control"],
)
def test_bad_idempotency_key_is_400(
    service: ServiceProcess, goods: int, user: int, nothing_written: None, key: bytes
) -> None:
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nX-USER-ID: %d\r\nIdempotency-Key: %s" % (
        INVEST.encode(), user, key,
    )  # fmt: skip
    status, payload = raw_request(
        service.base_url, head, b'{"goodsId":%d,"investmentAmount":1}' % goods
    )
    if status == 400 and not payload:  # refused by the HTTP layer (control bytes), before the app
        return
    raw_problem((status, payload), 400, "INVALID_IDEMPOTENCY_KEY")


@pytest.mark.parametrize("name", ["started_at", "finished_at"])
@pytest.mark.parametrize("value", SQL_INJECTION)
def test_sql_in_period_is_invalid_period(
    client: httpx.Client, nothing_written: None, name: str, value: str
) -> None:
    problem(client.get(GOODS, params={**WINDOW, name: value}), 400, "INVALID_PERIOD")
    problem(client.get(GOODS, params={**WINDOW, name: WINDOW[name] + value}), 400, "INVALID_PERIOD")


@pytest.mark.parametrize(
    ("name", "value"),
    [*((name, value) for name in ("limit", "cursor") for value in SQL_INJECTION),
     ("limit", "0"), ("limit", "1001"), ("limit", "-1"), ("limit", "1e2"), ("limit", "1.0"),
     ("limit", "18446744073709551616"), ("limit", "٣"), ("limit", " 5"), ("limit", "9" * 5000),
     ("cursor", "1_"), ("cursor", "_1"), ("cursor", "1_2_3"), ("cursor", "9" * 30 + "_1"),
     ("cursor", "1_" + "9" * 30), ("cursor", "١_١"), ("cursor", "9" * 5000)],
)  # fmt: skip
def test_sql_or_malformed_page_is_invalid_page(
    client: httpx.Client, user: int, nothing_written: None, name: str, value: str
) -> None:
    response = client.get(MINE, params={name: value}, headers={"X-USER-ID": str(user)})
    problem(response, 400, "INVALID_PAGE")


@pytest.mark.parametrize(
    "value",
    ["2021-02-30 00:00:00", "2021-13-01 00:00:00", "2021-01-01 24:00:00", "2021-01-01 00:60:00",
     "2021-01-01 00:00:60", "0000-01-01 00:00:00", "2021-01-01", "2021-01-01 00:00:00+09:00",
     "2021-01-01T00:00:00Z", "٢٠٢١-٠١-٠١ ٠٠:٠٠:٠٠", "", "9" * 10000],
)  # fmt: skip
def test_malformed_time_is_invalid_period(
    client: httpx.Client, nothing_written: None, value: str
) -> None:
    problem(client.get(GOODS, params={**WINDOW, "started_at": value}), 400, "INVALID_PERIOD")


def test_extreme_but_valid_window_is_served(client: httpx.Client, goods: int) -> None:
    """Year 1 and year 9999 in the display zone do not overflow anywhere (no 5xx)."""
    response = client.get(
        GOODS, params={"started_at": "0001-01-01 00:00:00", "finished_at": "9999-12-31 23:59:59"}
    )
    assert response.status_code == 200
    assert goods in [item["goods_id"] for item in response.json()]


def test_64k_header_is_served_or_refused_cleanly(service: ServiceProcess, user: int) -> None:
    """A 64 KiB header: served (granian's limit is higher); a 64 KiB X-USER-ID is just invalid."""
    status, payload = raw_request(
        service.base_url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 65536
    )
    assert status == 200 and orjson.loads(payload) == {"status": "ok"}
    head = b"GET %s HTTP/1.1\r\nHost: x\r\nX-USER-ID: %s" % (MINE.encode(), b"1" * 65536)
    raw_problem(raw_request(service.base_url, head), 400, "INVALID_USER_ID")


def test_1m_of_headers_is_431_and_the_connection_closes(service: ServiceProcess) -> None:
    """Past the HTTP layer's limit: 431 from granian (empty body), then the connection closes
    (raw_request reads until EOF within its 10 s socket timeout)."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (1 << 20)
    status, payload = raw_request(service.base_url, head)
    assert status == 431 and payload == b""
    many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-%d: a\r\n" % i for i in range(1000)
    )
    assert raw_request(service.base_url, many)[0] == 431


@pytest.mark.parametrize(
    "value",
    [b"1\xff", b"\xc3\xa9", b"\xef\xbc\x91", b"\x80", b"1\x00", b"1\x01", b"1\x7f"],
    ids=[
        "latin1-ff",
        "utf8-e-acute",
        "fullwidth-one",
        "lone-continuation",
        "nul",
        "ctrl-01",
        "del",
    ],
)
def test_header_with_invalid_bytes_is_400(
    service: ServiceProcess, goods: int, nothing_written: None, value: bytes
) -> None:
    """Bytes the HTTP layer accepts reach the app: 400 INVALID_USER_ID. NUL and control bytes are
    refused by granian itself: 400 with an empty body. Never a 5xx, nothing written."""
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nX-USER-ID: %s" % (INVEST.encode(), value)
    status, payload = raw_request(
        service.base_url, head, b'{"goodsId":%d,"investmentAmount":1}' % goods
    )
    if payload:
        raw_problem((status, payload), 400, "INVALID_USER_ID")
    else:
        assert status == 400


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "BREW", "TRACE"])
@pytest.mark.parametrize("path", [INVEST, GOODS, "/healthz"])
def test_unknown_method_on_known_path_is_405_problem(
    service: ServiceProcess, nothing_written: None, method: str, path: str
) -> None:
    """A method the path does not serve: 405 METHOD_NOT_ALLOWED, naming what it accepts."""
    head = b"%s %s HTTP/1.1\r\nHost: x\r\nX-USER-ID: 1" % (method.encode(), path.encode())
    raw_problem(raw_request(service.base_url, head, b"{}"), 405, "METHOD_NOT_ALLOWED")
    with httpx.Client(base_url=service.base_url, timeout=10) as client:
        allow = client.request(method, path, headers={"X-USER-ID": "1"}).headers["allow"]
    assert allow == {INVEST: "GET, HEAD, POST", GOODS: "GET, HEAD", "/healthz": "GET, HEAD"}[path]


def test_http_1_0_is_served(service: ServiceProcess, goods: int, nothing_written: None) -> None:
    status, payload = raw_request(service.base_url, b"GET /healthz HTTP/1.0")
    assert status == 200 and orjson.loads(payload) == {"status": "ok"}
    head = b"POST %s HTTP/1.0\r\nX-USER-ID: 1\r\nContent-Type: application/json" % INVEST.encode()
    raw_problem(raw_request(service.base_url, head, b"[]"), 400, "INVALID_BODY")
    status, payload = raw_request(service.base_url, b"GET %s HTTP/1.0" % MINE.encode())
    raw_problem((status, payload), 400, "MISSING_USER_ID")


def test_10k_path_is_404_problem(service: ServiceProcess, nothing_written: None) -> None:
    head = b"GET /" + b"a" * 10240 + b" HTTP/1.1\r\nHost: x"
    raw_problem(raw_request(service.base_url, head), 404, "NOT_FOUND")
    # Under the invest path, one more segment is the cancellation's route (DELETE only): 405,
    # its detail cut like the 404's; one segment more than that is no route at all.
    segment = b"%27%20OR%201=1" * 700
    head = b"GET " + INVEST.encode() + b"/" + segment + b" HTTP/1.1\r\nHost: x"
    status, payload = raw_request(service.base_url, head)
    raw_problem((status, payload), 405, "METHOD_NOT_ALLOWED")
    assert len(payload) < 1000
    head = b"DELETE " + INVEST.encode() + b"/" + segment + b" HTTP/1.1\r\nHost: x\r\nX-USER-ID: 1"
    raw_problem(raw_request(service.base_url, head), 400, "INVALID_INVESTMENT_ID")
    head = b"GET " + INVEST.encode() + b"/1/" + segment + b" HTTP/1.1\r\nHost: x"
    raw_problem(raw_request(service.base_url, head), 404, "NOT_FOUND")


def test_not_http_at_all_is_400(service: ServiceProcess) -> None:
    status, _ = raw_request(service.base_url, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")
    assert status == 400


def test_tables_are_intact_and_the_ledger_verifies(
    client: httpx.Client, database_url: str, goods: int
) -> None:
    """After everything above (this runs last in the module): every table is there, the product
    still serves, and every ledger invariant holds."""
    counts = psql(database_url, table_counts_sql(goods))  # a connection of its own
    assert counts.startswith("(") and len(counts.split(",")) == 6, counts
    response = client.get(GOODS, params=WINDOW)
    assert response.status_code == 200
    assert goods in [item["goods_id"] for item in response.json()]
    verify_ledger(database_url)
