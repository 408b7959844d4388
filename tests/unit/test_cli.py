"""The command table (service/ops/cli.py): every command answers `python -m service <name> --help`,
an unknown command is argparse's usage error (exit 2), and the table's own refusals."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness import ROOT
from service.__main__ import main
from service.ops.cli import COMMANDS, parser
from service.settings import load_settings


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_answers_help(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", name, "--help"], cwd=ROOT,
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m service {name} ")


def test_the_help_lists_the_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", "--help"], cwd=ROOT,
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "{" + ",".join(COMMANDS) + "}" in done.stdout


def test_an_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["invest-everything"])
    assert stopped.value.code == 2
    assert "invalid choice: 'invest-everything'" in capsys.readouterr().err


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([])
    assert stopped.value.code == 2
    assert "required: command" in capsys.readouterr().err


def test_the_commands_run_starts_as_children_are_in_the_table() -> None:
    assert {"migrate", "preflight", "serve"} <= COMMANDS.keys()


@pytest.mark.parametrize(
    "name", [name for name, command in COMMANDS.items() if command.needs_database_url]
)
def test_a_database_command_without_database_url_is_refused(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = {
        "goods": ["goods", "list"],
        "investor": ["investor", "show", "1"],
        "limits": ["limits", "list"],
    }.get(name, [name])
    assert COMMANDS[name](load_settings({}), parser().parse_args(args)) == 2
    assert capsys.readouterr().err == "DATABASE_URL is required for this command\n"
