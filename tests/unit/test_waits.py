"""bench/waits.py: the waits counted between two scrapes of the service's own /metrics text,
and the bucket quantiles it prints."""

from __future__ import annotations

import math

from bench import waits
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
