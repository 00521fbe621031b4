"""SLA facts that re-planning must not lose (issue 20 points 1 and 9): a breach stays
recorded and counted, a deadline set by hand survives a priority change, a category's
policy covers its subcategories, calendar and policy edits re-plan open cases, and a
reopened case does not put its assignee over capacity. The clock is pinned; the
evaluator runs with explicit times."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from conftest import login_as
from test_cases_sla import _calendar, _case, _policy, _row
from test_cases_support import events_of, ok

from crm.cases.sla_evaluator import run_sla_cycle
from dispatcher.realtime import case_notify
from herald import clock
from herald.db import create_pool
from herald.settings import Settings

KYIV = ZoneInfo("Europe/Kyiv")
ALWAYS = {
    d: [{"start": "00:00", "end": "24:00"}]
    for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
}
NOW = dt.datetime(2026, 12, 7, 10, tzinfo=KYIV)  # a Monday


async def _cycle(settings: Settings, now: dt.datetime) -> int:
    pool = await create_pool(settings)
    try:
        return await run_sla_cycle(pool, now=now)
    finally:
        await pool.close()


def _period(day: dt.datetime) -> dict[str, str]:
    start = day.replace(hour=0, minute=0, second=0, microsecond=0)
    return {"from": start.isoformat(), "to": (start + dt.timedelta(days=1)).isoformat()}


@pytest.mark.clock(NOW)
async def test_a_breach_survives_the_escalation_that_raises_the_priority(
    client: Any, demo_users: Any, settings: Settings, app_conn: asyncpg.Connection
) -> None:
    """The demo: the presenter moves a high case's first-response deadline into the past;
    the escalation rule raises it to urgent, whose policy would plan creation + 30 min."""
    admin = await login_as(client, "admin")
    supervisor = await login_as(client, "supervisor")
    cal = await _calendar(client, admin, week=ALWAYS)
    await _policy(
        client,
        admin,
        cal["id"],
        name="Високий",
        case_type="technical",
        priority="high",
        first_response_minutes=240,
        resolution_minutes=2400,
    )
    await _policy(
        client,
        admin,
        cal["id"],
        name="Терміновий",
        case_type="technical",
        priority="urgent",
        first_response_minutes=30,
        resolution_minutes=480,
    )
    await ok(
        await client.post(
            "/api/v1/case-escalation-rules",
            headers=admin,
            json={
                "name": "Підвищити",
                "on_level": "breached",
                "target": "first_response",
                "raise_priority": "urgent",
                "notify_supervisors": True,
            },
        ),
        201,
    )
    now = clock.now()
    case_id = await _case(app_conn, now - dt.timedelta(minutes=10), priority="high")
    by_hand = (now - dt.timedelta(minutes=1)).replace(microsecond=0)
    await ok(
        await client.patch(
            f"/api/v1/cases/{case_id}/sla",
            headers=supervisor,
            json={
                "target": "first_response",
                "due_at": by_hand.isoformat(),
                "reason": "Демонстрація",
            },
        )
    )
    # The evaluator finds the breach and the rule raises the priority
    await _cycle(settings, now + dt.timedelta(seconds=5))
    row = await _row(app_conn, case_id)
    assert row["priority"] == "urgent"
    # The deadline a person set is kept through the re-plan; the breach stays
    assert row["first_response_due_at"] == by_hand
    assert row["resolution_due_at"] == now - dt.timedelta(minutes=10) + dt.timedelta(hours=8)
    await _cycle(settings, now + dt.timedelta(seconds=10))
    row = await _row(app_conn, case_id)
    assert row["sla_state"] == "breached"
    view = await ok(await client.get("/api/v1/supervisor/view", headers=supervisor))
    assert [c["id"] for c in view["breached"]] == [case_id]
    block = (await ok(await client.get(f"/api/v1/cases/{case_id}", headers=supervisor)))["sla"]
    assert block["state"] == "breached" and block["first_response"]["met"] is False
    assert block["first_response"]["set_by_hand"] is True
    assert block["first_response"]["breached_at"] is not None
    stats = await ok(
        await client.get("/api/v1/case-stats", headers=supervisor, params=_period(now))
    )
    assert stats["rows"][0]["first_response_breached"] == 1
    assert stats["rows"][0]["first_response_met"] == 0
    # A first response now (after the breach) does not make it met
    await app_conn.execute(
        "INSERT INTO case_events (case_id, at, kind, actor_login, channel, direction, body) "
        "VALUES ($1, $2, 'message', 'operator', 'site', 'out', 'Відповідь')",
        case_id,
        now + dt.timedelta(minutes=1),
    )
    await _cycle(settings, now + dt.timedelta(minutes=2))
    assert (await _row(app_conn, case_id))["sla_state"] == "breached"
    stats = await ok(
        await client.get("/api/v1/case-stats", headers=supervisor, params=_period(now))
    )
    assert (
        stats["rows"][0]["first_response_met"],
        stats["rows"][0]["first_response_breached"],
    ) == (0, 1)


@pytest.mark.clock(NOW)
async def test_a_breach_stays_when_a_reclassification_moves_the_deadline_later(
    client: Any, demo_users: Any, settings: Settings, app_conn: asyncpg.Connection
) -> None:
    admin = await login_as(client, "admin")
    operator = await login_as(client, "operator_cc")
    cal = await _calendar(client, admin, week=ALWAYS)
    await _policy(
        client, admin, cal["id"], name="Технічні", case_type="technical", first_response_minutes=30
    )
    await _policy(
        client,
        admin,
        cal["id"],
        name="Фінансові",
        case_type="financial",
        first_response_minutes=600,
    )
    now = clock.now()
    case_id = await _case(app_conn, now - dt.timedelta(hours=1))
    await _cycle(settings, now)
    assert (await _row(app_conn, case_id))["sla_state"] == "breached"
    # Reclassified: the financial policy plans the deadline 9 h ahead, and nobody set it by
    # hand, so the new one applies; the breach that happened stays
    await ok(
        await client.patch(
            f"/api/v1/cases/{case_id}/classification",
            headers=operator,
            json={"case_type": "financial"},
        )
    )
    row = await _row(app_conn, case_id)
    assert row["first_response_due_at"] == now + dt.timedelta(hours=9)
    await _cycle(settings, now + dt.timedelta(seconds=10))
    assert (await _row(app_conn, case_id))["sla_state"] == "breached"
    stats = await ok(await client.get("/api/v1/case-stats", headers=operator, params=_period(now)))
    assert stats["rows"][0]["first_response_breached"] == 1
    page = await ok(await client.get("/api/v1/cases?sla_state=breached", headers=operator))
    assert [i["id"] for i in page["items"]] == [case_id]
    kinds = [e["kind"] for e in await events_of(client, operator, case_id)]
    assert kinds.count("sla") == 1


# -- point 9: subcategories, calendar and policy changes, reopening ------------------------


@pytest.mark.clock(NOW)
async def test_a_category_policy_covers_its_subcategories_the_nearest_winning(
    client: Any, demo_users: Any, settings: Settings, app_conn: asyncpg.Connection
) -> None:
    admin = await login_as(client, "admin")
    cal = await _calendar(client, admin, week=ALWAYS)
    ids = {r["code"]: r["id"] for r in await app_conn.fetch("SELECT id, code FROM case_categories")}
    supply = await _policy(
        client,
        admin,
        cal["id"],
        name="Газопостачання",
        category_id=ids["supply"],
        first_response_minutes=120,
    )
    leak = await _policy(
        client,
        admin,
        cal["id"],
        name="Запах газу",
        category_id=ids["supply.leak"],
        first_response_minutes=15,
    )
    at = dt.datetime(2026, 12, 7, 9, tzinfo=KYIV)
    outage = await _case(app_conn, at, category_id=ids["supply.outage"])
    smell = await _case(app_conn, at, category_id=ids["supply.leak"])
    parent = await _case(app_conn, at, category_id=ids["supply"])
    debt = await _case(app_conn, at, category_id=ids["billing.debt"])
    assert [(await _row(app_conn, c))["sla_policy_id"] for c in (outage, smell, parent, debt)] == [
        supply["id"],
        leak["id"],
        supply["id"],
        None,
    ]
    assert (await _row(app_conn, outage))["first_response_due_at"] == at + dt.timedelta(hours=2)
    # An escalation rule of the parent category acts on a subcategory's case too
    await ok(
        await client.post(
            "/api/v1/case-escalation-rules",
            headers=admin,
            json={
                "name": "Газ",
                "on_level": "breached",
                "category_id": ids["supply"],
                "raise_priority": "urgent",
            },
        ),
        201,
    )
    await _cycle(settings, at + dt.timedelta(hours=3))
    assert [(await _row(app_conn, c))["priority"] for c in (outage, smell, debt)] == [
        "urgent",
        "urgent",
        "normal",
    ]


OFFICE = {d: [{"start": "08:00", "end": "17:00"}] for d in ("mon", "tue", "wed", "thu", "fri")}


@pytest.mark.clock(dt.datetime(2026, 12, 21, 10, tzinfo=KYIV))
async def test_a_holiday_added_to_the_calendar_moves_open_deadlines(
    client: Any, demo_users: Any, app_conn: asyncpg.Connection
) -> None:
    admin = await login_as(client, "admin")
    operator = await login_as(client, "operator_cc")
    cal = await _calendar(client, admin, name="Офіс", week=OFFICE)
    await _policy(
        client,
        admin,
        cal["id"],
        case_type="technical",
        first_response_minutes=120,
        resolution_minutes=16 * 60,
    )
    # Thursday 24 Dec 16:00: first response due Friday 25th 09:00, resolution Monday 28th 14:00
    thursday = dt.datetime(2026, 12, 24, 16, tzinfo=KYIV)
    open_case = await _case(app_conn, thursday)
    by_hand = await _case(app_conn, thursday)
    answered = await _case(
        app_conn,
        thursday,
        status="in_progress",
        first_response_at=thursday + dt.timedelta(minutes=30),
    )
    closed = await _case(app_conn, thursday)
    await app_conn.execute(
        "UPDATE cases SET status = 'closed', status_changed_at = $2 WHERE id = $1",
        closed,
        thursday + dt.timedelta(minutes=5),
    )
    assert (await _row(app_conn, open_case))["first_response_due_at"] == dt.datetime(
        2026, 12, 25, 9, tzinfo=KYIV
    )
    set_at = dt.datetime(2026, 12, 25, 12, tzinfo=KYIV)
    await ok(
        await client.patch(
            f"/api/v1/cases/{by_hand}/sla",
            headers=operator,
            json={"target": "first_response", "due_at": set_at.isoformat(), "reason": "Домовились"},
        )
    )
    # The administrator makes Friday 25 December a holiday
    await ok(
        await client.put(
            f"/api/v1/business-calendars/{cal['id']}",
            headers=admin,
            json={
                "name": "Офіс",
                "week": OFFICE,
                "holidays": [{"date": "2026-12-25", "name": "Різдво"}],
            },
        )
    )
    row = await _row(app_conn, open_case)
    assert row["first_response_due_at"] == dt.datetime(2026, 12, 28, 9, tzinfo=KYIV)
    assert row["resolution_due_at"] == dt.datetime(2026, 12, 29, 14, tzinfo=KYIV)
    assert row["first_response_warn_at"] == dt.datetime(2026, 12, 28, 8, 36, tzinfo=KYIV)
    assert row["sla_next_check_at"] is not None
    # Set by hand: kept; its resolution (planned) moves. Answered: its first response stays.
    row = await _row(app_conn, by_hand)
    assert row["first_response_due_at"] == set_at
    assert row["resolution_due_at"] == dt.datetime(2026, 12, 29, 14, tzinfo=KYIV)
    row = await _row(app_conn, answered)
    assert row["first_response_due_at"] == dt.datetime(2026, 12, 25, 9, tzinfo=KYIV)
    assert row["resolution_due_at"] == dt.datetime(2026, 12, 29, 14, tzinfo=KYIV)
    assert (await _row(app_conn, closed))["resolution_due_at"] == dt.datetime(
        2026, 12, 28, 14, tzinfo=KYIV
    )
    # The case's journal says what moved and why
    moved = [e for e in await events_of(client, operator, open_case) if e["kind"] == "deadline"]
    assert sorted(e["data"]["target"] for e in moved) == ["first_response", "resolution"]
    assert all(
        e["data"]["replanned"] == "calendar" and e["data"]["calendar_id"] == cal["id"]
        for e in moved
    )
    assert [
        e["data"]["target"]
        for e in await events_of(client, operator, by_hand)
        if e["kind"] == "deadline" and e["data"].get("replanned")
    ] == ["resolution"]
    # A re-plan is not texted to every client ("deadline changed" is for a person's move)
    assert case_notify.event_name({"kind": "deadline", "data": moved[0]["data"]}) is None
    assert (
        case_notify.event_name({"kind": "deadline", "data": {"target": "resolution"}})
        == "deadline_changed"
    )
    # A rename alone re-plans nothing
    await ok(
        await client.put(
            f"/api/v1/business-calendars/{cal['id']}",
            headers=admin,
            json={
                "name": "Офіс Київ",
                "week": OFFICE,
                "holidays": [{"date": "2026-12-25", "name": "Різдво"}],
            },
        )
    )
    assert (
        len([e for e in await events_of(client, operator, open_case) if e["kind"] == "deadline"])
        == 2
    )


@pytest.mark.clock(NOW)
async def test_a_policy_change_re_plans_the_open_cases_it_covers(
    client: Any, demo_users: Any, app_conn: asyncpg.Connection
) -> None:
    admin = await login_as(client, "admin")
    cal = await _calendar(client, admin, week=ALWAYS)
    body = {
        "name": "Технічні",
        "calendar_id": cal["id"],
        "case_type": "technical",
        "first_response_minutes": 120,
    }
    technical = await _policy(
        client, admin, cal["id"], **{k: v for k, v in body.items() if k != "calendar_id"}
    )
    at = dt.datetime(2026, 12, 7, 9, tzinfo=KYIV)
    case_id = await _case(app_conn, at)
    financial = await _case(app_conn, at, case_type="financial")
    url = f"/api/v1/case-sla-policies/{technical['id']}"
    # The target shortened: the open case follows
    await ok(await client.put(url, headers=admin, json={**body, "first_response_minutes": 60}))
    assert (await _row(app_conn, case_id))["first_response_due_at"] == at + dt.timedelta(hours=1)
    # A more specific policy created: the cases it covers take it
    urgent = await _policy(
        client,
        admin,
        cal["id"],
        name="Технічні термінові",
        case_type="technical",
        priority="urgent",
        first_response_minutes=15,
    )
    await app_conn.execute("UPDATE cases SET priority = 'urgent' WHERE id = $1", financial)
    assert (await _row(app_conn, financial))["sla_policy_id"] is None
    other = await _case(app_conn, at, priority="urgent")
    assert (await _row(app_conn, other))["sla_policy_id"] == urgent["id"]
    # Deactivated: its cases lose the policy and their checks
    await ok(await client.put(url, headers=admin, json={**body, "is_active": False}))
    row = await _row(app_conn, case_id)
    assert (
        row["sla_policy_id"],
        row["sla_state"],
        row["first_response_due_at"],
        row["sla_next_check_at"],
    ) == (None, "none", None, None)
    # ... and take it again when it comes back
    await ok(await client.put(url, headers=admin, json=body))
    row = await _row(app_conn, case_id)
    assert (row["sla_policy_id"], row["sla_state"]) == (technical["id"], "ok")
    assert row["first_response_due_at"] == at + dt.timedelta(hours=2)
    journal = await ok(
        await client.get(f"/api/v1/audit/case_sla_policy/{technical['id']}", headers=admin)
    )
    assert any(e["action"] == "replan" for e in journal["items"])
