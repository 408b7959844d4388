"""granian configured from the settings: `python -m service serve` runs the application
(service.app:create_app) in `settings.workers` processes, with the metrics directory they share,
and the outbox relay's process beside them when NATS_URL is set."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.logs import GRANIAN_LOG_CONFIG
from service.settings import Settings

log = logging.getLogger("service")


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


class RelaySupervisor:
    """`python -m service relay` next to granian's workers while NATS_URL is set: started with
    the server, started again (after a second) whenever it exits, stopped with the server. It
    dies with this process even when this one is killed (PR_SET_PDEATHSIG)."""

    RESTART_SECONDS = 1.0

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._supervise, name="relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            self._process = subprocess.Popen(
                [sys.executable, "-m", "service", "relay"], preexec_fn=_die_with_parent
            )
            code = self._process.wait()
            if not self._stopping.is_set():
                log.warning("the outbox relay exited (%s): starting it again", code)
                self._stopping.wait(self.RESTART_SECONDS)

    def stop(self) -> None:
        self._stopping.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        self._thread.join(15)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the thread that started it ends (this process)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextmanager
def relay_process(settings: Settings) -> Iterator[None]:
    """The relay's process while the server runs, when NATS_URL is set."""
    if settings.nats_url is None:
        yield
        return
    supervisor = RelaySupervisor()
    supervisor.start()
    try:
        yield
    finally:
        supervisor.stop()


def serve(settings: Settings) -> None:
    """Run granian with `settings.workers` processes; returns once stopped (SIGINT/SIGTERM)."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops, RuntimeModes
    from granian.http import HTTP1Settings

    from service.door import backpressure

    os.environ.update(settings.as_env())  # the workers read their settings from the environment
    if settings.db_runtime_threads:  # psqlpy's Tokio runtime sizes itself from this at first use
        os.environ["TOKIO_WORKER_THREADS"] = str(settings.db_runtime_threads)
    with metrics_directory(settings), relay_process(settings):
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
