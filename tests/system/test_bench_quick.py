"""The bench suite still works: the quick protocol runs every scenario and writes its reports.

Runs `python -m bench.run --quick` as a subprocess against a fresh database on the test session's
server and checks the reports, not the speed: every scenario sent requests, S had no failures,
the opening rush (H) sold its product out exactly, with counters equal to the ledger, and the
capacity stage measured the server's floor next to every endpoint, and invest with the Act's caps
off and on (BENCH_CAPS=act). One run of the protocol: `--only capacity` runs the same capacity
stage after dataset D (tests/unit/test_bench_run.py checks that dispatch, as the JMeter smoke
runs `--only jmeter` end to end).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import plain
from tests.support import ROOT, drop_database, have_wrk, new_database

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
    """With BENCH_CAPS=act: the caps on from dataset D on (none of the quick load comes near
    them), and the capacity stage also measures invest with them off and on, side by side."""
    run_quick_bench(postgres_server, tmp_path, 240, caps="act")

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
    # What the rush did, in the failure's message: the product's size, the time it took.
    told = {
        key: rush.get(key)
        for key in (
            "total",
            "ledger_sum",
            "sell_out_seconds",
            "accepted_per_second",
            "wall_s",
            "requests",
        )
    }
    told["S invest rps"] = scenarios["S"]["invest"]["requests"]["invest"]["rps"]
    assert rush["verification"] == {
        "sold_out": True,
        "sum_equals_total": True,
        "no_oversell": True,
        "counters_equal_ledger": True,
        "failed_requests": 0,
    }, told
    assert rush["ledger_sum"] == rush["total"]

    assert len(scenarios["G"]) == len(results["protocol"]["growth_sizes"])
    for point in scenarios["G"]:
        assert point["list"]["requests"]["list"]["requests"] > 0
        assert point["my-investments"]["requests"]["my-investments"]["requests"] > 0

    for name, figures in results["limits"]["pgbench"].items():
        assert figures.get("tps", 0) > 0, (name, figures)
    assert results["dataset"]["consistency_after_scenarios"]["ok"]
    assert_capacity(results)
    wrk = have_wrk()
    if wrk:  # the metrics passes: one off, one on (quick)
        overhead = results["limits"]["metrics_overhead"]
        assert set(overhead) == {"healthz", *APIS}
        for name, entry in overhead.items():
            assert len(entry["off_rps"]) == len(entry["on_rps"]) == 1, (name, entry)
            assert min(entry["off_rps"] + entry["on_rps"]) > 0, (name, entry)
        text = report.with_suffix(".md").read_text()
        assert "## Metrics overhead" in text and "once each, off then on" in text
        assert_caps(results, text)
    # PostgreSQL settled before every measured window: the G points, S, M, H and the capacity's
    windows = 2 * len(scenarios["G"]) + 5 + (len(CAPACITY) if wrk else 0)
    assert len(results["settle"]) >= windows
    assert all(entry["checkpoint"] for entry in results["settle"])


CAPACITY = ("floor-asgi", "floor-asgi-post", "floor-rsgi", "healthz", *APIS, "my-investments-10",
            "my-investments-40")  # fmt: skip


def assert_capacity(results: dict[str, Any]) -> None:
    """The capacity stage measured the floors and every endpoint, as ratios to the floors, and
    my investments at two page sizes (unless wrk is missing: then it says so)."""
    capacity = results["limits"]["capacity"]
    if not have_wrk():
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


def assert_caps(results: dict[str, Any], text: str) -> None:
    """BENCH_CAPS=act: invest measured with the caps off and on, in the order off, on, on, off,
    and the report's capacity, caps and plain implementation sections."""
    caps = results["limits"]["caps"]
    assert (results["caps"], caps["mode"], caps["order"]) == (
        "act",
        "act",
        ["off", "on", "on", "off"],
    )
    assert len(caps["off"]) == len(caps["on"]) == 2 and caps["errors"] == 0
    assert caps["rps_off"] > 0 and caps["rps_on"] > 0 and caps["on_vs_off"] > 0
    assert "## Capacity (wrk, 500 connections)" in text
    assert "## Invest with caps off and on (BENCH_CAPS=act)" in text
    if plain.missing() is None:
        assert "## The plain implementation (Node, fastify, postgres.js)" in text
