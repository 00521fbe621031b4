"""The audit journal's write side: who acts (``Actor``), what changed (``Change``), ``record``.

Kernel: anything may record an audited change in its own transaction (rules, crm,
dispatcher, admin_api). Imports no Herald module. Reading the journal (with personal data
masked by role) is ``crm.audit``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import asyncpg
import msgspec

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


def field_changes(
    entity_type: str, entity_id: str | int, old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[Change]:
    """One ``update`` change per field of ``new`` whose value differs from ``old``."""
    return [
        Change(entity_type, str(entity_id), "update", name, old.get(name), value)
        for name, value in new.items()
        if old.get(name) != value
    ]


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
        actor.id,
        actor.login,
        actor.request_id,
        [c.action for c in changes],
        [c.entity_type for c in changes],
        [c.entity_id for c in changes],
        [c.field for c in changes],
        [_encode(c.old) for c in changes],
        [_encode(c.new) for c in changes],
    )


SECURITY = "security"
"""The journal's entity type for refused attacks; the entity id is the Attempt's kind."""


SAMPLE_LENGTH = 300


class Refused(Protocol):
    """Input refused as an attack (herald.errors.Attempt)."""

    @property
    def kind(self) -> str: ...
    @property
    def field(self) -> str: ...
    @property
    def detail(self) -> str: ...
    @property
    def sample(self) -> str: ...


async def record_attempts(
    conn: asyncpg.Connection, actor: Actor, attempts: Sequence[Refused]
) -> None:
    """Journal refused input that looked like an attack: who, where, what they sent."""
    await record(
        conn,
        actor,
        [
            Change(
                SECURITY,
                a.kind,
                "refused",
                a.field,
                None,
                {"detail": a.detail, "input": a.sample[:SAMPLE_LENGTH]},
            )
            for a in attempts
        ],
    )
