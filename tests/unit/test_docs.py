"""The README, docs/, bench/README.md and profiles/: every setting is in the README's table, every
error code in docs/api.md's, and every link stays inside the repository and resolves (a clone is
all a reader has). Links to public web pages (http, https) are allowed: they name upstream projects,
never part of the contract."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from service.problems import PROBLEMS
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "bench" / "README.md",
    *sorted((ROOT / "profiles").glob("*.md")),
]
# [text](target), [name]: target, and the href/src of inline HTML.
LINKS = (
    re.compile(r"\]\(([^)\s]+)\)"),
    re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE),
    re.compile(r"""(?:href|src)=["']([^"']+)["']"""),
)
# A path written in backticks that climbs out of its folder: `../shared/seed/`.
CLIMBING = re.compile(r"`(\.\./[^`\s]*)`")
WEB = ("http://", "https://")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {slug(h) for h in re.findall(r"^#+\s+(.+)$", text, re.MULTILINE)}


def link_problems(page: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with each link of `page`: outside `root`, missing, no such heading."""
    text = page.read_text(encoding="utf-8")
    found = []
    for target in [t for pattern in LINKS for t in pattern.findall(text)]:
        if target.startswith(WEB):
            continue
        path_part, _, anchor = target.partition("#")
        if ":" in path_part or path_part.startswith("/"):  # file:, mailto:, an absolute path
            found.append(f"{target}: not a path inside the repository")
            continue
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.is_relative_to(root):
            found.append(f"{target}: outside the repository")
        elif not path.exists():
            found.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            found.append(f"{target}: no such heading")
    for written in CLIMBING.findall(text):
        if not (page.parent / written).resolve().is_relative_to(root):
            found.append(f"`{written}`: names a path outside the repository")
    return found


def test_every_setting_is_in_the_readme_settings_table() -> None:
    table = ROOT.joinpath("README.md").read_text(encoding="utf-8").split("## Settings", 1)[1]
    table = table.split("\n## ", 1)[0]
    missing = [f.name.upper() for f in fields(Settings) if f"`{f.name.upper()}`" not in table]
    assert missing == []


def test_every_link_stays_inside_the_repository_and_resolves() -> None:
    broken = [f"{page.relative_to(ROOT)} → {p}" for page in PAGES for p in link_problems(page)]
    assert broken == []
    assert len(PAGES) >= 9  # README, five docs, bench/README, profiles' README and HOTSPOTS


def test_the_link_check_refuses_what_a_clone_lacks(tmp_path: Path) -> None:
    # The check itself, on a repository made for it: docs/probe.md beside docs/api.md.
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "api.md").write_text("# API\n## Error codes\n", encoding="utf-8")
    page = tmp_path / "docs" / "probe.md"
    page.write_text(
        "# Probe\n[contract](../../shared/SPEC.md) [gone](missing.md) [file](file:///etc/hosts)\n"
        "[ok](api.md#error-codes) [no heading](api.md#no-such-heading) [web](https://example.org)\n"
        "[self](#probe) `../../shared/seed/`\n",
        encoding="utf-8",
    )
    assert link_problems(page, root=tmp_path) == [
        "../../shared/SPEC.md: outside the repository",
        "missing.md: no such file",
        "file:///etc/hosts: not a path inside the repository",
        "api.md#no-such-heading: no such heading",
        "`../../shared/seed/`: names a path outside the repository",
    ]


def test_docs_api_lists_every_error_code_with_its_status() -> None:
    text = ROOT.joinpath("docs", "api.md").read_text(encoding="utf-8")
    table = text.split("## Error codes", 1)[1]
    listed = {
        code: int(status)
        for code, status in re.findall(r"^\| `(\w+)` \| (\d{3}) \|", table, re.MULTILINE)
    }
    assert listed == {code: status for code, (status, _) in PROBLEMS.items()}
