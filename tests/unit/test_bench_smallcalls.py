"""bench/smallcalls.py: a variant is KEY=VALUE pairs ('' for none, anything else refused), and a
window's figures divide the calls' and the queue's histograms by what they counted."""

from __future__ import annotations

import argparse

import pytest

from bench.smallcalls import figures, variant


def test_a_variant_is_key_value_pairs() -> None:
    assert variant("") == {}
    assert variant("DB_RUNTIME_THREADS=1, READ_CALLS_IN_FLIGHT=2") == {
        "DB_RUNTIME_THREADS": "1",
        "READ_CALLS_IN_FLIGHT": "2",
    }
    assert variant("OPTIONS=-c a=b") == {"OPTIONS": "-c a=b"}  # the first '=' splits
    for bad in ("WORKERS", "=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            variant(bad)


def test_figures_per_call_and_per_request() -> None:
    calls = {"count": 500.0, "sum": 1.5, "buckets": {}}  # 500 calls, 3 ms each
    queued = {"count": 1_000.0, "sum": 2.0, "buckets": {}}  # 2 ms per request
    counted = {
        "db_call_seconds{statement=invest-batch}": calls,
        "db_queue_wait_seconds{queue=invest}": queued,
    }
    cpu = {"workers": 600.0, "pg_workers": 610.0, "relay": 0.0}
    got = figures(1_000, 10.0, cpu, counted)
    assert got == {
        "accepted_per_s": 100.0,
        "cpu_us": {"workers": 600.0, "pg_workers": 610.0},
        "calls_per_s": 50.0,
        "requests_per_call": 2.0,
        "call_ms": 3.0,
        "queue_wait_ms": 2.0,
    }


def test_figures_without_calls_say_none_rather_than_divide_by_zero() -> None:
    got = figures(0, 10.0, {"workers": 0.0, "pg_workers": 0.0}, {})
    assert got["requests_per_call"] is None
    assert got["call_ms"] is None
    assert got["queue_wait_ms"] is None
