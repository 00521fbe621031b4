"""Agents of case routing (SR-10): presence with its history, skills and capacity.

An agent who goes away or offline keeps the cases already assigned to them; the routing
pass gives new cases only to online agents, and "take next" works when online or busy.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import asyncpg
import msgspec

from crm.cases.types import Channel
from herald import audit
from herald.audit import Actor, Change
from herald.bounds import Id
from herald.errors import InvalidInput, NotFound

Presence = Literal["online", "busy", "away", "offline"]
Language = Literal["uk", "en"]


class PresenceSpec(msgspec.Struct, forbid_unknown_fields=True):
    presence: Presence


class AgentSkillsPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The fields to change; an empty skill list means "any"."""

    capacity: Annotated[int, msgspec.Meta(ge=0, le=1000)] | None = None
    languages: Annotated[list[Language], msgspec.Meta(max_length=2)] | None = None
    channels: Annotated[list[Channel], msgspec.Meta(max_length=8)] | None = None
    category_ids: Annotated[list[Id], msgspec.Meta(max_length=200)] | None = None


class Agent(msgspec.Struct):
    user_id: int
    presence: str
    presence_changed_at: dt.datetime | None
    capacity: int
    languages: list[str]
    channels: list[str]
    category_ids: list[int]
    last_assigned_at: dt.datetime | None


class PresenceChange(msgspec.Struct):
    user_id: int
    presence: str
    previous: str | None
    at: dt.datetime
    actor_login: str


_AGENT = (
    "SELECT user_id, presence, presence_changed_at, capacity, languages, channels, "
    "category_ids, last_assigned_at FROM case_agents WHERE user_id = $1"
)


def _agent(row: asyncpg.Record) -> Agent:
    return Agent(
        row["user_id"],
        row["presence"],
        row["presence_changed_at"],
        row["capacity"],
        list(row["languages"]),
        list(row["channels"]),
        list(row["category_ids"]),
        row["last_assigned_at"],
    )


async def ensure_agent(conn: asyncpg.Connection, user_id: int, *, field: str = "user_id") -> None:
    """Make the agent row of an active user (InvalidInput naming ``field`` otherwise)."""
    if not await conn.fetchval("SELECT is_active FROM users WHERE id = $1", user_id):
        raise InvalidInput(field, f"no active user {user_id}")
    await conn.execute(
        "INSERT INTO case_agents (user_id) VALUES ($1) ON CONFLICT DO NOTHING", user_id
    )


async def get_agent(conn: asyncpg.Connection, user_id: int, *, lock: bool = False) -> Agent:
    row = await conn.fetchrow(_AGENT + (" FOR UPDATE" if lock else ""), user_id)
    if row is None:
        raise NotFound(f"user {user_id} is not a case agent")
    return _agent(row)


async def set_presence(
    conn: asyncpg.Connection, actor: Actor, user_id: int, presence: str
) -> Agent:
    """Set an agent's presence; a change is logged with its time and journalled."""
    async with conn.transaction():
        await ensure_agent(conn, user_id)
        before = await get_agent(conn, user_id, lock=True)
        if before.presence == presence:
            return before
        await conn.execute(
            "UPDATE case_agents SET presence = $2, presence_changed_at = herald_now(), "
            "updated_at = herald_now() WHERE user_id = $1",
            user_id,
            presence,
        )
        await conn.execute(
            "INSERT INTO case_agent_presence_log (user_id, presence, previous, actor_id, "
            "actor_login) VALUES ($1, $2, $3, $4, $5)",
            user_id,
            presence,
            before.presence,
            actor.id,
            actor.login,
        )
        await audit.record(
            conn,
            actor,
            [Change("case_agent", str(user_id), "update", "presence", before.presence, presence)],
        )
        return await get_agent(conn, user_id)


async def update_skills(
    conn: asyncpg.Connection, actor: Actor, user_id: int, patch: AgentSkillsPatch
) -> Agent:
    changes = msgspec.to_builtins(patch)
    if not changes:
        raise InvalidInput("body", "give capacity, languages, channels or category_ids")
    async with conn.transaction():
        await ensure_agent(conn, user_id)
        before = msgspec.to_builtins(await get_agent(conn, user_id, lock=True))
        if patch.category_ids:
            known = {
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM case_categories WHERE id = ANY($1::bigint[])",
                    patch.category_ids,
                )
            }
            for i, category_id in enumerate(patch.category_ids):
                if category_id not in known:
                    raise InvalidInput(f"category_ids[{i}]", f"no case category {category_id}")
        new = {**before, **changes}
        await conn.execute(
            "UPDATE case_agents SET capacity = $2, languages = $3, channels = $4, "
            "category_ids = $5, updated_at = herald_now() WHERE user_id = $1",
            user_id,
            new["capacity"],
            new["languages"],
            new["channels"],
            new["category_ids"],
        )
        await audit.record(conn, actor, audit.field_changes("case_agent", user_id, before, changes))
        return await get_agent(conn, user_id)


async def presence_history(
    conn: asyncpg.Connection,
    user_id: int | None,
    *,
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int,
) -> list[PresenceChange]:
    """Presence changes (oldest first) of one agent or all, within [since, until)."""
    rows = await conn.fetch(
        "SELECT user_id, presence, previous, at, actor_login FROM case_agent_presence_log "
        "WHERE ($1::bigint IS NULL OR user_id = $1) AND ($2::timestamptz IS NULL OR at >= $2) "
        "AND ($3::timestamptz IS NULL OR at < $3) ORDER BY at, id LIMIT $4",
        user_id,
        since,
        until,
        limit,
    )
    return [PresenceChange(**dict(r)) for r in rows]
