"""The bench suite still works: the quick protocol runs every scenario and writes its reports.

Runs `python -m bench.run --quick` as a subprocess against a fresh database on the test session's
server and checks the reports, not the speed: every scenario sent requests, S had no failures,
the opening rush (H) sold its product out exactly, with counters equal to the ledger, and the
capacity stage measured the server's floor next to every endpoint (also alone, `--only`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import plain
from tests.support import ROOT, drop_database, new_database

pytestmark = pytest.mark.system

APIS = ("list", "invest", "my-investments")


def run_quick_bench(
    postgres_server: str, results_dir: Path, timeout: float, *args: str, caps: str = ""
) -> None:
    """`python -m bench.run --quick *args` (BENCH_CAPS=`caps`) on a fresh database, dropped
    afterwards; it succeeds."""
    url = new_database(postgres_server)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.run", "--quick", *args, "--database-url", url,
             "--results-dir", str(results_dir)],
            cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
            env={**os.environ, "BENCH_CAPS": caps},
        )  # fmt: skip
    finally:
        drop_database(postgres_server, url)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_bench_quick_reports_every_scenario(postgres_server: str, tmp_path: Path) -> None:
    run_quick_bench(postgres_server, tmp_path, 240)

    [report] = tmp_path.glob("*.json")
    assert report.with_suffix(".md").read_text().startswith("# Bench run")
    assert len(list(tmp_path.glob("*.png"))) == 3
    results = json.loads(report.read_text())
    assert results["meta"]["machine"]["cores"] >= 1
    assert results["settings"]["db_pool_size"] == 50
    scenarios = results["scenarios"]

    assert scenarios["floor"]["requests"]["healthz"]["requests"] > 0
    for api in APIS:
        figures = scenarios["S"][api]["requests"][api]
        assert figures["requests"] > 0, api
        assert figures["failures"] == 0, api
        assert scenarios["M"]["requests"][api]["requests"] > 0, api

    rush = scenarios["H"]
    assert rush["requests"]["invest-hot"]["requests"] > 0
    assert rush["verification"] == {
        "sold_out": True,
        "sum_equals_total": True,
        "no_oversell": True,
        "counters_equal_ledger": True,
        "failed_requests": 0,
    }
    assert rush["ledger_sum"] == rush["total"]

    assert len(scenarios["G"]) == len(results["protocol"]["growth_sizes"])
    for point in scenarios["G"]:
        assert point["list"]["requests"]["list"]["requests"] > 0
        assert point["my-investments"]["requests"]["my-investments"]["requests"] > 0

    for name, figures in results["limits"]["pgbench"].items():
        assert figures.get("tps", 0) > 0, (name, figures)
    assert results["dataset"]["consistency_after_scenarios"]["ok"]
    assert_capacity(results)
    # PostgreSQL settled before every measured window: the G points, S, M, H and the capacity's
    assert len(results["settle"]) >= 2 * len(scenarios["G"]) + 5 + len(CAPACITY)
    assert all(entry["checkpoint"] for entry in results["settle"])


CAPACITY = ("floor-asgi", "floor-asgi-post", "floor-rsgi", "healthz", *APIS, "my-investments-10",
            "my-investments-40")  # fmt: skip


def assert_capacity(results: dict[str, Any]) -> None:
    """The capacity stage measured the floors and every endpoint, as ratios to the floors, and
    my investments at two page sizes (unless wrk is missing: then it says so)."""
    capacity = results["limits"]["capacity"]
    if shutil.which("wrk") is None:
        assert capacity == {"skipped": "wrk is not installed"}
        return
    endpoints = capacity["endpoints"]
    for name in CAPACITY:
        assert endpoints[name]["requests"] > 0, (name, endpoints[name])
        assert endpoints[name]["rps_vs_floor_asgi"] > 0, name
    assert endpoints["floor-asgi"]["service_processes"] == 1 + results["settings"]["workers"]
    small, large = (endpoints[f"my-investments-{n}"]["items_per_page"] for n in (10, 40))
    assert small["mean"] < large["mean"]
    assert {row["endpoint"] for row in capacity["floor_targets"]} == {
        "healthz", "list", "invest", "my-investments-10", "my-investments-40"
    }  # fmt: skip
    # The plain implementation (bench/plain.py) on the same load, unless Node is missing here.
    peer = capacity["plain"]
    if plain.missing() is not None:
        assert peer == {"skipped": plain.missing(), "ratios": {}}
        return
    for name in ("healthz", *APIS, "my-investments-10", "my-investments-40"):
        assert peer["endpoints"][name]["requests"] > 0, (name, peer["endpoints"][name])
        assert peer["endpoints"][name]["non_2xx"] == 0, (name, peer["endpoints"][name])
        assert peer["ratios"][name] > 0, name


def test_bench_capacity_alone(postgres_server: str, tmp_path: Path) -> None:
    """`--only capacity`: dataset D at once, then only the capacity stage and its report; with
    BENCH_CAPS=act, caps on and invest measured with caps off and on, side by side."""
    run_quick_bench(postgres_server, tmp_path, 240, "--only", "capacity", caps="act")
    [report] = tmp_path.glob("*-capacity.json")
    results = json.loads(report.read_text())
    assert results["only"] == "capacity"
    assert results["scenarios"] == {} and "pgbench" not in results["limits"]
    assert_capacity(results)
    caps = results["limits"]["caps"]
    assert (results["caps"], caps["mode"], caps["order"]) == (
        "act",
        "act",
        ["off", "on", "on", "off"],
    )
    assert len(caps["off"]) == len(caps["on"]) == 2 and caps["errors"] == 0
    assert caps["rps_off"] > 0 and caps["rps_on"] > 0 and caps["on_vs_off"] > 0
    text = report.with_suffix(".md").read_text()
    assert text.startswith("# Bench run") and "## Capacity (wrk, 500 connections)" in text
    assert "## Invest with caps off and on (BENCH_CAPS=act)" in text
    if plain.missing() is None:
        assert "## The plain implementation (Node, fastify, postgres.js)" in text
