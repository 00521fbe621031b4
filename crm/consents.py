"""A client's consents as the card, the self-service channels and the unsubscribe page read them.

``rules.consent`` owns the consent tables and makes every change; this module only reads
them together with the topic catalogue, for the API's views of a client's choices.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

from crm import clients
from herald.errors import InvalidInput, NotFound


class ConsentRecord(msgspec.Struct):
    channel: str
    topic: str
    opted_in: bool
    source: str
    changed_at: dt.datetime


class TopicDefault(msgspec.Struct):
    """A topic and what applies on a channel without an explicit choice."""

    code: str
    name_uk: str
    name_en: str
    requires_opt_in: bool
    allowed_by_default: bool


class ClientConsents(msgspec.Struct):
    client_id: int
    consents: list[ConsentRecord]
    topics: list[TopicDefault]


async def of_client(conn: asyncpg.Connection, client_id: int) -> ClientConsents:
    """The client's explicit choices and every topic's default; NotFound for no such client."""
    await clients.require(conn, client_id)
    rows = await conn.fetch(
        "SELECT channel, topic, opted_in, source, changed_at FROM consents "
        "WHERE client_id = $1 ORDER BY topic, channel",
        client_id,
    )
    topics = await conn.fetch(
        "SELECT code, name_uk, name_en, requires_opt_in FROM message_topics ORDER BY code"
    )
    return ClientConsents(
        client_id,
        [ConsentRecord(**dict(r)) for r in rows],
        [TopicDefault(**dict(t), allowed_by_default=not t["requires_opt_in"]) for t in topics],
    )


class Topic(msgspec.Struct, frozen=True):
    code: str
    name_uk: str
    name_en: str
    requires_opt_in: bool


async def topics(conn: asyncpg.Connection) -> list[Topic]:
    """The message topics (what a template, a consent and a stop-list entry are about)."""
    rows = await conn.fetch(
        "SELECT code, name_uk, name_en, requires_opt_in FROM message_topics ORDER BY code"
    )
    return [Topic(**dict(r)) for r in rows]


async def topic_codes(conn: asyncpg.Connection) -> list[str]:
    """Every topic's code, in order."""
    return [r[0] for r in await conn.fetch("SELECT code FROM message_topics ORDER BY code")]


async def require_topic(
    conn: asyncpg.Connection, field: str, topic: str, known: list[str] | None = None
) -> None:
    """InvalidInput naming ``field`` unless ``topic`` is a topic's code."""
    codes = known if known is not None else await topic_codes(conn)
    if topic not in codes:
        raise InvalidInput(field, f"unknown topic {topic!r}; one of {', '.join(codes)}")


async def require_client_and_topic(conn: asyncpg.Connection, client_id: int, topic: str) -> None:
    """NotFound for no such client, InvalidInput (``topic``) for no such topic: one round trip."""
    found = await conn.fetchrow(
        "SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1) AS known, "
        "coalesce((SELECT array_agg(code ORDER BY code) FROM message_topics), '{}') AS topics",
        client_id,
    )
    if not found["known"]:
        raise NotFound(f"no client {client_id}")
    await require_topic(conn, "topic", topic, list(found["topics"]))


async def changed_at(
    conn: asyncpg.Connection, client_id: int, channel: str, topic: str
) -> dt.datetime:
    """When the client's explicit choice for this channel and topic was last changed (asked
    after recording it: a missing row is a broken invariant, not a client error)."""
    at: dt.datetime | None = await conn.fetchval(
        "SELECT changed_at FROM consents WHERE client_id = $1 AND channel = $2 AND topic = $3",
        client_id,
        channel,
        topic,
    )
    if at is None:
        raise LookupError(f"no consent of client {client_id} on {channel}/{topic}")
    return at


async def email_choice(conn: asyncpg.Connection, client_id: int, topic: str) -> bool | None:
    """The client's explicit e-mail choice for ``topic``; None when the topic default applies."""
    return await conn.fetchval(
        "SELECT opted_in FROM consents WHERE client_id = $1 AND channel = 'email' AND topic = $2",
        client_id,
        topic,
    )


async def link_topic_name(conn: asyncpg.Connection, client_id: int, topic: str) -> str | None:
    """The Ukrainian name of ``topic`` if both it and the client exist (an unsubscribe link's
    target), else None."""
    return await conn.fetchval(
        "SELECT t.name_uk FROM message_topics t WHERE t.code = $2 "
        "AND EXISTS (SELECT 1 FROM clients WHERE id = $1)",
        client_id,
        topic,
    )
