"""Releasing held messages: quiet hours over, an alert lifted, a campaign resumed, a rate
limit's or an unreachable provider's wait over.

Held rows are deleted and replaced by pending batches of their recipients in one
transaction, then those batches are published: a crash before the commit releases
nothing, a crash after it leaves pending batches that the stalled-work sweep publishes.
A worker that re-holds a released message while the transaction is open waits for it,
so a new hold is never deleted by mistake. A held realtime message (trigger, operator
send; no campaign) is reopened at its held step and published to the realtime queue.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence

import aio_pika
import asyncpg
import msgspec

from dispatcher import topology
from dispatcher.campaigns import planner
from dispatcher.envelopes import Envelope, parse_realtime_id
from dispatcher.realtime import messages as realtime
from herald.settings import Settings

_CONDITIONS = {
    "due": "reason IN ('quiet_hours', 'rate_limit', 'provider') AND release_at <= herald_now()",
    "lifted": "reason = 'air_raid' AND NOT (region_code = ANY($2::text[]))",
    "resumed": "reason = 'paused' AND campaign_id = $2",
}


async def release(
    pool: asyncpg.Pool,
    channel: aio_pika.abc.AbstractChannel,
    settings: Settings,
    kind: str,
    argument: object = None,
    *,
    limit: int = 5000,
) -> int:
    """Release up to ``limit`` held messages of one kind; returns how many.

    kind: ``due`` (release time passed), ``lifted`` (argument: the regions still under
    alert), ``resumed`` (argument: the campaign id).
    """
    condition = _CONDITIONS[kind]
    args: list[object] = [limit] if argument is None else [limit, argument]
    async with pool.acquire() as conn:
        async with conn.transaction():
            rows = await conn.fetch(
                f"""
                DELETE FROM held_messages WHERE message_id IN (
                    SELECT message_id FROM held_messages WHERE {condition}
                    LIMIT $1 FOR UPDATE SKIP LOCKED)
                RETURNING message_id, campaign_id, client_id, step
                """,
                *args,
            )
            work = await _record(conn, settings, rows)
            instant = await realtime.reopen(conn, _realtime(rows))
        await topology.publish(channel, settings, work)
        await realtime.publish(channel, settings, instant)
    return len(rows)


async def release_all(
    pool: asyncpg.Pool,
    channel: aio_pika.abc.AbstractChannel,
    settings: Settings,
    kind: str,
    argument: object = None,
) -> int:
    """Release in rounds until nothing of that kind is left."""
    total = 0
    while released := await release(pool, channel, settings, kind, argument):
        total += released
    return total


def _realtime(rows: Sequence[asyncpg.Record]) -> list[tuple[int, int]]:
    found = []
    for row in rows:
        if row["campaign_id"] is None:
            try:
                unit, _, step = parse_realtime_id(row["message_id"])
            except ValueError:
                continue
            found.append((unit, step))
    return found


async def _record(
    conn: asyncpg.Connection, settings: Settings, rows: Sequence[asyncpg.Record]
) -> list[tuple[int, Envelope]]:
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for row in rows:
        if row["campaign_id"] is not None:
            groups[(row["campaign_id"], row["step"])].append(row["client_id"])
    work: list[tuple[int, Envelope]] = []
    for (campaign_id, step), client_ids in groups.items():
        work += await planner.record_steps(conn, settings, campaign_id, step, client_ids)
    return work


async def held_by_reason(conn: asyncpg.Connection, campaign_id: int) -> dict[str, int]:
    """How many of the campaign's messages are held at this moment, by reason."""
    rows = await conn.fetch(
        "SELECT reason, count(*) AS n FROM held_messages WHERE campaign_id = $1 GROUP BY reason",
        campaign_id,
    )
    return {r["reason"]: r["n"] for r in rows}


async def is_held(conn: asyncpg.Connection, campaign_id: int, client_id: int) -> bool:
    """Whether a message of the campaign to this client is held at this moment."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM held_messages WHERE campaign_id = $1 AND client_id = $2)",
            campaign_id,
            client_id,
        )
    )


class HeldCount(msgspec.Struct, frozen=True):
    """Messages held now for one campaign (null: operator and trigger sends), reason and
    region (known for air-raid holds), and the earliest planned release (quiet hours)."""

    campaign_id: int | None
    campaign_name: str | None
    reason: str
    region_code: str | None
    held: int
    next_release_at: dt.datetime | None


async def held_summary(conn: asyncpg.Connection, *, limit: int = 200) -> list[HeldCount]:
    """Held messages counted per campaign, reason and region, the largest groups first."""
    rows = await conn.fetch(
        "SELECT h.campaign_id, c.name AS campaign_name, h.reason, h.region_code, "
        "count(*) AS held, min(h.release_at) AS next_release_at "
        "FROM held_messages h LEFT JOIN campaigns c ON c.id = h.campaign_id "
        "GROUP BY h.campaign_id, c.name, h.reason, h.region_code "
        "ORDER BY held DESC, h.campaign_id NULLS LAST LIMIT $1",
        limit,
    )
    return [HeldCount(**dict(r)) for r in rows]
