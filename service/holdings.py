"""The my-investments use case: one page of a user's investments through the worker's coalesced
page statement, as JSON bytes and the cursor of the next page."""

from __future__ import annotations

from typing import Annotated, TypedDict

from service.batcher import PageBatcher
from service.problems import Problem
from service.shapes import TIME


class MyInvestment(TypedDict):
    """One item of the page (a live investment: cancelled ones are not listed); the statement
    renders it (sql/queries.sql `my-investments-many`), in this key order."""

    goods_id: int
    title: str
    total_investing_amount: int
    user_investing_amount: int
    invest_date: Annotated[str, TIME]
    investment_id: int


class Holdings:
    """Pages of my investments through the worker's PageBatcher."""

    def __init__(self, pages: PageBatcher) -> None:
        self._pages = pages

    async def page(
        self, user_id: int, limit: int, cursor: tuple[int, int] | None
    ) -> tuple[bytes, tuple[int, int] | None]:
        """(the JSON array of MyInvestment items, the next page's cursor when there is one)."""
        page = await self._pages.page(user_id, limit, cursor)
        if not page.found and cursor is None:
            raise Problem("INVESTMENTS_NOT_FOUND", f"user {user_id} has no investments")
        return page.body, page.next_cursor(limit)
