"""The supervisor's live view (issue 5, point 8; SR-11): the snapshot with SLA state and
agent load, filters by channel, topic and group, pages by nearest deadline, and the SSE
stream of committed changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from conftest import login_as
from sse_helpers import Stream
from test_cases_support import bad, ok

from crm.cases import intake
from crm.cases.channels import Inbound
from herald.audit import Actor

VIEW = "/api/v1/supervisor/view"
CASES = "/api/v1/supervisor/cases"
STREAM = "/api/v1/supervisor/stream"
SITE = Actor(login="forms")


async def _case(
    conn: asyncpg.Connection,
    channel: str = "site",
    *,
    sla_state: str = "ok",
    due_in_minutes: int = 600,
    category: str | None = None,
    group_code: str | None = None,
) -> int:
    case_id = (
        await intake.ingest(
            conn, SITE, Inbound(channel=channel, text=f"Питання {channel}", phone="+380671110201")
        )
    ).case_id
    # The SLA and routing parts set these from policies and rules; the view only reads them.
    # (A new category replans the deadlines, so the SLA facts are set after it.)
    await conn.execute(
        "UPDATE cases SET category_id = COALESCE((SELECT id FROM case_categories WHERE code = $2), "
        "category_id), group_code = COALESCE($3, group_code) WHERE id = $1",
        case_id,
        category,
        group_code,
    )
    await conn.execute(
        """
        UPDATE cases SET sla_state = $2,
               first_response_due_at = herald_now() + make_interval(mins => $3),
               resolution_due_at = herald_now() + make_interval(mins => $3 + 600)
        WHERE id = $1
        """,
        case_id,
        sla_state,
        due_in_minutes,
    )
    return case_id


@asynccontextmanager
async def open_stream(
    client: Any, headers: dict[str, str], params: dict[str, str] | None = None
) -> AsyncIterator[tuple[Stream, Any]]:
    response = await client.get(STREAM, headers=headers, params=params or {})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    stream = Stream(response)
    try:
        event, snapshot = await stream.next()
        assert event == "snapshot"
        yield stream, snapshot
    finally:
        response.close()


async def _next_of(stream: Stream, kind: str) -> Any:
    """The next event of ``kind``, skipping the others."""
    while True:
        event, data = await stream.next()
        if event == kind:
            return data


async def test_snapshot_counts_open_cases_by_sla_state_channel_and_group(
    client, demo_users, admin_conn
) -> None:
    boss = await login_as(client, "supervisor")
    # Given open cases in two channels with each SLA state, and one resolved case
    late = await _case(
        admin_conn, "viber", sla_state="breached", due_in_minutes=-30, group_code="cc_l1"
    )
    later = await _case(
        admin_conn, "viber", sla_state="breached", due_in_minutes=-5, group_code="cc_l1"
    )
    risky = await _case(
        admin_conn, "site", sla_state="warning", due_in_minutes=20, group_code="cc_l2"
    )
    await _case(admin_conn, "site", sla_state="ok")
    done = await _case(admin_conn, "site", sla_state="ok")
    await admin_conn.execute("UPDATE cases SET status = 'resolved' WHERE id = $1", done)
    view = await ok(await client.get(VIEW, headers=boss))
    # Then the resolved case is not open work, and the counts split by state and channel
    everything = view["totals"]["all"]
    assert (
        everything["open"],
        everything["breached"],
        everything["warning"],
        everything["ok"],
    ) == (4, 2, 1, 1)
    channels = {b["key"]: b for b in view["totals"]["by_channel"]}
    assert (channels["viber"]["breached"], channels["site"]["open"]) == (2, 2)
    # (the case placed in no group went to the default group, cc_l1)
    assert {b["key"]: b["open"] for b in view["totals"]["by_group"]} == {"cc_l1": 3, "cc_l2": 1}
    # and the breached list has the most overdue first; the at-risk list the warning case
    assert [c["id"] for c in view["breached"]] == [late, later]
    assert [c["id"] for c in view["at_risk"]] == [risky]
    assert view["breached"][0]["next_due_at"] < view["breached"][1]["next_due_at"]
    assert isinstance(view["agents"], list)


async def test_filters_by_channel_topic_with_subcategories_and_group(
    client, demo_users, admin_conn
) -> None:
    boss = await login_as(client, "supervisor")
    debt = await _case(
        admin_conn,
        "email",
        sla_state="breached",
        due_in_minutes=-1,
        category="billing.debt",
        group_code="finance",
    )
    await _case(
        admin_conn,
        "email",
        sla_state="breached",
        due_in_minutes=-1,
        category="supply.leak",
        group_code="technical",
    )
    billing = await admin_conn.fetchval("SELECT id FROM case_categories WHERE code = 'billing'")
    # The parent topic includes its subcategories
    view = await ok(await client.get(VIEW, headers=boss, params={"category_id": str(billing)}))
    assert ([c["id"] for c in view["breached"]], view["totals"]["all"]["open"]) == ([debt], 1)
    view = await ok(await client.get(VIEW, headers=boss, params={"group_code": "technical"}))
    assert view["totals"]["all"]["open"] == 1 and view["breached"][0]["group_code"] == "technical"
    view = await ok(await client.get(VIEW, headers=boss, params={"channel": "viber"}))
    assert view["totals"]["all"]["open"] == 0
    # A bad filter is a 400 naming it; an operator may not watch
    await bad(await client.get(VIEW, headers=boss, params={"channel": "fax"}), "channel")
    await bad(await client.get(VIEW, headers=boss, params={"category_id": "0"}), "category_id")
    await bad(await client.get(VIEW, headers=boss, params={"colour": "red"}), "colour")
    operator = await login_as(client, "operator_cc")
    assert (await client.get(VIEW, headers=operator)).status == 403
    assert (await client.get(STREAM, headers=operator)).status == 403


async def test_open_case_pages_follow_the_nearest_deadline(client, demo_users, admin_conn) -> None:
    boss = await login_as(client, "supervisor")
    ids = [await _case(admin_conn, sla_state="ok", due_in_minutes=m) for m in (50, 10, 30, 40, 20)]
    no_sla = await _case(admin_conn, sla_state="none")
    await admin_conn.execute(
        "UPDATE cases SET first_response_due_at = NULL, resolution_due_at = NULL WHERE id = $1",
        no_sla,
    )
    seen, cursor = [], None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = await ok(await client.get(CASES, headers=boss, params=params))
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # Nearest deadline first, cases without one last, each exactly once
    assert seen == [ids[1], ids[4], ids[2], ids[3], ids[0], no_sla]
    breached = await ok(await client.get(CASES, headers=boss, params={"sla_state": "breached"}))
    assert breached["items"] == []
    await bad(await client.get(CASES, headers=boss, params={"cursor": "nonsense"}), "cursor")
    await bad(await client.get(CASES, headers=boss, params={"limit": "501"}), "limit")


async def test_stream_pushes_committed_changes_of_the_filter(
    client, demo_users, admin_conn
) -> None:
    boss = await login_as(client, "supervisor")
    operator = await login_as(client, "operator_cc")
    watched = await _case(admin_conn, "viber", sla_state="breached", due_in_minutes=-10)
    async with open_stream(client, boss, {"channel": "viber"}) as (stream, snapshot):
        assert [c["id"] for c in snapshot["breached"]] == [watched]
        # When a case of another channel changes, nothing about it is pushed; when a new
        # viber case arrives, it is
        await _case(admin_conn, "email", sla_state="ok")
        fresh = await _case(admin_conn, "viber", sla_state="warning", due_in_minutes=5)
        pushed = await _next_of(stream, "cases")
        while fresh not in [c["id"] for c in pushed["items"]]:
            pushed = await _next_of(stream, "cases")
        assert all(c["channel"] == "viber" for c in pushed["items"])
        totals = await _next_of(stream, "totals")
        assert (totals["all"]["open"], totals["all"]["warning"]) == (2, 1)
        # When an operator takes the breached case, its new status is pushed
        response = await client.post(
            f"/api/v1/cases/{watched}/status", headers=operator, json={"status": "in_progress"}
        )
        assert response.status == 200, await response.text()
        pushed = await _next_of(stream, "cases")
        assert [(c["id"], c["status"], c["removed"]) for c in pushed["items"]] == [
            (watched, "in_progress", False)
        ]
        # and when it is resolved it leaves the view
        response = await client.post(
            f"/api/v1/cases/{watched}/status", headers=operator, json={"status": "resolved"}
        )
        assert response.status == 200, await response.text()
        pushed = await _next_of(stream, "cases")
        assert [(c["id"], c["removed"]) for c in pushed["items"]] == [(watched, True)]
        assert (await _next_of(stream, "totals"))["all"]["breached"] == 0


async def test_a_rolled_back_change_is_never_pushed(client, demo_users, admin_conn) -> None:
    boss = await login_as(client, "supervisor")
    case_id = await _case(admin_conn, "site", sla_state="ok")
    async with open_stream(client, boss) as (stream, _):
        tx = admin_conn.transaction()
        await tx.start()
        await admin_conn.execute("UPDATE cases SET sla_state = 'breached' WHERE id = $1", case_id)
        await tx.rollback()
        await admin_conn.execute("UPDATE cases SET group_code = 'cc_l2' WHERE id = $1", case_id)
        pushed = await _next_of(stream, "cases")
        assert [(c["id"], c["group_code"], c["sla_state"]) for c in pushed["items"]] == [
            (case_id, "cc_l2", "ok")
        ]


async def test_agent_presence_changes_are_pushed(client, demo_users, admin_conn) -> None:
    boss = await login_as(client, "supervisor")
    agent = await admin_conn.fetchval("SELECT id FROM users WHERE login = 'operator.cc'")
    await admin_conn.execute(
        "INSERT INTO case_agents (user_id, presence, capacity) VALUES ($1, 'online', 5) "
        "ON CONFLICT (user_id) DO UPDATE SET presence = 'online', capacity = 5",
        agent,
    )
    async with open_stream(client, boss) as (stream, snapshot):
        mine = [a for a in snapshot["agents"] if a["user_id"] == agent]
        assert mine and mine[0]["presence"] == "online"
        await admin_conn.execute(
            "UPDATE case_agents SET presence = 'away' WHERE user_id = $1", agent
        )
        agents = (await _next_of(stream, "agents"))["agents"]
        assert [a["presence"] for a in agents if a["user_id"] == agent] == ["away"]


async def test_stream_resyncs_after_the_change_feed_reconnects(
    client, demo_users, admin_conn, app_conn
) -> None:
    boss = await login_as(client, "supervisor")
    async with open_stream(client, boss) as (stream, _):
        # When the server's listening connection is cut, notifications may have been lost
        killed = await app_conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'herald-live' AND datname = current_database()"
        )
        assert killed == 1
        # so the stream sends a whole snapshot again once it listens again
        snapshot = await _next_of(stream, "snapshot")
        assert "totals" in snapshot
        case_id = await _case(admin_conn, "site")
        pushed = await _next_of(stream, "cases")
        assert case_id in [c["id"] for c in pushed["items"]]
