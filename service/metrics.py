"""Prometheus metrics (prometheus-client), summed across granian's worker processes at `/metrics`.

`python -m service run` gives the workers one fresh PROMETHEUS_MULTIPROC_DIR; each worker writes
its samples there (memory-mapped files) and whichever worker answers a scrape reads them all.
Without that variable (a single process, e.g. in a test) the samples stay in this process.

On the request path nothing is written to those files: a request adds to plain counters of its
worker (`_Tally`), and once a second (and when this worker answers a scrape, and when it stops)
they are added to the shared metrics in one write per bucket. A multiprocess write costs about
1.5 µs; a request would need two to four. Every metric is listed in README "Operations".

With METRICS_ENABLED=false the composition root builds `NullMetrics` instead: the same calls,
nothing counted, so no caller checks whether metrics are on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import glob
import os
import re
from bisect import bisect_left
from collections.abc import Callable
from time import perf_counter
from typing import Any

from blacksheep import Content, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Waits inside a request (its queue, the pool, the event loop, a collection): from 100 µs up.
WAIT_BUCKETS = (0.0001, 0.00025, 0.0005, *LATENCY_BUCKETS)
BATCH_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)
AGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
FLUSH_SECONDS = 1.0
LAG_PROBE_SECONDS = 0.05  # how often the event loop's lag is sampled (20 wakeups a second)

_LIVE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


class _Tally:
    """Observations of one labelled histogram (and the counter of the same labels) not yet
    written to the shared metrics: a count, a sum and one count per bucket."""

    __slots__ = ("bounds", "buckets", "count", "counter", "histogram", "sum")

    def __init__(self, histogram: Any, counter: Any, bounds: tuple[float, ...]) -> None:
        self.histogram = histogram  # a labelled child of a Histogram, or None
        self.counter = counter  # a labelled child of a Counter counting the same events, or None
        self.bounds = bounds
        self.count = 0
        self.sum = 0.0
        self.buckets = [0] * (len(bounds) + 1)  # the last one is +Inf

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        self.buckets[bisect_left(self.bounds, value)] += 1  # le: value <= bound

    def observe_each(self, values: list[float]) -> None:
        """observe() for every value (a whole batch's waits, at a fraction of the cost)."""
        bounds, buckets = self.bounds, self.buckets
        for value in values:
            buckets[bisect_left(bounds, value)] += 1
        self.count += len(values)
        self.sum += sum(values)

    def flush(self) -> None:
        if not self.count:
            return
        if self.counter is not None:
            self.counter.inc(self.count)
        if self.histogram is not None:
            # Histogram.observe() adds 1 to the sum and to one (non-cumulative) bucket value;
            # this adds a whole second's worth to the same values. They are private: pyproject.toml
            # pins prometheus-client, and tests/unit/test_metrics.py fails if they change.
            self.histogram._sum.inc(self.sum)
            for value, added in zip(self.histogram._buckets, self.buckets, strict=True):
                if added:
                    value.inc(added)
        self.count = 0
        self.sum = 0.0
        self.buckets = [0] * (len(self.bounds) + 1)


class RouteMetrics:
    """Requests and latency of one route template, one tally per status (a handful: bounded)."""

    __slots__ = ("_labels", "_metrics", "_tallies")

    def __init__(self, metrics: Metrics, method: str, route: str) -> None:
        self._metrics = metrics
        self._labels = (method, route)
        self._tallies: dict[int, _Tally] = {}

    def observe(self, status: int, seconds: float) -> None:
        tally = self._tallies.get(status)
        if tally is None:
            labels = (*self._labels, str(status))
            tally = self._metrics.tally(
                self._metrics.latency.labels(*labels),
                self._metrics.requests.labels(*labels),
                LATENCY_BUCKETS,
            )
            self._tallies[status] = tally
        tally.observe(seconds)


class NullRouteMetrics(RouteMetrics):
    """A route's metrics when metrics are off: observes nothing."""

    __slots__ = ()

    def __init__(self) -> None:
        pass

    def observe(self, status: int, seconds: float) -> None:
        pass


NULL_ROUTE = NullRouteMetrics()


class CallTimes:
    """One pool's database calls (one call serves a whole batch of requests): how long each
    waited for a connection, and how long its statement took, by statement name."""

    __slots__ = ("_acquire", "_calls", "_metrics")

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._acquire = metrics.tally(metrics.pool_acquire, None, WAIT_BUCKETS)
        self._calls: dict[str, _Tally] = {}

    def acquired(self, seconds: float) -> None:
        self._acquire.observe(seconds)

    def called(self, name: str, seconds: float) -> None:
        tally = self._calls.get(name)
        if tally is None:
            metrics = self._metrics
            tally = metrics.tally(metrics.db_call.labels(name), None, LATENCY_BUCKETS)
            self._calls[name] = tally
        tally.observe(seconds)


class Metrics:
    """The service's metrics; one instance per worker, created by the composition root."""

    enabled = True  # whether /metrics is served

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        # Definitions go to a private registry so that building a second app in one process
        # (tests) does not collide in the global one; in multiprocess mode (a directory, from
        # PROMETHEUS_MULTIPROC_DIR) scrapes read the files.
        self.registry = CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        self._tallies: list[_Tally] = []
        r = self.registry
        route_labels = ["method", "route", "status"]
        self.requests = Counter(
            "http_requests", "HTTP requests answered, by route template and status",
            route_labels, registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time from routing to the response object, by route template and status",
            route_labels, buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_waits = Histogram(
            "db_queue_wait_seconds",
            "Time a request waited in its worker's queue until the database call that carries it"
            " started (queue: invest, invest_held (a product locked elsewhere), page)",
            ["queue"], buckets=WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.pool_acquire = Histogram(
            "db_pool_acquire_seconds",
            "Time a database call waited for a connection of its worker's pool",
            buckets=WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.db_call = Histogram(
            "db_call_seconds",
            "Time of one database call (one statement, for a whole batch), by statement",
            ["statement"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        loop_lag = Histogram(
            "event_loop_lag_seconds",
            "How late a worker's event loop ran a timer (sampled every 50 ms): the wait any"
            " ready request met at that moment, GC pauses and long callbacks included",
            buckets=WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        self._loop_lag = self.tally(loop_lag, None, WAIT_BUCKETS)
        gc_pause = Histogram(
            "gc_pause_seconds", "Cyclic garbage collections of a worker, by generation",
            ["generation"], buckets=WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        self._gc_pauses = [
            self.tally(gc_pause.labels(str(generation)), None, WAIT_BUCKETS)
            for generation in range(3)
        ]
        self._gc_started = 0.0
        self._lag_probe: asyncio.Task[None] | None = None
        outcomes = Counter(
            "invest_outcomes", "Invest results: full (all granted), partial, zero (nothing)",
            ["outcome"], registry=r,
        )  # fmt: skip
        self._full = self.tally(None, outcomes.labels("full"))
        self._partial = self.tally(None, outcomes.labels("partial"))
        self._zero = self.tally(None, outcomes.labels("zero"))
        batch_size = Histogram(
            "invest_batch_size", "Investments sent to the database in one invest_many() call",
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self._batch_size = self.tally(batch_size, None, BATCH_BUCKETS)
        cache = Counter(
            "list_cache_requests", "Product-list lookups in the per-worker cache, by result",
            ["result"], registry=r,
        )  # fmt: skip
        cache_age = Histogram(
            "list_cache_served_age_seconds",
            "Age of the cached product list served on a hit (bounded by LIST_CACHE_SECONDS)",
            buckets=AGE_BUCKETS, registry=r,
        )  # fmt: skip
        self._cache_hit = self.tally(cache_age, cache.labels("hit"), AGE_BUCKETS)
        self._cache_miss = self.tally(None, cache.labels("miss"))

        def pool_gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, registry=r, multiprocess_mode="livesum")

        self._pool_max = pool_gauge("db_pool_connections_max", "Most connections the pools open")
        self._pool_open = pool_gauge("db_pool_connections_open", "Connections the pools hold open")
        self._pool_in_use = pool_gauge(
            "db_pool_connections_in_use", "Connections lent out to a statement right now"
        )
        self._pool_waiting = pool_gauge(
            "db_pool_connections_waiting", "Requests waiting for a connection right now"
        )
        self.pool_status: Callable[[], Any] | None = None
        self._ticker: asyncio.Task[None] | None = None

    def tally(self, histogram: Any, counter: Any, bounds: tuple[float, ...] = ()) -> _Tally:
        tally = _Tally(histogram, counter, bounds)
        self._tallies.append(tally)
        return tally

    def route(self, method: str, route: str) -> RouteMetrics:
        return RouteMetrics(self, method, route)

    def queue_wait(self, queue: str) -> _Tally | None:
        """Where a coalescer records each request's wait (service/coalesce.py); None: nowhere."""
        return self.tally(self.queue_waits.labels(queue), None, WAIT_BUCKETS)

    def call_times(self) -> CallTimes | None:
        """Where a pool records its calls' acquire and statement times (service/db.py)."""
        return CallTimes(self)

    def invest_batch(self, size: int) -> None:
        self._batch_size.observe(size)

    def invest_outcome(self, requested: int, granted: int) -> None:
        if granted >= requested:
            self._full.count += 1
        elif granted > 0:
            self._partial.count += 1
        else:
            self._zero.count += 1

    def hit(self, age: float) -> None:
        """StaleBoundCache observer: an entry `age` seconds old was served."""
        self._cache_hit.observe(age)

    def miss(self) -> None:
        self._cache_miss.count += 1

    def flush(self) -> None:
        """Write what this worker counted since the last flush, and sample its pool."""
        for tally in self._tallies:
            tally.flush()
        if self.pool_status is not None:
            with contextlib.suppress(Exception):  # a pool closed while stopping
                status = self.pool_status()
                self._pool_max.set(status.max_size)
                self._pool_open.set(status.size)
                self._pool_in_use.set(status.size - status.available)
                self._pool_waiting.set(status.waiting)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            self.flush()

    async def _probe_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_PROBE_SECONDS
            await asyncio.sleep(LAG_PROBE_SECONDS)
            self._loop_lag.observe(max(0.0, loop.time() - due))

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        """gc.callbacks: the pause of each collection, by generation."""
        if phase == "start":
            self._gc_started = perf_counter()
        else:
            self._gc_pauses[info["generation"]].observe(perf_counter() - self._gc_started)

    def start(self, pool_status: Callable[[], Any]) -> None:
        """Flush every second from now on; the pool gauges sum over the live workers. Samples
        the event loop's lag and times the worker's garbage collections until stop()."""
        self.pool_status = pool_status
        self.flush()
        loop = asyncio.get_running_loop()
        self._ticker = loop.create_task(self._tick())
        self._lag_probe = loop.create_task(self._probe_lag())
        gc.callbacks.append(self._on_gc)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):  # not started
            gc.callbacks.remove(self._on_gc)
        for task in (self._ticker, self._lag_probe):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._ticker = self._lag_probe = None
        self.pool_status = None
        self.flush()
        if self.multiprocess_dir is not None:  # this worker's gauges stop counting
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]

    def _forget_dead_workers(self, path: str) -> None:
        """Drop the live gauges of workers that died without stopping (granian respawns them)."""
        for file in glob.glob(os.path.join(path, "gauge_live*_*.db")):
            match = _LIVE_FILE.fullmatch(os.path.basename(file))
            if match is None:
                continue
            pid = int(match[1])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
            except PermissionError:
                pass

    def exposition(self) -> bytes:
        self.flush()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        self._forget_dead_workers(self.multiprocess_dir)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    async def scrape(self, request: Request) -> Response:
        """Prometheus text exposition of every worker's metrics (the other workers' counts are
        at most FLUSH_SECONDS old)."""
        return Response(200, None, Content(CONTENT_TYPE_LATEST.encode(), self.exposition()))


class NullMetrics(Metrics):
    """Metrics off (METRICS_ENABLED=false): every call does nothing, and there is no /metrics."""

    enabled = False

    def __init__(self) -> None:
        pass

    def route(self, method: str, route: str) -> RouteMetrics:
        return NULL_ROUTE

    def queue_wait(self, queue: str) -> _Tally | None:
        return None

    def call_times(self) -> CallTimes | None:
        return None

    def invest_batch(self, size: int) -> None:
        pass

    def invest_outcome(self, requested: int, granted: int) -> None:
        pass

    def hit(self, age: float) -> None:
        pass

    def miss(self) -> None:
        pass

    def flush(self) -> None:
        pass

    def start(self, pool_status: Callable[[], Any]) -> None:
        pass

    async def stop(self) -> None:
        pass

    def exposition(self) -> bytes:
        return b""


PUBLISH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class RelayMetrics:
    """The outbox relay's metrics (service/relay.py), written by its own process into the
    workers' PROMETHEUS_MULTIPROC_DIR, so every worker's /metrics shows them. The backlog gauges
    are read from the database by every relay process, active or standing by, so /metrics tells
    the backlog of the whole database whichever instance holds the relay."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.registry = r

        def gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, registry=r, multiprocess_mode="livemax")

        self.unpublished = gauge(
            "events_unpublished", "Outbox events JetStream has not acknowledged yet"
        )
        self.oldest_age = gauge(
            "events_oldest_unpublished_age_seconds",
            "Age of the oldest outbox event JetStream has not acknowledged (0: none)",
        )
        self.active = gauge("events_relay_active", "1 while this instance's relay holds the lock")
        self.nats_up = gauge("events_nats_connected", "1 while the active relay reaches JetStream")
        self.published = Counter(
            "events_published", "Events JetStream acknowledged (duplicates included)", registry=r
        )
        self.latency = Histogram(
            "events_publish_latency_seconds",
            "From the outbox row's writing (its transaction's commit follows within the call) to"
            " JetStream's acknowledgement",
            buckets=PUBLISH_BUCKETS, registry=r,
        )  # fmt: skip
        self._acknowledged = _Tally(self.latency, self.published, PUBLISH_BUCKETS)

    def backlog(self, count: int, oldest_age: float | None) -> None:
        self.unpublished.set(count)
        self.oldest_age.set(oldest_age or 0.0)

    def acknowledged(self, latencies: list[float]) -> None:
        """A round's events JetStream acknowledged, each with its publish latency: counted in
        one write per bucket (a Histogram.observe() per event cost the relay about 5 µs an
        event in a busy microbenchmark, two writes of the multiprocess files each)."""
        self._acknowledged.observe_each(latencies)
        self._acknowledged.flush()
