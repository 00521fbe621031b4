"""The audit journal's read side: an entity's history, personal data masked by role.

Writing the journal is the kernel's ``herald.audit`` (``Actor``, ``Change``, ``record``).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import asyncpg
import msgspec

from crm import pii
from herald.errors import InvalidInput
from herald.exports import ExportQuery


class AuditEntry(msgspec.Struct, frozen=True):
    id: int
    at: dt.datetime
    actor_id: int | None
    actor_login: str
    action: str
    entity_type: str
    entity_id: str
    field: str | None
    old_value: Any
    new_value: Any
    request_id: str | None


def masked(entry: AuditEntry) -> AuditEntry:
    """``entry`` as a role without ``clients.pii`` may see it (``crm.pii``: the card's rule)."""
    old, new = (
        pii.mask_value(entry.field, entry.old_value),
        pii.mask_value(entry.field, entry.new_value),
    )
    if old == entry.old_value and new == entry.new_value:
        return entry
    return msgspec.structs.replace(entry, old_value=old, new_value=new)


async def history(
    conn: asyncpg.Connection,
    entity_type: str,
    entity_id: str,
    *,
    limit: int,
    pii_visible: bool,
    before: tuple[dt.datetime, int] | None = None,
) -> list[AuditEntry]:
    """An entity's journal, newest first; ``before`` is the (at, id) keyset cursor.

    Personal data (``crm.pii.FIELDS``) comes masked unless ``pii_visible``: every reader of
    the journal goes through here and must say whether its caller may see it.
    """
    rows = await conn.fetch(
        """
        SELECT id, at, actor_id, actor_login, action, entity_type, entity_id, field,
               old_value, new_value, request_id
        FROM audit_log
        WHERE entity_type = $1 AND entity_id = $2
          AND ($3::timestamptz IS NULL OR (at, id) < ($3, $4))
        ORDER BY at DESC, id DESC
        LIMIT $5
        """,
        entity_type,
        entity_id,
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )
    entries = [AuditEntry(**dict(r)) for r in rows]
    return entries if pii_visible else [masked(e) for e in entries]


class AuditExportFilters(msgspec.Struct, forbid_unknown_fields=True):
    """The journal in [from, to), of one entity type (and id), or of one actor's login."""

    entity_type: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z_]{1,40}$")] | None = None
    entity_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    actor_login: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    field: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    from_: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = msgspec.field(
        default=None, name="from"
    )
    to: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = None


_EXPORT_COLUMNS = (
    "id",
    "at",
    "actor_id",
    "actor_login",
    "action",
    "entity_type",
    "entity_id",
    "field",
    "old_value",
    "new_value",
    "request_id",
)


def export_query(f: AuditExportFilters, *, pii_visible: bool) -> ExportQuery:
    """The journal entries for ``f``, newest first as ``history`` gives them; personal data
    masked unless ``pii_visible`` (``herald_pii_mask_json``, the rule of ``masked``)."""
    if f.entity_id is not None and f.entity_type is None:
        raise InvalidInput("entity_id", "an entity id needs its entity_type")
    if f.from_ is not None and f.to is not None and f.from_ >= f.to:
        raise InvalidInput("from", "from must be before to")
    where: list[str] = []
    args: list[object] = []
    for clause, value in (
        ("entity_type = ${}", f.entity_type),
        ("entity_id = ${}", f.entity_id),
        ("actor_login = ${}", f.actor_login),
        ("field = ${}", f.field),
        ("at >= ${}", f.from_),
        ("at < ${}", f.to),
    ):
        if value is not None:
            args.append(value)
            where.append(clause.format(len(args)))
    old, new = (
        ("old_value", "new_value")
        if pii_visible
        else ("herald_pii_mask_json(field, old_value)", "herald_pii_mask_json(field, new_value)")
    )
    sql = (
        "SELECT id, to_char(at AT TIME ZONE herald_business_tz(), 'YYYY-MM-DD HH24:MI:SS.US') AS at,"
        f" actor_id, actor_login, action, entity_type, entity_id, field, {old} AS old_value,"
        f" {new} AS new_value, request_id FROM audit_log"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY audit_log.at DESC, audit_log.id DESC"
    )
    return ExportQuery(sql, tuple(args), _EXPORT_COLUMNS, title="audit")


class AuditFilter(msgspec.Struct, frozen=True):
    """What the journal viewer looks for; all given must hold. ``until`` is exclusive."""

    entity_type: str | None = None
    entity_id: str | None = None
    actor_login: str | None = None
    field: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


async def search(
    conn: asyncpg.Connection,
    f: AuditFilter,
    *,
    limit: int,
    pii_visible: bool,
    before: tuple[dt.datetime, int] | None = None,
) -> list[AuditEntry]:
    """Journal entries matching ``f``, newest first; ``before`` is the (at, id) keyset cursor.

    Each filter is a fixed, parameterised clause; the entity-type and actor indexes of
    migration 0065 (and the entity index of 0002) serve the usual ones, the primary key
    (at, id) the rest. Personal data comes masked unless ``pii_visible``.
    """
    where: list[str] = []
    args: list[object] = []

    def bind(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    for column, value in (
        ("entity_type", f.entity_type),
        ("entity_id", f.entity_id),
        ("actor_login", f.actor_login),
        ("field", f.field),
    ):
        if value is not None:
            where.append(f"{column} = {bind(value)}")
    if f.since is not None:
        where.append(f"at >= {bind(f.since)}")
    if f.until is not None:
        where.append(f"at < {bind(f.until)}")
    if before is not None:
        where.append(f"(at, id) < ({bind(before[0])}, {bind(before[1])})")
    rows = await conn.fetch(
        """
        SELECT id, at, actor_id, actor_login, action, entity_type, entity_id, field,
               old_value, new_value, request_id
        FROM audit_log"""
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY at DESC, id DESC LIMIT {bind(limit)}",
        *args,
    )
    entries = [AuditEntry(**dict(r)) for r in rows]
    return entries if pii_visible else [masked(e) for e in entries]


async def entity_types(conn: asyncpg.Connection) -> list[str]:
    """The entity types the journal holds: a loose index scan (one probe per type) over the
    entity-type index, not a scan of the journal."""
    rows = await conn.fetch(
        """
        WITH RECURSIVE t AS (
            (SELECT entity_type FROM audit_log ORDER BY entity_type LIMIT 1)
            UNION ALL
            SELECT (SELECT a.entity_type FROM audit_log a WHERE a.entity_type > t.entity_type
                    ORDER BY a.entity_type LIMIT 1)
            FROM t WHERE t.entity_type IS NOT NULL)
        SELECT entity_type FROM t WHERE entity_type IS NOT NULL
        """
    )
    return [r["entity_type"] for r in rows]
