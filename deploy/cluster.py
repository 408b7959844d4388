"""`python -m deploy.cluster up|down|status`: haproxy → N instances → PgBouncer → the database,
and NATS with JetStream for the events (deploy/nats.py).

The database is Patroni's (deploy/patroni.py: etcd, three PostgreSQL members in synchronous
replication, a second haproxy routing to the leader) unless CLUSTER_DATABASE=single or
DATABASE_URL names one server. `up` (`just cluster`) installs what is missing (tools.py), starts
the database, migrates it directly as its owner and sets up the service's login (database.py),
renders the configuration files into a runtime folder (render.py; .data/cluster/, git-ignored),
starts PgBouncer, the instances and haproxy, waits until each answers (processes.py) and records
them in state.json (state.py); `down` stops exactly those processes. Everything listens on
127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from deploy import nats, patroni
from deploy.config import DEFAULT_RUNTIME, ClusterConfig, ClusterError
from deploy.database import migrate, open_database, service_url, stop_embedded
from deploy.processes import alive, answers, spawn, stop, wait
from deploy.render import write_haproxy, write_pgbouncer
from deploy.state import load_state, save, state_path
from deploy.tools import (
    PREPARED_STATEMENTS_SINCE,
    ensure_installed,
    haproxy_rows,
    pgbouncer_version,
    postgres_user,
    program,
)
from harness.sockets import port_in_use
from service.settings import redact


def haproxy_servers(stats_url: str) -> list[dict[str, str]]:
    """The service instances' rows of the front haproxy's stats."""
    return haproxy_rows(stats_url, "instances")


def up(config: ClusterConfig) -> dict[str, Any]:
    """Start the whole topology and return its state; on any failure stop what was started."""
    config.runtime.mkdir(parents=True, exist_ok=True)
    config.runtime.chmod(0o755)  # PgBouncer, as another user, reads its files here
    previous = load_state(config.runtime)
    if previous is not None:
        if any(alive(entry) for entry in previous["processes"]):
            raise ClusterError(
                f"a cluster is running from {config.runtime}: stop it with `just cluster-down`"
            )
        down(config.runtime)
    ensure_installed(config.patroni, config.pg_bin)
    version = pgbouncer_version()
    prepared = version >= PREPARED_STATEMENTS_SINCE
    state: dict[str, Any] = {"processes": [], "embedded": None}
    try:
        if config.patroni:
            direct_url, demo = patroni.start(config, state), True
        else:
            direct_url, demo = open_database(config, state)
        migrate(direct_url, demo, config)
        # PgBouncer logs in to PostgreSQL as the service's role, never as the owner.
        database, user = write_pgbouncer(config, service_url(direct_url), prepared)
        write_haproxy(config)
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

        owner = postgres_user()
        command = [program("pgbouncer") or "pgbouncer", str(config.runtime / "pgbouncer.ini")]
        if owner is not None:
            command[1:1] = ["-u", owner]
        pgbouncer = spawn("pgbouncer", command, dict(os.environ), config.runtime)
        state["processes"].append(pgbouncer)
        save(config.runtime, state)
        wait(
            "PgBouncer", lambda: port_in_use("127.0.0.1", config.pgbouncer_port, timeout=0.5),
            pgbouncer, config.runtime, 15,
        )  # fmt: skip

        # Events: the nats-servers, and each instance's relay on a session of its own, straight
        # to PostgreSQL (PgBouncer's transaction pooling cannot keep its advisory lock).
        events = nats.start(config, state) if config.nats_ports else {}
        if events:
            events["RELAY_DATABASE_URL"] = service_url(direct_url)
            save(config.runtime, state)

        for i, port in enumerate(config.instance_ports):
            env = {
                **os.environ,
                **events,
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
            if "patroni" in state:  # the product list from a standby, directly (no PgBouncer)
                env["READ_DATABASE_URL"] = service_url(state["patroni"]["replica_url"])
            # Migrated once above, directly on PostgreSQL: migrations hold a session-level
            # advisory lock, which PgBouncer's transaction pooling cannot keep on one server
            # connection, so an instance behind PgBouncer must not migrate through it.
            command = [sys.executable, "-m", "service", "run", "--no-migrate"]
            state["processes"].append(spawn(f"instance{i + 1}", command, env, config.runtime))
            save(config.runtime, state)
        started = [e for e in state["processes"] if e["name"].startswith("instance")]
        for entry, base in zip(started, state["instances"], strict=True):
            wait(entry["name"], answers(f"{base}/readyz"), entry, config.runtime, 60)

        command = [
            program("haproxy") or "haproxy",
            "-db",
            "-f",
            str(config.runtime / "haproxy.cfg"),
        ]
        haproxy = spawn("haproxy", command, dict(os.environ), config.runtime)
        state["processes"].append(haproxy)
        save(config.runtime, state)

        def balanced() -> bool:
            try:
                rows = haproxy_servers(state["stats_url"])
            except OSError:
                return False
            return len(rows) == len(config.instance_ports) and all(
                row["status"] == "UP" for row in rows
            )

        wait("haproxy", balanced, haproxy, config.runtime, 20)
        wait("haproxy", answers(f"{state['url']}/readyz"), haproxy, config.runtime, 10)
    except BaseException:
        save(config.runtime, state)
        down(config.runtime)
        raise
    return state


def down(runtime: Path = DEFAULT_RUNTIME) -> bool:
    """Stop what `up` recorded, front to back; False when nothing was recorded."""
    state = load_state(runtime)
    if state is None:
        return False
    # haproxy, the instances, PgBouncer, then the database's haproxy, Patroni members and etcd
    for entry in reversed(state["processes"]):
        stop(entry, runtime)
    patroni.stop_servers(state)
    if state.get("embedded"):
        stop_embedded(Path(state["embedded"]["data_dir"]))
    state_path(runtime).unlink(missing_ok=True)
    return True


def status(runtime: Path = DEFAULT_RUNTIME) -> str:
    state = load_state(runtime)
    if state is None:
        return "no cluster recorded"
    lines = [f"{entry['name']:<16} pid {entry['pid']:<8} {'up' if alive(entry) else 'gone'}"
             for entry in state["processes"]]  # fmt: skip
    if "patroni" in state:
        lines += patroni.status_lines(state)
    if "url" in state:
        lines += [
            f"balancer   {state['url']}  (stats {state['stats_url']})",
            f"pgbouncer  {state['pgbouncer_version']}, admin {state['pgbouncer_admin_url']}"
            f", prepared statements {'on' if state['prepared_statements'] else 'off'}",
            f"database   {state['database_url']} (migrations"
            + (", through the write route)" if "patroni" in state else ")"),
            f"           {state['pooled_database_url']} (instances, through PgBouncer)",
            *(
                [f"nats       {state['nats_url']} (JetStream; each instance runs a relay)"]
                if "nats_url" in state
                else []
            ),
            *(
                [f"           {service_url(state['patroni']['replica_url'])} (the list's reads)"]
                if "patroni" in state
                else []
            ),
        ]
    return redact("\n".join(lines))  # a DATABASE_URL given with its password


def drill(config: ClusterConfig, command: str, member: str | None) -> int:
    """By hand, as the tests do: `lose` SIGKILLs a member's Patroni and PostgreSQL (its node is
    lost), `rejoin` starts its Patroni again."""
    state = load_state(config.runtime)
    if state is None or "patroni" not in state:
        raise ClusterError("no Patroni cluster recorded: start one with `just cluster`")
    name = patroni.leader(state) if member == "leader" else member
    names = [m["name"] for m in state["patroni"]["members"]]
    if name is None or name not in names:
        raise ClusterError(f"name a member ({', '.join(names)}) or `leader`")
    if command == "lose":
        patroni.lose(state, name)
        print(f"{name}: Patroni and PostgreSQL killed (SIGKILL); watch `just cluster-status`")
    elif patroni.member_alive(state, name):
        raise ClusterError(f"{name}'s Patroni is running: only a lost member rejoins")
    else:
        patroni.rejoin(config, state, name)
        print(f"{name}: Patroni started again; it rejoins as a standby (pg_rewind when needed)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "lose", "rejoin"])
    parser.add_argument(
        "member", nargs="?", help="lose/rejoin: a Patroni member (node1...) or `leader`"
    )
    args = parser.parse_args(argv)
    try:
        config = ClusterConfig.from_env()
        if args.command in ("lose", "rejoin"):
            return drill(config, args.command, args.member)
        if args.command == "up":
            up(config)
            print(status(config.runtime))
            print(f"stop it with `just cluster-down`; logs in {config.runtime}/")
        elif args.command == "down":
            print("stopped" if down(config.runtime) else "no cluster was running")
        else:
            print(status(config.runtime))
    except ClusterError as error:
        print(f"cluster: {redact(str(error))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
