"""Case SLA (issue 5 point 5): calendars and policies through the API, deadlines kept by
the database on every path (intake, transitions, On Hold, reclassification, outbound
messages, merges), the evaluator's warnings, breaches and escalations, the SLA block and
a deadline changed by hand. Time is driven by timestamps and ``now`` arguments."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
import pytest
from conftest import login_as
from test_cases_support import bad, events_of, journal, ok

from crm.cases import (
    automation,
    business_time,
    calendars,
    duplicates,
    intake,
    sla,
    store,
    transitions,
)
from crm.cases.calendars import BusinessCalendarSpec
from crm.cases.channels import Inbound
from crm.cases.sla_evaluator import run_sla_cycle
from herald import clock
from herald.audit import Actor
from herald.db import create_pool

KYIV = ZoneInfo("Europe/Kyiv")
H = 3600.0
OFFICE = {d: [{"start": "08:00", "end": "17:00"}] for d in ("mon", "tue", "wed", "thu", "fri")}


def kyiv(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=KYIV)


async def _calendar(client: Any, headers: dict[str, str], **kw: Any) -> dict[str, Any]:
    body = {"name": kw.pop("name", "Офіс"), "week": kw.pop("week", OFFICE), **kw}
    return await ok(
        await client.post("/api/v1/business-calendars", headers=headers, json=body), 201
    )


async def _policy(
    client: Any, headers: dict[str, str], calendar_id: int, **kw: Any
) -> dict[str, Any]:
    body = {"name": kw.pop("name", "Політика"), "calendar_id": calendar_id, **kw}
    return await ok(await client.post("/api/v1/case-sla-policies", headers=headers, json=body), 201)


async def _case(conn: asyncpg.Connection, created_at: dt.datetime, **kw: Any) -> int:
    """A case inserted as a loader would (the triggers plan its SLA as on intake)."""
    columns = {
        "channel": "site",
        "body": "Питання",
        "text_hash": b"\x00",
        "created_by_login": "test",
        "created_at": created_at,
        "status_changed_at": created_at,
        "last_inbound_at": created_at,
        "case_type": "technical",
        **kw,
    }
    names = ", ".join(columns)
    marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return await conn.fetchval(
        f"INSERT INTO cases ({names}) VALUES ({marks}) RETURNING id", *columns.values()
    )


async def _move(conn: asyncpg.Connection, case_id: int, status: str, at: dt.datetime) -> None:
    await conn.execute(
        "UPDATE cases SET status = $2, status_changed_at = $3 WHERE id = $1", case_id, status, at
    )


async def _row(conn: asyncpg.Connection, case_id: int) -> asyncpg.Record:
    return await conn.fetchrow(
        "SELECT c.*, k.next_check_at AS sla_next_check_at FROM cases c "
        "LEFT JOIN case_sla_checks k ON k.case_id = c.id WHERE c.id = $1",
        case_id,
    )


# -- calendars and policies ------------------------------------------------------------------


async def test_calendar_crud_and_bad_input_names_the_field(client, demo_users) -> None:
    admin = await login_as(client, "admin")
    operator = await login_as(client, "operator_cc")
    created = await _calendar(
        client,
        admin,
        holidays=[
            {"date": "2026-12-25", "name": "Різдво"},
            {"date": "2026-12-31", "hours": [{"start": "08:00", "end": "13:00"}]},
        ],
    )
    assert created["time_zone"] == "Europe/Kyiv" and created["week"]["sat"] == []
    assert [h["date"] for h in created["holidays"]] == ["2026-12-25", "2026-12-31"]
    listed = await ok(await client.get("/api/v1/business-calendars", headers=operator))
    assert [c["id"] for c in listed] == [created["id"]]
    url = f"/api/v1/business-calendars/{created['id']}"
    week = {
        **OFFICE,
        "sat": [{"start": "10:00", "end": "12:00"}, {"start": "13:00", "end": "24:00"}],
    }
    updated = await ok(
        await client.put(
            url, headers=admin, json={"name": "Офіс Київ", "week": week, "time_zone": "Europe/Kyiv"}
        )
    )
    assert updated["name"] == "Офіс Київ" and len(updated["week"]["sat"]) == 2
    cases: list[tuple[dict[str, Any], str]] = [
        ({"week": {"mon": [{"start": "25:00", "end": "26:00"}]}}, "week.mon[0].start"),
        ({"week": {"tue": [{"start": "09:00", "end": "08:00"}]}}, "week.tue[0].end"),
        (
            {
                "week": {
                    "wed": [{"start": "08:00", "end": "12:00"}, {"start": "11:00", "end": "17:00"}]
                }
            },
            "week.wed[1]",
        ),
        ({"week": {"thu": [{"start": "8:00", "end": "12:00"}]}}, "week.thu[0].start"),
        ({"week": OFFICE, "time_zone": "Europe/Atlantis"}, "time_zone"),
        (
            {"week": OFFICE, "holidays": [{"date": "2026-05-01"}, {"date": "2026-05-01"}]},
            "holidays[1].date",
        ),
        (
            {
                "week": OFFICE,
                "holidays": [{"date": "2026-05-01", "hours": [{"start": "09:00", "end": "09:00"}]}],
            },
            "holidays[0].hours[0].end",
        ),
        ({"week": OFFICE, "holidays": [{"date": "1 May"}]}, "holidays[0].date"),
        ({"week": {"fri": [{"start": "08:00"}]}}, "week.fri[0].end"),
    ]
    for body, field in cases:
        await bad(
            await client.post(
                "/api/v1/business-calendars", headers=admin, json={"name": "Зламаний", **body}
            ),
            field,
        )
    await bad(
        await client.post(
            "/api/v1/business-calendars", headers=admin, json={"name": "Офіс Київ", "week": OFFICE}
        ),
        "",
        409,
    )
    await bad(
        await client.post(
            "/api/v1/business-calendars", headers=operator, json={"name": "x", "week": OFFICE}
        ),
        "",
        403,
    )
    policy = await _policy(client, admin, created["id"], first_response_minutes=60)
    await bad(await client.delete(url, headers=admin), "", 409)
    await ok(await client.delete(f"/api/v1/case-sla-policies/{policy['id']}", headers=admin), 204)
    await ok(await client.delete(url, headers=admin), 204)
    await bad(await client.get(url, headers=operator), "", 404)
    # name, week and holidays changed: one update each
    assert [e["action"] for e in await journal(client, f"business_calendar/{created['id']}")] == [
        "delete",
        "update",
        "update",
        "update",
        "create",
    ]


async def test_policy_matching_most_specific_wins_and_follows_reclassification(
    client, demo_users, app_conn
) -> None:
    admin = await login_as(client, "admin")
    cal = await _calendar(client, admin)
    leak = await app_conn.fetchval("SELECT id FROM case_categories WHERE code = 'supply.leak'")
    technical = await _policy(
        client, admin, cal["id"], name="Технічні", case_type="technical", first_response_minutes=240
    )
    urgent = await _policy(
        client,
        admin,
        cal["id"],
        name="Технічні термінові",
        case_type="technical",
        priority="urgent",
        first_response_minutes=30,
    )
    leak_tech = await _policy(
        client,
        admin,
        cal["id"],
        name="Витік",
        case_type="technical",
        category_id=leak,
        first_response_minutes=15,
        resolution_minutes=120,
    )
    leak_any = await _policy(
        client, admin, cal["id"], name="Витік будь-який", category_id=leak, resolution_minutes=240
    )
    # Same scope twice, no target, unknown calendar or category: refused naming the field
    await bad(
        await client.post(
            "/api/v1/case-sla-policies",
            headers=admin,
            json={
                "name": "Ще одна",
                "calendar_id": cal["id"],
                "case_type": "technical",
                "first_response_minutes": 10,
            },
        ),
        "",
        409,
    )
    await bad(
        await client.post(
            "/api/v1/case-sla-policies",
            headers=admin,
            json={"name": "Без цілей", "calendar_id": cal["id"], "priority": "low"},
        ),
        "first_response_minutes",
    )
    await bad(
        await client.post(
            "/api/v1/case-sla-policies",
            headers=admin,
            json={"name": "x", "calendar_id": 10**9, "first_response_minutes": 10},
        ),
        "calendar_id",
    )
    await bad(
        await client.post(
            "/api/v1/case-sla-policies",
            headers=admin,
            json={
                "name": "x",
                "calendar_id": cal["id"],
                "category_id": 10**9,
                "first_response_minutes": 10,
            },
        ),
        "category_id",
    )
    await bad(
        await client.post(
            "/api/v1/case-sla-policies",
            headers=admin,
            json={
                "name": "x",
                "calendar_id": cal["id"],
                "warning_percent": 100,
                "first_response_minutes": 10,
            },
        ),
        "warning_percent",
    )
    at = kyiv(2026, 12, 7, 9)
    expect = {
        await _case(app_conn, at, priority="urgent", category_id=leak): leak_tech["id"],
        await _case(app_conn, at, priority="urgent"): urgent["id"],
        await _case(app_conn, at): technical["id"],
        await _case(app_conn, at, case_type="financial", category_id=leak): leak_any["id"],
        await _case(app_conn, at, case_type="financial"): None,
    }
    for case_id, policy_id in expect.items():
        row = await _row(app_conn, case_id)
        assert row["sla_policy_id"] == policy_id, (case_id, dict(row))
        assert row["sla_state"] == ("none" if policy_id is None else "ok")
    first = next(iter(expect))
    assert (await _row(app_conn, first))["first_response_due_at"] == kyiv(2026, 12, 7, 9, 15)
    # The operator reclassifies through the API: the policy and deadlines follow
    operator = await login_as(client, "operator_cc")
    await ok(
        await client.patch(
            f"/api/v1/cases/{first}/classification",
            headers=operator,
            json={"case_type": "financial"},
        )
    )
    row = await _row(app_conn, first)
    assert row["sla_policy_id"] == leak_any["id"]
    assert row["first_response_due_at"] is None
    assert row["resolution_due_at"] == kyiv(2026, 12, 7, 13)
    await ok(
        await client.patch(
            f"/api/v1/cases/{first}/classification",
            headers=operator,
            json={
                "category_id": await app_conn.fetchval(
                    "SELECT id FROM case_categories WHERE code = 'info'"
                )
            },
        )
    )
    assert (await _row(app_conn, first))["sla_policy_id"] is None
    assert (await _row(app_conn, first))["sla_state"] == "none"
    # A used policy cannot be deleted; a deactivated one no longer applies
    await bad(
        await client.delete(f"/api/v1/case-sla-policies/{technical['id']}", headers=admin), "", 409
    )
    await ok(
        await client.put(
            f"/api/v1/case-sla-policies/{technical['id']}",
            headers=admin,
            json={
                "name": "Технічні",
                "calendar_id": cal["id"],
                "case_type": "technical",
                "first_response_minutes": 240,
                "is_active": False,
            },
        )
    )
    assert (await _row(app_conn, await _case(app_conn, at)))["sla_policy_id"] is None
    # ... and the open cases it applied to were planned again (issue 20 point 9)
    assert [e["action"] for e in await journal(client, f"case_sla_policy/{technical['id']}")] == [
        "replan",
        "update",
        "create",
    ]


# -- deadlines -------------------------------------------------------------------------------


async def test_business_hours_sla_with_a_holiday_and_an_on_hold_pause(
    client, demo_users, app_conn
) -> None:
    admin = await login_as(client, "admin")
    cal = await _calendar(client, admin, holidays=[{"date": "2026-12-25", "name": "Різдво"}])
    await _policy(
        client,
        admin,
        cal["id"],
        case_type="technical",
        first_response_minutes=120,
        resolution_minutes=16 * 60,
    )
    # Thursday 24 Dec 16:00; Friday 25th is a holiday, then the weekend
    case_id = await _case(app_conn, kyiv(2026, 12, 24, 16))
    row = await _row(app_conn, case_id)
    assert row["first_response_due_at"] == kyiv(2026, 12, 28, 9)
    assert row["first_response_warn_at"] == kyiv(2026, 12, 28, 8, 36)  # 80 % of 2 h
    assert row["resolution_due_at"] == kyiv(2026, 12, 29, 14)
    assert row["sla_state"] == "ok" and row["sla_next_check_at"] == kyiv(2026, 12, 28, 8, 36)
    # Taken into work Monday 08:30 (the first response), On Hold 10:00 to Tuesday 10:00
    await _move(app_conn, case_id, "in_progress", kyiv(2026, 12, 28, 8, 30))
    await _move(app_conn, case_id, "on_hold", kyiv(2026, 12, 28, 10))
    row = await _row(app_conn, case_id)
    assert row["first_response_at"] == kyiv(2026, 12, 28, 8, 30)
    assert row["sla_paused_at"] == kyiv(2026, 12, 28, 10)
    paused = (await sla.sla_for(app_conn, [case_id], now=kyiv(2026, 12, 29, 9)))[case_id]
    assert paused.first_response is not None and paused.resolution is not None
    assert paused.paused and paused.first_response.met is True
    # While paused the remaining time stands still: 3 h used of 16 by Monday 10:00
    assert paused.resolution.remaining_seconds == 13 * H
    await _move(app_conn, case_id, "in_progress", kyiv(2026, 12, 29, 10))
    row = await _row(app_conn, case_id)
    # 9 working hours on hold (7 on Monday, 2 on Tuesday): due moves from Tue 14:00 to Wed 14:00
    assert row["sla_paused_at"] is None and row["sla_paused_seconds"] == 9 * H
    assert row["resolution_due_at"] == kyiv(2026, 12, 30, 14)
    block = (await sla.sla_for(app_conn, [case_id], now=kyiv(2026, 12, 29, 16)))[case_id]
    assert block.resolution is not None
    assert not block.paused and block.resolution.remaining_seconds == 7 * H
    late = (await sla.sla_for(app_conn, [case_id], now=kyiv(2026, 12, 31, 9)))[case_id]
    assert late.resolution is not None
    assert late.resolution.remaining_seconds == -4 * H and late.resolution.met is False
    # Resolved on Wednesday 12:00: met; reopened: cleared and counted
    await _move(app_conn, case_id, "resolved", kyiv(2026, 12, 30, 12))
    assert (await _row(app_conn, case_id))["resolved_at"] == kyiv(2026, 12, 30, 12)
    done = (await sla.sla_for(app_conn, [case_id], now=kyiv(2027, 1, 5, 9)))[case_id]
    assert done.resolution is not None
    assert done.resolution.met is True and done.resolution.remaining_seconds is None
    await _move(app_conn, case_id, "in_progress", kyiv(2026, 12, 30, 15))
    row = await _row(app_conn, case_id)
    assert row["resolved_at"] is None and row["reopen_count"] == 1


async def test_dst_change_and_sql_sums_agree_with_the_arithmetic(
    client, demo_users, app_conn
) -> None:
    admin = await login_as(client, "admin")
    split = [{"start": "08:00", "end": "12:00"}, {"start": "13:00", "end": "17:00"}]
    week = {d: split for d in ("mon", "tue", "wed", "thu", "fri")}
    cal = await _calendar(
        client,
        admin,
        week=week,
        holidays=[
            {"date": "2026-03-09", "name": "Тест"},
            {"date": "2026-10-30", "hours": [{"start": "08:00", "end": "10:00"}]},
        ],
    )
    await _policy(client, admin, cal["id"], first_response_minutes=120)
    # Friday 27 March 16:00 (+02:00) + 2 h -> Monday 30 March 09:00 (+03:00) = 06:00 UTC
    case_id = await _case(app_conn, kyiv(2026, 3, 27, 16))
    due = (await _row(app_conn, case_id))["first_response_due_at"]
    assert due == dt.datetime(2026, 3, 30, 6, tzinfo=dt.UTC)
    spec = BusinessCalendarSpec(
        name="x",
        week=msgspec.convert(week, calendars.WeekHours),
        holidays=msgspec.convert(cal["holidays"], list[calendars.Holiday], strict=False),
    )
    arithmetic = calendars.to_calendar(spec)
    rng = random.Random(5)
    for _ in range(150):
        start = kyiv(2026, 1, 1) + dt.timedelta(minutes=rng.randrange(0, 60 * 24 * 700))
        seconds = rng.choice([60.0, 1800.0, 4 * H, 8 * H, 41 * H, rng.uniform(1, 300 * H)])
        expected = business_time.add_business_seconds(arithmetic, start, seconds)
        got = await app_conn.fetchval("SELECT business_add($1, $2, $3)", cal["id"], start, seconds)
        assert abs((got - expected).total_seconds()) < 1e-3, (start, seconds, got, expected)
        end = start + dt.timedelta(minutes=rng.randrange(0, 60 * 24 * 40))
        between = await app_conn.fetchval(
            "SELECT business_between($1, $2, $3)", cal["id"], start, end
        )
        assert abs(between - business_time.business_seconds_between(arithmetic, start, end)) < 1e-3


async def test_first_response_by_outbound_message_or_leaving_new_and_every_status_path(
    client, demo_users, app_conn
) -> None:
    admin = await login_as(client, "admin")
    cal = await _calendar(
        client,
        admin,
        week={
            d: [{"start": "00:00", "end": "24:00"}]
            for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        },
    )
    await _policy(client, admin, cal["id"], first_response_minutes=60, resolution_minutes=600)
    site = Actor(login="forms")
    # Real intake: a policy without type applies to every case
    first = (await intake.ingest(app_conn, site, Inbound(channel="site", text="Питання 1"))).case_id
    row = await _row(app_conn, first)
    assert row["sla_state"] == "ok" and row["first_response_due_at"] is not None
    # An outbound message is the first response; a later move out of new does not replace it
    sent_at = row["created_at"] + dt.timedelta(minutes=5)
    await app_conn.execute(
        "INSERT INTO case_events (case_id, at, kind, actor_login, channel, direction, body) "
        "VALUES ($1, $2, 'message', 'operator', 'site', 'out', 'Відповідь')",
        first,
        sent_at,
    )
    assert (await _row(app_conn, first))["first_response_at"] == sent_at
    operator = await login_as(client, "operator_cc")
    await ok(
        await client.post(
            f"/api/v1/cases/{first}/status", headers=operator, json={"status": "in_progress"}
        )
    )
    assert (await _row(app_conn, first))["first_response_at"] == sent_at
    # Leaving new first counts too (transitions.apply); On Hold sets the pause and clears it
    second = (
        await intake.ingest(app_conn, site, Inbound(channel="site", text="Питання 2"))
    ).case_id
    async with app_conn.transaction():
        locked = await store.get_case(app_conn, second, lock=True)
        case = await transitions.apply(app_conn, site, locked, "in_progress")
    row = await _row(app_conn, second)
    assert row["first_response_at"] == row["status_changed_at"]
    await transitions.change_status(app_conn, site, second, "on_hold", None)
    row = await _row(app_conn, second)
    assert row["sla_paused_at"] is not None and row["sla_next_check_at"] is not None
    await transitions.change_status(app_conn, site, second, "in_progress", None)
    assert (await _row(app_conn, second))["sla_paused_at"] is None
    await transitions.change_status(app_conn, site, second, "resolved", None)
    assert (await _row(app_conn, second))["resolved_at"] is not None
    # A merge closes the source: no more checks
    third = (await intake.ingest(app_conn, site, Inbound(channel="site", text="Питання 3"))).case_id
    await duplicates.merge(app_conn, site, third, first)
    row = await _row(app_conn, third)
    assert row["status"] == "closed" and row["sla_next_check_at"] is None
    assert case.status == "in_progress"


# -- the evaluator and escalations -----------------------------------------------------------


@pytest.mark.clock(kyiv(2026, 12, 7, 8))
async def test_evaluator_warns_breaches_and_escalates_once(
    client, demo_users, settings, app_conn
) -> None:
    admin = await login_as(client, "admin")
    supervisor = await login_as(client, "supervisor")
    cal = await _calendar(client, admin)
    await _policy(
        client,
        admin,
        cal["id"],
        name="Норма",
        case_type="technical",
        priority="normal",
        first_response_minutes=60,
        resolution_minutes=480,
    )
    await _policy(
        client,
        admin,
        cal["id"],
        name="Високий",
        case_type="technical",
        priority="high",
        first_response_minutes=30,
        resolution_minutes=240,
    )
    notify = await ok(
        await client.post(
            "/api/v1/case-escalation-rules",
            headers=admin,
            json={
                "name": "Попередити",
                "on_level": "warning",
                "target": "first_response",
                "notify_supervisors": True,
            },
        ),
        201,
    )
    raise_ = await ok(
        await client.post(
            "/api/v1/case-escalation-rules",
            headers=admin,
            json={
                "name": "Підвищити",
                "on_level": "breached",
                "target": "first_response",
                "case_type": "technical",
                "raise_priority": "step",
                "reassign_group": "line2",
                "notify_supervisors": True,
            },
        ),
        201,
    )
    # A rule for another type never fires here
    await ok(
        await client.post(
            "/api/v1/case-escalation-rules",
            headers=admin,
            json={
                "name": "Фінанси",
                "on_level": "breached",
                "case_type": "financial",
                "raise_priority": "urgent",
            },
        ),
        201,
    )
    await bad(
        await client.post(
            "/api/v1/case-escalation-rules",
            headers=admin,
            json={"name": "Нічого", "on_level": "warning"},
        ),
        "notify_supervisors",
    )
    await bad(
        await client.post(
            "/api/v1/case-escalation-rules",
            headers=admin,
            json={"name": "x", "on_level": "late", "notify_supervisors": True},
        ),
        "on_level",
    )
    agent = await app_conn.fetchval(
        "SELECT id FROM users WHERE login = $1", demo_users["operator_cc"]
    )
    case_id = await _case(app_conn, kyiv(2026, 12, 7, 9), group_code="line1", assignee_id=agent)
    other = await _case(app_conn, kyiv(2026, 12, 7, 12))
    pool = await create_pool(settings)
    try:
        # Monday 09:00, first response due 10:00, warning at 09:48: nothing due at 09:30
        assert await run_sla_cycle(pool, now=kyiv(2026, 12, 7, 9, 30)) == 0
        assert await run_sla_cycle(pool, now=kyiv(2026, 12, 7, 9, 50)) == 1
        row = await _row(app_conn, case_id)
        assert row["sla_state"] == "warning" and row["sla_next_check_at"] == kyiv(2026, 12, 7, 10)
        assert await run_sla_cycle(pool, now=kyiv(2026, 12, 7, 9, 55)) == 0
        # 10:05: breached -> priority one step up, reassigned to line2 (assignee cleared)
        assert await run_sla_cycle(pool, now=kyiv(2026, 12, 7, 10, 5)) >= 1
        row = await _row(app_conn, case_id)
        assert (row["priority"], row["group_code"], row["assignee_id"]) == ("high", "line2", None)
        # The raised priority replanned the deadlines under the "high" policy (30 min)
        assert row["first_response_due_at"] == kyiv(2026, 12, 7, 9, 30)
        assert row["resolution_due_at"] == kyiv(2026, 12, 7, 13)
        assert row["sla_state"] == "breached"
        # Again and again: nothing more happens (once per rule, target and level)
        await run_sla_cycle(pool, now=kyiv(2026, 12, 7, 10, 6))
        assert await run_sla_cycle(pool, now=kyiv(2026, 12, 7, 10, 7)) == 0
        row = await _row(app_conn, case_id)
        assert row["priority"] == "high"
        escalations = await app_conn.fetch(
            "SELECT rule_id, target, level, notify_supervisors, actions FROM case_escalations "
            "WHERE case_id = $1 ORDER BY id",
            case_id,
        )
        assert [(e["rule_id"], e["level"]) for e in escalations] == [
            (notify["id"], "warning"),
            (raise_["id"], "breached"),
        ]
        assert escalations[1]["actions"] == {
            "notify_supervisors": True,
            "priority": {"from": "normal", "to": "high"},
            "group_code": {"from": "line1", "to": "line2"},
        }
        breaches = await app_conn.fetch(
            "SELECT target, due_at, priority, group_code FROM case_sla_breaches WHERE case_id = $1",
            case_id,
        )
        assert [(b["target"], b["due_at"], b["priority"], b["group_code"]) for b in breaches] == [
            ("first_response", kyiv(2026, 12, 7, 10), "normal", "line1")
        ]
        kinds = [
            (e["kind"], (e["data"] or {}).get("level"))
            for e in await events_of(client, supervisor, case_id)
        ]
        assert kinds.count(("sla", "warning")) == 1 and kinds.count(("sla", "breached")) == 1
        assert kinds.count(("escalation", "warning")) == 1
        assert kinds.count(("escalation", "breached")) == 1
        entries = await journal(client, f"case/{case_id}")
        changed = {(e["field"], e["new_value"]) for e in entries if e["action"] == "update"}
        assert {("priority", "high"), ("group_code", "line2"), ("assignee_id", None)} <= changed
        assert sorted(e["new_value"]["level"] for e in entries if e["action"] == "escalate") == [
            "breached",
            "warning",
        ]
        # The supervisor's notifications
        shown = await ok(
            await client.get("/api/v1/case-escalations?notify=true", headers=supervisor)
        )
        assert [(s["case_id"], s["level"]) for s in shown] == [
            (case_id, "breached"),
            (case_id, "warning"),
        ]
        # The other case (created 12:00, warning at 12:48) goes On Hold first: no checks
        # while it waits, and no warning however long it waits
        assert (await _row(app_conn, other))["sla_state"] == "ok"
        await _move(app_conn, other, "in_progress", kyiv(2026, 12, 7, 12, 10))
        await _move(app_conn, other, "on_hold", kyiv(2026, 12, 7, 12, 20))
        await run_sla_cycle(pool, now=kyiv(2026, 12, 7, 12, 30))
        row = await _row(app_conn, other)
        assert row["sla_next_check_at"] is None and row["sla_state"] == "ok"
        await run_sla_cycle(pool, now=kyiv(2026, 12, 9, 12))
        assert (await _row(app_conn, other))["sla_state"] == "ok"
        # Resolution of the first case overdue at 13:05 -> breached, no rule for it
        await run_sla_cycle(pool, now=kyiv(2026, 12, 7, 13, 5))
        assert (
            await app_conn.fetchval(
                "SELECT count(*) FROM case_sla_breaches WHERE case_id = $1", case_id
            )
            == 2
        )
        assert await app_conn.fetchval("SELECT count(*) FROM case_escalations") == 2
    finally:
        await pool.close()


async def test_sla_block_queue_filter_and_deadline_changed_by_hand(
    client, demo_users, settings, app_conn
) -> None:
    admin = await login_as(client, "admin")
    operator = await login_as(client, "operator_cc")
    cal = await _calendar(
        client,
        admin,
        week={
            d: [{"start": "00:00", "end": "24:00"}]
            for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        },
    )
    await _policy(
        client,
        admin,
        cal["id"],
        case_type="technical",
        first_response_minutes=60,
        resolution_minutes=24 * 60,
    )
    now = clock.now()
    late = await _case(app_conn, now - dt.timedelta(hours=2))
    fresh = await _case(app_conn, now - dt.timedelta(minutes=5))
    none = await _case(app_conn, now, case_type="informational")
    pool = await create_pool(settings)
    try:
        await run_sla_cycle(pool)
    finally:
        await pool.close()
    detail = await ok(await client.get(f"/api/v1/cases/{late}", headers=operator))
    block = detail["sla"]
    assert block["state"] == "breached" and block["paused"] is False
    assert block["first_response"]["met"] is False
    assert -3700 < block["first_response"]["remaining_seconds"] < -3500
    assert block["resolution"]["met"] is None and block["resolution"]["remaining_seconds"] > 0
    assert (await ok(await client.get(f"/api/v1/cases/{none}", headers=operator)))["sla"] == {
        "state": "none",
        "paused": False,
        "paused_at": None,
        "policy_id": None,
        "first_response": None,
        "resolution": None,
    }
    page = await ok(await client.get("/api/v1/cases?sla_state=breached", headers=operator))
    assert [i["id"] for i in page["items"]] == [late]
    assert page["items"][0]["sla"]["state"] == "breached"
    page = await ok(await client.get("/api/v1/cases?open=true", headers=operator))
    assert {i["id"]: i["sla"]["state"] for i in page["items"]} == {
        late: "breached",
        fresh: "ok",
        none: "none",
    }
    await bad(await client.get("/api/v1/cases?sla_state=late", headers=operator), "sla_state")
    # Extend the resolution deadline by hand, with a reason
    new_due = (now + dt.timedelta(days=3)).replace(microsecond=0)
    url = f"/api/v1/cases/{late}/sla"
    changed = await ok(
        await client.patch(
            url,
            headers=operator,
            json={
                "target": "resolution",
                "due_at": new_due.isoformat(),
                "reason": "Потрібен виїзд",
            },
        )
    )
    assert dt.datetime.fromisoformat(changed["resolution"]["due_at"]) == new_due
    events = [e for e in await events_of(client, operator, late) if e["kind"] == "deadline"]
    assert len(events) == 1 and events[0]["data"]["target"] == "resolution"
    assert events[0]["data"]["reason"] == "Потрібен виїзд"
    assert dt.datetime.fromisoformat(events[0]["data"]["new_due_at"]) == new_due
    assert any(e["field"] == "resolution_due_at" for e in await journal(client, f"case/{late}"))
    await bad(
        await client.patch(
            url,
            headers=operator,
            json={"target": "resolution", "due_at": "2026-12-10T10:00:00", "reason": "x"},
        ),
        "due_at",
    )
    await bad(
        await client.patch(
            url,
            headers=operator,
            json={"target": "deadline", "due_at": new_due.isoformat(), "reason": "x"},
        ),
        "target",
    )
    await bad(
        await client.patch(
            url,
            headers=operator,
            json={"target": "resolution", "due_at": new_due.isoformat(), "reason": ""},
        ),
        "reason",
    )
    await bad(
        await client.patch(
            f"/api/v1/cases/{none}/sla",
            headers=operator,
            json={"target": "resolution", "due_at": new_due.isoformat(), "reason": "x"},
        ),
        "",
        409,
    )
    await bad(
        await client.patch(
            f"/api/v1/cases/{late}/sla",
            headers=await login_as(client, "analyst"),
            json={"target": "resolution", "due_at": new_due.isoformat(), "reason": "x"},
        ),
        "",
        403,
    )


@pytest.mark.clock(kyiv(2026, 12, 8, 8))
async def test_two_evaluators_at_once_escalate_each_case_once(
    client, demo_users, settings, app_conn
) -> None:
    admin = await login_as(client, "admin")
    cal = await _calendar(client, admin)
    await _policy(client, admin, cal["id"], first_response_minutes=60, resolution_minutes=480)
    await ok(
        await client.post(
            "/api/v1/case-escalation-rules",
            headers=admin,
            json={
                "name": "Попередити",
                "on_level": "warning",
                "notify_supervisors": True,
                "raise_priority": "urgent",
            },
        ),
        201,
    )
    ids = [await _case(app_conn, kyiv(2026, 12, 8, 9) + dt.timedelta(seconds=i)) for i in range(60)]
    # A resolved case closed by the idle automation (a bulk UPDATE) stops being checked
    idle = await _case(
        app_conn,
        kyiv(2026, 11, 2, 9),
        status="resolved",
        status_changed_at=kyiv(2026, 11, 2, 12),
        last_inbound_at=kyiv(2026, 11, 2, 9),
    )
    pools = [await create_pool(settings), await create_pool(settings)]
    try:
        assert await automation.run_due_automations(pools[0]) == 1
        row = await _row(app_conn, idle)
        assert row["status"] == "closed" and row["sla_next_check_at"] is None
        assert row["resolved_at"] == kyiv(2026, 11, 2, 12)
        now = kyiv(2026, 12, 8, 9, 55)
        counts = await asyncio.gather(*(run_sla_cycle(p, now=now) for p in pools))
        assert sum(counts) >= 60
    finally:
        for p in pools:
            await p.close()
    assert await app_conn.fetchval("SELECT count(*) FROM case_escalations") == 60
    assert await app_conn.fetchval("SELECT count(*) FROM case_sla_warnings") == 60
    assert (
        await app_conn.fetchval("SELECT count(*) FROM case_events WHERE kind = 'escalation'") == 60
    )
    assert {
        r["priority"]
        for r in await app_conn.fetch(
            "SELECT priority FROM cases WHERE id = ANY($1::bigint[])", ids
        )
    } == {"urgent"}


async def test_scheduler_extends_a_calendar_horizon(client, demo_users, settings, app_conn) -> None:
    admin = await login_as(client, "admin")
    cal = await _calendar(client, admin)
    await app_conn.execute(
        "UPDATE business_calendars SET horizon_to = herald_now()::date + 30 WHERE id = $1",
        cal["id"],
    )
    pool = await create_pool(settings)
    try:
        assert await calendars.extend_horizons(pool) == 1
        assert await calendars.extend_horizons(pool) == 0
    finally:
        await pool.close()
    horizon = await app_conn.fetchval(
        "SELECT horizon_to FROM business_calendars WHERE id = $1", cal["id"]
    )
    assert horizon >= clock.today(dt.UTC) + dt.timedelta(days=calendars.EXTEND_BEFORE_DAYS)
    last = await app_conn.fetchval(
        "SELECT max(starts_at) FROM business_calendar_spans WHERE calendar_id = $1", cal["id"]
    )
    assert last.date() >= horizon - dt.timedelta(days=7)
