"""Reports over the rollups (issue 16) against hand-computed figures on a small data set:
case distribution, trends, FCR and SLA, topics with subtopics, the operator's own report,
the team and backlog, messaging funnels with cost and opt-outs; late corrections
(reclassification, reopening, a new repeat) rewrite the buckets; CSV; bad input."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import asyncpg
import pytest
from conftest import login_as
from test_cases_support import bad, ok

from crm.reports import rollups
from dispatcher import reports as messaging

UTC = dt.UTC
pytestmark = pytest.mark.clock(dt.datetime(2026, 12, 7, 10, tzinfo=UTC))
NOV = {"from": "2026-11-01T00:00:00+02:00", "to": "2026-12-01T00:00:00+02:00"}


def at(day: int, hour: int = 8, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def s(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=seconds)


async def _case(conn: asyncpg.Connection, created: dt.datetime, **kw: Any) -> int:
    columns = {
        "channel": "call",
        "body": "Питання",
        "text_hash": b"\x00",
        "created_by_login": "test",
        "created_at": created,
        "status_changed_at": created,
        "last_inbound_at": created,
        "case_type": "technical",
        "status": "new",
        **kw,
    }
    if "category" in columns:
        code = columns.pop("category")
        columns["category_id"] = await conn.fetchval(
            "SELECT id FROM case_categories WHERE code = $1", code
        )
    marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return await conn.fetchval(
        f"INSERT INTO cases ({', '.join(columns)}) VALUES ({marks}) RETURNING id", *columns.values()
    )


async def _seed(conn: asyncpg.Connection, u1: int, u2: int) -> dict[str, int]:
    ids: dict[str, int] = {}
    ids["c1"] = await _case(
        conn,
        at(2),
        category="billing.debt",
        group_code="cc_l1",
        assignee_id=u1,
        assigned_at=at(2) + s(300),
        status="resolved",
        first_response_at=at(2) + s(600),
        resolved_at=at(2) + s(3600),
        first_response_due_at=at(2) + s(900),
        resolution_due_at=at(2) + s(1800),
    )
    ids["c2"] = await _case(
        conn,
        at(2, 8, 30),
        case_type="financial",
        category="billing.payment",
        group_code="cc_l1",
        assignee_id=u1,
        status="resolved",
        first_response_at=at(2, 8, 30) + s(1200),
        resolved_at=at(2, 8, 30) + s(7200),
        first_response_due_at=at(2, 8, 30) + s(900),
        resolution_due_at=at(2, 8, 30) + s(9000),
        reopen_count=1,
    )
    ids["c3"] = await _case(
        conn,
        at(3, 12),
        channel="site",
        case_type="informational",
        category="meter.reading",
        group_code="cc_l2",
        assignee_id=u2,
        status="in_progress",
        first_response_at=at(3, 12) + s(300),
        first_response_due_at=at(3, 12) + s(600),
        resolution_due_at=at(4, 0),
        resolution_breached_at=at(4, 0),
    )
    ids["c4"] = await _case(
        conn,
        at(5),
        channel="site",
        category="supply.leak",
        group_code="technical",
        assignee_id=u2,
        status="resolved",
        priority="high",
        first_response_at=at(5) + s(60),
        resolved_at=at(5) + s(1800),
    )
    ids["c5"] = await _case(
        conn, at(6), channel="site", assignee_id=u2, repeat_of_id=ids["c4"], is_repeat=True
    )
    await _case(conn, at(4), status="closed", merged_into_id=ids["c1"])
    ids["c7"] = await _case(
        conn,
        at(7),
        channel="email",
        category="billing.debt",
        assignee_id=u1,
        status="resolved",
        first_response_at=at(7) + s(100),
        resolved_at=at(7) + s(3000),
    )
    for minute in (1, 2):
        await conn.execute(
            "INSERT INTO case_events (case_id, at, kind, actor_id, actor_login, direction, body) "
            "VALUES ($1, $2, 'message', $3, 'op', 'out', 'Відповідь')",
            ids["c7"],
            at(7, 8, minute),
            u1,
        )
    await rollups.refresh_all(conn)
    return ids


async def _users(app_conn: asyncpg.Connection, demo_users: dict[str, str]) -> tuple[int, int]:
    u1, u2 = [
        await app_conn.fetchval("SELECT id FROM users WHERE login = $1", demo_users[r])
        for r in ("operator_cc", "operator_cos")
    ]
    return u1, u2


async def _report(client: Any, headers: Any, name: str, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = await ok(
        await client.get(f"/api/v1/reports/{name}", headers=headers, params=params)
    )
    return body


def by_key(body: dict[str, Any], *fields: str) -> dict[Any, tuple[Any, ...]]:
    return {r["key"]: tuple(r[f] for f in fields) for r in body["rows"]}


async def test_case_report_over_known_cases(client, demo_users, app_conn) -> None:
    u1, u2 = await _users(app_conn, demo_users)
    await _seed(app_conn, u1, u2)
    analyst = await login_as(client, "analyst")
    total = await _report(client, analyst, "cases", **NOV)
    [row] = total["rows"]
    assert (row["created"], row["first_responses"], row["resolved"]) == (6, 5, 4)
    assert row["first_response_avg_seconds"] == 452.0  # 600, 1200, 300, 60, 100
    assert row["resolution_avg_seconds"] == 3900.0  # 3600, 7200, 1800, 3000
    assert row["handling_avg_seconds"] == 3825.0  # 3300 (from assignment), 7200, 1800, 3000
    assert (row["first_response_met"], row["first_response_breached"]) == (2, 1)
    assert row["first_response_met_percent"] == 66.67
    # c1 resolved late, c3's breach recorded; c2 in time
    assert (row["resolution_met"], row["resolution_breached"]) == (1, 2)
    # FCR: c1 only (c2 reopened, c4 has a repeat, c7 took two answers)
    assert (row["fcr"], row["fcr_percent"], row["reopened"]) == (1, 25.0, 1)

    by_channel = await _report(client, analyst, "cases", group_by="channel", **NOV)
    assert by_key(by_channel, "created", "resolved", "fcr") == {
        "call": (2, 2, 1),
        "email": (1, 1, 0),
        "site": (3, 1, 0),
    }
    # A topic includes its subtopics
    billing = await _report(client, analyst, "cases", topic="billing", **NOV)
    assert (billing["rows"][0]["created"], billing["rows"][0]["resolved"]) == (3, 3)
    roots = await _report(client, analyst, "cases", group_by="topic_root", **NOV)
    assert {r["label"]: r["created"] for r in roots["rows"]} == {
        "Рахунки та оплати": 3,
        "Лічильники та показники": 1,
        "Газопостачання": 1,
        None: 1,
    }
    top = await _report(client, analyst, "cases", group_by="topic", top=1, **NOV)
    assert [(r["label"], r["created"]) for r in top["rows"]] == [("Заборгованість", 2)]
    daily = await _report(client, analyst, "cases", group_by="day", **NOV)
    assert by_key(daily, "created", "resolved", "resolution_breached") == {
        "2026-11-02": (2, 2, 1),
        "2026-11-03": (1, 0, 0),
        "2026-11-04": (0, 0, 1),  # c3's breach, recorded at 02:00 Kyiv
        "2026-11-05": (1, 1, 0),
        "2026-11-06": (1, 0, 0),
        "2026-11-07": (1, 1, 0),
    }
    weekly = await _report(client, analyst, "cases", group_by="week", **NOV)
    assert by_key(weekly, "created") == {"2026-11-02": (6,)}  # Monday 2 November
    # A period of part of a day reads the hourly rollup
    hourly = await _report(
        client,
        analyst,
        "cases",
        group_by="hour",
        **{"from": "2026-11-02T08:00:00Z", "to": "2026-11-02T10:00:00Z"},
    )
    assert by_key(hourly, "created", "first_responses", "resolved") == {
        "2026-11-02T08:00:00Z": (2, 2, 0),  # first responses 08:10 and 08:50
        "2026-11-02T09:00:00Z": (0, 0, 1),
    }
    filtered = await _report(
        client, analyst, "cases", group_by="agent", channel="site", status="new", **NOV
    )
    assert [(r["key"], r["created"]) for r in filtered["rows"]] == [(u2, 1)]
    groups = await _report(client, analyst, "cases", group_by="group", **NOV)
    assert {r["label"]: r["resolution_breached"] for r in groups["rows"]} == {
        "Контакт-центр, 1 лінія": 1,
        "Контакт-центр, 2 лінія": 1,
        "Технічна служба": 0,
        None: 0,
    }


async def test_late_corrections_rewrite_the_buckets(client, demo_users, app_conn) -> None:
    u1, u2 = await _users(app_conn, demo_users)
    ids = await _seed(app_conn, u1, u2)
    analyst = await login_as(client, "analyst")
    # Reclassified: c4 becomes a financial billing question, three weeks later
    await app_conn.execute(
        "UPDATE cases SET case_type = 'financial', category_id = "
        "(SELECT id FROM case_categories WHERE code = 'billing.charges') WHERE id = $1",
        ids["c4"],
    )
    assert await rollups.pending(app_conn) > 0
    await rollups.refresh_all(app_conn)
    types = await _report(client, analyst, "cases", group_by="case_type", **NOV)
    assert by_key(types, "created", "resolved") == {
        "financial": (2, 2),
        "informational": (1, 0),
        "technical": (3, 2),
    }
    billing = await _report(client, analyst, "cases", topic="billing", **NOV)
    assert billing["rows"][0]["created"] == 4
    # Reopened: c1 leaves Resolved on 8 November, is resolved again on 9 November
    await app_conn.execute(
        "UPDATE cases SET status = 'in_progress', status_changed_at = $2 WHERE id = $1",
        ids["c1"],
        at(8),
    )
    await rollups.refresh_all(app_conn)
    [row] = (await _report(client, analyst, "cases", **NOV))["rows"]
    assert (row["resolved"], row["fcr"], row["resolution_met"], row["resolution_breached"]) == (
        3,
        0,
        1,
        1,
    )
    await app_conn.execute(
        "UPDATE cases SET status = 'resolved', status_changed_at = $2 WHERE id = $1",
        ids["c1"],
        at(9),
    )
    await rollups.refresh_all(app_conn)
    daily = await _report(client, analyst, "cases", group_by="day", **NOV)
    assert by_key(daily, "resolved", "reopened")["2026-11-02"] == (1, 1)
    assert by_key(daily, "resolved", "reopened")["2026-11-09"] == (1, 1)
    [row] = (await _report(client, analyst, "cases", **NOV))["rows"]
    assert (row["resolved"], row["fcr"], row["reopened"], row["resolution_breached"]) == (
        4,
        0,
        2,
        2,
    )
    # A new repeat of c7... c7 was not FCR anyway; a repeat of a FCR case takes it away
    ids["c8"] = await _case(
        app_conn,
        at(10),
        category="meter.reading",
        assignee_id=u1,
        status="resolved",
        resolved_at=at(10) + s(600),
    )
    await rollups.refresh_all(app_conn)
    assert (await _report(client, analyst, "cases", **NOV))["rows"][0]["fcr"] == 1
    await _case(app_conn, at(11), repeat_of_id=ids["c8"], is_repeat=True)
    await rollups.refresh_all(app_conn)
    [row] = (await _report(client, analyst, "cases", **NOV))["rows"]
    assert (row["created"], row["fcr"]) == (8, 0)
    # The rollups equal a rebuild from scratch
    before = await app_conn.fetch(
        "SELECT * FROM report_case_daily ORDER BY 1, 2, 3, 4, 5, 6, 7, day"
    )
    await app_conn.execute("DELETE FROM report_case_daily; DELETE FROM report_case_hourly")
    await rollups.mark_all(app_conn)
    await rollups.refresh_all(app_conn)
    after = await app_conn.fetch(
        "SELECT * FROM report_case_daily ORDER BY 1, 2, 3, 4, 5, 6, 7, day"
    )
    assert [dict(r) for r in before] == [dict(r) for r in after]


async def test_operator_team_and_backlog(client, demo_users, app_conn) -> None:
    u1, u2 = await _users(app_conn, demo_users)
    await _seed(app_conn, u1, u2)
    for user in (u1, u2):
        await app_conn.execute(
            "INSERT INTO case_agents (user_id, presence, capacity) VALUES ($1, 'online', 5)", user
        )
    for presence, when in (("online", at(2)), ("away", at(2, 12)), ("offline", at(2, 16))):
        await app_conn.execute(
            "INSERT INTO case_agent_presence_log (user_id, presence, at, actor_login) "
            "VALUES ($1, $2, $3, 'test')",
            u1,
            presence,
            when,
        )
    operator = await login_as(client, "operator_cc")
    own = await _report(client, operator, "operator", group_by="day", **NOV)
    assert by_key(own, "created", "resolved", "fcr") == {
        "2026-11-02": (2, 2, 1),
        "2026-11-07": (1, 1, 0),
    }
    await bad(
        await client.get(
            "/api/v1/reports/operator", headers=operator, params={**NOV, "agent_id": str(u2)}
        ),
        "",
        403,
    )
    await bad(await client.get("/api/v1/reports/team", headers=operator), "", 403)
    supervisor = await login_as(client, "supervisor")
    other = await _report(client, supervisor, "operator", agent_id=u2, **NOV)
    assert sum(r["created"] for r in other["rows"]) == 3
    team = await _report(client, supervisor, "team", **NOV)
    rows = {r["agent_id"]: r for r in team["rows"]}
    assert (rows[u1]["created"], rows[u1]["resolved"], rows[u1]["fcr"]) == (3, 3, 1)
    assert (rows[u1]["online_seconds"], rows[u1]["away_seconds"]) == (14400, 14400)
    assert (rows[u2]["open_cases"], rows[u2]["load_percent"]) == (2, 40.0)
    backlog = await _report(client, supervisor, "backlog")
    assert {
        r["group_code"]: (r["open_cases"], r["new"], r["in_progress"], r["age_over_3d"])
        for r in backlog["rows"]
    } == {"cc_l2": (1, 0, 1, 1), None: (1, 1, 0, 1)}
    assert backlog["rows"][0]["resolution_overdue"] + backlog["rows"][1]["resolution_overdue"] == 1


async def test_messaging_funnel_cost_and_opt_outs(client, demo_users, app_conn) -> None:
    events = [
        ("c77:1:0", 1, 0, "viber", "sent"),
        ("c77:1:0", 1, 0, "viber", "delivered"),
        ("c77:1:0", 1, 0, "viber", "read"),
        ("c77:1:0", 1, 0, None, "converted"),
        ("c77:2:0", 2, 0, "viber", "sent"),
        ("c77:2:0", 2, 0, "viber", "failed"),
        ("c77:2:1", 2, 1, "sms", "sent"),
        ("c77:2:1", 2, 1, "sms", "delivered"),
        ("c77:3:0", 3, 0, None, "skipped"),
        ("c77:4:0", 4, 0, "viber", "held"),
    ]
    for i, (mid, client_id, step, channel, status) in enumerate(events):
        await app_conn.execute(
            "INSERT INTO message_events (message_id, campaign_id, client_id, step, channel, "
            "status, at) VALUES ($1, 77, $2, $3, $4, $5, $6)",
            mid,
            client_id,
            step,
            channel,
            status,
            at(2, 9, i),
        )
    await app_conn.execute(
        "INSERT INTO consent_log (at, client_id, channel, topic, old_opted_in, new_opted_in, "
        "source, actor_login) VALUES ($1, 2, 'sms', 'marketing', NULL, false, 'sms_stop', 'sms')",
        at(2, 10),
    )
    assert await messaging.fold(app_conn) > 0
    admin = await login_as(client, "admin")
    for channel, price in (("sms", 0.5), ("viber", 0.3)):
        await ok(
            await client.put(
                f"/api/v1/reports/channel-prices/{channel}", headers=admin, json={"price": price}
            )
        )
    marketer = await login_as(client, "marketer")
    per_channel = await _report(client, marketer, "messaging", group_by="source_channel", **NOV)
    got = {
        r["channel"]: (
            r["sent"],
            r["delivered"],
            r["read"],
            r["converted"],
            r["failed"],
            r["held"],
            r["skipped"],
            r["fallback_hops"],
            r["opt_outs"],
        )
        for r in per_channel["rows"]
    }
    assert got == {
        "": (0, 0, 0, 0, 0, 0, 1, 0, 0),
        "sms": (1, 1, 0, 0, 0, 0, 0, 1, 1),
        "viber": (2, 1, 1, 1, 1, 1, 0, 0, 0),
    }
    [total] = (await _report(client, marketer, "messaging", **NOV))["rows"]
    assert (total["source"], total["source_id"], total["sent"]) == ("campaign", 77, 3)
    assert (total["delivered_percent"], total["cost"]) == (66.67, 1.1)
    daily = await _report(client, marketer, "messaging", group_by="day", **NOV)
    assert [(r["key"], r["sent"]) for r in daily["rows"]] == [("2026-11-02", 3)]
    # More outcomes fold in on top (nothing counted twice)
    await app_conn.execute(
        "INSERT INTO message_events (message_id, campaign_id, client_id, step, channel, status, at) "
        "VALUES ('c77:4:0', 77, 4, 0, 'viber', 'sent', $1)",
        at(2, 11),
    )
    await messaging.fold(app_conn)
    [total] = (await _report(client, marketer, "messaging", channel="viber", **NOV))["rows"]
    assert total["sent"] == 3
    await bad(
        await client.put("/api/v1/reports/channel-prices/pigeon", headers=admin, json={"price": 1}),
        "channel",
    )
    await bad(
        await client.put("/api/v1/reports/channel-prices/sms", headers=admin, json={"price": -1}),
        "price",
    )
    await bad(
        await client.put("/api/v1/reports/channel-prices/sms", headers=marketer, json={"price": 1}),
        "",
        403,
    )


async def test_reports_as_csv(client, demo_users, app_conn) -> None:
    u1, u2 = await _users(app_conn, demo_users)
    await _seed(app_conn, u1, u2)
    analyst = await login_as(client, "analyst")
    response = await client.get(
        "/api/v1/reports/cases",
        headers=analyst,
        params={**NOV, "group_by": "channel", "format": "csv"},
    )
    assert response.status == 200 and response.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert [(r["key"], r["created"], r["fcr_percent"]) for r in rows] == [
        ("call", "2", "50.0"),
        ("email", "1", "0.0"),
        ("site", "3", "0.0"),
    ]


async def test_bad_input_names_the_field(client, demo_users) -> None:
    analyst = await login_as(client, "analyst")
    for params, field in (
        ({"from": NOV["to"], "to": NOV["from"]}, "from"),
        ({"from": NOV["from"]}, "to"),
        ({"to": NOV["to"]}, "from"),
        ({"period": "custom"}, "from"),
        ({"period": "decade"}, "period"),
        ({"group_by": "colour"}, "group_by"),
        ({"channel": "pigeon"}, "channel"),
        ({"top": "0"}, "top"),
        ({"from": "2025-01-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}, "to"),
        ({"agent_id": "x"}, "agent_id"),
    ):
        await bad(await client.get("/api/v1/reports/cases", headers=analyst, params=params), field)
    await bad(
        await client.get("/api/v1/reports/messaging", headers=analyst, params={"source_id": "3"}),
        "source",
    )


async def test_bi_views_for_the_read_only_role(settings, demo_users, app_conn) -> None:
    u1, u2 = await _users(app_conn, demo_users)
    await _seed(app_conn, u1, u2)
    # `make setup` (scripts/ensure-services.sh) creates the role; its absence is a failure
    assert await app_conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'herald_bi')"
    ), "role herald_bi missing: run scripts/ensure-services.sh"
    url = settings.database_url.replace("herald_app:herald_app@", "herald_bi:herald_bi@")
    bi = await asyncpg.connect(url)
    try:
        rows = await bi.fetch(
            "SELECT channel, sum(created) AS created, sum(fcr) AS fcr FROM bi.cases_daily_v1 "
            "WHERE day BETWEEN '2026-11-01' AND '2026-11-30' GROUP BY 1 ORDER BY 1"
        )
        assert [(r["channel"], r["created"], r["fcr"]) for r in rows] == [
            ("call", 2, 1),
            ("email", 1, 0),
            ("site", 3, 0),
        ]
        assert await bi.fetchval("SELECT count(*) FROM bi.cases_v1") == 6
        assert await bi.fetchval("SELECT obj_description('bi.cases_daily_v1'::regclass)"), (
            "the views are documented"
        )
        for table in ("cases", "clients", "report_case_daily"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await bi.fetch(f"SELECT 1 FROM {table} LIMIT 1")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await bi.execute("CREATE TABLE bi.x (a int)")
    finally:
        await bi.close()
