"""Product administration: the bearer-token admin API and `python -m service goods add|close|list`."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
import orjson
import pytest

from tests.support import ROOT, ServiceProcess, counters, create_goods, fresh_user, psql

ADMIN = "/v1/api/admin/goods"
LIST = "/v1/api/investment/goods"
NEW = {
    "title": "관리자 등록 상품",
    "total_investing_amount": 5_000_000,
    "started_at": "2031-03-01 09:00:00",
    "finished_at": "2031-03-31 18:00:00",
}


@pytest.fixture
def admin(client: httpx.Client, admin_token: str) -> httpx.Client:
    client.headers["Authorization"] = f"Bearer {admin_token}"
    return client


def listed(
    client: httpx.Client, goods_id: int, started_at: str, finished_at: str
) -> dict[str, Any]:
    response = client.get(LIST, params={"started_at": started_at, "finished_at": finished_at})
    assert response.status_code == 200, response.text
    (item,) = [g for g in response.json() if g["goods_id"] == goods_id]
    return item


def stored(database_url: str, goods_id: int) -> str:
    return psql(
        database_url,
        "SELECT title, total_investing_amount, status, started_at, finished_at, category,"
        f" min_amount, amount_unit, repaid FROM investment_goods WHERE goods_id = {goods_id}",
    )


RULES = {"category": "general", "min_amount": 1, "amount_unit": 1, "repaid": False}


def item(product: dict[str, Any]) -> dict[str, Any]:
    """An admin answer's product without its rules: the list's item."""
    return {key: value for key, value in product.items() if key not in RULES}


def code(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json"
    return str(response.json()["code"])


# --- authentication ---------------------------------------------------------------------------


def test_admin_api_is_absent_without_a_token(two_workers: ServiceProcess, admin_token: str) -> None:
    with httpx.Client(base_url=two_workers.base_url, timeout=10) as http:
        auth = {"Authorization": f"Bearer {admin_token}"}
        created = http.post(ADMIN, json=NEW, headers=auth)
        assert created.status_code == 404 and code(created) == "NOT_FOUND"
        changed = http.patch(f"{ADMIN}/1", json={"status": False}, headers=auth)
        assert changed.status_code == 404
        assert ADMIN not in http.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "bearer x",
        "Bearer wrong-token-0123456789",
        "Basic dXNlcjpwYXNz",
        "Token x",
    ],
)
def test_missing_or_wrong_token_is_401_and_changes_nothing(
    client: httpx.Client, admin_token: str, database_url: str, authorization: str | None
) -> None:
    goods_id = create_goods(database_url, title="인증 시험")
    before = stored(database_url, goods_id)
    headers = {} if authorization is None else {"Authorization": authorization}
    for response in (
        client.post(ADMIN, json=NEW, headers=headers),
        client.patch(f"{ADMIN}/{goods_id}", json={"status": False}, headers=headers),
    ):
        assert response.status_code == 401
        assert code(response) == "UNAUTHORIZED"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert stored(database_url, goods_id) == before


def test_token_with_a_suffix_or_prefix_is_refused(client: httpx.Client, admin_token: str) -> None:
    for token in (admin_token + "x", admin_token[:-1], "x" + admin_token):
        response = client.post(ADMIN, json=NEW, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401


# --- create -------------------------------------------------------------------------------------


def test_create_returns_the_product_and_the_list_serves_it(admin: httpx.Client) -> None:
    response = admin.post(ADMIN, json=NEW)
    assert response.status_code == 201, response.text
    product = response.json()
    assert product["goods_id"] >= 1
    assert product == {
        "goods_id": product["goods_id"],
        "title": "관리자 등록 상품",
        "total_investing_amount": 5_000_000,
        "current_investing_amount": 0,
        "investor_count": 0,
        "status": True,
        "state": "upcoming",
        "started_at": "2031-03-01 09:00:00",
        "finished_at": "2031-03-31 18:00:00",
        **RULES,
    }
    assert listed(admin, product["goods_id"], "2031-03-01 00:00:00", "2031-04-01 00:00:00") == item(
        product
    )


def test_create_closed_then_reopen(admin: httpx.Client) -> None:
    product = admin.post(ADMIN, json={**NEW, "status": False}).json()
    assert product["state"] == "closed" and product["status"] is False
    reopened = admin.patch(f"{ADMIN}/{product['goods_id']}", json={"status": True}).json()
    assert reopened["state"] == "upcoming"


# --- change -------------------------------------------------------------------------------------


def test_change_title_total_period_and_status(admin: httpx.Client, database_url: str) -> None:
    goods_id = create_goods(database_url, total=1000, title="변경 전")
    response = admin.patch(
        f"{ADMIN}/{goods_id}",
        json={"title": "변경 후", "total_investing_amount": 2000,
              "started_at": "2032-01-01 00:00:00", "finished_at": "2032-01-31 00:00:00"},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    product = response.json()
    assert (product["title"], product["total_investing_amount"]) == ("변경 후", 2000)
    assert (product["started_at"], product["finished_at"]) == (
        "2032-01-01 00:00:00",
        "2032-01-31 00:00:00",
    )
    assert listed(admin, goods_id, "2032-01-01 00:00:00", "2032-02-01 00:00:00") == item(product)
    closed = admin.patch(f"{ADMIN}/{goods_id}", json={"status": False}).json()
    assert (closed["status"], closed["state"], closed["title"]) == (False, "closed", "변경 후")
    assert (
        listed(admin, goods_id, "2032-01-01 00:00:00", "2032-02-01 00:00:00")["state"] == "closed"
    )


def test_closing_stops_investments(admin: httpx.Client, database_url: str) -> None:
    goods_id = create_goods(database_url, total=1000)
    assert admin.patch(f"{ADMIN}/{goods_id}", json={"status": False}).status_code == 200
    invested = admin.post(
        "/v1/api/investment/user/goods",
        headers={"X-USER-ID": str(fresh_user())},
        json={"goodsId": goods_id, "investmentAmount": 10},
    ).json()
    assert (invested["investment_amount"], invested["state"]) == (0, "closed")


def test_total_below_the_invested_amount_is_refused_and_nothing_changes(
    admin: httpx.Client, database_url: str
) -> None:
    goods_id = create_goods(database_url, total=1000, title="줄이기")
    invest = admin.post(
        "/v1/api/investment/user/goods",
        headers={"X-USER-ID": str(fresh_user())},
        json={"goodsId": goods_id, "investmentAmount": 600},
    )
    assert invest.json()["investment_amount"] == 600
    before = stored(database_url, goods_id)
    response = admin.patch(
        f"{ADMIN}/{goods_id}", json={"title": "바뀌면 안 됨", "total_investing_amount": 599}
    )
    assert response.status_code == 409
    assert code(response) == "TOTAL_BELOW_INVESTED"
    assert "600" in response.json()["detail"]
    assert stored(database_url, goods_id) == before
    assert counters(database_url, goods_id) == (600, 1)
    # down to exactly what is invested is allowed: the product is then sold out
    sold_out = admin.patch(f"{ADMIN}/{goods_id}", json={"total_investing_amount": 600}).json()
    assert (sold_out["total_investing_amount"], sold_out["state"]) == (600, "sold_out")


def test_change_of_an_unknown_product_is_404(admin: httpx.Client) -> None:
    response = admin.patch(f"{ADMIN}/987654321", json={"status": False})
    assert response.status_code == 404 and code(response) == "GOODS_NOT_FOUND"


@pytest.mark.parametrize("goods_id", ["abc", "0", "-1", "99999999999999999999"])
def test_change_with_an_invalid_goods_id_is_400(admin: httpx.Client, goods_id: str) -> None:
    response = admin.patch(f"{ADMIN}/{goods_id}", json={"status": False})
    assert response.status_code == 400 and code(response) == "INVALID_GOODS_ID"


def test_a_period_change_that_would_invert_the_stored_period_is_refused(
    admin: httpx.Client, database_url: str
) -> None:
    goods_id = create_goods(
        database_url, started_at="'2033-01-10 00:00:00'", finished_at="'2033-01-20 00:00:00'"
    )
    before = stored(database_url, goods_id)
    for change in ({"finished_at": "2033-01-10 00:00:00"}, {"started_at": "2033-01-21 00:00:00"}):
        response = admin.patch(f"{ADMIN}/{goods_id}", json=change)
        assert response.status_code == 400 and code(response) == "INVALID_GOODS", change
    assert stored(database_url, goods_id) == before


# --- validation ---------------------------------------------------------------------------------

INVALID_CREATES = [
    {k: v for k, v in NEW.items() if k != "title"},
    {k: v for k, v in NEW.items() if k != "total_investing_amount"},
    {k: v for k, v in NEW.items() if k != "started_at"},
    {k: v for k, v in NEW.items() if k != "finished_at"},
    {**NEW, "title": ""},
    {**NEW, "title": "   "},
    {**NEW, "title": "가" * 31},
    {**NEW, "title": 12},
    {**NEW, "title": "줄\n바꿈"},
    {**NEW, "total_investing_amount": 0},
    {**NEW, "total_investing_amount": -5},
    {**NEW, "total_investing_amount": 1.5},
    {**NEW, "total_investing_amount": "1000"},
    {**NEW, "total_investing_amount": True},
    {**NEW, "total_investing_amount": 2**53},
    {**NEW, "started_at": "2031-03-01"},
    {**NEW, "started_at": "2031-02-30 00:00:00"},
    {**NEW, "finished_at": 20310331},
    {**NEW, "finished_at": NEW["started_at"]},
    {**NEW, "finished_at": "2031-02-01 00:00:00"},
    {**NEW, "status": "yes"},
    {**NEW, "goods_id": 5},
]


@pytest.mark.parametrize("body", INVALID_CREATES)
def test_every_invalid_create_is_400_invalid_goods(
    admin: httpx.Client, body: dict[str, Any]
) -> None:
    response = admin.post(ADMIN, json=body)
    assert response.status_code == 400, response.text
    assert code(response) == "INVALID_GOODS"


@pytest.mark.parametrize("content", [b"", b"[]", b"not json", b'"text"', b"null"])
def test_a_body_that_is_not_a_json_object_is_400_invalid_body(
    admin: httpx.Client, content: bytes
) -> None:
    for response in (
        admin.post(ADMIN, content=content),
        admin.patch(f"{ADMIN}/1", content=content),
    ):
        assert response.status_code == 400 and code(response) == "INVALID_BODY"


@pytest.mark.parametrize(
    "body",
    [{}, {"title": None}, {"title": ""}, {"total_investing_amount": 0}, {"status": 1},
     {"started_at": "x"}, {"started_at": "2031-01-02 00:00:00", "finished_at": "2031-01-01 00:00:00"},
     {"unknown": 1}, {"category": "land"}, {"category": None}, {"min_amount": 0},
     {"min_amount": "1"}, {"amount_unit": -5}, {"amount_unit": 1.5}, {"repaid": "yes"},
     {"repaid": 1}],
)  # fmt: skip
def test_every_invalid_change_is_400_and_changes_nothing(
    admin: httpx.Client, database_url: str, body: dict[str, Any]
) -> None:
    goods_id = create_goods(database_url)
    before = stored(database_url, goods_id)
    response = admin.patch(f"{ADMIN}/{goods_id}", json=body)
    assert response.status_code == 400 and code(response) == "INVALID_GOODS"
    assert stored(database_url, goods_id) == before


def test_an_oversized_body_is_413(admin: httpx.Client) -> None:
    response = admin.post(ADMIN, content=b"{" + b" " * 20000 + b"}")
    assert response.status_code == 413 and code(response) == "PAYLOAD_TOO_LARGE"


def test_openapi_documents_the_admin_api(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    create = spec["paths"][ADMIN]["post"]
    change = spec["paths"][f"{ADMIN}/{{goods_id}}"]["patch"]
    assert set(create["responses"]) == {"201", "400", "401", "413", "415", "503"}
    assert set(change["responses"]) == {"200", "400", "401", "404", "409", "413", "415", "503"}
    assert create["security"] == [{"adminToken": []}] and change["security"] == [{"adminToken": []}]
    assert spec["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"
    schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["title", "total_investing_amount", "started_at", "finished_at"]
    codes = spec["components"]["schemas"]["ProblemDetails"]["properties"]["code"]["enum"]
    assert {"UNAUTHORIZED", "INVALID_GOODS", "TOTAL_BELOW_INVESTED"} <= set(codes)


# --- command line -------------------------------------------------------------------------------


def goods_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "goods", *args],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_cli_add_list_close(database_url: str, client: httpx.Client) -> None:
    added = goods_cli(database_url, "add", "--title", "명령줄 상품", "--total", "300000",
                      "--start", "2034-05-01 10:00:00", "--finish", "2034-05-31 18:00:00")  # fmt: skip
    assert added.returncode == 0, added.stderr
    product = orjson.loads(added.stdout)
    assert (product["title"], product["total_investing_amount"], product["state"]) == (
        "명령줄 상품",
        300000,
        "upcoming",
    )
    assert (product["started_at"], product["finished_at"]) == (
        "2034-05-01 10:00:00",
        "2034-05-31 18:00:00",
    )
    assert {key: product[key] for key in RULES} == RULES
    assert listed(
        client, product["goods_id"], "2034-05-01 00:00:00", "2034-06-01 00:00:00"
    ) == item(product)

    listing = goods_cli(database_url, "list")
    assert listing.returncode == 0, listing.stderr
    products = [orjson.loads(line) for line in listing.stdout.splitlines()]
    assert product in products
    assert [p["goods_id"] for p in products] == sorted(p["goods_id"] for p in products)

    closed = goods_cli(database_url, "close", str(product["goods_id"]))
    assert closed.returncode == 0, closed.stderr
    assert orjson.loads(closed.stdout) == {**product, "status": False, "state": "closed"}
    assert (
        psql(
            database_url,
            f"SELECT status FROM investment_goods WHERE goods_id = {product['goods_id']}",
        )
        == "f"
    )


def add_args(
    title: str = "x",
    total: str = "10",
    start: str = "2034-01-01 00:00:00",
    finish: str = "2034-02-01 00:00:00",
) -> list[str]:
    """`goods add`'s arguments: a valid product but for what a case changes."""
    return ["add", "--title", title, "--total", total, "--start", start, "--finish", finish]


@pytest.mark.parametrize(
    ("args", "returncode", "message"),
    [
        (add_args(total="0"), 2, "INVALID_GOODS"),
        (add_args(start="2034-02-01 00:00:00", finish="2034-01-01 00:00:00"), 2, "INVALID_GOODS"),
        (add_args(title="가" * 31), 2, "INVALID_GOODS"),
        (add_args(start="soon"), 2, "INVALID_GOODS"),
        (add_args(total="ten"), 2, "invalid int"),
        (["close", "987654321"], 1, "GOODS_NOT_FOUND"),
        (["close", "0"], 2, "INVALID_GOODS_ID"),
    ],
)
def test_cli_refuses_invalid_input(
    database_url: str, args: list[str], returncode: int, message: str
) -> None:
    count = psql(database_url, "SELECT count(*) FROM investment_goods")
    done = goods_cli(database_url, *args)
    assert done.returncode == returncode, (done.stdout, done.stderr)
    assert message in done.stderr
    assert done.stdout == ""
    assert psql(database_url, "SELECT count(*) FROM investment_goods") == count


def test_cli_needs_a_database_url() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "service", "goods", "list"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "DATABASE_URL" in done.stderr
