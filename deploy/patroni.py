"""The cluster's database under Patroni: etcd (one member), PostgreSQL members in synchronous
replication, and a haproxy that routes to whichever member Patroni made the leader.

`start` runs etcd, one Patroni per member (each runs its own PostgreSQL 15: the first to take the
leader key initialises the cluster, the others clone it with pg_basebackup), waits until a leader
and a synchronous standby run, starts the database haproxy (its checks ask each member's Patroni
REST API for /primary and /replica) and creates the service's database through it. `lose` is a
lost node for the drills: its Patroni and its PostgreSQL killed with SIGKILL; `rejoin` starts its
Patroni again, which rewinds the old timeline (pg_rewind) and follows the new leader.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import stat
import time
import urllib.request
from pathlib import Path
from typing import Any

from deploy.config import ClusterConfig, ClusterError, log
from deploy.processes import alive, answers, spawn, start_time, stop, wait
from deploy.render import render
from deploy.state import save
from deploy.tools import haproxy_rows, postgres_user, program
from harness import postgres

SCOPE = "investment"
DATABASE = "investment"
# Failover within about ttl + loop_wait seconds of a leader's loss. Patroni requires
# loop_wait + 2 × retry_timeout <= ttl: a leader that cannot renew its key within retry_timeout
# demotes itself before the key expires and a standby may take it. A one-second loop also bounds
# how long commits wait when the synchronous standby is lost: the leader names another one in
# its next loop.
TTL, LOOP_WAIT, RETRY_TIMEOUT = 10, 1, 3
# A standby further behind than this (bytes of WAL) serves no reads and never becomes leader.
MAX_LAG = 1_048_576


def members(config: ClusterConfig) -> list[dict[str, Any]]:
    """Each member's name, PostgreSQL port, REST API and folder."""
    return [
        {
            "name": f"node{i + 1}",
            "port": pg_port,
            "api": f"http://127.0.0.1:{api_port}",
            "api_port": api_port,
            "dir": str(config.runtime / f"node{i + 1}"),
        }
        for i, (pg_port, api_port) in enumerate(
            zip(config.member_ports, config.patroni_api_ports, strict=True)
        )
    ]


def owner_url(port: int, database: str = DATABASE) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/{database}"


def _member_settings(config: ClusterConfig, member: dict[str, Any]) -> dict[str, Any]:
    """One member's Patroni configuration (YAML is a superset of JSON: written as JSON)."""
    folder = Path(member["dir"])
    return {
        "scope": SCOPE,
        "namespace": "/service/",
        "name": member["name"],
        "restapi": {
            "listen": f"127.0.0.1:{member['api_port']}",
            "connect_address": f"127.0.0.1:{member['api_port']}",
        },
        "etcd3": {"hosts": [f"127.0.0.1:{config.etcd_port}"]},
        "bootstrap": {
            # Written to etcd once, by the member that initialises the cluster; shared by all.
            "dcs": {
                "ttl": TTL,
                "loop_wait": LOOP_WAIT,
                "retry_timeout": RETRY_TIMEOUT,
                "maximum_lag_on_failover": MAX_LAG,
                # A commit is acknowledged once a standby has flushed it; only that standby
                # may be promoted, so nothing acknowledged is lost with the leader.
                "synchronous_mode": True,
                "postgresql": {
                    # A lost leader's timeline may have diverged (WAL the others never got):
                    # pg_rewind brings it back as a standby without a new base backup.
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {
                        "max_connections": 60,
                        "shared_buffers": "32MB",  # three servers on a shared machine
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "wal_log_hints": "on",  # pg_rewind (the checksums would do too)
                        "max_wal_senders": 8,
                        "max_replication_slots": 8,
                        "wal_keep_size": "128MB",
                        "hot_standby_feedback": "on",
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{member['port']}",
            "connect_address": f"127.0.0.1:{member['port']}",
            "data_dir": str(folder / "data"),
            "bin_dir": str(config.pg_bin),
            "pgpass": str(folder / "pgpass"),
            # Loopback only and trusted, like the single server (no passwords on this machine).
            "pg_hba": [
                "local all all trust",
                "host all all 127.0.0.1/32 trust",
                "host replication all 127.0.0.1/32 trust",
            ],
            "authentication": {
                "superuser": {"username": "postgres"},
                "replication": {"username": "replicator"},
                "rewind": {"username": "postgres"},
            },
            "parameters": {"unix_socket_directories": str(folder)},
        },
        # No /dev/watchdog here (a container cannot load softdog): docs/deploy.md says what
        # one would add on a real node.
        "watchdog": {"mode": "off"},
        "log": {"level": "INFO"},
    }


def _prepare(config: ClusterConfig, member: dict[str, Any], user: str | None) -> Path:
    folder = Path(member["dir"])
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    path = config.runtime / f"{member['name']}.yml"
    path.write_text(json.dumps(_member_settings(config, member), indent=2) + "\n")
    path.chmod(0o644)
    if user is not None:
        entry = pwd.getpwnam(user)
        traversable = stat.S_IXGRP | stat.S_IXOTH
        for parent in folder.parents:
            if parent.stat().st_mode & traversable != traversable:
                parent.chmod(parent.stat().st_mode | traversable)
        for item in [folder, *folder.rglob("*")]:
            os.chown(item, entry.pw_uid, entry.pw_gid)
    return path


def _spawn_member(config: ClusterConfig, member: dict[str, Any]) -> dict[str, Any]:
    user = postgres_user()
    path = _prepare(config, member, user)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    if user is not None:
        env["HOME"] = member["dir"]
    entry = spawn(member["name"], [program("patroni") or "patroni", str(path)], env,
                  config.runtime, user=user)  # fmt: skip
    entry["member"] = member["name"]
    return entry


def get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def cluster_view(state: dict[str, Any]) -> dict[str, Any] | None:
    """Patroni's GET /cluster from the first member that answers: members, roles, lag."""
    for member in state["patroni"]["members"]:
        try:
            view: dict[str, Any] = get_json(f"{member['api']}/cluster", timeout=1)
            return view
        except (OSError, ValueError):
            continue
    return None


def leader(state: dict[str, Any]) -> str | None:
    """The running leader's name, when it has a running synchronous standby."""
    running = roles(state)
    leaders = [name for name, role in running.items() if role == "leader"]
    if leaders and "sync_standby" in running.values():
        return leaders[0]
    return None


def roles(state: dict[str, Any]) -> dict[str, str]:
    """The running members' roles by name (Patroni's /cluster); empty when it does not answer."""
    view = cluster_view(state)
    if view is None:
        return {}
    return {m["name"]: m["role"] for m in view["members"] if m.get("state") == "running"}


def member(state: dict[str, Any], name: str) -> dict[str, Any]:
    """The member `name` as `up` recorded it (name, ports, folder)."""
    found: dict[str, Any]
    (found,) = [m for m in state["patroni"]["members"] if m["name"] == name]
    return found


def healthy(state: dict[str, Any], count: int) -> bool:
    """Every member runs on the leader's timeline (a member that was a primary has been
    rewound), one of them the leader and one a synchronous standby, and the standbys have
    replayed everything (lag 0)."""
    view = cluster_view(state)
    if view is None:
        return False
    running = [m for m in view["members"] if m.get("state") == "running"]
    roles = [m["role"] for m in running]
    return (
        len(running) == count
        and roles.count("leader") == 1
        and "sync_standby" in roles
        and len({m.get("timeline") for m in running}) == 1
        and all(m.get("lag", 0) in (0, None) for m in running if m["role"] != "leader")
    )


def primary_servers(stats_url: str) -> dict[str, str]:
    """haproxy's view of the write route: member name → UP, DOWN, or on the way ("UP 1/2" is
    going down and still takes connections, "DOWN 1/2" is going up and does not)."""
    return {row["svname"]: row["status"] for row in haproxy_rows(stats_url, "primary")}


def routed_to(stats_url: str) -> list[str]:
    """The members the write route sends new connections to."""
    return [name for name, status in primary_servers(stats_url).items() if status.startswith("UP")]


def start(config: ClusterConfig, state: dict[str, Any]) -> str:
    """Start etcd, the members and the database haproxy (recorded in `state` as they start);
    return the owner's URL of the service's database, through the write route."""
    runtime = config.runtime
    state["patroni"] = {
        "members": members(config),
        "etcd": f"http://127.0.0.1:{config.etcd_port}",
        "primary_url": owner_url(config.primary_port),
        "replica_url": owner_url(config.replica_port),
        "stats_url": f"http://127.0.0.1:{config.database_stats_port}/stats",
    }
    peer = f"http://127.0.0.1:{config.etcd_peer_port}"
    client = state["patroni"]["etcd"]
    etcd = spawn("etcd", [
        program("etcd") or "etcd", "--name", "etcd1", "--data-dir", str(runtime / "etcd"),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"etcd1={peer}", "--initial-cluster-state", "new",
        "--initial-cluster-token", f"investment-{config.etcd_port}",
    ], dict(os.environ), runtime)  # fmt: skip
    state["processes"].append(etcd)
    save(runtime, state)
    wait("etcd", answers(f"{client}/health"), etcd, runtime, 30)

    for member in state["patroni"]["members"]:
        state["processes"].append(_spawn_member(config, member))
        save(runtime, state)
    first = state["processes"][-len(state["patroni"]["members"])]
    log("waiting for a Patroni leader and a synchronous standby")
    wait("Patroni", lambda: healthy(state, len(state["patroni"]["members"])), first, runtime, 180)

    servers = "\n".join(
        f"    server {m['name']} 127.0.0.1:{m['port']} check port {m['api_port']}"
        for m in state["patroni"]["members"]
    )
    render(
        "haproxy-postgres.cfg.template", runtime / "haproxy-postgres.cfg",
        runtime=runtime, primary_port=config.primary_port, replica_port=config.replica_port,
        stats_port=config.database_stats_port, max_lag=MAX_LAG,
        primary_servers=servers, replica_servers=servers,
    )  # fmt: skip
    command = [program("haproxy") or "haproxy", "-db", "-f", str(runtime / "haproxy-postgres.cfg")]
    proxy = spawn("haproxy-postgres", command, dict(os.environ), runtime)
    state["processes"].append(proxy)
    save(runtime, state)

    def routed() -> bool:
        # haproxy counts a server up until its checks fail: wait until only the leader is.
        try:
            return routed_to(state["patroni"]["stats_url"]) == [leader(state)]
        except OSError:
            return False

    wait("haproxy-postgres", routed, proxy, runtime, 20)
    server = owner_url(config.primary_port, "postgres")
    try:
        exists = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
        if not postgres.psql(server, exists, timeout=30):
            postgres.psql(server, f"CREATE DATABASE {DATABASE}", timeout=30)
    except RuntimeError as error:
        raise ClusterError(f"cannot create the database through the write route: {error}") from None
    return str(state["patroni"]["primary_url"])


def member_entry(state: dict[str, Any], name: str) -> dict[str, Any]:
    entry: dict[str, Any]
    (entry,) = [e for e in state["processes"] if e.get("member") == name]
    return entry


def postmaster_pid(member: dict[str, Any]) -> int | None:
    try:
        return int((Path(member["dir"]) / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def lose(state: dict[str, Any], name: str, postgres_too: bool = True) -> None:
    """A lost node: SIGKILL to its Patroni and (with `postgres_too`) to its PostgreSQL's
    process group (the postmaster and every backend), with no chance to clean up."""
    entry = member_entry(state, name)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(int(entry["pid"]), signal.SIGKILL)
    if postgres_too:
        pid = postmaster_pid(member(state, name))
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)


def rejoin(config: ClusterConfig, state: dict[str, Any], name: str) -> None:
    """Start a lost member's Patroni again (it rewinds and follows the current leader)."""
    old = member_entry(state, name)
    stop(old, config.runtime)
    state["processes"][state["processes"].index(old)] = _spawn_member(config, member(state, name))
    save(config.runtime, state)


def stop_servers(state: dict[str, Any], timeout: float = 30.0) -> None:
    """After the Patronis stopped: any PostgreSQL still running (its Patroni was killed, or did
    not stop it in time) gets a fast shutdown, then SIGKILL."""
    for member in state.get("patroni", {}).get("members", []):
        pid = postmaster_pid(member)
        if pid is None:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGINT)
            log(f"stopping {member['name']}'s PostgreSQL (pid {pid})")
            deadline = time.monotonic() + timeout
            while start_time(pid) is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            if start_time(pid) is not None:
                os.killpg(os.getpgid(pid), signal.SIGKILL)


def status_lines(state: dict[str, Any]) -> list[str]:
    """One line per member: role, state, timeline and replay lag (Patroni's /cluster)."""
    view = cluster_view(state)
    if view is None:
        return ["patroni    no member answers"]
    lines = []
    for m in view["members"]:
        lag = m.get("lag")
        lines.append(
            f"{m['name']:<10} {m['role']:<13} {m.get('state', '?'):<9} "
            f"postgres 127.0.0.1:{m.get('port')}  timeline {m.get('timeline', '?')}"
            + ("" if lag is None else f"  lag {lag} bytes")
        )
    info = state["patroni"]
    lines += [
        f"etcd       {info['etcd']}",
        f"routes     writes {info['primary_url']}  reads {info['replica_url']}"
        f"  (stats {info['stats_url']})",
    ]
    return lines


def member_alive(state: dict[str, Any], name: str) -> bool:
    return alive(member_entry(state, name))
