"""The plain implementation the capacity stage measures the service against (bench/plain.py,
bench/plain/server.js): installed when missing, started as the bench starts it, and answering the
three APIs as the bench's load uses them, on the same database as the service."""

from __future__ import annotations

import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import orjson
import pytest

from bench import plain
from tests.support import (
    counters,
    create_goods,
    fresh_user,
    ledger_sum,
    migrated_database,
    psql,
    verify_ledger,
)

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(plain.missing() is not None, reason=f"{plain.missing()}"),
]


def call(request: urllib.request.Request | str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def invest(base: str, user: int, goods_id: int, amount: int) -> tuple[int, object]:
    return call(
        urllib.request.Request(
            f"{base}/v1/api/investment/user/goods",
            data=orjson.dumps({"goodsId": goods_id, "investmentAmount": amount}),
            headers={"X-USER-ID": str(user), "Content-Type": "application/json"},
            method="POST",
        )
    )


def mine(base: str, user: int, limit: int = 1000) -> tuple[int, object]:
    return call(
        urllib.request.Request(
            f"{base}/v1/api/investment/user/goods?limit={limit}", headers={"X-USER-ID": str(user)}
        )
    )


def test_the_plain_implementation_answers_the_three_apis(
    postgres_server: str, tmp_path: Path
) -> None:
    """On a database of its own: the cancellation below is a bare row (its bookkeeping left
    out), which the session database's verifier must never see."""
    plain.install()
    with migrated_database(postgres_server) as url:
        psql(url, plain.CREATE_INDEX)  # its own index, as the capacity stage builds it
        answers_the_three_apis(url, tmp_path)
        psql(url, plain.DROP_INDEX)
        assert psql(url, f"SELECT to_regclass('{plain.INDEX}')") == ""


def answers_the_three_apis(database_url: str, tmp_path: Path) -> None:
    goods_id = create_goods(database_url, total=1_000, title="평범한 상품")
    user, other = fresh_user(), fresh_user()
    with plain.PlainServer(database_url, 2, 4, tmp_path / "plain.log") as server:
        base = server.base_url
        assert len(server.worker_pids()) == 2  # one process per core, as asked
        assert call(f"{base}/healthz") == (200, {"status": "ok"})

        status, answer = invest(base, user, goods_id, 300)
        assert status == 200
        assert isinstance(answer, dict)
        assert (answer["investment_amount"], answer["current_investing_amount"]) == (300, 300)
        assert (answer["status"], answer["state"]) == (True, "recruiting")
        first_id = answer["investment_id"]
        status, answer = invest(base, other, goods_id, 5_000)  # crosses the total: the rest
        assert status == 200 and isinstance(answer, dict)
        assert (answer["investment_amount"], answer["state"]) == (700, "sold_out")
        status, answer = invest(base, user, goods_id, 10)  # sold out: nothing written
        assert status == 200 and isinstance(answer, dict)
        assert (answer["investment_amount"], answer["investment_id"]) == (0, None)
        assert invest(base, user, 10**9, 10)[0] == 404

        window = urlencode(
            {"started_at": "2000-01-01 00:00:00", "finished_at": "2999-01-01 00:00:00"}
        )
        status, products = call(f"{base}/v1/api/investment/goods?{window}")
        assert status == 200 and isinstance(products, list)
        [listed] = [p for p in products if p["goods_id"] == goods_id]
        assert (listed["current_investing_amount"], listed["investor_count"]) == (1_000, 2)
        assert listed["state"] == "sold_out"

        # One atomic statement per invest: 60 at once on a product of 1,000 never oversell it.
        rushed = create_goods(database_url, total=1_000)
        with ThreadPoolExecutor(max_workers=30) as pool:
            answers = list(pool.map(lambda n: invest(base, fresh_user(), rushed, 70), range(60)))
        granted = [a["investment_amount"] for status, a in answers if status == 200]  # type: ignore[index]
        assert len(granted) == 60 and sum(granted) == 1_000
        assert granted.count(70) == 14 and granted.count(20) == 1 and granted.count(0) == 45
        assert ledger_sum(database_url, rushed) == 1_000
        assert counters(database_url, rushed) == (1_000, 15)

        twice = create_goods(database_url, total=10**6)  # one investor, however many invests
        again = fresh_user()
        assert [invest(base, again, twice, 5)[0] for _ in range(3)] == [200] * 3
        assert counters(database_url, twice) == (15, 1)
        verify_ledger(database_url)  # what its invests wrote is consistent
        invest_again = create_goods(database_url, total=10**6)
        assert invest(base, user, invest_again, 50)[0] == 200
        psql(  # a cancelled investment is not listed, as in the service
            database_url,
            "INSERT INTO user_investment_cancellation (investment_id, user_id, goods_id,"
            " cancelled_amount, current_investing_amount, state)"
            " SELECT id, user_id, goods_id, user_investing_amount, 0, 'recruiting'"
            f" FROM user_investment_goods WHERE user_id = {user} AND goods_id = {invest_again}",
        )
        status, items = mine(base, user)
        assert status == 200 and isinstance(items, list)
        assert [(i["goods_id"], i["user_investing_amount"], i["investment_id"]) for i in items] == [
            (goods_id, 300, first_id)
        ]
        assert items[0]["title"] == "평범한 상품"
        assert mine(base, fresh_user())[0] == 404

    assert server.exited()
    assert ledger_sum(database_url, goods_id) == 1_000
    assert counters(database_url, goods_id) == (1_000, 2)
