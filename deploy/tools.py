"""haproxy and PgBouncer (and for Patroni's topology patroni, etcd and PostgreSQL 15) themselves:
installed from Debian when missing, PgBouncer's version, the user PgBouncer and PostgreSQL run
as, and haproxy's per-server rows from its stats page."""

from __future__ import annotations

import csv
import io
import os
import pwd
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

from deploy.config import ClusterError, log

PACKAGES = {
    "haproxy": "haproxy",
    "pgbouncer": "pgbouncer",
    "nats-server": "nats-server",
}  # program → Debian package
# Patroni 3.0 and etcd 3.4 from bookworm; Patroni runs PostgreSQL 15's own programs.
PATRONI_PACKAGES = {"patroni": "patroni", "etcd": "etcd-server"}
POSTGRES_PACKAGE = "postgresql-15"
# PgBouncer keeps protocol-level named prepared statements apart per client from 1.21 on.
PREPARED_STATEMENTS_SINCE = (1, 21)


def program(name: str) -> str | None:
    """Path of an installed program; /usr/sbin is searched too (not on every user's PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def ensure_installed(patroni: bool = False, pg_bin: Path | None = None) -> None:
    """Install haproxy and PgBouncer (with `patroni`: patroni, etcd and, when `pg_bin` has no
    `postgres`, PostgreSQL 15) from Debian's packages when missing (root only)."""
    wanted = {**PACKAGES, **(PATRONI_PACKAGES if patroni else {})}

    def no_postgres() -> bool:
        return patroni and pg_bin is not None and not (pg_bin / "postgres").exists()

    missing = [package for name, package in wanted.items() if program(name) is None]
    if no_postgres():
        missing.append(POSTGRES_PACKAGE)
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ClusterError(
            f"{' and '.join(missing)} missing: run `sudo apt-get install {' '.join(missing)}`"
        )
    log(f"installing {', '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        if done.returncode != 0:
            raise ClusterError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    still = [name for name in wanted if program(name) is None]
    if no_postgres():
        still.append(f"{pg_bin}/postgres")
    if still:
        raise ClusterError(f"{', '.join(still)} still missing after apt-get install")


def pgbouncer_version() -> tuple[int, ...]:
    path = program("pgbouncer")
    if path is None:
        raise ClusterError("pgbouncer is not installed")
    out = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    found = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", out)
    if found is None:
        raise ClusterError(f"cannot read the PgBouncer version from {out!r}")
    return tuple(int(part or 0) for part in found.groups())


def postgres_user() -> str | None:
    """PgBouncer and PostgreSQL refuse to run as root; as root they (and Patroni, which runs the
    server) run as `postgres` (Debian's own choice)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
    return "postgres"


def haproxy_rows(stats_url: str, proxy: str) -> list[dict[str, str]]:
    """haproxy's per-server rows of `proxy` in the stats CSV (status, hrsp_2xx, stot, ...)."""
    with urllib.request.urlopen(f"{stats_url};csv", timeout=2) as response:
        text = response.read().decode().lstrip("# ")
    rows = list(csv.DictReader(io.StringIO(text)))
    return [row for row in rows if row["svname"] not in ("FRONTEND", "BACKEND")
            and row["pxname"] == proxy]  # fmt: skip
