"""The README and docs/: every setting is in the README's table, every link inside the repository
resolves."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_setting_is_in_the_readme_settings_table() -> None:
    table = ROOT.joinpath("README.md").read_text(encoding="utf-8").split("## Settings", 1)[1]
    table = table.split("\n## ", 1)[0]
    missing = [f.name.upper() for f in fields(Settings) if f"`{f.name.upper()}`" not in table]
    assert missing == []


def test_every_relative_link_in_the_readme_and_docs_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.is_relative_to(ROOT):
                continue  # ../shared/ (the contract) lies beside the checkout, not in it
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)} → {target}")
    assert broken == []
    assert len(PAGES) >= 6  # the README and api, reliability, operations, deploy, performance
