"""A client's consents: explicit opt-ins and opt-outs per channel and topic, and the defaults.

Without an explicit choice a topic's default applies: allowed unless the topic requires
an opt-in (marketing). Choices are read when each batch is sent, so an opt-out recorded
here is honoured by every batch not sent yet. A change of choice is journalled as entity
``consent`` with id ``<client_id>:<channel>:<topic>``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor
from admin_api.typedefs import DB
from crm.errors import InvalidInput, NotFound
from rules.consent import Source, record_consent

endpoints = EndpointTable("consents")

# The channels a consent may be about (the consents.channel CHECK): a client may opt out
# of channels Herald does not send on itself yet (push, telegram, voice).
ConsentChannel = Literal["sms", "viber", "email", "push", "telegram", "voice"]


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


class ConsentChange(msgspec.Struct, forbid_unknown_fields=True):
    """A client's choice for one topic on one channel, and where it came from."""

    channel: ConsentChannel
    topic: Annotated[str, msgspec.Meta(min_length=1, max_length=41)]
    opted_in: bool
    source: Source


class ConsentRecorded(msgspec.Struct):
    client_id: int
    channel: str
    topic: str
    opted_in: bool
    source: str
    changed_at: dt.datetime
    # The explicit choice before this one; null when the topic default applied.
    previous: bool | None


_CLIENT_AND_TOPICS = """
SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1) AS known,
       coalesce((SELECT array_agg(code ORDER BY code) FROM message_topics), '{}') AS topics
"""


@endpoints.get("/api/v1/clients/{client_id}/consents", permission="consents.read",
               response=ClientConsents, errors=(404,))
async def client_consents(request: web.Request) -> ClientConsents:
    """The client's explicit choices, and each topic's default for channels without one."""
    client_id = path_int(request, "client_id")
    async with request.app[DB].acquire() as conn:
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)",
                                   client_id):
            raise NotFound(f"no client {client_id}")
        rows = await conn.fetch(
            "SELECT channel, topic, opted_in, source, changed_at FROM consents "
            "WHERE client_id = $1 ORDER BY topic, channel", client_id)
        topics = await conn.fetch(
            "SELECT code, name_uk, name_en, requires_opt_in FROM message_topics ORDER BY code")
    return ClientConsents(
        client_id, [ConsentRecord(**dict(r)) for r in rows],
        [TopicDefault(**dict(t), allowed_by_default=not t["requires_opt_in"]) for t in topics])


@endpoints.put("/api/v1/clients/{client_id}/consents", permission="consents.manage",
               body=ConsentChange, response=ConsentRecorded, errors=(400, 404))
async def set_client_consent(request: web.Request, body: ConsentChange) -> ConsentRecorded:
    """Record a client's opt-in or opt-out of a topic on a channel (journalled)."""
    client_id = path_int(request, "client_id")
    async with request.app[DB].acquire() as conn:
        found = await conn.fetchrow(_CLIENT_AND_TOPICS, client_id)
        if not found["known"]:
            raise NotFound(f"no client {client_id}")
        if body.topic not in found["topics"]:
            raise InvalidInput("topic", f"unknown topic {body.topic!r}; "
                                        f"one of {', '.join(found['topics'])}")
        previous = await record_consent(conn, actor(request), client_id=client_id,
                                        channel=body.channel, topic=body.topic,
                                        opted_in=body.opted_in, source=body.source)
        changed_at = await conn.fetchval(
            "SELECT changed_at FROM consents WHERE client_id = $1 AND channel = $2 AND topic = $3",
            client_id, body.channel, body.topic)
    return ConsentRecorded(client_id, body.channel, body.topic, body.opted_in, body.source,
                           changed_at, previous)
