"""Events reach NATS JetStream exactly once, in event_id order (docs/reliability.md "Events"):
through a relay killed with SIGKILL, NATS killed and restarted, the database's connections
terminated and two relays racing for the lock; the relay's lag stays bounded; `run` starts the
relay, the service answers while NATS is down, and /metrics shows the backlog."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from service.relay import Event, Publisher, PublishFailed
from service.settings import Settings
from tests.events import (
    InvestLoad,
    RelayProcess,
    active_relay_pid,
    backlog,
    nats_server,
    relay_settings,
    stream_config,
    stream_messages,
)
from tests.support import (
    create_goods,
    fresh_user,
    migrated_database,
    psql,
    running_service,
    wait_until,
)

pytestmark = pytest.mark.system

TOTAL = 10**12  # never sold out


def relay_announced(url: str) -> bool:
    return psql(url, "SELECT seen_at IS NOT NULL FROM investment_event_relay") == "t"


def drained(url: str, nats_url: str) -> bool:
    """The outbox is empty and the stream holds every number handed out."""
    if backlog(url)[0]:
        return False
    last = int(psql(url, "SELECT last_event_id FROM investment_event_relay"))
    messages = stream_messages(nats_url)
    return bool(messages) and messages[-1][2]["event_id"] == last


def check_exactly_once_in_order(url: str, nats_url: str, goods: list[int]) -> int:
    """Every ledger row and every cancellation of `goods` is in the stream once, numbered 1..N
    in stream order; replaying each product's events in that order gives, at every event, the
    counters it carries (so the order is the order the product's calls committed), ending at
    the product's own."""
    messages = stream_messages(nats_url)
    ids = [body["event_id"] for _, _, body in messages]
    assert ids == list(range(1, len(ids) + 1)), "event_ids in stream order: 1..N, none twice"
    for subject, headers, body in messages:
        assert headers["Nats-Msg-Id"] == str(body["event_id"])
        assert subject == f"investments.{body['type']}"
    where = f"goods_id IN ({', '.join(map(str, goods))})"
    ledger = {
        (int(i), "accepted"): (int(u), int(g), int(a))
        for i, u, g, a in (
            line.split("\t")
            for line in psql(
                url,
                f"SELECT id, user_id, goods_id, user_investing_amount FROM user_investment_goods"
                f" WHERE {where}",
            ).splitlines()
        )
    } | {
        (int(i), "cancelled"): (int(u), int(g), int(a))
        for i, u, g, a in (
            line.split("\t")
            for line in psql(
                url,
                "SELECT investment_id, user_id, goods_id, cancelled_amount"
                f" FROM user_investment_cancellation WHERE {where}",
            ).splitlines()
        )
    }
    published = [(body["investment_id"], body["type"]) for _, _, body in messages]
    assert sorted(published) == sorted(ledger), "each investment and cancellation once"
    amount: dict[int, int] = defaultdict(int)
    live: dict[tuple[int, int], int] = defaultdict(int)
    for _, _, body in messages:
        user, goods_id, value = ledger[(body["investment_id"], body["type"])]
        assert (body["user_id"], body["goods_id"], body["amount"]) == (user, goods_id, value)
        sign = 1 if body["type"] == "accepted" else -1
        amount[goods_id] += sign * value
        live[(goods_id, user)] += sign * value
        investors = sum(1 for (g, _), held in live.items() if g == goods_id and held > 0)
        assert (body["current_investing_amount"], body["investor_count"]) == (
            amount[goods_id], investors,
        ), f"event {body['event_id']}: the counters right after it, in commit order"  # fmt: skip
    for goods_id in amount:
        final = psql(
            url,
            "SELECT current_investing_amount, investor_count FROM investment_goods"
            f" WHERE goods_id = {goods_id}",
        )
        investors = sum(1 for (g, _), held in live.items() if g == goods_id and held > 0)
        assert final == f"{amount[goods_id]}\t{investors}"
    return len(ids)


def test_every_event_is_published_once_in_order_through_kills_restarts_and_a_race(
    postgres_server: str,
) -> None:
    with migrated_database(postgres_server) as url, nats_server() as nats:
        goods = [create_goods(url, total=TOTAL) for _ in range(5)]
        env = relay_settings(url, nats.url)
        relays = [RelayProcess(env, "a"), RelayProcess(env, "b")]  # racing for the lock
        load = InvestLoad(url, goods)
        try:
            wait_until(lambda: relay_announced(url), "a relay active", 15)
            load.start()
            wait_until(lambda: load.done >= 50, "invests under way", 10)

            # The active relay killed mid-run; a replacement joins the race.
            active = active_relay_pid(url)
            victim = next(r for r in relays if r.pid == active)
            victim.kill()
            relays.append(RelayProcess(env, "c"))
            wait_until(
                lambda: active_relay_pid(url) not in (None, active), "the other relay takes over"
            )
            time.sleep(0.5)

            # NATS killed and restarted (same store) while events keep coming.
            nats.stop(signal.SIGKILL)
            time.sleep(1.0)
            nats.start()
            time.sleep(1.0)

            # Every session of the database cut: the relays', the load's.
            psql(
                url,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            time.sleep(1.0)
            load.stop()
            wait_until(lambda: drained(url, nats.url), "every event published", 20)
            published = check_exactly_once_in_order(url, nats.url, goods)
            assert published >= load.done > 100  # each call is granted at least once
            assert load.cancelled > 10
            print(
                f"{published} events, {load.done} invest calls and {load.cancelled}"
                f" cancellations ({load.failed} failed) through faults"
            )
        finally:
            load.stop()
            for relay in relays:
                relay.stop()
        config = stream_config(nats.url)
        storage = getattr(config.storage, "value", config.storage)
        assert (storage, config.duplicate_window, config.num_replicas) == ("file", 120.0, 1)
        assert config.max_age == 7 * 24 * 3600.0


def test_the_relays_lag_stays_bounded_under_steady_invests(postgres_server: str) -> None:
    with migrated_database(postgres_server) as url, nats_server() as nats:
        goods = [create_goods(url, total=TOTAL) for _ in range(3)]
        relay = RelayProcess(relay_settings(url, nats.url), "lag")
        load = InvestLoad(url, goods)
        try:
            wait_until(lambda: relay_announced(url), "the relay active", 15)
            load.start()
            ages = []
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                ages.append(backlog(url)[1])
                time.sleep(0.1)
            load.stop()
            assert load.done > 50
            assert max(ages) < 2.0, f"oldest unpublished event's age: {max(ages):.3f}s"
            wait_until(lambda: drained(url, nats.url), "the outbox drained", 5)
        finally:
            load.stop()
            relay.stop()
        check_exactly_once_in_order(url, nats.url, goods)


def metric(base_url: str, name: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=5).text
    values = [
        float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(name + " ")
    ]
    assert values, f"{name} not in /metrics"
    return max(values)


def test_run_starts_the_relay_which_waits_for_nats_while_the_service_answers(
    postgres_server: str,
) -> None:
    with migrated_database(postgres_server) as url, nats_server() as nats:
        nats.stop()  # down when the service starts
        goods_id = create_goods(url, total=TOTAL)
        with running_service(url, NATS_URL=nats.url, NATS_PUBLISH_TIMEOUT="1") as service:
            wait_until(lambda: relay_announced(url), "the relay active", 15)
            user = fresh_user()
            for amount in (5, 7):
                response = httpx.post(
                    f"{service.base_url}/v1/api/investment/user/goods",
                    json={"goodsId": goods_id, "investmentAmount": amount},
                    headers={"X-USER-ID": str(user)},
                    timeout=10,
                )
                assert response.status_code in (200, 201), response.text
            wait_until(
                lambda: metric(service.base_url, "events_unpublished") == 2,
                "/metrics: 2 unpublished",
            )
            wait_until(
                lambda: metric(service.base_url, "events_oldest_unpublished_age_seconds") > 1.0,
                "/metrics: the oldest unpublished event ages",
            )
            assert metric(service.base_url, "events_relay_active") == 1
            nats.start()
            wait_until(lambda: drained(url, nats.url), "published once NATS is back", 15)
            wait_until(
                lambda: metric(service.base_url, "events_unpublished") == 0, "/metrics: none left"
            )
            assert metric(service.base_url, "events_published_total") == 2
        bodies = [body for _, _, body in stream_messages(nats.url)]
        assert [(b["event_id"], b["amount"], b["current_investing_amount"]) for b in bodies] == [
            (1, 5, 5),
            (2, 7, 12),
        ]
        assert set(bodies[0]) == {
            "event_id", "type", "investment_id", "user_id", "goods_id", "amount", "at",
            "current_investing_amount", "investor_count",
        }  # fmt: skip


def test_a_relay_publishes_nothing_into_a_stream_another_database_filled(
    postgres_server: str,
) -> None:
    """The relay skips events the stream already holds (by event_id): a stream of another
    database's events would make it skip this one's. It refuses, says so, and publishes nothing."""
    with (
        migrated_database(postgres_server) as first,
        migrated_database(postgres_server) as second,
        nats_server() as nats,
    ):
        relay = RelayProcess(relay_settings(first, nats.url), "first")
        try:
            wait_until(lambda: relay_announced(first), "the first relay active", 15)
            psql(
                first,
                f"SELECT count(*) FROM invest_many(ARRAY[{create_goods(first)}]::bigint[],"
                f" ARRAY[{fresh_user()}]::bigint[], ARRAY[5]::bigint[], NULL)",
            )
            wait_until(lambda: drained(first, nats.url), "the first database's event published")
        finally:
            relay.stop()
        other = RelayProcess(relay_settings(second, nats.url), "second")
        try:
            wait_until(lambda: relay_announced(second), "the second relay active", 15)
            goods_id = create_goods(second)
            psql(
                second,
                f"SELECT count(*) FROM invest_many(ARRAY[{goods_id}]::bigint[],"
                f" ARRAY[{fresh_user()}]::bigint[], ARRAY[7]::bigint[], NULL)",
            )
            wait_until(lambda: "holds other events" in other.log(), "the refusal logged")
            time.sleep(0.5)
        finally:
            other.stop()
        assert backlog(second)[0] == 1  # kept for a stream of its own
        assert [body["amount"] for _, _, body in stream_messages(nats.url)] == [5]


def event(event_id: int) -> Event:
    return Event(event_id, "investments.accepted", f'{{"event_id":{event_id}}}', time.time())


def test_nats_server_runs_with_the_go_runtime_settings_of_the_deployment() -> None:
    """The nats-server of the tests and the bench runs as `just cluster` runs it: a collection at
    400 % heap growth under a soft limit of 1 GiB (docs/deploy.md "Events")."""
    with nats_server() as nats:
        assert nats.process is not None
        environ = Path(f"/proc/{nats.process.pid}/environ").read_bytes().split(b"\0")
        assert b"GOGC=400" in environ
        assert b"GOMEMLIMIT=1GiB" in environ


def test_a_round_is_acknowledged_only_when_its_whole_chain_is_stored() -> None:
    """Only a round's last message asks for an ack: a gap before it (a message lost) makes
    JetStream refuse everything after the gap, so the round fails and stores nothing out of
    order; rounds published again (a relay that lost its lock, acks lost) are duplicates."""

    async def scenario(nats_url: str) -> None:
        settings = Settings(nats_url=nats_url)
        publisher = await Publisher.open(settings, "test-key")
        try:
            await publisher.publish([event(n) for n in (1, 2, 3)])
            with pytest.raises(PublishFailed):
                await publisher.publish([event(n) for n in (5, 6, 7)])  # 4 never came
        finally:
            await publisher.close()
        again = await Publisher.open(settings, "test-key")  # a new connection: 3 is stored
        try:
            assert again.stored == 3
            await again.publish([event(n) for n in (2, 3)])  # duplicates, in a chain
            await again.publish([event(n) for n in (4, 5, 6, 7)])
        finally:
            await again.close()

    with nats_server() as nats:
        asyncio.run(scenario(nats.url))
        assert [b["event_id"] for _, _, b in stream_messages(nats.url)] == [1, 2, 3, 4, 5, 6, 7]


def test_a_database_behind_its_stream_publishes_nothing_until_told(postgres_server: str) -> None:
    """Restored to an earlier point, the database would hand out event_ids the stream already
    holds, and the relay would skip those events as stored: it refuses, says why, and goes on
    once the counter is moved past the stream's last event."""
    with migrated_database(postgres_server) as url, nats_server() as nats:
        relay = RelayProcess(relay_settings(url, nats.url), "ahead")
        try:
            wait_until(lambda: relay_announced(url), "the relay active", 15)
            goods_id = create_goods(url)
            for amount in (1, 2, 3):
                psql(
                    url,
                    f"SELECT count(*) FROM invest_many(ARRAY[{goods_id}]::bigint[],"
                    f" ARRAY[{fresh_user()}]::bigint[], ARRAY[{amount}]::bigint[], NULL)",
                )
            wait_until(lambda: drained(url, nats.url), "three events published")
        finally:
            relay.stop()
        psql(url, "UPDATE investment_event_relay SET last_event_id = 1")  # as if restored
        psql(
            url,
            f"SELECT count(*) FROM invest_many(ARRAY[{goods_id}]::bigint[],"
            f" ARRAY[{fresh_user()}]::bigint[], ARRAY[4]::bigint[], NULL)",
        )
        relay = RelayProcess(relay_settings(url, nats.url), "behind")
        try:
            wait_until(lambda: "holds events up to 3" in relay.log(), "the refusal logged")
            assert backlog(url)[0] == 1
            psql(url, "UPDATE investment_event_relay SET last_event_id = 3")  # the operator
            wait_until(lambda: backlog(url)[0] == 0, "published once told")
        finally:
            relay.stop()
        bodies = [body for _, _, body in stream_messages(nats.url)]
        assert [(b["event_id"], b["amount"]) for b in bodies] == [(1, 1), (2, 2), (3, 3), (4, 4)]
