"""bench/caps.py without a database: the BENCH_CAPS switch, the side-by-side summary of invest with
caps off and on, and its report section."""

from __future__ import annotations

import pytest

from bench import caps


@pytest.mark.parametrize(("value", "chosen"), [("", None), ("off", None), ("act", "act"),
                                               (" ACT ", "act")])  # fmt: skip
def test_the_switch_is_act_or_off(value: str, chosen: str | None) -> None:
    assert caps.mode({"BENCH_CAPS": value}) == chosen
    assert caps.mode({}) is None


def test_an_unknown_switch_value_stops_the_run() -> None:
    with pytest.raises(ValueError, match="BENCH_CAPS"):
        caps.mode({"BENCH_CAPS": "on"})


def test_the_acts_caps_for_individuals() -> None:
    assert caps.ACT["general"] == {
        "per_product": 5_000_000, "total": 30_000_000, "real_estate": 10_000_000,
    }  # fmt: skip
    assert caps.ACT["qualified"] == {
        "per_product": 20_000_000, "total": 100_000_000, "real_estate": None,
    }  # fmt: skip
    assert set(caps.ACT["professional"].values()) == {None}
    assert set(caps.NO_CAPS) == set(caps.ACT)


def test_the_summary_sets_each_sides_mean_side_by_side() -> None:
    passes = {
        "off": [{"rps": 1000.0, "p99_ms": 10.0, "errors": 0},
                {"rps": 1200.0, "p99_ms": 12.0, "errors": 0}],
        "on": [{"rps": 990.0, "p99_ms": 11.0, "errors": 1},
               {"rps": 1000.0, "p99_ms": 13.0, "errors": 0}],
    }  # fmt: skip
    figures = caps.summary(passes)
    assert (figures["rps_off"], figures["rps_on"]) == (1100.0, 995.0)
    assert (figures["p99_ms_off"], figures["p99_ms_on"]) == (11.0, 12.0)
    assert figures["on_vs_off"] == round(995 / 1100, 3)
    assert figures["errors"] == 1
    assert figures["service_cpu_us_per_request_on"] is None  # not measured: not made up


def test_the_report_section_shows_both_sides_or_nothing() -> None:
    assert caps.markdown({}) == []
    passes = {"off": [{"rps": 1000.0}], "on": [{"rps": 950.0}]}
    entry = {"mode": "act", "order": list(caps.ORDER), **passes, **caps.summary(passes)}
    lines = caps.markdown({"caps": entry})
    assert lines[0] == "## Invest with caps off and on (BENCH_CAPS=act)"
    assert "**0.95**" in lines[2] and "off, on, on, off" in lines[2]
    assert "| req/s | 1,000.0 | 950.0 |" in lines
