"""The cluster's settings (ClusterConfig, from the CLUSTER_* variables), its error and its log."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness import ROOT
from service.settings import SettingsError, load_settings

DEFAULT_RUNTIME = ROOT / ".data" / "cluster"


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
    # Patroni's topology (deploy/patroni.py) instead of one server: etcd, three PostgreSQL members
    # and a second haproxy that routes to the leader (primary_port) and to the standbys.
    patroni: bool = False
    etcd_port: int = 2479  # 2379 and 2380 are left to a system-wide etcd
    etcd_peer_port: int = 2480
    patroni_api_ports: tuple[int, ...] = (8008, 8009, 8010)
    member_ports: tuple[int, ...] = (5441, 5442, 5443)
    primary_port: int = 5000
    replica_port: int = 5001
    database_stats_port: int = 8405
    pg_bin: Path = Path("/usr/lib/postgresql/15/bin")
    # NATS with JetStream (deploy/nats.py): three nodes (R3) or one; 4222 is left to a
    # system-wide nats-server. No nodes: events off (the instances get no NATS_URL).
    nats_ports: tuple[int, ...] = (4231, 4232, 4233)
    nats_route_ports: tuple[int, ...] = (6231, 6232, 6233)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ClusterConfig:
        def number(name: str, default: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            if not raw.isdigit():
                raise ClusterError(f"{name} must be a whole number, got {raw!r}")
            return int(raw)

        # The service's own parsers and defaults for what the instances and PgBouncer share.
        shared = {name: env[name] for name in ("TIMEZONE", "DB_STATEMENT_TIMEOUT") if name in env}
        try:
            service = load_settings(shared)
        except SettingsError as error:
            raise ClusterError(str(error)) from None
        port = number("CLUSTER_PORT", 8080)
        instances = number("CLUSTER_INSTANCES", 3)
        database = env.get("CLUSTER_DATABASE", "patroni").strip() or "patroni"
        if database not in ("patroni", "single"):
            raise ClusterError(f"CLUSTER_DATABASE must be patroni or single, got {database!r}")
        members = number("CLUSTER_MEMBERS", 3)
        if not 2 <= members <= 5:
            raise ClusterError(f"CLUSTER_MEMBERS must be between 2 and 5, got {members}")
        api_port = number("CLUSTER_PATRONI_PORT", 8008)
        member_port = number("CLUSTER_MEMBER_PORT", 5441)
        nats_nodes = number("CLUSTER_NATS_NODES", 3)
        if nats_nodes not in (0, 1, 3):
            raise ClusterError(f"CLUSTER_NATS_NODES must be 0, 1 or 3, got {nats_nodes}")
        nats_port = number("CLUSTER_NATS_PORT", 4231)
        nats_route_port = number("CLUSTER_NATS_ROUTE_PORT", 6231)
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
            timezone=service.timezone,
            statement_timeout=service.db_statement_timeout,
            embedded_pg_port=number("CLUSTER_EMBEDDED_PG_PORT", 55433),
            # DATABASE_URL names one server: the single-server topology, as before.
            patroni=database == "patroni" and not env.get("DATABASE_URL"),
            etcd_port=number("CLUSTER_ETCD_PORT", 2479),
            etcd_peer_port=number("CLUSTER_ETCD_PEER_PORT", 2480),
            patroni_api_ports=tuple(api_port + i for i in range(members)),
            member_ports=tuple(member_port + i for i in range(members)),
            primary_port=number("CLUSTER_PRIMARY_PORT", 5000),
            replica_port=number("CLUSTER_REPLICA_PORT", 5001),
            database_stats_port=number("CLUSTER_DATABASE_STATS_PORT", 8405),
            pg_bin=Path(env.get("CLUSTER_PG_BIN") or "/usr/lib/postgresql/15/bin"),
            nats_ports=tuple(nats_port + i for i in range(nats_nodes)),
            nats_route_ports=tuple(nats_route_port + i for i in range(nats_nodes)),
        )


def log(message: str) -> None:
    print(f"cluster: {message}", file=sys.stderr, flush=True)
