"""The backup drill (service/ops/backup.py): a base backup, keyed invests through the service, a noted
moment, more invests; restored to that moment into a fresh data directory, the ledger verifies
and holds exactly the investments acknowledged before it. Restored to the end of the archive, it
holds them all."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.ops.backup import base_backup, restore
from service.ops.embedded import EmbeddedPostgres
from tests.support import (
    ROOT,
    create_goods,
    free_port,
    fresh_user,
    migrate,
    psql,
    running_service,
    verify_ledger,
)

pytestmark = pytest.mark.system

PATH = "/v1/api/investment/user/goods"
PER_PHASE = 60


@pytest.fixture
def workspace() -> Iterator[Path]:
    (ROOT / ".data").mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="backup-drill-", dir=ROOT / ".data"))
    servers: list[EmbeddedPostgres] = []
    try:
        yield folder
    finally:
        for data_dir in folder.glob("*/PG_VERSION"):
            servers.append(EmbeddedPostgres(data_dir.parent, 0))
        for server in servers:
            server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


def invest_keyed(client: httpx.Client, goods: list[int], phase: str) -> dict[str, int]:
    """PER_PHASE keyed invests; {key: investment_id} of those acknowledged with a ledger row."""
    acknowledged = {}
    for i in range(PER_PHASE):
        key = f"{phase}-{i}"
        response = client.post(
            PATH,
            headers={"X-USER-ID": str(fresh_user()), "Idempotency-Key": key},
            json={"goodsId": goods[i % len(goods)], "investmentAmount": 1000 + i},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["investment_amount"] == 1000 + i
        acknowledged[key] = body["investment_id"]
    return acknowledged


def wait_archived(url: str, timeout: float = 60) -> None:
    """Close the current WAL segment and wait until the archiver has copied it."""
    segment = psql(url, "SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + timeout
    while psql(url, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < segment:
        assert time.monotonic() < deadline, f"{segment} not archived within {timeout}s"
        time.sleep(0.1)


def ledger(url: str) -> dict[str, int]:
    """{idempotency key: ledger row id} of the restored database."""
    rows = psql(
        url,
        "SELECT k.idempotency_key, u.id FROM user_investment_goods u"
        " JOIN investment_idempotency k ON k.investment_id = u.id",
    )
    return {key: int(row) for key, row in (line.split("\t") for line in rows.splitlines())}


def test_point_in_time_restore_keeps_exactly_what_was_acknowledged(workspace: Path) -> None:
    archive = workspace / "archive"
    source = EmbeddedPostgres(workspace / "source", free_port(), archive_dir=archive)
    url = source.start()
    migrate(url)
    goods = [create_goods(url, total=10**9) for _ in range(3)]
    backup = base_backup(url, workspace / "backups")

    with (
        running_service(url, workers=1) as service,
        httpx.Client(base_url=service.base_url, timeout=10) as client,
    ):
        before = invest_keyed(client, goods, "before")
        moment = psql(url, "SELECT clock_timestamp()")
        after = invest_keyed(client, goods, "after")
    wait_archived(url)
    source.stop()

    started = time.monotonic()
    restored = restore(backup.path, archive, workspace / "at-moment", moment, free_port())
    restore_seconds = time.monotonic() - started
    try:
        summary = verify_ledger(restored.url)
        rows = ledger(restored.url)
        counters = psql(restored.url, "SELECT sum(current_investing_amount) FROM investment_goods")
    finally:
        restored.stop()
    assert rows == before  # nothing acknowledged before the moment is missing...
    assert not set(rows) & set(after)  # ...and nothing after it is there
    assert summary["ledger_rows"] == PER_PHASE
    assert int(counters) == sum(1000 + i for i in range(PER_PHASE))

    latest = restore(backup.path, archive, workspace / "latest", None, free_port())
    try:
        verify_ledger(latest.url)
        everything = ledger(latest.url)
    finally:
        latest.stop()
    assert everything == {**before, **after}
    print(
        f"\nbackup drill: base backup {backup.bytes / 2**20:.1f} MiB in {backup.seconds:.2f} s;"
        f" restored to {moment} in {restore_seconds:.2f} s: {len(rows)} of {len(before)}"
        f" acknowledged before, 0 of {len(after)} after; to the end: {len(everything)} rows"
    )


def test_restore_command_refuses_a_used_data_directory(workspace: Path) -> None:
    (workspace / "used").mkdir()
    (workspace / "used" / "something").write_text("x")
    (workspace / "fake-backup").mkdir()
    (workspace / "fake-backup" / "backup_label").write_text("x")
    done = subprocess.run(
        [sys.executable, "-m", "service", "restore", str(workspace / "fake-backup"),
         "--data-dir", str(workspace / "used")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "not empty" in done.stderr
