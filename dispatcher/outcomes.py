"""Outcomes of a batch, written together: events by COPY, holds, batch done, live counters."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from typing import Literal, get_args

import asyncpg
import msgspec
import redis.asyncio as aioredis

from herald import clock
from herald.exports import ExportQuery
from herald.settings import Settings

EVENT_COLUMNS = (
    "message_id",
    "campaign_id",
    "client_id",
    "step",
    "channel",
    "status",
    "reason",
    "provider_id",
)


class Event(msgspec.Struct, frozen=True, array_like=True):
    """One row of message_events (its time is the database's clock at COPY)."""

    message_id: str
    campaign_id: int | None
    client_id: int
    step: int
    channel: str | None
    status: str  # queued held sent delivered read failed skipped converted
    reason: str | None = None
    provider_id: str | None = None


class Hold(msgspec.Struct, frozen=True):
    message_id: str
    campaign_id: int | None
    client_id: int
    step: int
    reason: str  # quiet_hours, air_raid, paused
    region_code: str | None
    release_at: float | None  # Unix time; None until an alert is lifted / a campaign resumed


def stats_key(settings: Settings, campaign_id: int | None) -> str:
    """The live counters of a campaign; of every realtime message (triggers, operator sends) for None."""
    if campaign_id is None:
        return f"{settings.namespace}:realtime:stats"
    return f"{settings.namespace}:campaign:{campaign_id}:stats"


def counter_fields(events: Sequence[Event]) -> Counter[str]:
    """Counter increments: '<status>' and '<status>:<channel>' and, for skips and
    failures, '<status>:reason:<reason>'."""
    counts: Counter[str] = Counter()
    for e in events:
        counts[e.status] += 1
        if e.channel:
            counts[f"{e.status}:{e.channel}"] += 1
        if e.reason and e.status in ("skipped", "failed", "held"):
            counts[f"{e.status}:reason:{e.reason}"] += 1
    return counts


async def already_final(conn: asyncpg.Connection, message_ids: Sequence[str]) -> dict[str, str]:
    """What is already known of these message ids, for a redelivered batch.

    ``sent`` or ``failed``: never hand it over again. ``receipted``: a receipt came but the
    'sent' event is missing (a worker died after the provider accepted it and before its
    outcome was written): record it as sent, never hand it over again. ``skipped``: that
    step was decided; go on to the next.
    """
    # One index probe per id (LATERAL): with tens of millions of events the planner
    # would otherwise pick a parallel scan of the whole table for `= ANY(...)`.
    rows = await conn.fetch(
        """
        SELECT ids.m AS message_id,
               bool_or(e.status IN ('sent', 'failed')) AS hard,
               min(e.status) FILTER (WHERE e.status IN ('sent', 'failed')) AS outcome,
               bool_or(e.status IN ('delivered', 'read')) AS receipted
        FROM unnest($1::text[]) AS ids(m)
        CROSS JOIN LATERAL (
            SELECT status FROM message_events
            WHERE message_id = ids.m
              AND status IN ('sent', 'failed', 'skipped', 'delivered', 'read')) e
        GROUP BY ids.m
        """,
        list(message_ids),
    )
    return {
        r["message_id"]: r["outcome"] if r["hard"] else "receipted" if r["receipted"] else "skipped"
        for r in rows
    }


async def write_events(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    """Append events with COPY (one round trip for the whole batch)."""
    if events:
        await conn.copy_records_to_table(
            "message_events",
            records=[msgspec.structs.astuple(e) for e in events],
            columns=EVENT_COLUMNS,
        )


async def write_holds(conn: asyncpg.Connection, holds: Sequence[Hold]) -> None:
    """Park held messages; holding one already held is a no-op (redelivered batch)."""
    if not holds:
        return
    await conn.execute(
        """
        INSERT INTO held_messages (message_id, campaign_id, client_id, step, reason,
                                   region_code, release_at)
        SELECT m, c, cl, s, r, rg, to_timestamp(ra)
        FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::smallint[], $5::text[],
                    $6::text[], $7::float8[]) AS h(m, c, cl, s, r, rg, ra)
        ON CONFLICT (message_id) DO NOTHING
        """,
        [h.message_id for h in holds],
        [h.campaign_id for h in holds],
        [h.client_id for h in holds],
        [h.step for h in holds],
        [h.reason for h in holds],
        [h.region_code for h in holds],
        [h.release_at for h in holds],
    )


async def count(
    redis: aioredis.Redis, settings: Settings, campaign_id: int | None, events: Sequence[Event]
) -> None:
    """Add a batch's outcomes to the campaign's live counters in one round trip.

    Realtime messages (``campaign_id`` None) count into one set of counters of their own."""
    fields = counter_fields(events)
    if not fields:
        return
    key = stats_key(settings, campaign_id)
    now = clock.time()
    async with redis.pipeline(transaction=False) as pipe:
        for name, amount in fields.items():
            pipe.hincrby(key, name, amount)  # type: ignore[unused-awaitable]  # queued, run by execute()
        pipe.hset(key, "updated_at", f"{now:.3f}")  # type: ignore[unused-awaitable]  # queued
        if campaign_id is not None:
            bucket = int(now // SERIES_STEP) * SERIES_STEP
            series = series_key(settings, campaign_id)
            for status in SERIES_STATUSES:
                if fields.get(status):
                    pipe.hincrby(series, f"{status}:{bucket}", fields[status])  # type: ignore[unused-awaitable]  # queued
            pipe.expire(series, 30 * 86400)  # type: ignore[unused-awaitable]  # queued
        await pipe.execute()


# The throughput over time: per SERIES_STEP seconds, how many messages were sent,
# delivered and failed (one hash per campaign, a field per status and bucket).
SERIES_STEP = 10
SERIES_STATUSES = ("sent", "delivered", "failed")


def series_key(settings: Settings, campaign_id: int) -> str:
    return f"{settings.namespace}:campaign:{campaign_id}:series"


class SeriesPoint(msgspec.Struct, array_like=True):
    """One bucket of the throughput: its start (Unix time) and counts by status."""

    at: int
    sent: int
    delivered: int
    failed: int


async def series(redis: aioredis.Redis, settings: Settings, campaign_id: int) -> list[SeriesPoint]:
    """The campaign's throughput, bucket by bucket, empty buckets in between filled with 0."""
    raw = await redis.hgetall(series_key(settings, campaign_id))
    found: dict[int, dict[str, int]] = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else str(k)
        status, _, at = name.partition(":")
        found.setdefault(int(at), {})[status] = int(v)
    if not found:
        return []
    first, last = min(found), max(found)
    return [
        SeriesPoint(
            at,
            found.get(at, {}).get("sent", 0),
            found.get(at, {}).get("delivered", 0),
            found.get(at, {}).get("failed", 0),
        )
        for at in range(first, last + SERIES_STEP, SERIES_STEP)
    ]


async def live_stats(
    redis: aioredis.Redis, settings: Settings, campaign_id: int | None
) -> dict[str, int | float]:
    """The campaign's live counters as stored (names from counter_fields)."""
    raw = await redis.hgetall(stats_key(settings, campaign_id))
    out: dict[str, int | float] = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else k
        text = v.decode() if isinstance(v, bytes) else v
        out[name] = float(text) if name == "updated_at" else int(text)
    return out


async def live_stats_many(
    redis: aioredis.Redis, settings: Settings, campaign_ids: Sequence[int]
) -> dict[int, dict[str, int | float]]:
    """The live counters of several campaigns in one round trip (as ``live_stats``)."""
    if not campaign_ids:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for campaign_id in campaign_ids:
            pipe.hgetall(stats_key(settings, campaign_id))  # type: ignore[unused-awaitable]  # queued
        found = await pipe.execute()
    out: dict[int, dict[str, int | float]] = {}
    for campaign_id, raw in zip(campaign_ids, found, strict=True):
        one: dict[str, int | float] = {}
        for k, v in raw.items():
            name = k.decode() if isinstance(k, bytes) else k
            text = v.decode() if isinstance(v, bytes) else v
            one[name] = float(text) if name == "updated_at" else int(text)
        out[campaign_id] = one
    return out


class MessageEvent(msgspec.Struct):
    """One recorded step of a message, as the API shows it."""

    message_id: str
    step: int
    channel: str | None
    status: str
    reason: str | None
    provider_id: str | None
    at: dt.datetime


async def recipient_events(
    conn: asyncpg.Connection, campaign_id: int, client_id: int
) -> list[MessageEvent]:
    """Everything recorded about one client's messages in a campaign, oldest first."""
    rows = await conn.fetch(
        "SELECT message_id, step, channel, status, reason, provider_id, at FROM message_events "
        "WHERE client_id = $1 AND campaign_id = $2 ORDER BY at, step",
        client_id,
        campaign_id,
    )
    return [MessageEvent(**dict(r)) for r in rows]


RecipientStatus = Literal["held", "sent", "delivered", "read", "failed", "skipped", "converted"]
RECIPIENT_STATUSES: tuple[RecipientStatus, ...] = get_args(RecipientStatus)


class Recipient(msgspec.Struct):
    """A recipient who reached a status in a campaign: the last such event."""

    client_id: int
    step: int
    channel: str | None
    reason: str | None
    at: dt.datetime


_RECIPIENTS = """
SELECT DISTINCT ON (client_id) client_id, step, channel, reason, at FROM message_events
WHERE campaign_id = $1 AND status = $2 AND client_id > $3
ORDER BY client_id, at DESC
"""


async def recipients(
    conn: asyncpg.Connection, campaign_id: int, status: str, *, after: int, limit: int
) -> list[Recipient]:
    """Recipients of the campaign with an event of ``status``, by Client_ID after ``after``."""
    rows = await conn.fetch(_RECIPIENTS + " LIMIT $4", campaign_id, status, after, limit)
    return [Recipient(**dict(r)) for r in rows]


RECIPIENT_COLUMNS = ("client_id", "status", "step", "channel", "reason", "at")


def recipients_export_query(campaign_id: int, status: RecipientStatus | None = None) -> ExportQuery:
    """A campaign's recipients (its frozen audience) with where each stands: the last event
    of its messages (sent, delivered, read, failed, skipped, converted...), ``held`` while
    a message is parked, ``pending`` before any; ascending client id.

    With ``status``: the rows of the page's list of that status (``recipients``), every
    one: the recipients with an event of the status, and that event."""
    if status is not None:
        return ExportQuery(
            """
            SELECT DISTINCT ON (client_id) client_id, status, step, channel, reason,
                   to_char(at AT TIME ZONE herald_business_tz(), 'YYYY-MM-DD HH24:MI:SS') AS at
            FROM message_events WHERE campaign_id = $1 AND status = $2
            ORDER BY client_id, at DESC
            """,
            (campaign_id, status),
            RECIPIENT_COLUMNS,
            title=f"campaign {campaign_id} {status}",
        )
    return ExportQuery(
        """
        SELECT r.client_id,
               CASE WHEN h.reason IS NOT NULL THEN 'held' ELSE coalesce(e.status, 'pending') END
                   AS status,
               e.step, e.channel, coalesce(h.reason, e.reason) AS reason,
               to_char(e.at AT TIME ZONE herald_business_tz(), 'YYYY-MM-DD HH24:MI:SS') AS at
        FROM (SELECT DISTINCT unnest(client_ids) AS client_id FROM campaign_batches
              WHERE campaign_id = $1 AND step = 0) r
        LEFT JOIN LATERAL (
            SELECT me.step, me.channel, me.status, me.reason, me.at FROM message_events me
            WHERE me.client_id = r.client_id AND me.campaign_id = $1
            ORDER BY me.at DESC, me.step DESC LIMIT 1) e ON true
        LEFT JOIN (SELECT DISTINCT ON (client_id) client_id, reason FROM held_messages
                   WHERE campaign_id = $1 ORDER BY client_id, held_at) h
               ON h.client_id = r.client_id
        ORDER BY r.client_id
        """,
        (campaign_id,),
        RECIPIENT_COLUMNS,
        title=f"campaign {campaign_id}",
    )


async def record_conversions(
    conn: asyncpg.Connection, campaign_id: int, client_ids: list[int]
) -> list[int]:
    """Record a ``converted`` event for each recipient the campaign sent a message to and
    that has none yet; returns the clients newly recorded."""
    rows = await conn.fetch(
        """
        INSERT INTO message_events (message_id, campaign_id, client_id, step, status)
        SELECT 'c' || $1::bigint || ':' || c || ':conversion', $1::bigint, c, 0, 'converted'
        FROM (SELECT DISTINCT unnest($2::bigint[]) AS c) ids
        WHERE EXISTS (SELECT 1 FROM message_events e WHERE e.client_id = ids.c
                      AND e.campaign_id = $1::bigint AND e.status = 'sent')
          AND NOT EXISTS (SELECT 1 FROM message_events e WHERE e.message_id =
                          'c' || $1::bigint || ':' || ids.c || ':conversion')
        RETURNING client_id
        """,
        campaign_id,
        client_ids,
    )
    return [r[0] for r in rows]
