"""Campaign state as the workers see it: PostgreSQL is the truth, Redis the fast mirror.

Workers read the state once per batch and once per provider call group, so a pause or a
stop reaches every worker on every host within one batch's time (well under 2 s); no
broadcast is needed, and a worker that missed a message cannot miss a state.
"""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis

from herald.settings import Settings

SENDING_STATES = frozenset({"running"})


def state_key(settings: Settings, campaign_id: int) -> str:
    return f"{settings.namespace}:campaign:{campaign_id}:state"


async def publish_state(
    redis: aioredis.Redis, settings: Settings, campaign_id: int, status: str
) -> None:
    """Mirror a campaign's status for the workers (kept 30 days after the last change)."""
    await redis.set(state_key(settings, campaign_id), status, ex=30 * 86400)


async def current_state(
    redis: aioredis.Redis, pool: asyncpg.Pool, settings: Settings, campaign_id: int
) -> str | None:
    """The campaign's status: from Redis, or from PostgreSQL (re-mirrored) when Redis lost it."""
    value = await redis.get(state_key(settings, campaign_id))
    if value is not None:
        return value.decode() if isinstance(value, bytes) else str(value)
    status: str | None = await pool.fetchval(
        "SELECT status FROM campaigns WHERE id = $1", campaign_id
    )
    if status is not None:
        await publish_state(redis, settings, campaign_id, status)
    return status
