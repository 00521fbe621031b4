"""The one operator queue across channels: filters and keyset pages by creation time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Literal

import asyncpg
import msgspec

from crm.cases.store import SUMMARY_COLUMNS
from crm.cases.types import CaseSummary, CaseType, Channel, Priority, Status
from herald import cursors
from herald.bounds import Id
from herald.cursors import AwareTime
from herald.exports import ExportQuery


class CaseQueueQuery(msgspec.Struct, forbid_unknown_fields=True):
    """Filters of the queue (all given must hold). ``open``: not closed. ``order``: by
    creation time, oldest first (``asc``, the working order) or newest first."""

    status: Status | None = None
    open: bool | None = None
    channel: Channel | None = None
    priority: Priority | None = None
    case_type: CaseType | None = None
    category_id: Id | None = None
    client_id: Id | None = None
    assignee_id: Id | None = None
    anonymous: bool | None = None
    is_repeat: bool | None = None
    duplicate: bool | None = None
    number: Annotated[str, msgspec.Meta(min_length=1, max_length=40)] | None = None
    # Open cases in this SLA state (cases_sla_state_idx).
    sla_state: Literal["none", "ok", "warning", "breached"] | None = None
    order: Literal["asc", "desc"] = "asc"
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50
    cursor: str | None = None
    # csv or xlsx: every matching case as a file (no pages; a large one becomes an export job).
    format: Literal["json", "csv", "xlsx"] = "json"


class CaseQueuePage(msgspec.Struct):
    items: list[CaseSummary]
    next_cursor: str | None


def encode_cursor(item: CaseSummary) -> str:
    return cursors.encode(item.created_at, item.id)


def decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    return cursors.decode(cursor, tuple[AwareTime, Id])


_EXPORT_COLUMNS = (
    "id",
    "number",
    "channel",
    "status",
    "priority",
    "case_type",
    "category_id",
    "client_id",
    "subject",
    "is_repeat",
    "duplicate_of_id",
    "merged_into_id",
    "assignee_id",
    "created_at",
    "status_changed_at",
    "sla_state",
)


def _where(q: CaseQueueQuery, bind: Callable[[object], str]) -> list[str]:
    """The clauses of the filters (the cursor and the page size apart)."""
    where: list[str] = []
    # The literal predicate lets the planner use the partial open-case indexes.
    if q.open is True:
        where.append("status <> 'closed'")
    elif q.open is False:
        where.append("status = 'closed'")
    for column, value in (
        ("status", q.status),
        ("channel", q.channel),
        ("priority", q.priority),
        ("case_type", q.case_type),
        ("category_id", q.category_id),
        ("client_id", q.client_id),
        ("assignee_id", q.assignee_id),
        ("number", q.number),
    ):
        if value is not None:
            where.append(f"{column} = {bind(value)}")
    if q.anonymous is not None:
        where.append("client_id IS NULL" if q.anonymous else "client_id IS NOT NULL")
    if q.is_repeat is not None:
        where.append(f"is_repeat = {bind(q.is_repeat)}")
    if q.duplicate is not None:
        where.append("duplicate_of_id IS NOT NULL" if q.duplicate else "duplicate_of_id IS NULL")
    if q.sla_state is not None:
        where.append(f"status <> 'closed' AND sla_state = {bind(q.sla_state)}")
    return where


def export_query(q: CaseQueueQuery) -> ExportQuery:
    """Every case the queue lists for these filters, in its order (cursor and page size
    ignored); times as the business time zone's wall clock."""
    args: list[object] = []

    def bind(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    where = _where(q, bind)
    direction = "ASC" if q.order == "asc" else "DESC"
    local = "to_char({} AT TIME ZONE herald_business_tz(), 'YYYY-MM-DD HH24:MI:SS')"
    columns = [
        local.format(c) + f" AS {c}" if c in ("created_at", "status_changed_at") else c
        for c in _EXPORT_COLUMNS
    ]
    sql = (
        f"SELECT {', '.join(columns)} FROM cases"
        + (" WHERE " + " AND ".join(where) if where else "")
        # Qualified: the output columns of the same names are text.
        + f" ORDER BY cases.created_at {direction}, cases.id {direction}"
    )
    return ExportQuery(sql, tuple(args), _EXPORT_COLUMNS, title="cases")


async def list_queue(conn: asyncpg.Connection, q: CaseQueueQuery) -> CaseQueuePage:
    """One page of cases matching ``q``; each filter is a fixed, parameterised clause."""
    args: list[object] = []

    def bind(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    where = _where(q, bind)
    if q.cursor:
        at, case_id = decode_cursor(q.cursor)
        op = ">" if q.order == "asc" else "<"
        where.append(f"(created_at, id) {op} ({bind(at)}, {bind(case_id)})")
    direction = "ASC" if q.order == "asc" else "DESC"
    sql = (
        f"SELECT {SUMMARY_COLUMNS} FROM cases"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY created_at {direction}, id {direction} LIMIT {bind(q.limit)}"
    )
    rows = await conn.fetch(sql, *args)
    items = [CaseSummary(**dict(r)) for r in rows]
    return CaseQueuePage(items, encode_cursor(items[-1]) if len(items) == q.limit else None)
