"""One harness for tests/, bench/ and deploy/: psql and migrations (postgres.py), the service and
other processes started, awaited and stopped in process groups of their own (processes.py)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository: where `python -m service` runs
