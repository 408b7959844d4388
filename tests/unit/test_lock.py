"""uv.lock is the lock of pyproject.toml as it stands: every requirement, extras included, is the
one the lock was resolved for (what `uv lock --check` asks, without the network)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def test_the_lock_was_resolved_for_the_requirements_of_pyproject() -> None:
    project = tomllib.loads(ROOT.joinpath("pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = {str(Requirement(r)) for r in project["dependencies"]}
    for extra, requirements in project["optional-dependencies"].items():
        wanted |= {str(Requirement(f'{r}; extra == "{extra}"')) for r in requirements}
    lock = tomllib.loads(ROOT.joinpath("uv.lock").read_text(encoding="utf-8"))
    (ours,) = [p for p in lock["package"] if p["name"] == project["name"]]
    locked = set()
    for entry in ours["metadata"]["requires-dist"]:
        extras = f"[{','.join(entry['extras'])}]" if "extras" in entry else ""
        marker = f"; {entry['marker']}" if "marker" in entry else ""
        locked.add(str(Requirement(f"{entry['name']}{extras}{entry.get('specifier', '')}{marker}")))
    assert locked == wanted
