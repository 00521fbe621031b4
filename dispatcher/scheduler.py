"""The periodic side of the dispatcher: one active scheduler per installation; and an
operator's pause, resume and stop of a campaign (``control``), beside its launch.

Every worker process on every host runs this loop, but only the one holding a
PostgreSQL advisory lock does the work; if it dies, its session ends, the lock is freed
and another worker takes over within a tick. Each duty is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg
import redis.asyncio as aioredis

from crm.cases import rule_engine
from crm.cases.automation import run_due_automations
from crm.cases.calendars import extend_horizons
from crm.cases.routing import run_pass as route_cases
from crm.cases.sla_evaluator import run_sla_cycle
from crm.reports import rollups
from crm.segments import refresh as segment_refresh
from crm.users import purge_expired_sessions
from dispatcher import reports
from dispatcher.campaigns import launcher, planner
from dispatcher.campaigns import store as campaigns
from dispatcher.campaigns.control import publish_state
from dispatcher.campaigns.types import Campaign
from dispatcher.realtime import case_notify, case_replies, case_rule_outbox
from dispatcher.realtime import messages as realtime
from dispatcher.receipts import apply as receipts
from dispatcher.receipts import holds
from herald.amqp import AmqpLink
from herald.audit import Actor
from herald.settings import Settings
from providers.webhook import WebhookClient
from rules.air_raid import AlertMirror

log = logging.getLogger("herald.scheduler")

_LOCK_KEY = 0x4845_5241_4C44 + 1  # next to the migration lock
TICK_SECONDS = 1.0
STALLED_SECONDS = 60.0


class Scheduler:
    """Launches due campaigns, releases holds, expires receipts, completes campaigns."""

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis, amqp: AmqpLink
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.amqp = amqp
        self.alerts = AlertMirror(redis, settings.namespace)
        self._last: dict[str, float] = {}
        self.webhooks = WebhookClient()

    def _due(self, duty: str, every: float) -> bool:
        now = time.monotonic()
        if now - self._last.get(duty, 0.0) >= every:
            self._last[duty] = now
            return True
        return False

    async def tick(self) -> None:
        """One pass of every duty whose interval has come."""
        channel = await self.amqp.publisher()
        settings, pool, redis = self.settings, self.pool, self.redis
        await launcher.launch_due(pool, redis, channel, settings)
        await holds.release_all(pool, channel, settings, "due")
        await realtime.publish_due(pool, channel, settings)  # delayed triggers, lost references
        await case_notify.run_duty(pool, channel, settings)  # client updates of case events
        if self._due("case_email_replies", 5.0):
            await case_replies.deliver_due(pool, settings)  # retries of e-mail replies
        if self._due("alerts", 2.0):
            async with pool.acquire() as conn:
                active = await self.alerts.sync(conn)
            await holds.release_all(pool, channel, settings, "lifted", sorted(active.regions))
        while await receipts.expire_deadlines(pool, redis, channel, settings) >= 5000:
            pass
        if self._due("stalled", STALLED_SECONDS / 2):
            await launcher.republish_stalled(pool, channel, settings, idle_seconds=STALLED_SECONDS)
        if self._due("complete", 2.0):
            await launcher.complete_finished(pool, redis, settings)
        if self._due("segments", 2.0):
            await segment_refresh.run_duty(pool)
        if self._due("case_routing", 1.0):
            await route_cases(pool)
        if self._due("case_sla", 1.0):
            await run_sla_cycle(pool)
        if self._due("business_calendars", 86400.0):
            await extend_horizons(pool)
        if self._due("case_automations", 60.0):
            await run_due_automations(pool)
            await rule_engine.run_time_rules(pool)  # idle and scheduled case rules
        if self._due("case_rules", 1.0):
            await rule_engine.run_queue(pool)  # rules of events no request processed (SLA)
        if self._due("case_rule_outbox", 2.0):
            await case_rule_outbox.deliver_due(pool, channel, settings, self.webhooks)
        if self._due("report_rollups", 5.0):
            async with pool.acquire() as conn:
                await rollups.refresh(conn)  # dirty case hours, a batch a tick
                await reports.fold(conn)  # message outcome deltas
        if self._due("sessions", 600.0):
            await purge_expired_sessions(pool)

    async def run(self, stop: asyncio.Event) -> None:
        """Tick while holding the scheduler lock; wait for it otherwise."""
        while not stop.is_set():
            try:
                async with self.pool.acquire() as conn:
                    if await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY):
                        try:
                            await self._lead(conn, stop)
                        finally:
                            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
            except Exception:  # the scheduler must outlive any one failure: log and go on
                log.exception("scheduler lost its lock connection; retrying")
            await _sleep(stop, TICK_SECONDS)

    async def _lead(self, conn: asyncpg.Connection, stop: asyncio.Event) -> None:
        log.info("this process is the scheduler")
        while not stop.is_set():
            if not self.amqp.connected:
                await _sleep(stop, TICK_SECONDS)
                continue
            try:
                await self.tick()
            except Exception:  # a broker or database hiccup fails one tick, never the loop
                log.exception("scheduler tick failed; retrying")
            # Keep the lock's session alive and notice a lost connection.
            await conn.fetchval("SELECT 1")
            await _sleep(stop, TICK_SECONDS)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def control(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    amqp: AmqpLink,
    settings: Settings,
    actor: Actor,
    campaign_id: int,
    action: str,
) -> Campaign:
    """Pause, resume or stop a campaign for an operator (its launch is a duty of the
    scheduler: ``launcher.launch_due``); returns the campaign as it is after the move.

    Workers read the mirrored status before every batch and provider call group, so the
    change reaches all of them within one batch's time. A resume also publishes the
    batches not done yet and releases the messages held while paused.
    """
    async with pool.acquire() as conn:
        _, after = await campaigns.transition(conn, actor, campaign_id, action)
    await publish_state(redis, settings, campaign_id, after.status)
    if action == "resume":
        channel = await amqp.publisher()
        async with pool.acquire() as conn:
            await planner.publish_pending_batches(conn, channel, settings, campaign_id)
        await holds.release_all(pool, channel, settings, "resumed", campaign_id)
    return after
