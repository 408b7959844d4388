"""Prometheus metrics (prometheus-client), summed across granian's worker processes at `/metrics`.

`python -m service run` gives the workers one fresh PROMETHEUS_MULTIPROC_DIR; each worker writes
its samples there (memory-mapped files) and whichever worker answers a scrape reads them all.
Without that variable (a single process, e.g. in a test) the samples stay in this process.
Every metric is listed in README "Operations: metrics, logs, administration".
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import re
from collections.abc import Callable
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
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
AGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
POOL_SAMPLE_SECONDS = 1.0

_LIVE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


class RouteMetrics:
    """The request counter and latency histogram of one route, one child per status, pre-bound."""

    __slots__ = ("_children", "_latency", "_method", "_requests", "_route")

    def __init__(self, requests: Counter, latency: Histogram, method: str, route: str) -> None:
        self._requests = requests
        self._latency = latency
        self._method = method
        self._route = route
        self._children: dict[int, tuple[Counter, Histogram]] = {}

    def observe(self, status: int, seconds: float) -> None:
        children = self._children.get(status)
        if children is None:  # a handful of statuses per route: bounded
            labels = (self._method, self._route, str(status))
            children = (self._requests.labels(*labels), self._latency.labels(*labels))
            self._children[status] = children
        children[0].inc()
        children[1].observe(seconds)


class Metrics:
    """The service's metrics; one instance per worker, created by the composition root."""

    def __init__(self) -> None:
        # Definitions go to a private registry so that building a second app in one process
        # (tests) does not collide in the global one; in multiprocess mode scrapes read the files.
        self.registry = CollectorRegistry()
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
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
        outcomes = Counter(
            "invest_outcomes", "Invest results: full (all granted), partial, zero (nothing)",
            ["outcome"], registry=r,
        )  # fmt: skip
        self._full = outcomes.labels("full")
        self._partial = outcomes.labels("partial")
        self._zero = outcomes.labels("zero")
        self._batch_size = Histogram(
            "invest_batch_size", "Investments sent to the database in one invest_batch() call",
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        cache = Counter(
            "list_cache_requests", "Product-list lookups in the per-worker cache, by result",
            ["result"], registry=r,
        )  # fmt: skip
        self._cache_hit = cache.labels("hit")
        self._cache_miss = cache.labels("miss")
        self._cache_age = Histogram(
            "list_cache_served_age_seconds",
            "Age of the cached product list served on a hit (bounded by LIST_CACHE_SECONDS)",
            buckets=AGE_BUCKETS, registry=r,
        )  # fmt: skip

        def pool_gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, registry=r, multiprocess_mode="livesum")

        self._pool_max = pool_gauge(
            "db_pool_connections_max", "Most connections the pools may open"
        )
        self._pool_open = pool_gauge("db_pool_connections_open", "Connections the pools hold open")
        self._pool_in_use = pool_gauge(
            "db_pool_connections_in_use", "Connections lent out to a statement right now"
        )
        self._pool_waiting = pool_gauge(
            "db_pool_connections_waiting", "Requests waiting for a connection right now"
        )
        self.pool_status: Callable[[], Any] | None = None
        self._sampler: asyncio.Task[None] | None = None

    def route(self, method: str, route: str) -> RouteMetrics:
        return RouteMetrics(self.requests, self.latency, method, route)

    def invest_batch(self, size: int) -> None:
        self._batch_size.observe(size)

    def invest_outcome(self, requested: int, granted: int) -> None:
        if granted >= requested:
            self._full.inc()
        elif granted > 0:
            self._partial.inc()
        else:
            self._zero.inc()

    def hit(self, age: float) -> None:
        """StaleBoundCache observer: an entry `age` seconds old was served."""
        self._cache_hit.inc()
        self._cache_age.observe(age)

    def miss(self) -> None:
        self._cache_miss.inc()

    def sample_pool(self) -> None:
        if self.pool_status is None:
            return
        status = self.pool_status()
        self._pool_max.set(status.max_size)
        self._pool_open.set(status.size)
        self._pool_in_use.set(status.size - status.available)
        self._pool_waiting.set(status.waiting)

    async def _sample_forever(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a closed pool while stopping
                self.sample_pool()
            await asyncio.sleep(POOL_SAMPLE_SECONDS)

    def start(self, pool_status: Callable[[], Any]) -> None:
        """Sample the worker's pool every second (its gauges sum over the live workers)."""
        self.pool_status = pool_status
        self._sampler = asyncio.get_running_loop().create_task(self._sample_forever())

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
            self._sampler = None
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
        self.sample_pool()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        self._forget_dead_workers(self.multiprocess_dir)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    async def scrape(self, request: Request) -> Response:
        """Prometheus text exposition of every worker's metrics."""
        return Response(200, None, Content(CONTENT_TYPE_LATEST.encode(), self.exposition()))
