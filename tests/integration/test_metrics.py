"""GET /metrics: request, invest, batch, pool and cache metrics, summed across worker processes."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ServiceProcess, create_goods, fresh_user, running_service, wait_until

Sample = tuple[str, frozenset[tuple[str, str]]]
LIST = "/v1/api/investment/goods"
WINDOW = {"started_at": "2000-01-01 00:00:00", "finished_at": "2099-12-31 00:00:00"}


def scrape(base_url: str) -> dict[Sample, float]:
    """Every sample of one scrape, on a connection of its own (any worker may answer)."""
    response = httpx.get(f"{base_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape_until(
    base_url: str, ready: Callable[[dict[Sample, float]], bool]
) -> dict[Sample, float]:
    """Scrape until `ready`: a worker adds its counts to the shared files once a second, so a
    scrape answered by another worker may lag that much."""
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(base_url)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def json_lines(service: ServiceProcess) -> list[bytes]:
    return [line for line in service.log_path.read_bytes().splitlines() if line.startswith(b"{")]


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_of(
    samples: dict[Sample, float], route: str, status: int, method: str = "GET"
) -> float:
    return value(samples, "http_requests_total", method=method, route=route, status=str(status))


def test_requests_are_counted_and_timed_per_route_template_and_status(
    client: httpx.Client, service: ServiceProcess, user: int
) -> None:
    before = scrape(service.base_url)
    assert client.get(LIST, params=WINDOW).status_code in (200, 404)
    assert client.get(LIST, params={"started_at": "nonsense"}).status_code == 400
    assert (
        client.get("/v1/api/investment/user/goods", headers={"X-USER-ID": str(user)}).status_code
        == 404
    )
    assert client.get("/v1/api/investment/no-such-thing-42").status_code == 404
    after = scrape(service.base_url)

    assert requests_of(after, LIST, 400) == requests_of(before, LIST, 400) + 1
    assert (
        requests_of(after, "/v1/api/investment/user/goods", 404)
        == requests_of(before, "/v1/api/investment/user/goods", 404) + 1
    )
    assert (
        requests_of(after, "(unmatched)", 404, "ANY")
        == requests_of(before, "(unmatched)", 404, "ANY") + 1
    )
    labels = {"method": "GET", "route": LIST, "status": "400"}
    assert (
        value(after, "http_request_duration_seconds_count", **labels)
        == value(before, "http_request_duration_seconds_count", **labels) + 1
    )
    assert value(after, "http_request_duration_seconds_bucket", le="+Inf", **labels) >= 1
    assert value(after, "http_request_duration_seconds_sum", **labels) > 0
    # bounded cardinality: raw paths never become label values
    assert not any("no-such-thing" in v for _, lbls in after for _, v in lbls)


def test_invest_outcomes_and_batch_sizes(
    client: httpx.Client, service: ServiceProcess, database_url: str
) -> None:
    goods_id = create_goods(database_url, total=1000)
    before = scrape(service.base_url)
    granted = []
    for _ in range(3):  # 600 in full, then the remaining 400 (partial), then nothing
        response = client.post(
            "/v1/api/investment/user/goods",
            headers={"X-USER-ID": str(fresh_user())},
            json={"goodsId": goods_id, "investmentAmount": 600},
        )
        granted.append(response.json()["investment_amount"])
    assert granted == [600, 400, 0]
    after = scrape(service.base_url)
    for outcome in ("full", "partial", "zero"):
        assert (
            value(after, "invest_outcomes_total", outcome=outcome)
            == value(before, "invest_outcomes_total", outcome=outcome) + 1
        )
    assert value(after, "invest_batch_size_count") >= value(before, "invest_batch_size_count") + 3
    assert value(after, "invest_batch_size_sum") >= value(before, "invest_batch_size_sum") + 3
    assert (
        value(after, "invest_batch_size_bucket", le="1.0")
        >= value(before, "invest_batch_size_bucket", le="1.0") + 3
    )


def test_where_a_request_waited_queue_pool_call_loop_and_collector(
    client: httpx.Client, service: ServiceProcess, database_url: str
) -> None:
    """The instruments for tails: each invest's and page's wait in its worker's queue, each
    database call's wait for a connection and its statement time, the event loop's lag (sampled
    every 50 ms) and the collector's pauses; each counted where it happens."""
    goods_id = create_goods(database_url, total=10**9)
    before = scrape(service.base_url)
    user = fresh_user()
    for _ in range(3):
        invest = client.post(
            "/v1/api/investment/user/goods",
            headers={"X-USER-ID": str(user)},
            json={"goodsId": goods_id, "investmentAmount": 1_000},
        )
        assert invest.status_code == 200
    page = client.get("/v1/api/investment/user/goods", headers={"X-USER-ID": str(user)})
    assert page.status_code == 200
    time.sleep(0.2)  # a few lag samples

    def counted(samples: dict[Sample, float], name: str, **labels: str) -> float:
        return value(samples, f"{name}_count", **labels) - value(before, f"{name}_count", **labels)

    after = scrape_until(
        service.base_url, lambda now: value(now, "event_loop_lag_seconds_count") > 0
    )
    assert counted(after, "db_queue_wait_seconds", queue="invest") == 3
    assert counted(after, "db_queue_wait_seconds", queue="page") == 1
    assert counted(after, "db_call_seconds", statement="invest-batch") == 3
    assert counted(after, "db_call_seconds", statement="my-investments-many") == 1
    assert counted(after, "db_pool_acquire_seconds") >= 4
    assert value(after, "db_queue_wait_seconds_bucket", queue="invest", le="+Inf") >= 3
    assert value(after, "event_loop_lag_seconds_count") > 0
    # The full collection each worker makes once started (before gc.freeze()) is counted.
    assert value(after, "gc_pause_seconds_count", generation="2") >= 1


def test_pool_gauges_describe_the_workers_pool(service: ServiceProcess) -> None:
    samples = scrape(service.base_url)
    assert value(samples, "db_pool_connections_max") == 50  # DB_POOL_SIZE 50, one worker
    assert value(samples, "db_pool_connections_open") >= 1
    assert (
        0
        <= value(samples, "db_pool_connections_in_use")
        <= value(samples, "db_pool_connections_open")
    )
    assert value(samples, "db_pool_connections_waiting") == 0


def test_list_cache_misses_are_counted_when_the_cache_is_off(
    client: httpx.Client, service: ServiceProcess
) -> None:
    before = scrape(service.base_url)
    client.get(LIST, params=WINDOW)
    after = scrape(service.base_url)
    assert (
        value(after, "list_cache_requests_total", result="miss")
        == value(before, "list_cache_requests_total", result="miss") + 1
    )
    assert value(after, "list_cache_requests_total", result="hit") == value(
        before, "list_cache_requests_total", result="hit"
    )


def test_list_cache_hits_and_the_age_served(two_workers: ServiceProcess, database_url: str) -> None:
    create_goods(
        database_url, started_at="'2001-01-01 00:00:00'", finished_at="'2001-01-02 00:00:00'"
    )
    window = {"started_at": "2001-01-01 00:00:00", "finished_at": "2001-01-03 00:00:00"}
    before = scrape(two_workers.base_url)
    with httpx.Client(
        base_url=two_workers.base_url, timeout=10
    ) as http:  # one connection, one worker
        for _ in range(3):
            assert http.get(LIST, params=window).status_code == 200
    after = scrape_until(
        two_workers.base_url,
        lambda s: (
            value(s, "list_cache_served_age_seconds_count")
            >= value(before, "list_cache_served_age_seconds_count") + 2
        ),
    )
    hits = value(after, "list_cache_requests_total", result="hit") - value(
        before, "list_cache_requests_total", result="hit"
    )
    assert hits == 2
    served = value(after, "list_cache_served_age_seconds_count") - value(
        before, "list_cache_served_age_seconds_count"
    )
    assert served == 2
    assert value(after, "list_cache_served_age_seconds_bucket", le="+Inf") >= 2
    assert (
        value(after, "list_cache_served_age_seconds_sum") < 2 * 5
    )  # never older than LIST_CACHE_SECONDS


def test_counts_add_up_across_two_workers(two_workers: ServiceProcess) -> None:
    """Requests on fresh connections land on both workers; once both have flushed (each does
    every second), every scrape, whichever worker answers it, reports all of them."""
    before = requests_of(scrape(two_workers.base_url), "/healthz", 200)
    sent = 0
    pids: set[int] = set()
    deadline = time.monotonic() + 30
    while (len(pids) < 2 or sent < 40) and time.monotonic() < deadline:
        for _ in range(20):
            assert httpx.get(f"{two_workers.base_url}/healthz", timeout=10).status_code == 200
            sent += 1
        pids = {
            entry["pid"]
            for entry in map(orjson.loads, json_lines(two_workers))
            if entry.get("logger") == "service.access" and entry.get("route") == "/healthz"
        }
    assert len(pids) == 2, "both workers served /healthz"
    scrape_until(two_workers.base_url, lambda s: requests_of(s, "/healthz", 200) - before >= sent)
    totals = {requests_of(scrape(two_workers.base_url), "/healthz", 200) - before for _ in range(6)}
    assert totals == {sent}  # every scrape, whichever worker answers it
    pool = scrape(two_workers.base_url)
    assert value(pool, "db_pool_connections_max") == 50  # 25 per worker, summed over both


def test_a_killed_worker_leaves_its_counts_but_not_its_gauges(database_url: str) -> None:
    """granian respawns a worker that died; its pool gauges go (the scrape finds its pid gone),
    what it counted stays, and the new worker's gauges come in: the pool max stays 2 x 25."""
    with running_service(database_url, workers=2) as service:
        for _ in range(20):
            httpx.get(f"{service.base_url}/healthz", timeout=10)
        counted = scrape_until(service.base_url, lambda s: requests_of(s, "/healthz", 200) >= 20)
        # Both workers have flushed their counts to the shared files: the victim's are in them.
        assert requests_of(counted, "/healthz", 200) == 20
        assert value(counted, "db_pool_connections_max") == 50
        victim = service.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(pids := service.worker_pids()) == 2 and victim not in pids,
            "granian respawned the killed worker",
            timeout=20,
        )
        service.wait_ready()
        after = scrape_until(service.base_url, lambda s: value(s, "db_pool_connections_max") == 50)
        assert value(after, "db_pool_connections_max") == 50
        assert requests_of(after, "/healthz", 200) >= 20


def test_metrics_token_puts_metrics_behind_a_bearer_token(database_url: str) -> None:
    token = "scrape-token-0123456789abcdef"
    with running_service(database_url, workers=1, METRICS_TOKEN=token) as service:
        url = f"{service.base_url}/metrics"
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789abcdef"},
                        {"Authorization": f"Basic {token}"},
                        {"Authorization": f"Bearer {token}x"}):  # fmt: skip
            refused = httpx.get(url, headers=headers, timeout=10)
            assert refused.status_code == 401, headers
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["code"] == "UNAUTHORIZED"
            assert refused.headers["www-authenticate"].startswith('Bearer realm="metrics"')
            assert "http_requests" not in refused.text
        allowed = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert allowed.status_code == 200
        assert "db_pool_connections_max" in allowed.text
        assert httpx.get(f"{service.base_url}/healthz", timeout=10).status_code == 200
