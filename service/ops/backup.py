"""Base backups and point-in-time restore with PostgreSQL's own tools (`just backup`, `just
restore`; runbook in docs/operations.md). The server archives every WAL segment (archive_mode,
EmbeddedPostgres(archive_dir=...)); a restore copies a base backup into a fresh data directory and
replays the archive up to a moment, or to its end."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from service.ops.embedded import EmbeddedPostgres, run_program
from service.ops.roles import url_user, with_user


class BackupError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class BaseBackup:
    path: Path
    bytes: int
    seconds: float


def _tool(name: str, *args: str, timeout: float = 3600, env: dict[str, str] | None = None) -> str:
    try:
        return run_program(name, *args, timeout=timeout, env=env)
    except RuntimeError as error:
        raise BackupError(str(error)) from None


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """(the URL without its password, the environment that carries it): a program's command line
    is readable by every local user (ps, /proc/<pid>/cmdline), its environment only by its own."""
    user, password = url_user(url)
    if password is None:
        return url, {}
    return with_user(url, user), {"PGPASSWORD": password}


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def base_backup(owner_url: str, backups: Path) -> BaseBackup:
    """pg_basebackup into backups/<UTC time>/ (plain format, with the WAL it needs, fast
    checkpoint). Needs a role with REPLICATION (the owner of the embedded server: postgres)."""
    started = time.monotonic()
    target = backups / datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target.parent.mkdir(parents=True, exist_ok=True)
    source, secret = libpq_target(owner_url)
    _tool(
        "pg_basebackup", "-d", source, "-D", str(target), "-F", "plain", "-X", "stream",
        "-c", "fast", "-l", "investment-service base backup", "--no-password", env=secret,
    )  # fmt: skip
    return BaseBackup(target, folder_bytes(target), time.monotonic() - started)


def prepare_restore(backup: Path, archive: Path, data_dir: Path, target_time: str | None) -> None:
    """Copy the base backup into a fresh `data_dir` and configure archive recovery: replay WAL
    from `archive` up to `target_time` (a timestamp with its zone; None: to the archive's end),
    then promote (a new timeline; the backup and the archive stay untouched)."""
    if not (backup / "backup_label").exists():
        raise BackupError(f"{backup} is not a base backup (no backup_label)")
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(f"{data_dir} is not empty: restore into a fresh data directory")
    shutil.copytree(backup, data_dir, dirs_exist_ok=True)
    data_dir.chmod(0o700)
    settings = {
        "restore_command": f"cp '{archive.resolve()}/%f' '%p'",
        "recovery_target_action": "promote",
        "recovery_target_timeline": "latest",
    }
    if target_time is not None:
        settings["recovery_target_time"] = target_time
        settings["recovery_target_inclusive"] = "true"
    with (data_dir / "postgresql.auto.conf").open("a") as conf:
        conf.write("\n# written by service/ops/backup.py: point-in-time restore\n")
        for name, value in settings.items():
            conf.write(f"{name} = '{value.replace(chr(39), chr(39) * 2)}'\n")
    (data_dir / "recovery.signal").touch()


def wait_promoted(server: EmbeddedPostgres, timeout: float = 300) -> None:
    """Poll until recovery has ended and the server accepts writes; fail fast if it stopped
    (for instance: the target time lies beyond the archived WAL)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.running():
            log = server.log_file.read_text(errors="replace")[-2000:]
            raise BackupError(f"the restored server stopped during recovery:\n{log}")
        try:
            if _tool("psql", server.url, "-X", "-At", "-c", "SELECT pg_is_in_recovery()") == "f":
                return
        except BackupError:
            pass  # not accepting connections yet
        time.sleep(0.2)
    raise BackupError(f"recovery did not end within {timeout:g}s")


def restore(
    backup: Path, archive: Path, data_dir: Path, target_time: str | None, port: int
) -> EmbeddedPostgres:
    """prepare_restore, then start the restored server on `port` and wait for its promotion."""
    prepare_restore(backup, archive, data_dir, target_time)
    server = EmbeddedPostgres(data_dir, port)
    server.start()
    wait_promoted(server)
    return server


def describe(backup: BaseBackup) -> str:
    return json.dumps(
        {"backup": str(backup.path), "bytes": backup.bytes, "seconds": round(backup.seconds, 2)}
    )
