"""Dynamic segments follow the data; static ones do not; campaigns and stop lists use members."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from dispatch_helpers import Stack, counter, make_clients
from test_segment_compiler import load_population

from crm.segments import catalogue as catalogue_mod
from crm.segments import store
from crm.segments.catalogue import AttributeDeclaration, AttributeValue
from crm.segments.compiler import client_ids
from crm.segments.membership import SegmentMembers
from crm.segments.refresh import refresh_dirty, refresh_relative_dates, run_duty
from herald.audit import SYSTEM
from herald.db import create_pool
from herald.settings import Settings
from rules import stop_lists


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(settings)
    yield pool
    await pool.close()


async def members(conn: asyncpg.Connection, segment_id: int) -> set[int]:
    return {
        r["client_id"]
        for r in await conn.fetch(
            "SELECT client_id FROM segment_members WHERE segment_id = $1", segment_id
        )
    }


async def dirty(conn: asyncpg.Connection) -> set[int]:
    return {r["client_id"] for r in await conn.fetch("SELECT client_id FROM segment_dirty_clients")}


CONDITIONS: dict[str, dict[str, Any]] = {
    "account": {"attribute": "account.region", "op": "equals", "value": "UA-46"},
    "billing": {"attribute": "billing.debt", "op": "gt", "value": 1000},
    "consent": {
        "attribute": "consent.opted_in",
        "op": "equals",
        "value": False,
        "channel": "sms",
        "topic": "debt",
    },
    "external": {"attribute": "ext.shop.orders", "op": "gte", "value": 8},
    "client": {"attribute": "client.birth_date", "op": "lt", "value": "1950-01-01"},
    "usage": {"attribute": "usage.last_at", "op": "within_last_days", "value": 7, "channel": "app"},
    "mixed": {
        "all": [
            {"attribute": "account.status", "op": "equals", "value": "active"},
            {"not": {"attribute": "billing.debt", "op": "equals", "value": 0}},
        ]
    },
}


async def test_dynamic_segments_follow_every_source_and_static_ones_stay(
    app_conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    conn = app_conn
    pop = await load_population(conn, n=120)
    dynamic = {
        name: (await store.create(conn, SYSTEM, name=name, kind="dynamic", condition=c)).id
        for name, c in CONDITIONS.items()
    }
    static = {
        name: (await store.create(conn, SYSTEM, name=name, kind="static", condition=c)).id
        for name, c in CONDITIONS.items()
    }
    before = {name: await members(conn, sid) for name, sid in static.items()}
    # When data changes in every source table
    lviv = await members(conn, dynamic["account"])
    billed = sorted(
        cid for cid, accounts in pop.accounts.items() if any(a["billing"] for a in accounts)
    )
    indebted, unbilled = billed[:3], billed[3]
    outsider = next(cid for cid in billed[4:] if cid not in lviv)
    valued = next(cid for (code, cid) in pop.external if code == "ext.shop.orders")
    opted, aged, newcomer = billed[5], billed[6], 500
    await conn.execute("UPDATE accounts SET region_code = 'UA-46' WHERE client_id = $1", outsider)
    await conn.execute(
        "UPDATE billing_snapshots SET debt = 5000, balance = -5000 "
        "WHERE account_id IN (SELECT id FROM accounts WHERE client_id = ANY($1::bigint[]))",
        indebted,
    )
    await conn.execute(
        "DELETE FROM billing_snapshots WHERE account_id IN "
        "(SELECT id FROM accounts WHERE client_id = $1)",
        unbilled,
    )
    await conn.execute(
        "INSERT INTO consents (client_id, channel, topic, opted_in, source) "
        "VALUES ($1, 'sms', 'debt', false, 'sms_stop') ON CONFLICT (client_id, channel, topic) "
        "DO UPDATE SET opted_in = false",
        opted,
    )
    external_new = next(cid for cid in pop.clients if ("ext.shop.orders", cid) not in pop.external)
    await catalogue_mod.import_values(
        conn,
        SYSTEM,
        "ext.shop.orders",
        [AttributeValue(external_new, 9), AttributeValue(valued, None)],
    )
    await conn.execute("UPDATE clients SET birth_date = '1945-05-09' WHERE id = $1", aged)
    await make_clients(conn, 1, region="UA-46", start=newcomer)  # a new client, account and billing
    await conn.execute(
        "INSERT INTO channel_usage (client_id, channel, first_at, last_at, interactions, "
        "last_type) VALUES ($1, 'app', herald_now(), herald_now(), 1, 'login')",
        newcomer,
    )
    marked = await dirty(conn)
    assert {outsider, *indebted, unbilled, opted, external_new, valued, aged, newcomer} <= marked
    # And the scheduler's duty runs
    assert await run_duty(pool) >= len(marked)
    assert await dirty(conn) == set()
    # Then every dynamic segment holds exactly what its condition selects now
    catalogue = await catalogue_mod.load(conn)
    for name, sid in dynamic.items():
        q = client_ids((await store.compile_condition(conn, CONDITIONS[name]))[0], catalogue)
        now = {r["client_id"] for r in await conn.fetch(q.sql, *q.params)}
        assert await members(conn, sid) == now, name
        assert (await store.get(conn, sid)).member_count == len(now), name
    assert {outsider, newcomer} <= await members(conn, dynamic["account"])
    assert set(indebted) <= await members(conn, dynamic["billing"])
    assert opted in await members(conn, dynamic["consent"])
    assert external_new in await members(conn, dynamic["external"])
    assert valued not in await members(conn, dynamic["external"])
    assert aged in await members(conn, dynamic["client"])
    assert newcomer in await members(conn, dynamic["usage"])
    # and the static ones are the snapshots they were
    for name, sid in static.items():
        assert await members(conn, sid) == before[name], name


async def test_marks_only_what_segments_can_see(app_conn: asyncpg.Connection) -> None:
    conn = app_conn
    await load_population(conn, n=40)
    # Without a dynamic segment nothing is marked
    await store.create(conn, SYSTEM, name="s", kind="static", condition=CONDITIONS["billing"])
    await conn.execute("UPDATE billing_snapshots SET debt = debt + 1")
    assert await dirty(conn) == set()
    await store.create(conn, SYSTEM, name="d", kind="dynamic", condition=CONDITIONS["billing"])
    # A billing refresh that changes nothing catalogued marks nobody
    await conn.execute("UPDATE billing_snapshots SET fetched_at = herald_now()")
    await conn.execute("UPDATE accounts SET street = street || ' '")
    assert await dirty(conn) == set()
    # One mass update marks each affected client once, in one statement
    await conn.execute(
        "UPDATE accounts SET status = CASE status WHEN 'closed' THEN 'active' "
        "ELSE 'closed' END WHERE id % 2 = 0"
    )
    owners = {
        r["client_id"] for r in await conn.fetch("SELECT client_id FROM accounts WHERE id % 2 = 0")
    }
    assert await dirty(conn) == owners
    # An account moved to another client marks both
    await conn.execute("DELETE FROM segment_dirty_clients")
    await conn.execute(
        "UPDATE accounts SET client_id = 2 "
        "WHERE id = (SELECT min(id) FROM accounts WHERE client_id = 1)"
    )
    assert await dirty(conn) == {1, 2}


async def test_a_change_in_an_open_transaction_is_not_lost(
    app_conn: asyncpg.Connection, settings: Settings, pool: asyncpg.Pool
) -> None:
    await load_population(app_conn, n=30)
    sid = (
        await store.create(
            app_conn, SYSTEM, name="d", kind="dynamic", condition=CONDITIONS["billing"]
        )
    ).id
    inside = await members(app_conn, sid)
    with_billing = {
        r["client_id"]
        for r in await app_conn.fetch(
            "SELECT a.client_id FROM billing_snapshots b JOIN accounts a ON a.id = b.account_id"
        )
    }
    client_id = min(with_billing - inside)
    other = await asyncpg.connect(settings.database_url)
    try:
        # Given a change not yet committed (its mark is made, and locked)
        tx = other.transaction()
        await tx.start()
        await other.execute(
            "UPDATE billing_snapshots SET debt = 9999 WHERE account_id IN "
            "(SELECT id FROM accounts WHERE client_id = $1)",
            client_id,
        )
        # When the duty runs meanwhile, it neither waits for it nor sees it
        await refresh_dirty(pool)
        assert client_id not in await members(app_conn, sid)
        await tx.commit()
    finally:
        await other.close()
    # Then the committed change is applied by the next run
    await refresh_dirty(pool)
    assert client_id in await members(app_conn, sid)


async def test_relative_dates_are_re_evaluated_each_day(
    app_conn: asyncpg.Connection, admin_conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    await load_population(app_conn, n=60)
    stale = {"attribute": "billing.last_payment_at", "op": "older_than_days", "value": 30}
    relative = await store.create(app_conn, SYSTEM, name="r", kind="dynamic", condition=stale)
    plain = await store.create(
        app_conn, SYSTEM, name="p", kind="dynamic", condition=CONDITIONS["billing"]
    )
    assert relative.relative_dates and not plain.relative_dates and relative.member_count > 0
    right = await members(app_conn, relative.id)
    # Done today: nothing to do
    assert await refresh_relative_dates(pool) == []
    # Given it was last evaluated yesterday (its members as they were then)
    await admin_conn.execute(
        "DELETE FROM segment_member_rows WHERE set_id = "
        "(SELECT members_set FROM segments WHERE id = $1)",
        relative.id,
    )
    await admin_conn.execute(
        "UPDATE segments SET materialised_at = herald_now() - interval '1 day' "
        "WHERE id = ANY($1::bigint[])",
        [relative.id, plain.id],
    )
    # When the duty runs, only the relative one is evaluated again
    assert await refresh_relative_dates(pool) == [relative.id]
    assert await members(app_conn, relative.id) == right


async def test_stop_list_by_segment_blocks_its_members(app_conn: asyncpg.Connection) -> None:
    await load_population(app_conn, n=50)
    segment = await store.create(
        app_conn, SYSTEM, name="Львів", kind="static", condition=CONDITIONS["account"]
    )
    inside = await members(app_conn, segment.id)
    assert inside and len(inside) < 50
    await stop_lists.add_entry(
        app_conn, SYSTEM, reason="пілот", segment_id=segment.id, topics=["marketing"]
    )
    batch = list(range(1, 51))
    membership = SegmentMembers(app_conn)
    blocked = await stop_lists.blocked_clients(app_conn, batch, "marketing", membership=membership)
    assert blocked == inside
    assert await stop_lists.blocked_clients(app_conn, batch, "debt", membership=membership) == set()
    assert await membership.members_among([segment.id, 999], [*batch, 10_000]) == inside
    assert await membership.members_among([], batch) == set()


async def test_planner_freezes_segment_members(app_conn: asyncpg.Connection) -> None:
    from dispatcher.campaigns import planner
    from dispatcher.campaigns.types import SegmentAudience

    await load_population(app_conn, n=80)
    segment = await store.create(
        app_conn, SYSTEM, name="d", kind="dynamic", condition=CONDITIONS["mixed"]
    )
    inside = await members(app_conn, segment.id)
    template = await app_conn.fetchval(
        "INSERT INTO message_templates (name, topic) VALUES ('t', 'debt') RETURNING id"
    )
    await app_conn.execute(
        "INSERT INTO message_template_versions (template_id, version, variants) VALUES ($1, 1, $2)",
        template,
        {"sms": {"text": "x"}},
    )
    campaign = await app_conn.fetchval(
        "INSERT INTO campaigns (name, template_id, template_version, audience) VALUES ('c', $1, 1, $2) "
        "RETURNING id",
        template,
        {"kind": "segment", "segment_id": segment.id},
    )
    async with app_conn.transaction():
        recipients, batches = await planner.snapshot(
            app_conn, campaign, SegmentAudience(segment.id), shards=4, batch_size=7
        )
    assert recipients == len(inside) and batches >= len(inside) // 7
    frozen = {
        c
        for r in await app_conn.fetch(
            "SELECT client_ids FROM campaign_batches WHERE campaign_id = $1", campaign
        )
        for c in r["client_ids"]
    }
    assert frozen == inside
    # The segment changing afterwards does not change the campaign's audience
    await store.update(app_conn, SYSTEM, segment.id, condition=CONDITIONS["account"])
    after = {
        c
        for r in await app_conn.fetch(
            "SELECT client_ids FROM campaign_batches WHERE campaign_id = $1", campaign
        )
        for c in r["client_ids"]
    }
    assert after == inside != await members(app_conn, segment.id)
    # and the segment cannot be deleted while the campaign is unfinished
    from herald.errors import Conflict

    with pytest.raises(Conflict):
        await store.delete(app_conn, SYSTEM, segment.id)


async def test_campaign_to_a_segment_end_to_end(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 30, region="UA-46")
    await make_clients(stack.conn, 10, region="UA-30", start=100)
    # Given a segment of the Lviv clients
    segment = await stack.call(
        "POST",
        "/api/v1/segments",
        {"name": "Львів", "kind": "static", "condition": CONDITIONS["account"]},
        201,
    )
    assert segment["member_count"] == len(ids)
    template = await stack.template()
    body = {
        "name": "Львів",
        "template_id": template,
        "channel_chain": ["sms"],
        "audience": {"kind": "segment", "segment_id": segment["id"]},
    }
    campaign = (await stack.call("POST", "/api/v1/campaigns", body, 201))["id"]
    await stack.launch(campaign)
    stats = await stack.wait(lambda s: s["status"] == "completed", campaign)
    # Then exactly its members got one SMS each
    assert stats["audience"] == len(ids)
    assert counter(stats, "sent:sms") == len(ids)
    assert (await stack.sim_stats("sms"))["accepted"] == len(ids)


async def test_the_seeder_disables_and_restores_the_segment_triggers(
    admin_conn: asyncpg.Connection,
) -> None:
    from herald.cli.seed import schema
    from herald.cli.seed.generate import TABLES

    await admin_conn.execute(
        "INSERT INTO segments (name, kind, condition, created_by) VALUES "
        "('d', 'dynamic', $1, 'test')",
        {"attribute": "billing.debt", "op": "gt", "value": 1},
    )
    # The seeder's own capture finds the marking triggers of every seeded table it loads ...
    async with admin_conn.transaction():
        saved = [
            d
            for d in await schema.capture(admin_conn, TABLES)
            if d.kind == "trigger" and d.name.startswith("segments_dirty_")
        ]
        assert {d.table for d in saved} == {"clients", "accounts", "billing_snapshots", "consents"}
        # ... a bulk load between drop and restore marks nobody ...
        await schema.drop(admin_conn, saved)
        await make_clients(admin_conn, 20)
        assert await dirty(admin_conn) == set()
        await schema.restore(admin_conn, saved)
    # ... and afterwards they mark again
    await admin_conn.execute("UPDATE accounts SET status = 'closed' WHERE id = 3")
    assert await dirty(admin_conn) == {3}


async def test_external_attribute_declaration_rules(app_conn: asyncpg.Connection) -> None:
    from herald.errors import Conflict, InvalidInput

    spec = AttributeDeclaration(
        code="ext.crm.score",
        label_uk="Оцінка",
        label_en="Score",
        type="enum",
        values=["a", "b"],
        operators=["equals", "in"],
    )
    made = await catalogue_mod.declare(app_conn, SYSTEM, spec)
    assert made.operators == ["equals", "in"]
    with pytest.raises(Conflict):
        await catalogue_mod.declare(app_conn, SYSTEM, spec)
    for bad, field in (
        (dict(code="crm.score"), "code"),
        (dict(operators=["gt"]), "operators"),
        (dict(values=[]), "values"),
        (dict(type="number", values=["x"]), "values"),
        (dict(code="ext.crm.x", label_uk=""), "label_uk"),
    ):
        fields: dict[str, Any] = {
            **dict(code="ext.crm.other", label_uk="x", label_en="x", type="enum", values=["a"]),
            **bad,
        }
        with pytest.raises(InvalidInput) as caught:
            await catalogue_mod.declare(app_conn, SYSTEM, AttributeDeclaration(**fields))
        assert caught.value.field == field
