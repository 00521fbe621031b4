"""Which sent messages wait for a delivery receipt, and until when (Redis sorted sets).

The receipt clock of a message starts before it is handed to a provider (the send path),
stops when its receipt comes or its step failed, and its expiry fails the step
(``dispatcher.receipts``). Bottom of ``dispatcher``: imports the kernel and
``dispatcher.envelopes`` only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import redis.asyncio as aioredis

from dispatcher.envelopes import is_realtime_id, parse_message_id, parse_realtime_id
from herald import clock
from herald.settings import Settings


def deadlines_key(settings: Settings, campaign_id: int) -> str:
    return f"{settings.namespace}:campaign:{campaign_id}:receipt_deadlines"


def realtime_deadlines_key(settings: Settings) -> str:
    return f"{settings.namespace}:realtime:receipt_deadlines"


async def await_realtime_receipts(
    redis: aioredis.Redis, settings: Settings, message_ids: Sequence[str], timeout_seconds: float
) -> None:
    """Start the receipt clock of realtime messages about to be handed to a provider."""
    if message_ids:
        deadline = clock.time() + timeout_seconds
        await redis.zadd(realtime_deadlines_key(settings), {m: deadline for m in message_ids})


async def await_receipts(
    redis: aioredis.Redis,
    settings: Settings,
    campaign_id: int,
    message_ids: Sequence[str],
    timeout_seconds: float,
) -> None:
    """Start the receipt clock of messages about to be handed to a provider."""
    if message_ids:
        deadline = clock.time() + timeout_seconds
        await redis.zadd(deadlines_key(settings, campaign_id), {m: deadline for m in message_ids})


async def awaiting(redis: aioredis.Redis, settings: Settings, campaign_id: int) -> int:
    """How many of the campaign's messages still wait for a receipt."""
    return int(await redis.zcard(deadlines_key(settings, campaign_id)))


def _by_key(settings: Settings, message_ids: Sequence[str]) -> dict[str, list[str]]:
    """Message ids grouped by the sorted set their receipt clock runs in."""
    groups: dict[str, list[str]] = defaultdict(list)
    for m in message_ids:
        try:
            if is_realtime_id(m):
                parse_realtime_id(m)
                groups[realtime_deadlines_key(settings)].append(m)
            else:
                groups[deadlines_key(settings, parse_message_id(m)[0])].append(m)
        except ValueError:
            continue
    return groups


async def still_waiting(
    redis: aioredis.Redis, settings: Settings, message_ids: Sequence[str]
) -> set[str]:
    """The ids among these still waiting for a receipt."""
    found: set[str] = set()
    for key, ids in _by_key(settings, message_ids).items():
        scores = await redis.zmscore(key, ids)
        found.update(m for m, score in zip(ids, scores, strict=True) if score is not None)
    return found


async def stop_waiting(
    redis: aioredis.Redis, settings: Settings, message_ids: Sequence[str]
) -> None:
    """Stop the receipt clock of these messages (received, timed out, or never accepted)."""
    for key, ids in _by_key(settings, message_ids).items():
        await redis.zrem(key, *ids)
