"""Events on against off, in the same run: invest throughput with the outbox and its relay
(NATS_URL set, a nats-server of this run's own) and without, alternating, for two workloads:

  capacity  wrk, 500 connections, invests spread over 100 recruiting products
  rush      wrk, 500 connections, every invest on one product (the opening rush)

One instance, 2 workers (the capacity stage's shape). For each window with events on it also
reports the relay's throughput at full speed (NATS stopped while wrk makes a backlog for half a
window, then started again: the backlog over the time from its first to its last event
published), and what the relay did over the measured window: events published per second
(JetStream's acknowledgements, from /metrics `events_published_total`, over the window and the
drain after it) against invests accepted per second, the backlog when the window ends (count,
age of the oldest) and how long the relay then takes to drain it, and the publish latency
(outbox row written → JetStream's ack) p50/p99 from /metrics' `events_publish_latency_seconds`
histogram over the window. And, for both sides, the CPU each part spent per accepted invest (=
per event with events on) over the window and the relay's drain after it, in µs, from /proc
(utime + stime): the service's workers, the relay process, nats-server, this database's
PostgreSQL backends split into the workers' pool and the relay's session (by pid, from
pg_stat_activity's application_name), and the server's own background processes (walwriter,
checkpointer, autovacuum...: shared with anything else the server runs). The CPU figures hold on
a busy machine far better than the throughput does. Usage, on a quiet machine:

    python -m bench.events --rounds 2 --window 20
    python -m bench.events --rounds 1 --window 2 --workloads capacity   # a smoke
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.cpu import TICKS_PER_SECOND, all_stats, group
from bench.limits import run_wrk, wrk_script
from bench.rush_compare import start_instance, stop, wait_ready
from bench.target import (
    DEFAULT_SERVER,
    create_service_login,
    psql,
    recreate_database,
    recruiting,
    settle,
)
from harness.nats import NatsServer

PRODUCTS = {"capacity": 100, "rush": 1}


class Nats(NatsServer):
    """A nats-server with JetStream of this run's own: a free port, its store and log in the
    run's folder; stopped and started again on both (the backlog drain)."""

    def __init__(self, work: Path) -> None:
        super().__init__(work / "nats", work)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def cpu_ticks(service_pid: int, nats_pid: int | None, owner: str) -> dict[str, int]:
    """CPU ticks so far of each part (bench/events.py's docstring), from one scan of /proc.
    PostgreSQL's backends by pid: a part's figure between two of these is per pid (a backend
    that started in between counts from 0; one that ended drops out: the pool's and the relay's
    sessions live through a window)."""
    rows = psql(
        owner,
        "SELECT pid, datname = current_database(), application_name LIKE 'investment-relay%',"
        " backend_type = 'client backend' FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
    )
    stats = all_stats()
    ticks: dict[str, int] = {}

    def add(part: str, key: str, value: int) -> None:
        ticks[f"{part}/{key}"] = value

    service = group(service_pid, stats)
    relay_roots = {m.pid for m in service if " service relay" in _cmdline(m.pid)}
    relay = {m.pid for root in relay_roots for m in group(root, stats)}
    for m in service:
        part = "relay" if m.pid in relay else "workers"
        add(part, str(m.pid), m.utime + m.stime + m.cutime + m.cstime)
    if nats_pid is not None:
        for m in group(nats_pid, stats):
            add("nats", str(m.pid), m.utime + m.stime + m.cutime + m.cstime)
    for line in rows.splitlines():
        pid_text, ours, relay_session, client = line.split("\t")
        pid = int(pid_text)
        if pid not in stats:
            continue
        m = stats[pid]
        if ours == "t":
            part = "pg_relay" if relay_session == "t" else "pg_workers"
        elif client == "t":
            continue  # another database's session (a colleague's, the bench's psql)
        else:
            part = "pg_background"
        add(part, str(pid), m.utime + m.stime)  # backends' own time: they reap no children
    return ticks


PARTS = ("workers", "pg_workers", "relay", "pg_relay", "nats", "pg_background")


def cpu_us_per_event(before: dict[str, int], after: dict[str, int], events: int) -> dict[str, Any]:
    """Each part's CPU µs per event between two cpu_ticks() (pids alive at the end)."""
    spent = dict.fromkeys(PARTS, 0)
    for key, now in after.items():
        part = key.split("/")[0]
        spent[part] += now - before.get(key, 0)
    figures: dict[str, Any] = {
        part: round(spent[part] / TICKS_PER_SECOND * 1e6 / events, 1) if events else None
        for part in PARTS
    }
    figures["total"] = round(sum(v for v in figures.values() if v is not None), 1)
    return figures


# The events in outbox rows (a row holds a call's, sql/migrations/014_outbox_calls.sql).
OUTBOX_EVENTS = "coalesce(sum(cardinality(investment_ids)), 0)"


def outbox(owner: str) -> int:
    """The events in the outbox."""
    return int(psql(owner, f"SELECT {OUTBOX_EVENTS} FROM investment_event"))


def backlog(owner: str) -> tuple[int, float]:
    """The events in the outbox and the age in seconds of the oldest (0: none)."""
    count, age = psql(
        owner,
        f"SELECT {OUTBOX_EVENTS},"
        " coalesce(extract(epoch FROM clock_timestamp() - min(recorded_at)), 0)"
        " FROM investment_event",
    ).split("\t")
    return int(count), float(age)


def drain_rate(owner: str, nats: Nats) -> dict[str, Any]:
    """The relay at full speed: NATS is started again under a backlog; from its first
    published event (after the relay's backoff) to the last, events per second."""
    backlog = outbox(owner)
    nats.start()
    deadline = time.monotonic() + 300
    while (left := outbox(owner)) >= backlog and time.monotonic() < deadline:
        time.sleep(0.01)
    began, first_left = time.monotonic(), left
    while outbox(owner) > 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    seconds = time.monotonic() - began
    return {"backlog": backlog, "drain_per_s": round(first_left / seconds, 1) if seconds else None}


def remove_stream(nats_url: str) -> None:
    """INVESTMENTS goes with the database that filled it: each measurement starts without."""
    import asyncio

    import nats
    from nats.js.errors import NotFoundError

    async def remove() -> None:
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().delete_stream("INVESTMENTS")
        except NotFoundError:
            pass
        finally:
            await nc.close()

    asyncio.run(remove())


def scrape(url: str) -> dict[str, float]:
    """The relay's samples of /metrics (name with labels → value)."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("events_"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def latency_quantiles(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """p50/p99 of the publish latency histogram's observations between two scrapes (the upper
    bound of the bucket the quantile falls in)."""
    prefix = 'events_publish_latency_seconds_bucket{le="'
    buckets = sorted(
        (float("inf") if key[len(prefix):-2] == "+Inf" else float(key[len(prefix):-2]),
         after[key] - before.get(key, 0.0))
        for key in after if key.startswith(prefix)
    )  # fmt: skip
    total = buckets[-1][1] if buckets else 0.0
    result: dict[str, Any] = {"observed": int(total)}
    for label, fraction in (("p50_s", 0.5), ("p99_s", 0.99)):
        result[label] = next((le for le, count in buckets if count >= fraction * total), None)
    return result


@contextmanager
def invest_load(
    owner: str, products: int, work: Path, name: str, connections: int = 500
) -> Iterator[tuple[subprocess.Popen[bytes], str, str, str]]:
    """An instance of this checkout (`python -m service run`, 2 workers, the environment as it
    is now) on `owner`'s database with products 1..`products` recruiting, warmed up by wrk's
    invest load at `connections` (not measured) and PostgreSQL settled: (its process, its base
    URL, the invest URL, the wrk script of that load). The instance is stopped on exit."""
    process, url = start_instance(Path.cwd(), owner, work / "service.log")
    try:
        wait_ready(url, process)
        recruiting(owner, products)
        script = wrk_script("invest", users=1_000_000, recruiting=products)
        target = url + "/v1/api/investment/user/goods"
        run_wrk(target, f"{name}-warm", script, 3, work, connections)
        settle(owner, timeout=10)
        yield process, url, target, script
    finally:
        stop(process)


def measure(
    workload: str,
    events: bool,
    server: str,
    window: float,
    work: Path,
    nats: Nats,
    prefix: str = "events",
) -> dict[str, Any]:
    owner = recreate_database(server, f"{prefix}_{workload}_{'on' if events else 'off'}")
    if events:
        remove_stream(nats.url)
        os.environ["NATS_URL"] = nats.url
    else:
        os.environ.pop("NATS_URL", None)
    with invest_load(owner, PRODUCTS[workload], work, workload) as (process, url, target, script):
        before = scrape(url) if events else {}
        nats_pid = nats.process.pid if events and nats.process is not None else None
        ticks_before = cpu_ticks(process.pid, nats_pid, owner)
        result = run_wrk(target, workload, script, window, work)
        accepted = (result["requests"] or 0) - result["non_2xx"]
        figures: dict[str, Any] = {
            "accepted_per_s": round(accepted / window, 1),
            "non_2xx": result["non_2xx"],
            "p99_ms": result["p99_ms"],
        }
        if not events:
            ticks_after = cpu_ticks(process.pid, None, owner)
            figures["cpu_us_per_event"] = cpu_us_per_event(ticks_before, ticks_after, accepted)
        if events:
            # The backlog when the rush stops, then the time the relay takes to publish it.
            left, oldest = backlog(owner)
            start = time.monotonic()
            while outbox(owner) > 0:
                if time.monotonic() - start > 120:
                    break
                time.sleep(0.05)
            drain = time.monotonic() - start
            ticks_after = cpu_ticks(process.pid, nats_pid, owner)
            after = scrape(url)
            published = after.get("events_published_total", 0) - before.get(
                "events_published_total", 0
            )
            figures.update(
                # Everything the window accepted was published by the end of the drain.
                relay_published_per_s=round(published / (window + drain), 1),
                backlog_at_end=left,
                oldest_age_at_end_s=round(oldest, 3),
                drain_s=round(drain, 2),
                latency=latency_quantiles(before, after),
            )
            figures["cpu_us_per_event"] = cpu_us_per_event(ticks_before, ticks_after, accepted)
            # Then the relay's own throughput: a backlog made while NATS is down, drained.
            nats.stop()
            run_wrk(target, f"{workload}-backlog", script, window / 2, work)
            figures["relay_full_speed"] = drain_rate(owner, nats)
        return figures


def round_ratios(figures: dict[bool, list[dict[str, Any]]]) -> list[float]:
    """Each round's on ÷ off: its two windows ran back to back, so a ratio within a round is free
    of the drift between rounds that the means' ratio carries (on this 2-core machine the
    windows of one side spread by up to 16 % across a run in docs/performance.md's fourth set)."""
    return [
        round(on["accepted_per_s"] / off["accepted_per_s"], 3)
        for off, on in zip(figures[False], figures[True], strict=True)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--workloads", default="capacity,rush")
    parser.add_argument("--server", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER))
    parser.add_argument(
        "--databases", default="events", help="the databases' prefix (<prefix>_capacity_on...)"
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-events-"))
    create_service_login(args.server)
    nats = Nats(work)
    nats.start()
    try:
        for workload in args.workloads.split(","):
            figures: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
            for round_number in range(args.rounds):
                order = (False, True) if round_number % 2 == 0 else (True, False)
                for events in order:
                    result = measure(
                        workload, events, args.server, args.window, work, nats, args.databases
                    )
                    figures[events].append(result)
                    side = "on " if events else "off"
                    print(f"{workload} round {round_number + 1} events {side}: {result}",
                          flush=True)  # fmt: skip
            off = statistics.mean(r["accepted_per_s"] for r in figures[False])
            on = statistics.mean(r["accepted_per_s"] for r in figures[True])
            relay = statistics.mean(r["relay_published_per_s"] for r in figures[True])
            full = statistics.mean(
                r["relay_full_speed"]["drain_per_s"] or 0.0 for r in figures[True]
            )
            print(
                f"{workload}: accepted invests/s off {off:.0f}, on {on:.0f} (on/off"
                f" {on / off:.3f}); relay published/s during the rush {relay:.0f}"
                f" (relay/invests {relay / on:.3f}); relay at full speed {full:.0f}/s"
                f" (relay/invest capacity off {full / off:.3f})",
                flush=True,
            )
            ratios = round_ratios(figures)
            print(
                f"{workload}: on/off per round {ratios} (median {statistics.median(ratios):.3f},"
                f" {min(ratios):.3f}-{max(ratios):.3f})",
                flush=True,
            )
            for on_side, label in ((False, "off"), (True, "on")):
                cpu = {
                    part: round(statistics.mean(r["cpu_us_per_event"][part] or 0.0
                                                for r in figures[on_side]), 1)
                    for part in (*PARTS, "total")
                }  # fmt: skip
                print(f"{workload}: CPU µs per accepted invest, events {label}: {cpu}", flush=True)
            for suffix in ("on", "off"):
                name = f"{args.databases}_{workload}_{suffix}"
                psql(args.server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        nats.stop()
        shutil.rmtree(nats.store, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
