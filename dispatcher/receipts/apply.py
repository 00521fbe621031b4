"""Delivery receipts and receipt timeouts: record them, and move failed messages down the chain.

A sent message waits for its receipt in its campaign's Redis sorted set (member: message id,
score: deadline); the set's size is the number of messages awaiting a receipt, exact even
after crashes (a counter would count a crashed attempt's messages twice). A receipt or a
timeout acts on a message only while it is still waiting, in this order: publish the next
chain step (for a failure), write the events, and only then remove it from the set. A crash
in between repeats the work on the provider's retry or the next sweep, and a repeated step
is harmless (its message id is already final). The one race left: a receipt arriving in the
very moment its timeout is being handled can let both act, sending the next channel although
the first was delivered.

Realtime messages (triggers, operator sends; ids 't...'/'o...') wait in one set of
their own; a failure reopens their realtime_messages row at the next step.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import aio_pika
import asyncpg
import redis.asyncio as aioredis

from dispatcher import outcomes, topology
from dispatcher.campaigns import planner
from dispatcher.deadlines import deadlines_key, realtime_deadlines_key, still_waiting, stop_waiting
from dispatcher.envelopes import is_realtime_id, parse_message_id, parse_realtime_id
from dispatcher.outcomes import Event
from dispatcher.realtime import messages as realtime
from herald import clock
from herald.settings import Settings
from providers.base import Receipt, ReceiptStatus
from rules import fallback


async def _chains(
    conn: asyncpg.Connection, campaign_ids: set[int]
) -> dict[int, tuple[fallback.Chain, str]]:
    rows = await conn.fetch(
        "SELECT id, channel_chain, receipt_timeout_seconds, status "
        "FROM campaigns WHERE id = ANY($1::bigint[])",
        list(campaign_ids),
    )
    return {
        r["id"]: (fallback.chain_of(r["channel_chain"], r["receipt_timeout_seconds"]), r["status"])
        for r in rows
    }


async def _advance(
    conn: asyncpg.Connection,
    channel: aio_pika.abc.AbstractChannel,
    settings: Settings,
    failed: Sequence[tuple[int, int, int]],
    event: Callable[[int], fallback.Event],
) -> int:
    """Publish the next chain step for (campaign, client, step) that failed with ``event``
    (the fallback state machine decides the step); returns how many."""
    if not failed:
        return 0
    chains = await _chains(conn, {c for c, _, _ in failed})
    next_steps: dict[tuple[int, int], list[int]] = defaultdict(list)
    for campaign_id, client_id, step in failed:
        found = chains.get(campaign_id)
        if found is None or found[1] == "stopped" or not 0 <= step < len(found[0].steps):
            continue
        following = fallback.next_step(found[0], step, event(step))
        if following is not None:
            next_steps[(campaign_id, following)].append(client_id)
    for (campaign_id, step), client_ids in next_steps.items():
        work = await planner.record_steps(conn, settings, campaign_id, step, client_ids)
        await topology.publish(channel, settings, work)
    return sum(len(v) for v in next_steps.values())


async def apply_receipts(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    amqp_channel: aio_pika.abc.AbstractChannel,
    settings: Settings,
    channel_name: str,
    receipts: Sequence[Receipt],
) -> int:
    """Record a provider's batch of receipts; failed deliveries fall back. Returns how many applied."""
    # (receipt, campaign id or None, realtime id or None, client, step)
    parsed: list[tuple[Receipt, int | None, int | None, int, int]] = []
    for receipt in receipts:
        try:
            if is_realtime_id(receipt.message_id):
                unit, client, step = parse_realtime_id(receipt.message_id)
                parsed.append((receipt, None, unit, client, step))
            else:
                campaign, client, step = parse_message_id(receipt.message_id)
                parsed.append((receipt, campaign, None, client, step))
        except ValueError:
            continue  # not a message id of ours
    if not parsed:
        return 0
    final = [p for p in parsed if p[0].status in (ReceiptStatus.DELIVERED, ReceiptStatus.FAILED)]
    waiting = await still_waiting(redis, settings, [p[0].message_id for p in final])
    events = [
        Event(
            r.message_id,
            campaign_id,
            client_id,
            step,
            channel_name,
            r.status.value,
            r.error if r.status is ReceiptStatus.FAILED else None,
            r.provider_id,
        )
        for r, campaign_id, _, client_id, step in parsed
    ]
    failed = [
        p for p in parsed if p[0].status is ReceiptStatus.FAILED and p[0].message_id in waiting
    ]
    async with pool.acquire() as conn:
        # A failed delivery receipt: the provider gave up on the message for good.
        await _advance(
            conn,
            amqp_channel,
            settings,
            [(c, cl, s) for _, c, u, cl, s in failed if c is not None],
            fallback.PermanentFailure,
        )
        await realtime.advance(
            conn,
            amqp_channel,
            settings,
            [(u, s) for _, c, u, _, s in failed if u is not None],
            fallback.PermanentFailure,
        )
        await outcomes.write_events(conn, events)
    await _count_by_campaign(redis, settings, events)
    await stop_waiting(redis, settings, sorted(waiting))
    return len(events)


async def expire_deadlines(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    amqp_channel: aio_pika.abc.AbstractChannel,
    settings: Settings,
    *,
    limit: int = 5000,
) -> int:
    """Fail messages whose receipt did not come in time and move them down the chain."""
    campaign_ids = [
        r[0]
        for r in await pool.fetch(
            "SELECT id FROM campaigns WHERE status IN ('running', 'paused', 'stopped') "
            "AND coalesce(finished_at, herald_now()) > herald_now() - interval '7 days'"
        )
    ]
    total = 0
    for campaign_id in campaign_ids:
        due = await redis.zrangebyscore(
            deadlines_key(settings, campaign_id), "-inf", clock.time(), start=0, num=limit
        )
        ids = [m.decode() if isinstance(m, bytes) else str(m) for m in due]
        if not ids:
            continue
        expired = [(m, *parse_message_id(m)) for m in ids]
        events = [Event(m, c, cl, s, None, "failed", "receipt_timeout") for m, c, cl, s in expired]
        async with pool.acquire() as conn:
            await _advance(
                conn,
                amqp_channel,
                settings,
                [(c, cl, s) for _, c, cl, s in expired],
                fallback.ReceiptTimeout,
            )
            await outcomes.write_events(conn, events)
        await _count_by_campaign(redis, settings, events)
        await stop_waiting(redis, settings, ids)
        total += len(events)
    return total + await _expire_realtime(pool, redis, amqp_channel, settings, limit=limit)


async def _expire_realtime(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    amqp_channel: aio_pika.abc.AbstractChannel,
    settings: Settings,
    *,
    limit: int,
) -> int:
    """The same for realtime messages: fail the overdue step and reopen the message at the next."""
    due = await redis.zrangebyscore(
        realtime_deadlines_key(settings), "-inf", clock.time(), start=0, num=limit
    )
    ids = [m.decode() if isinstance(m, bytes) else str(m) for m in due]
    expired = []
    for m in ids:
        try:
            expired.append((m, *parse_realtime_id(m)))
        except ValueError:
            continue
    if not ids:
        return 0
    events = [Event(m, None, cl, s, None, "failed", "receipt_timeout") for m, _, cl, s in expired]
    async with pool.acquire() as conn:
        await realtime.advance(
            conn,
            amqp_channel,
            settings,
            [(u, s) for _, u, _, s in expired],
            fallback.ReceiptTimeout,
        )
        await outcomes.write_events(conn, events)
    await _count_by_campaign(redis, settings, events)
    await stop_waiting(redis, settings, ids)
    if len(ids) > len(expired):  # unparsable members: drop them so they cannot block the set
        await redis.zrem(realtime_deadlines_key(settings), *set(ids) - {e[0] for e in expired})
    return len(events)


async def _count_by_campaign(
    redis: aioredis.Redis, settings: Settings, events: Sequence[Event]
) -> None:
    by_campaign: dict[int | None, list[Event]] = defaultdict(list)
    for event in events:
        by_campaign[event.campaign_id].append(event)
    for campaign_id, campaign_events in by_campaign.items():
        await outcomes.count(redis, settings, campaign_id, campaign_events)
