"""Runs one locust scenario (headless, --processes, CSV + JSON) and reads back its figures.

While locust runs, the CPU of its processes is sampled over the measuring window, so a report can
say when the generator itself was the bottleneck (beside locust's own warning, taken from its log).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness import ROOT
from harness.processes import stop_process
from harness.sockets import free_port

LOCUSTFILE = ROOT / "bench" / "locustfile.py"
CPU_SATURATED = 90.0  # percent of one core, locust's own threshold
CPU_WARNING_MARKS = ("CPU usage above", "exceeded cpu threshold", "CPU usage threshold")


@dataclass
class Run:
    """What to run: a user class, how many users, for how long, with which parameters."""

    name: str
    user_class: str
    users: int
    warmup: float
    window: float
    env: dict[str, str] = field(default_factory=dict)
    quit_when_idle: bool = False
    max_seconds: float | None = None  # H: an upper bound instead of a fixed window


def percentile(histogram: dict[int, int], fraction: float) -> float:
    """The response time (ms) below which `fraction` of the requests fall."""
    total = sum(histogram.values())
    if total == 0:
        return 0.0
    wanted = fraction * total
    seen = 0
    for ms in sorted(histogram):
        seen += histogram[ms]
        if seen >= wanted:
            return float(ms)
    return float(max(histogram))


def summarise(entry: dict[str, Any]) -> dict[str, Any]:
    histogram = {int(k): int(v) for k, v in entry["response_times"].items()}
    requests = int(entry["num_requests"])
    elapsed = max(1e-9, float(entry["last_request_timestamp"] or 0) - float(entry["start_time"]))
    return {
        "requests": requests,
        "failures": int(entry["num_failures"]),
        "avg_ms": round(entry["total_response_time"] / requests, 2) if requests else 0.0,
        "p50_ms": percentile(histogram, 0.50),
        "p95_ms": percentile(histogram, 0.95),
        "p99_ms": percentile(histogram, 0.99),
        "max_ms": round(float(entry["max_response_time"] or 0), 1),
        "rps": round(requests / elapsed, 1) if requests else 0.0,
        "elapsed_s": round(elapsed, 2),
    }


def summarise_csv(path: Path) -> dict[str, dict[str, Any]]:
    """The same figures from locust's `_stats.csv` (written every second while it runs)."""
    found: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return found
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == "Aggregated" or not int(row["Request Count"]):
                continue
            found[row["Name"]] = {
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "avg_ms": round(float(row["Average Response Time"]), 2),
                "p50_ms": float(row["50%"]),
                "p95_ms": float(row["95%"]),
                "p99_ms": float(row["99%"]),
                "max_ms": round(float(row["Max Response Time"]), 1),
                "rps": round(float(row["Requests/s"]), 1),
                "source": "csv",
            }
    return found


def _process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class CpuSampler(threading.Thread):
    """Samples CPU% of the locust processes (each, % of one core) and of the machine."""

    def __init__(self, pid: int, start_after: float) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.start_after = start_after
        self.stopped = threading.Event()
        self.per_process: dict[int, list[float]] = {}
        self.machine: list[float] = []

    def run(self) -> None:
        if self.stopped.wait(self.start_after):
            return
        procs = _process_tree(self.pid)
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.cpu_percent(None)
        psutil.cpu_percent(None)
        while not self.stopped.wait(1.0):
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.per_process.setdefault(proc.pid, []).append(proc.cpu_percent(None))
            self.machine.append(psutil.cpu_percent(None))

    def summary(self) -> dict[str, Any]:
        means = [sum(v) / len(v) for v in self.per_process.values() if v]
        peaks = [max(v) for v in self.per_process.values() if v]
        return {
            "locust_process_cpu_mean": [round(m, 1) for m in means],
            "locust_process_cpu_max": [round(p, 1) for p in peaks],
            "machine_cpu_mean": round(sum(self.machine) / len(self.machine), 1)
            if self.machine
            else None,
        }


def run_locust(
    run: Run,
    base_url: str,
    out_dir: Path,
    processes: int,
    while_running: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> dict[str, Any]:
    """Run one scenario to its end; return per-request figures and the generator's state."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / run.name
    side = out_dir / f"{run.name}.side.json"
    log_path = out_dir / f"{run.name}.log"
    seconds = run.max_seconds if run.max_seconds is not None else run.warmup + run.window
    env = {
        **os.environ,
        "BENCH_WARMUP": str(run.warmup),
        "BENCH_SIDE_FILE": str(side),
        "BENCH_QUIT_WHEN_IDLE": "1" if run.quit_when_idle else "0",
        **run.env,
    }
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", str(run.users), "-r", str(run.users), "-t", f"{max(1, round(seconds))}s",
        "-H", base_url, "--stop-timeout", "2",
        "--csv", str(prefix), "--json-file", str(prefix), "--only-summary",
        "--exit-code-on-error", "0", "--loglevel", "WARNING", run.user_class,
    ]  # fmt: skip
    if processes > 1:
        # Master and workers talk over loopback on a port of this run's own (the default, 5557,
        # would collide with any other locust on the machine); forked workers read --master-port.
        port = str(free_port())
        command[-1:-1] = ["--processes", str(processes), "--master-bind-host", "127.0.0.1",
                          "--master-bind-port", port, "--master-host", "127.0.0.1",
                          "--master-port", port]  # fmt: skip
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    sampler = CpuSampler(process.pid, start_after=run.warmup + 1.0)
    sampler.start()
    try:
        if while_running is not None:
            while_running(process)
        process.wait(timeout=seconds + 60)
    finally:
        sampler.stopped.set()
        stop_process(process, timeout=10)
    wall = time.monotonic() - started
    log_text = log_path.read_text(errors="replace")
    stats_path = out_dir / f"{run.name}.json"
    if not stats_path.exists():
        raise RuntimeError(f"locust {run.name} wrote no stats:\n{log_text[-3000:]}")
    requests = {e["name"]: summarise(e) for e in json.loads(stats_path.read_text())}
    if not requests:
        # Seen once under full CPU: the master's final JSON came out empty while its CSV, written
        # a second earlier, held the window. The CSV is then the best record there is.
        requests = summarise_csv(out_dir / f"{run.name}_stats.csv")
    warned = any(mark in log_text for mark in CPU_WARNING_MARKS)
    if side.exists():
        warned = warned or bool(json.loads(side.read_text()).get("cpu_warning"))
    cpu = sampler.summary()
    workers_cpu = cpu["locust_process_cpu_mean"]
    saturated = warned or any(m >= CPU_SATURATED for m in workers_cpu)
    return {
        "user_class": run.user_class,
        "users": run.users,
        "warmup_s": run.warmup,
        "window_s": run.window,
        "wall_s": round(wall, 1),
        "requests": requests,
        "generator": {"cpu_warning": warned, "cpu_saturated": saturated, **cpu},
        "csv": str(prefix) + "_stats.csv",
    }
