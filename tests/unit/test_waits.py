"""bench/waits.py: the waits counted between two scrapes of the service's own /metrics text,
and the bucket quantiles it prints."""

from __future__ import annotations

import math

from bench import waits
from harness.sockets import free_port
from service.metrics import Metrics


def test_what_was_counted_between_two_scrapes_and_its_bucket_quantiles() -> None:
    metrics = Metrics()
    queue = metrics.queue_wait("invest")
    assert queue is not None
    queue.observe(0.002)  # before the load: not in the difference
    before = waits.parse(metrics.exposition().decode())
    for _ in range(989):
        queue.observe(0.0003)  # 0.00025 < w <= 0.0005
    for _ in range(10):
        queue.observe(0.2)  # <= 0.25
    queue.observe(30.0)  # beyond the last bound: +Inf
    metrics.route("GET", "/healthz").observe(200, 0.001)
    counted = waits.between(before, waits.parse(metrics.exposition().decode()))

    invest = counted["db_queue_wait_seconds{queue=invest}"]
    assert invest["count"] == 1000
    buckets = invest["buckets"]
    assert isinstance(buckets, dict)
    assert waits.quantile(buckets, 0.5) == 0.0005
    assert waits.quantile(buckets, 0.99) == 0.25
    assert math.isinf(waits.quantile(buckets, 0.9995))
    assert (
        counted["http_request_duration_seconds{method=GET,route=/healthz,status=200}"]["count"] == 1
    )
    # nothing counted in between: left out
    assert not any(key.startswith("db_queue_wait_seconds{queue=page}") for key in counted)
    printed = waits.lines(counted)
    assert any("queue=invest" in line and "0.5 ms / 250 ms / 250 ms" in line for line in printed)


def test_calls_shape_takes_every_statement_and_queue_together() -> None:
    counted: waits.Scrape = {
        "db_call_seconds{statement=invest-batch}": {"count": 30.0, "sum": 0.06, "buckets": {}},
        "db_call_seconds{statement=invest-wait}": {"count": 10.0, "sum": 0.1, "buckets": {}},
        "db_queue_wait_seconds{queue=invest}": {"count": 400.0, "sum": 0.4, "buckets": {}},
        "http_request_duration_seconds{route=/x}": {"count": 400.0, "sum": 9.0, "buckets": {}},
    }
    assert waits.calls_shape(counted, 400, 2.0) == {
        "calls_per_s": 20.0,
        "requests_per_call": 10.0,
        "call_ms": 4.0,  # (60 + 100 ms) / 40 calls
        "queue_wait_ms": 1.0,
    }


def test_calls_shape_of_a_window_without_database_calls_is_none() -> None:
    shape = waits.calls_shape({}, 1_000, 10.0)
    assert shape == {
        "calls_per_s": 0.0, "requests_per_call": None, "call_ms": None, "queue_wait_ms": None,
    }  # fmt: skip


def test_an_instance_without_metrics_is_scraped_as_none() -> None:
    assert waits.scrape_or_none(f"http://127.0.0.1:{free_port()}") is None  # nothing listens
