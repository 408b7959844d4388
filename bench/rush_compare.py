"""The opening rush on one product, two checkouts in the same run: 2 instances × 2 workers each,
wrk at 500 connections all investing in one product, alternating before/after for a few rounds.
`--products 100` spreads the invests over 100 products instead (the capacity stage's mix), and
`--instances 1` runs one instance with all 500 connections.

Reports the accepted invests/s (2xx answers) of each side and their ratio, so a change to the
invest path (issue 15's per-product waiting calls) is judged against the code it replaces on the
same machine, minutes apart. With BENCH_CAPS=act (bench/caps.py) the two sides are one checkout
(`--after`) with caps off and with the Act's caps on, every rush user registered on both. Usage,
on a quiet machine:

    git worktree add /tmp/before <rev>
    python -m bench.rush_compare --before /tmp/before --after . --rounds 2 --window 10
    python -m bench.rush_compare --before /tmp/before --after . --products 100 --instances 1
    BENCH_CAPS=act python -m bench.rush_compare --after . --rounds 2 --window 10
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import caps
from bench.limits import run_wrk, wrk_script
from bench.target import (
    DEFAULT_SERVER,
    SERVICE_PASSWORD,
    SERVICE_USER,
    create_service_login,
    psql,
    recreate_database,
    recruiting,
    settle,
)
from harness.sockets import free_port
from service.ops.roles import with_user

RUSH_USERS = 1_000_000  # wrk's X-USER-ID is one of 1..RUSH_USERS


def start_instance(
    checkout: Path, owner_url: str, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m service run` of `checkout` (its own code first on sys.path), 2 workers."""
    port = free_port()
    env = {
        **os.environ, "HOST": "127.0.0.1", "PORT": str(port), "WORKERS": "2",
        "DB_POOL_SIZE": "50", "LOG_LEVEL": "WARNING",
        "DATABASE_URL": with_user(owner_url, SERVICE_USER, SERVICE_PASSWORD),
        "MIGRATION_DATABASE_URL": owner_url,
    }  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "run"], cwd=checkout, env=env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"instance at {url} exited ({process.returncode})")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"instance at {url} not ready within {timeout}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def rush(urls: list[str], seconds: float, work: Path, products: int = 1) -> dict[str, Any]:
    """wrk against each instance at once (500 connections in all, shared), on goods_id 1 (or
    spread over goods_id 1..`products`)."""
    script = wrk_script("invest", users=RUSH_USERS, recruiting=products)
    results: list[dict[str, Any]] = [{} for _ in urls]

    def one(n: int) -> None:
        results[n] = run_wrk(urls[n] + "/v1/api/investment/user/goods", f"rush-{n}", script,
                             seconds, work, connections=500 // len(urls))  # fmt: skip

    threads = [threading.Thread(target=one, args=(n,)) for n in range(len(urls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = sum((r["requests"] or 0) - r["non_2xx"] for r in results)
    return {
        "accepted_per_s": round(accepted / seconds, 1),
        "non_2xx": sum(r["non_2xx"] for r in results),
        "socket_errors": sum(r["socket_errors"] for r in results),
        "p99_ms": max((r["p99_ms"] or 0.0) for r in results),
    }


def open_rush(
    checkout: Path, owner: str, log: Path, count: int = 2, products: int = 1
) -> list[tuple[subprocess.Popen[bytes], str]]:
    """`count` instances of `checkout` on `owner`'s database, ready, and products 1..`products`
    open with totals no rush reaches; stop them with `stop` (here already if they do not come
    up)."""
    instances = [start_instance(checkout, owner, log) for _ in range(count)]
    try:
        for process, url in instances:
            wait_ready(url, process)
        recruiting(owner, products)
    except BaseException:
        for process, _ in instances:
            stop(process)
        raise
    return instances


def measure(
    side: str,
    checkout: Path,
    server: str,
    window: float,
    work: Path,
    with_caps: dict[str, caps.Caps] | None = None,
    count: int = 2,
    products: int = 1,
) -> dict[str, Any]:
    """One side's rush on a fresh database; `with_caps`: every rush user registered and these
    caps loaded first (caps.NO_CAPS for the side without)."""
    owner = recreate_database(server, f"rush_{side.replace('-', '_')}")
    psql(owner, "SELECT 1")
    instances = open_rush(checkout, owner, work / f"{side}.log", count, products)
    try:
        if with_caps is not None:
            caps.register_users(owner, RUSH_USERS)
            caps.load(owner, with_caps)
        urls = [url for _, url in instances]
        rush(urls, 3, work, products)  # warm-up, not measured
        settle(owner, timeout=10)
        return rush(urls, window, work, products)
    finally:
        for process, _ in instances:
            stop(process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rush_compare", description=__doc__)
    parser.add_argument(
        "--before", type=Path, help="checkout of the old code (not with BENCH_CAPS=act)"
    )
    parser.add_argument("--after", type=Path, required=True, help="checkout of the new code")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--products", type=int, default=1, help="invests spread over this many")
    parser.add_argument("--instances", type=int, default=2, help="of 2 workers each")
    parser.add_argument("--server", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER))
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rush-compare-"))
    create_service_login(args.server)
    chosen = caps.mode()
    sides: dict[str, tuple[Path, dict[str, caps.Caps] | None]]
    if chosen is not None:  # one checkout, caps off against caps on
        if args.before is not None:
            parser.error("BENCH_CAPS compares --after with caps off and on: no --before")
        sides = {
            "caps-off": (args.after, caps.NO_CAPS),
            "caps-on": (args.after, caps.MODES[chosen]),
        }
    elif args.before is None:
        parser.error("--before is required (or BENCH_CAPS=act: caps off against on)")
    else:
        sides = {"before": (args.before, None), "after": (args.after, None)}
    first, second = sides
    figures: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for round_number in range(args.rounds):
        for side in (first, second) if round_number % 2 == 0 else (second, first):
            checkout, with_caps = sides[side]
            result = measure(side, checkout.resolve(), args.server, args.window, work, with_caps,
                             args.instances, args.products)  # fmt: skip
            figures[side].append(result)
            print(f"round {round_number + 1} {side}: {result}", flush=True)
    mean = {side: statistics.mean(r["accepted_per_s"] for r in figures[side]) for side in sides}
    print(
        f"accepted invests/s: {first} {mean[first]:.0f}, {second} {mean[second]:.0f},"
        f" {second}/{first} {mean[second] / mean[first]:.3f}"
    )
    for side in sides:
        psql(args.server, f"DROP DATABASE IF EXISTS rush_{side.replace('-', '_')} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
