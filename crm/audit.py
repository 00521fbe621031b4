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
