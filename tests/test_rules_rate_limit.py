"""Rate limits: token buckets (stub and Redis), the measured rate, and the admin configuration."""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from crm import audit as audit_journal
from herald import audit
from herald.errors import InvalidInput, NotFound
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


async def test_stub_bucket_bursts_two_seconds_worth_then_refills_at_the_rate() -> None:
    # Given 600 per minute (10 tokens a second) and a clock we control
    clock = Clock()
    limiter = StubRateLimiter(clock)
    sms = buckets("ns", "channel.sms", Limits(per_minute=600))
    # When a worker asks for 1,000 at once, Then the full bucket gives its burst: 2 s worth
    assert await limiter.take(sms, 1000) == Grant(20, 0.1)
    # When it asks again at once, Then nothing, and one token comes in 0.1 s
    assert await limiter.take(sms, 400) == Grant(0, 0.1)
    # When 1.5 s pass, Then 15 tokens have come
    clock.now += 1.5
    assert (await limiter.take(sms, 400)).granted == 15
    # When a minute passes, Then the bucket is full again but never fuller
    clock.now += 600
    assert (await limiter.take(sms, 1000)).granted == 20


def test_the_burst_is_two_seconds_of_the_rate_and_at_least_one() -> None:
    """Issue 20 point 2: a minute's limit is spread over the minute, not spent at once."""
    assert [b.capacity for b in buckets("ns", "x", Limits(per_minute=300, per_hour=5000))] == [
        10,
        3,
    ]
    assert [b.capacity for b in buckets("ns", "x", Limits(per_minute=30, per_hour=10))] == [1, 1]
    assert [b.capacity for b in buckets("ns", "x", Limits(per_minute=6000))] == [200]


async def test_stub_every_bucket_gives_the_same_number() -> None:
    # Given a channel limited to 1,000/min and a campaign limited to 50/hour
    clock = Clock()
    limiter = StubRateLimiter(clock)
    channel = buckets("ns", "channel.sms", Limits(per_minute=1000))
    campaign = buckets("ns", "campaign.7", Limits(per_minute=100, per_hour=50))
    # When the campaign asks for 80, Then the hourly bucket allows its one token
    grant = await limiter.take(channel + campaign, 80)
    assert grant.granted == 1 and grant.retry_after == pytest.approx(3600 / 50)
    # And the channel lost only that one: another campaign still gets the rest of its 34
    assert (await limiter.take(channel, 2000)).granted == 33


class VirtualTime:
    """A clock and a sleep for pacing: nothing waits for real. ``run`` drives tasks that
    sleep on it: when every one of them sleeps, the clock jumps to the earliest wake-up."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self.now + seconds, self._seq, future))
        await future

    async def run(self, *coroutines: Any) -> list[Any]:
        tasks = [asyncio.ensure_future(c) for c in coroutines]
        while not all(t.done() for t in tasks):
            # Let every task run until it sleeps here or ends (real I/O in between is
            # waited for: the tasks are then neither sleeping nor done).
            while self._sleepers.__len__() != sum(not t.done() for t in tasks):
                await asyncio.wait(tasks, timeout=0.001)
            if self._sleepers:
                wake, _, future = heapq.heappop(self._sleepers)
                self.now = max(self.now, wake)
                future.set_result(None)
        return [t.result() for t in tasks]


async def test_pace_spreads_a_minutes_limit_over_the_minute() -> None:
    """Issue 20 point 2: 300/min on a unit of 1,000 sends 10 at once, then 5 a second."""
    time_ = VirtualTime()
    limiter = StubRateLimiter(time_)
    found = buckets("ns", "campaign.1", Limits(per_minute=300))
    sent: list[tuple[float, int]] = []

    async def send(k: int) -> bool:
        sent.append((time_.now - 1000.0, k))
        return True

    [paced] = await time_.run(
        rate_limit.pace(
            limiter, found, 1000, send=send, max_wait=600.0, monotonic=time_, sleep=time_.sleep
        )
    )
    assert paced.granted == 1000 and paced.retry_after == 0.0
    assert sent[0] == (0.0, 10)
    # Any 60-second window: at most the burst plus a minute's rate
    for start, _ in sent:
        in_window = sum(k for t, k in sent if start <= t < start + 60)
        assert in_window <= 10 + 300, (start, in_window)
    assert sum(k for t, k in sent if t < 1.0) <= 15


async def test_pace_splits_a_unit_larger_than_the_bucket_and_never_starves() -> None:
    """Issue 20 point 2: 30/min against units of 37. Before, a unit took tokens and kept
    them until it had all 37, so units sharing the bucket sent nothing for minutes."""
    time_ = VirtualTime()
    limiter = StubRateLimiter(time_)
    found = buckets("ns", "campaign.1", Limits(per_minute=30))
    sent: list[tuple[str, float, int]] = []

    def sender(name: str):
        async def send(k: int) -> bool:
            sent.append((name, time_.now - 1000.0, k))
            return True

        return send

    # Two units at once, each willing to wait 20 s for tokens
    a, b = await time_.run(
        *(
            rate_limit.pace(
                limiter,
                found,
                37,
                send=sender(name),
                max_wait=20.0,
                monotonic=time_,
                sleep=time_.sleep,
            )
            for name in ("a", "b")
        )
    )
    # Every token was sent the moment it came (the burst of 1 at once, then one every
    # 2 s), none kept waiting for the rest of a unit...
    assert [t for _, t, _ in sent] == [2.0 * i for i in range(11)]
    assert a.granted + b.granted == sum(k for _, _, k in sent) == 11
    # ... and at the bound both stopped with the rest for the caller to hold, at the rate
    for unit in (a, b):
        left = 37 - unit.granted
        times = rate_limit.release_times(found, left, unit.retry_after)
        assert len(times) == left and times[0] == unit.retry_after == 2.0
        assert times[1] - times[0] == pytest.approx(2.0)


async def test_pace_stops_when_the_sender_says_so() -> None:
    time_ = VirtualTime()
    limiter = StubRateLimiter(time_)
    found = buckets("ns", "campaign.1", Limits(per_minute=60))
    calls = 0

    async def send(k: int) -> bool:
        nonlocal calls
        calls += 1
        return calls < 3  # paused after the third grant

    [paced] = await time_.run(
        rate_limit.pace(
            limiter, found, 100, send=send, max_wait=60.0, monotonic=time_, sleep=time_.sleep
        )
    )
    assert calls == 3 and paced.granted == 4  # the burst of 2, then 1 and 1
    assert await rate_limit.pace(
        limiter, [], 5, send=send, max_wait=1.0, monotonic=time_, sleep=time_.sleep
    ) == rate_limit.Paced(5, 0.0)


async def test_trivial_requests_need_no_bucket() -> None:
    limiter = StubRateLimiter()
    assert await limiter.take([], 500) == Grant(500, 0.0)
    assert await limiter.take(buckets("ns", "x", Limits(per_minute=1)), 0) == Grant(0, 0.0)


async def test_both_backends_agree(limiter: RateLimiter, settings: Settings) -> None:
    # Given a fresh bucket of 100 per minute in this test's namespace
    bucket = buckets(settings.namespace, "channel.viber", Limits(per_minute=100))
    # When 4 and then 100 are asked for
    first = await limiter.take(bucket, 4)
    second = await limiter.take(bucket, 100)
    # Then the burst (4: two seconds of 100/min) and nothing more yet; a token comes in 0.6 s
    assert first == Grant(4, 0.0)
    assert second.granted == 0
    assert 0.5 < second.retry_after <= 0.6


async def test_redis_buckets_are_shared_and_atomic(
    settings: Settings, redis: aioredis.Redis
) -> None:
    # Given 20 worker tasks on separate connections sharing a bucket of 100 per 2 s
    clients = [aioredis.Redis.from_url(settings.redis_url) for _ in range(4)]
    limiters = [RedisRateLimiter(c) for c in clients]
    bucket = buckets(settings.namespace, "campaign.1", Limits(per_hour=180_000))
    try:
        # When each asks for 10 tokens, three times, all at once
        grants = await asyncio.gather(*(limiters[i % 4].take(bucket, 10) for i in range(60)))
    finally:
        for c in clients:
            await c.aclose()
    # Then exactly the 100 of the bucket are granted in total (and the few that trickled
    # in meanwhile at 50 a second), never more
    assert 100 <= sum(g.granted for g in grants) < 120
    # And the bucket's key is in the test's namespace and expires once it would be full
    key = f"{settings.namespace}:rl:campaign.1:hour"
    assert 0 < await redis.pttl(key) <= 4000


async def test_measured_rate_follows_the_configured_rate(
    settings: Settings, redis: aioredis.Redis
) -> None:
    # Given 600 per minute on SMS, shared by two workers
    bucket = buckets(settings.namespace, "channel.sms", Limits(per_minute=600))
    limiter = RedisRateLimiter(redis)
    burst = await limiter.take(bucket, 10_000)
    assert burst.granted == 20  # the idle bucket's burst: two seconds' worth
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
    assert [(c.channel, c.provider) for c in configured] == [
        ("sms", None),
        ("sms", "acme"),
        ("viber", None),
    ]
    # When an SMS of campaign 42 (300/min) goes through provider acme
    found = buckets_for_send(
        "ns",
        configured,
        channel="sms",
        provider="acme",
        campaign_id=42,
        campaign_limits=Limits(per_minute=300),
    )
    # Then it takes from the channel's two, the provider's and the campaign's buckets
    assert found == [
        Bucket("ns:rl:channel.sms:minute", 200, 100.0),
        Bucket("ns:rl:channel.sms:hour", 112, 200_000 / 3600),
        Bucket("ns:rl:provider.sms.acme:minute", 34, 1000 / 60),
        Bucket("ns:rl:campaign.42:minute", 10, 5.0),
    ]
    # And an e-mail has no bucket at all
    assert buckets_for_send("ns", configured, channel="email") == []


async def test_limit_changes_are_journalled(app_conn: asyncpg.Connection) -> None:
    # Given a limit set, changed and removed by an admin
    await rate_limit.set_limit(app_conn, ADMIN, channel="sms", per_minute=600)
    await rate_limit.set_limit(app_conn, ADMIN, channel="sms", per_minute=1200)
    await rate_limit.remove_limit(app_conn, ADMIN, channel="sms")
    # Then the journal has each step, newest first
    history = await audit_journal.history(app_conn, "rate_limit", "sms", limit=10, pii_visible=True)
    assert [(h.action, h.field, h.old_value, h.new_value) for h in history] == [
        ("delete", None, {"per_minute": 1200, "per_hour": None}, None),
        ("update", "per_minute", 600, 1200),
        ("create", None, None, {"per_minute": 600, "per_hour": None}),
    ]
    assert await rate_limit.list_limits(app_conn) == []
    with pytest.raises(NotFound):
        await rate_limit.remove_limit(app_conn, ADMIN, channel="sms")


@pytest.mark.parametrize(
    "values, field",
    [
        ({"channel": "fax", "per_minute": 1}, "channel"),
        ({"channel": "sms"}, "per_minute"),
        ({"channel": "sms", "per_minute": 0}, "per_minute"),
        ({"channel": "sms", "per_hour": 10**9}, "per_hour"),
        ({"channel": "sms", "provider": "Bad Name", "per_hour": 5}, "provider"),
    ],
)
async def test_bad_limits_name_the_field(
    app_conn: asyncpg.Connection, values: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await rate_limit.set_limit(app_conn, ADMIN, **values)  # type: ignore[arg-type]  # a bad value on purpose
    assert caught.value.field == field
