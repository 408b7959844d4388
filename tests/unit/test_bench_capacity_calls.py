"""The capacity report's table of how each service window reached the database (bench/report.py
database_calls(), from bench/waits.py calls_shape() around each window)."""

from __future__ import annotations

from typing import Any

from bench import report


def window(rps: float, calls: dict[str, float | None] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"rps": rps, "service_cpu_us_per_request": 40.0, "non_2xx": 0}
    if calls is not None:
        entry["calls"] = calls
    return entry


def test_each_service_window_with_calls_gets_a_row_and_the_rest_none() -> None:
    shape = {"calls_per_s": 310.4, "requests_per_call": 64.62, "call_ms": 1.234}
    idle = {"calls_per_s": 0.0, "requests_per_call": None, "call_ms": None}
    endpoints = {
        "floor-asgi": window(60_000, None),  # a floor: no /metrics, no row
        "healthz": window(70_000, {**idle, "queue_wait_ms": None}),
        "my-investments-10": window(20_000, {**shape, "queue_wait_ms": None}),
    }
    lines = report.capacity(
        {"capacity": {"endpoints": endpoints, "connections": 500, "seconds": 10}}
    )
    assert "| my-investments-10 | 310 | 64.6 | 1.23 | — |" in lines
    assert "| healthz | 0 | — | — | — |" in lines
    assert not any(line.startswith("| floor-asgi | ") and line.count("|") == 6 for line in lines)


def test_a_run_without_scrapes_has_no_such_table() -> None:
    endpoints = {"healthz": window(70_000, None)}
    lines = report.capacity(
        {"capacity": {"endpoints": endpoints, "connections": 500, "seconds": 10}}
    )
    assert not any("reached the database" in line for line in lines)
