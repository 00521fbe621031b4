"""The audit journal: who changed what, written in the caller's transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import msgspec

from crm import pii

_json = msgspec.json.Encoder()


class Actor(msgspec.Struct, frozen=True):
    """Who is acting: a user (id and login) or a system process (id None), and the request."""

    login: str
    id: int | None = None
    request_id: str | None = None


SYSTEM = Actor(login="system")


class Change(msgspec.Struct, frozen=True):
    """One audited fact: an entity created, a field changed, a link made, a login failed."""

    entity_type: str
    entity_id: str
    action: str
    field: str | None = None
    old: Any = None
    new: Any = None


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


def field_changes(entity_type: str, entity_id: str | int, old: Mapping[str, Any],
                  new: Mapping[str, Any]) -> list[Change]:
    """One ``update`` change per field of ``new`` whose value differs from ``old``."""
    return [Change(entity_type, str(entity_id), "update", name, old.get(name), value)
            for name, value in new.items() if old.get(name) != value]


def _encode(value: Any) -> str | None:
    return None if value is None else _json.encode(value).decode()


async def record(conn: asyncpg.Connection, actor: Actor, changes: Sequence[Change]) -> None:
    """Append ``changes`` in one statement; call it inside the transaction of the change."""
    if not changes:
        return
    await conn.execute(
        """
        INSERT INTO audit_log (actor_id, actor_login, request_id, action, entity_type,
                               entity_id, field, old_value, new_value)
        SELECT $1, $2, $3, c.action, c.entity_type, c.entity_id, c.field, c.old::jsonb, c.new::jsonb
        FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])
             AS c(action, entity_type, entity_id, field, old, new)
        """,
        actor.id, actor.login, actor.request_id,
        [c.action for c in changes], [c.entity_type for c in changes],
        [c.entity_id for c in changes], [c.field for c in changes],
        [_encode(c.old) for c in changes], [_encode(c.new) for c in changes],
    )


def masked(entry: AuditEntry) -> AuditEntry:
    """``entry`` as a role without ``clients.pii`` may see it (``crm.pii``: the card's rule)."""
    old, new = pii.mask_value(entry.field, entry.old_value), pii.mask_value(entry.field, entry.new_value)
    if old == entry.old_value and new == entry.new_value:
        return entry
    return msgspec.structs.replace(entry, old_value=old, new_value=new)


async def history(conn: asyncpg.Connection, entity_type: str, entity_id: str, *, limit: int,
                  pii_visible: bool, before: tuple[dt.datetime, int] | None = None,
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
        entity_type, entity_id, before[0] if before else None, before[1] if before else None, limit)
    entries = [AuditEntry(**dict(r)) for r in rows]
    return entries if pii_visible else [masked(e) for e in entries]
