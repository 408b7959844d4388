"""granian configured from the settings: `python -m service serve` runs the application
(service.app:create_app) in `settings.workers` processes, with the metrics directory they share."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.logs import GRANIAN_LOG_CONFIG
from service.settings import Settings


@contextmanager
def metrics_directory(settings: Settings) -> Iterator[None]:
    """prometheus-client multiprocess mode: one directory the workers share, set in the
    environment before granian forks them, empty at start; a temporary one is removed at exit."""
    if not settings.metrics_enabled:
        yield
        return
    given = settings.prometheus_multiproc_dir
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="investment-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # samples of an earlier run would be summed in
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(path, ignore_errors=True)
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


def serve(settings: Settings) -> None:
    """Run granian with `settings.workers` processes; returns once stopped (SIGINT/SIGTERM)."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops, RuntimeModes
    from granian.http import HTTP1Settings

    from service.door import backpressure

    os.environ.update(settings.as_env())  # the workers read their settings from the environment
    if settings.db_runtime_threads:  # psqlpy's Tokio runtime sizes itself from this at first use
        os.environ["TOKIO_WORKER_THREADS"] = str(settings.db_runtime_threads)
    with metrics_directory(settings):
        Granian(
            "service.app:create_app",
            factory=True,
            address=settings.host,
            port=settings.port,
            interface=Interfaces.ASGI,
            workers=settings.workers,
            runtime_mode=RuntimeModes(settings.server_runtime_mode),
            runtime_threads=settings.server_runtime_threads,
            loop=Loops.uvloop,
            http=HTTPModes.http1,
            # hyper's header_read_timeout is granian 2.8's one HTTP/1 timer: it starts when a
            # connection opens or a response ends and stops when a whole request head has
            # arrived. So it is the idle keep-alive timeout (which must outlast every proxy and
            # pool in front) and also the bound on a head that never completes.
            http1_settings=HTTP1Settings(
                header_read_timeout=max(1, round(settings.http_idle_timeout * 1000))
            ),
            log_access=False,
            log_dictconfig=GRANIAN_LOG_CONFIG,
            # Connections past a worker's backpressure wait in its listen queue (min(backlog,
            # net.core.somaxconn), one per worker: SO_REUSEPORT), answered by nobody until one
            # of its connections closes. So backpressure admits everything the queues admit,
            # and they answer 503 beyond capacity (docs/operations.md, "Overload").
            backlog=4096,
            backpressure=backpressure(settings),
            respawn_failed_workers=True,
            workers_kill_timeout=30,
        ).serve()
