"""The demo stand's history (herald/cli/demo_history.py): made once, consistent lifecycles,
every time in the past relative to Herald's clock, and a card with a non-empty timeline."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from ui_helpers import ui_login

from herald.cli.demo_history import ensure_demo_history
from herald.cli.demo_setup import ensure_demo_setup
from herald.cli.seed import seed_crm
from herald.db import init_connection
from herald.settings import Settings

KYIV = ZoneInfo("Europe/Kyiv")
NOW = dt.datetime(2026, 4, 15, 12, 30, tzinfo=KYIV)
COUNTS = """
SELECT (SELECT count(*) FROM cases) AS cases, (SELECT count(*) FROM case_events) AS events,
       (SELECT count(*) FROM calls) AS calls, (SELECT count(*) FROM message_events) AS receipts,
       (SELECT count(*) FROM meter_readings) AS readings, (SELECT count(*) FROM timeline_events) AS tl,
       (SELECT count(*) FROM audit_log WHERE entity_type = 'contact') AS contact_changes
"""


@pytest.mark.clock(NOW)
async def test_demo_history_is_made_once_and_is_consistent(
    settings: Settings, demo_users, admin_conn: asyncpg.Connection, client
) -> None:
    await seed_crm(settings, clients=1500, processes=1, progress=False)
    conn = await asyncpg.connect(settings.database_url)
    await init_connection(conn)
    try:
        await ensure_demo_setup(conn)
        made = await ensure_demo_history(conn, clients=400)
        before = dict(await conn.fetchrow(COUNTS))
        again = await ensure_demo_history(conn, clients=400)
        assert dict(await conn.fetchrow(COUNTS)) == before  # idempotent
    finally:
        await conn.close()
    assert again.cases == 0
    assert made.clients == 400 and made.cases >= 400 and 0 < made.open_cases < made.cases
    assert made.calls > 0 and made.messages > 0 and made.readings > 0 and made.contact_changes > 0
    assert before["cases"] == made.cases and before["calls"] == made.calls
    c = admin_conn
    # Every status and channel and both SLA outcomes occur
    statuses = {r["status"] for r in await c.fetch("SELECT DISTINCT status FROM cases")}
    assert statuses == {"new", "in_progress", "on_hold", "resolved", "closed"}, statuses
    channels = {r["channel"] for r in await c.fetch("SELECT DISTINCT channel FROM cases")}
    assert channels == {"call", "viber", "telegram", "site", "cabinet", "email", "app", "walk_in"}
    states = {
        r["sla_state"]
        for r in await c.fetch("SELECT DISTINCT sla_state FROM cases WHERE status = 'closed'")
    }
    assert states == {"ok", "breached"}
    # Nothing in the future or newer than an hour; three months back at most
    newest = await c.fetchval("""SELECT max(t) FROM (SELECT max(at) t FROM case_events UNION ALL
        SELECT max(created_at) FROM cases UNION ALL SELECT max(at) FROM message_events UNION ALL
        SELECT max(at) FROM meter_readings UNION ALL SELECT max(hung_up_at) FROM calls) x""")
    assert newest <= NOW - dt.timedelta(hours=1)
    assert await c.fetchval("SELECT min(created_at) FROM cases") >= NOW - dt.timedelta(days=91)
    # Lifecycles: the status events chain from New to the case's status, in time order,
    # the last one at status_changed_at; first response and resolution where they belong
    bad = await c.fetch("""
        WITH s AS (SELECT case_id, array_agg(to_status ORDER BY at, id) AS path,
                          array_agg(from_status ORDER BY at, id) AS froms, max(at) AS last_at
                   FROM case_events WHERE kind IN ('created', 'status') GROUP BY case_id)
        SELECT c.id, c.status, s.path FROM cases c JOIN s ON s.case_id = c.id
        WHERE s.path[array_length(s.path, 1)] <> c.status
           OR s.path[1] <> 'new'
           OR s.froms[2:] <> s.path[:array_length(s.path, 1) - 1]
           OR s.last_at <> c.status_changed_at
           OR (c.status = 'new') <> (c.first_response_at IS NULL)
           OR (c.status = 'new') <> (c.assignee_id IS NULL)
           OR (c.status IN ('resolved', 'closed')) <> (c.resolved_at IS NOT NULL)
           OR c.resolved_at < c.first_response_at OR c.first_response_at < c.created_at
           OR (c.status = 'on_hold') <> (c.sla_paused_at IS NOT NULL)
        LIMIT 5""")
    assert not bad, bad
    # Each case's journal is in time order (the case page lists it by id)
    assert (
        await c.fetchval("""SELECT count(*) FROM (SELECT at, lag(at) OVER (PARTITION BY case_id
        ORDER BY id) AS before FROM case_events) x WHERE x.before > x.at""")
        == 0
    )
    # A breach is recorded where a deadline was missed, and only there
    assert not await c.fetch(
        """
        SELECT id FROM cases c WHERE (c.first_response_breached_at IS NOT NULL) <> EXISTS (
            SELECT 1 FROM case_sla_breaches b WHERE b.case_id = c.id AND b.target = 'first_response')
           OR (c.first_response_breached_at IS NOT NULL) <> (c.first_response_due_at <
                coalesce(c.first_response_at, $1::timestamptz - interval '1 hour'))
           OR (c.resolution_breached_at IS NOT NULL AND c.resolved_at IS NOT NULL
               AND c.resolved_at <= c.resolution_due_at)
        LIMIT 5""",
        NOW,
    )
    # Open cases are on the SLA evaluator's schedule; every call became its case
    assert (
        await c.fetchval(
            "SELECT count(*) FROM cases WHERE status <> 'closed' AND sla_policy_id "
            "IS NOT NULL AND id NOT IN (SELECT case_id FROM case_sla_checks)"
        )
        == 0
    )
    assert (
        await c.fetchval(
            "SELECT count(*) FROM calls k WHERE NOT EXISTS (SELECT 1 FROM case_events "
            "e WHERE e.external_id = 'call:' || k.call_ref)"
        )
        == 0
    )
    assert await c.fetchval("SELECT count(*) FROM calls WHERE answered_at IS NULL") > 0
    # Receipts: read, delivered and failed ones; contact changes end at the current value
    receipts = {r["status"] for r in await c.fetch("SELECT DISTINCT status FROM message_events")}
    assert {"sent", "delivered", "read", "failed"} <= receipts
    assert (
        await c.fetchval("""SELECT count(*) FROM audit_log a JOIN contacts k ON k.id::text = a.entity_id
        WHERE a.entity_type = 'contact' AND a.field = 'phone' AND a.new_value <> to_jsonb(k.phone)""")
        == 0
    )
    # The card's other blocks: digital channels, shop orders, applications, surveys and calls
    assert made.applications > 0 and made.digital_activity > 0
    for table in ("channel_usage", "shop_orders", "applications"):
        assert await c.fetchval(f"SELECT count(*) FROM {table}") > 0, table
    kinds = {r["kind"] for r in await c.fetch("SELECT DISTINCT kind FROM cx_events")}
    assert kinds == {"survey", "outbound_call"}
    # The demo operators stay below their capacity ("take next" works in the demo)
    loads = await c.fetch("""SELECT u.login, count(k.id) AS n FROM users u
        LEFT JOIN cases k ON k.assignee_id = u.id AND k.status IN ('in_progress', 'on_hold')
        WHERE u.login IN ('operator.cc', 'operator.cos') GROUP BY u.login""")
    assert all(r["n"] <= 3 for r in loads), loads
    assert (
        await c.fetchval(
            "SELECT count(DISTINCT assignee_id) FROM cases WHERE status "
            "IN ('in_progress', 'on_hold')"
        )
        > 2
    )
    # Hand-off tasks: done only on resolved or closed cases, open ones on open cases
    assert made.tasks > 0
    assert (
        await c.fetchval("""SELECT count(*) FROM case_tasks t JOIN cases k ON k.id = t.case_id
        WHERE (t.status = 'done') <> (k.resolved_at IS NOT NULL) OR t.created_at < k.first_response_at
           OR t.closed_at > k.resolved_at""")
        == 0
    )
    assert await c.fetchval("SELECT count(*) FROM case_tasks WHERE status = 'open'") > 0
    # A client with history: the card's timeline is not empty, the case page opens
    client_id, case_id = await c.fetchrow(
        "SELECT client_id, id FROM cases WHERE channel = 'call' AND status = 'closed' ORDER BY id LIMIT 1"
    )
    await ui_login(client, "operator_cc")
    timeline = await (await client.get(f"/ui/clients/{client_id}/timeline")).text()
    kinds = set(re.findall(r'data-kind="([a-z_]+)"', timeline))
    assert {"case", "call"} <= kinds, timeline[:2000]
    page = await client.get(f"/ui/cases/{case_id}")
    assert page.status == 200 and "Закрито" in await page.text()
    queue = await (await client.get("/ui/cases/rows")).text()
    assert queue.count('class="case-row') > 0
