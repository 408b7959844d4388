"""bench/hotpath.py drives every hot endpoint to a 200 answer, both with the gateways answering at
once and through the real coalescers with only the statement faked (its fake rows must keep the
shape the batchers read: a page call answers one row, an invest row carries its ord column
first)."""

from __future__ import annotations

import pytest
import uvloop

from bench import hotpath


@pytest.mark.parametrize("endpoint", sorted(hotpath.REQUESTS))
@pytest.mark.parametrize(
    ("fakes", "concurrency"),
    [(hotpath.STATEMENTS, 8), (hotpath.GATEWAYS, 1)],
    ids=["coalesced", "gateways"],
)
def test_every_endpoint_is_answered(
    endpoint: str, fakes: tuple[tuple[type, str, object], ...], concurrency: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    for owner, name, fake in fakes:  # as `python -m bench.hotpath` patches them, undone after
        monkeypatch.setattr(owner, name, fake)
    # drive() raises unless every request was answered 200
    assert uvloop.run(hotpath.drive(endpoint, 64, concurrency=concurrency)) > 0
