"""Starting due campaigns, republishing stalled batches, and noticing completion.

Run periodically by the scheduler (one per installation, under an advisory lock); an
operator's pause, resume and stop are ``dispatcher.scheduler.control``. Every status
change is a move of the state machine in ``dispatcher.campaigns.store``; every step is
idempotent: running it twice, or on two hosts, publishes nothing that the workers would
act on twice.
"""

from __future__ import annotations

import logging

import aio_pika
import asyncpg
import redis.asyncio as aioredis

from dispatcher import deadlines, outcomes
from dispatcher.campaigns import planner
from dispatcher.campaigns import store as campaigns
from dispatcher.campaigns.control import publish_state
from dispatcher.campaigns.store import audience_decoder
from herald.settings import Settings

log = logging.getLogger("herald.launcher")


async def launch_due(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    channel: aio_pika.abc.AbstractChannel,
    settings: Settings,
) -> list[int]:
    """Snapshot and start every campaign whose time has come; returns their ids."""
    started: list[int] = []
    while True:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT id, audience::text AS audience FROM campaigns "
                "WHERE status = 'scheduled' AND scheduled_at <= herald_now() "
                "ORDER BY scheduled_at LIMIT 1 FOR UPDATE SKIP LOCKED"
            )
            if row is None:
                return started
            campaign_id = row["id"]
            # The snapshot and the switch to running commit together: a crash leaves the
            # campaign scheduled, and the next pass snapshots it again from scratch.
            recipients, batches = await planner.snapshot(
                conn,
                campaign_id,
                audience_decoder.decode(row["audience"]),
                settings.shards,
                settings.dispatch_batch_size,
            )
            await campaigns.start(
                conn,
                campaign_id,
                shards=settings.shards,
                audience_size=recipients,
                batches_total=batches,
            )
        await redis.hset(
            outcomes.stats_key(settings, campaign_id),
            mapping={"audience": recipients, "batches_total": batches},
        )
        await publish_state(redis, settings, campaign_id, "running")
        async with pool.acquire() as conn:
            await planner.publish_pending_batches(conn, channel, settings, campaign_id)
        log.info(
            "campaign %d launched: %d recipients in %d batches", campaign_id, recipients, batches
        )
        started.append(campaign_id)


async def republish_stalled(
    pool: asyncpg.Pool,
    channel: aio_pika.abc.AbstractChannel,
    settings: Settings,
    *,
    idle_seconds: float,
) -> list[int]:
    """Republish pending batches of running campaigns that made no progress for a while.

    Covers a crash between snapshot and publish, and a broker that lost messages: the
    workers skip what is already done, so a republished batch costs only its lookup.
    """
    rows = await pool.fetch(
        """
        SELECT c.id FROM campaigns c
        WHERE c.status = 'running'
          AND EXISTS (SELECT 1 FROM campaign_batches b WHERE b.campaign_id = c.id AND NOT b.done)
          AND greatest((SELECT max(greatest(b.done_at, b.created_at)) FROM campaign_batches b
                        WHERE b.campaign_id = c.id), c.launched_at)
              < herald_now() - make_interval(secs => $1)
        """,
        idle_seconds,
    )
    for row in rows:
        async with pool.acquire() as conn:
            count = await planner.publish_pending_batches(conn, channel, settings, row["id"])
        log.warning(
            "campaign %d stalled for %.0f s: republished %d batches", row["id"], idle_seconds, count
        )
    return [r["id"] for r in rows]


async def complete_finished(
    pool: asyncpg.Pool, redis: aioredis.Redis, settings: Settings
) -> list[int]:
    """Mark running campaigns completed once nothing is pending, held or awaiting a receipt."""
    rows = await pool.fetch(
        """
        SELECT c.id FROM campaigns c
        WHERE c.status = 'running'
          AND NOT EXISTS (SELECT 1 FROM campaign_batches b WHERE b.campaign_id = c.id AND NOT b.done)
          AND NOT EXISTS (SELECT 1 FROM held_messages h WHERE h.campaign_id = c.id)
        """
    )
    done = []
    for row in rows:
        if await deadlines.awaiting(redis, settings, row["id"]):
            continue
        async with pool.acquire() as conn:
            completed = await campaigns.complete(conn, row["id"])
        if completed:
            await publish_state(redis, settings, row["id"], "completed")
            done.append(row["id"])
    return done
