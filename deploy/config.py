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
        )


def log(message: str) -> None:
    print(f"cluster: {message}", file=sys.stderr, flush=True)
