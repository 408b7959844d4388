"""The house: the request path (service/) never imports operations (service/ops/), which only the
command line (service/__main__.py) starts; harness/ (sockets, PostgreSQL's programs, processes) is
below the service and never imports it, so the two packages form no loop; and every package is in
the installed distribution."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from harness import ROOT

SERVICE = ROOT / "service"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at its top or inside a function (`from a import b`: a and a.b)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def imports_of(paths: list[Path], package: str) -> set[str]:
    """Each import of `package` (or a module of it) by one of `paths`, as "file imports module"."""
    return {
        f"{path.relative_to(ROOT)} imports {module}"
        for path in paths
        for module in imported_modules(path)
        if module == package or module.startswith(f"{package}.")
    }


def test_the_request_path_never_imports_operations() -> None:
    request_path = [p for p in SERVICE.glob("*.py") if p.name != "__main__.py"]
    assert len(request_path) > 20
    assert imports_of(request_path, "service.ops") == set()


def test_the_harness_never_imports_the_service() -> None:
    modules = list((ROOT / "harness").glob("*.py"))
    assert len(modules) > 3
    assert imports_of(modules, "service") == set()


def test_every_package_is_installed() -> None:
    declared = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    packages = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("service", "harness")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert packages == declared
