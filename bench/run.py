"""The bench protocol of bench/README.md, end to end, and its reports.

    python -m bench.run                  # full protocol (just bench), about 18 minutes on 2 cores
    python -m bench.run --quick          # every scenario for a few seconds on a small dataset
    python -m bench.run --only capacity  # dataset D and the capacity stage alone, ~4 minutes

Order: one database, loaded step by step; scenario G is measured at each ledger size on the way
to D and beyond it, and at D the floor, S, M, H, the capacity stage (wrk) and the other limits
run. pgbench runs while the service is stopped (its 50 clients and the service's 50 connections
would share max_connections).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench import caps, cpu, dataset, jmeter, limits, plain, report, waits
from bench.dataset import Shape, check_consistency, users_for, users_holding
from bench.floor import INTERFACES
from bench.loadgen import Run, run_locust
from bench.target import (
    ROOT,
    WORK,
    FloorServer,
    Service,
    bench_database,
    database_backends,
    postmaster_pid,
    psql,
    settle,
)
from harness.processes import NotReady

RESULTS = ROOT / "bench" / "results"
HOT_AMOUNT = 10_000
RUSH_SPEEDUP = 3
STAGES = ("capacity", "jmeter")  # what --only can run alone


@dataclass(frozen=True)
class Protocol:
    name: str
    shape: Shape
    growth_sizes: tuple[int, ...]
    users: int
    warmup: float
    window: float
    growth_window: float
    rush_seconds: float  # how long the opening rush should last (sizes the hot product)
    rush_max: float
    pgbench_seconds: float
    wrk_seconds: float
    # the same wrk load before each capacity window, not measured (0: none, the window tallies
    # its non-2xx answers itself)
    wrk_warmup: float = 3
    settle_timeout: float = 60  # the longest wait for autovacuum workers before a window
    page_items: tuple[int, ...] = dataset.PAGE_ITEMS  # my investments' page sizes measured
    # locust's processes (0: one per core, a master and its workers); the quick smoke's 100
    # users need one, and skip the ~4 s per scenario a master and its workers cost it
    locust_processes: int = 0
    # warm each fresh service up before its metrics pass (the quick smoke measures nothing)
    metrics_warmup: bool = True


FULL = Protocol(
    name="full",
    shape=Shape(),
    growth_sizes=(10**4, 10**5, 10**6, 10**7),
    users=500,
    warmup=10,
    window=45,
    growth_window=15,
    rush_seconds=25,
    rush_max=150,
    pgbench_seconds=15,
    wrk_seconds=10,
)
QUICK = Protocol(
    name="quick",
    shape=Shape(investments=10_000),
    growth_sizes=(1_000, 20_000),
    users=100,
    warmup=1,
    window=1,
    growth_window=1,
    # The rush sells out at about S's invest rate, not RUSH_SPEEDUP times it (2,000-2,300
    # invests/s against S's 2,000-3,000 on 2 cores): half a second's worth of grants sells out
    # in 2-3 s, well inside rush_max also when a loaded host slows the rush and not S's window.
    rush_seconds=0.5,
    rush_max=20,
    pgbench_seconds=1,
    wrk_seconds=1,
    wrk_warmup=0,
    settle_timeout=5,
    locust_processes=1,
    metrics_warmup=False,
)


class Bench:
    """One run: the database, the service process, the figures collected so far."""

    def __init__(self, protocol: Protocol, url: str, work: Path, workers: int, pool: int) -> None:
        self.protocol = protocol
        self.url = url
        self.work = work
        self.workers = workers
        self.pool = pool
        self.processes = protocol.locust_processes or os.cpu_count() or 1
        self.loaded = 0
        self.loading_seconds = 0.0
        self.service: Service | None = None
        self.caps: str | None = None  # BENCH_CAPS (bench/caps.py), switched on once D is loaded
        self.results: dict[str, Any] = {"scenarios": {}, "limits": {}, "dataset": {}}

    # -- the systems under test --------------------------------------------------------------

    def start_service(self, **settings: str) -> Service:
        self.stop_service()
        log_path = self.work / f"service-{int(time.time())}.log"
        self.service = Service(self.url, self.workers, self.pool, log_path, settings)
        try:
            self.service.start()
        except BaseException:
            self.service.stop()
            raise
        return self.service

    def stop_service(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None

    def grow_to(self, size: int) -> None:
        started = time.monotonic()
        dataset.extend_ledger(self.url, self.loaded, size, self.protocol.shape.products)
        took = time.monotonic() - started
        self.loading_seconds += took
        self.results["dataset"].setdefault("steps", []).append(
            {"from": self.loaded, "to": size, "seconds": round(took, 1)}
        )
        self.loaded = size

    def settle(self, before: str) -> dict[str, Any]:
        """CHECKPOINT and no autovacuum worker running (bench/target.py) before a measured
        window; recorded in the results as `settle`."""
        figures = {"before": before, **settle(self.url, self.protocol.settle_timeout)}
        self.results.setdefault("settle", []).append(figures)
        return figures

    def locust(self, run: Run, **kwargs: Any) -> dict[str, Any]:
        assert self.service is not None
        self.settle(run.name)
        print(f"  locust {run.name}: {run.users} users, {run.user_class}", flush=True)
        out = self.work / "locust"
        return run_locust(run, self.service.base_url, out, self.processes, **kwargs)

    def run_env(self, users: int) -> dict[str, str]:
        return {
            "BENCH_USERS": str(users),
            "BENCH_RECRUITING": str(self.protocol.shape.recruiting),
            "BENCH_WINDOW_START": dataset.WINDOW[0],
            "BENCH_WINDOW_END": dataset.WINDOW[1],
        }

    # -- the scenarios -----------------------------------------------------------------------

    def growth_point(self, size: int) -> None:
        p = self.protocol
        env = self.run_env(users_for(size))
        point: dict[str, Any] = {"investments": dataset.ledger_size(self.url), "generated": size}
        for api, user_class in (("list", "ListUser"), ("my-investments", "MyInvestmentsUser")):
            run = Run(f"G-{size}-{api}", user_class, p.users, p.warmup, p.growth_window, env)
            point[api] = self.locust(run)
        self.results["scenarios"].setdefault("G", []).append(point)

    def steady(self, key: str, user_class: str) -> dict[str, Any]:
        p = self.protocol
        env = self.run_env(p.shape.users)
        return self.locust(Run(key, user_class, p.users, p.warmup, p.window, env))

    def seed_scenario(self) -> None:
        scenarios = self.results["scenarios"]
        scenarios["floor"] = self.steady("floor", "HealthUser")
        scenarios["S"] = {
            "list": self.steady("S-list", "ListUser"),
            "invest": self.steady("S-invest", "InvestUser"),
            "my-investments": self.steady("S-my-investments", "MyInvestmentsUser"),
        }
        scenarios["M"] = self.steady("M", "MixedUser")

    def new_hot_product(self, total: int, title: str) -> int:
        # Recruiting now, but starting before the list window, so the list scenario never sees it.
        return int(
            psql(
                self.url,
                "INSERT INTO investment_goods (title, total_investing_amount, started_at,"
                f" finished_at) VALUES ('{title}', {total}, timestamptz '2019-12-01 00:00:00+00',"
                " now() + interval '1 day') RETURNING goods_id",
            ).splitlines()[-1]
        )

    def rush(self) -> None:
        p = self.protocol
        invest_rps = self.results["scenarios"]["S"]["invest"]["requests"]["invest"]["rps"]
        # Coalescing makes the hot product take grants faster than S's spread-out invests.
        grants = max(200, round(max(invest_rps, 1.0) * RUSH_SPEEDUP * p.rush_seconds))
        total = grants * HOT_AMOUNT
        goods_id = self.new_hot_product(total, "오픈 러시")
        env = {**self.run_env(p.shape.users), "BENCH_HOT_GOODS": str(goods_id)}
        env["BENCH_HOT_AMOUNT"] = str(HOT_AMOUNT)
        sold_out_at: list[float] = []

        def watch(process: subprocess.Popen[bytes]) -> None:
            deadline = time.monotonic() + p.rush_max + 30
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
                current = int(
                    psql(
                        self.url,
                        "SELECT current_investing_amount FROM investment_goods"
                        f" WHERE goods_id = {goods_id}",
                    )
                )
                if current >= total and not sold_out_at:
                    sold_out_at.append(time.monotonic())
                if sold_out_at and time.monotonic() - sold_out_at[0] > 10:
                    process.terminate()  # users that never saw the answer: bounded anyway
                    return

        run = Run("H", "HotInvestUser", p.users, 0, p.rush_max, env, True, p.rush_max)
        figures = self.locust(run, while_running=watch)
        rows, amount, seconds, partial = psql(
            self.url,
            "SELECT count(*), coalesce(sum(user_investing_amount), 0),"
            " coalesce(extract(epoch FROM max(invest_date) - min(invest_date)), 0),"
            f" count(*) FILTER (WHERE user_investing_amount < {HOT_AMOUNT})"
            f" FROM user_investment_goods WHERE goods_id = {goods_id}",
        ).split("\t")
        consistency = check_consistency(self.url, goods_id)
        hot = figures["requests"].get("invest-hot", {})
        failures = hot.get("failures", 0)
        figures.update(
            goods_id=goods_id,
            total=total,
            ledger_rows=int(rows),
            ledger_sum=int(amount),
            sell_out_seconds=round(float(seconds), 2),
            accepted_per_second=round(int(rows) / float(seconds), 1) if float(seconds) else None,
            partial_fills=int(partial),
            verification={
                "sold_out": int(amount) == total,
                "sum_equals_total": int(amount) == total,
                "no_oversell": int(amount) <= total,
                "counters_equal_ledger": consistency.ok,
                "failed_requests": failures,
            },
        )
        self.results["scenarios"]["H"] = figures

    def pgbench(self) -> None:
        p = self.protocol
        hot = self.new_hot_product(10**15, "pgbench 핫 상품")
        scripts = limits.pgbench_scripts(p.shape.users, p.shape.recruiting, hot)
        out = self.work / "pgbench"
        postmaster = postmaster_pid(self.url)
        figures = {}
        for name, script in scripts.items():
            before = cpu.sample(postmaster) if postmaster else None
            entry = limits.run_pgbench(self.url, name, script, p.pgbench_seconds, out)
            after = cpu.sample(postmaster) if postmaster else None
            # PostgreSQL's CPU per invest (or read) at 1, 10 and 100 requests per call.
            per_call = limits.requests_per_call(name)
            requests = int(entry.get("transactions") or 0) * per_call
            entry["requests_per_call"] = per_call
            entry["requests_per_second"] = round((entry.get("tps") or 0) * per_call, 1)
            entry["postgres_cpu_us_per_request"] = cpu.us_per_request(before, after, requests)
            figures[name] = entry
        self.results["limits"]["pgbench"] = figures

    def wrk_targets(self, base: str) -> dict[str, str]:
        """/healthz and each API on the server at `base`: name (the wrk script's kind) -> url."""
        window = urlencode({"started_at": dataset.WINDOW[0], "finished_at": dataset.WINDOW[1]})
        return {
            "healthz": f"{base}/healthz",
            "list": f"{base}/v1/api/investment/goods?{window}",
            "invest": f"{base}/v1/api/investment/user/goods",
            "my-investments": f"{base}/v1/api/investment/user/goods",
        }

    def wrk_script(self, kind: str, user_ids: list[int] | None = None, tally: bool = True) -> str:
        p = self.protocol
        return limits.wrk_script(kind, p.shape.users, p.shape.recruiting, user_ids, tally=tally)

    def wrk_window(
        self,
        name: str,
        url: str,
        script: str,
        seconds: float,
        out: Path,
        cpu_roots: dict[str, int | None] | None = None,
    ) -> dict[str, Any]:
        """One wrk run (500 connections); with `cpu_roots`, the CPU µs per request of each
        process group (bench/cpu.py), sampled just before and after it."""
        backends = database_backends(self.url) if cpu_roots else set()
        backends_before = cpu.ticks_of(backends)
        before = cpu.sample_groups(cpu_roots or {})
        entry = limits.run_wrk(url, name, script, seconds, out)
        after = cpu.sample_groups(cpu_roots or {})
        if cpu_roots:  # the bench database's own backends: its share of the cluster's CPU
            backends_after = cpu.ticks_of(backends | database_backends(self.url))
            entry["postgres_backends_cpu_us_per_request"] = cpu.us_per_request_of(
                backends_before, backends_after, entry.get("requests")
            )
        for group in cpu_roots or {}:
            used = cpu.us_per_request(before[group], after[group], entry.get("requests"))
            entry[f"{group}_cpu_us_per_request"] = used
            sampled = after[group] or before[group]
            entry[f"{group}_processes"] = sampled.processes if sampled else None
        if "error" not in entry:
            entry["errors"] = entry.get("non_2xx", 0) + entry.get("socket_errors", 0)
        return entry

    def wrk_endpoints(self, label: str, seconds: float) -> dict[str, dict[str, Any]]:
        """wrk on /healthz and each API in turn, no warm-up or settling in between (the metrics
        passes); logs and scripts go to <work>/wrk-<label>/."""
        assert self.service is not None
        out = self.work / f"wrk-{label}"
        figures = {
            name: self.wrk_window(name, url, self.wrk_script(name), seconds, out)
            for name, url in self.wrk_targets(self.service.base_url).items()
        }
        return report.with_ratios(figures)

    def capacity_window(
        self,
        name: str,
        url: str,
        kind: str,
        cpu_roots: dict[str, int | None],
        user_ids: list[int] | None = None,
    ) -> dict[str, Any]:
        """A quiet capacity window: the same wrk load as a warm-up (not measured), PostgreSQL
        settled, then the measured window with the CPU per request. The measured window's wrk
        has no response() hook (it costs wrk CPU per request); the non-2xx answers' statuses and
        codes are tallied in the warm-up and, when the window had any, in a run right after.
        Without a warm-up (the quick smoke, which measures nothing) the window tallies them."""
        p = self.protocol
        out = self.work / "wrk-capacity"
        tally = self.wrk_script(kind, user_ids)
        samples = []
        if p.wrk_warmup:
            warmup = limits.run_wrk(url, f"{name}-warmup", tally, p.wrk_warmup, out)
            samples.append({"run": "warm-up", **warmup})
        settled = self.settle(f"capacity {name}")
        script = self.wrk_script(kind, user_ids, tally=not p.wrk_warmup)
        # The service's own /metrics around the window (outside its CPU samples): how its
        # requests reached the database. The floors and the plain implementation have none.
        served = self.service.base_url if self.service is not None else ""
        base = served if served and url.startswith(served) else None
        before = waits.scrape_or_none(base) if base else None
        entry = self.wrk_window(name, url, script, p.wrk_seconds, out, cpu_roots)
        after = waits.scrape_or_none(base) if base and before is not None else None
        if before is not None and after is not None and entry.get("requests"):
            counted = waits.between(before, after)
            entry["calls"] = waits.calls_shape(counted, entry["requests"], p.wrk_seconds)
        entry["settle"] = {k: v for k, v in settled.items() if k != "before"}
        if entry.get("non_2xx"):  # tallied by a run right after, or by the window itself
            if p.wrk_warmup:
                after = limits.run_wrk(url, f"{name}-after", tally, p.wrk_warmup, out)
                samples.append({"run": "after", **after})
            else:
                samples.append({"run": "window", **entry})
        keep = ("run", "seconds", "requests", "non_2xx", "non_2xx_by_status", "non_2xx_by_code")
        entry["non_2xx_samples"] = [{k: s[k] for k in keep if k in s} for s in samples]
        print(f"    {name}: {entry.get('rps') or 0:,.0f} req/s", flush=True)
        return entry

    def capacity(self) -> None:
        """The capacity stage: the raw ASGI and RSGI floors on the service's granian settings
        (bench/floor.py; the ASGI one also with invest's POST), then /healthz, each API and my
        investments at each page size, each window warmed up and PostgreSQL settled first, with
        the CPU per request of the server's processes and of PostgreSQL; every endpoint also as
        a ratio to the floors."""
        if not limits.wrk_available():
            self.results["limits"]["capacity"] = {"skipped": "wrk is not installed"}
            return
        p = self.protocol
        print("  capacity: wrk, 500 connections, the floors then each endpoint", flush=True)
        postmaster = postmaster_pid(self.url)
        endpoints: dict[str, dict[str, Any]] = {}
        # Chosen before the windows: a few users of many (1,000 of D's 100,000), so that the
        # pages are nearly the same size. The invest window adds rows to their pages (in D about
        # 1.5 per user; on the quick protocol's small dataset so many that every user would
        # hold about the same number afterwards, and the two page sizes would be one).
        holders_by_items = {
            items: users_holding(self.url, items, max(1, min(1000, p.shape.users // 20)))
            for items in p.page_items
        }
        self.stop_service()  # the floors alone on the cores
        for interface in INTERFACES:
            name = f"floor-{interface}"
            log_path = self.work / f"{name}.log"
            pool = {"DB_POOL_SIZE": str(self.pool)}
            try:
                with FloorServer(interface, self.workers, log_path, pool) as floor:
                    targets = self.wrk_targets(floor.base_url)
                    roots = {"service": floor.pid, "postgres": postmaster}
                    endpoints[name] = self.capacity_window(
                        name, targets["healthz"], "healthz", roots
                    )
                    if name == report.FLOOR:  # and invest's POST: a body to receive
                        endpoints[report.FLOOR_POST] = self.capacity_window(
                            report.FLOOR_POST, targets["invest"], "invest", roots
                        )
            except NotReady as error:  # reported as a failed row; the run goes on
                endpoints[name] = {"error": str(error).splitlines()[0]}
        ids_by_items = {items: [u for u, _ in found] for items, found in holders_by_items.items()}
        peer = plain.capacity(self, ids_by_items, postmaster)  # bench/plain.py, the service stopped
        service = self.start_service()
        roots = {"service": service.pid, "postgres": postmaster}
        urls = self.wrk_targets(service.base_url)
        for name, url in urls.items():
            endpoints[name] = self.capacity_window(name, url, name, roots)
        for items in p.page_items:
            holders = holders_by_items[items]
            name = f"my-investments-{items}"
            ids = [user for user, _ in holders]
            endpoints[name] = self.capacity_window(
                name, urls["my-investments"], "my-investments", roots, ids
            )
            rows = [n for _, n in holders]
            endpoints[name]["items_per_page"] = {
                "target": items, "users": len(rows), "mean": round(sum(rows) / len(rows), 1),
                "min": min(rows), "max": max(rows),
            }  # fmt: skip
        if self.caps:  # invest with caps off and on, back to back (bench/caps.py)
            self.results["limits"]["caps"] = caps.compare(
                self.url,
                self.caps,
                lambda name: self.capacity_window(name, urls["invest"], "invest", roots),
            )
        endpoints = report.with_ratios(endpoints)
        self.results["limits"]["capacity"] = {
            "connections": 500,
            "seconds": p.wrk_seconds,
            "warmup_seconds": p.wrk_warmup,
            "service_root_pid": service.pid,
            # The postmaster and all its children: the whole cluster, other databases included.
            "postgres_root_pid": postmaster,
            "endpoints": endpoints,
            "targets": report.capacity_targets(endpoints),
            "floor_targets": report.capacity_targets(endpoints, report.FLOOR_TARGETS),
            "plain": peer | {"ratios": plain.ratios(endpoints, peer)},
        }

    def metrics_overhead(self) -> None:
        """wrk passes with METRICS_ENABLED=false and =true in ABBA order (off, on, on, off, …),
        compared by their medians, so that drift over the stage cancels out; the quick protocol,
        a smoke of the path rather than a measurement, makes one pass of each (off, on)."""
        if not limits.wrk_available():
            return
        passes: dict[str, dict[str, list[float]]] = {}
        full = self.protocol.name == "full"
        order = ["false", "true", "true", "false"] * 2 if full else ["false", "true"]
        for number, enabled in enumerate(order):
            self.start_service(METRICS_ENABLED=enabled)
            if self.protocol.metrics_warmup:  # a fresh process: warm it first
                self.wrk_endpoints("metrics-warmup", seconds=1)
            figures = self.wrk_endpoints(f"metrics-{number}", self.protocol.wrk_seconds / 2)
            for name, entry in figures.items():
                side = passes.setdefault(name, {"false": [], "true": []})[enabled]
                side.append(float(entry.get("rps") or 0))
        self.results["limits"]["metrics_overhead"] = {
            name: {
                "off_rps": sides["false"],
                "on_rps": sides["true"],
                "overhead_pct": round(
                    (1 - statistics.median(sides["true"]) / statistics.median(sides["false"]))
                    * 100,
                    1,
                )
                if statistics.median(sides["false"])
                else None,
            }
            for name, sides in passes.items()
        }
        # The last pass's service stays up: run() stops it next, for pgbench. (A default one
        # started here only to be stopped at once could be stopped while a worker still started,
        # which granian sits out until the stop's 30 s timeout.)

    # -- the protocol ------------------------------------------------------------------------

    def record_dataset(self, timings: dict[str, float], extra_seconds: float = 0.0) -> None:
        """D's shape and what loading it took, into the results."""
        p = self.protocol
        self.results["dataset"].update(
            shape={**asdict(p.shape), "users": p.shape.users},
            d_load_seconds=round(sum(timings.values()) + extra_seconds, 1),
            **{k: round(v, 1) for k, v in timings.items()},
        )
        print(f"dataset D loaded in {self.results['dataset']['d_load_seconds']} s", flush=True)

    def run_only(self, stage: str) -> None:
        """Dataset D loaded at once, then one stage alone (`--only capacity`: a few minutes;
        main() stops the service afterwards)."""
        self.record_dataset(dataset.load(self.url, self.protocol.shape))
        self.caps = caps.switch_on(self.url, self.protocol.shape.users)
        if stage == "jmeter":  # scenario J: bench/jmeter.py
            jmeter.stage(self)
        else:
            self.capacity()

    def run(self) -> None:
        p = self.protocol
        d_size = p.shape.investments
        timings = dataset.load(self.url, replace(p.shape, investments=0))
        below = sorted(s for s in p.growth_sizes if s < d_size)
        above = sorted(s for s in p.growth_sizes if s > d_size)
        print(f"dataset: products loaded; growth sizes {below} < D={d_size} < {above}", flush=True)
        self.start_service()
        for size in below:
            self.grow_to(size)
            self.growth_point(size)
        self.grow_to(d_size)
        self.record_dataset(timings, self.loading_seconds)
        self.caps = caps.switch_on(self.url, p.shape.users)
        if d_size in p.growth_sizes:
            self.growth_point(d_size)
        self.seed_scenario()
        self.rush()
        self.capacity()
        self.metrics_overhead()
        self.stop_service()
        self.pgbench()
        consistency = check_consistency(self.url)
        self.results["dataset"]["consistency_after_scenarios"] = asdict(consistency) | {
            "ok": consistency.ok
        }
        if above:
            self.start_service()
            for size in above:
                self.grow_to(size)
                self.growth_point(size)
            self.stop_service()


def git(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def dirty(checkout: Path) -> bool:
    """Whether `checkout` differs from its commit; the reports that earlier runs wrote to
    bench/results, not yet committed, do not count."""
    return git("status", "--porcelain", "--", ".", ":!bench/results", cwd=checkout) != ""


def service_checkout() -> dict[str, Any] | None:
    """The checkout whose service was measured, when not this one (BENCH_SERVICE_CHECKOUT)."""
    path = os.environ.get("BENCH_SERVICE_CHECKOUT")
    if not path:
        return None
    checkout = Path(path).resolve()
    sha = git("rev-parse", "--short", "HEAD", cwd=checkout) or "nogit"
    return {"path": str(checkout), "git_sha": sha, "git_dirty": dirty(checkout)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (CI)")
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--pool", type=int, default=50, help="DB_POOL_SIZE, in total")
    parser.add_argument("--window", type=float, default=None, help="override the window (s)")
    parser.add_argument("--growth", default=None, help="comma-separated ledger sizes for G")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--note", default="", help="a remark for the report (a shared machine)")
    parser.add_argument(
        "--only", choices=STAGES, default=None,
        help="load dataset D and run this stage alone (reports named <stamp>-<sha>-<stage>)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    protocol = QUICK if args.quick else FULL
    if args.window is not None:
        protocol = replace(protocol, window=args.window, growth_window=args.window / 2)
    if args.growth:
        protocol = replace(protocol, growth_sizes=tuple(int(s) for s in args.growth.split(",")))
    if args.users:
        protocol = replace(protocol, users=args.users)
    full = protocol.name == "full"
    results_dir = args.results_dir or (RESULTS if full else WORK / "quick")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    sha = os.environ.get("BENCH_GIT_SHA") or git("rev-parse", "--short", "HEAD") or "nogit"
    work = WORK / f"{stamp}-{sha}"
    work.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    with bench_database(args.database_url, name="bench" if full else "bench_quick") as url:
        bench = Bench(protocol, url, work, args.workers, args.pool)
        try:
            if args.only:
                bench.run_only(args.only)
            else:
                bench.run()
        finally:
            bench.stop_service()
        postgres_version = psql(url, "SHOW server_version")
    results = {
        "meta": report.meta(stamp, sha, dirty(ROOT), postgres_version)
        | {"service_checkout": service_checkout()},
        "settings": {
            "workers": args.workers,
            "db_pool_size": args.pool,
            "locust_processes": bench.processes,
            "users": protocol.users,
        },
        "protocol": asdict(protocol),
        "wall_seconds": round(time.monotonic() - started, 1),
        "note": args.note,
        "only": args.only,
        "caps": bench.caps,
        **bench.results,
    }
    latest = full and args.results_dir is None and not args.only
    base = f"{stamp}-{sha}" + (f"-{args.only}" if args.only else "")
    paths = report.write(results, results_dir, base, latest=latest)
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
