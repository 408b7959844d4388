"""The outbox (sql/migrations/011_outbox.sql and 014_outbox_calls.sql, written by invest_many())
and the relay's rounds (sql/queries.sql `relay-round`, sql/migrations/013_outbox_rounds.sql):
event_id order is commit order, the counters each event carries are the product's right after
it, and nothing is written while no relay is configured."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import psqlpy
import pytest

from bench.events import outbox as outbox_events
from service.relay import Session, events_of
from service.settings import load_settings
from service.sql import queries
from tests.support import (
    create_goods,
    database_date_style,
    drop_database,
    fresh_user,
    ledger_dates,
    migrate,
    migrated_database,
    new_database,
    psql,
)


@pytest.fixture(scope="module")
def outbox_database(postgres_server: str) -> Iterator[str]:
    """A database of this module's own, with a relay configured (seen_at set)."""
    with migrated_database(postgres_server) as url:
        psql(url, "UPDATE investment_event_relay SET seen_at = now()")
        yield url


def relay_round(url: str, stored: int, limit: int = 10_000) -> list[dict[str, object]]:
    """`relay-round` as the relay runs it, JetStream holding up to `stored`: the events it
    answers as the relay renders them (`events_of`: event_id, subject, the body's fields,
    recorded_at)."""
    query = queries()["relay-round"].replace("$1", f"{stored}::bigint").replace("$2", str(limit))
    rows = []
    for line in psql(url, query).splitlines():
        first_id, type_, at, recorded_at, *arrays = line.split("\t")
        columns = [[int(value) for value in array.strip("{}").split(",")] for array in arrays]
        rows.append((int(first_id), type_, at, float(recorded_at), *columns))
    answered = []
    for event in events_of(rows, stored, limit):
        body = json.loads(event.body)
        assert body["event_id"] == event.event_id and event.subject == f"investments.{body['type']}"
        answered.append({**body, "recorded_at": event.recorded_at})
    return answered


def number(url: str) -> list[dict[str, object]]:
    """One round after every event numbered so far was published: the events it numbered."""
    return relay_round(url, int(psql(url, "SELECT last_event_id FROM investment_event_relay")))


def outbox_rows(url: str) -> int:
    return int(psql(url, "SELECT count(*) FROM investment_event"))


def events(numbered: list[dict[str, object]], goods: set[int]) -> list[tuple[int, ...]]:
    """(event_id, investment_id, user_id, goods_id, amount, current, investors) of `goods`."""
    fields = ("event_id", "investment_id", "user_id", "goods_id", "amount",
              "current_investing_amount", "investor_count")  # fmt: skip
    return [tuple(int(e[f]) for f in fields) for e in numbered if e["goods_id"] in goods]  # type: ignore[call-overload]


def invest_sql(
    goods: list[int], users: list[int], amounts: list[int], wait_ms: str = "NULL"
) -> str:
    return (
        "SELECT count(*) FROM invest_many("
        f"ARRAY{goods}::bigint[], ARRAY{users}::bigint[], ARRAY{amounts}::bigint[], NULL, NULL,"
        f" {wait_ms})"
    )


def test_one_event_per_ledger_row_with_the_counters_right_after_it(outbox_database: str) -> None:
    url = outbox_database
    goods_id = create_goods(url, total=100)
    a, b, c = fresh_user(), fresh_user(), fresh_user()
    psql(url, invest_sql([goods_id], [a], [10]))
    # a again (already an investor), b twice (new, then not), c asks beyond the total: the
    # remainder; a last request gets nothing and makes no event.
    psql(url, invest_sql([goods_id] * 5, [a, b, b, c, a], [5, 20, 5, 500, 1]))
    numbered = events(number(url), {goods_id})
    rows = [r[2:] for r in numbered]
    assert rows == [
        (a, goods_id, 10, 10, 1),
        (a, goods_id, 5, 15, 1),
        (b, goods_id, 20, 35, 2),
        (b, goods_id, 5, 40, 2),
        (c, goods_id, 60, 100, 3),
    ]
    ledger = psql(
        url, f"SELECT id FROM user_investment_goods WHERE goods_id = {goods_id} ORDER BY id"
    )
    assert [r[1] for r in numbered] == list(map(int, ledger.split()))
    assert (
        psql(
            url,
            f"SELECT current_investing_amount, investor_count FROM investment_goods WHERE goods_id = {goods_id}",
        )
        == "100\t3"
    )


def test_event_ids_follow_commit_order_not_the_order_rows_were_written(
    outbox_database: str,
) -> None:
    """T1 writes its event first (smaller seq) but commits last; T2's event is numbered before
    T1 commits (T1's row is invisible), and T1's after: event_id order is commit order. A third
    call on T1's product waits for T1's row lock, so it commits after T1 and is numbered after."""
    url = outbox_database
    first, second = create_goods(url), create_goods(url)
    u1, u2, u3 = fresh_user(), fresh_user(), fresh_user()

    async def scenario() -> list[list[dict[str, object]]]:
        c1, c2, c3 = [await psqlpy.connect(dsn=url) for _ in range(3)]
        t1, t2 = c1.transaction(), c2.transaction()
        await t1.begin()
        await t1.execute(invest_sql([first], [u1], [1]))  # seq n, uncommitted
        await t2.begin()
        await t2.execute(invest_sql([second], [u2], [2]))  # seq n+1
        await t2.commit()
        numbered = [number(url)]  # T2 alone
        waiting = asyncio.ensure_future(c3.execute(invest_sql([first], [u3], [3], "5000")))
        await asyncio.sleep(0.3)  # it waits for T1's row lock
        assert not waiting.done()
        await t1.commit()
        await waiting
        numbered.append(number(url))  # T1, then the waiting call
        for conn in (c1, c2, c3):
            conn.close()
        return numbered

    rounds = asyncio.run(scenario())
    assert [len(r) for r in rounds] == [1, 2]
    rows = events(rounds[0] + rounds[1], {first, second})
    assert [(r[2], r[6]) for r in rows][-3:] == [(u2, 1), (u1, 1), (u3, 2)]
    ids = [r[0] for r in rows[-3:]]
    assert ids == list(range(ids[0], ids[0] + 3))  # consecutive: none skipped


def test_numbers_are_never_reused_or_skipped(outbox_database: str) -> None:
    url = outbox_database
    goods_id = create_goods(url)
    psql(url, invest_sql([goods_id] * 3, [fresh_user() for _ in range(3)], [1, 1, 1]))
    three = number(url)
    assert number(url) == []  # nothing left: writes nothing
    last = int(psql(url, "SELECT last_event_id FROM investment_event_relay"))
    assert [e["event_id"] for e in three] == [last - 2, last - 1, last]
    assert outbox_events(url) == 0  # published: deleted
    psql(url, invest_sql([goods_id], [fresh_user()], [1]))
    assert [e["event_id"] for e in number(url)] == [last + 1]


def test_nothing_is_written_without_a_relay_and_an_abandoned_outbox_is_emptied(
    postgres_server: str,
) -> None:
    with migrated_database(postgres_server) as url:
        goods_id = create_goods(url)
        psql(url, invest_sql([goods_id], [fresh_user()], [1]))
        assert outbox_events(url) == 0
        psql(url, "UPDATE investment_event_relay SET seen_at = now() - interval '25 hours'")
        psql(url, invest_sql([goods_id] * 2, [fresh_user(), fresh_user()], [1, 1]))
        assert (outbox_events(url), outbox_rows(url)) == (2, 1)  # one call
        abandon = queries()["outbox-abandon"].replace("$1", "24")
        assert psql(url, abandon) == "2"
        assert psql(url, "SELECT seen_at IS NULL FROM investment_event_relay") == "t"
        psql(url, invest_sql([goods_id], [fresh_user()], [1]))
        assert outbox_events(url) == 0
        # A relay seen within the hours keeps its outbox.
        psql(url, "UPDATE investment_event_relay SET seen_at = now()")
        psql(url, invest_sql([goods_id], [fresh_user()], [1]))
        assert psql(url, abandon) == "0"
        assert outbox_events(url) == 1


def test_a_round_is_answered_in_parts_and_again_with_the_same_numbers(
    outbox_database: str,
) -> None:
    """A backlog is numbered as one round and answered `limit` events at a time after the
    stream's last; what JetStream holds is deleted (rows, then the round once wholly held); a
    round not acknowledged is answered again with the same numbers; nothing new is numbered
    while a numbered event is not in JetStream, and then in one round after it."""
    url = outbox_database
    goods_id = create_goods(url)
    number(url)  # whatever the other tests left
    base = int(psql(url, "SELECT last_event_id FROM investment_event_relay"))
    for _ in range(5):
        psql(url, invest_sql([goods_id] * 4, [fresh_user() for _ in range(4)], [1] * 4))
    first = relay_round(url, base, limit=8)
    assert [e["event_id"] for e in first] == list(range(base + 1, base + 9))
    assert relay_round(url, base, limit=8) == first  # not acknowledged: the same again
    psql(url, invest_sql([goods_id], [fresh_user()], [1]))  # after the round: not in it
    second = relay_round(url, base + 8, limit=8)
    assert [e["event_id"] for e in second] == list(range(base + 9, base + 17))
    assert [e["investment_id"] for e in first + second] == sorted(
        e["investment_id"]
        for e in first + second  # type: ignore[type-var]
    )
    assert (outbox_events(url), outbox_rows(url)) == (13, 4)  # 2 calls deleted, 3 + 1 left
    third = relay_round(url, base + 12, limit=8)  # acknowledged up to 12 only: from 13
    assert [e["event_id"] for e in third] == list(range(base + 13, base + 21))
    assert psql(url, "SELECT count(*) FROM investment_event_round") == "1"
    fourth = relay_round(url, base + 20, limit=8)  # the round wholly held: the next one
    assert [e["event_id"] for e in fourth] == [base + 21]
    assert (outbox_events(url), outbox_rows(url)) == (1, 1)
    assert psql(url, "SELECT first_event_id, seqs[1] > 0 FROM investment_event_round") == (
        f"{base + 21}\tt"
    )
    assert relay_round(url, base + 21) == []
    assert psql(url, "SELECT count(*) FROM investment_event_round") == "0"


def test_a_round_answered_in_parts_may_stop_inside_a_call(outbox_database: str) -> None:
    """A call's events share one outbox row (sql/migrations/014_outbox_calls.sql): a round
    answered in parts, or acknowledged in parts, may stop inside it; the row stays until
    JetStream holds its last event, and the next round answers its events after the stream's
    last with the numbers they had, then the next call's."""
    url = outbox_database
    goods_id = create_goods(url)
    number(url)  # whatever the other tests left
    base = int(psql(url, "SELECT last_event_id FROM investment_event_relay"))
    users = [fresh_user() for _ in range(8)]
    psql(url, invest_sql([goods_id] * 5, users[:5], [1] * 5))  # one call: a row of 5
    psql(url, invest_sql([goods_id] * 3, users[5:], [1] * 3))  # a row of 3
    assert (outbox_events(url), outbox_rows(url)) == (8, 2)

    def answered(stored: int, limit: int) -> list[tuple[int, int]]:
        return [(int(e["event_id"]), int(e["user_id"]))  # type: ignore[call-overload]
                for e in relay_round(url, stored, limit)]  # fmt: skip

    numbered = [(base + 1 + i, user) for i, user in enumerate(users)]
    assert answered(base, 3) == numbered[:3]
    assert answered(base + 3, 3) == numbered[3:6]  # across the two rows
    assert (outbox_events(url), outbox_rows(url)) == (8, 2)  # the first row not wholly held
    assert answered(base + 4, 3) == numbered[4:7]  # held up to 4 only: from 5, same numbers
    assert answered(base + 5, 3) == numbered[5:8]  # the first row wholly held: deleted
    assert (outbox_events(url), outbox_rows(url)) == (3, 1)
    assert answered(base + 8, 3) == []
    assert (outbox_events(url), outbox_rows(url)) == (0, 0)
    assert psql(url, "SELECT count(*) FROM investment_event_round") == "0"


def test_rows_written_before_a_call_held_its_events_are_published_with_their_numbers(
    postgres_server: str,
) -> None:
    """sql/migrations/014_outbox_calls.sql on an outbox of a row per event: a round numbered
    before it, answered in part, keeps its numbers; rows not numbered yet are numbered after it,
    then a call's row after them."""
    from service.ops.migrations import migrate as apply
    from service.sql import migrations

    url = new_database(postgres_server)
    try:
        asyncio.run(apply(url, "UTC", pending=migrations()[:13], functions=[]))
        assert psql(url, "SELECT max(version) FROM schema_migrations") == "13"
        psql(url, """
            UPDATE investment_event_relay SET last_event_id = 41, seen_at = now();
            INSERT INTO investment_event (type, investment_id, user_id, goods_id, amount, at,
                                          current_investing_amount, investor_count)
            SELECT 'accepted', 100 + n, 200 + n, 7, 10 * n, now(), 1000 + n, n
            FROM generate_series(1, 5) n;
            INSERT INTO investment_event_round (first_event_id, seqs, low_xid)
            SELECT 39, array_agg(seq ORDER BY seq), min(xid) FROM investment_event
            WHERE investment_id <= 103;
        """)  # fmt: skip
        migrate(url)  # the rest, and the functions of today
        goods_id = create_goods(url)
        user = fresh_user()
        psql(url, invest_sql([goods_id] * 2, [user, user], [1, 2]))

        def answered(stored: int) -> list[tuple[object, ...]]:
            return [(e["event_id"], e["investment_id"], e["investor_count"])
                    for e in relay_round(url, stored)]  # fmt: skip

        assert answered(39) == [(40, 102, 2), (41, 103, 3)]  # the round's rest
        fresh = answered(41)  # then one round of the rest, the call's row last
        assert fresh[:2] == [(42, 104, 4), (43, 105, 5)]
        assert [(e, n) for e, _, n in fresh[2:]] == [(44, 1), (45, 1)]
        assert relay_round(url, 45) == []
        assert (outbox_events(url), outbox_rows(url)) == (0, 0)
    finally:
        drop_database(postgres_server, url)


def test_a_cancellation_is_an_event_with_the_counters_right_after_it(outbox_database: str) -> None:
    """cancel_investment() writes its event like invest_many(): type cancelled, the cancelled
    amount, the product's counters after it; a user whose every investment is cancelled leaves
    investor_count and, investing again, is a newcomer again."""
    url = outbox_database
    goods_id = create_goods(url, total=1000)
    a, b = fresh_user(), fresh_user()
    psql(url, invest_sql([goods_id] * 3, [a, b, a], [10, 20, 30]))
    first_a = int(psql(url, f"SELECT min(id) FROM user_investment_goods WHERE user_id = {a}"))
    b_id = int(psql(url, f"SELECT id FROM user_investment_goods WHERE user_id = {b}"))
    assert psql(url, f"SELECT outcome FROM cancel_investment({a}, {first_a})") == "done"
    assert psql(url, f"SELECT outcome FROM cancel_investment({b}, {b_id})") == "done"
    assert psql(url, f"SELECT outcome FROM cancel_investment({b}, {b_id})") == "replay"
    psql(url, invest_sql([goods_id], [b], [5]))  # b is an investor again
    fields = ("type", "investment_id", "user_id", "amount", "current_investing_amount",
              "investor_count")  # fmt: skip
    rows = ["\t".join(str(e[f]) for f in fields) for e in number(url) if e["goods_id"] == goods_id]
    last = rows[-1].split("\t")
    assert [r.split("\t")[0] for r in rows] == [
        "accepted", "accepted", "accepted", "cancelled", "cancelled", "accepted",
    ]  # fmt: skip
    assert [tuple(r.split("\t")[3:]) for r in rows] == [
        ("10", "10", "1"), ("20", "30", "2"), ("30", "60", "2"),
        ("10", "50", "2"),  # a still holds 30
        ("20", "30", "1"),  # b held nothing else
        ("5", "35", "2"),
    ]  # fmt: skip
    assert rows[3].split("\t")[1:3] == [str(first_a), str(a)]
    assert last[0] == "accepted"


def test_a_database_reloaded_into_another_cluster_still_finds_its_new_rows(
    outbox_database: str,
) -> None:
    """Rows are looked for from the last numbering's xmin on (transaction ids only grow within a
    cluster); a database reloaded elsewhere (pg_dump and restore) keeps that floor from the old
    cluster while its new transactions get lower ids: a floor beyond every id handed out counts
    as none, and the new rows are numbered."""
    url = outbox_database
    number(url)
    psql(url, "UPDATE investment_event_relay SET numbered_xmin = '9000000000000'")
    goods_id = create_goods(url)
    psql(url, invest_sql([goods_id], [fresh_user()], [3]))
    assert [e["amount"] for e in number(url)] == [3]


def test_an_events_at_is_its_ledger_rows_date_whatever_the_databases_date_style(
    postgres_server: str,
) -> None:
    """`at` is rendered by a cast to text, whose form the session's DateStyle decides: the relay's
    session pins it to ISO (service/db.py `connection_options`), so a database set otherwise
    still publishes the contract's form, the ledger row's date in the display zone."""
    with migrated_database(postgres_server) as url:
        psql(url, "UPDATE investment_event_relay SET seen_at = now()")
        goods_id, user = create_goods(url), fresh_user()
        psql(url, invest_sql([goods_id], [user], [5]))
        settings = load_settings({"DATABASE_URL": url, "TIMEZONE": "UTC"})

        async def answered() -> list[tuple[object, ...]]:
            session = await Session.open(settings)
            try:
                return await session.rows("relay-round", [0, 100])
            finally:
                session.close()

        with database_date_style(url, "SQL, DMY"):
            assert "/" in psql(url, "SELECT now()::timestamp::text")  # 'SQL' style here
            [event] = events_of(asyncio.run(answered()), 0, 100)
        assert json.loads(event.body)["at"] == ledger_dates(url, user)
