"""Bench reports: the raw JSON, a Markdown summary beside the seed's figures, and PNG charts."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench import caps, plain
from bench.dataset import PAGE_ITEMS

# The seed's documented JMeter averages (500 threads, pool 50), in milliseconds.
SEED_AVG_MS = {"list": 3902.0, "invest": 3636.0, "my-investments": 4190.0}
APIS = ("list", "invest", "my-investments")
PACKAGES = ("granian", "blacksheep", "psqlpy", "locust", "py-spy", "matplotlib", "orjson")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _tool_version(*command: str) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else None


def meta(stamp: str, sha: str, dirty: bool, postgres: str) -> dict[str, Any]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "postgres": postgres}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["pgbench"] = _tool_version("pgbench", "--version")
    versions["wrk"] = _tool_version("wrk", "--version")
    return {
        "utc": stamp,
        "git_sha": sha,
        "git_dirty": dirty,
        "machine": {
            "cores": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "kernel": platform.release(),
        },
        "versions": versions,
    }


def _api_figures(results: dict[str, Any], api: str) -> dict[str, Any]:
    run = results["scenarios"]["S"][api]
    figures: dict[str, Any] = run["requests"].get(api, {}) | {"generator": run["generator"]}
    return figures


def _gen_note(generator: dict[str, Any]) -> str:
    if not generator.get("cpu_saturated"):
        return ""
    why = "locust warned" if generator.get("cpu_warning") else "locust process ≥ 90 % CPU"
    cpu = "/".join(f"{c:.0f}" for c in generator.get("locust_process_cpu_mean", []))
    return f"⚠ generator CPU-bound ({why}; locust CPU % {cpu})"


def _gen_paragraph(generator: dict[str, Any]) -> list[str]:
    """The generator's warning as a paragraph of its own; nothing when it kept up."""
    note = _gen_note(generator)
    return ["", note] if note else []


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


# Issue 10's targets for the capacity stage: (endpoint, figure, key, comparison, bound).
# "p99_over_avg" and "errors" are derived from wrk's figures; everything is read from the run.
CAPACITY_TARGETS: tuple[tuple[str, str, str, str, float], ...] = (
    ("invest", "req/s", "rps", ">=", 15_000),
    ("invest", "avg ms", "avg_ms", "<=", 35),
    ("invest", "p99 / avg", "p99_over_avg", "<=", 3),
    ("invest", "errors (non-2xx + socket)", "errors", "<=", 0),
    ("invest", "service CPU µs / request", "service_cpu_us_per_request", "<=", 60),
    ("invest", "PostgreSQL CPU µs / request", "postgres_cpu_us_per_request", "<=", 60),
    ("my-investments", "req/s", "rps", ">=", 18_000),
    ("my-investments", "avg ms", "avg_ms", "<=", 30),
    ("my-investments", "p99 / avg", "p99_over_avg", "<=", 3),
    ("my-investments", "service CPU µs / request", "service_cpu_us_per_request", "<=", 50),
    ("list", "req/s", "rps", ">=", 50_000),
)
CAPACITY_ENDPOINTS = ("healthz", *APIS)
FLOORS = ("floor-asgi", "floor-rsgi")  # bench/floor.py: the raw apps on the service's granian
PAGES = tuple(f"my-investments-{items}" for items in PAGE_ITEMS)  # bench/dataset.py
FLOOR = "floor-asgi"  # what issue 18's ratios are taken against
FLOOR_POST = f"{FLOOR}-post"  # the same floor answering invest's POST, its body read first
_GATED = ("healthz", "list", "invest", *PAGES)

# Issue 18's targets: throughput as a ratio to the raw-ASGI floor measured in the same run (the
# machine's figures move by up to 40 % between runs, a ratio far less), p99 against the average,
# no non-2xx answer, and the CPU per request.
FLOOR_RATIOS = {"healthz": 0.90, "list": 0.60, "invest": 0.20, PAGES[0]: 0.18, PAGES[1]: 0.10}
FLOOR_TARGETS: tuple[tuple[str, str, str, str, float], ...] = (
    *(
        (name, "× raw-ASGI floor", "rps_vs_floor_asgi", ">=", at_least)
        for name, at_least in FLOOR_RATIOS.items()
    ),
    *((name, "p99 / avg", "p99_over_avg", "<=", 3) for name in _GATED),
    *((name, "non-2xx answers", "non_2xx", "<=", 0) for name in _GATED),
    *(
        (name, "service CPU µs / request", "service_cpu_us_per_request", "<=", 45)
        for name in ("invest", *PAGES)
    ),
    ("my-investments-10", "PostgreSQL CPU µs / request", "postgres_cpu_us_per_request", "<=", 40),
)


# Each req/s ratio's key and the endpoint it is taken against (with_ratios, capacity_targets).
RATIO_BASES = {"rps_vs_healthz": "healthz", **{f"rps_vs_{f.replace('-', '_')}": f for f in FLOORS}}


def _rps_ratio(endpoints: dict[str, dict[str, Any]], name: str, key: str) -> float | None:
    """`name`'s req/s over its base's (RATIO_BASES[key]), unrounded; None when either is missing."""
    rps, base = endpoints.get(name, {}).get("rps"), endpoints.get(RATIO_BASES[key], {}).get("rps")
    return rps / base if rps and base else None


def with_ratios(endpoints: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each endpoint's figures with its req/s as a ratio to /healthz and to each floor of the
    same run (`rps_vs_healthz`, `rps_vs_floor_asgi`, `rps_vs_floor_rsgi`), to three decimals:
    None when either side has no figure; a floor missing from the run adds no key."""
    out = {}
    for name, entry in endpoints.items():
        entry = dict(entry)
        for key, base in RATIO_BASES.items():
            if base not in endpoints and base != "healthz":
                continue
            ratio = _rps_ratio(endpoints, name, key)
            entry[key] = None if ratio is None else round(ratio, 3)
        out[name] = entry
    return out


def capacity_endpoints(limits: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The capacity stage's wrk figures per endpoint (runs before it kept them under "wrk")."""
    capacity = limits.get("capacity")
    if isinstance(capacity, dict) and "endpoints" in capacity:
        return dict(capacity["endpoints"])
    old = limits.get("wrk", {})
    return {name: entry for name, entry in old.items() if isinstance(entry, dict)}


def capacity_targets(
    endpoints: dict[str, dict[str, Any]],
    targets: tuple[tuple[str, str, str, str, float], ...] = CAPACITY_TARGETS,
) -> list[dict[str, Any]]:
    """Each target of the capacity stage (issue 10's unless `targets` says otherwise) with the
    measured figure and whether it was met (None when the run has no figure for it: wrk missing,
    the floor or CPU not measured). Judged on the unrounded figure, then shown rounded (p99 /
    avg to two decimals, req/s ratios to three, as with_ratios gives them), as JMeter's goals."""
    rows = []
    for endpoint, figure, key, comparison, bound in targets:
        entry = endpoints.get(endpoint, {})
        exact: float | None
        if key == "p99_over_avg":
            p99, avg = entry.get("p99_ms"), entry.get("avg_ms")
            exact = p99 / avg if p99 is not None and avg else None
            value = None if exact is None else round(exact, 2)
        elif key in RATIO_BASES and key in entry:
            exact = _rps_ratio(endpoints, endpoint, key)
            value = entry[key]
        elif key == "errors" and "errors" not in entry and "rps" in entry:
            value = exact = entry.get("non_2xx", 0) + entry.get("socket_errors", 0)
        else:
            value = exact = entry.get(key)
        met = None if exact is None else exact >= bound if comparison == ">=" else exact <= bound
        rows.append(
            {"endpoint": endpoint, "figure": figure, "target": f"{comparison} {bound:,g}",
             "measured": value, "met": met}
        )  # fmt: skip
    return rows


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def targets_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| endpoint | figure | target | measured | |", "|---|---|---:|---:|---|"]
    for row in rows:
        value = row["measured"]
        shown = "—" if value is None else f"{value:,.0f}" if abs(value) >= 100 else f"{value:g}"
        verdict = {True: "met", False: "**not met**", None: "not measured"}[row["met"]]
        lines.append(
            f"| {row['endpoint']} | {row['figure']} | {row['target']} | {shown} | {verdict} |"
        )
    return lines


def capacity(limits: dict[str, Any]) -> list[str]:
    """The capacity stage's table, the floors' ratios and the issues' targets, each marked met or
    not."""
    entry = limits.get("capacity")
    if not isinstance(entry, dict):
        return []
    if "skipped" in entry:
        return ["## Capacity (wrk, 500 connections)", "", f"Skipped: {entry['skipped']}.", ""]
    endpoints = capacity_endpoints(limits)
    floors = [name for name in FLOORS if name in endpoints]
    warmup = entry.get("warmup_seconds")
    lines = [
        "## Capacity (wrk, 500 connections)",
        "",
        f"wrk (2 threads, {entry.get('connections', 500)} connections, "
        f"{entry.get('seconds', 0):g} s per endpoint"
        + (
            f", each window after {warmup:g} s of the same load, not measured, and a CHECKPOINT "
            "with no autovacuum worker running"
            if warmup
            else ", no warm-up, each window after a CHECKPOINT with no autovacuum worker running"
            if warmup is not None
            else ""
        )
        + ") on the service as configured above"
        + (
            "; first on the server's floor: a raw ASGI app and a raw RSGI app (bench/floor.py) "
            "answering /healthz's small JSON on the same granian, with the same workers and "
            "settings (the ASGI one also answering invest's POST after reading its body: "
            f"{FLOOR_POST}), every endpoint's req/s given as a ratio to them"
            if floors
            else ""
        )
        + ". My investments runs once for random users and, where given, for users holding "
        "about 10 and about 40 investments (a page of that many items). CPU per request = the "
        "CPU seconds (utime + stime, /proc) of each group of processes between samples taken "
        "just before and just after the wrk window, divided by the requests wrk counted. "
        "Service: the server's process and all its descendants (granian and its workers; for a "
        "floor row, the floor's). PostgreSQL: the postmaster and all its children, that is the "
        "whole cluster, so work for other databases on a shared server counts too; the last "
        "column counts only the client backends connected to the bench's database (no WAL "
        "writer, checkpointer, …). The load generator shares the cores.",
        "",
        "| endpoint | req/s | × ASGI floor | × RSGI floor | × /healthz | avg ms | p50 | p99 "
        "| p99 / avg | errors (non-2xx / socket) | service CPU µs / req | PostgreSQL CPU µs / req "
        "| of which the bench database's backends |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    floors += [FLOOR_POST] if FLOOR_POST in endpoints else []
    shown = [*floors, *CAPACITY_ENDPOINTS, *(name for name in PAGES if name in endpoints)]
    for name in shown:
        f = endpoints.get(name, {})
        if "error" in f or not f.get("rps"):
            cells = "|" * 12
            lines.append(f"| {name} | wrk failed: {f.get('error', 'no figures')[:80]} {cells}")
            continue
        p99, avg = f.get("p99_ms"), f.get("avg_ms")
        pages = f.get("items_per_page")
        label = f"{name} ({pages['mean']:g} items)" if pages else name
        lines.append(
            f"| {label} | {f['rps']:,.0f} | {_ratio(f.get('rps_vs_floor_asgi'))} | "
            f"{_ratio(f.get('rps_vs_floor_rsgi'))} | {_ratio(f.get('rps_vs_healthz'))} | "
            f"{_ms(avg)} | {_ms(f.get('p50_ms'))} | {_ms(p99)} | "
            f"{f'{p99 / avg:.1f}' if p99 is not None and avg else '—'} | "
            f"{f.get('non_2xx', 0):,} / {f.get('socket_errors', 0):,} | "
            f"{_us(f.get('service_cpu_us_per_request'))} | "
            f"{_us(f.get('postgres_cpu_us_per_request'))} | "
            f"{_us(f.get('postgres_backends_cpu_us_per_request'))} |"
        )
    lines += database_calls(endpoints, shown)
    answers = non_2xx_answers(endpoints)
    if answers:
        lines += [
            "",
            "Non-2xx answers: the measured windows count them with wrk's own counter (status "
            ">= 400; a Lua response() hook would cost wrk about 1 µs per request); their "
            "statuses and problem codes are tallied in the warm-up before each window and, "
            "when the window had any, in a run of the same load right after it:",
            "",
            *answers,
        ]
    lines += ["", "Targets (issue 10), computed from the figures above:", ""]
    lines += targets_table(capacity_targets(endpoints))
    if floors:
        lines += [
            "",
            "Targets (issue 18; ratios to the raw-ASGI floor of this run), computed from the "
            "figures above:",
            "",
            *targets_table(capacity_targets(endpoints, FLOOR_TARGETS)),
        ]
    if entry.get("postgres_root_pid") is None:
        lines += ["", "PostgreSQL's processes were not visible from the bench: no CPU figures."]
    return [*lines, "", *plain.section(entry)]


def database_calls(endpoints: dict[str, dict[str, Any]], shown: list[str]) -> list[str]:
    """How each service window's requests reached the database (its /metrics around the
    window, bench/waits.py calls_shape): fewer requests per call costs more CPU per request on
    both sides, which tells a window where the calls were small from one where the machine was
    slow."""
    rows = [
        (name, endpoints[name]["calls"]) for name in shown if endpoints.get(name, {}).get("calls")
    ]
    if not rows:
        return []

    def cell(value: float | None, form: str) -> str:
        return "—" if value is None else format(value, form)

    return [
        "",
        "How the service's windows reached the database (its /metrics before and after each "
        "window; every statement's calls, and the coalescers' queues):",
        "",
        "| endpoint | database calls/s | requests per call | mean call ms | mean queue wait ms |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {cell(shape['calls_per_s'], ',.0f')} | "
            f"{cell(shape['requests_per_call'], '.1f')} | {cell(shape['call_ms'], '.2f')} | "
            f"{cell(shape['queue_wait_ms'], '.2f')} |"
            for name, shape in rows
        ),
    ]


def _tally(figures: dict[str, Any]) -> str:
    statuses = figures.get("non_2xx_by_status") or {}
    codes = figures.get("non_2xx_by_code") or {}
    by_status = ", ".join(f"{k} × {v:,}" for k, v in statuses.items()) or "—"
    by_code = ", ".join(f"{k} × {v:,}" for k, v in codes.items()) or "—"
    return f"by status {by_status}; by code {by_code}"


def non_2xx_answers(endpoints: dict[str, dict[str, Any]]) -> list[str]:
    """One bullet per endpoint that had non-2xx answers: the measured window's count (wrk's own,
    status >= 400) and the statuses and codes tallied in the runs of the same load around it."""
    lines = []
    for name, f in endpoints.items():
        samples = [s for s in f.get("non_2xx_samples", []) if s.get("non_2xx")]
        if not f.get("non_2xx") and not samples:
            continue
        parts = [f"{f.get('non_2xx', 0):,} in the measured window"]
        if "non_2xx_by_status" in f:  # a window that tallied them itself
            parts[0] += f" ({_tally(f)})"
        for sample in samples:
            parts.append(
                f"{sample['non_2xx']:,} of {sample.get('requests') or 0:,} in the "
                f"{sample['run']} run ({_tally(sample)})"
            )
        lines.append(f"- {name}: " + "; ".join(parts))
    return lines


def settling(results: dict[str, Any]) -> list[str]:
    """How long PostgreSQL took to settle before the measured windows (CHECKPOINT, autovacuum)."""
    rows = results.get("settle") or []
    if not rows:
        return []
    busy = [r["before"] for r in rows if r.get("autovacuum_running")]
    return [
        "## Settling PostgreSQL between stages",
        "",
        f"Before each of the {len(rows)} measured windows: CHECKPOINT "
        f"({sum(r.get('checkpoint_s', 0) for r in rows):.1f} s in all"
        + ("" if all(r.get("checkpoint", True) for r in rows) else "; refused to this role")
        + "), then a wait until no autovacuum worker ran "
        f"({sum(r.get('autovacuum_wait_s', 0) for r in rows):.1f} s in all). "
        + (
            f"**Still running** when the wait gave up, before: {', '.join(busy)}."
            if busy
            else "No window started with an autovacuum worker running."
        ),
        "",
    ]


def sql_cost(limits: dict[str, Any]) -> list[str]:
    """PostgreSQL's CPU per request from the pgbench stage: the service's own statements at 1,
    10 and 100 invests per invest_many() call."""
    runs = limits.get("pgbench", {})
    rows = [(name, f) for name, f in runs.items() if "requests_per_call" in f]
    if not rows:
        return []
    lines = [
        "## PostgreSQL cost per request (pgbench, the service's statements, 50 clients)",
        "",
        "CPU of the whole PostgreSQL cluster over each pgbench window, per request served "
        "(an invest_many() call with 10 requests counts 10).",
        "",
        "| script | requests per call | calls/s | requests/s | PostgreSQL CPU µs / request |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, f in rows:
        lines.append(
            f"| {name} | {f['requests_per_call']} | {f.get('tps') or 0:,.0f} | "
            f"{f.get('requests_per_second') or 0:,.0f} | "
            f"{_us(f.get('postgres_cpu_us_per_request'))} |"
        )
    return [*lines, ""]


def _us(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _service_checkout(meta: dict[str, Any]) -> str:
    """Where the measured service came from, when not the bench's own checkout."""
    checkout = meta.get("service_checkout")
    if not checkout:
        return ""
    state = ", dirty" if checkout["git_dirty"] else ""
    return f" of another checkout, {checkout['path']} at {checkout['git_sha']}{state}"


def _preamble(results: dict[str, Any]) -> list[str]:
    """The run's title and settings: protocol, service, machine, versions, dataset."""
    m, s, p = results["meta"], results["settings"], results["protocol"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    data = results["dataset"]
    shape = data.get("shape", {})
    only = results.get("only")
    protocol = (
        f"- Protocol **{p['name']}**, the {only} stage alone (`--only {only}`), after loading "
        "dataset D at once."
        if only
        else f"- Protocol **{p['name']}**: {s['users']} users, closed loop, no think time; "
        f"warm-up {p['warmup']:g} s then stats reset, measuring window {p['window']:g} s "
        f"(G: {p['growth_window']:g} s); locust `--processes {s['locust_processes']}`."
    )
    return [
        f"# Bench run {m['utc']} ({m['git_sha']}{', dirty tree' if m['git_dirty'] else ''})"
        + (f", {only} only" if only else ""),
        "",
        protocol,
        f"- Service: `python -m service run`{_service_checkout(m)}, WORKERS={s['workers']}, "
        f"DB_POOL_SIZE={s['db_pool_size']} in total.",
        f"- Machine: {m['machine']['cores']} cores, {m['machine']['cpu_model']}, "
        f"{m['machine']['memory_gib']} GiB; generator, service and PostgreSQL share it.",
        f"- Versions: {versions}.",
        f"- Dataset D: {shape.get('products')} products ({shape.get('recruiting')} recruiting "
        f"in the window), {shape.get('users')} users, {shape.get('investments'):,} investments; "
        f"loaded in {data.get('d_load_seconds')} s (migrations, products and the ledger"
        + ("" if only else ", in the G steps on the way to D")
        + ").",
        f"- Whole run: {results['wall_seconds']:.0f} s.",
        *([f"- Note: {results['note']}"] if results.get("note") else []),
        *(
            [f"- Investor caps on for the whole run (BENCH_CAPS={results['caps']}, bench/caps.py)"]
            if results.get("caps")
            else []
        ),
        "",
    ]


def markdown(results: dict[str, Any], charts: dict[str, str]) -> str:
    if "S" not in results["scenarios"]:  # one stage alone (--only): its tables, no charts
        from bench.jmeter import section  # scenario J's room (bench/jmeter.py imports this one)

        lines = [*_preamble(results), *capacity(results["limits"]), *section(results)]
        lines += [*caps.markdown(results["limits"]), *settling(results)]
        return "\n".join(lines)
    s = results["settings"]
    data = results["dataset"]
    lines = [
        *_preamble(results),
        "## S — the seed's scenario, one API at a time",
        "",
        "| API | seed avg ms | ours avg ms | seed / ours | p50 | p95 | p99 | max | req/s "
        "| errors | machine CPU % | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for api in APIS:
        f = _api_figures(results, api)
        ratio = SEED_AVG_MS[api] / f["avg_ms"] if f.get("avg_ms") else None
        lines.append(
            f"| {api} | {SEED_AVG_MS[api]:,.0f} | {_ms(f.get('avg_ms'))} | "
            f"{'—' if ratio is None else f'{ratio:,.0f}×'} | {_ms(f.get('p50_ms'))} | "
            f"{_ms(f.get('p95_ms'))} | {_ms(f.get('p99_ms'))} | {_ms(f.get('max_ms'))} | "
            f"{f.get('rps', 0):,.0f} | {f.get('failures', 0)} | "
            f"{f['generator'].get('machine_cpu_mean') or '—'} | {_gen_note(f['generator'])} |"
        )
    floor = results["scenarios"]["floor"]
    hz = floor["requests"].get("healthz", {})
    lines += [
        "",
        f"Generator floor (same locust setup on `GET /healthz`): {hz.get('rps', 0):,.0f} req/s, "
        f"avg {_ms(hz.get('avg_ms'))} ms, p99 {_ms(hz.get('p99_ms'))} ms. "
        f"{_gen_note(floor['generator'])}",
        "",
        f"![seed vs ours]({charts['seed']})",
        "",
        "## Throughput against the limits",
        "",
        "| API | locust S req/s | wrk req/s (p50 / p99 ms) | pgbench tps, 50 clients (avg ms) |",
        "|---|---:|---:|---:|",
    ]
    wrk = capacity_endpoints(results["limits"])
    pgb = results["limits"].get("pgbench", {})
    for api in ("healthz", *APIS, "invest-hot"):
        if api == "healthz":
            ours = hz.get("rps")
        elif api == "invest-hot":
            ours = results["scenarios"].get("H", {}).get("accepted_per_second")
        else:
            ours = _api_figures(results, api).get("rps")
        w = wrk.get(api, {})
        g = pgb.get(api, {})
        wrk_cell = (
            f"{w['rps']:,.0f} ({_ms(w.get('p50_ms'))} / {_ms(w.get('p99_ms'))})"
            + (f", {w['non_2xx']} non-2xx" if w.get("non_2xx") else "")
            if w.get("rps")
            else "—"
        )
        pg_cell = f"{g['tps']:,.0f} ({_ms(g.get('latency_avg_ms'))})" if g.get("tps") else "—"
        label = "invest, one hot product (H: accepted/s)" if api == "invest-hot" else api
        ours_cell = "—" if ours is None else f"{ours:,.0f}"
        lines.append(f"| {label} | {ours_cell} | {wrk_cell} | {pg_cell} |")
    skipped = results["limits"].get("capacity", results["limits"].get("wrk", {}))
    if "skipped" in skipped:
        lines += ["", f"wrk: {skipped['skipped']}."]
    lines += [
        "",
        f"locust ({s['users']} users) and wrk (500 connections) drive the service through HTTP; "
        "pgbench runs the same SQL straight on PostgreSQL with 50 clients, the service's pool, "
        "while the service is stopped. The hot-product row compares H's accepted investments/s "
        "with pgbench investing one row per transaction in a single product (the serialized "
        "rate).",
    ]
    lines += ["", *capacity(results["limits"]), *caps.markdown(results["limits"])]
    lines += sql_cost(results["limits"])
    lines += [f"![throughput vs limits; capacity]({charts['throughput']})", ""]
    lines += metrics_overhead(results["limits"])
    lines += settling(results)

    mixed = results["scenarios"]["M"]
    lines += [
        "## M — mixed 80 % list / 15 % my investments / 5 % invest",
        "",
        "| request | requests | avg ms | p50 | p95 | p99 | req/s | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in sorted(mixed["requests"].items()):
        lines.append(
            f"| {name} | {f['requests']:,} | {_ms(f['avg_ms'])} | {_ms(f['p50_ms'])} | "
            f"{_ms(f['p95_ms'])} | {_ms(f['p99_ms'])} | {f['rps']:,.0f} | {f['failures']} |"
        )
    floor_hz = results["scenarios"]["floor"]["requests"].get("healthz", {})
    figures = mixed["requests"].values()
    rps = sum(f["rps"] for f in figures)
    avg_ms = sum(f["avg_ms"] * f["requests"] for f in figures) / max(
        1, sum(f["requests"] for f in figures)
    )
    if floor_hz.get("rps") and floor_hz.get("avg_ms"):
        lines += [
            "",
            f"All of M: {rps:,.0f} req/s at {avg_ms:.1f} ms on average, that is"
            f" {rps / floor_hz['rps']:.0%} of the generator floor's throughput"
            f" ({floor_hz['rps']:,.0f} req/s) and {avg_ms / floor_hz['avg_ms']:.2f}× its"
            f" average latency ({floor_hz['avg_ms']:.1f} ms).",
        ]
    lines += _gen_paragraph(mixed["generator"])

    h = results["scenarios"].get("H")
    if h:
        v = h["verification"]
        hot = h["requests"].get("invest-hot", {})
        ok = v["sum_equals_total"] and v["counters_equal_ledger"] and v["failed_requests"] == 0
        lines += [
            "",
            "## H — the opening rush",
            "",
            f"{h['users']} users invest {10_000:,} each in one product of total "
            f"{h['total']:,} until it sells out.",
            "",
            "| accepted investments | time to sell out | accepted/s | p50 ms | p99 ms "
            "| requests | errors | verification |",
            "|---:|---:|---:|---:|---:|---:|---:|---|",
            f"| {h['ledger_rows']:,} | {h['sell_out_seconds']} s | "
            f"{h['accepted_per_second'] or 0:,.0f} | {_ms(hot.get('p50_ms'))} | "
            f"{_ms(hot.get('p99_ms'))} | {hot.get('requests', 0):,} | {v['failed_requests']} | "
            f"{'PASS' if ok else 'FAIL'}: ledger sum {h['ledger_sum']:,} "
            f"{'=' if v['sum_equals_total'] else '≠'} total, no oversell "
            f"{'✓' if v['no_oversell'] else '✗'}, counters = ledger "
            f"{'✓' if v['counters_equal_ledger'] else '✗'}, partial fills {h['partial_fills']} |",
        ]
        lines += _gen_paragraph(h["generator"])

    growth = results["scenarios"].get("G", [])
    if growth:
        lines += [
            "",
            "## G — growth: latency against the ledger size",
            "",
            "| investments | list p50 | list p99 | list req/s | my p50 | my p99 | my req/s "
            "| note |",
            "|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for point in growth:
            li = point["list"]["requests"].get("list", {})
            my = point["my-investments"]["requests"].get("my-investments", {})
            notes = {_gen_note(point[k]["generator"]) for k in ("list", "my-investments")} - {""}
            lines.append(
                f"| {point['investments']:,} | {_ms(li.get('p50_ms'))} | {_ms(li.get('p99_ms'))}"
                f" | {li.get('rps', 0):,.0f} | {_ms(my.get('p50_ms'))} | {_ms(my.get('p99_ms'))}"
                f" | {my.get('rps', 0):,.0f} | {' '.join(sorted(notes))} |"
            )
        lines += ["", f"![growth]({charts['growth']})"]
    steps = ", ".join(f"{s['to']:,} rows +{s['seconds']} s" for s in data.get("steps", []))
    consistency = data.get("consistency_after_scenarios", {})
    lines += [
        "",
        "## Dataset",
        "",
        f"Load steps: {steps}. After every scenario: counters = ledger for all products "
        f"{'✓' if consistency.get('ok') else '✗'} ({consistency.get('ledger_rows', 0):,} rows).",
        "",
    ]
    return "\n".join(lines)


def metrics_overhead(limits: dict[str, Any]) -> list[str]:
    """The table of wrk req/s with and without /metrics (alternating passes, medians)."""
    table = limits.get("metrics_overhead")
    if not table:
        return []
    passes = max(len(entry["off_rps"]) for entry in table.values())
    order = (
        "in the order off, on, on, off (repeated), so that drift over the stage cancels out"
        if passes > 1
        else "once each, off then on (the quick protocol's smoke: no drift cancelled out)"
    )
    lines = [
        "## Metrics overhead",
        "",
        "wrk (500 connections) per endpoint, the service restarted for each pass with"
        f" `METRICS_ENABLED=false` or `true` {order}; the overhead compares the medians.",
        "",
        "| endpoint | off req/s (passes) | on req/s (passes) | overhead (median on vs off) |",
        "|---|---|---|---:|",
    ]
    for name, entry in table.items():
        off, on = (", ".join(f"{r:,.0f}" for r in entry[k]) for k in ("off_rps", "on_rps"))
        pct = entry.get("overhead_pct")
        lines.append(f"| {name} | {off} | {on} | {'—' if pct is None else f'{pct:+.1f} %'} |")
    return [*lines, ""]


def charts(results: dict[str, Any], out_dir: Path, base: str) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"seed": f"{base}-seed.png", "throughput": f"{base}-throughput.png"}
    names["growth"] = f"{base}-growth.png"

    def save(fig: Any, name: str) -> None:
        """Chart `name` as its PNG beside the report; the figure closed (pyplot keeps it)."""
        fig.tight_layout()
        fig.savefig(out_dir / names[name], dpi=110)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    ours = [_api_figures(results, api).get("avg_ms") or 0.01 for api in APIS]
    xs = range(len(APIS))
    ax.bar([x - 0.2 for x in xs], [SEED_AVG_MS[a] for a in APIS], 0.4, label="seed (JMeter avg)")
    ax.bar([x + 0.2 for x in xs], ours, 0.4, label="ours (locust avg)")
    for x, seed, mine in zip(xs, (SEED_AVG_MS[a] for a in APIS), ours, strict=True):
        ax.text(x + 0.2, mine, f"{mine:,.0f} ms\n{seed / mine:,.0f}×", ha="center", va="bottom")
    ax.set_yscale("log")
    ax.set_ylim(top=max(SEED_AVG_MS.values()) * 6)  # room for the legend above the bars
    ax.set_xticks(list(xs), list(APIS))
    ax.set_ylabel("average latency, ms (log)")
    ax.set_title("500 users, pool 50: seed vs ours")
    ax.legend(loc="upper center", ncols=2)
    save(fig, "seed")

    # One figure, two panels (the reports keep three PNGs): throughput against the limits, and
    # the capacity stage's CPU per request with each endpoint's req/s against /healthz.
    fig, (ax, cap) = plt.subplots(2, 1, figsize=(8, 7.5))
    labels = ["healthz", *APIS, "invest-hot"]
    series: dict[str, list[float]] = {"locust": [], "wrk": [], "pgbench": []}
    wrk = capacity_endpoints(results["limits"])
    pgb = results["limits"].get("pgbench", {})
    for label in labels:
        if label == "healthz":
            series["locust"].append(results["scenarios"]["floor"]["requests"]["healthz"]["rps"])
        elif label == "invest-hot":
            series["locust"].append(results["scenarios"]["H"].get("accepted_per_second") or 0)
        else:
            series["locust"].append(_api_figures(results, label).get("rps", 0))
        series["wrk"].append(wrk.get(label, {}).get("rps") or 0)
        series["pgbench"].append(pgb.get(label, {}).get("tps") or 0)
    width = 0.27
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + (i - 1) * width for x in range(len(labels))], values, width, label=name)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("requests (transactions) / s")
    ax.set_title("Throughput: locust scenario vs wrk (server ceiling) vs pgbench (database)")
    ax.legend()

    xs = range(len(CAPACITY_ENDPOINTS))
    for i, (group, name) in enumerate((("service", "service"), ("postgres", "PostgreSQL"))):
        values = [
            wrk.get(e, {}).get(f"{group}_cpu_us_per_request") or 0 for e in CAPACITY_ENDPOINTS
        ]
        cap.bar([x + (i - 0.5) * 0.4 for x in xs], values, 0.4, label=f"{name} CPU µs / request")
    for endpoint, _, key, _, bound in CAPACITY_TARGETS:  # the CPU targets as short dashes
        if key.endswith("_cpu_us_per_request"):
            at = CAPACITY_ENDPOINTS.index(endpoint) + (-0.2 if key.startswith("service") else 0.2)
            cap.hlines(bound, at - 0.2, at + 0.2, colors="black", linestyles="dashed")
    top = max([60.0, *(b.get_height() for b in cap.patches)])
    for x, endpoint in zip(xs, CAPACITY_ENDPOINTS, strict=True):
        entry = wrk.get(endpoint, {})
        if entry.get("rps"):
            ratio, of = entry.get("rps_vs_floor_asgi"), "ASGI floor"
            if ratio is None:  # a run before the floor was measured
                ratio, of = entry.get("rps_vs_healthz"), "/healthz"
            text = f"{entry['rps']:,.0f} req/s" + (f"\n{ratio:.2f}× {of}" if ratio else "")
            cap.text(x, top * 1.02, text, ha="center", va="bottom", fontsize=8)
    cap.set_ylim(0, top * 1.35)
    cap.set_xticks(list(xs), list(CAPACITY_ENDPOINTS))
    cap.set_ylabel("CPU µs per request")
    cap.set_title("Capacity (wrk, 500 connections): CPU per request; dashes = targets")
    cap.legend(loc="upper left", fontsize=8)
    save(fig, "throughput")

    fig, ax = plt.subplots(figsize=(7, 4))
    growth = results["scenarios"].get("G", [])
    sizes = [p["investments"] for p in growth]
    for api, color in (("list", "tab:blue"), ("my-investments", "tab:green")):
        for q, style in (("p50_ms", "-o"), ("p99_ms", "--x")):
            ax.plot(sizes, [p[api]["requests"].get(api, {}).get(q, 0) for p in growth], style,
                    color=color, label=f"{api} {q[:3]}")  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.set_xscale("log")
    ax.set_xlabel("investments in the ledger (log)")
    ax.set_ylabel("latency, ms")
    ax.set_title("G: latency as the ledger grows")
    ax.legend()
    save(fig, "growth")
    return names


def main(argv: list[str] | None = None) -> int:
    """Render the Markdown and charts again from a run's JSON (after a change of layout)."""
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    parser.add_argument("json", type=Path)
    parser.add_argument("--latest", action="store_true", help="also rewrite LATEST.md beside it")
    args = parser.parse_args(argv)
    results = json.loads(args.json.read_text())
    for path in write(results, args.json.parent, args.json.stem, args.latest):
        print(f"wrote {path}")
    return 0


def write(results: dict[str, Any], out_dir: Path, base: str, latest: bool) -> list[Path]:
    """Write <base>.json, <base>.md and the charts; with `latest`, LATEST.md points at them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{base}.json"
    json_path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    names = charts(results, out_dir, base) if "S" in results["scenarios"] else {}
    md_path = out_dir / f"{base}.md"
    md_path.write_text(markdown(results, names), encoding="utf-8")
    paths = [json_path, md_path, *(out_dir / n for n in names.values())]
    if latest:
        latest_path = out_dir / "LATEST.md"
        latest_path.write_text(
            f"<!-- the newest full run: {base}.md, copied -->\n" + md_path.read_text()
        )
        paths.append(latest_path)
    return paths


if __name__ == "__main__":
    sys.exit(main())
