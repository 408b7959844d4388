"""A page call's one row (sql/queries.sql `my-investments-many`) cut into its pages
(service/batcher.py `pages`): each body by its length, in request order, and the cursor only for
a full page."""

from __future__ import annotations

import pytest

from service.batcher import Page, pages


def test_the_bodies_are_cut_by_their_lengths_in_request_order() -> None:
    bodies = [b'[{"goods_id":1}]', b"[]", b'[{"goods_id":2},{"goods_id":3}]']
    answer = pages([2, 0, 3], [1_600_000_000_000_000, 0, 0], [17, 0, 0],
                   [len(body) for body in bodies], b"".join(bodies))  # fmt: skip
    assert answer == [
        Page(2, 1_600_000_000_000_000, 17, bodies[0]),
        Page(0, None, None, bodies[1]),
        Page(3, None, None, bodies[2]),
    ]
    assert answer[0].next_cursor(1) == (1_600_000_000_000_000, 17)
    assert answer[2].next_cursor(2) is None  # 3 found for a page of 2 but no cursor: no next page


def test_a_cursor_at_the_epoch_is_still_a_cursor() -> None:
    """Only the investment id says "no cursor" (0): the date part may be 0 microseconds."""
    [page] = pages([2], [0], [5], [2], b"[]")
    assert page.next_cursor(1) == (0, 5)


@pytest.mark.parametrize("received", [b"[][]x", b"[]["])
def test_bodies_of_another_length_than_announced_are_refused(received: bytes) -> None:
    with pytest.raises(ValueError, match="page bodies"):
        pages([0, 0], [0, 0], [0, 0], [2, 2], received)


def test_figures_of_different_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        pages([0, 0], [0], [0, 0], [2, 2], b"[][]")
