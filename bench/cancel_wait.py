"""How long a cancellation waits behind the opening rush on the same product: 2 instances × 2
workers, wrk at 500 connections investing in one product, and meanwhile cancellations of
earlier investments in that product, one at a time on a keep-alive connection, each timed; the
same cancellations on the idle service first, as the baseline.

A cancellation is its own cancel_investment() call through the pool (not the invests' coalesced
one), serialized with the invest calls on the product's row lock: this measures what that costs
it. Usage, on a quiet machine (the figures go to docs/reliability.md):

    python -m bench.cancel_wait --window 10 --cancels 200
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.rush_compare import open_rush, rush, stop
from bench.target import DEFAULT_SERVER, create_service_login, psql, recreate_database, settle

PATH = "/v1/api/investment/user/goods"
FIRST_USER = 3_000_000_000  # apart from wrk's users (1..1,000,000)


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "count": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def cancel_each(url: str, investments: list[tuple[int, int]], gap: float) -> list[float]:
    """Cancel (user, investment) one after another, `gap` seconds apart; each one's seconds."""
    taken = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for user, investment in investments:
            began = time.monotonic()
            answer = client.delete(f"{PATH}/{investment}", headers={"X-USER-ID": str(user)})
            taken.append(time.monotonic() - began)
            if answer.status_code != 200:
                raise RuntimeError(f"cancel answered {answer.status_code}: {answer.text}")
            time.sleep(gap)
    return taken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cancel_wait", description=__doc__)
    parser.add_argument("--window", type=float, default=10.0, help="seconds of the rush")
    parser.add_argument("--cancels", type=int, default=200, help="cancellations per phase")
    parser.add_argument("--server", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER))
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="cancel-wait-"))
    create_service_login(args.server)
    owner = recreate_database(args.server, "cancel_wait")
    instances = open_rush(Path.cwd(), owner, work / "service.log")
    figures: dict[str, Any] = {}
    try:
        urls = [url for _, url in instances]
        investments = []
        with httpx.Client(base_url=urls[0], timeout=30) as client:
            for n in range(2 * args.cancels):
                user = FIRST_USER + n
                made = client.post(PATH, headers={"X-USER-ID": str(user)},
                                   json={"goodsId": 1, "investmentAmount": 10_000})  # fmt: skip
                investments.append((user, made.json()["investment_id"]))
        rush(urls, 3, work)  # warm-up, not measured
        settle(owner, timeout=10)
        figures["idle"] = summary(cancel_each(urls[1], investments[: args.cancels], 0.005))
        gap = max(0.0, (args.window - 2) / args.cancels - 0.005)
        during: list[float] = []

        def cancel_during_the_rush() -> None:
            time.sleep(1)  # the rush is under way
            during.extend(cancel_each(urls[1], investments[args.cancels :], gap))

        cancels = threading.Thread(target=cancel_during_the_rush)
        cancels.start()
        figures["rush"] = rush(urls, args.window, work)
        cancels.join()
        figures["under_rush"] = summary(during)
        figures["violations"] = len(
            psql(owner, (Path("sql") / "verify.sql").read_text()).splitlines()
        )
    finally:
        for process, _ in instances:
            stop(process)
        psql(args.server, "DROP DATABASE IF EXISTS cancel_wait WITH (FORCE)")
    print(f"cancel on the idle service: {figures['idle']}")
    print(f"cancel during the rush:     {figures['under_rush']}")
    print(f"the rush's invests:         {figures['rush']}")
    print(f"ledger violations after it: {figures['violations']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
