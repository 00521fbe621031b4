"""Event producers: systems that post events (billing, shop, case system, mobile app).

Each has an API key of its own, shown once when it is created; only its SHA-256 is
stored (a key is 32 random bytes, so a fast hash is enough: nothing to brute-force), and
the first characters, to tell keys apart in lists. A producer may post only the event
types it was given; a deactivated producer's key is refused with 403.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Annotated

import asyncpg
import msgspec
from msgspec import Meta

from dispatcher.realtime.triggers import EventType
from herald import audit
from herald.audit import Actor, Change
from herald.errors import Conflict, InvalidInput, NotFound

KEY_PREFIX = "hpk_"


class ProducerSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=100)]
    event_types: Annotated[list[EventType], Meta(min_length=1, max_length=100)]


class Producer(msgspec.Struct, frozen=True):
    id: int
    name: str
    key_prefix: str
    event_types: list[str]
    is_active: bool
    created_at: dt.datetime
    deactivated_at: dt.datetime | None


class ProducerCreated(msgspec.Struct, frozen=True):
    producer: Producer
    api_key: str  # shown once; only its hash is kept


_COLUMNS = "id, name, key_prefix, event_types, is_active, created_at, deactivated_at"


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def create(conn: asyncpg.Connection, actor: Actor, spec: ProducerSpec) -> ProducerCreated:
    name = spec.name.strip()
    if not name:
        raise InvalidInput("name", "a name is required")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    async with conn.transaction():
        try:
            row = await conn.fetchrow(
                f"INSERT INTO producers (name, key_hash, key_prefix, event_types, created_by) "
                f"VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}",
                name,
                key_hash(key),
                key[: len(KEY_PREFIX) + 6],
                sorted(set(spec.event_types)),
                actor.id,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"a producer named {name!r} exists already") from None
        producer = Producer(**dict(row))
        await audit.record(
            conn,
            actor,
            [
                Change(
                    "producer",
                    str(producer.id),
                    "create",
                    None,
                    None,
                    {
                        "name": name,
                        "event_types": producer.event_types,
                        "key_prefix": producer.key_prefix,
                    },
                )
            ],
        )
    return ProducerCreated(producer, key)


async def list_producers(conn: asyncpg.Connection) -> list[Producer]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM producers ORDER BY id")
    return [Producer(**dict(r)) for r in rows]


async def deactivate(conn: asyncpg.Connection, actor: Actor, producer_id: int) -> Producer:
    """Refuse the producer's key from now on (its events stay)."""
    async with conn.transaction():
        was = await conn.fetchval(
            "SELECT is_active FROM producers WHERE id = $1 FOR UPDATE", producer_id
        )
        if was is None:
            raise NotFound(f"producer {producer_id} does not exist")
        row = await conn.fetchrow(
            f"UPDATE producers SET is_active = false, "
            f"deactivated_at = coalesce(deactivated_at, herald_now()) WHERE id = $1 RETURNING {_COLUMNS}",
            producer_id,
        )
        if was:
            await audit.record(
                conn,
                actor,
                [Change("producer", str(producer_id), "update", "is_active", True, False)],
            )
    return Producer(**dict(row))


async def authenticate(conn: asyncpg.Connection, key: str) -> Producer | None:
    """The producer holding this key (active or not), or None."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM producers WHERE key_hash = $1", key_hash(key)
    )
    return Producer(**dict(row)) if row is not None else None


class CausedMessage(msgspec.Struct, frozen=True):
    """A message an event caused: its rule, the step reached and its last status, or why
    the contact policy refused it."""

    message_id: str
    rule_id: int | None
    rule_name: str | None
    refused: str | None
    channel: str | None
    status: str | None


class RecentEvent(msgspec.Struct, frozen=True):
    producer_id: int
    producer: str
    event_id: str
    type: str
    client_id: int
    occurred_at: dt.datetime
    received_at: dt.datetime
    messages: list[CausedMessage]


_caused_decoder = msgspec.json.Decoder(list[CausedMessage])


async def recent_events(
    conn: asyncpg.Connection, *, limit: int, event_type: str | None = None
) -> list[RecentEvent]:
    """The latest events received, newest first, each with the messages it caused."""
    rows = await conn.fetch(
        """
        SELECT e.producer_id, p.name AS producer, e.event_id, e.type, e.client_id,
               e.occurred_at, e.received_at,
               coalesce((
                   SELECT json_agg(json_build_object(
                       'message_id', 't' || m.id || ':' || m.client_id || ':' || m.step,
                       'rule_id', m.rule_id, 'rule_name', r.name, 'refused', m.refused,
                       'channel', last.channel, 'status', last.status) ORDER BY m.id)
                   FROM realtime_messages m
                   LEFT JOIN trigger_rules r ON r.id = m.rule_id
                   LEFT JOIN LATERAL (
                       SELECT channel, status FROM message_events
                       WHERE message_id = 't' || m.id || ':' || m.client_id || ':' || m.step
                       ORDER BY at DESC LIMIT 1) last ON true
                   WHERE m.producer_id = e.producer_id AND m.event_id = e.event_id
               ), '[]')::text AS messages
        FROM (SELECT * FROM producer_events
              WHERE $2::text IS NULL OR type = $2
              ORDER BY received_at DESC LIMIT $1) e
        JOIN producers p ON p.id = e.producer_id
        ORDER BY e.received_at DESC
        """,
        limit,
        event_type,
    )
    return [
        RecentEvent(
            **{k: v for k, v in dict(r).items() if k != "messages"},
            messages=_caused_decoder.decode(r["messages"]),
        )
        for r in rows
    ]
