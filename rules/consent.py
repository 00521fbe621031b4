"""Consent (IC-07): may this client receive this topic on this channel?

An explicit row in ``consents`` (opt-in or opt-out, per client, channel and topic) wins;
without one the topic's default applies: allowed unless ``message_topics.requires_opt_in``.
Consents are read when the batch is sent, not when the campaign is planned, so an
opt-out that arrives mid-campaign is honoured for every batch not yet sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import asyncpg
import msgspec

from crm import audit
from crm.errors import InvalidInput
from rules.decision import NO_CONSENT, Skip

Source = Literal["cabinet", "app", "chatbot", "operator", "import", "sms_stop",
                 "email_unsubscribe", "contract"]
SOURCES: frozenset[str] = frozenset(Source.__args__)  # type: ignore[attr-defined]


class Consents(msgspec.Struct, frozen=True):
    """The explicit choices of a batch of clients for one topic, and the topic's default."""

    topic: str
    requires_opt_in: bool
    # (client_id, channel) -> opted_in, for explicit rows only.
    explicit: dict[tuple[int, str], bool]


_LOAD = """
SELECT t.requires_opt_in, c.client_id, c.channel, c.opted_in
FROM message_topics t
LEFT JOIN consents c
       ON c.topic = t.code AND c.client_id = ANY($1::bigint[]) AND c.channel = ANY($2::text[])
WHERE t.code = $3
"""


async def load_consents(conn: asyncpg.Connection, client_ids: Sequence[int],
                        channels: Sequence[str], topic: str) -> Consents:
    """The consents of ``client_ids`` on ``channels`` for ``topic``, in one query."""
    rows = await conn.fetch(_LOAD, list(client_ids), list(channels), topic)
    if not rows:
        raise InvalidInput("topic", f"unknown message topic {topic!r}")
    explicit = {(r["client_id"], r["channel"]): r["opted_in"]
                for r in rows if r["client_id"] is not None}
    return Consents(topic, rows[0]["requires_opt_in"], explicit)


def allowed(consents: Consents, client_id: int, channel: str) -> bool:
    """Whether the client may receive the topic on the channel."""
    choice = consents.explicit.get((client_id, channel))
    return (not consents.requires_opt_in) if choice is None else choice


def check(consents: Consents, client_ids: Iterable[int], channel: str) -> dict[int, Skip]:
    """The clients of the batch without consent on ``channel``: skipped with ``no_consent``."""
    if not consents.requires_opt_in and not consents.explicit:
        return {}
    return {c: NO_CONSENT for c in client_ids if not allowed(consents, c, channel)}


_UPSERT = """
WITH old AS (
    SELECT opted_in, source FROM consents
    WHERE client_id = $1 AND channel = $2 AND topic = $3
    FOR UPDATE
), new AS (
    INSERT INTO consents (client_id, channel, topic, opted_in, source, changed_at)
    VALUES ($1, $2, $3, $4, $5, now())
    ON CONFLICT (client_id, channel, topic)
    DO UPDATE SET opted_in = EXCLUDED.opted_in, source = EXCLUDED.source, changed_at = now()
    RETURNING 1
)
SELECT (SELECT opted_in FROM old) AS old_opted_in, (SELECT count(*) FROM new) AS written
"""

_CONSTRAINT_FIELDS = {
    "consents_channel_check": ("channel", "unknown channel"),
    "consents_source_check": ("source", "unknown consent source"),
    "consents_client_id_fkey": ("client_id", "no such client"),
    "consents_topic_fkey": ("topic", "unknown message topic"),
}


async def record_consent(conn: asyncpg.Connection, actor: audit.Actor, *, client_id: int,
                         channel: str, topic: str, opted_in: bool, source: str) -> bool | None:
    """Record a client's choice (journalled in the same transaction); return the previous one."""
    if source not in SOURCES:
        raise InvalidInput("source", f"unknown consent source {source!r}; "
                                     f"one of {', '.join(sorted(SOURCES))}")
    try:
        async with conn.transaction():
            row = await conn.fetchrow(_UPSERT, client_id, channel, topic, opted_in, source)
            old = row["old_opted_in"]
            if old != opted_in:
                await audit.record(conn, actor, [audit.Change(
                    "consent", f"{client_id}:{channel}:{topic}",
                    "create" if old is None else "update", "opted_in", old, opted_in)])
    except (asyncpg.CheckViolationError, asyncpg.ForeignKeyViolationError) as exc:
        field, message = _CONSTRAINT_FIELDS.get(exc.constraint_name or "", ("consent", str(exc)))
        raise InvalidInput(field, message) from None
    return old
