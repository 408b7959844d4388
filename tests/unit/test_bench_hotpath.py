"""bench/hotpath.py drives every hot endpoint to a 200 answer, both with the gateways answering at
once and through the real coalescers with only the statement faked (its fake rows must keep the
shape the batchers read: a page row is a Page, an invest row carries its ord column first)."""

from __future__ import annotations

import pytest
import uvloop

from bench import hotpath
from service.batcher import InvestBatcher, PageBatcher
from service.db import Database


@pytest.mark.parametrize("endpoint", sorted(hotpath.REQUESTS))
def test_the_coalesced_path_answers_every_endpoint(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Database, "rows", hotpath._statement)
    # drive() raises unless every request was answered 200
    assert uvloop.run(hotpath.drive(endpoint, 64, concurrency=8)) > 0


@pytest.mark.parametrize("endpoint", sorted(hotpath.REQUESTS))
def test_the_gateways_answer_every_endpoint(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(InvestBatcher, "invest", hotpath._invest)
    monkeypatch.setattr(PageBatcher, "page", hotpath._page)
    monkeypatch.setattr(Database, "rows", hotpath._rows)
    assert uvloop.run(hotpath.drive(endpoint, 64)) > 0
