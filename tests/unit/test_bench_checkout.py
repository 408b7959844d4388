"""A bench report says which code it measured: the bench's own checkout, dirty only when a file
other than the reports of earlier runs changed, or another checkout (BENCH_SERVICE_CHECKOUT, a
worktree of an earlier commit for a before/after in one session) named with its commit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report, run
from harness import ROOT
from tests.unit.test_jmeter import _results


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "service.py").write_text("x = 1\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    return tmp_path


def test_earlier_reports_do_not_make_a_checkout_dirty(repo: Path) -> None:
    assert not run.dirty(repo)
    (repo / "bench" / "results" / "20261207T000000Z-abc-capacity.md").write_text("report\n")
    assert not run.dirty(repo)
    (repo / "notes.py").write_text("y = 2\n")  # a new file elsewhere counts
    assert run.dirty(repo)
    (repo / "notes.py").unlink()
    (repo / "service.py").write_text("x = 2\n")  # a changed tracked file counts
    assert run.dirty(repo)


def test_another_checkout_is_named_in_the_report(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BENCH_SERVICE_CHECKOUT", raising=False)
    assert run.service_checkout() is None
    monkeypatch.setenv("BENCH_SERVICE_CHECKOUT", str(repo))
    checkout = run.service_checkout()
    assert checkout is not None
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, text=True,
                         capture_output=True, check=True).stdout.strip()  # fmt: skip
    assert checkout == {"path": str(repo.resolve()), "git_sha": sha, "git_dirty": False}

    results = _results()
    results["meta"]["service_checkout"] = checkout
    text = report.markdown(results, {})
    assert f"`python -m service run` of another checkout, {repo.resolve()} at {sha}," in text
    del results["meta"]["service_checkout"]  # the reports written before say nothing of it
    assert "`python -m service run`, WORKERS=2" in report.markdown(results, {})


def test_a_report_is_rendered_again_from_its_json_by_the_command(
    tmp_path: Path, repo: Path
) -> None:
    """`python -m bench.report <json>` (the module run as a script, every helper defined by
    then) writes the same header from a run's results, the other checkout named."""
    results = _results()
    results["meta"]["service_checkout"] = {"path": str(repo), "git_sha": "abc1234",
                                           "git_dirty": True}  # fmt: skip
    source = tmp_path / "run.json"
    source.write_text(json.dumps(results))
    done = subprocess.run([sys.executable, "-m", "bench.report", str(source)], cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "run.md").read_text()
    assert f"`python -m service run` of another checkout, {repo} at abc1234, dirty," in text
