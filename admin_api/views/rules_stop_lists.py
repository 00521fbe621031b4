"""Send rules, part three: stop lists, clients blocked from some topics (or all) for a time.

A blocked client is skipped with ``stop_list`` on every channel, even when a campaign
includes them. Changes are journalled as entity ``stop_list_entry`` (id the entry's id).

An entry for a segment blocks whoever is a member when a batch is sent (a dynamic
segment's members follow the data); a segment with entries cannot be deleted.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
from aiohttp import web

from admin_api import paging
from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor
from admin_api.typedefs import DB
from crm.segments import store as segment_store
from herald.errors import InvalidInput
from rules import stop_lists
from rules.stop_lists import StopListEntry

endpoints = EndpointTable("stop lists")

PositiveId = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
AwareDatetime = Annotated[dt.datetime, msgspec.Meta(tz=True)]
TopicCode = Annotated[str, msgspec.Meta(min_length=1, max_length=41)]


class StopListQuery(msgspec.Struct, forbid_unknown_fields=True):
    client_id: PositiveId | None = None
    segment_id: PositiveId | None = None
    active_at: AwareDatetime | None = None
    after_id: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1), paging.DEPRECATED_PARAM] = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100
    cursor: paging.Cursor | None = None


class StopListPage(msgspec.Struct):
    items: list[StopListEntry]
    next_after_id: Annotated[int | None, paging.DEPRECATED_FIELD]
    next_cursor: str | None = None


class StopListCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Block one client (``client_id``) or every member of a segment (``segment_id``) from
    ``topics`` (absent or null: every topic) from ``valid_from`` (default now) until
    ``valid_until`` (default: for good)."""

    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    client_id: PositiveId | None = None
    segment_id: PositiveId | None = None
    topics: Annotated[list[TopicCode], msgspec.Meta(min_length=1, max_length=50)] | None = None
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None


@endpoints.get(
    "/api/v1/stop-lists",
    permission="rules.read",
    query=StopListQuery,
    response=StopListPage,
    errors=(400,),
)
async def list_stop_lists(request: web.Request, query: StopListQuery) -> StopListPage:
    """Entries in id order, of a client or segment or in force at active_at, a page at a time.

    Pass next_cursor back as cursor for the next page.
    """
    after_id = paging.start(query.cursor, query.after_id) or 0
    async with request.app[DB].acquire() as conn:
        items = await stop_lists.list_entries(
            conn,
            client_id=query.client_id,
            segment_id=query.segment_id,
            active_at=query.active_at,
            after_id=after_id,
            limit=query.limit,
        )
    return StopListPage(items, *paging.following(items, query.limit, lambda i: i.id))


@endpoints.post(
    "/api/v1/stop-lists",
    permission="stoplists.manage",
    body=StopListCreate,
    response=StopListEntry,
    status=201,
    errors=(400,),
)
async def add_stop_list_entry(request: web.Request, body: StopListCreate) -> StopListEntry:
    """Block a client or a segment from some topics (or all); it applies to batches not yet sent."""
    async with request.app[DB].acquire() as conn:
        if (
            body.segment_id is not None
            and body.client_id is None
            and not await segment_store.exists(conn, body.segment_id)
        ):
            raise InvalidInput(
                "segment_id",
                f"no segment {body.segment_id}; give the id of an existing segment, or a client_id",
            )
        return await stop_lists.add_entry(
            conn,
            actor(request),
            reason=body.reason,
            client_id=body.client_id,
            segment_id=body.segment_id,
            topics=body.topics,
            valid_from=body.valid_from,
            valid_until=body.valid_until,
        )


@endpoints.delete(
    "/api/v1/stop-lists/{entry_id}", permission="stoplists.manage", status=204, errors=(404,)
)
async def remove_stop_list_entry(request: web.Request) -> None:
    """Delete an entry; the journal keeps what it was."""
    entry_id = path_int(request, "entry_id")
    async with request.app[DB].acquire() as conn:
        await stop_lists.remove_entry(conn, actor(request), entry_id)
