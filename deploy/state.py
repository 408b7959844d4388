"""What `up` started, recorded in the runtime folder's state.json for `down` and `status`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deploy.config import DEFAULT_RUNTIME


def state_path(runtime: Path) -> Path:
    return runtime / "state.json"


def save(runtime: Path, state: dict[str, Any]) -> None:
    state_path(runtime).write_text(json.dumps(state, indent=2) + "\n")


def load_state(runtime: Path = DEFAULT_RUNTIME) -> dict[str, Any] | None:
    path = state_path(runtime)
    return json.loads(path.read_text()) if path.exists() else None
