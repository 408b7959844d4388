"""The local production-like topology: haproxy → N service instances → PgBouncer → PostgreSQL.

`python -m deploy.cluster up|down|status` (the `just cluster` recipes). `up` installs haproxy and
PgBouncer from Debian when missing, migrates the database directly (never through PgBouncer) as
its owner, creates the service's least-privileged login (PgBouncer and the instances use it),
renders deploy/*.template into a runtime folder (.data/cluster/, git-ignored), starts PgBouncer,
the instances and haproxy, waits until each answers, and records what it started in state.json;
`down` stops exactly those processes. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = Path(__file__).resolve().parent
DEFAULT_RUNTIME = ROOT / ".data" / "cluster"
LOCAL_POSTGRES = ("127.0.0.1", 5432)
LOCAL_DATABASE = "investment_cluster"
SERVICE_USER = "investment_app"
PACKAGES = {"haproxy": "haproxy", "pgbouncer": "pgbouncer"}  # program → Debian package
# PgBouncer keeps protocol-level named prepared statements apart per client from 1.21 on.
PREPARED_STATEMENTS_SINCE = (1, 21)


class ClusterError(RuntimeError):
    """The cluster cannot start (or stop); the message says what to do."""


@dataclass(frozen=True)
class ClusterConfig:
    runtime: Path = DEFAULT_RUNTIME
    database_url: str | None = None  # None: the local PostgreSQL, else an embedded one
    port: int = 8080
    stats_port: int = 8404
    instance_ports: tuple[int, ...] = (8081, 8082, 8083)
    pgbouncer_port: int = 6433  # 6432 is left to a system-wide PgBouncer
    workers: int = 1  # granian workers per instance
    db_pool_size: int = 10  # client connections to PgBouncer, per instance
    server_pool_size: int = 16  # PgBouncer's connections to PostgreSQL, in total
    timezone: str = "Asia/Seoul"
    statement_timeout: float = 5.0
    embedded_pg_port: int = 55433
    instance_env: dict[str, str] = field(default_factory=dict)  # more settings for the instances

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ClusterConfig:
        def number(name: str, default: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            if not raw.isdigit():
                raise ClusterError(f"{name} must be a whole number, got {raw!r}")
            return int(raw)

        port = number("CLUSTER_PORT", 8080)
        instances = number("CLUSTER_INSTANCES", 3)
        if not 1 <= instances <= 16:
            raise ClusterError(f"CLUSTER_INSTANCES must be between 1 and 16, got {instances}")
        return cls(
            runtime=Path(env.get("CLUSTER_DIR") or DEFAULT_RUNTIME),
            database_url=env.get("DATABASE_URL") or None,
            port=port,
            stats_port=number("CLUSTER_STATS_PORT", 8404),
            instance_ports=tuple(port + 1 + i for i in range(instances)),
            pgbouncer_port=number("CLUSTER_PGBOUNCER_PORT", 6433),
            workers=number("CLUSTER_WORKERS", 1),
            db_pool_size=number("CLUSTER_DB_POOL_SIZE", 10),
            server_pool_size=number("CLUSTER_PGBOUNCER_POOL_SIZE", 16),
            timezone=env.get("TIMEZONE") or "Asia/Seoul",
            statement_timeout=float(env.get("DB_STATEMENT_TIMEOUT") or 5.0),
            embedded_pg_port=number("CLUSTER_EMBEDDED_PG_PORT", 55433),
        )


def log(message: str) -> None:
    print(f"cluster: {message}", file=sys.stderr, flush=True)


# ---- tools -------------------------------------------------------------------------------


def program(name: str) -> str | None:
    """Path of an installed program; /usr/sbin is searched too (not on every user's PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def ensure_installed() -> None:
    """Install haproxy and PgBouncer from Debian's packages when missing (root only)."""
    missing = [package for name, package in PACKAGES.items() if program(name) is None]
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
    still = [name for name in PACKAGES if program(name) is None]
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


# ---- processes ---------------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a live process (guards against a reused pid), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if fields[0] == "Z":  # a zombie: reap it when it is our child
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return None
    return fields[19]


def _alive(entry: dict[str, Any]) -> bool:
    return _start_time(int(entry["pid"])) == str(entry["start"])


def _spawn(name: str, command: list[str], env: dict[str, str], runtime: Path) -> dict[str, Any]:
    """Start a detached process in its own session (its pid is its process group id)."""
    with (runtime / f"{name}.log").open("ab") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    (runtime / f"{name}.pid").write_text(f"{process.pid}\n")
    start = None
    for _ in range(50):
        start = _start_time(process.pid)
        if start is not None:
            break
        time.sleep(0.01)
    return {"name": name, "pid": process.pid, "start": start}


def _stop(entry: dict[str, Any], runtime: Path, timeout: float = 20.0) -> None:
    """SIGTERM to the process group, SIGKILL when it is still there after `timeout`."""
    if _alive(entry):
        log(f"stopping {entry['name']} (pid {entry['pid']})")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(entry["pid"], sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5.0)
            while _alive(entry) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not _alive(entry):
                break
    (runtime / f"{entry['name']}.pid").unlink(missing_ok=True)


def _log_tail(runtime: Path, name: str) -> str:
    path = runtime / f"{name}.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, urllib.error.URLError):
        return None


def _wait(what: str, ready: Any, entry: dict[str, Any], runtime: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(entry):
            raise ClusterError(f"{what} exited:\n{_log_tail(runtime, entry['name'])}")
        if ready():
            return
        time.sleep(0.2)
    raise ClusterError(
        f"{what} not ready within {timeout:g}s:\n{_log_tail(runtime, entry['name'])}"
    )


# ---- the database ------------------------------------------------------------------------


def _psql(url: str, sql: str) -> str:
    done = subprocess.run(
        ["psql", url, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise ClusterError(f"psql failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _local_database() -> str | None:
    """The cluster's database on the local PostgreSQL (created once), if that server answers."""
    if shutil.which("psql") is None or not _port_open(*LOCAL_POSTGRES):
        return None
    server = f"postgresql://postgres@{LOCAL_POSTGRES[0]}:{LOCAL_POSTGRES[1]}"
    try:
        if not _psql(
            f"{server}/postgres", f"SELECT 1 FROM pg_database WHERE datname = '{LOCAL_DATABASE}'"
        ):
            _psql(f"{server}/postgres", f"CREATE DATABASE {LOCAL_DATABASE}")
    except ClusterError as error:
        log(f"local PostgreSQL not usable ({error}); using an embedded one")
        return None
    return f"{server}/{LOCAL_DATABASE}"


def _database(config: ClusterConfig, state: dict[str, Any]) -> tuple[str, bool]:
    """(direct URL, load demo data): DATABASE_URL, else the local server, else an embedded one."""
    if config.database_url:
        return config.database_url, False
    local = _local_database()
    if local is not None:
        return local, True
    from service.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(config.runtime / "postgres", config.embedded_pg_port)
    state["embedded"] = {"data_dir": str(server.data_dir), "port": server.port}
    _save(config.runtime, state)
    return server.start(), True


def _stop_postgres(data_dir: Path, timeout: float = 30.0) -> None:
    """Fast shutdown of the embedded server through its postmaster's pid (SIGINT)."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        log(f"stopping the embedded PostgreSQL (pid {pid})")
        os.kill(pid, signal.SIGINT)
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + timeout
    while (data_dir / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def service_url(owner_url: str) -> str:
    """The same database as the service's least-privileged login (SERVICE_USER, no password:
    the local servers trust loopback; sql/migrations/006_service_role.sql)."""
    from service.roles import with_user

    return with_user(owner_url, SERVICE_USER)


def _migrate(url: str, demo: bool, config: ClusterConfig) -> None:
    """Migrate as the owner; create the service's login and make it a member of its role."""
    command = [sys.executable, "-m", "service", "migrate", "--create-service-login"]
    command += ["--demo"] if demo else []
    env = {
        **os.environ,
        "DATABASE_URL": service_url(url),
        "MIGRATION_DATABASE_URL": url,
        "TIMEZONE": config.timezone,
    }
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise ClusterError(f"migrations failed:\n{done.stderr[-3000:]}")


# ---- configuration files -----------------------------------------------------------------


def _render(template: str, target: Path, **values: Any) -> None:
    text = Template((DEPLOY / template).read_text()).substitute(values)
    target.write_text(text)
    target.chmod(0o644)


def _pgbouncer_user() -> str | None:
    """PgBouncer refuses to run as root; as root it runs as `postgres` (Debian's own choice)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
    return "postgres"


def _write_pgbouncer(config: ClusterConfig, direct_url: str, prepared: bool) -> tuple[str, str]:
    """Render pgbouncer.ini and userlist.txt; returns (database name, user)."""
    parts = urlsplit(direct_url)
    database = unquote(parts.path.lstrip("/")) or "postgres"
    user = unquote(parts.username or "postgres")
    if not re.fullmatch(r"[A-Za-z0-9_]+", database) or not re.fullmatch(r"[A-Za-z0-9_]+", user):
        raise ClusterError("the database and user names must be plain identifiers for PgBouncer")
    password = f" password={unquote(parts.password)}" if parts.password else ""
    if prepared:
        settings = (
            ";; PgBouncer tracks each client's named prepared statements and prepares them on\n"
            ";; whichever server connection runs the client's transaction.\n"
            "max_prepared_statements = 200"
        )
    else:
        settings = (
            ";; This PgBouncer predates max_prepared_statements (1.21): the instances run with\n"
            ";; DB_PREPARED_STATEMENTS=false, every statement in its own transaction. Any named\n"
            ";; statement left on a server connection is dropped before the next client gets it.\n"
            "server_reset_query = DEALLOCATE ALL\n"
            "server_reset_query_always = 1"
        )
    ini = config.runtime / "pgbouncer.ini"
    _render(
        "pgbouncer.ini.template", ini,
        database=database, pg_host=parts.hostname or "127.0.0.1", pg_port=parts.port or 5432,
        pg_dbname=database, pg_user=user, pg_password=password,
        pool_size=config.server_pool_size, timezone=config.timezone,
        statement_timeout_ms=max(1, int(config.statement_timeout * 1000)),
        port=config.pgbouncer_port, runtime=config.runtime, prepared_settings=settings,
    )  # fmt: skip
    (config.runtime / "userlist.txt").write_text(f'"{user}" ""\n')
    if password:
        ini.chmod(0o600)
    owner = _pgbouncer_user()
    if owner is not None and password:
        entry = pwd.getpwnam(owner)
        os.chown(ini, entry.pw_uid, entry.pw_gid)
    return database, user


def _write_haproxy(config: ClusterConfig) -> None:
    servers = "\n".join(
        f"    server instance{i + 1} 127.0.0.1:{port}"
        for i, port in enumerate(config.instance_ports)
    )
    _render(
        "haproxy.cfg.template", config.runtime / "haproxy.cfg",
        port=config.port, stats_port=config.stats_port, servers=servers, runtime=config.runtime,
    )  # fmt: skip


# ---- up / down ---------------------------------------------------------------------------


def _state_path(runtime: Path) -> Path:
    return runtime / "state.json"


def _save(runtime: Path, state: dict[str, Any]) -> None:
    _state_path(runtime).write_text(json.dumps(state, indent=2) + "\n")


def load_state(runtime: Path = DEFAULT_RUNTIME) -> dict[str, Any] | None:
    path = _state_path(runtime)
    return json.loads(path.read_text()) if path.exists() else None


def haproxy_servers(stats_url: str) -> list[dict[str, str]]:
    """haproxy's per-server rows of the stats CSV (status, hrsp_2xx, stot, ...)."""
    with urllib.request.urlopen(f"{stats_url};csv", timeout=2) as response:
        text = response.read().decode().lstrip("# ")
    rows = list(csv.DictReader(io.StringIO(text)))
    return [row for row in rows if row["svname"] not in ("FRONTEND", "BACKEND")
            and row["pxname"] == "instances"]  # fmt: skip


def up(config: ClusterConfig) -> dict[str, Any]:
    """Start the whole topology and return its state; on any failure stop what was started."""
    config.runtime.mkdir(parents=True, exist_ok=True)
    config.runtime.chmod(0o755)  # PgBouncer, as another user, reads its files here
    previous = load_state(config.runtime)
    if previous is not None:
        if any(_alive(entry) for entry in previous["processes"]):
            raise ClusterError(
                f"a cluster is running from {config.runtime}: stop it with `just cluster-down`"
            )
        down(config.runtime)
    ensure_installed()
    version = pgbouncer_version()
    prepared = version >= PREPARED_STATEMENTS_SINCE
    state: dict[str, Any] = {"processes": [], "embedded": None}
    try:
        direct_url, demo = _database(config, state)
        _migrate(direct_url, demo, config)
        # PgBouncer logs in to PostgreSQL as the service's role, never as the owner.
        database, user = _write_pgbouncer(config, service_url(direct_url), prepared)
        _write_haproxy(config)
        pooled_url = f"postgresql://{user}@127.0.0.1:{config.pgbouncer_port}/{database}"
        state.update(
            url=f"http://127.0.0.1:{config.port}",
            stats_url=f"http://127.0.0.1:{config.stats_port}/stats",
            database_url=direct_url,
            pooled_database_url=pooled_url,
            pgbouncer_admin_url=f"postgresql://{user}@127.0.0.1:{config.pgbouncer_port}/pgbouncer",
            pgbouncer_version=".".join(map(str, version)),
            prepared_statements=prepared,
            instances=[f"http://127.0.0.1:{port}" for port in config.instance_ports],
        )

        owner = _pgbouncer_user()
        command = [program("pgbouncer") or "pgbouncer", str(config.runtime / "pgbouncer.ini")]
        if owner is not None:
            command[1:1] = ["-u", owner]
        pgbouncer = _spawn("pgbouncer", command, dict(os.environ), config.runtime)
        state["processes"].append(pgbouncer)
        _save(config.runtime, state)
        _wait(
            "PgBouncer", lambda: _port_open("127.0.0.1", config.pgbouncer_port),
            pgbouncer, config.runtime, 15,
        )  # fmt: skip

        for i, port in enumerate(config.instance_ports):
            env = {
                **os.environ,
                **config.instance_env,
                "DATABASE_URL": pooled_url,
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "WORKERS": str(config.workers),
                "DB_POOL_SIZE": str(max(config.db_pool_size, 2 * config.workers)),
                "DB_PREPARED_STATEMENTS": "true" if prepared else "false",
                "TIMEZONE": config.timezone,
                "DB_STATEMENT_TIMEOUT": str(config.statement_timeout),
            }
            command = [sys.executable, "-m", "deploy.serve"]
            state["processes"].append(_spawn(f"instance{i + 1}", command, env, config.runtime))
            _save(config.runtime, state)
        for entry, base in zip(state["processes"][1:], state["instances"], strict=True):
            _wait(
                entry["name"], lambda base=base: _http_status(f"{base}/readyz") == 200,
                entry, config.runtime, 60,
            )  # fmt: skip

        command = [
            program("haproxy") or "haproxy",
            "-db",
            "-f",
            str(config.runtime / "haproxy.cfg"),
        ]
        haproxy = _spawn("haproxy", command, dict(os.environ), config.runtime)
        state["processes"].append(haproxy)
        _save(config.runtime, state)

        def balanced() -> bool:
            try:
                rows = haproxy_servers(state["stats_url"])
            except OSError:
                return False
            return len(rows) == len(config.instance_ports) and all(
                row["status"] == "UP" for row in rows
            )

        _wait("haproxy", balanced, haproxy, config.runtime, 20)
        _wait(
            "haproxy", lambda: _http_status(f"{state['url']}/readyz") == 200,
            haproxy, config.runtime, 10,
        )  # fmt: skip
    except BaseException:
        _save(config.runtime, state)
        down(config.runtime)
        raise
    return state


def down(runtime: Path = DEFAULT_RUNTIME) -> bool:
    """Stop what `up` recorded, front to back; False when nothing was recorded."""
    state = load_state(runtime)
    if state is None:
        return False
    for entry in reversed(state["processes"]):  # haproxy, the instances, then PgBouncer
        _stop(entry, runtime)
    if state.get("embedded"):
        _stop_postgres(Path(state["embedded"]["data_dir"]))
    _state_path(runtime).unlink(missing_ok=True)
    return True


def status(runtime: Path = DEFAULT_RUNTIME) -> str:
    state = load_state(runtime)
    if state is None:
        return "no cluster recorded"
    lines = [f"{entry['name']:<10} pid {entry['pid']:<8} {'up' if _alive(entry) else 'gone'}"
             for entry in state["processes"]]  # fmt: skip
    if "url" in state:
        lines += [
            f"balancer   {state['url']}  (stats {state['stats_url']})",
            f"pgbouncer  {state['pgbouncer_version']}, admin {state['pgbouncer_admin_url']}"
            f", prepared statements {'on' if state['prepared_statements'] else 'off'}",
            f"database   {state['database_url']} (migrations)",
            f"           {state['pooled_database_url']} (instances, through PgBouncer)",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    try:
        config = ClusterConfig.from_env()
        if args.command == "up":
            up(config)
            print(status(config.runtime))
            print(f"stop it with `just cluster-down`; logs in {config.runtime}/")
        elif args.command == "down":
            print("stopped" if down(config.runtime) else "no cluster was running")
        else:
            print(status(config.runtime))
    except ClusterError as error:
        print(f"cluster: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
