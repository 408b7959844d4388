"""The durability verdict (service/ops/durability.py): which server settings lose acknowledged commits."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from service.ops.durability import durability_problems, judge
from service.ops.embedded import EmbeddedPostgres
from service.settings import load_settings

DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


def test_durable_settings_have_no_problem() -> None:
    assert durability_problems(DURABLE) == []
    assert durability_problems({**DURABLE, "synchronous_commit": "local"}) == []
    assert durability_problems({**DURABLE, "synchronous_commit": "remote_apply"}) == []


@pytest.mark.parametrize("name", ["fsync", "synchronous_commit", "full_page_writes"])
def test_each_unsafe_setting_is_named(name: str) -> None:
    assert durability_problems({**DURABLE, name: "off"}) == [f"{name}=off"]


def test_an_unreadable_setting_is_a_problem() -> None:
    assert durability_problems({"fsync": "on"}) == [
        "synchronous_commit could not be read",
        "full_page_writes could not be read",
    ]


def test_unsafe_is_refused_unless_overridden_then_warned(caplog: pytest.LogCaptureFixture) -> None:
    unsafe = {**DURABLE, "fsync": "off"}
    with caplog.at_level(logging.WARNING, logger="service.ops.durability"):
        assert judge(load_settings({}), unsafe) is False
        assert "refusing to serve: fsync=off" in caplog.text
        caplog.clear()
        assert judge(load_settings({"ALLOW_UNSAFE_DURABILITY": "true"}), unsafe) is True
        assert "UNSAFE DURABILITY: fsync=off" in caplog.text
        caplog.clear()
        assert judge(load_settings({}), DURABLE) is True
        assert caplog.text == ""


def test_the_embedded_server_is_started_durable(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg", 5432, archive_dir=tmp_path / "archive")
    assert durability_problems(server.server_settings()) == []
    assert server.server_settings()["archive_mode"] == "on"
    # A test may ask for an unsafe server explicitly; it is then named.
    unsafe = EmbeddedPostgres(tmp_path / "pg", 5432, settings={"fsync": "off"})
    assert durability_problems(unsafe.server_settings()) == ["fsync=off"]
