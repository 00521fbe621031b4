"""The audit journal viewer: who changed what and when, with the old and the new value,
filtered by entity, user, period and field, newest first a page at a time (keyset on
(at, id)), and exported whole as CSV or XLSX by the export engine (kind ``audit``, the
same filters; no row limit, a background job when large).
"""

from __future__ import annotations

import datetime as dt
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
from crm.audit import AuditFilter
from herald import clock, cursors
from herald.bounds import Id
from herald.cursors import AwareTime
from herald.errors import InvalidInput

endpoints = EndpointTable("ui")

PAGE = 50
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
    return {"items": shown, "q": q, "more": more, "export": _export_filters(f)}


def _export_filters(f: AuditFilter) -> dict[str, str | None]:
    """The viewer's filters as the export engine's ``audit`` kind takes them."""
    return {
        "entity_type": f.entity_type,
        "entity_id": f.entity_id,
        "actor_login": f.actor_login,
        "field": f.field,
        "from": f.since.isoformat() if f.since else None,
        "to": f.until.isoformat() if f.until else None,
    }


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


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()
