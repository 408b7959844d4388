"""What the cluster tests (test_cluster.py, test_failover.py) share: the tools, or a clear
failure, and `just cluster`'s topology on free ports with small pools."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from deploy.config import ClusterConfig, ClusterError
from deploy.tools import ensure_installed
from tests.support import free_port


def require_tools(what: str, patroni: bool = False, pg_bin: Path | None = None) -> None:
    """The recipe's own install path (apt-get when root); without the tools the test fails, as
    CI must not pass without them, unless a developer set ALLOW_CLUSTER_SKIP=1."""
    try:
        ensure_installed(patroni=patroni, pg_bin=pg_bin)
    except ClusterError as error:
        reason = f"{what} not available: {error}"
        if os.environ.get("ALLOW_CLUSTER_SKIP") == "1":
            pytest.skip(reason)
        pytest.fail(f"{reason}\n(.ci/run installs them; ALLOW_CLUSTER_SKIP=1 skips this test)")


def small_cluster(runtime: Path, **settings: Any) -> ClusterConfig:
    """The front haproxy, its stats page, three instances, PgBouncer and one nats-server on
    free ports; pools of 4 connections an instance and 8 server connections; `settings` add to
    or override these."""
    return ClusterConfig(
        runtime=runtime,
        port=free_port(),
        stats_port=free_port(),
        instance_ports=(free_port(), free_port(), free_port()),
        pgbouncer_port=free_port(),
        **{
            "db_pool_size": 4,
            "server_pool_size": 8,
            "nats_ports": (free_port(),),
            "nats_route_ports": (free_port(),),
            **settings,
        },
    )
