"""bench/jmeter.py: JMeter's results (JTL) read back into each API's figures, the goals judged
from them, and the report's section; bench/jmx/seed.jmx keeps the seed's scenario by default.

The JTL files in tests/unit/jtl/ were written by Debian's JMeter 2.13 running bench/jmx/seed.jmx
through bench/jmx/SeedJMeter.java with bench/jmx/jtl.properties: `service-invest.jtl` and
`floor-list.jtl` by a smoke run of `just bench-jmeter 5 3 --quick` (5 threads x 3 requests);
`no-answer-503-404.jtl` (1 thread x 12 my-investments requests) against a loopback server that
answered request n with 200, closed the kept-alive connection without answering, 503 and 404 in
turn; `connection-refused.jtl` (2 threads x 2 invests) against a port nothing listened on.
"""

from __future__ import annotations

import csv
import math
import statistics
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench import dataset, jmeter, report

JTL = Path(__file__).parent / "jtl"


def elapsed_column(name: str) -> list[int]:
    """The elapsed times of a JTL, read with nothing but the csv module."""
    with (JTL / name).open(newline="") as handle:
        return [int(row[1]) for row in list(csv.reader(handle))[1:]]


def nearest_rank(values: list[int], fraction: float) -> float:
    """The smallest value at or below which `fraction` of the values lie."""
    return float(sorted(values)[max(0, math.ceil(len(values) * fraction) - 1)])


def test_a_services_run_is_read_into_its_figures() -> None:
    samples = jmeter.read_jtl(JTL / "service-invest.jtl")
    elapsed = elapsed_column("service-invest.jtl")

    assert len(samples) == len(elapsed) == 15
    assert {s.label for s in samples} == {"invest"}
    figures = jmeter.summarise(samples)["invest"]
    assert figures["requests"] == 15
    assert figures["avg_ms"] == round(statistics.fmean(elapsed), 2)
    assert figures["p50_ms"] == nearest_rank(elapsed, 0.50)
    assert figures["p99_ms"] == nearest_rank(elapsed, 0.99) == max(elapsed) == 59.0
    assert figures["max_ms"] == 59.0
    assert figures["errors"] == figures["no_answer"] == 0
    assert figures["errors_by_kind"] == {}
    # 15 requests from the first sent (…239201) to the last answered (…239834 + 7 ms)
    assert figures["rps"] == round(15 * 1000 / (239834 + 7 - 239201), 1)


def test_failed_samples_are_counted_by_kind_and_no_answer_apart() -> None:
    samples = jmeter.read_jtl(JTL / "no-answer-503-404.jtl")
    figures = jmeter.summarise(samples)["my-investments"]

    assert figures["requests"] == 12
    assert figures["errors"] == 9  # a 503, a 404 and a closed connection, three times each
    assert figures["no_answer"] == 3
    assert figures["errors_by_kind"] == {
        "NoHttpResponseException": 3, "HTTP 503": 3, "HTTP 404": 3,
    }  # fmt: skip
    # every request, answered or not, counts in the times (as JMeter's own reports count them)
    assert figures["avg_ms"] == round(statistics.fmean(elapsed_column("no-answer-503-404.jtl")), 2)
    closed = [s for s in samples if not s.answered]
    assert [s.failure for s in closed] == ["NoHttpResponseException"] * 3
    assert all(s.message.endswith("failed to respond") for s in closed)


def test_a_refused_connection_is_no_answer_too() -> None:
    figures = jmeter.summarise(jmeter.read_jtl(JTL / "connection-refused.jtl"))["invest"]
    assert figures["errors"] == figures["no_answer"] == 4
    assert figures["errors_by_kind"] == {"ConnectException": 4}


def test_samples_of_several_labels_are_summarised_apart() -> None:
    samples = [
        *jmeter.read_jtl(JTL / "service-invest.jtl"),
        *jmeter.read_jtl(JTL / "floor-list.jtl"),
    ]
    figures = jmeter.summarise(samples)
    assert set(figures) == {"invest", "list"}
    assert figures["list"]["avg_ms"] == round(statistics.fmean(elapsed_column("floor-list.jtl")), 2)


def _figures(**service: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    floor = {api: {"avg_ms": 4.0, "p99_ms": 10.0, "errors": 0} for api in report.APIS}
    return {"service": service, "floor": floor}


def _verdicts(figures: dict[str, dict[str, dict[str, Any]]]) -> dict[tuple[str, str], Any]:
    return {
        (r["endpoint"], r["figure"]): r["met"] for r in jmeter.goals(jmeter.with_goals(figures))
    }


def test_the_goals_are_judged_against_the_seed_and_the_floor_of_the_run() -> None:
    verdicts = _verdicts(
        _figures(
            list={"avg_ms": 39.0, "p99_ms": 30.0, "errors": 0},  # 100.05x the seed, 3x the floor
            invest={"avg_ms": 36.37, "p99_ms": 30.1, "errors": 0},
            **{"my-investments": {"avg_ms": 10.0, "p99_ms": 20.0, "errors": 1}},
        )
    )
    assert verdicts[("list", "x the seed's average")] is True
    assert verdicts[("list", "p99 / floor's p99")] is True  # bounds are inclusive
    assert verdicts[("list", "errors, warm-up included")] is True
    assert verdicts[("invest", "x the seed's average")] is False  # 99.97x, shown as 99.97
    assert verdicts[("invest", "p99 / floor's p99")] is False  # 3.01x
    assert verdicts[("my-investments", "errors, warm-up included")] is False
    assert verdicts[("my-investments", "x the seed's average")] is True


def test_an_error_in_the_warm_up_fails_the_errors_goal() -> None:
    """The warm-up's samples stay out of the figures, not out of the errors goal: a client
    that got an error got it, whenever it was."""
    warm = {"requests": 5, "avg_ms": 900.0, "p99_ms": 2000.0, "errors": 2}
    figures = _figures(invest={"avg_ms": 10.0, "p99_ms": 20.0, "errors": 0, "warmup": warm})
    rows = {(r["endpoint"], r["figure"]): r for r in jmeter.goals(jmeter.with_goals(figures))}
    assert rows[("invest", "errors, warm-up included")]["measured"] == 2
    assert rows[("invest", "errors, warm-up included")]["met"] is False
    assert rows[("invest", "x the seed's average")]["met"] is True  # 10 ms: the measured ones


def test_a_goal_is_judged_before_its_figure_is_rounded() -> None:
    figures = _figures(invest={"avg_ms": 36.3637, "p99_ms": 30.0001, "errors": 0})
    rows = {(r["endpoint"], r["figure"]): r for r in jmeter.goals(jmeter.with_goals(figures))}
    assert rows[("invest", "x the seed's average")]["measured"] == 99.99  # 99.9898…
    assert rows[("invest", "x the seed's average")]["met"] is False
    assert rows[("invest", "p99 / floor's p99")]["measured"] == 3.0  # 3.00001
    assert rows[("invest", "p99 / floor's p99")]["met"] is False


def test_an_api_without_figures_meets_no_goal() -> None:
    verdicts = _verdicts(_figures(list={"avg_ms": 5.0, "p99_ms": 10.0, "errors": 0}))
    assert verdicts[("invest", "x the seed's average")] is None
    assert verdicts[("invest", "p99 / floor's p99")] is None
    assert verdicts[("list", "p99 / floor's p99")] is True


def _results() -> dict[str, Any]:
    """A `--only jmeter` run's results, its figures read from the JTL samples."""
    service = {
        "list": jmeter.summarise(jmeter.read_jtl(JTL / "floor-list.jtl"))["list"],
        "invest": jmeter.summarise(jmeter.read_jtl(JTL / "service-invest.jtl"))["invest"],
        "my-investments": jmeter.summarise(jmeter.read_jtl(JTL / "no-answer-503-404.jtl"))[
            "my-investments"
        ],
    }
    floor = {api: {"avg_ms": 4.0, "p99_ms": 50.0, "errors": 0} for api in report.APIS}
    apis = jmeter.with_goals({"service": service, "floor": floor})
    j = {"plan": {"threads": 5, "loops": 3, "rampup": 1, "warmup_loops": 1},
         "jmeter": "2.13.19691222", "service": apis, "floor": floor,
         "goals": jmeter.goals(apis)}  # fmt: skip
    return {
        "meta": {"utc": "20261206T000000Z", "git_sha": "abc1234", "git_dirty": False,
                 "machine": {"cores": 2, "cpu_model": "x", "memory_gib": 4}, "versions": {}},
        "settings": {"workers": 2, "db_pool_size": 50, "locust_processes": 2, "users": 100},
        "protocol": {"name": "quick"}, "dataset": {"shape": {"investments": 10_000}},
        "wall_seconds": 30.0, "only": "jmeter", "scenarios": {"J": j}, "limits": {},
    }  # fmt: skip


def test_the_report_sets_each_api_beside_the_seed_and_the_floor() -> None:
    text = report.markdown(_results(), {})
    section = text.split("## J — the seed's own tool", 1)[1]

    assert "5 threads, each sending 3 requests of one API (15 per API)" in section
    assert "WORKERS=2 and DB_POOL_SIZE=50" in section
    invest = next(line for line in section.splitlines() if line.startswith("| invest |"))
    cells = [c.strip() for c in invest.strip("|").split("|")]
    avg = statistics.fmean(elapsed_column("service-invest.jtl"))
    assert cells[1] == "3,636" and cells[2] == f"{avg:.1f}"
    assert cells[3] == f"{3636 / round(avg, 2):,.0f}×"
    assert cells[5] == "59.0"  # p99
    assert cells[9:11] == ["0", "0"]  # errors, of which no answer
    assert cells[-1] == f"{59 / 50:.2f}"  # p99 over the floor's
    mine = next(line for line in section.splitlines() if line.startswith("| my-investments |"))
    assert [c.strip() for c in mine.strip("|").split("|")][9:11] == ["9", "3"]
    assert "- service my-investments: 3 × NoHttpResponseException, 3 × HTTP 503, 3 × HTTP 404" in (
        section
    )
    assert "| my-investments | errors, warm-up included | <= 0 | 9 | **not met** |" in section
    assert "| invest | errors, warm-up included | <= 0 | 0 | met |" in section


def test_a_run_without_scenario_j_has_no_section() -> None:
    assert jmeter.section({"scenarios": {}}) == []


def test_the_plans_counts_come_from_the_environment() -> None:
    assert jmeter.Plan.from_env({}) == jmeter.Plan(threads=500, loops=60, rampup=1, warmup_loops=20)
    env = {"BENCH_JMETER_THREADS": "5", "BENCH_JMETER_LOOPS": "3", "BENCH_JMETER_WARMUP_LOOPS": "0"}
    assert jmeter.Plan.from_env(env) == jmeter.Plan(threads=5, loops=3, rampup=1, warmup_loops=0)
    with pytest.raises(ValueError, match="threads, loops >= 1"):
        jmeter.Plan.from_env({"BENCH_JMETER_LOOPS": "0"})


def test_the_plan_is_the_seeds_scenario_by_default() -> None:
    """bench/jmx/seed.jmx: 500 threads x 60 requests unless told otherwise, one sampler per API
    named as the report names them, each kept alive over HttpClient4, chosen by `api`."""
    tree = ET.parse(jmeter.PLAN)
    props = {p.get("name"): p.text for p in tree.iter() if p.get("name")}
    assert props["ThreadGroup.num_threads"] == "${__P(threads,500)}"
    assert props["LoopController.loops"] == "${__P(loops,60)}"
    assert props["ThreadGroup.ramp_time"] == "${__P(rampup,1)}"
    assert props["HTTPSampler.implementation"] == "HttpClient4"
    assert props["SwitchController.value"] == "${__P(api,list)}"
    samplers = list(tree.iter("HTTPSamplerProxy"))
    assert [s.get("testname") for s in samplers] == list(report.APIS)
    for sampler in samplers:
        keepalive = sampler.find("boolProp[@name='HTTPSampler.use_keepalive']")
        assert keepalive is not None and keepalive.text == "true"
    methods = [s.findtext("stringProp[@name='HTTPSampler.method']") for s in samplers]
    assert methods == ["GET", "POST", "GET"]


def test_the_apis_to_run_come_from_the_environment() -> None:
    assert jmeter.apis_from_env({}) == report.APIS
    assert jmeter.apis_from_env({"BENCH_JMETER_APIS": "invest"}) == ("invest",)
    both = {"BENCH_JMETER_APIS": "my-investments, list"}
    assert jmeter.apis_from_env(both) == ("list", "my-investments")  # the report's order
    with pytest.raises(ValueError, match="mine not among"):
        jmeter.apis_from_env({"BENCH_JMETER_APIS": "invest,mine"})


def test_the_report_gives_where_the_service_s_requests_waited() -> None:
    results = _results()
    waited = ["db_queue_wait_seconds{queue=invest_held}   12   150.000 ms  250 ms / 500 ms"]
    results["scenarios"]["J"]["service"]["invest"]["waits"] = waited
    section = report.markdown(results, {}).split("## J — the seed's own tool", 1)[1]
    assert "Where the service's invest requests waited" in section
    assert f"```\n{waited[0]}\n```" in section
    assert "Where the service's list requests waited" not in section


def test_each_api_is_settled_then_warmed_up_and_measured_in_one_jmeter_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Stage.runs per API: PostgreSQL settled, then one JMeter run of `warmup_loops + loops`
    requests a thread; each thread's first `warmup_loops` requests (by the time it sent them)
    are the warm-up, summarised apart, and the rest are the figures. JMeter faked by a recorded
    JTL (5 threads x 3 requests), its rows reversed (JMeter writes a row when it is answered)."""
    events: list[tuple[str, ...]] = []
    header, *body = (JTL / "service-invest.jtl").read_text().splitlines()

    def run_plan(classes: Path, jtl: Path, properties: dict[str, Any], timeout: float) -> Path:
        events.append(("jmeter", jtl.name, str(properties["api"]), str(properties["loops"])))
        assert (properties["host"], properties["port"]) == ("127.0.0.1", 8123)
        assert (properties["threads"], properties["rampup"]) == (5, 0)
        assert timeout == 60 + 5 * int(properties["loops"]) * 0.02
        jtl.parent.mkdir(parents=True, exist_ok=True)
        rows = [header, *reversed(body)]
        jtl.write_text("\n".join(r.replace(",invest,", f",{properties['api']},") for r in rows))
        return jtl

    monkeypatch.setattr(jmeter, "missing", lambda: [])
    monkeypatch.setattr(jmeter, "launcher", lambda: tmp_path)
    monkeypatch.setattr(jmeter, "run_plan", run_plan)
    # The service's /metrics around each run: none here (nothing listens).
    monkeypatch.setattr(jmeter, "FLUSH_WAIT", 0)
    monkeypatch.setattr(jmeter.waits, "scrape", lambda base_url: {})
    bench = SimpleNamespace(
        protocol=SimpleNamespace(shape=dataset.Shape(investments=10_000)),
        work=tmp_path,
        settle=lambda before: events.append(("settle", before)),
    )
    plan = jmeter.Plan(threads=5, loops=2, rampup=0, warmup_loops=1)
    figures = jmeter.Stage(bench, plan).runs("service", "http://127.0.0.1:8123")  # type: ignore[arg-type]

    assert events == [
        step
        for api in report.APIS
        for step in (("settle", f"J service {api}"), ("jmeter", f"service-{api}.jtl", api, "3"))
    ]
    samples = jmeter.read_jtl(JTL / "service-invest.jtl")
    threads = {s.thread for s in samples}
    assert len(threads) == 5
    firsts = [
        min((s for s in samples if s.thread == t), key=lambda s: s.started_ms) for t in threads
    ]
    rest = [s for s in samples if s not in firsts]
    for api in report.APIS:
        assert figures[api]["requests"] == 10, api  # 5 threads x 2, not the warm-up's 5
        assert figures[api]["avg_ms"] == round(statistics.fmean(s.elapsed_ms for s in rest), 2)
        assert figures[api]["warmup"]["requests"] == 5
        warm_avg = statistics.fmean(s.elapsed_ms for s in firsts)
        assert figures[api]["warmup"]["avg_ms"] == round(warm_avg, 2)
        assert figures[api]["jtl"] == str(tmp_path / "jmeter" / f"service-{api}.jtl")
    no_warmup = jmeter.Stage(bench, jmeter.Plan(threads=5, loops=3, rampup=0, warmup_loops=0))
    events.clear()
    figures = no_warmup.runs("floor", "http://127.0.0.1:8123")  # type: ignore[arg-type]
    assert [e for e in events if e[0] == "jmeter"] == [
        ("jmeter", f"floor-{api}.jtl", api, "3") for api in report.APIS
    ]
    for api in report.APIS:
        assert figures[api]["requests"] == 15 and "warmup" not in figures[api], api


def test_the_report_gives_the_warm_up_apart() -> None:
    results = _results()
    warm = {"requests": 5, "avg_ms": 812.0, "p99_ms": 2085.0, "max_ms": 2085.0, "errors": 1,
            "errors_by_kind": {"NoHttpResponseException": 1}}  # fmt: skip
    results["scenarios"]["J"]["service"]["invest"]["warmup"] = warm
    section = report.markdown(results, {}).split("## J — the seed's own tool", 1)[1]
    assert "each thread first sends 1 requests in the same JVM" in section
    assert "| service | invest | 5 | 812.0 | 2,085.0 | 2,085.0 | 1 |" in section
    assert "- service invest (warm-up): 1 × NoHttpResponseException" in section
