"""bench.sqlcost on a small dataset: PostgreSQL's CPU per request and the client's CPU per call
(all threads, and the event loop's thread alone) for every statement and size."""

from __future__ import annotations

from dataclasses import replace

import uvloop

from bench import dataset
from bench.dataset import PAGE_ITEMS
from bench.sqlcost import PER_CALL, measure
from tests.support import drop_database, new_database


def test_sqlcost_reports_server_and_client_cpu_for_every_statement_and_size(
    postgres_server: str,
) -> None:
    url = new_database(postgres_server)  # as bench.sqlcost does: D is loaded into a new database
    try:
        shape = replace(dataset.Shape(), investments=20_000)
        dataset.load(url, shape)
        figures = uvloop.run(measure(url, shape.users, shape.recruiting, requests=200))
    finally:
        drop_database(postgres_server, url)
    labels = ["invest-batch"] + [f"my-investments-many ~{items} items" for items in PAGE_ITEMS]
    assert list(figures) == [f"{label} x{size}" for label in labels for size in PER_CALL]
    for figure in figures.values():
        assert figure["calls"] >= 20
        # One call does work in this process, and most of it on the event loop's thread.
        assert 0 < figure["client_loop_thread_us_per_call"] <= figure["client_cpu_us_per_call"]
        assert figure["postgres_cpu_us_per_request"] >= 0
