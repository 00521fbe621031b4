"""Case statistics (issue 5 point 9) over known data: counts, times, SLA met/breached,
first-contact resolution, groupings, filters, CSV, and bad input."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import asyncpg
import pytest
from conftest import login_as
from test_cases_support import bad, ok

UTC = dt.UTC
# The cases below are November 2026's; the statistics are asked for in early December.
pytestmark = pytest.mark.clock(dt.datetime(2026, 12, 7, 10, tzinfo=UTC))
NOV = {"from": "2026-11-01T00:00:00+02:00", "to": "2026-12-01T00:00:00+02:00"}


def at(day: int, hour: int = 10) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, tzinfo=UTC)


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
    marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return await conn.fetchval(
        f"INSERT INTO cases ({', '.join(columns)}) VALUES ({marks}) RETURNING id", *columns.values()
    )


async def _seed(conn: asyncpg.Connection, u1: int, u2: int) -> dict[str, int]:
    c1 = await _case(
        conn,
        at(2),
        assignee_id=u1,
        status="closed",
        first_response_at=at(2) + s(600),
        resolved_at=at(2) + s(3600),
        first_response_due_at=at(2) + s(900),
        resolution_due_at=at(2) + s(1800),
    )
    c2 = await _case(
        conn,
        at(3),
        assignee_id=u1,
        status="resolved",
        first_response_at=at(3) + s(1200),
        resolved_at=at(3) + s(7200),
        first_response_due_at=at(3) + s(900),
        resolution_due_at=at(3) + s(9000),
        reopen_count=1,
    )
    c3 = await _case(
        conn,
        at(3, 12),
        channel="site",
        assignee_id=u2,
        status="in_progress",
        case_type="financial",
        first_response_at=at(3, 12) + s(300),
        first_response_due_at=at(3, 12) + s(600),
        resolution_due_at=at(4),
    )
    c4 = await _case(
        conn,
        at(5),
        channel="site",
        assignee_id=u2,
        status="resolved",
        first_response_at=at(5) + s(60),
        resolved_at=at(5) + s(1800),
    )
    c5 = await _case(conn, at(6), channel="site", assignee_id=u2, repeat_of_id=c4, is_repeat=True)
    await _case(
        conn, dt.datetime(2026, 10, 31, 21, tzinfo=UTC), assignee_id=u1
    )  # 23:00 Kyiv, October
    await _case(conn, at(4), status="closed", merged_into_id=c1)
    return {"c1": c1, "c2": c2, "c3": c3, "c4": c4, "c5": c5}


async def test_statistics_over_known_cases(client, demo_users, app_conn) -> None:
    u1, u2 = [
        await app_conn.fetchval("SELECT id FROM users WHERE login = $1", demo_users[r])
        for r in ("operator_cc", "operator_cos")
    ]
    await _seed(app_conn, u1, u2)
    analyst = await login_as(client, "analyst")
    total = await ok(await client.get("/api/v1/case-stats", headers=analyst, params=NOV))
    assert total["time_basis"] == "wall" and total["group_by"] == []
    [row] = total["rows"]
    assert (row["created"], row["resolved"], row["closed"]) == (5, 3, 1)
    assert row["first_response_mean_seconds"] == 540  # 600, 1200, 300, 60
    assert row["first_response_median_seconds"] == 450
    assert row["resolution_mean_seconds"] == 4200  # 3600, 7200, 1800
    assert row["resolution_median_seconds"] == 3600
    assert (row["first_response_met"], row["first_response_breached"]) == (2, 1)
    assert row["first_response_met_percent"] == 66.67
    # c1 resolved late, c3 still open past its due time; c2 in time
    assert (row["resolution_met"], row["resolution_breached"]) == (1, 2)
    assert row["resolution_met_percent"] == 33.33
    # FCR: c1 only (c2 was reopened, c4 had a repeat case)
    assert (row["fcr"], row["fcr_percent"]) == (1, 33.33)
    by_channel = await ok(
        await client.get(
            "/api/v1/case-stats", headers=analyst, params={**NOV, "group_by": "channel"}
        )
    )
    assert {r["channel"]: (r["created"], r["resolved"], r["fcr"]) for r in by_channel["rows"]} == {
        "call": (2, 2, 1),
        "site": (3, 1, 0),
    }
    grouped = await ok(
        await client.get(
            "/api/v1/case-stats", headers=analyst, params={**NOV, "group_by": "agent,day"}
        )
    )
    assert [(r["agent_id"], r["day"], r["created"]) for r in grouped["rows"]] == [
        (u1, "2026-11-02", 1),
        (u1, "2026-11-03", 1),
        (u2, "2026-11-03", 1),
        (u2, "2026-11-05", 1),
        (u2, "2026-11-06", 1),
    ]
    by_type = await ok(
        await client.get(
            "/api/v1/case-stats",
            headers=analyst,
            params={**NOV, "group_by": "case_type,group", "channel": "site"},
        )
    )
    assert [(r["case_type"], r["group_code"], r["created"]) for r in by_type["rows"]] == [
        ("financial", None, 1),
        ("technical", None, 2),
    ]
    agent = await ok(
        await client.get(
            "/api/v1/case-stats",
            headers=analyst,
            params={**NOV, "agent_id": str(u1), "case_type": "technical"},
        )
    )
    assert agent["rows"][0]["created"] == 2
    # The October case is in an October period only (Kyiv midnight)
    october = await ok(
        await client.get(
            "/api/v1/case-stats",
            headers=analyst,
            params={"from": "2026-10-31T00:00:00+02:00", "to": "2026-11-01T00:00:00+02:00"},
        )
    )
    assert october["rows"][0]["created"] == 1
    assert october["rows"][0]["fcr_percent"] is None


async def test_statistics_as_csv(client, demo_users, app_conn) -> None:
    u1, u2 = [
        await app_conn.fetchval("SELECT id FROM users WHERE login = $1", demo_users[r])
        for r in ("operator_cc", "operator_cos")
    ]
    await _seed(app_conn, u1, u2)
    analyst = await login_as(client, "analyst")
    for params, headers in (
        ({**NOV, "group_by": "channel", "format": "csv"}, analyst),
        ({**NOV, "group_by": "channel"}, {**analyst, "Accept": "text/csv"}),
    ):
        response = await client.get("/api/v1/case-stats", headers=headers, params=params)
        assert response.status == 200 and response.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO(await response.text())))
        assert [(r["channel"], r["created"], r["fcr_percent"]) for r in rows] == [
            ("call", "2", "50.0"),
            ("site", "3", "0.0"),
        ]
        assert rows[1]["resolution_met_percent"] == "0.0"
        assert rows[0]["first_response_median_seconds"] == "900.0"


async def test_statistics_bad_input_names_the_field(client, demo_users) -> None:
    analyst = await login_as(client, "analyst")
    cases = [
        ({"from": NOV["to"], "to": NOV["from"]}, "from"),
        ({"from": NOV["from"]}, "to"),
        ({"to": NOV["to"]}, "from"),
        ({"from": "2026-11-01T00:00:00", "to": NOV["to"]}, "from"),
        ({**NOV, "group_by": "agent,colour"}, "group_by"),
        ({**NOV, "group_by": "day,day"}, "group_by"),
        ({**NOV, "channel": "pigeon"}, "channel"),
        ({**NOV, "agent_id": "0"}, "agent_id"),
        ({**NOV, "time_zone": "Mars/Olympus"}, "time_zone"),
        ({**NOV, "format": "xml"}, "format"),
    ]
    for params, field in cases:
        await bad(await client.get("/api/v1/case-stats", headers=analyst, params=params), field)
    client.session.cookie_jar.clear()
    await bad(await client.get("/api/v1/case-stats", params=NOV), "", 401)
    marketer = await login_as(client, "marketer")
    await bad(await client.get("/api/v1/case-stats", headers=marketer, params=NOV), "", 403)


async def test_statistics_by_status_and_agent_load_for_the_analyst(
    client, demo_users, app_conn
) -> None:
    """Issue 20 point 7: group_by=status works, and agent load is part of the statistics,
    readable by the analyst role (the supervisor's /case-agents is not theirs)."""
    u1, u2 = [
        await app_conn.fetchval("SELECT id FROM users WHERE login = $1", demo_users[r])
        for r in ("operator_cc", "operator_cos")
    ]
    await _seed(app_conn, u1, u2)
    analyst = await login_as(client, "analyst")
    by_status = await ok(
        await client.get(
            "/api/v1/case-stats", headers=analyst, params={**NOV, "group_by": "status"}
        )
    )
    assert by_status["group_by"] == ["status"]
    assert {r["status"]: r["created"] for r in by_status["rows"]} == {
        "closed": 1,
        "in_progress": 1,
        "new": 1,
        "resolved": 2,
    }
    mixed = await ok(
        await client.get(
            "/api/v1/case-stats", headers=analyst, params={**NOV, "group_by": "channel,status"}
        )
    )
    assert [(r["channel"], r["status"], r["created"]) for r in mixed["rows"]] == [
        ("call", "closed", 1),
        ("call", "resolved", 1),
        ("site", "in_progress", 1),
        ("site", "new", 1),
        ("site", "resolved", 1),
    ]
    response = await client.get(
        "/api/v1/case-stats", headers=analyst, params={**NOV, "group_by": "status", "format": "csv"}
    )
    assert (await response.text()).splitlines()[0].startswith("status,created,")
    # Agent load: open assigned cases now, by status, against capacity
    await app_conn.execute(
        "INSERT INTO case_agents (user_id, capacity, presence) "
        "VALUES ($1, 4, 'online'), ($2, 2, 'away')",
        u1,
        u2,
    )
    load = await ok(await client.get("/api/v1/case-stats/agent-load", headers=analyst))
    rows = {r["user_id"]: r for r in load["rows"]}
    # u1: the October case (new); u2: c3 (in progress) and c5 (new)
    assert (rows[u1]["open_cases"], rows[u1]["capacity"], rows[u1]["load_percent"]) == (1, 4, 25.0)
    assert (rows[u2]["open_cases"], rows[u2]["load_percent"], rows[u2]["presence"]) == (
        2,
        100.0,
        "away",
    )
    assert rows[u2]["by_status"] == {"new": 1, "in_progress": 1, "on_hold": 0}
    assert load["open_cases"] == 3 and load["capacity"] == 6
    marketer = await login_as(client, "marketer")
    await bad(await client.get("/api/v1/case-stats/agent-load", headers=marketer), "", 403)
