"""Which role the request sessions take (service/ops/roles.py session_role, service/db.py options),
and log lines that quote a database URL without its password (service/logs.py)."""

from __future__ import annotations

import logging

import pytest

from service.db import connection_options
from service.logs import JsonFormatter
from service.ops.backup import libpq_target
from service.ops.roles import SERVICE_GROUP, Privileges, session_role
from service.settings import load_settings

SUPERUSER = Privileges(superuser=True, alters_ledger=True)
OWNER = Privileges(superuser=False, alters_ledger=True)
SERVICE = Privileges(superuser=False, alters_ledger=False)


@pytest.mark.parametrize(
    "login, env, role",
    [(SUPERUSER, {}, SERVICE_GROUP),
     (OWNER, {}, SERVICE_GROUP),
     (SERVICE, {}, None),  # the service's own login: nothing to drop
     (SUPERUSER, {"ALLOW_PRIVILEGED_SERVICE": "true"}, None),
     (OWNER, {"ALLOW_PRIVILEGED_SERVICE": "true"}, None),
     (SERVICE, {"DB_SESSION_ROLE": "reader"}, "reader"),
     (SUPERUSER, {"DB_SESSION_ROLE": "reader", "ALLOW_PRIVILEGED_SERVICE": "true"}, "reader")],
)  # fmt: skip
def test_a_privileged_login_serves_as_the_service_role(
    login: Privileges, env: dict[str, str], role: str | None
) -> None:
    assert session_role(load_settings(env), login) == role


def test_the_session_role_is_a_connection_option() -> None:
    assert "role" not in connection_options(load_settings({}))
    options = connection_options(load_settings({"DB_SESSION_ROLE": SERVICE_GROUP}))
    assert options.endswith(f" -c role={SERVICE_GROUP}")
    assert "-c synchronous_commit=on" in options  # the others stay


def test_log_lines_never_carry_a_password(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("service.test")
    url = "postgresql://owner:owner-secret@127.0.0.1:5432/investment"
    with caplog.at_level(logging.INFO, logger="service.test"):
        log.info("embedded PostgreSQL at %s (data in %s)", url, "/tmp/pg")
        log.warning("connecting", extra={"dsn": url})
        try:
            raise RuntimeError(f"could not connect to {url}")
        except RuntimeError:
            log.exception("start-up check failed")
    lines = [JsonFormatter().format(record) for record in caplog.records]
    assert len(lines) == 3
    for line in lines:
        assert "owner-secret" not in line
        assert "postgresql://owner:***@127.0.0.1:5432/investment" in line


def test_a_backup_passes_the_password_in_the_environment_not_the_command_line() -> None:
    source, env = libpq_target("postgresql://owner:owner%40secret@db:5432/investment")
    assert source == "postgresql://owner@db:5432/investment"
    assert env == {"PGPASSWORD": "owner@secret"}
    assert libpq_target("postgresql://postgres@db/x") == ("postgresql://postgres@db/x", {})
