"""Client search by phone, OR, Client_ID, EIC, address and name (issue 4, point 7)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

import asyncpg
import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable
from admin_api.typedefs import DB
from crm import search
from crm.search import SearchPage

endpoints = EndpointTable("search")

_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class SearchQuery(msgspec.Struct, forbid_unknown_fields=True, rename={"or_number": "or"}):
    """Criteria (at least one); partial phone, OR prefix, name and address words allowed."""

    phone: _Text | None = None
    or_number: Annotated[str, msgspec.Meta(min_length=1, max_length=20)] | None = None
    client_id: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)] | None = None
    eic: Annotated[str, msgspec.Meta(min_length=1, max_length=20)] | None = None
    address: _Text | None = None
    name: _Text | None = None
    # all: every criterion must hold (AND); any: at least one (OR).
    match: Literal["all", "any"] = "all"
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    cursor: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None


@endpoints.get(
    "/api/v1/clients/search",
    permission="clients.read",
    query=SearchQuery,
    response=SearchPage,
    errors=(400,),
)
async def search_clients(request: web.Request, query: SearchQuery) -> SearchPage:
    """Find clients by phone, OR, Client_ID, EIC, address or name; keyset pages, estimated count.

    Results are ordered by Client_ID; ``next_cursor`` fetches the next page.
    ``estimated_count`` is exact (``count_is_exact``) up to 1,000 matches, the planner's
    estimate above that.
    """
    return await run_search(request.app[DB], query)


async def run_search(pool: asyncpg.Pool, query: SearchQuery) -> SearchPage:
    """The search of ``query`` (the JSON view's and the search page's)."""
    criteria = search.parse_criteria(
        phone=query.phone,
        or_number=query.or_number,
        client_id=query.client_id,
        eic=query.eic,
        address=query.address,
        name=query.name,
    )
    after = search.decode_cursor(query.cursor) if query.cursor else 0
    async with pool.acquire() as conn:
        criteria = await search.with_key_shares(conn, criteria)

    async def page() -> tuple[list[search.ClientHit], str | None]:
        async with pool.acquire() as conn:
            return await search.search_page(
                conn, criteria, query.match, limit=query.limit, after=after
            )

    async def count() -> tuple[int, bool]:
        async with pool.acquire() as conn:
            return await search.count_matches(
                conn, criteria, query.match, await search.estimate(conn, criteria, query.match)
            )

    (items, next_cursor), (n, exact) = await asyncio.gather(page(), count())
    if not exact:
        # An estimate is never below what this page already shows.
        n = max(n, len(items) + (1 if next_cursor else 0))
    return SearchPage(items=items, estimated_count=n, count_is_exact=exact, next_cursor=next_cursor)
