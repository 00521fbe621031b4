"""The audit journal viewer: who changed what and when, with the old and the new value,
filtered by entity, user, period and field, newest first a page at a time (keyset on
(at, id)), and exported as CSV.

The export streams: it reads the journal a page at a time and writes each page as it
comes, so a large export holds neither the whole result in memory nor one long query.
It is one small function (:func:`stream_csv`), to be replaced by the generic export
engine (CSV/XLSX) when that arrives.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any
from urllib.parse import urlencode

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable
from admin_api.security import principal
from admin_api.typedefs import DB
from admin_api.ui import forms
from admin_api.ui.rendering import render
from crm import audit, pii
from crm.audit import AuditEntry, AuditFilter
from herald import clock, cursors
from herald.bounds import Id
from herald.cursors import AwareTime
from herald.errors import InvalidInput

endpoints = EndpointTable("ui")

PAGE = 50
EXPORT_PAGE = 1000
EXPORT_LIMIT = 200_000
Word = Annotated[str, msgspec.Meta(max_length=200)]


class AuditQuery(msgspec.Struct, forbid_unknown_fields=True):
    """The viewer's filters; ``since`` and ``until`` are days of the business calendar,
    both included."""

    entity_type: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z_]{1,40}$")] | None = None
    entity_id: Word | None = None
    user: Word | None = None
    field: Word | None = None
    since: dt.date | None = None
    until: dt.date | None = None
    cursor: str | None = None


def _filter(q: AuditQuery) -> AuditFilter:
    if q.since and q.until and q.until < q.since:
        raise InvalidInput("until", "the period ends before it starts")
    tz = clock.business_tz()
    return AuditFilter(
        entity_type=q.entity_type,
        entity_id=q.entity_id,
        actor_login=q.user,
        field=q.field,
        since=dt.datetime.combine(q.since, dt.time(), tz) if q.since else None,
        until=(
            dt.datetime.combine(q.until + dt.timedelta(days=1), dt.time(), tz) if q.until else None
        ),
    )


def _cursor(q: AuditQuery) -> tuple[dt.datetime, int] | None:
    return cursors.decode(q.cursor, tuple[AwareTime, Id]) if q.cursor else None


def _pii(request: web.Request) -> bool:
    return pii.PERMISSION in principal(request).permissions


async def _rows(request: web.Request, q: AuditQuery) -> dict[str, object]:
    f = _filter(q)
    async with request.app[DB].acquire() as conn:
        items = await audit.search(
            conn, f, limit=PAGE, pii_visible=_pii(request), before=_cursor(q)
        )
    after = cursors.encode(items[-1].at, items[-1].id) if len(items) == PAGE else None
    more = None
    if after is not None:
        more = urlencode({**_given(request), "cursor": after})
    shown = [(e, _value(e.old_value), _value(e.new_value)) for e in items]
    return {"items": shown, "q": q, "more": more, "export": urlencode(_given(request))}


def _given(request: web.Request) -> dict[str, str]:
    return {k: v for k, v in request.query.items() if k != "cursor" and v.strip()}


@endpoints.get(
    "/ui/audit", permission="audit.read", response=str, media_type="text/html", errors=(400,)
)
async def audit_page(request: web.Request) -> web.Response:
    """The journal with its filters, newest first."""
    q = forms.query(request, AuditQuery)
    async with request.app[DB].acquire() as conn:
        types = await audit.entity_types(conn)
    ctx = await _rows(request, q)
    return await render(request, "audit.html", {**ctx, "entity_types": types})


@endpoints.get(
    "/ui/audit/rows", permission="audit.read", response=str, media_type="text/html", errors=(400,)
)
async def audit_rows(request: web.Request) -> web.Response:
    """One page of journal rows for the filters (the next page with ``cursor``)."""
    q = forms.query(request, AuditQuery)
    template = "_audit_more.html" if q.cursor else "_audit_rows.html"
    return await render(request, template, await _rows(request, q))


CSV_HEADER = (
    "at",
    "user",
    "action",
    "entity_type",
    "entity_id",
    "field",
    "old_value",
    "new_value",
    "request_id",
)


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


def _csv_row(e: AuditEntry) -> Sequence[str]:
    return (
        e.at.isoformat(),
        e.actor_login,
        e.action,
        e.entity_type,
        e.entity_id,
        e.field or "",
        _value(e.old_value),
        _value(e.new_value),
        e.request_id or "",
    )


async def stream_csv(
    request: web.Request,
    filename: str,
    header: Sequence[str],
    rows: AsyncIterator[Sequence[str]],
) -> web.StreamResponse:
    """Stream ``rows`` as a CSV download (UTF-8 with a BOM, so spreadsheet programs read
    Cyrillic right). The one place to swap for the generic export engine."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    await response.write(("\ufeff" + buffer.getvalue()).encode())
    async for row in rows:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(row)
        await response.write(buffer.getvalue().encode())
    await response.write_eof()
    return response


async def _entries(request: web.Request, f: AuditFilter) -> AsyncIterator[Sequence[str]]:
    """Every entry of the filter, newest first, read a page at a time (up to the cap)."""
    before = None
    sent = 0
    pii_visible = _pii(request)
    while sent < EXPORT_LIMIT:
        async with request.app[DB].acquire() as conn:
            page = await audit.search(
                conn, f, limit=EXPORT_PAGE, pii_visible=pii_visible, before=before
            )
        for entry in page:
            yield _csv_row(entry)
        sent += len(page)
        if len(page) < EXPORT_PAGE:
            return
        before = (page[-1].at, page[-1].id)


@endpoints.get(
    "/ui/audit/export.csv",
    permission="audit.read",
    response=str,
    media_type="text/csv",
    errors=(400,),
)
async def audit_export(request: web.Request) -> web.StreamResponse:
    """The filtered journal as CSV, streamed (at most 200 000 rows)."""
    q = forms.query(request, AuditQuery)
    f = _filter(q)
    stamp = clock.now().astimezone(clock.business_tz()).strftime("%Y%m%d-%H%M")
    return await stream_csv(request, f"audit-{stamp}.csv", CSV_HEADER, _entries(request, f))
