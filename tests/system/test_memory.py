"""Memory bounds of a worker: any number of distinct list windows pins at most the cache budget."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest

from tests.support import migrated_database, psql, running_service

pytestmark = pytest.mark.system

PATH = "/v1/api/investment/goods"
PRODUCTS = 250
# More than twice the 1,024 entries that bounded the cache before its byte bound (and that bound
# the window memo): an entry-count bound alone pins ~70 MiB of these lists, far past the limit.
WINDOWS = 2_500
CACHE_BYTES = 4 * 1024 * 1024
# What the worker may grow by beyond the cache budget: the window memo (< 1 MiB), the
# allocator's arenas and fragmentation, connection buffers. Without the byte bound, 1,024 cached
# lists of ~70 kB each made the same run grow by 101 MiB.
SLACK_BYTES = 12 * 1024 * 1024


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def windows(first: int, count: int) -> list[str]:
    """Distinct windows (one second apart) that all contain the test's products; every other
    one carries a junk parameter of its own, which must not grow anything either."""
    queries = []
    for n in range(first, first + count):
        minutes, seconds = divmod(n, 60)
        hours, minutes = divmod(minutes, 60)
        query = (
            f"started_at=2150-01-01%20{hours:02}:{minutes:02}:{seconds:02}"
            "&finished_at=2150-12-31%2000:00:00"
        )
        queries.append(query + (f"&junk{n}={'x' * 200}" if n % 2 else ""))
    return queries


async def fetch_all(base_url: str, queries: list[str]) -> set[str]:
    """Every answer's status and a digest of its body (they must all be the same list)."""
    seen: set[str] = set()
    gate = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

        async def one(query: str) -> None:
            async with gate:
                answer = await client.get(f"{PATH}?{query}")
            seen.add(f"{answer.status_code} {hashlib.sha256(answer.content).hexdigest()}")

        await asyncio.gather(*(one(query) for query in queries))
    return seen


def test_distinct_windows_pin_no_more_than_the_cache_budget(postgres_server: str) -> None:
    with migrated_database(postgres_server) as url:
        psql(
            url,
            "INSERT INTO investment_goods"
            " (title, total_investing_amount, status, started_at, finished_at)"
            f" SELECT left(repeat('개인신용 포트폴리오 ', 3), 24) || n, 1000000, true,"
            " '2150-06-01 00:00:00', '2150-07-01 00:00:00'"
            f" FROM generate_series(1, {PRODUCTS}) AS n",
        )
        with running_service(
            url, workers=1, LIST_CACHE_SECONDS="60", LIST_CACHE_MAX_BYTES=str(CACHE_BYTES)
        ) as service:
            expected = httpx.get(f"{service.base_url}{PATH}?{windows(0, 1)[0]}", timeout=10)
            assert expected.status_code == 200
            items = expected.json()
            assert len(items) == PRODUCTS
            list_bytes = len(expected.content)
            digest = hashlib.sha256(expected.content).hexdigest()

            (worker,) = service.worker_pids()
            # Warm up: the cache fills to its budget once, so what follows measures growth.
            assert asyncio.run(fetch_all(service.base_url, windows(1, 200))) == {f"200 {digest}"}
            before = rss_bytes(worker)
            seen = asyncio.run(fetch_all(service.base_url, windows(1_000, WINDOWS)))
            grown = rss_bytes(worker) - before
        assert seen == {f"200 {digest}"}, "an answer differed from the list it should be"
        assert grown < CACHE_BYTES + SLACK_BYTES, f"the worker grew by {grown / 2**20:.1f} MiB"
        print(
            f"\nmemory: {WINDOWS} distinct windows (half with junk parameters), lists of"
            f" {list_bytes / 1024:.0f} kB, cache budget {CACHE_BYTES / 2**20:.0f} MiB:"
            f" worker RSS grew by {grown / 2**20:.1f} MiB"
        )
