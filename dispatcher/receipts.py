"""Delivery receipts and receipt timeouts: record them, and move failed messages down the chain.

A sent message waits for its receipt in one Redis sorted set (member: message id, score:
deadline). A receipt or a timeout acts on a message only while it is still waiting, in
this order: publish the next chain step (for a failure), write the events, and only
then remove it from the set. A crash in between repeats the work on the provider's
retry or the next sweep, and a repeated step is harmless (its message id is already
final). The one race left: a receipt arriving in the very moment its timeout is being
handled can let both act, sending the next channel although the first was delivered.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

import aio_pika
import asyncpg
import redis.asyncio as aioredis

from dispatcher import outcomes, planner
from dispatcher.envelopes import parse_message_id
from dispatcher.outcomes import Event
from herald.settings import Settings
from providers.base import Receipt, ReceiptStatus


def deadlines_key(settings: Settings) -> str:
    return f"{settings.namespace}:receipt_deadlines"


async def await_receipts(redis: aioredis.Redis, settings: Settings,
                         message_ids: Sequence[str], timeout_seconds: float) -> None:
    """Start the receipt clock of messages just handed to a provider."""
    if message_ids:
        deadline = time.time() + timeout_seconds
        await redis.zadd(deadlines_key(settings), {m: deadline for m in message_ids})


async def _waiting(redis: aioredis.Redis, settings: Settings, message_ids: Sequence[str]) -> set[str]:
    """The ids among these still waiting for a receipt (one round trip)."""
    if not message_ids:
        return set()
    scores = await redis.zmscore(deadlines_key(settings), list(message_ids))
    return {m for m, score in zip(message_ids, scores) if score is not None}


async def _stop(redis: aioredis.Redis, settings: Settings, message_ids: Sequence[str]) -> dict[int, int]:
    """Remove ids from the waiting set; per campaign, how many this call removed."""
    if not message_ids:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for m in message_ids:
            pipe.zrem(deadlines_key(settings), m)
        removed = await pipe.execute()
    per_campaign: dict[int, int] = defaultdict(int)
    for m, r in zip(message_ids, removed):
        if r:
            per_campaign[parse_message_id(m)[0]] += 1
    return per_campaign


async def stop_waiting(redis: aioredis.Redis, settings: Settings, campaign_id: int,
                       message_ids: Sequence[str]) -> None:
    """Messages the provider did not accept: no receipt will come."""
    removed = await _stop(redis, settings, message_ids)
    if removed:
        await outcomes.count(redis, settings, campaign_id, (),
                             awaiting_receipts=-removed.get(campaign_id, 0))


async def _release(redis: aioredis.Redis, settings: Settings, message_ids: Sequence[str]) -> None:
    for campaign_id, n in (await _stop(redis, settings, message_ids)).items():
        await outcomes.count(redis, settings, campaign_id, (), awaiting_receipts=-n)


async def _chain_lengths(conn: asyncpg.Connection, campaign_ids: set[int]) -> dict[int, tuple[int, str]]:
    rows = await conn.fetch("SELECT id, cardinality(channel_chain) AS n, status FROM campaigns "
                            "WHERE id = ANY($1::bigint[])", list(campaign_ids))
    return {r["id"]: (r["n"], r["status"]) for r in rows}


async def _advance(conn: asyncpg.Connection, channel: aio_pika.abc.AbstractChannel,
                   settings: Settings, failed: Sequence[tuple[int, int, int]]) -> int:
    """Publish the next chain step for (campaign, client, step) that failed; returns how many."""
    if not failed:
        return 0
    chains = await _chain_lengths(conn, {c for c, _, _ in failed})
    next_steps: dict[tuple[int, int], list[int]] = defaultdict(list)
    for campaign_id, client_id, step in failed:
        length, status = chains.get(campaign_id, (0, "stopped"))
        if step + 1 < length and status not in ("stopped",):
            next_steps[(campaign_id, step + 1)].append(client_id)
    for (campaign_id, step), client_ids in next_steps.items():
        await planner.publish_steps(channel, settings, campaign_id, step, client_ids)
    return sum(len(v) for v in next_steps.values())


async def apply_receipts(pool: asyncpg.Pool, redis: aioredis.Redis,
                         amqp_channel: aio_pika.abc.AbstractChannel, settings: Settings,
                         channel_name: str, receipts: Sequence[Receipt]) -> int:
    """Record a provider's batch of receipts; failed deliveries fall back. Returns how many applied."""
    parsed = []
    for receipt in receipts:
        try:
            parsed.append((receipt, *parse_message_id(receipt.message_id)))
        except ValueError:
            continue  # not a campaign message (triggers and operator sends come later)
    if not parsed:
        return 0
    final = [p for p in parsed if p[0].status in (ReceiptStatus.DELIVERED, ReceiptStatus.FAILED)]
    waiting = await _waiting(redis, settings, [p[0].message_id for p in final])
    events = [Event(r.message_id, campaign_id, client_id, step, channel_name, r.status.value,
                    r.error if r.status is ReceiptStatus.FAILED else None, r.provider_id)
              for r, campaign_id, client_id, step in parsed]
    async with pool.acquire() as conn:
        await _advance(conn, amqp_channel, settings,
                       [(c, cl, s) for r, c, cl, s in parsed
                        if r.status is ReceiptStatus.FAILED and r.message_id in waiting])
        await outcomes.write_events(conn, events)
    await _count_by_campaign(redis, settings, events)
    await _release(redis, settings, sorted(waiting))
    return len(events)


async def expire_deadlines(pool: asyncpg.Pool, redis: aioredis.Redis,
                           amqp_channel: aio_pika.abc.AbstractChannel, settings: Settings,
                           *, limit: int = 5000) -> int:
    """Fail messages whose receipt did not come in time and move them down the chain."""
    due = await redis.zrangebyscore(deadlines_key(settings), "-inf", time.time(), start=0, num=limit)
    ids = [m.decode() if isinstance(m, bytes) else m for m in due]
    expired = []
    for m in ids:
        try:
            expired.append((m, *parse_message_id(m)))
        except ValueError:
            continue
    if not ids:
        return 0
    events = [Event(m, c, cl, s, None, "failed", "receipt_timeout") for m, c, cl, s in expired]
    async with pool.acquire() as conn:
        await _advance(conn, amqp_channel, settings, [(c, cl, s) for _, c, cl, s in expired])
        await outcomes.write_events(conn, events)
    await _count_by_campaign(redis, settings, events)
    await _release(redis, settings, ids)
    return len(events)


async def _count_by_campaign(redis: aioredis.Redis, settings: Settings,
                             events: Sequence[Event]) -> None:
    by_campaign: dict[int, list[Event]] = defaultdict(list)
    for event in events:
        by_campaign[event.campaign_id or 0].append(event)
    for campaign_id, campaign_events in by_campaign.items():
        await outcomes.count(redis, settings, campaign_id, campaign_events)
