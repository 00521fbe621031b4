"""Segments: the attribute catalogue, condition trees, preview, members, set operations (issue 6).

A segment is a condition tree over the catalogue's attributes (``GET
/api/v1/segments/attributes``), e.g. ``{"all": [{"attribute": "account.region", "op": "in",
"value": ["UA-30"]}, {"attribute": "billing.debt", "op": "gt", "value": 500},
{"attribute": "billing.last_payment_at", "op": "older_than_days", "value": 60}]}``. A bad
tree is a 400 naming the path (``condition.all[2].value``). Static segments keep the
members of the moment they were materialised; dynamic ones follow the data (the
scheduler applies changed clients every few seconds). Other systems add attributes
without code changes: declare ``ext.<system>.<name>`` and import its values.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from admin_api import inputs, paging
from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor
from admin_api.typedefs import DB
from crm.segments import catalogue, store
from crm.segments.catalogue import Attribute, AttributeDeclaration, AttributeValue
from crm.segments.store import Preview, Segment
from herald.errors import InvalidInput

endpoints = EndpointTable("segments")

PositiveId = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Description = Annotated[str, msgspec.Meta(max_length=2000)]


class AttributeList(msgspec.Struct):
    items: list[Attribute]


class AttributeValues(msgspec.Struct, forbid_unknown_fields=True):
    """Values of one external attribute for up to 10,000 clients; a null value removes it."""

    values: Annotated[list[AttributeValue], msgspec.Meta(min_length=1, max_length=10_000)]


class ImportResult(msgspec.Struct):
    code: str
    set: int
    removed: int


class SegmentQuery(msgspec.Struct, forbid_unknown_fields=True):
    after_id: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1), paging.DEPRECATED_PARAM] = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50
    kind: Literal["static", "dynamic"] | None = None
    cursor: paging.Cursor | None = None


class SegmentPage(msgspec.Struct):
    items: list[Segment]
    next_after_id: Annotated[int | None, paging.DEPRECATED_FIELD]
    next_cursor: str | None = None


class SegmentCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A named condition tree; ``static``: a snapshot now, ``dynamic``: kept current."""

    name: Name
    kind: Literal["static", "dynamic"]
    condition: dict[str, Any]
    description: Description = ""


class SegmentUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields to change; a new condition or kind materialises the members again."""

    name: Name | None = None
    kind: Literal["static", "dynamic"] | None = None
    condition: dict[str, Any] | None = None
    description: Description | None = None


class PreviewRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A condition being edited; ``exact``: count every client even at millions (slower)."""

    condition: dict[str, Any]
    exact: bool = False


class MembersQuery(msgspec.Struct, forbid_unknown_fields=True):
    after_client_id: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1), paging.DEPRECATED_PARAM] = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1000
    cursor: paging.Cursor | None = None


class MembersPage(msgspec.Struct):
    segment_id: int
    member_count: int
    materialised_at: dt.datetime | None
    client_ids: list[int]
    next_after_client_id: Annotated[int | None, paging.DEPRECATED_FIELD]
    next_cursor: str | None = None


class CombineRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``exclusion``: the members of this segment that are not in ``other``."""

    op: Literal["union", "intersection", "exclusion"]
    other: PositiveId
    name: Name | None = None


@endpoints.get("/api/v1/segments/attributes", permission="segments.read", response=AttributeList)
async def list_attributes(request: web.Request) -> AttributeList:
    """The attribute catalogue: code, labels, type, operators, values, source."""
    async with request.app[DB].acquire() as conn:
        loaded = await catalogue.load(conn)
    return AttributeList(list(loaded.attributes.values()))


@endpoints.post(
    "/api/v1/segments/attributes",
    permission="segments.manage",
    body=AttributeDeclaration,
    response=Attribute,
    status=201,
    errors=(400, 409),
)
async def declare_attribute(request: web.Request, body: AttributeDeclaration) -> Attribute:
    """Declare an external attribute ``ext.<system>.<name>``; conditions may use it at once."""
    async with request.app[DB].acquire() as conn:
        return await catalogue.declare(conn, actor(request), body)


@endpoints.put(
    "/api/v1/segments/attributes/{code}/values",
    permission="segments.manage",
    body=AttributeValues,
    response=ImportResult,
    errors=(400, 404),
)
async def import_attribute_values(request: web.Request, body: AttributeValues) -> ImportResult:
    """Set (or remove, with null) an external attribute's values for many clients at once."""
    code = request.match_info["code"]
    async with request.app[DB].acquire() as conn:
        done, removed = await catalogue.import_values(conn, actor(request), code, body.values)
    return ImportResult(code, done, removed)


@endpoints.post(
    "/api/v1/segments/preview",
    permission="segments.read",
    body=PreviewRequest,
    response=Preview,
    errors=(400,),
)
async def preview_segment(request: web.Request, body: PreviewRequest) -> Preview:
    """How many clients a condition selects, while it is being edited.

    Exact up to a million clients (or with ``exact``); above that an estimate from a
    sample of the clients (``exact`` false, ``sample_percent`` says how large).
    """
    async with request.app[DB].acquire() as conn:
        return await store.preview(conn, body.condition, exact=body.exact)


@endpoints.get(
    "/api/v1/segments", permission="segments.read", query=SegmentQuery, response=SegmentPage
)
async def list_segments(request: web.Request, query: SegmentQuery) -> SegmentPage:
    """Segments in id order, a page at a time (pass next_cursor back as cursor)."""
    after_id = paging.start(query.cursor, query.after_id) or 0
    async with request.app[DB].acquire() as conn:
        items = await store.list_segments(
            conn, after_id=after_id, limit=query.limit, kind=query.kind
        )
    return SegmentPage(items, *paging.following(items, query.limit, lambda i: i.id))


@endpoints.post(
    "/api/v1/segments",
    permission="segments.manage",
    body=SegmentCreate,
    response=Segment,
    status=201,
    errors=(400,),
)
async def create_segment(request: web.Request, body: SegmentCreate) -> Segment:
    """Create a segment and materialise its members now."""
    async with request.app[DB].acquire() as conn:
        return await store.create(
            conn,
            actor(request),
            name=body.name,
            kind=body.kind,
            condition=body.condition,
            description=body.description,
            pool=request.app[DB],
        )


@endpoints.get(
    "/api/v1/segments/{segment_id}", permission="segments.read", response=Segment, errors=(404,)
)
async def get_segment(request: web.Request) -> Segment:
    """One segment with its member count and when its members were last materialised."""
    async with request.app[DB].acquire() as conn:
        return await store.get(conn, path_int(request, "segment_id"))


@endpoints.patch(
    "/api/v1/segments/{segment_id}",
    permission="segments.manage",
    body=SegmentUpdate,
    response=Segment,
    errors=(400, 404, 409),
)
async def update_segment(request: web.Request, body: SegmentUpdate) -> Segment:
    """Rename, describe, switch static/dynamic or replace the condition."""
    async with request.app[DB].acquire() as conn:
        return await store.update(
            conn,
            actor(request),
            path_int(request, "segment_id"),
            name=body.name,
            description=body.description,
            kind=body.kind,
            condition=body.condition,
            pool=request.app[DB],
        )


@endpoints.delete(
    "/api/v1/segments/{segment_id}", permission="segments.manage", status=204, errors=(404, 409)
)
async def delete_segment(request: web.Request) -> None:
    """Delete a segment; refused while an unfinished campaign or a stop-list entry uses it."""
    async with request.app[DB].acquire() as conn:
        await store.delete(conn, actor(request), path_int(request, "segment_id"))


@endpoints.post(
    "/api/v1/segments/{segment_id}/refresh",
    permission="segments.manage",
    response=Segment,
    errors=(404, 409),
)
async def refresh_segment(request: web.Request) -> Segment:
    """Materialise the members again now (a static segment takes a new snapshot)."""
    async with request.app[DB].acquire() as conn:
        return await store.refresh(
            conn, actor(request), path_int(request, "segment_id"), pool=request.app[DB]
        )


@endpoints.get(
    "/api/v1/segments/{segment_id}/members",
    permission="segments.read",
    query=MembersQuery,
    response=MembersPage,
    errors=(404,),
)
async def segment_members(request: web.Request, query: MembersQuery) -> MembersPage:
    """Member client ids in ascending order, a page at a time (keyset on the client id)."""
    segment_id = path_int(request, "segment_id")
    async with request.app[DB].acquire() as conn:
        segment = await store.get(conn, segment_id)
        ids = await store.members_page(
            conn,
            segment_id,
            after_client_id=paging.start(query.cursor, query.after_client_id) or 0,
            limit=query.limit,
        )
    return MembersPage(
        segment_id,
        segment.member_count,
        segment.materialised_at,
        ids,
        *paging.following(ids, query.limit, lambda i: i),
    )


@endpoints.get(
    "/api/v1/segments/{segment_id}/export",
    permission="segments.read",
    response=str,
    media_type="text/csv",
    errors=(404,),
)
async def export_segment(request: web.Request) -> web.StreamResponse:
    """All member client ids as CSV, streamed (a 5 M-member segment never sits in memory)."""
    segment_id = path_int(request, "segment_id")
    async with request.app[DB].acquire() as conn:
        chunks = store.export_members(conn, segment_id)
        first = await anext(chunks)  # NotFound surfaces here, before the response starts
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="segment-{segment_id}.csv"',
            }
        )
        await response.prepare(request)
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
    return response


@endpoints.post(
    "/api/v1/segments/{segment_id}/combine",
    permission="segments.manage",
    body=CombineRequest,
    response=Segment,
    status=201,
    errors=(400, 404),
)
async def combine_segments(request: web.Request, body: CombineRequest) -> Segment:
    """A new static segment: this one's union, intersection or exclusion with ``other``."""
    segment_id = path_int(request, "segment_id")
    async with request.app[DB].acquire() as conn:
        return await store.combine(
            conn,
            actor(request),
            segment_id,
            body.op,
            body.other,
            name=body.name,
            pool=request.app[DB],
        )


class SegmentImportQuery(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    description: Description = ""


class SegmentImported(msgspec.Struct):
    """The new static segment; ``unknown``: listed ids that are no client (left out);
    ``refused``: rows that are not an id, by row number (the first 100)."""

    segment: Segment
    rows: int
    unknown: int
    refused: list[tuple[int, str]]


MAX_IMPORT_BYTES = 64 * 2**20


async def read_text(request: web.Request, body: bytes | None = None) -> str:
    """An uploaded file as text (UTF-8, a BOM allowed); too large or not text is a 400."""
    if body is None:
        body = await request.content.read(MAX_IMPORT_BYTES + 1)
    if len(body) > MAX_IMPORT_BYTES:
        raise InvalidInput("file", f"the file is larger than {MAX_IMPORT_BYTES // 2**20} MB")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput("file", f"not UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise InvalidInput("file", inputs.NUL_DETAIL)
    return text


@endpoints.post(
    "/api/v1/segments/import",
    permission="segments.manage",
    query=SegmentImportQuery,
    response=SegmentImported,
    status=201,
    errors=(400,),
)
async def import_segment(request: web.Request, query: SegmentImportQuery) -> SegmentImported:
    """A static segment from a list of Client_IDs: the request body is a CSV (text/csv),
    the id in the first column of each row, an optional header row ``client_id``."""
    parsed = store.parse_client_ids(await read_text(request))
    async with request.app[DB].acquire() as conn:
        segment, unknown = await store.import_ids(
            conn,
            actor(request),
            name=query.name,
            client_ids=parsed.client_ids,
            description=query.description,
        )
    return SegmentImported(segment, parsed.rows, unknown, parsed.refused)
