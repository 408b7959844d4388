"""`just setup`'s verdict on a virtualenv (harness/venv_state.py): a half-made one is rebuilt, a
stale one synced, a complete one left alone (issue 17, item 3)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.venv_state import STAMP_PREFIX, venv_state

LOCK = "0123456789abcdef"


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """A real virtualenv without pip, as an interrupted `python -m venv` leaves it."""
    path = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path


def test_no_virtualenv_is_missing(tmp_path: Path) -> None:
    assert venv_state(tmp_path / "venv", LOCK) == "missing"


def test_a_virtualenv_without_its_stamp_is_broken(venv: Path) -> None:
    # The case: creation interrupted, no pip; the old setup then failed for ever.
    assert venv_state(venv, LOCK) == "broken: no install stamp (an install was interrupted)"


def test_a_virtualenv_without_pyvenv_cfg_is_broken(venv: Path) -> None:
    (venv / (STAMP_PREFIX + LOCK)).touch()
    (venv / "pyvenv.cfg").unlink()
    assert venv_state(venv, LOCK).startswith("broken: no pyvenv.cfg")


@pytest.mark.parametrize("damage", ["dangling", "failing"])
def test_a_python_that_does_not_run_is_broken(venv: Path, damage: str) -> None:
    (venv / (STAMP_PREFIX + LOCK)).touch()
    python = venv / "bin" / "python"
    python.unlink()
    if damage == "dangling":  # the interpreter it was made from is gone
        python.symlink_to(venv / "no-such-python")
    else:
        python.write_text("#!/bin/sh\nexit 1\n")
        python.chmod(0o755)
    assert venv_state(venv, LOCK) == f"broken: {python} does not run"


def test_a_complete_virtualenv_is_ok_for_its_lock_and_stale_for_another(venv: Path) -> None:
    (venv / (STAMP_PREFIX + LOCK)).touch()
    assert venv_state(venv, LOCK) == "ok"
    assert venv_state(venv, "fedcba9876543210") == "stale"


def test_it_runs_as_a_script_with_the_system_python(venv: Path) -> None:
    # `just setup` runs it with python3 before any virtualenv exists: stdlib only, no package.
    script = Path(__file__).resolve().parents[2] / "harness" / "venv_state.py"
    done = subprocess.run(
        [sys.executable, "-I", str(script), str(venv), LOCK], capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    assert done.stdout == "broken: no install stamp (an install was interrupted)\n"
