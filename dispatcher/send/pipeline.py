"""The hot path: one batch of recipients through rules, rendering, rate limits and providers.

One batch is one unit of work. Recipient data comes in one query, each rule answers for
the whole batch at once (``rules.batch``: the one place a send is decided, in the one
order of the rules), tokens are taken in bulk, providers get batches, and every
outcome (events, holds, the batch marked done) commits in one transaction before the
queue message is acknowledged. A permanent provider failure moves the recipient to the
next channel inside the same unit of work. Redelivered work skips message ids that
already have a final outcome; the only way a message reaches a provider twice is a crash
after the provider accepted it and before that transaction committed, and then it is the
same message id, which providers take as an idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar, cast

import asyncpg
import msgspec
import redis.asyncio as aioredis

from crm.segments.membership import SegmentMembers
from dispatcher import deadlines, outcomes
from dispatcher.campaigns import control
from dispatcher.envelopes import CampaignBatch, message_id
from dispatcher.outcomes import Event, Hold
from dispatcher.recipients import Organisation, Recipient, load_recipients
from dispatcher.templating import store as template_store
from dispatcher.templating.templates import (
    CompiledTemplate,
    RenderError,
    TemplateEngine,
)
from herald import clock
from herald.settings import Settings
from providers.base import Outbound, Outcome, Provider, ProviderUnavailable
from providers.retry import RetryPolicy, send_with_retry
from rules import batch, consent, contact, fallback, quiet_hours, rate_limit, stop_lists
from rules.air_raid import AlertMirror, AlertSnapshot, MirrorNotReady
from rules.consent import UnsubscribeLinks
from rules.decision import Hold as HoldDecision
from rules.decision import Send, Skip, Verdicts
from rules.regions import load_time_zones

_T = TypeVar("_T")
log = logging.getLogger("herald.pipeline")

# How long a campaign batch waits for rate-limit tokens, sending each grant as it comes,
# before it holds the rest of its recipients until their tokens are due.
TOKEN_WAIT_SECONDS = 20.0
PROVIDER_RETRY_SECONDS = 60.0
"""How long a message waits to be sent again when its provider was unreachable (held)."""
# How long a campaign batch waits, at each of its checkpoints, for the realtime messages
# in hand to finish: realtime goes first, and a campaign still moves under constant load.
REALTIME_YIELD_SECONDS = 1.0


class CampaignInfo(msgspec.Struct, frozen=True):
    id: int
    chain: tuple[str, ...]
    template_id: int
    template_version: int
    topic: str
    receipt_timeout: int
    rate: rate_limit.Limits | None


class Context:
    """What a worker process keeps for the pipeline: connections, providers, short caches."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        providers: Mapping[str, Provider],
        limiter: rate_limit.RateLimiter,
        engine: TemplateEngine | None = None,
        retry: RetryPolicy | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.providers = providers
        self.limiter = limiter
        # The clock and the sleep of waiting for rate-limit tokens (a test's virtual time).
        self.monotonic = monotonic
        self.sleep = sleep
        self.engine = engine or TemplateEngine()
        self.retry = retry or RetryPolicy()
        self.alerts = AlertMirror(redis, settings.namespace)
        self.unsubscribe = UnsubscribeLinks.from_settings(settings)
        self.organisation = Organisation(
            service_centre=settings.org_service_centre,
            contact_phone=settings.org_contact_phone,
            cabinet_url=settings.org_cabinet_url,
            app_url=settings.org_app_url,
            payment_url=settings.org_payment_url,
        )
        self._cached: dict[str, tuple[float, object]] = {}
        self._realtime_in_hand = 0
        self._realtime_idle = asyncio.Event()
        self._realtime_idle.set()

    def realtime_started(self) -> None:
        self._realtime_in_hand += 1
        self._realtime_idle.clear()

    def realtime_finished(self) -> None:
        self._realtime_in_hand -= 1
        if self._realtime_in_hand <= 0:
            self._realtime_in_hand = 0
            self._realtime_idle.set()

    async def yield_to_realtime(self) -> None:
        """Let the realtime messages this process holds go first (bounded wait).

        Both kinds of work share one event loop per process; a campaign batch renders and
        encodes a thousand messages at a time, so without this a trigger waits behind it."""
        if self._realtime_in_hand:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._realtime_idle.wait(), REALTIME_YIELD_SECONDS)

    async def cached(
        self,
        name: str,
        load: Callable[[asyncpg.Connection], Awaitable[_T]],
        conn: asyncpg.Connection | None = None,
    ) -> _T:
        """A small table reloaded at most every few seconds (limits, windows, time zones).

        Pass ``conn`` when the caller holds a connection already: taking a second one from
        the pool while holding one can exhaust the pool with every task waiting."""
        found = self._cached.get(name)
        if found is None or time.monotonic() - found[0] >= self.settings.rules_cache_seconds:
            if conn is not None:
                value: object = await load(conn)
            else:
                async with self.pool.acquire() as fresh:
                    value = await load(fresh)
            found = (time.monotonic(), value)
            self._cached[name] = found
        return cast(_T, found[1])  # a name is always loaded by the same function

    async def active_alerts(self) -> AlertSnapshot:
        try:
            return await self.alerts.active_regions()
        except MirrorNotReady:
            async with self.pool.acquire() as conn:
                return await self.alerts.sync(conn)


async def _campaign(conn: asyncpg.Connection, campaign_id: int) -> CampaignInfo | None:
    row = await conn.fetchrow(
        "SELECT c.id, c.channel_chain, c.template_id, c.template_version, t.topic, "
        "c.receipt_timeout_seconds, c.rate_per_minute, c.rate_per_hour "
        "FROM campaigns c JOIN message_templates t ON t.id = c.template_id WHERE c.id = $1",
        campaign_id,
    )
    if row is None:
        return None
    rate = (
        rate_limit.Limits(row["rate_per_minute"], row["rate_per_hour"])
        if row["rate_per_minute"] or row["rate_per_hour"]
        else None
    )
    return CampaignInfo(
        row["id"],
        tuple(row["channel_chain"]),
        row["template_id"],
        row["template_version"],
        row["topic"],
        row["receipt_timeout_seconds"],
        rate,
    )


async def handle_batch(ctx: Context, envelope: CampaignBatch) -> None:
    """Process one campaign batch reference: its recipients at its chain step."""
    state = await control.current_state(ctx.redis, ctx.pool, ctx.settings, envelope.campaign_id)
    if state in (None, "stopped", "completed", "failed", "draft"):
        return  # nothing to do; the batch stays as it is
    if state != "running":
        return  # paused: the batch stays pending; resume publishes it again
    async with ctx.pool.acquire() as conn:
        campaign = await _campaign(conn, envelope.campaign_id)
        row = await conn.fetchrow(
            "UPDATE campaign_batches SET attempts = attempts + 1 "
            "WHERE id = $1 AND campaign_id = $2 AND NOT done "
            "RETURNING client_ids, step, attempts",
            envelope.batch_id,
            envelope.campaign_id,
        )
    if campaign is None or row is None:
        return  # a republished reference of a batch already done
    batch = Batch(ctx, campaign, list(row["client_ids"]), row["step"], envelope.batch_id, state)
    batch.retried = row["attempts"] > 1
    await batch.run()


class Batch:
    """The work of one queue message, collected and then written at once.

    A campaign batch; ``dispatcher.send.realtime_batch.RealtimeBatch`` reuses it for triggered
    and operator messages by overriding the hooks below (ids, reads, tokens, receipts,
    commit). The stop-list read is ``_stopped``: segment membership is wired there. What
    may be sent is decided by ``rules.batch`` (``_decide``); what follows a failure, by
    ``rules.fallback``.
    """

    def __init__(
        self,
        ctx: Context,
        campaign: CampaignInfo,
        client_ids: Sequence[int],
        step: int,
        batch_id: int,
        state: str,
    ) -> None:
        self.ctx = ctx
        self.campaign = campaign
        self.client_ids = list(client_ids)
        self.first_step = step
        self.batch_id = batch_id
        self.state = state
        self.chain = fallback.chain_of(campaign.chain, campaign.receipt_timeout)
        self.events: list[Event] = []
        self.holds: list[Hold] = []
        # A first attempt cannot meet ids already sent, so it skips looking them up.
        self.retried = True

    # -- hooks (campaign behaviour; RealtimeBatch overrides them) ------------------------

    def mid(self, client_id: int, step: int) -> str:
        """The message id of a client's message at a chain step."""
        return message_id(self.campaign.id, client_id, step)

    @property
    def event_campaign_id(self) -> int | None:
        return self.campaign.id

    async def _await_receipts(self, ids: list[str]) -> None:
        await deadlines.await_receipts(
            self.ctx.redis, self.ctx.settings, self.campaign.id, ids, self.campaign.receipt_timeout
        )

    async def _mark_done(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            "UPDATE campaign_batches SET done = true, done_at = herald_now() WHERE id = $1",
            self.batch_id,
        )

    async def _count(self) -> None:
        await outcomes.count(self.ctx.redis, self.ctx.settings, self.campaign.id, self.events)

    async def _yield(self) -> None:
        await self.ctx.yield_to_realtime()

    # -- the work -------------------------------------------------------------------------

    def _event(
        self,
        client_id: int,
        step: int,
        status: str,
        reason: str | None = None,
        provider_id: str | None = None,
    ) -> None:
        self.events.append(
            Event(
                self.mid(client_id, step),
                self.event_campaign_id,
                client_id,
                step,
                self.campaign.chain[step],
                status,
                reason,
                provider_id,
            )
        )

    def _hold(
        self,
        recipient: Recipient,
        step: int,
        reason: str,
        region: str | None,
        until: dt.datetime | None,
    ) -> None:
        mid = self.mid(recipient.client_id, step)
        self.holds.append(
            Hold(
                mid,
                self.event_campaign_id,
                recipient.client_id,
                step,
                reason,
                region,
                until.timestamp() if until else None,
            )
        )
        self._event(recipient.client_id, step, "held", reason)

    async def _load_template(self, conn: asyncpg.Connection) -> tuple[CompiledTemplate, bool]:
        return await template_store.load_for_sending(
            conn, self.ctx.engine, self.campaign.template_id, self.campaign.template_version
        )

    async def _load_recipients(self, conn: asyncpg.Connection) -> list[Recipient]:
        return await load_recipients(conn, self.client_ids, self.ctx.organisation)

    async def _stopped(self, conn: asyncpg.Connection, client_ids: list[int]) -> Verdicts:
        """The stop-list verdicts of the batch (the one place the pipeline asks)."""
        return await stop_lists.check(
            conn, client_ids, self.campaign.topic, membership=SegmentMembers(conn)
        )

    async def _inputs(
        self,
    ) -> tuple[
        dict[int, Recipient], dict[str, str], Verdicts, consent.Consents, CompiledTemplate, bool
    ]:
        """Everything the decisions need, read on one connection (one batch, one query each)."""
        campaign = self.campaign
        async with self.ctx.pool.acquire() as conn:
            recipients = {r.client_id: r for r in await self._load_recipients(conn)}
            finals: dict[str, str] = {}
            if self.retried:
                finals = await outcomes.already_final(
                    conn,
                    [
                        self.mid(c, s)
                        for c in recipients
                        for s in range(self.first_step, len(campaign.chain))
                    ],
                )
            ids = list(recipients)
            stopped = await self._stopped(conn, ids)
            consents = await consent.load_consents(conn, ids, campaign.chain, campaign.topic)
            template, urgent = await self._load_template(conn)
        return recipients, finals, stopped, consents, template, urgent

    async def run(self) -> None:
        await self._yield()
        recipients, finals, stopped, consents, template, urgent = await self._inputs()
        stage = dict.fromkeys(recipients, self.first_step)
        while stage:
            groups = await self._decide(stage, recipients, finals, stopped, consents, urgent)
            stage = {}
            for channel, members in groups.items():
                if self.state != "running":
                    self._park_unsent(members)
                    continue
                for recipient, step in await self._send(channel, members, template):
                    # Failed at this step (render, provider): the fallback chain moves on.
                    following = fallback.next_step(
                        self.chain, step, fallback.PermanentFailure(step)
                    )
                    if following is not None:
                        stage[recipient.client_id] = following
            if self.state != "running":
                # Paused or stopped mid-batch: park (pause) or leave (stop) the fallbacks.
                self._park_unsent([(recipients[c], s) for c, s in stage.items()])
                stage = {}
        await self._commit()

    async def _decide(
        self,
        stage: dict[int, int],
        recipients: dict[int, Recipient],
        finals: dict[str, str],
        stopped: Verdicts,
        consents: consent.Consents,
        urgent: bool,
    ) -> dict[str, list[tuple[Recipient, int]]]:
        """Walk each recipient down the chain to a channel it can be sent on, now or later
        (``rules.batch``); record the skips and holds on the way, group the sends by channel."""
        ctx, campaign = self.ctx, self.campaign
        alerts = await ctx.active_alerts()
        windows = await ctx.cached("quiet_windows", quiet_hours.load_windows)
        time_zones = await ctx.cached("time_zones", load_time_zones)
        facts = batch.Facts(
            topic=campaign.topic,
            urgent=urgent,
            now=clock.now(),
            stopped=stopped,
            consents=consents,
            alerts=alerts,
            windows=windows,
            time_zones=time_zones,
        )
        settled: dict[tuple[int, int], str] | None = None
        if finals:
            length = len(campaign.chain)
            settled = {
                (c, k): finals[m]
                for c, s in stage.items()
                for k in range(s, length)
                if (m := self.mid(c, k)) in finals
            }
        walked = batch.Rules(facts, recipients).walk(stage, self.chain, settled)
        groups: dict[str, list[tuple[Recipient, int]]] = defaultdict(list)
        for client_id, moves in walked.items():
            recipient = recipients[client_id]
            for step, what in moves:
                if isinstance(what, Send):
                    groups[campaign.chain[step]].append((recipient, step))
                elif isinstance(what, HoldDecision):
                    self._hold(recipient, step, what.reason, recipient.region_code, what.until)
                elif isinstance(what, Skip):
                    self._event(client_id, step, "skipped", what.reason)
                else:  # batch.Recovered
                    self._event(client_id, step, "sent", "recovered")
        return groups

    async def _buckets(self, channel: str, provider: Provider) -> list[rate_limit.Bucket]:
        ctx = self.ctx
        configured = await ctx.cached("rate_limits", rate_limit.list_limits)
        return rate_limit.buckets_for_send(
            ctx.settings.namespace,
            configured,
            channel=channel,
            provider=provider.name,
            campaign_id=self.campaign.id,
            campaign_limits=self.campaign.rate,
        )

    @property
    def token_wait_seconds(self) -> float:
        """How long this unit waits for rate-limit tokens before holding the rest."""
        return TOKEN_WAIT_SECONDS

    async def _refresh_state(self) -> str:
        self.state = (
            await control.current_state(
                self.ctx.redis, self.ctx.pool, self.ctx.settings, self.campaign.id
            )
            or "stopped"
        )
        return self.state

    def _park_unsent(self, members: Sequence[tuple[Recipient, int]]) -> None:
        if self.state == "paused":
            for recipient, step in members:
                self._hold(recipient, step, "paused", None, None)

    async def _send(
        self, channel: str, members: list[tuple[Recipient, int]], template: CompiledTemplate
    ) -> list[tuple[Recipient, int]]:
        """Render, rate-limit and hand one channel's group to its provider; return the failed."""
        ctx = self.ctx
        provider = ctx.providers[channel]
        await self._yield()
        failed: list[tuple[Recipient, int]] = []
        outbound: list[Outbound] = []
        sendable: list[tuple[Recipient, int]] = []
        for recipient, step in members:
            try:
                variables = recipient.variables
                if channel == "email":
                    variables = {
                        **variables,
                        "unsubscribe_url": ctx.unsubscribe.url(
                            recipient.client_id, self.campaign.topic
                        ),
                    }
                content = template.render(channel, variables, recipient.language)
            except RenderError as exc:
                self._event(recipient.client_id, step, "failed", f"render_error:{exc.field}")
                failed.append((recipient, step))
                continue
            address = contact.address(recipient, channel)
            # The address was checked above; a campaign renders only SMS, Viber or e-mail.
            mid = self.mid(recipient.client_id, step)
            outbound.append(Outbound(mid, channel, address, content))  # type: ignore[arg-type]  # see above
            sendable.append((recipient, step))
        if not outbound:
            return failed
        # The unit is split by the rate limits: each grant of tokens goes to the provider
        # at once (rules.rate_limit.pace); what the wait bound leaves is held until its
        # tokens should be due. The state is read again before every provider call.
        found = await self._buckets(channel, provider)
        done = 0

        async def hand_over(k: int) -> bool:
            nonlocal done
            if await self._refresh_state() != "running":
                return False
            part = slice(done, done + k)
            failed.extend(await self._hand_over(channel, provider, outbound[part], sendable[part]))
            done += k
            return True

        paced = await rate_limit.pace(
            ctx.limiter,
            found,
            len(outbound),
            send=hand_over,
            max_wait=self.token_wait_seconds,
            monotonic=ctx.monotonic,
            sleep=ctx.sleep,
        )
        rest = sendable[done:]
        if rest and self.state != "running":
            self._park_unsent(rest)
        elif rest:
            now = clock.now()
            for (recipient, step), wait in zip(
                rest, rate_limit.release_times(found, len(rest), paced.retry_after), strict=True
            ):
                self._hold(
                    recipient, step, "rate_limit", None, now + dt.timedelta(seconds=max(wait, 1.0))
                )
        return failed

    async def _hand_over(
        self,
        channel: str,
        provider: Provider,
        outbound: list[Outbound],
        sendable: list[tuple[Recipient, int]],
    ) -> list[tuple[Recipient, int]]:
        """One provider call group: the receipt clock, the send with retries, the outcomes;
        returns the recipients that failed (for the next channel)."""
        ctx = self.ctx
        failed: list[tuple[Recipient, int]] = []
        await self._yield()
        ids = [o.message_id for o in outbound]
        # The receipt clock starts before the provider is called, so a receipt that
        # overtakes this code still finds its message waiting.
        await self._await_receipts(ids)
        try:
            results = await send_with_retry(
                provider, outbound, ctx.retry, should_stop=lambda: self.state != "running"
            )
        except ProviderUnavailable as exc:
            log.warning("%s provider unavailable for %s: %s", channel, ids[0], exc)
            results = None
        not_waiting = []
        retry_at = clock.now() + dt.timedelta(seconds=PROVIDER_RETRY_SECONDS)
        for i, (recipient, step) in enumerate(sendable):
            result = results[i] if results is not None else None
            if result is not None and result.outcome is Outcome.ACCEPTED:
                self._event(recipient.client_id, step, "sent", None, result.provider_id)
                continue
            if (
                (result is None or result.outcome is not Outcome.PERMANENT)
                and self.state == "running"
                and fallback.next_step(self.chain, step, fallback.PermanentFailure(step)) is None
            ):
                # The provider was unreachable (an outage, throttling) through every retry
                # and no channel is left: sent again in a minute, not failed for good.
                self._hold(recipient, step, "provider", None, retry_at)
                not_waiting.append(ids[i])
                continue
            reason = (
                "provider_unavailable"
                if result is None
                else "permanent"
                if result.outcome is Outcome.PERMANENT
                else "retries_exhausted"
            )
            detail = f"{reason}:{result.error}" if result is not None and result.error else reason
            self._event(recipient.client_id, step, "failed", detail[:200])
            failed.append((recipient, step))
            not_waiting.append(ids[i])
        await deadlines.stop_waiting(ctx.redis, ctx.settings, not_waiting)
        return failed

    async def _commit(self) -> None:
        ctx = self.ctx
        async with ctx.pool.acquire() as conn, conn.transaction():
            await outcomes.write_events(conn, self.events)
            await outcomes.write_holds(conn, self.holds)
            await self._mark_done(conn)
        await self._count()
