"""Air-raid alerts: durable state and history, the Redis mirror, holding and releasing."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import redis.asyncio as aioredis

from crm import audit as audit_journal
from herald import audit
from herald.errors import InvalidInput
from herald.settings import Settings
from rules import air_raid, regions
from rules.air_raid import (
    AlertChange,
    AlertMirror,
    AlertSnapshot,
    MirrorNotReady,
    set_alert,
    switch_alert,
)
from rules.decision import Hold

ADMIN = audit.Actor(login="admin1", id=None)
INTEGRATION = audit.Actor(login="alerts.in.ua")


@pytest.fixture
def mirror(redis: aioredis.Redis, settings: Settings) -> AlertMirror:
    return AlertMirror(redis, settings.namespace)


def test_batch_check_holds_clients_of_alerted_regions() -> None:
    # Given Kyiv city under alert, and clients in Kyiv, in Lviv, in both, and nowhere known
    alerts = AlertSnapshot(3, frozenset({"UA-30"}))
    regions = {1: ("UA-30",), 2: ("UA-46",), 3: ("UA-30", "UA-46")}
    # When a batch is checked
    held = air_raid.check(alerts, [1, 2, 3, 4], regions)
    # Then the Kyiv clients are held with no release time, naming the region
    assert held == {1: Hold("air_raid", None, "UA-30"), 3: Hold("air_raid", None, "UA-30")}
    # And urgent messages, or no alert at all, hold nobody
    assert air_raid.check(alerts, [1, 2, 3], regions, urgent=True) == {}
    assert air_raid.check(AlertSnapshot(4, frozenset()), [1, 2, 3], regions) == {}
    assert air_raid.lifted(alerts, AlertSnapshot(4, frozenset({"UA-46"}))) == {"UA-30"}


async def test_switching_keeps_state_history_and_journal(app_conn: asyncpg.Connection) -> None:
    # Given no alert anywhere
    # When an integration raises an alert in Kharkiv, raises it again, and an admin lifts it
    on, changed = await switch_alert(app_conn, INTEGRATION, "UA-63", True, source="integration")
    assert changed and on.active and on.version == 1 and on.source == "integration"
    again, changed = await switch_alert(app_conn, INTEGRATION, "UA-63", True, source="integration")
    assert not changed and again.version == 1
    off, changed = await switch_alert(app_conn, ADMIN, "UA-63", False)
    assert changed and not off.active and off.version == 2
    # Then the history holds one closed period with who started and ended it
    [period] = await air_raid.history(app_conn, region_code="UA-63")
    assert (period.started_by, period.start_source) == ("alerts.in.ua", "integration")
    assert (period.ended_by, period.end_source) == ("admin1", "admin")
    assert period.ended_at is not None
    # And the journal has the two switches (the repeat changed nothing)
    entries = await audit_journal.history(
        app_conn, "air_raid_alert", "UA-63", limit=10, pii_visible=True
    )
    assert [(e.actor_login, e.old_value, e.new_value) for e in entries] == [
        ("admin1", True, False),
        ("alerts.in.ua", False, True),
    ]
    assert [s.region_code for s in await air_raid.states(app_conn)] == ["UA-63"]


async def test_unknown_region_or_source_is_refused(app_conn: asyncpg.Connection) -> None:
    with pytest.raises(InvalidInput) as caught:
        await switch_alert(app_conn, ADMIN, "UA-99", True)
    assert caught.value.field == "region_code"
    with pytest.raises(InvalidInput) as caught:
        await switch_alert(app_conn, ADMIN, "UA-30", True, source="rumour")  # type: ignore[arg-type]  # a bad value on purpose
    assert caught.value.field == "source"


async def test_hold_while_active_release_when_lifted(
    app_conn: asyncpg.Connection, mirror: AlertMirror
) -> None:
    # Given the mirror synced and an alert raised in Kyiv through set_alert
    await mirror.sync(app_conn)
    await set_alert(app_conn, mirror, ADMIN, "UA-30", True)
    regions = {1: ("UA-30",), 2: ("UA-46",)}
    # When a worker checks a batch (one Redis read)
    before = await mirror.active_regions()
    # Then the Kyiv client is held and the other goes
    assert air_raid.check(before, [1, 2], regions) == {1: Hold("air_raid", None, "UA-30")}
    # When the alert is lifted
    await set_alert(app_conn, mirror, ADMIN, "UA-30", False)
    after = await mirror.active_regions()
    # Then the mirror's version moved on, Kyiv is lifted, and the released message may go
    assert after.version > before.version
    assert air_raid.lifted(before, after) == {"UA-30"}
    assert air_raid.check(after, [1, 2], regions) == {}


async def test_holders_hear_the_lift_on_pub_sub(
    app_conn: asyncpg.Connection, mirror: AlertMirror
) -> None:
    # Given a scheduler subscribed to alert changes and an alert in Odesa
    await set_alert(app_conn, mirror, ADMIN, "UA-51", True)
    async with mirror.subscribe() as changes:
        # When the alert is lifted
        await set_alert(app_conn, mirror, ADMIN, "UA-51", False)
        # Then the scheduler hears it at once
        change = await asyncio.wait_for(anext(changes), 5)
    assert change == AlertChange("UA-51", False, 2, (await mirror.active_regions()).version)


async def test_an_empty_mirror_is_never_read_as_no_alerts(
    app_conn: asyncpg.Connection, mirror: AlertMirror, redis: aioredis.Redis
) -> None:
    # Given an alert in Sumy recorded in PostgreSQL
    await set_alert(app_conn, mirror, ADMIN, "UA-59", True)
    # When Redis loses the mirror (restart without persistence)
    await redis.delete(mirror.active_key, mirror.versions_key, mirror.counter_key)
    # Then reading it fails loudly instead of answering "no alerts"
    with pytest.raises(MirrorNotReady):
        await mirror.active_regions()
    # And a sync from PostgreSQL restores it
    assert (await mirror.sync(app_conn)).regions == {"UA-59"}


async def test_older_states_never_overwrite_newer_ones(
    app_conn: asyncpg.Connection, mirror: AlertMirror, redis: aioredis.Redis
) -> None:
    # Given an alert raised (version 1) and lifted (version 2) in Poltava
    on, _ = await switch_alert(app_conn, ADMIN, "UA-53", True)
    off, _ = await switch_alert(app_conn, ADMIN, "UA-53", False)
    # When the mirror writes race and arrive newest first
    await mirror.apply([off])
    await mirror.apply([on])
    # Then the mirror keeps the newer state: no alert
    assert (await mirror.active_regions()).regions == frozenset()
    # And a full sync also drops a region Redis holds that PostgreSQL does not know as active
    await redis.sadd(mirror.active_key, "UA-05")
    assert (await mirror.sync(app_conn)).regions == frozenset()


async def test_set_alert_refuses_to_mirror_an_uncommitted_change(
    app_conn: asyncpg.Connection, mirror: AlertMirror
) -> None:
    async with app_conn.transaction():
        with pytest.raises(RuntimeError):
            await set_alert(app_conn, mirror, ADMIN, "UA-30", True)


async def test_a_clients_regions_come_from_their_open_accounts(
    app_conn: asyncpg.Connection,
) -> None:
    # Given a client with an open account in Kyiv and a closed one in Lviv, and a client
    # whose only account (in Odesa) is closed
    a, b = [
        r["id"]
        for r in await app_conn.fetch(
            "INSERT INTO clients (last_name, first_name) VALUES ('А', 'А'), ('Б', 'Б') RETURNING id"
        )
    ]
    await app_conn.executemany(
        """
        INSERT INTO accounts (client_id, or_number, eic_code, region_code, city, street, building,
                              consumer_type, tariff_code, opened_at, status)
        VALUES ($1, $2, $3, $4, 'Місто', 'Вулиця', '1', 'household', 'household_fixed', '2020-01-01', $5)
        """,
        [
            (a, "0000000001", "56X000000000001Z", "UA-30", "active"),
            (a, "0000000002", "56X000000000002Z", "UA-46", "closed"),
            (b, "0000000003", "56X000000000003Z", "UA-51", "closed"),
        ],
    )
    # When the batch's regions are loaded
    where = await regions.load_client_regions(app_conn, [a, b, 999_999])
    # Then the open account decides, a client with only closed accounts keeps their region,
    # and an unknown client has none
    assert where == {a: ("UA-30",), b: ("UA-51",)}
    assert (await regions.load_time_zones(app_conn))["UA-30"] == "Europe/Kyiv"
    # And an alert in Lviv does not hold the client who left it
    assert air_raid.check(AlertSnapshot(1, frozenset({"UA-46"})), [a, b], where) == {}
