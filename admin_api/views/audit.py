"""Reading the audit journal: the history of any entity."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable
from admin_api.security import principal
from admin_api.typedefs import DB
from crm import audit, pii
from crm.audit import AuditEntry
from herald import cursors
from herald.bounds import Id
from herald.cursors import AwareTime

endpoints = EndpointTable("audit")


class HistoryQuery(msgspec.Struct, forbid_unknown_fields=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100
    cursor: str | None = None


class HistoryPage(msgspec.Struct):
    items: list[AuditEntry]
    next_cursor: str | None


def _encode_cursor(entry: AuditEntry) -> str:
    return cursors.encode(entry.at, entry.id)


def _decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    return cursors.decode(cursor, tuple[AwareTime, Id])


@endpoints.get(
    "/api/v1/audit/{entity_type}/{entity_id}",
    permission="audit.read",
    query=HistoryQuery,
    response=HistoryPage,
    errors=(400,),
)
async def entity_history(request: web.Request, query: HistoryQuery) -> HistoryPage:
    """Every recorded change of one entity (e.g. user/42, contact/7), newest first."""
    entity_type = request.match_info["entity_type"]
    before = _decode_cursor(query.cursor) if query.cursor else None
    async with request.app[DB].acquire() as conn:
        items = await audit.history(
            conn,
            entity_type,
            request.match_info["entity_id"],
            limit=query.limit,
            before=before,
            pii_visible=pii.PERMISSION in principal(request).permissions,
        )
    return HistoryPage(
        items=items, next_cursor=_encode_cursor(items[-1]) if len(items) == query.limit else None
    )
