"""Scenario J: the seed's own load tool. Debian's Apache JMeter 2.13 runs the seed's plan
(bench/jmx/seed.jmx: 500 threads, each sending 60 requests of one API over a kept-alive
HttpClient4 connection) on the service, one API at a time, then the same plan on the raw ASGI
floor (bench/floor.py), and the JTL results are read back here.

    just bench-jmeter                    # installs jmeter, jmeter-http (and a JDK) when missing
    just bench-jmeter 5 3 --quick        # 5 threads x 3 requests per API on the quick dataset
    python -m bench.run --only jmeter --workers 2 --pool 50   # what the recipe runs

The plan's counts come from the environment (the recipe's parameters): BENCH_JMETER_THREADS
(500), BENCH_JMETER_LOOPS (60 measured requests per thread and API), BENCH_JMETER_RAMPUP (1 s,
JMeter's default) and BENCH_JMETER_WARMUP_LOOPS (20: each thread's first requests, sent by the
same JVM before its measured ones and not counted in the figures; 0 for none). BENCH_JMETER_APIS
(e.g. `invest`; default all three, comma-separated) runs only those APIs, on the service and the
floor. BENCH_JMETER_WIRE=1 also captures each run's packets (tcpdump, which the recipe then
installs) and reports the measured requests as the wire saw them beside JMeter's own figures
(bench/wire.py): the server's share of each request's time, without the client's.

Warm up, then measure, stats reset after the warm-up (BENCH.md's ground rule): a JVM that starts
500 threads and warms its code up while the service and PostgreSQL take their share of the
2 cores answers its first seconds of samples late, on the floor too (docs/performance.md,
nineteenth set), so each thread's first `warmup_loops` requests warm JMeter's JVM, its
connections and the server up in the run that measures. Their figures are reported apart, and
their errors count: the errors goal judges every request sent.

Around each run on the service, its /metrics is read (bench/waits.py): the report gives where
that API's requests waited (queues, the held-product path, pool, statements, event loop).

Debian's JMeter 2.13 refuses every .jmx under Debian's XStream 1.4.20 (ForbiddenClassException):
JMeter runs through bench/jmx/SeedJMeter.java, compiled here once, which permits JMeter's own
types in JMeter's XStream instances and then starts JMeter unchanged.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bench import dataset, waits, wire
from bench.loadgen import percentile
from bench.report import APIS, SEED_AVG_MS, capacity_targets, targets_table
from bench.target import ROOT, WORK, FloorServer

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from bench.run import Bench

JMX = ROOT / "bench" / "jmx"
FLUSH_WAIT = 1.5  # seconds: a run's last counts reach /metrics (service/metrics.py flushes at 1 s)
PLAN = JMX / "seed.jmx"
LAUNCHER = JMX / "SeedJMeter.java"
JTL_PROPERTIES = JMX / "jtl.properties"
JMETER_HOME = Path("/usr/share/jmeter")  # Debian's jmeter package
JMETER_JAR = JMETER_HOME / "bin" / "ApacheJMeter.jar"
HTTP_JAR = JMETER_HOME / "lib" / "ext" / "ApacheJMeter_http.jar"  # Debian's jmeter-http
XSTREAM_JAR = Path("/usr/share/java/xstream.jar")
# How JMeter writes a request that got no HTTP answer: the exception's class in the code column.
NO_ANSWER = "Non HTTP response code: "
TARGETS = ("service", "floor")
# The goals: every API at least 100x faster than the seed's average, no error (the warm-up's
# requests included), and a p99 at most 3x the floor's p99 under the same plan in the same run.
GOALS: tuple[tuple[str, str, str, str, float], ...] = tuple(
    goal
    for api in APIS
    for goal in (
        (api, "x the seed's average", "x_seed", ">=", 100),
        (api, "errors, warm-up included", "errors_sent", "<=", 0),
        (api, "p99 / floor's p99", "p99_vs_floor", "<=", 3),
    )
)


@dataclass(frozen=True)
class Plan:
    """The counts of bench/jmx/seed.jmx: `threads` threads, each sending `warmup_loops`
    requests of one API (not measured) and then `loops` measured ones; threads start over
    `rampup` seconds."""

    threads: int = 500
    loops: int = 60
    rampup: int = 1
    warmup_loops: int = 20

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Plan:
        defaults = cls()
        counts = {
            name: int(env.get(f"BENCH_JMETER_{name.upper()}", getattr(defaults, name)))
            for name in ("threads", "loops", "rampup", "warmup_loops")
        }
        plan = cls(**counts)
        if plan.threads < 1 or plan.loops < 1 or plan.rampup < 0 or plan.warmup_loops < 0:
            raise ValueError(f"the JMeter plan needs threads, loops >= 1: {plan}")
        return plan


def apis_from_env(env: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """BENCH_JMETER_APIS: the APIs to run, in the report's order (default: all)."""
    chosen = [name.strip() for name in env.get("BENCH_JMETER_APIS", "").split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(APIS))
    if unknown:
        raise ValueError(f"BENCH_JMETER_APIS: {', '.join(unknown)} not among {', '.join(APIS)}")
    return tuple(api for api in APIS if api in chosen) if chosen else APIS


def missing() -> list[str]:
    """The Debian packages this machine lacks to run the plan (none when it can)."""
    lacking = [] if JMETER_JAR.exists() and XSTREAM_JAR.exists() else ["jmeter"]
    lacking += [] if HTTP_JAR.exists() else ["jmeter-http"]
    lacking += [] if shutil.which("javac") and shutil.which("java") else ["default-jdk-headless"]
    return lacking


def launcher(classes_root: Path = WORK) -> Path:
    """bench/jmx/SeedJMeter.java compiled (once per version of its source) into a folder of
    `classes_root`; returns that folder."""
    source = LAUNCHER.read_bytes()
    classes = classes_root / f"jmeter-launcher-{hashlib.sha256(source).hexdigest()[:12]}"
    if (classes / "SeedJMeter.class").exists():
        return classes
    classes_root.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{classes.name}.", dir=classes_root))
    done = subprocess.run(
        ["javac", "-d", str(partial), "-cp", str(XSTREAM_JAR), str(LAUNCHER)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"javac {LAUNCHER.name} failed:\n{done.stderr[-3000:]}")
    try:
        partial.rename(classes)
    except OSError:  # a run alongside put its own there first: the same source, the same class
        shutil.rmtree(partial, ignore_errors=True)
    return classes


def jmeter_version() -> str | None:
    """JMeter's version as its jar says (Debian's 2.13: "2.13.19691222")."""
    try:
        with zipfile.ZipFile(JMETER_JAR) as jar:
            manifest = jar.read("META-INF/MANIFEST.MF").decode()
    except (OSError, KeyError, zipfile.BadZipFile):
        return None
    for line in manifest.splitlines():
        if line.startswith("Implementation-Version:"):
            return line.split(":", 1)[1].strip()
    return None


def run_plan(classes: Path, jtl: Path, properties: Mapping[str, str | int], timeout: float) -> Path:
    """JMeter non-GUI (-n) on the plan with `properties` (-Jname=value), results into `jtl`
    (CSV, bench/jmx/jtl.properties), its log and output beside it; bounded by `timeout`."""
    jtl.parent.mkdir(parents=True, exist_ok=True)
    jtl.unlink(missing_ok=True)  # JMeter appends to an existing results file
    log = jtl.with_suffix(".log")
    command = [
        "java", f"-Djmeter.home={JMETER_HOME}", "-cp", f"{classes}:{JMETER_JAR}", "SeedJMeter",
        "-n", "-t", str(PLAN), "-q", str(JTL_PROPERTIES), "-l", str(jtl), "-j", str(log),
        *(f"-J{name}={value}" for name, value in properties.items()),
    ]  # fmt: skip
    output = jtl.with_suffix(".out")
    with output.open("wb") as out:
        done = subprocess.run(
            command, cwd=jtl.parent, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, timeout=timeout, check=False,
        )  # fmt: skip
    if done.returncode != 0 or not jtl.exists() or jtl.stat().st_size == 0:
        tail = output.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"JMeter wrote no results into {jtl} (exit {done.returncode}):\n{tail}")
    return jtl


@dataclass(frozen=True, slots=True)
class Sample:
    """One row of a JTL: a request JMeter sent and what came of it."""

    started_ms: int
    elapsed_ms: int
    label: str
    code: str
    message: str
    success: bool
    thread: str

    @property
    def answered(self) -> bool:
        """An HTTP answer came (whatever its status): not a connection that failed or closed."""
        return not self.code.startswith(NO_ANSWER)

    @property
    def failure(self) -> str:
        """What went wrong, for a failed sample: `HTTP <status>`, or the short name of the
        exception a request without an answer ended in (NoHttpResponseException, …)."""
        if not self.answered:
            return self.code[len(NO_ANSWER) :].rsplit(".", 1)[-1]
        return f"HTTP {self.code}" if self.code else self.message or "failed"


def read_jtl(path: Path) -> list[Sample]:
    """Every sample of a CSV JTL written with a header line (bench/jmx/jtl.properties)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            Sample(
                started_ms=int(row["timeStamp"]),
                elapsed_ms=int(row["elapsed"]),
                label=row["label"],
                code=row["responseCode"],
                message=row["responseMessage"],
                success=row["success"] == "true",
                thread=row["threadName"],
            )
            for row in csv.DictReader(handle)
        ]


def warmup_split(samples: Iterable[Sample], warmup_loops: int) -> tuple[list[Sample], list[Sample]]:
    """(the warm-up, the measured samples): each thread's first `warmup_loops` requests, by the
    time it sent them (a thread sends its next request once the last one is answered), and the
    rest."""
    by_thread: dict[str, list[Sample]] = {}
    for sample in samples:
        by_thread.setdefault(sample.thread, []).append(sample)
    warmup: list[Sample] = []
    measured: list[Sample] = []
    for rows in by_thread.values():
        rows.sort(key=lambda s: s.started_ms)
        warmup += rows[:warmup_loops]
        measured += rows[warmup_loops:]
    return warmup, measured


def summarise(samples: Iterable[Sample]) -> dict[str, dict[str, Any]]:
    """Per label: requests, average, p50, p95, p99 and max (ms, from JMeter's elapsed time),
    req/s over the span from the first request sent to the last answered, errors (failed
    samples), of which without an answer, and the errors by kind."""
    by_label: dict[str, list[Sample]] = {}
    for sample in samples:
        by_label.setdefault(sample.label, []).append(sample)
    figures = {}
    for label, rows in by_label.items():
        histogram = Counter(s.elapsed_ms for s in rows)
        failed = [s for s in rows if not s.success]
        span_ms = max(s.started_ms + s.elapsed_ms for s in rows) - min(s.started_ms for s in rows)
        figures[label] = {
            "requests": len(rows),
            "avg_ms": round(sum(s.elapsed_ms for s in rows) / len(rows), 2),
            "p50_ms": percentile(histogram, 0.50),
            "p95_ms": percentile(histogram, 0.95),
            "p99_ms": percentile(histogram, 0.99),
            "max_ms": float(max(histogram)),
            "rps": round(len(rows) * 1000 / span_ms, 1) if span_ms else None,
            "errors": len(failed),
            "no_answer": sum(1 for s in failed if not s.answered),
            "errors_by_kind": dict(Counter(s.failure for s in failed).most_common()),
        }
    return figures


def goals(apis: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each goal with the measured figure and whether it was met (None: not measured), judged on
    the unrounded figure and then shown to two decimals."""
    return [
        {**row, "measured": None if row["measured"] is None else round(row["measured"], 2)}
        for row in capacity_targets(apis, GOALS)
    ]


def with_goals(figures: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The service's figures per API with `x_seed` (the seed's average over ours) and
    `p99_vs_floor` (our p99 over the floor's, the same API's plan in the same run)."""
    out = {}
    for api in APIS:
        entry = dict(figures.get("service", {}).get(api, {}))
        floor_p99 = figures.get("floor", {}).get(api, {}).get("p99_ms")
        avg, p99 = entry.get("avg_ms"), entry.get("p99_ms")
        # Unrounded: the goals judge them (99.97x the seed is not 100x), the report rounds.
        entry["x_seed"] = SEED_AVG_MS[api] / avg if avg else None
        entry["p99_vs_floor"] = p99 / floor_p99 if p99 is not None and floor_p99 else None
        if "errors" in entry:
            entry["errors_sent"] = entry["errors"] + entry.get("warmup", {}).get("errors", 0)
        out[api] = entry
    return out


def wire_figures(
    capture: wire.Capture, measured: Sequence[Sample], warmup_loops: int
) -> dict[str, Any]:
    """The measured requests as the wire saw them (bench/wire.py) beside the same requests as
    JMeter saw them, each by the same figures; the connections the capture saw and the packets
    the kernel dropped (a connection per thread and none dropped: the pairing holds)."""
    per_port = wire.residences(capture.lines(), capture.port)
    return {
        "server": wire.figures(wire.measured(per_port, warmup_loops)),
        "jmeter": wire.figures([float(s.elapsed_ms) for s in measured]),
        "connections": len(per_port),
        "dropped": capture.dropped,
    }


class Stage:
    """Scenario J in a bench run (`python -m bench.run --only jmeter`): the plan per API on the
    service, then on the raw ASGI floor, each run on a settled PostgreSQL, its threads' first
    requests a warm-up."""

    def __init__(self, bench: Bench, plan: Plan | None = None) -> None:
        lacking = missing()
        if lacking:
            raise RuntimeError(
                f"scenario J needs Debian's {', '.join(lacking)}: `just bench-jmeter` installs "
                "them (apt-get, as root)"
            )
        self.bench = bench
        self.plan = plan or Plan.from_env()
        self.apis = apis_from_env()
        self.wire = os.environ.get("BENCH_JMETER_WIRE") == "1"
        if self.wire and wire.missing():
            raise RuntimeError("BENCH_JMETER_WIRE=1 needs tcpdump: `just bench-jmeter` installs it")
        self.classes = launcher()
        self.out = bench.work / "jmeter"
        shape = bench.protocol.shape
        self.data: dict[str, str | int] = {
            "users": shape.users,
            "recruiting": shape.recruiting,
            "started_at": dataset.WINDOW[0],
            "finished_at": dataset.WINDOW[1],
        }

    def timeout(self, loops: int) -> float:
        """The longest a run may take: a minute, plus 20 ms a request."""
        return 60 + self.plan.threads * loops * 0.02

    def runs(self, target: str, base_url: str) -> dict[str, dict[str, Any]]:
        """The plan for each API in turn against `base_url`: settle, then one JMeter run whose
        threads warm up and then measure."""
        address = urlsplit(base_url)
        p = self.plan
        server: dict[str, str | int] = {
            "host": address.hostname or "127.0.0.1",
            "port": address.port or 80,
            "threads": p.threads,
            "rampup": p.rampup,
            **self.data,
        }
        figures = {}
        for api in self.apis:
            self.bench.settle(f"J {target} {api}")
            print(
                f"  jmeter {target} {api}: {p.threads} threads x ({p.warmup_loops} warm-up"
                f" + {p.loops})",
                flush=True,
            )
            jtl = self.out / f"{target}-{api}.jtl"
            loops = p.warmup_loops + p.loops
            properties = {**server, "api": api, "loops": loops}
            before = waits.scrape(base_url) if target == "service" else None
            capture = (
                wire.Capture(jtl.with_suffix(".pcap"), int(server["port"])) if self.wire else None
            )
            with capture or contextlib.nullcontext():
                run_plan(self.classes, jtl, properties, self.timeout(loops))
            warmup, measured = warmup_split(read_jtl(jtl), p.warmup_loops)
            figures[api] = {**summarise(measured).get(api, {"requests": 0}), "jtl": str(jtl)}
            if capture is not None:
                figures[api]["wire"] = wire_figures(capture, measured, p.warmup_loops)
            if warmup:
                figures[api]["warmup"] = summarise(warmup).get(api, {"requests": 0})
            if before is not None:
                time.sleep(FLUSH_WAIT)  # the workers write their counts every second
                figures[api]["waits"] = waits.lines(waits.between(before, waits.scrape(base_url)))
        return figures

    def run(self) -> dict[str, Any]:
        bench = self.bench
        service = bench.start_service()
        figures = {"service": self.runs("service", service.base_url)}
        bench.stop_service()  # the floor alone on the cores
        log_path = self.out / "floor-asgi.log"
        with FloorServer("asgi", bench.workers, log_path, {"DB_POOL_SIZE": str(bench.pool)}) as f:
            figures["floor"] = self.runs("floor", f.base_url)
        apis = with_goals(figures)
        results = {
            "plan": asdict(self.plan),
            "jmeter": jmeter_version(),
            "implementation": "HttpClient4, keep-alive",
            "seed_avg_ms": SEED_AVG_MS,
            "service": apis,
            "floor": figures["floor"],
            "goals": goals(apis),
        }
        bench.results["scenarios"]["J"] = results
        return results


def stage(bench: Bench) -> None:
    """`python -m bench.run --only jmeter`'s stage (bench/run.py)."""
    Stage(bench).run()


# -- the report ----------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def _kinds(entry: Mapping[str, Any]) -> str:
    return ", ".join(f"{n:,} × {kind}" for kind, n in entry.get("errors_by_kind", {}).items())


def _quantiles(figures: Mapping[str, Any]) -> str:
    return " / ".join(_ms(figures.get(key)) for key in ("p50_ms", "p99_ms", "p999_ms", "max_ms"))


def _parts(j: Mapping[str, Any], key: str) -> list[tuple[str, str, Mapping[str, Any]]]:
    """(target, API, its figures' `key` part) wherever that part was measured."""
    return [
        (target, api, entry[key])
        for target in TARGETS
        for api, entry in j[target].items()
        if entry.get(key)
    ]


def wire_section(j: Mapping[str, Any]) -> list[str]:
    """The measured requests as JMeter and as the wire saw them (BENCH_JMETER_WIRE=1)."""
    rows = _parts(j, "wire")
    if not rows:
        return []
    return [
        "",
        "The measured requests as JMeter and as the wire saw them (BENCH_JMETER_WIRE=1, "
        "bench/wire.py: tcpdump on loopback; the wire's time runs from a request's first packet "
        "to its answer's first packet, the server's share; JMeter's adds its threads' own waits; "
        "ms, nearest rank):",
        "",
        "| target | API | requests JMeter / wire | JMeter p50 / p99 / p99.9 / max "
        "| wire p50 / p99 / p99.9 / max | over 100 ms JMeter / wire | connections "
        "| packets dropped |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {target} | {api} | {w['jmeter'].get('requests', 0):,} / "
            f"{w['server'].get('requests', 0):,} | {_quantiles(w['jmeter'])} | "
            f"{_quantiles(w['server'])} | {w['jmeter'].get('over_100ms', 0):,} / "
            f"{w['server'].get('over_100ms', 0):,} | {w['connections']:,} | "
            f"{'?' if w['dropped'] is None else format(w['dropped'], ',')} |"
            for target, api, w in rows
        ),
    ]


def section(results: Mapping[str, Any]) -> list[str]:
    """Scenario J's part of the Markdown report: per API beside the seed's averages and the
    floor's figures, the errors by kind, and the goals marked met or not."""
    j = results.get("scenarios", {}).get("J")
    if not j:
        return []
    plan = j["plan"]
    workers = results.get("settings", {}).get("workers")
    pool = results.get("settings", {}).get("db_pool_size")
    warmup = (
        f"each thread first sends {plan['warmup_loops']} requests in the same JVM, a warm-up not "
        "counted in the figures (table below; its errors count in the goals), then its measured "
        "ones"
        if plan["warmup_loops"]
        else "no warm-up"
    )
    lines = [
        "## J — the seed's own tool: Apache JMeter, one API at a time",
        "",
        f"JMeter {j.get('jmeter') or '?'} (Debian's), non-GUI, bench/jmx/seed.jmx: "
        f"{plan['threads']} threads, each sending {plan['loops']} requests of one API "
        f"({plan['threads'] * plan['loops']:,} per API), started over {plan['rampup']} s, "
        f"{j.get('implementation', 'HttpClient4, keep-alive')}; the service with "
        f"WORKERS={workers} and DB_POOL_SIZE={pool}. Each run on a settled PostgreSQL; {warmup}. "
        "The floor: the same plan against the raw ASGI app (bench/floor.py) on the "
        "same granian settings, the service stopped. Times are JMeter's elapsed times; errors "
        "are failed samples (a status >= 400, or no answer at all: a connection refused, reset "
        "or closed under a request, by the exception JMeter saw).",
        "",
        "| API | seed avg ms | avg ms | × the seed | p50 | p99 | max | req/s | requests "
        "| errors | of which no answer | floor avg ms | floor p99 | floor errors "
        "| p99 / floor p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for api in APIS:
        f, floor = j["service"].get(api, {}), j["floor"].get(api, {})
        x_seed, vs_floor = f.get("x_seed"), f.get("p99_vs_floor")
        lines.append(
            f"| {api} | {SEED_AVG_MS[api]:,.0f} | {_ms(f.get('avg_ms'))} | "
            f"{'—' if x_seed is None else f'{x_seed:,.0f}×'} | {_ms(f.get('p50_ms'))} | "
            f"{_ms(f.get('p99_ms'))} | {_ms(f.get('max_ms'))} | {f.get('rps') or 0:,.0f} | "
            f"{f.get('requests', 0):,} | {f.get('errors', 0):,} | {f.get('no_answer', 0):,} | "
            f"{_ms(floor.get('avg_ms'))} | {_ms(floor.get('p99_ms'))} | "
            f"{floor.get('errors', 0):,} | {'—' if vs_floor is None else f'{vs_floor:.2f}'} |"
        )
    warmups = _parts(j, "warmup")
    if warmups:
        lines += [
            "",
            "The warm-up (each thread's first requests, not counted above):",
            "",
            "| target | API | requests | avg ms | p99 | max | errors |",
            "|---|---|---:|---:|---:|---:|---:|",
            *(
                f"| {target} | {api} | {w.get('requests', 0):,} | {_ms(w.get('avg_ms'))} | "
                f"{_ms(w.get('p99_ms'))} | {_ms(w.get('max_ms'))} | {w.get('errors', 0):,} |"
                for target, api, w in warmups
            ),
        ]
    lines += wire_section(j)
    failed = [
        f"- {target} {api}{part}: {_kinds(figures)}"
        for target in TARGETS
        for api, entry in j[target].items()
        for part, figures in (("", entry), (" (warm-up)", entry.get("warmup", {})))
        if figures.get("errors")
    ]
    lines += ["", "Errors by kind:", "", *failed] if failed else ["", "No errors."]
    for api, entry in j["service"].items():
        if entry.get("waits"):
            lines += ["", f"Where the service's {api} requests waited (its /metrics over the "
                      "run, its warm-up included; bench/waits.py; bucket quantiles are upper "
                      "bounds):", "", "```", *entry["waits"], "```"]  # fmt: skip
    lines += ["", "Goals, computed from the figures above:", "", *targets_table(j["goals"]), ""]
    return lines
