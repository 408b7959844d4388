"""The cyclic garbage collector, set for a long-lived process that allocates per request (a worker)
or per event (the relay) and frees nearly everything by reference counting.

CPython's default collects the young generation every 700 allocations of container objects, and
every tenth of those collections the middle one, every tenth of those the whole heap: each
worker's modules, pools and caches, tens of thousands of objects, traversed again and again
although they live as long as the process. It was a profiled hot spot of invest in the workers,
and 18 % of the relay's samples under 10,000 events a second (docs/performance.md)."""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000  # CPython's default is 700 allocations


def settle() -> None:
    """Once the process has built what it serves with: move everything built so far out of the
    collector's reach (gc.freeze: it lives as long as the process), and collect the young
    generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
