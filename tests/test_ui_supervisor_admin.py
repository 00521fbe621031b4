"""The supervisor's and administrator's pages (issue 15): the wallboard and its actions,
the team queue's bulk actions, an agent's day, users and the role-permission matrix,
case settings, integrations and the audit journal viewer with its CSV export."""

from __future__ import annotations

import csv
import io
import re

import asyncpg
from test_supervisor import _case
from ui_helpers import origin, post_form, ui_login

from crm.cases import agents, groups
from herald.audit import Actor

ADMIN = Actor(login="test")


async def _user_id(conn: asyncpg.Connection, login: str) -> int:
    return await conn.fetchval("SELECT id FROM users WHERE login = $1", login)


async def _agent_in(conn: asyncpg.Connection, login: str, group: str, capacity: int = 5) -> int:
    user_id = await _user_id(conn, login)
    await groups.set_members(conn, ADMIN, group, [user_id])
    await agents.ensure_agent(conn, user_id)
    await conn.execute("UPDATE case_agents SET capacity = $2 WHERE user_id = $1", user_id, capacity)
    await agents.set_presence(conn, ADMIN, user_id, "online")
    return user_id


async def test_wallboard_shows_open_work_and_reassigns(client, demo_users, admin_conn) -> None:
    cc = await _agent_in(admin_conn, "operator.cc", "cc_l1")
    breached = await _case(admin_conn, "site", sla_state="breached", group_code="cc_l1")
    risky = await _case(admin_conn, "email", sla_state="warning", group_code="cc_l1")
    await _case(admin_conn, "viber", sla_state="ok", group_code="cc_l1")
    token = await ui_login(client, "supervisor")
    page = await client.get("/ui/supervisor")
    assert page.status == 200
    html = await page.text()
    assert 'href="/ui/supervisor"' in html  # TRANSLATE-CHECK
    assert re.search(r'id="tile-open"><span class="tile-n">3<', html), html
    assert re.search(r'id="tile-breached"><span class="tile-n">1<', html)
    assert re.search(rf'id="list-breached".*data-case-id="{breached}"', html, re.S)
    assert re.search(rf'id="list-at-risk".*data-case-id="{risky}"', html, re.S)
    assert 'data-user="operator.cc"' in html
    # a filter by channel narrows the counts
    board = await (await client.get("/ui/supervisor/board?channel=email")).text()
    assert re.search(r'id="tile-open"><span class="tile-n">1<', board)
    # a bad filter is a 400 naming the field, as HTML
    bad = await client.get("/ui/supervisor/board?channel=pigeon")
    assert bad.status == 400 and "Канал" in await bad.text()
    # reassign the breached case to the agent
    moved = await post_form(
        client, f"/ui/supervisor/cases/{breached}/reassign", {"to": f"user:{cc}"}, token
    )
    assert moved.status == 200, await moved.text()
    assert await admin_conn.fetchval("SELECT assignee_id FROM cases WHERE id = $1", breached) == cc
    wrong = await post_form(client, f"/ui/supervisor/cases/{breached}/reassign", {"to": "x"}, token)
    assert wrong.status == 400
    # take the agent's queue: back to the group's queue
    taken = await post_form(client, f"/ui/supervisor/agents/{cc}/take-queue", {}, token)
    assert taken.status == 200, await taken.text()
    # TRANSLATE-CHECK assert "повернуто" in await taken.text()
    assert (
        await admin_conn.fetchval("SELECT assignee_id FROM cases WHERE id = $1", breached) is None
    )
    # the agent's day lists the presence spans
    day = await client.get(f"/ui/supervisor/agents/{cc}")
    assert day.status == 200
    assert 'data-presence="online"' in await day.text()
    # an operator may not see the wallboard
    await ui_login(client, "operator_cc")
    assert (await client.get("/ui/supervisor")).status == 403


async def test_team_queue_bulk_reassign_and_priority(client, demo_users, admin_conn) -> None:
    cc = await _agent_in(admin_conn, "operator.cc", "cc_l1", capacity=1)
    one = await _case(admin_conn, "site", group_code="cc_l1")
    two = await _case(admin_conn, "site", group_code="cc_l1")
    token = await ui_login(client, "supervisor")
    html = await (await client.get("/ui/supervisor/team?group_code=cc_l1")).text()
    assert f'value="{one}"' in html and f'value="{two}"' in html
    response = await client.post(
        "/ui/supervisor/team/bulk",
        data=[
            ("action", "priority"),
            ("priority", "urgent"),
            ("case_ids", str(one)),
            ("case_ids", str(two)),
        ],
        headers={"Origin": origin(client), "X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert response.status == 200, await response.text()
    assert 'data-done="2"' in await response.text()
    prios = await admin_conn.fetch(
        "SELECT priority FROM cases WHERE id = ANY($1::bigint[])", [one, two]
    )
    assert {r["priority"] for r in prios} == {"urgent"}
    # capacity 1: the second case cannot go to the same agent, and the report says so
    response = await client.post(
        "/ui/supervisor/team/bulk",
        data=[
            ("action", "reassign"),
            ("to", f"user:{cc}"),
            ("case_ids", str(one)),
            ("case_ids", str(two)),
        ],
        headers={"Origin": origin(client), "X-CSRF-Token": token, "HX-Request": "true"},
    )
    text = await response.text()
    assert 'data-done="1"' in text and 'data-failed="1"' in text
    none = await post_form(client, "/ui/supervisor/team/bulk", {"action": "priority"}, token)
    assert none.status == 400
