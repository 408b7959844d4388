"""Metrics kept per worker and flushed: the same numbers as observing each event directly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import LATENCY_BUCKETS, PUBLISH_BUCKETS, Metrics, RelayMetrics
from service.settings import load_settings


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch) -> Metrics:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    return Metrics()


def test_nothing_is_written_before_a_flush_and_everything_after(metrics: Metrics) -> None:
    route = metrics.route("GET", "/v1/api/investment/goods")
    durations = [0.0004, 0.001, 0.0011, 0.03, 0.03, 7.0, 42.0]
    for seconds in durations:
        route.observe(200, seconds)
    route.observe(404, 0.002)
    labels = {"method": "GET", "route": "/v1/api/investment/goods", "status": "200"}
    key = frozenset(labels.items())
    assert samples(generate(metrics, flush=False)).get(("http_requests_total", key), 0) == 0

    reference = Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    for seconds in durations:
        reference.observe(seconds)
    expected = samples(generate_registry(reference))
    got = samples(metrics.exposition())
    assert got[("http_requests_total", key)] == len(durations)
    assert got[("http_request_duration_seconds_count", key)] == len(durations)
    assert got[("http_request_duration_seconds_sum", key)] == pytest.approx(sum(durations))
    for (name, lbls), value in expected.items():
        if name == "h_bucket":
            le = dict(lbls)["le"]
            assert (
                got[
                    (
                        "http_request_duration_seconds_bucket",
                        frozenset({**labels, "le": le}.items()),
                    )
                ]
                == value
            ), le
    not_found = frozenset({**labels, "status": "404"}.items())
    assert got[("http_requests_total", not_found)] == 1


def test_a_second_flush_adds_only_what_came_since(metrics: Metrics) -> None:
    metrics.invest_outcome(100, 100)
    metrics.invest_outcome(100, 40)
    metrics.invest_outcome(100, 0)
    metrics.invest_outcome(100, 0)
    metrics.flush()
    metrics.invest_outcome(100, 100)
    got = samples(metrics.exposition())
    assert got[("invest_outcomes_total", frozenset({("outcome", "full")}))] == 2
    assert got[("invest_outcomes_total", frozenset({("outcome", "partial")}))] == 1
    assert got[("invest_outcomes_total", frozenset({("outcome", "zero")}))] == 2


def test_batch_sizes_and_cache_metrics(metrics: Metrics) -> None:
    for size in (1, 1, 3, 500):
        metrics.invest_batch(size)
    metrics.hit(0.2)
    metrics.hit(0.7)
    metrics.miss()
    got = samples(metrics.exposition())
    assert got[("invest_batch_size_count", frozenset())] == 4
    assert got[("invest_batch_size_sum", frozenset())] == 505
    assert got[("invest_batch_size_bucket", frozenset({("le", "1.0")}))] == 2
    assert got[("invest_batch_size_bucket", frozenset({("le", "5.0")}))] == 3
    assert got[("invest_batch_size_bucket", frozenset({("le", "500.0")}))] == 4
    assert got[("list_cache_requests_total", frozenset({("result", "hit")}))] == 2
    assert got[("list_cache_requests_total", frozenset({("result", "miss")}))] == 1
    assert got[("list_cache_served_age_seconds_bucket", frozenset({("le", "0.25")}))] == 1
    assert got[("list_cache_served_age_seconds_bucket", frozenset({("le", "1.0")}))] == 2


def test_pool_gauges_come_from_the_pool_status(metrics: Metrics) -> None:
    class Status:
        max_size, size, available, waiting = 25, 10, 4, 3

    metrics.pool_status = Status
    got = samples(metrics.exposition())
    assert got[("db_pool_connections_max", frozenset())] == 25
    assert got[("db_pool_connections_open", frozenset())] == 10
    assert got[("db_pool_connections_in_use", frozenset())] == 6
    assert got[("db_pool_connections_waiting", frozenset())] == 3


def generate(metrics: Metrics, flush: bool) -> bytes:
    if flush:
        metrics.flush()
    return generate_latest(metrics.registry)


def generate_registry(histogram: Histogram) -> bytes:
    registry = CollectorRegistry()
    registry.register(histogram)
    return generate_latest(registry)


EDGES = [0.0, 0.0004, 0.001, 0.0011, 0.03, 0.03, 2.5, 7.0, 10.0, 42.0]


def flushed_and_observed() -> dict[str, list[tuple[str, str, float]]]:
    """The same durations through a flushed tally and through Histogram.observe(): the samples of
    both histograms as this process's exposition shows them (multiprocess when the environment
    says so)."""
    metrics = Metrics(load_settings().prometheus_multiproc_dir)
    histograms = {
        way: Histogram(way, way, ["route"], buckets=LATENCY_BUCKETS, registry=metrics.registry)
        for way in ("flushed", "observed")
    }
    tally = metrics.tally(histograms["flushed"].labels("r"), None, LATENCY_BUCKETS)
    for seconds in EDGES:
        tally.observe(seconds)
        histograms["observed"].labels("r").observe(seconds)
    found: dict[str, list[tuple[str, str, float]]] = {way: [] for way in histograms}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        if family.name in found:
            found[family.name] += sorted(
                (sample.name.removeprefix(family.name), sample.labels.get("le", ""), sample.value)
                for sample in family.samples
                if not sample.name.endswith("_created")
            )
    return found


def test_flushing_writes_prometheus_client_internals_as_observe_does() -> None:
    """A flush adds a whole second to Histogram's private `_sum` and `_buckets` (observe() adds
    one event): pyproject.toml pins prometheus-client to the versions this holds for, and this
    test fails when an upgrade changes those internals."""
    found = flushed_and_observed()
    assert len(found["flushed"]) == len(LATENCY_BUCKETS) + 3  # buckets, +Inf, count, sum
    assert found["flushed"] == found["observed"]


def test_flushing_writes_prometheus_client_internals_as_observe_does_across_processes(
    tmp_path: Path,
) -> None:
    """The same in multiprocess mode (chosen when prometheus_client is imported, hence a child
    process): the values behind `_sum` and `_buckets` are then memory-mapped files."""
    done = subprocess.run(
        [sys.executable, "-c",
         "import json, tests.unit.test_metrics as t; print(json.dumps(t.flushed_and_observed()))"],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert any(path.name.startswith("histogram_") for path in tmp_path.iterdir())
    assert len(found["flushed"]) == len(LATENCY_BUCKETS) + 3
    assert found["flushed"] == found["observed"]


def test_observing_a_batch_of_waits_counts_as_observing_each(metrics: Metrics) -> None:
    each, batch = metrics.queue_wait("invest"), metrics.queue_wait("page")
    assert each is not None and batch is not None
    waits = [0.00005, 0.0003, 0.0003, 0.02, 0.7, 30.0]
    for wait in waits:
        each.observe(wait)
    batch.observe_each(waits)
    assert (batch.count, batch.sum, batch.buckets) == (each.count, each.sum, each.buckets)


def test_a_relay_round_acknowledged_is_counted_as_observing_each_event() -> None:
    """The relay counts a round's latencies in one write per bucket (RelayMetrics.acknowledged):
    the exposition is what a Histogram.observe() and a Counter.inc() per event give."""
    latencies = [0.003, 0.005, 0.04, 0.04, 0.3, 75.0]
    relay = RelayMetrics()
    relay.acknowledged(latencies[:2])
    relay.acknowledged(latencies[2:])
    registry = CollectorRegistry()
    latency = Histogram(
        "events_publish_latency_seconds", "", buckets=PUBLISH_BUCKETS, registry=registry
    )
    published = Counter("events_published", "", registry=registry)
    for seconds in latencies:
        latency.observe(seconds)
        published.inc()

    def exposed(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return {
            key: value
            for key, value in samples(generate_latest(registry)).items()
            if key[0].startswith(("events_publish_latency_seconds", "events_published"))
        }

    assert len(exposed(registry)) == len(PUBLISH_BUCKETS) + 4  # buckets, +Inf, count, sum, total
    assert exposed(relay.registry) == pytest.approx(exposed(registry))  # the sum: added in turn
