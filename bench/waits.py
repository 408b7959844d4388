"""Where an instance's requests waited during a load, from two scrapes of its /metrics.

    python -m bench.waits http://127.0.0.1:8000 --save before.json   # before the load
    ... run any load (JMeter, wrk, locust) against that instance ...
    python -m bench.waits http://127.0.0.1:8000 --since before.json  # after it

prints, for each latency and wait histogram of the service (docs/operations.md, "Metrics") and
each label set that counted something in between, the count, the mean and the p50 / p99 / p99.9
read from the buckets. A bucket quantile is the upper bound of the bucket it falls in (`le`), so
it says "at most": compare it with the client's own percentiles to see which part of a tail was
spent in the worker (queue, pool, statement, event loop, collector) and which outside it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

HISTOGRAMS = (
    "http_request_duration_seconds",
    "db_queue_wait_seconds",
    "db_pool_acquire_seconds",
    "db_call_seconds",
    "event_loop_lag_seconds",
    "gc_pause_seconds",
)
QUANTILES = (0.5, 0.99, 0.999)

# {"name{label=value,...}": {"count": n, "sum": s, "buckets": {le: cumulative count}}}
Scrape = dict[str, dict[str, object]]


def parse(text: str) -> Scrape:
    """The service's histograms in a /metrics text, keyed by name and labels (le aside)."""
    found: Scrape = {}
    for family in text_string_to_metric_families(text):
        if family.name not in HISTOGRAMS:
            continue
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            key = family.name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
            entry = found.setdefault(key, {"count": 0.0, "sum": 0.0, "buckets": {}})
            if sample.name.endswith("_bucket"):
                entry["buckets"][sample.labels["le"]] = sample.value  # type: ignore[index]
            elif sample.name.endswith("_count"):
                entry["count"] = sample.value
            elif sample.name.endswith("_sum"):
                entry["sum"] = sample.value
    return found


def scrape(base_url: str) -> Scrape:
    with urllib.request.urlopen(f"{base_url.rstrip('/')}/metrics", timeout=10) as response:
        return parse(response.read().decode())


def scrape_or_none(base_url: str) -> Scrape | None:
    """scrape(), or None when the instance serves no /metrics (METRICS_ENABLED=false) or did
    not answer: the figures it feeds are then left out, the load goes on."""
    try:
        return scrape(base_url)
    except (OSError, ValueError):  # urllib's HTTPError and URLError are OSErrors
        return None


def quantile(buckets: dict[str, float], fraction: float) -> float:
    """The upper bound (le) of the bucket holding the `fraction` quantile of cumulative counts."""
    bounds = sorted(buckets.items(), key=lambda item: float(item[0]))
    total = bounds[-1][1] if bounds else 0.0
    for le, cumulative in bounds:
        if cumulative >= fraction * total:
            return float(le)
    return math.inf


def between(before: Scrape, after: Scrape) -> Scrape:
    """What each histogram counted between the two scrapes (label sets that counted nothing
    are left out)."""
    counted: Scrape = {}
    for key, now in after.items():
        then = before.get(key, {"count": 0.0, "sum": 0.0, "buckets": {}})
        count = float(now["count"]) - float(then["count"])  # type: ignore[arg-type]
        if count <= 0:
            continue
        was: dict[str, float] = then["buckets"]  # type: ignore[assignment]
        buckets = {le: value - was.get(le, 0.0) for le, value in now["buckets"].items()}  # type: ignore[attr-defined]
        total = float(now["sum"]) - float(then["sum"])  # type: ignore[arg-type]
        counted[key] = {"count": count, "sum": total, "buckets": buckets}
    return counted


def _total(counted: Scrape, name: str) -> tuple[float, float]:
    """The count and the sum of every label set of histogram `name` together."""
    count = total = 0.0
    for key, entry in counted.items():
        if key.split("{", 1)[0] == name:
            count += float(entry["count"])  # type: ignore[arg-type]
            total += float(entry["sum"])  # type: ignore[arg-type]
    return count, total


def calls_shape(counted: Scrape, requests: float, seconds: float) -> dict[str, float | None]:
    """How a window's requests reached the database, from what the histograms counted in it:
    its database calls (every statement's) per second, requests per call, the mean call and the
    mean wait in the coalescers' queues (None where nothing was counted)."""
    calls, call_seconds = _total(counted, "db_call_seconds")
    waited, wait_seconds = _total(counted, "db_queue_wait_seconds")
    return {
        "calls_per_s": round(calls / seconds, 1) if seconds else None,
        "requests_per_call": round(requests / calls, 2) if calls else None,
        "call_ms": round(call_seconds / calls * 1000, 3) if calls else None,
        "queue_wait_ms": round(wait_seconds / waited * 1000, 3) if waited else None,
    }


def lines(counted: Scrape) -> list[str]:
    def ms(seconds: float) -> str:
        return "> 10 s" if math.isinf(seconds) else f"{seconds * 1000:g} ms"

    out = [f"{'histogram':<78} {'count':>8} {'mean':>10}  p50 / p99 / p99.9 (at most)"]
    for key in sorted(counted):
        entry = counted[key]
        count, total = float(entry["count"]), float(entry["sum"])  # type: ignore[arg-type]
        buckets: dict[str, float] = entry["buckets"]  # type: ignore[assignment]
        marks = " / ".join(ms(quantile(buckets, q)) for q in QUANTILES)
        out.append(f"{key:<78} {count:>8.0f} {total / count * 1000:>7.3f} ms  {marks}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.waits", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("base_url", help="the instance, e.g. http://127.0.0.1:8000")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", type=Path, help="write this scrape to a file (before a load)")
    group.add_argument("--since", type=Path, help="print what was counted since that scrape")
    args = parser.parse_args(argv)
    now = scrape(args.base_url)
    if args.save is not None:
        args.save.write_text(json.dumps(now))
        print(f"saved {len(now)} histograms of {args.base_url} to {args.save}")
        return 0
    counted = between(json.loads(args.since.read_text()), now)
    print("\n".join(lines(counted)) if counted else "nothing counted since that scrape")
    return 0


if __name__ == "__main__":
    sys.exit(main())
