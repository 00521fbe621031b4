"""The audit journal's read side: an entity's history, personal data masked by role.

Writing the journal is the kernel's ``herald.audit`` (``Actor``, ``Change``, ``record``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import msgspec

from crm import pii


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
