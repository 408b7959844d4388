"""Least privilege inside the process (issue 15, item 5): the serving processes never hold the
owner's URL; a superuser or owner DATABASE_URL serves as investment_service unless
ALLOW_PRIVILEGED_SERVICE=true; a URL's password stays out of what the service prints."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.processes import ServiceProcess as BareServiceProcess
from harness.processes import service_command
from service.db import open_pool
from service.ops.roles import url_user, with_user
from service.settings import load_settings
from tests.support import (
    SERVICE_PASSWORD,
    create_goods,
    drop_database,
    free_port,
    fresh_user,
    migrated_database,
    new_database,
    psql,
    service_url,
)

pytestmark = pytest.mark.system

OWNER_PASSWORD = "owner-secret-in-the-url"
INVEST = "/v1/api/investment/user/goods"


@pytest.fixture
def database(postgres_server: str) -> Iterator[str]:
    """A fresh migrated database; its ledger rows record the role that wrote them."""
    with migrated_database(postgres_server) as url:
        # Column defaults are evaluated as the inserting session's current_user: the ledger
        # shows which role the service's requests ran as.
        psql(
            url, "ALTER TABLE user_investment_goods ADD COLUMN written_by name DEFAULT current_user"
        )
        yield url


def environ(pid: int) -> str:
    return Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b"\n").decode()


def test_the_serving_processes_never_hold_the_owners_url(database: str) -> None:
    owner, _ = url_user(database)
    # The test servers trust loopback, so a password in the URL is carried but never checked.
    owner_url = with_user(database, owner, OWNER_PASSWORD)
    psql(owner_url, "SELECT 1")
    settings = {"DATABASE_URL": service_url(database), "MIGRATION_DATABASE_URL": owner_url}
    with BareServiceProcess({**settings, "WORKERS": "2", "LOG_LEVEL": "INFO"}) as service:
        workers = service.worker_pids()
        assert len(workers) == 2
        for pid in [service.pid, *workers]:
            seen = environ(pid)
            assert "DATABASE_URL=postgresql://investment_app" in seen  # what the workers need
            assert "MIGRATION_DATABASE_URL" not in seen, pid
            assert OWNER_PASSWORD not in seen, pid
            assert OWNER_PASSWORD not in Path(f"/proc/{pid}/cmdline").read_text()
        assert three_apis(service.base_url, database) == "investment_app"
    log = service.log(100_000)
    assert OWNER_PASSWORD not in log and SERVICE_PASSWORD not in log


def serve_as_superuser(database: str, **settings: str) -> BareServiceProcess:
    """`python -m service run` given only the superuser's URL (the one-URL setup)."""
    assert psql(database, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == "t"
    return BareServiceProcess(
        {"DATABASE_URL": database, "WORKERS": "1", "LOG_LEVEL": "INFO", **settings}
    )


def three_apis(base_url: str, database: str) -> str:
    """List, invest, my investments through the service; the role that wrote the ledger row."""
    goods_id = create_goods(database, title="권한 확인")
    user = fresh_user()
    with httpx.Client(base_url=base_url, timeout=10) as client:
        listed = client.get(
            "/v1/api/investment/goods",
            params={"started_at": "2000-01-01 00:00:00", "finished_at": "2999-12-31 00:00:00"},
        )
        assert listed.status_code == 200
        assert goods_id in [item["goods_id"] for item in listed.json()]
        invested = client.post(
            INVEST, headers={"X-USER-ID": str(user)},
            json={"goodsId": goods_id, "investmentAmount": 700},
        )  # fmt: skip
        assert invested.status_code == 200, invested.text
        mine = client.get(INVEST, headers={"X-USER-ID": str(user)})
        assert mine.status_code == 200 and len(mine.json()) == 1
    return psql(database, f"SELECT written_by FROM user_investment_goods WHERE user_id = {user}")


def test_a_superuser_url_serves_as_the_service_role(database: str) -> None:
    with serve_as_superuser(database) as service:
        assert three_apis(service.base_url, database) == "investment_service"
    assert "requests run as investment_service" in service.log(100_000)


def test_allow_privileged_service_keeps_the_login_role(database: str) -> None:
    with serve_as_superuser(database, ALLOW_PRIVILEGED_SERVICE="true") as service:
        assert three_apis(service.base_url, database) == url_user(database)[0]
    assert "least privilege: the service connects as a superuser" in service.log(100_000)


def preflight(**settings: str) -> tuple[int, str, str]:
    done = service_command("preflight", settings=settings, timeout=60)
    return done.returncode, done.stdout, done.stderr


def test_the_pool_of_a_superuser_url_cannot_alter_the_ledger(database: str) -> None:
    code, out, err = preflight(DATABASE_URL=database)
    assert code == 0, err
    assert out.strip().splitlines()[-1] == '{"db_session_role":"investment_service"}'
    code, out, _ = preflight(DATABASE_URL=database, ALLOW_PRIVILEGED_SERVICE="true")
    assert out.strip().splitlines()[-1] == '{"db_session_role":null}'

    async def as_the_service(sql: str) -> str:
        settings = load_settings(
            {"DATABASE_URL": database, "DB_SESSION_ROLE": "investment_service"}
        )
        pool = open_pool(settings, 2)
        try:
            conn = await pool.connection()
            try:
                return str((await conn.execute(sql)).result()[0]["answer"])
            finally:
                conn.close()
        finally:
            pool.close()

    assert asyncio.run(as_the_service("SELECT current_user::text AS answer")) == (
        "investment_service"
    )
    with pytest.raises(Exception, match="permission denied"):
        asyncio.run(as_the_service("DELETE FROM investment_goods_investor RETURNING 1 AS answer"))


def test_an_owner_that_cannot_become_the_service_role_is_not_served(
    postgres_server: str,
) -> None:
    """An owner that is no superuser and may not SET ROLE investment_service (it cannot grant
    itself the role) is refused, naming the override, instead of serving with the owner's
    rights; once a DBA grants the role, it serves as investment_service."""
    url = new_database(postgres_server)
    owner = f"owner_{url.rpartition('_')[2]}"
    url = with_user(url, owner)
    try:
        psql(postgres_server, f"CREATE ROLE {owner} LOGIN")
        psql(postgres_server, f"ALTER DATABASE {url.rpartition('/')[2]} OWNER TO {owner}")
        done = service_command("migrate", settings={"DATABASE_URL": url}, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "could not grant investment_service to the owner" in done.stderr
        code, _, err = preflight(DATABASE_URL=url)
        assert code == 1
        assert "cannot SET ROLE investment_service" in err and "ALLOW_PRIVILEGED_SERVICE" in err
        code, out, err = preflight(DATABASE_URL=url, ALLOW_PRIVILEGED_SERVICE="true")
        assert code == 0, err
        assert "may UPDATE, DELETE or TRUNCATE the ledger" in err
        assert out.strip().splitlines()[-1] == '{"db_session_role":null}'
        psql(postgres_server, f"GRANT investment_service TO {owner}")
        code, out, err = preflight(DATABASE_URL=url)
        assert code == 0, err
        assert out.strip().splitlines()[-1] == '{"db_session_role":"investment_service"}'
    finally:
        drop_database(postgres_server, url)
        psql(postgres_server, f"DROP ROLE IF EXISTS {owner}")


def test_a_password_never_appears_in_what_the_service_prints() -> None:
    nowhere = f"postgresql://owner:{OWNER_PASSWORD}@127.0.0.1:{free_port()}/investment"
    for command, settings in [
        (("run", "--no-migrate"), {"DATABASE_URL": nowhere}),
        (("migrate",), {"DATABASE_URL": nowhere}),
        (("verify",), {"DATABASE_URL": nowhere}),
        (("goods", "list"), {"DATABASE_URL": nowhere}),
        (("preflight",), {"DATABASE_URL": nowhere.replace("postgresql", "mysql")}),
        (("run",), {"DATABASE_URL": nowhere, "MIGRATION_DATABASE_URL": nowhere}),
    ]:
        done = service_command(*command, settings={"LOG_LEVEL": "DEBUG", **settings}, timeout=60)
        assert done.returncode != 0, command
        printed = done.stdout + done.stderr
        assert printed.strip(), command  # it did say why
        assert OWNER_PASSWORD not in printed, (command, printed)
