"""Whether `just setup`'s virtualenv can be used as is, synced, or must be rebuilt (stdlib only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

STAMP_PREFIX = ".installed-"  # written last by `just setup`: its name is the lock's hash


def venv_state(venv: Path, stamp: str) -> str:
    """`ok` (installed from this lock), `missing` or `stale` (sync it), or `broken: why` (remove
    it first: a creation or install was interrupted, or the interpreter it points to is gone)."""
    if not venv.exists():
        return "missing"
    if not (venv / "pyvenv.cfg").is_file():
        return "broken: no pyvenv.cfg (its creation was interrupted)"
    python = venv / "bin" / "python"
    try:
        runs = subprocess.run(
            [str(python), "-c", "import sys"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return f"broken: {python} does not run"
    if runs.returncode != 0:
        return f"broken: {python} does not run"
    stamps = [path.name for path in venv.glob(f"{STAMP_PREFIX}*")]
    if not stamps:
        # The stamp is written after a complete install: without one, what is in there is
        # whatever an interrupted install left (the old justfile's case: no pip).
        return "broken: no install stamp (an install was interrupted)"
    return "ok" if stamps == [STAMP_PREFIX + stamp] else "stale"


if __name__ == "__main__":  # python3 harness/venv_state.py .venv <lock hash>
    print(venv_state(Path(sys.argv[1]), sys.argv[2]))
