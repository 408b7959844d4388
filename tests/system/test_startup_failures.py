"""A service that cannot start says why in one line naming what to change, exits 2, and prints no
traceback (issue 17, item 3): a taken port, the embedded database's taken port, a bad setting, an
unreachable database, and granian's own bind."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.processes import SERVICE
from tests.support import ROOT, free_port

pytestmark = pytest.mark.system

PASSWORD = "startup-secret-in-the-url"


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def start(tmp_path: Path, *args: str, **settings: str) -> tuple[int, list[str]]:
    """`python -m service <args>` with `settings` and no DATABASE_URL unless given, the embedded
    database's data in tmp_path (on a free port, unless given); its exit code and the lines it wrote on stderr."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    env |= {"EMBEDDED_PG_DATA": str(tmp_path / "pg"), "EMBEDDED_PG_PORT": str(free_port())}
    env |= {"WORKERS": "1", **settings}
    done = subprocess.run(
        [*SERVICE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done.returncode, done.stderr.strip().splitlines()


def test_a_taken_port_is_one_line_naming_port(tmp_path: Path, taken_port: int) -> None:
    code, lines = start(tmp_path, "run", PORT=str(taken_port))
    assert (code, lines) == (
        2,
        [f"cannot start: port {taken_port} on 127.0.0.1 is taken: set PORT to a free port"],
    )
    assert not (tmp_path / "pg").exists()  # checked before the embedded database was made


def test_a_taken_embedded_database_port_is_one_line_naming_it(
    tmp_path: Path, taken_port: int
) -> None:
    code, lines = start(tmp_path, "run", PORT=str(free_port()), EMBEDDED_PG_PORT=str(taken_port))
    assert (code, lines) == (
        2,
        [f"cannot start: port {taken_port} is taken: set EMBEDDED_PG_PORT to a free port"],
    )
    assert not (tmp_path / "pg" / "PG_VERSION").exists()  # no initdb for a server that can't start


@pytest.mark.parametrize(
    ("name", "value"),
    [("PORT", "99999"), ("WORKERS", "many"), ("DB_POOL_SIZE", "1"), ("TIMEZONE", "Mars/Olympus")],
)
def test_a_bad_setting_is_one_line_naming_it(tmp_path: Path, name: str, value: str) -> None:
    code, lines = start(tmp_path, "run", **{name: value})
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("invalid setting: ") and name in lines[0]


def test_an_unreachable_database_ends_in_one_line_naming_the_urls(tmp_path: Path) -> None:
    nowhere = f"postgresql://owner:{PASSWORD}@127.0.0.1:{free_port()}/investment"
    code, lines = start(tmp_path, "run", PORT=str(free_port()), DATABASE_URL=nowhere)
    assert code == 2
    assert lines[-1] == (
        "cannot start: the migrations failed (the line above says why): check DATABASE_URL"
        " and MIGRATION_DATABASE_URL"
    )
    assert "Connection refused" in lines[-2] and PASSWORD not in "\n".join(lines)


def test_granians_own_bind_failure_is_one_line_naming_port(tmp_path: Path, taken_port: int) -> None:
    # `serve` is what `run` becomes; the port can be taken between run's check and the bind.
    nowhere = f"postgresql://service@127.0.0.1:{free_port()}/investment"
    code, lines = start(tmp_path, "serve", PORT=str(taken_port), DATABASE_URL=nowhere)
    assert code == 2
    assert (
        lines[-1]
        == f"cannot start: port {taken_port} on 127.0.0.1 is taken: set PORT to a free port"
    )
