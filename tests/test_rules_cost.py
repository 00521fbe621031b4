"""What deciding a 1,000-recipient batch costs, as production does it, against the real services.

Production reads a batch's facts once (``rules.batch.read``: stop lists and consents, the
alert mirror, the cached windows and time zones) and then decides in pure code
(``rules.batch.Rules``: every rule's batch check combined in order, walked down the
chain), then takes rate-limit tokens in bulk. Run ``.venv/bin/pytest -s
tests/test_rules_cost.py`` to see the figures (median of 10 calls each, milliseconds).
Nothing here asserts a duration (speed is for benchmarks, not unit tests): it checks
that every step answers a full batch with one call, and decides what the seed implies.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
import redis.asyncio as aioredis

from crm.segments.membership import SegmentMembers
from dispatcher.recipients import Organisation, load_recipients
from herald import audit
from herald.settings import Settings
from rules import air_raid, batch, fallback, quiet_hours, rate_limit, regions, stop_lists
from rules.decision import Hold, Send, Skip
from rules.quiet_hours import WindowSpec

ADMIN = audit.Actor(login="admin1")
CLIENTS = 20_000
BATCH = 1_000
CALLS = 10
CHAIN = ("email", "viber", "sms")
ORGANISATION = Organisation(
    service_centre="Центр",
    contact_phone="+380441234567",
    cabinet_url="https://cabinet.example",
    app_url="https://app.example",
    payment_url="https://pay.example",
)


async def _seed(conn: asyncpg.Connection) -> list[int]:
    """20,000 clients with an account each (spread over the regions), a phone each and an
    e-mail for every fourth, consents, stop entries."""
    ids = [
        r["id"]
        for r in await conn.fetch(
            "INSERT INTO clients (last_name, first_name) SELECT 'Тест', 'Клієнт' || g "
            "FROM generate_series(1, $1) g RETURNING id",
            CLIENTS,
        )
    ]
    await conn.execute(
        """
        INSERT INTO accounts (client_id, or_number, eic_code, region_code, city, street, building,
                              consumer_type, tariff_code, opened_at)
        SELECT c.id, lpad(c.id::text, 10, '0'), '56X' || lpad(c.id::text, 12, '0') || 'Z',
               (SELECT code FROM regions ORDER BY code OFFSET c.id % 26 LIMIT 1),
               'Київ', 'Хрещатик', '1', 'household', 'household_fixed', '2020-01-01'
        FROM clients c
        """
    )
    await conn.execute(
        """
        WITH made AS (
            INSERT INTO contacts (client_id, phone, email)
            SELECT id, '+38050' || lpad(id::text, 7, '0'),
                   CASE WHEN id % 4 = 0 THEN 'client' || id || '@example.com' END
            FROM clients RETURNING id, client_id)
        INSERT INTO account_contacts (account_id, contact_id, role)
        SELECT a.id, made.id, 'owner' FROM made JOIN accounts a ON a.client_id = made.client_id
        """
    )
    await conn.execute(
        """
        INSERT INTO consents (client_id, channel, topic, opted_in, source)
        SELECT c.id, ch, t, c.id % 3 <> 0, 'import'
        FROM clients c, unnest('{sms,viber,email}'::text[]) ch, unnest('{debt,marketing}'::text[]) t
        WHERE c.id % 2 = 0
        """
    )
    await conn.execute(
        """
        INSERT INTO stop_list_entries (client_id, topics, reason, created_by)
        SELECT id, CASE WHEN id % 2 = 0 THEN '{marketing}'::text[] END, 'seed', 'seed'
        FROM clients WHERE id % 50 = 0
        """
    )
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


@pytest.mark.timeout(300)  # seeding 20,000 clients with contacts takes most of it
async def test_deciding_a_full_batch_costs_one_call_per_rule(
    settings: Settings, app_conn: asyncpg.Connection
) -> None:
    # Given 20,000 clients with accounts, contacts, consents and stop entries, a night
    # window, an alert in Kyiv oblast, configured SMS limits, and a batch of 1,000 of them
    ids = (await _seed(app_conn))[5_000 : 5_000 + BATCH]
    await quiet_hours.create_window(
        app_conn, ADMIN, WindowSpec(name="night", start=dt.time(21), end=dt.time(9))
    )
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        mirror = air_raid.AlertMirror(redis, settings.namespace)
        await air_raid.set_alert(app_conn, mirror, ADMIN, "UA-32", True)
        await rate_limit.set_limit(
            app_conn, ADMIN, channel="sms", per_minute=10_000_000, per_hour=100_000_000
        )
        limiter = rate_limit.RedisRateLimiter(redis)
        limits = await rate_limit.list_limits(app_conn)
        bucket = rate_limit.buckets_for_send(
            settings.namespace,
            limits,
            channel="sms",
            campaign_id=1,
            campaign_limits=rate_limit.Limits(per_minute=10_000_000, per_hour=100_000_000),
        )
        membership = SegmentMembers(app_conn)
        recipients = {r.client_id: r for r in await load_recipients(app_conn, ids, ORGANISATION)}
        stopped, consents = await batch.read(
            app_conn, ids, CHAIN, "marketing", membership=membership
        )
        night, day = (
            dt.datetime(2025, 1, 15, 20, tzinfo=dt.UTC),
            dt.datetime(2025, 1, 15, 10, tzinfo=dt.UTC),
        )

        def facts(now: dt.datetime) -> batch.Facts:
            return batch.Facts(
                topic="marketing",
                urgent=False,
                now=now,
                stopped=stopped,
                consents=consents,
                alerts=alerts,
                windows=windows,
                time_zones=zones,
            )

        zones = await regions.load_time_zones(app_conn)
        windows = await quiet_hours.load_windows(app_conn)
        alerts = await mirror.active_regions()
        chain = fallback.chain_of(CHAIN)
        stage = dict.fromkeys(recipients, 0)

        async def pure(f: Callable[[], object]) -> object:
            return f()

        # When each step of deciding runs on the batch, as the worker runs it
        costs = {
            "recipients: addresses and regions (dispatcher's query, 1 query)": await _median_ms(
                lambda: load_recipients(app_conn, ids, ORGANISATION)
            ),
            "batch.read: stop lists + consents on 3 channels (2 queries)": await _median_ms(
                lambda: batch.read(app_conn, ids, CHAIN, "marketing", membership=membership)
            ),
            "air_raid AlertMirror.active_regions (1 Redis round trip)": await _median_ms(
                mirror.active_regions
            ),
            "quiet_hours.load_windows (1 query; cached by workers)": await _median_ms(
                lambda: quiet_hours.load_windows(app_conn)
            ),
            "regions.load_time_zones (1 query; cached by workers)": await _median_ms(
                lambda: regions.load_time_zones(app_conn)
            ),
            "Rules.decide on sms, by night (pure)": await _median_ms(
                lambda: pure(lambda: batch.Rules(facts(night), recipients).decide(ids, "sms"))
            ),
            "Rules.walk down e-mail, Viber, SMS, by night (pure)": await _median_ms(
                lambda: pure(lambda: batch.Rules(facts(night), recipients).walk(stage, chain))
            ),
            "Rules.walk down e-mail, Viber, SMS, by day (pure)": await _median_ms(
                lambda: pure(lambda: batch.Rules(facts(day), recipients).walk(stage, chain))
            ),
            "rate_limit take 1,000 from 4 buckets (1 Lua call)": await _median_ms(
                lambda: limiter.take(bucket, BATCH)
            ),
        }
        by_night = batch.Rules(facts(night), recipients).walk(stage, chain)
        by_day = batch.Rules(facts(day), recipients).walk(stage, chain)
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{settings.namespace}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()

    print(f"\nbatch of {BATCH} recipients, median of {CALLS} calls:")
    for name, ms in costs.items():
        print(f"  {ms:7.3f} ms  {name}")
    # Then every step answered the whole batch with one call
    assert set(costs) and all(ms > 0 for ms in costs.values()), costs
    # And the decisions are what the seed implies: every 50th client is stop-listed (the
    # chain ends at once), nothing goes by night, clients in Kyiv oblast are held by the alert
    # whatever the hour, and the others are held by quiet hours only at night
    assert len(recipients) == BATCH
    assert len(await stop_lists.blocked_clients(app_conn, ids, "marketing")) == BATCH // 50
    for walked, now in ((by_night, night), (by_day, day)):
        last = {c: moves[-1][1] for c, moves in walked.items() if moves}
        assert sum(1 for d in last.values() if d == Skip("stop_list")) == BATCH // 50
        held = {c: d for c, d in last.items() if isinstance(d, Hold)}
        sent = [c for c, d in last.items() if isinstance(d, Send)]
        assert held and all(
            d.reason == ("air_raid" if recipients[c].region_code == "UA-32" else "quiet_hours")
            for c, d in held.items()
        )
        if now is night:
            assert not sent
        else:
            assert sent and all(d.reason == "air_raid" for d in held.values())
