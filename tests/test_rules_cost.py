"""What each rule's batch check costs for a 1,000-recipient batch, against the real services.

Run ``.venv/bin/pytest -s tests/test_rules_cost.py`` to see the figures (median of 10
calls each, milliseconds). Nothing here asserts a duration (speed is for benchmarks, not
unit tests): it checks that every rule answers a full batch with one call.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Awaitable, Callable

import asyncpg
import redis.asyncio as aioredis

from herald import audit
from herald.settings import Settings
from rules import (
    air_raid,
    consent,
    decision,
    quiet_hours,
    rate_limit,
    regions,
    stop_lists,
)
from rules.quiet_hours import WindowSpec

ADMIN = audit.Actor(login="admin1")
CLIENTS = 20_000
BATCH = 1_000
CALLS = 10


async def _seed(conn: asyncpg.Connection) -> list[int]:
    """20,000 clients with an account each (spread over the regions), consents, stop entries."""
    ids = [r["id"] for r in await conn.fetch(
        "INSERT INTO clients (last_name, first_name) SELECT 'Тест', 'Клієнт' || g "
        "FROM generate_series(1, $1) g RETURNING id", CLIENTS)]
    await conn.execute(
        """
        INSERT INTO accounts (client_id, or_number, eic_code, region_code, city, street, building,
                              consumer_type, tariff_code, opened_at)
        SELECT c.id, lpad(c.id::text, 10, '0'), '56X' || lpad(c.id::text, 12, '0') || 'Z',
               (SELECT code FROM regions ORDER BY code OFFSET c.id % 26 LIMIT 1),
               'Київ', 'Хрещатик', '1', 'household', 'household_fixed', '2020-01-01'
        FROM clients c
        """)
    await conn.execute(
        """
        INSERT INTO consents (client_id, channel, topic, opted_in, source)
        SELECT c.id, ch, t, c.id % 3 <> 0, 'import'
        FROM clients c, unnest('{sms,viber,email}'::text[]) ch, unnest('{debt,marketing}'::text[]) t
        WHERE c.id % 2 = 0
        """)
    await conn.execute(
        """
        INSERT INTO stop_list_entries (client_id, topics, reason, created_by)
        SELECT id, CASE WHEN id % 2 = 0 THEN '{marketing}'::text[] END, 'seed', 'seed'
        FROM clients WHERE id % 50 = 0
        """)
    await conn.execute("ANALYZE")
    return ids


async def _median_ms(call: Callable[[], Awaitable[object]]) -> float:
    await call()
    spent = []
    for _ in range(CALLS):
        start = time.perf_counter()
        await call()
        spent.append((time.perf_counter() - start) * 1000)
    return statistics.median(spent)


async def test_every_batch_check_runs_on_a_full_batch(settings: Settings,
                                                          app_conn: asyncpg.Connection) -> None:
    # Given 20,000 clients with accounts, consents and stop entries, a night window, an
    # alert in one region, configured SMS limits, and a batch of 1,000 of them
    ids = (await _seed(app_conn))[5_000:5_000 + BATCH]
    await quiet_hours.create_window(app_conn, ADMIN, WindowSpec(name="night", start=dt.time(21),
                                                                end=dt.time(9)))
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        mirror = air_raid.AlertMirror(redis, settings.namespace)
        await air_raid.set_alert(app_conn, mirror, ADMIN, "UA-30", True)
        await rate_limit.set_limit(app_conn, ADMIN, channel="sms", per_minute=10_000_000,
                                   per_hour=100_000_000)
        limiter = rate_limit.RedisRateLimiter(redis)
        limits = await rate_limit.list_limits(app_conn)
        bucket = rate_limit.buckets_for_send(settings.namespace, limits, channel="sms",
                                             campaign_id=1, campaign_limits=rate_limit.Limits(
                                                 per_minute=10_000_000, per_hour=100_000_000))
        zones = await regions.load_time_zones(app_conn)
        where = await regions.load_client_regions(app_conn, ids)
        windows = await quiet_hours.load_windows(app_conn)
        alerts = await mirror.active_regions()
        night = dt.datetime(2025, 1, 15, 20, tzinfo=dt.UTC)
        consents = await consent.load_consents(app_conn, ids, ["email", "viber", "sms"], "marketing")

        async def pure(f: Callable[[], object]) -> object:
            return f()

        # When each check runs 30 times on the batch
        costs = {
            "stop_lists.check (1 query)":
                await _median_ms(lambda: stop_lists.check(app_conn, ids, "marketing")),
            "consent.load_consents, 3 channels (1 query)":
                await _median_ms(lambda: consent.load_consents(
                    app_conn, ids, ["email", "viber", "sms"], "marketing")),
            "consent.check (pure)":
                await _median_ms(lambda: pure(lambda: consent.check(consents, ids, "sms"))),
            "regions.load_client_regions (1 query)":
                await _median_ms(lambda: regions.load_client_regions(app_conn, ids)),
            "air_raid AlertMirror.active_regions (1 Redis round trip)":
                await _median_ms(mirror.active_regions),
            "air_raid.check (pure)":
                await _median_ms(lambda: pure(lambda: air_raid.check(alerts, ids, where))),
            "quiet_hours.load_windows (1 query)":
                await _median_ms(lambda: quiet_hours.load_windows(app_conn)),
            "quiet_hours.check, all held (pure)":
                await _median_ms(lambda: pure(lambda: quiet_hours.check(
                    night, ids, where, zones, windows, channel="sms"))),
            "rate_limit take 1,000 from 4 buckets (1 Lua call)":
                await _median_ms(lambda: limiter.take(bucket, BATCH)),
            "decision.combine of 4 verdicts (pure)":
                await _median_ms(lambda: pure(lambda: decision.combine(
                    ids, {}, consent.check(consents, ids, "sms"), air_raid.check(alerts, ids, where),
                    quiet_hours.check(night, ids, where, zones, windows, channel="sms")))),
        }
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{settings.namespace}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()

    print(f"\nbatch of {BATCH} recipients, median of {CALLS} calls:")
    for name, ms in costs.items():
        print(f"  {ms:7.3f} ms  {name}")
    # Then every check stays far below a per-recipient cost (1,000 x 80 us = 80 ms)
    assert set(costs) and all(ms > 0 for ms in costs.values()), costs
    # And the checks decided what the seed implies
    assert len(await stop_lists.blocked_clients(app_conn, ids, "marketing")) == BATCH // 50
    assert len(quiet_hours.check(night, ids, where, zones, windows, channel="sms")) == BATCH
