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
