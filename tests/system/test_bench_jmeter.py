"""The bench's JMeter scenario runs from its recipe: `just bench-jmeter 5 3 --quick` (5 threads x
1 warm-up request and 3 measured ones of each API, all started at once) on a fresh database of
the test session's server, with Debian's JMeter 2.13 through the plan and launcher of bench/jmx/:
one JVM per API and target, six in all.

Checks the path, not the speed: every API was measured on the service and on the floor with no
error, the invests of both runs reached the ledger, the report sets the figures beside the
seed's, and the wire's figures (BENCH_JMETER_WIRE=1: tcpdump) pair every measured request. Needs
Debian's jmeter, jmeter-http and a JDK, and tcpdump, which .ci/run installs; without JMeter the
test fails, unless a developer set ALLOW_JMETER_SKIP=1 (.ci/run unsets it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bench import jmeter, wire
from harness.postgres import psql
from tests.support import ROOT, drop_database, new_database

pytestmark = pytest.mark.system

THREADS, LOOPS, WARMUP = 5, 3, 1


def require_jmeter() -> None:
    lacking = jmeter.missing() + (["tcpdump"] if wire.missing() else [])
    if not lacking:
        return
    reason = f"Debian's {', '.join(lacking)} not installed"
    if os.environ.get("ALLOW_JMETER_SKIP") == "1":
        pytest.skip(reason)
    pytest.fail(f"{reason}\n(.ci/run installs them; ALLOW_JMETER_SKIP=1 skips this test)")


def test_the_jmeter_recipe_measures_every_api_and_the_floor(
    postgres_server: str, tmp_path: Path
) -> None:
    require_jmeter()
    just = shutil.which("just")
    assert just is not None, "`pip install rust-just`: the one prerequisite"
    url = new_database(postgres_server)
    try:
        done = subprocess.run(
            [just, "bench-jmeter", str(THREADS), str(LOOPS), "--quick", "--database-url", url,
             "--results-dir", str(tmp_path)],
            cwd=ROOT, env={**os.environ, "BENCH_JMETER_WARMUP_LOOPS": str(WARMUP),
                           "BENCH_JMETER_RAMPUP": "0", "BENCH_JMETER_WIRE": "1"},
            capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        invested = psql(
            url,
            "SELECT count(*) FROM user_investment_goods WHERE invest_date > now() - interval '1 day'",
        )
    finally:
        drop_database(postgres_server, url)

    [path] = tmp_path.glob("*-jmeter.json")
    results = json.loads(path.read_text())
    assert results["only"] == "jmeter"
    assert results["settings"]["workers"] == 2 and results["settings"]["db_pool_size"] == 50
    j = results["scenarios"]["J"]
    assert j["plan"] == {"threads": THREADS, "loops": LOOPS, "rampup": 0, "warmup_loops": WARMUP}
    assert j["jmeter"].startswith("2.13")
    for target in ("service", "floor"):
        for api in ("list", "invest", "my-investments"):
            figures = j[target][api]
            assert figures["requests"] == THREADS * LOOPS, (target, api, figures)
            assert figures["warmup"]["requests"] == THREADS * WARMUP, (target, api, figures)
            assert figures["errors"] == figures["warmup"]["errors"] == 0, (target, api, figures)
            assert figures["max_ms"] >= figures["p99_ms"] >= figures["p50_ms"], (target, api)
            # The wire saw each thread's connection and its measured requests, none dropped,
            # each within JMeter's time for it (JMeter counts whole milliseconds).
            seen = figures["wire"]
            assert seen["connections"] == THREADS and seen["dropped"] == 0, (target, api, seen)
            assert seen["server"]["requests"] == seen["jmeter"]["requests"] == THREADS * LOOPS
            assert 0 < seen["server"]["max_ms"] <= seen["jmeter"]["max_ms"] + 1, (target, api)
    # the service's invests, the warm-up's too: each one ledger row
    assert int(invested) == THREADS * (WARMUP + LOOPS)
    assert len(j["goals"]) == 9
    text = path.with_suffix(".md").read_text()
    assert "## J — the seed's own tool: Apache JMeter, one API at a time" in text
    assert "| invest | 3,636 |" in text
    assert "as JMeter and as the wire saw them" in text
