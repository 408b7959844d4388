"""bench/report.py: the capacity targets (issue 10's, and issue 18's ratios to the server's floor)
are judged from the run's figures."""

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


def test_every_endpoint_is_a_ratio_to_the_floors_of_the_same_run() -> None:
    endpoints = report.with_ratios(
        {"floor-asgi": {"rps": 100_000.0}, "floor-rsgi": {"rps": 125_000.0},
         "healthz": {"rps": 90_000.0}, "invest": {"rps": 20_000.0}, "list": {"error": "wrk"}}
    )  # fmt: skip

    assert endpoints["healthz"]["rps_vs_floor_asgi"] == 0.9
    assert endpoints["healthz"]["rps_vs_floor_rsgi"] == 0.72
    assert endpoints["invest"]["rps_vs_floor_asgi"] == 0.2
    assert endpoints["invest"]["rps_vs_healthz"] == 0.222
    assert endpoints["floor-asgi"]["rps_vs_floor_asgi"] == 1.0
    assert endpoints["list"]["rps_vs_floor_asgi"] is None  # wrk failed: no figure, no ratio


def test_a_run_without_the_floor_gives_no_floor_ratio() -> None:
    endpoints = report.with_ratios({"healthz": {"rps": 90_000.0}, "list": {"rps": 45_000.0}})

    assert endpoints["list"] == {"rps": 45_000.0, "rps_vs_healthz": 0.5}
    verdicts = report.capacity_targets(endpoints, report.FLOOR_TARGETS)
    assert {row["met"] for row in verdicts if row["figure"] == "× raw-ASGI floor"} == {None}


def _run(**changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A capacity stage that meets every issue-18 target, with `changes` over its figures."""
    meets = {"avg_ms": 10.0, "p99_ms": 30.0, "non_2xx": 0, "socket_errors": 0,
             "service_cpu_us_per_request": 45.0, "postgres_cpu_us_per_request": 40.0}  # fmt: skip
    rps = {"floor-asgi": 100_000.0, "floor-asgi-post": 55_000.0, "floor-rsgi": 130_000.0,
           "healthz": 90_000.0,
           "list": 60_000.0, "invest": 20_000.0, "my-investments": 15_000.0,
           "my-investments-10": 18_000.0, "my-investments-40": 10_000.0}  # fmt: skip
    endpoints = {name: {"rps": value, **meets} for name, value in rps.items()}
    for name, figures in changes.items():
        endpoints[name.replace("_", "-")].update(figures)
    return report.with_ratios(endpoints)


def _floor_verdicts(endpoints: dict[str, dict[str, Any]]) -> dict[tuple[str, str], bool | None]:
    rows = report.capacity_targets(endpoints, report.FLOOR_TARGETS)
    return {(r["endpoint"], r["figure"]): r["met"] for r in rows}


def test_issue_18_targets_are_met_at_their_bounds() -> None:
    verdicts = _floor_verdicts(_run())
    assert set(verdicts.values()) == {True}
    assert ("my-investments-10", "× raw-ASGI floor") in verdicts
    assert ("my-investments-40", "non-2xx answers") in verdicts


def test_issue_18_targets_are_not_met_past_their_bounds() -> None:
    verdicts = _floor_verdicts(
        _run(healthz={"rps": 89_900.0}, my_investments_40={"rps": 9_900.0, "non_2xx": 1},
             invest={"p99_ms": 30.1, "service_cpu_us_per_request": 45.1},
             my_investments_10={"postgres_cpu_us_per_request": 40.1})
    )  # fmt: skip
    failed = {key for key, met in verdicts.items() if met is False}
    assert failed == {
        ("healthz", "× raw-ASGI floor"),
        ("my-investments-40", "× raw-ASGI floor"),
        ("my-investments-40", "non-2xx answers"),
        ("invest", "p99 / avg"),
        ("invest", "service CPU µs / request"),
        ("my-investments-10", "PostgreSQL CPU µs / request"),
    }


def test_a_figure_just_past_its_bound_is_not_met_though_it_shows_rounded_to_it() -> None:
    # 19,996 / 100,000 is 0.19996 (0.2 to three decimals), 30.04 / 10 is 3.004 (3.0 to two):
    # judged before rounding, neither is met.
    endpoints = _run(invest={"rps": 19_996.0, "p99_ms": 30.04})
    rows = {(r["endpoint"], r["figure"]): r
            for r in report.capacity_targets(endpoints, report.FLOOR_TARGETS)}  # fmt: skip
    ratio, tail = rows[("invest", "× raw-ASGI floor")], rows[("invest", "p99 / avg")]
    assert (ratio["measured"], ratio["met"]) == (0.2, False)
    assert (tail["measured"], tail["met"]) == (3.0, False)


def test_the_capacity_table_shows_the_floors_ratios_and_non_2xx_answers() -> None:
    after = {"run": "after", "requests": 900, "non_2xx": 2, "non_2xx_by_status": {"503": 2},
             "non_2xx_by_code": {"SERVICE_UNAVAILABLE": 2}}  # fmt: skip
    warmup = {"run": "warm-up", "requests": 800, "non_2xx": 0}
    endpoints = _run(invest={"non_2xx": 6, "non_2xx_samples": [warmup, after]})
    endpoints["my-investments-40"]["items_per_page"] = {"target": 40, "mean": 40.2}
    lines = report.capacity({"capacity": {"endpoints": endpoints, "postgres_root_pid": 1}})

    rows: dict[str, str] = {}
    for line in lines:  # the first row of each endpoint: the capacity table's (then targets')
        rows.setdefault(line.split(" | ")[0], line)
    assert rows["| floor-asgi"].split(" | ")[1:5] == ["100,000", "1.00", "0.77", "1.11"]
    assert rows["| healthz"].split(" | ")[1:5] == ["90,000", "0.90", "0.69", "1.00"]
    assert rows["| floor-asgi-post"].split(" | ")[1:3] == ["55,000", "0.55"]  # invest's POST
    assert "| my-investments-40 (40.2 items)" in rows
    assert (
        "- invest: 6 in the measured window; 2 of 900 in the after run (by status 503 × 2; "
        "by code SERVICE_UNAVAILABLE × 2)"
    ) in lines
    assert not any(line.startswith("- list") for line in lines)  # no non-2xx, no bullet
    assert any(line.startswith("Targets (issue 18") for line in lines)
