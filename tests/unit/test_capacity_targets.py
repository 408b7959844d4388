"""bench/report.py: issue 10's capacity targets are judged from the run's figures."""

from __future__ import annotations

from typing import Any

from bench import report


def _verdicts(endpoints: dict[str, dict[str, Any]]) -> dict[tuple[str, str], bool | None]:
    return {(r["endpoint"], r["figure"]): r["met"] for r in report.capacity_targets(endpoints)}


def test_each_target_is_met_or_not_from_the_figures() -> None:
    invest = {"rps": 15_000.0, "avg_ms": 35.0, "p99_ms": 106.0, "non_2xx": 0, "socket_errors": 1,
              "service_cpu_us_per_request": 60.0, "postgres_cpu_us_per_request": 61.0}  # fmt: skip
    mine = {"rps": 17_999.0, "avg_ms": 20.0, "p99_ms": 60.0, "service_cpu_us_per_request": None}
    verdicts = _verdicts({"invest": invest, "my-investments": mine, "list": {"rps": 50_000.0}})

    assert verdicts[("invest", "req/s")] is True  # bounds are inclusive
    assert verdicts[("invest", "avg ms")] is True
    assert verdicts[("invest", "p99 / avg")] is False  # 3.03× the average
    assert verdicts[("invest", "errors (non-2xx + socket)")] is False  # a socket error counts
    assert verdicts[("invest", "service CPU µs / request")] is True
    assert verdicts[("invest", "PostgreSQL CPU µs / request")] is False
    assert verdicts[("my-investments", "req/s")] is False
    assert verdicts[("my-investments", "p99 / avg")] is True
    assert verdicts[("my-investments", "service CPU µs / request")] is None  # not measured
    assert verdicts[("list", "req/s")] is True


def test_a_run_without_wrk_measures_no_target() -> None:
    assert set(_verdicts({}).values()) == {None}
    lines = report.capacity({"capacity": {"skipped": "wrk is not installed"}})
    assert "Skipped: wrk is not installed." in lines
