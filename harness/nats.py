"""A nats-server with JetStream of a run's or a test's own (bench/events.py, bench/relay_cost.py,
tests/events.py): a free loopback port and a store folder; stopped and started again at will."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

from harness.processes import spawn, stop_process
from harness.sockets import free_port, port_in_use

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
START_TIMEOUT = 10.0  # seconds until it listens
# nats-server's Go runtime as the relay's NATS is run here and by `just cluster`: a collection
# when the heap has grown by 400 % instead of 100 %, under a soft limit of 1 GiB (nearing it,
# collections come sooner). nats-server's CPU per event the relay publishes is about 11 % less
# (docs/performance.md, fifteenth set); its heap stays small: the stream is file-backed.
GO_RUNTIME = {"GOGC": "400", "GOMEMLIMIT": "1GiB"}


class NatsServer:
    """nats-server -js on 127.0.0.1 and a free port, its store in `store`, its output appended to
    `log_dir`/nats-<port>.log (one file across its restarts)."""

    def __init__(self, store: Path, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.store = store
        self.log_path = log_dir / f"nats-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and return once it listens; RuntimeError if it exits or does not listen."""
        command = [
            NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store),
        ]  # fmt: skip
        self.process = spawn(command, GO_RUNTIME, self.log_path, append=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not port_in_use("127.0.0.1", self.port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"nats-server did not start (its log: {self.log_path})")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (`sig` first, SIGKILL if it lingers), if it runs."""
        if self.process is not None:
            stop_process(self.process, timeout=10, sig=sig)
            self.process = None
