"""The configuration files, rendered from deploy/*.template into the runtime folder: pgbouncer.ini
with userlist.txt, and haproxy.cfg."""

from __future__ import annotations

import os
import pwd
import re
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import unquote, urlsplit

from deploy.config import ClusterConfig, ClusterError
from deploy.tools import postgres_user

DEPLOY = Path(__file__).resolve().parent


def render(template: str, target: Path, **values: Any) -> None:
    text = Template((DEPLOY / template).read_text()).substitute(values)
    target.write_text(text)
    target.chmod(0o644)


def write_pgbouncer(config: ClusterConfig, direct_url: str, prepared: bool) -> tuple[str, str]:
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
    render(
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
    owner = postgres_user()
    if owner is not None and password:
        entry = pwd.getpwnam(owner)
        os.chown(ini, entry.pw_uid, entry.pw_gid)
    return database, user


def write_haproxy(config: ClusterConfig) -> None:
    servers = "\n".join(
        f"    server instance{i + 1} 127.0.0.1:{port}"
        for i, port in enumerate(config.instance_ports)
    )
    render(
        "haproxy.cfg.template", config.runtime / "haproxy.cfg",
        port=config.port, stats_port=config.stats_port, servers=servers, runtime=config.runtime,
        unavailable=DEPLOY / "haproxy-unavailable.http",
    )  # fmt: skip
