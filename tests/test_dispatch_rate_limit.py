"""A campaign's per-minute limit through the real pipeline (issue 20 point 2, IC-05): a unit
of work larger than the bucket is split, sent as tokens come and the rest held; nobody is
lost or sent twice. The worker's clock and sleep are virtual: minutes pass at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aio_pika
import msgspec
import redis.asyncio as aioredis
from dispatch_helpers import Stack, make_clients
from test_rules_rate_limit import VirtualTime

from dispatcher.campaigns import launcher
from dispatcher.envelopes import CampaignBatch
from dispatcher.receipts import holds
from dispatcher.send import pipeline
from herald.db import create_pool
from providers.base import Outbound, SendResult
from providers.registry import build_providers, close_providers
from rules.rate_limit import StubRateLimiter


class Recording:
    """A provider that notes when (virtual time) and how many it was handed."""

    def __init__(self, inner: Any, time_: VirtualTime) -> None:
        self.inner, self.time, self.name = inner, time_, inner.name
        self.max_batch, self.channel = inner.max_batch, inner.channel
        self.calls: list[tuple[float, int]] = []

    async def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
        self.calls.append((self.time.now - 1000.0, len(batch)))
        return await self.inner.send(batch)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_limit_below_the_batch_size_sends_at_once_spread_and_holds_the_rest(
    stack: Stack,
) -> None:
    # Given a campaign of 37 clients limited to 30 a minute, one shard: one unit of 37
    ids = await make_clients(stack.conn, 37)
    await stack.stop_worker()
    settings = msgspec.structs.replace(stack.settings, shards=1)
    campaign = await stack.campaign(ids, chain=["sms"], rate_per_minute=30)
    await stack.launch(campaign)
    time_ = VirtualTime()
    pool = await create_pool(settings)
    redis = aioredis.Redis.from_url(settings.redis_url)
    providers = build_providers(settings)
    sms = Recording(providers["sms"], time_)
    providers["sms"] = sms
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        channel = await connection.channel()
        assert await launcher.launch_due(pool, redis, channel, settings) == [campaign]
        ctx = pipeline.Context(
            settings,
            pool,
            redis,
            providers,
            StubRateLimiter(time_),
            monotonic=time_,
            sleep=time_.sleep,
        )

        async def run_pending() -> None:
            batches = await stack.conn.fetch(
                "SELECT id FROM campaign_batches WHERE campaign_id = $1 AND NOT done ORDER BY id",
                campaign,
            )
            for b in batches:
                await time_.run(pipeline.handle_batch(ctx, CampaignBatch(campaign, b["id"])))

        assert (
            len(
                await stack.conn.fetch(
                    "SELECT id FROM campaign_batches WHERE campaign_id = $1", campaign
                )
            )
            == 1
        )
        # When the worker takes the unit
        await run_pending()
        # Then the first message went at once and the others one token (2 s) apart, for
        # the 20 s a unit waits; nothing was sent in a burst
        assert sms.calls == [(2.0 * i, 1) for i in range(11)]
        # And the other 26 are held until their tokens should be due, 2 s apart
        held = await stack.conn.fetch(
            "SELECT release_at FROM held_messages WHERE campaign_id = $1 AND reason = 'rate_limit' "
            "ORDER BY release_at",
            campaign,
        )
        assert len(held) == 26
        spread = (held[-1]["release_at"] - held[0]["release_at"]).total_seconds()
        assert 49 <= spread <= 51
        # When their time comes, again and again (the scheduler's release duty)
        for _ in range(10):
            if not await stack.conn.fetchval(
                "SELECT count(*) FROM held_messages WHERE campaign_id = $1", campaign
            ):
                break
            time_.now += 60.0
            await stack.conn.execute(
                "UPDATE held_messages SET release_at = herald_now() WHERE campaign_id = $1",
                campaign,
            )
            await holds.release_all(pool, channel, settings, "due")
            await run_pending()
        # Then everyone got exactly one message, and no window of 60 s saw more than 30 + 1
        sent = await stack.conn.fetch(
            "SELECT client_id, count(*) AS n FROM message_events WHERE campaign_id = $1 "
            "AND status = 'sent' GROUP BY client_id",
            campaign,
        )
        assert sorted(r["client_id"] for r in sent) == ids and {r["n"] for r in sent} == {1}
        stats = await stack.sim_stats("sms")
        assert (stats["accepted"], stats["duplicates"]) == (37, 0)
        times = [t for t, k in sms.calls for _ in range(k)]
        for start in times:
            assert sum(1 for t in times if start <= t < start + 60) <= 31
        await channel.close()
    finally:
        await connection.close()
        await close_providers(providers)
        await redis.aclose()
        await pool.close()
