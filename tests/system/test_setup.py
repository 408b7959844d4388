"""`just setup` rebuilds a half-made virtualenv from uv.lock and leaves a complete one alone
(issue 17, items 1 and 3); VENV_DIR points it at a temporary one, so .venv is never touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.system


def setup(venv: Path) -> subprocess.CompletedProcess[str]:
    just = shutil.which("just")
    assert just is not None, "`pip install rust-just`: the one prerequisite"
    return subprocess.run(
        [just, "setup"], cwd=ROOT, env={**os.environ, "VENV_DIR": str(venv)},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_a_virtualenv_left_without_pip_by_an_interrupted_setup_is_rebuilt(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    done = setup(venv)
    assert done.returncode == 0, done.stderr
    assert f"{venv} is no install stamp (an install was interrupted): rebuilding it" in done.stderr
    # What the lock pins is what is installed: the project and its binary wheels import.
    imported = subprocess.run(
        [venv / "bin" / "python", "-c", "import granian, psqlpy, pytest, service; print('ok')"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert imported.stdout == "ok\n", imported.stderr
    assert len(list(venv.glob(".installed-*"))) == 1

    started = time.monotonic()
    again = setup(venv)
    assert again.returncode == 0 and again.stderr == "", again.stderr  # nothing to do
    assert time.monotonic() - started < 10
