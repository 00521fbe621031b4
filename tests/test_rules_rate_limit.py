"""Rate limits: token buckets (stub and Redis), the measured rate, and the admin configuration."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from crm import audit
from crm.errors import InvalidInput, NotFound
from herald.settings import Settings
from rules import rate_limit
from rules.rate_limit import (
    Bucket,
    Grant,
    Limits,
    RateLimiter,
    RedisRateLimiter,
    StubRateLimiter,
    buckets,
    buckets_for_send,
)

ADMIN = audit.Actor(login="admin1", id=None)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["stub", "redis"])
async def limiter(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[RateLimiter]:
    if request.param == "stub":
        yield StubRateLimiter()
        return
    client = aioredis.Redis.from_url(settings.redis_url)
    yield RedisRateLimiter(client)
    keys = [k async for k in client.scan_iter(match=f"{settings.namespace}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_stub_bucket_bursts_then_refills_at_the_rate() -> None:
    # Given 600 per minute (10 tokens a second) and a clock we control
    clock = Clock()
    limiter = StubRateLimiter(clock)
    sms = buckets("ns", "channel.sms", Limits(per_minute=600))
    # When a worker asks for 1,000 at once, Then the full bucket gives its 600
    assert await limiter.take(sms, 1000) == Grant(600, 0.1)
    # When it asks again at once, Then nothing, and one token comes in 0.1 s
    assert await limiter.take(sms, 400) == Grant(0, 0.1)
    # When 2.5 s pass, Then 25 tokens have come
    clock.now += 2.5
    assert (await limiter.take(sms, 400)).granted == 25
    # When a minute passes, Then the bucket is full again but never fuller
    clock.now += 600
    assert (await limiter.take(sms, 1000)).granted == 600


async def test_stub_every_bucket_gives_the_same_number() -> None:
    # Given a channel limited to 1,000/min and a campaign limited to 50/hour
    clock = Clock()
    limiter = StubRateLimiter(clock)
    channel = buckets("ns", "channel.sms", Limits(per_minute=1000))
    campaign = buckets("ns", "campaign.7", Limits(per_minute=100, per_hour=50))
    # When the campaign asks for 80, Then the hourly bucket allows 50
    grant = await limiter.take(channel + campaign, 80)
    assert grant.granted == 50 and grant.retry_after == pytest.approx(3600 / 50)
    # And the channel lost only those 50: another campaign still gets 950
    assert (await limiter.take(channel, 2000)).granted == 950


async def test_trivial_requests_need_no_bucket() -> None:
    limiter = StubRateLimiter()
    assert await limiter.take([], 500) == Grant(500, 0.0)
    assert await limiter.take(buckets("ns", "x", Limits(per_minute=1)), 0) == Grant(0, 0.0)


async def test_both_backends_agree(limiter: RateLimiter, settings: Settings) -> None:
    # Given a fresh bucket of 100 per minute in this test's namespace
    bucket = buckets(settings.namespace, "channel.viber", Limits(per_minute=100))
    # When 30 and then 100 are asked for
    first = await limiter.take(bucket, 30)
    second = await limiter.take(bucket, 100)
    # Then 30 and the remaining 70 are granted, and the retry is about one token's time
    assert first == Grant(30, 0.0)
    assert second.granted == 70
    assert 0.5 < second.retry_after <= 0.6


async def test_redis_buckets_are_shared_and_atomic(settings: Settings, redis: aioredis.Redis) -> None:
    # Given 20 worker tasks on separate connections sharing a bucket of 100 per hour
    clients = [aioredis.Redis.from_url(settings.redis_url) for _ in range(4)]
    limiters = [RedisRateLimiter(c) for c in clients]
    bucket = buckets(settings.namespace, "campaign.1", Limits(per_hour=100))
    try:
        # When each asks for 10 tokens, three times, all at once
        grants = await asyncio.gather(*(limiters[i % 4].take(bucket, 10) for i in range(60)))
    finally:
        for c in clients:
            await c.aclose()
    # Then exactly 100 are granted in total, never more
    assert sum(g.granted for g in grants) == 100
    # And the bucket's key is in the test's namespace and expires once it would be full
    key = f"{settings.namespace}:rl:campaign.1:hour"
    assert 3500 < await redis.ttl(key) <= 3601


async def test_measured_rate_follows_the_configured_rate(settings: Settings,
                                                         redis: aioredis.Redis) -> None:
    # Given 600 per minute on SMS, shared by two workers
    bucket = buckets(settings.namespace, "channel.sms", Limits(per_minute=600))
    limiter = RedisRateLimiter(redis)
    burst = await limiter.take(bucket, 10_000)
    assert burst.granted == 600  # the idle bucket's burst
    granted = 0
    window = 3.0
    start = last = time.monotonic()

    async def worker() -> None:
        nonlocal granted, last
        while (elapsed := time.monotonic() - start) < window:
            grant = await limiter.take(bucket, 100)
            if grant.granted:
                granted += grant.granted
                last = time.monotonic()
            await asyncio.sleep(min(max(grant.retry_after, 0.01), window - elapsed + 0.001))

    # When both workers take tokens as fast as they are allowed for 3 seconds
    await asyncio.gather(worker(), worker())
    rate = granted / (last - start)
    # Then the sustained rate is the configured 10 per second
    assert 9.5 <= rate <= 10.5, rate


async def test_configured_limits_select_the_buckets(app_conn: asyncpg.Connection) -> None:
    # Given SMS limited channel-wide and for one provider, and Viber limited per hour
    await rate_limit.set_limit(app_conn, ADMIN, channel="sms", per_minute=6000, per_hour=200_000)
    await rate_limit.set_limit(app_conn, ADMIN, channel="sms", provider="acme", per_minute=1000)
    await rate_limit.set_limit(app_conn, ADMIN, channel="viber", per_hour=50_000)
    configured = await rate_limit.list_limits(app_conn)
    assert [(c.channel, c.provider) for c in configured] == [("sms", None), ("sms", "acme"), ("viber", None)]
    # When an SMS of campaign 42 (300/min) goes through provider acme
    found = buckets_for_send("ns", configured, channel="sms", provider="acme", campaign_id=42,
                             campaign_limits=Limits(per_minute=300))
    # Then it takes from the channel's two, the provider's and the campaign's buckets
    assert found == [Bucket("ns:rl:channel.sms:minute", 6000, 100.0),
                     Bucket("ns:rl:channel.sms:hour", 200_000, 200_000 / 3600),
                     Bucket("ns:rl:provider.sms.acme:minute", 1000, 1000 / 60),
                     Bucket("ns:rl:campaign.42:minute", 300, 5.0)]
    # And an e-mail has no bucket at all
    assert buckets_for_send("ns", configured, channel="email") == []


async def test_limit_changes_are_journalled(app_conn: asyncpg.Connection) -> None:
    # Given a limit set, changed and removed by an admin
    await rate_limit.set_limit(app_conn, ADMIN, channel="sms", per_minute=600)
    await rate_limit.set_limit(app_conn, ADMIN, channel="sms", per_minute=1200)
    await rate_limit.remove_limit(app_conn, ADMIN, channel="sms")
    # Then the journal has each step, newest first
    history = await audit.history(app_conn, "rate_limit", "sms", limit=10,
                                  pii_visible=True)
    assert [(h.action, h.field, h.old_value, h.new_value) for h in history] == [
        ("delete", None, {"per_minute": 1200, "per_hour": None}, None),
        ("update", "per_minute", 600, 1200),
        ("create", None, None, {"per_minute": 600, "per_hour": None})]
    assert await rate_limit.list_limits(app_conn) == []
    with pytest.raises(NotFound):
        await rate_limit.remove_limit(app_conn, ADMIN, channel="sms")


@pytest.mark.parametrize("values, field", [
    ({"channel": "fax", "per_minute": 1}, "channel"),
    ({"channel": "sms"}, "per_minute"),
    ({"channel": "sms", "per_minute": 0}, "per_minute"),
    ({"channel": "sms", "per_hour": 10**9}, "per_hour"),
    ({"channel": "sms", "provider": "Bad Name", "per_hour": 5}, "provider"),
])
async def test_bad_limits_name_the_field(app_conn: asyncpg.Connection, values: dict[str, object],
                                         field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        await rate_limit.set_limit(app_conn, ADMIN, **values)  # type: ignore[arg-type]
    assert caught.value.field == field
