"""One harness for tests/, bench/ and deploy/: psql and migrations (postgres.py), the service and
other processes started, awaited and stopped in process groups of their own (processes.py), free
and taken loopback ports (sockets.py, also used by the service's operations: service/ops/)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository: where `python -m service` runs
