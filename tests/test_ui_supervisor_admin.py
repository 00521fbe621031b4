"""The supervisor's and administrator's pages (issue 15): the wallboard and its actions,
the team queue's bulk actions, an agent's day, users and the role-permission matrix,
case settings, integrations and the audit journal viewer with its CSV export."""

from __future__ import annotations

import csv
import io
import re

import asyncpg
from test_supervisor import _case
from ui_helpers import export_form, origin, post_form, ui_login

from crm.cases import agents, calendars, groups
from crm.cases.calendars import BusinessCalendarSpec, WeekHours, WorkInterval
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
    assert 'href="/ui/supervisor"' in html and "Панель керівника" in html
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
    assert "1 звернення повернуто в чергу" in await taken.text()
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


async def test_users_create_block_unlock_and_reset(client, demo_users, admin_conn) -> None:
    token = await ui_login(client, "admin")
    html = await (await client.get("/ui/admin/users")).text()
    assert 'data-login="operator.cc"' in html
    # a bad field is shown next to it; the form keeps the values typed
    bad = await client.post(
        "/ui/admin/users",
        data=[
            ("login", "a"),
            ("full_name", "Нова Людина"),
            ("password", "x"),
            ("roles", "supervisor"),
        ],
        headers={"Origin": origin(client), "X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert bad.status == 400
    text = await bad.text()
    assert 'data-error-for="login"' in text and 'value="Нова Людина"' in text
    good = await client.post(
        "/ui/admin/users",
        data=[
            ("login", "quality.lead"),
            ("full_name", "Якість Ольга"),
            ("password", "Kontrol-Yakosti-2026"),
            ("roles", "supervisor"),
        ],
        headers={"Origin": origin(client), "X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert good.status == 200, await good.text()
    new_id = await _user_id(admin_conn, "quality.lead")
    assert new_id and 'id="user-created"' in await good.text()
    blocked = await post_form(
        client, f"/ui/admin/users/{new_id}/active", {"active": "false"}, token
    )
    assert 'data-done="blocked"' in await blocked.text()
    assert not await admin_conn.fetchval("SELECT is_active FROM users WHERE id = $1", new_id)
    await post_form(client, f"/ui/admin/users/{new_id}/active", {"active": "true"}, token)
    assert await admin_conn.fetchval("SELECT is_active FROM users WHERE id = $1", new_id)
    weak = await post_form(
        client, f"/ui/admin/users/{new_id}/password", {"new_password": "short"}, token
    )
    assert weak.status == 400
    reset = await post_form(
        client, f"/ui/admin/users/{new_id}/password", {"new_password": "Nove-Haslo-2026!"}, token
    )
    assert 'data-done="password"' in await reset.text()
    # the journal recorded each step
    fields = [
        r["field"]
        for r in await admin_conn.fetch(
            "SELECT field FROM audit_log WHERE entity_type = 'user' AND entity_id = $1 ORDER BY id",
            str(new_id),
        )
    ]
    assert fields.count("is_active") == 2 and "password" in fields


async def test_matrix_change_applies_on_the_next_request_and_is_journalled(
    client, demo_users, admin_conn
) -> None:
    token = await ui_login(client, "admin")
    html = await (await client.get("/ui/admin/roles")).text()
    assert 'data-role="supervisor" data-permission="cases.supervise"' in html
    # the supervisor sees the wallboard...
    sup = await ui_login(client, "supervisor")
    assert sup and (await client.get("/ui/supervisor")).status == 200
    # ...until the admin takes the permission away
    token = await ui_login(client, "admin")
    cell = await post_form(
        client, "/ui/admin/roles/supervisor/permissions/cases.supervise", {}, token
    )
    assert cell.status == 200 and "checked" not in await cell.text()
    await ui_login(client, "supervisor")
    assert (await client.get("/ui/supervisor")).status == 403
    assert 'href="/ui/supervisor"' not in await (await client.get("/ui/account")).text()
    # nobody may leave the system without an administrator: the cell stays ticked
    token = await ui_login(client, "admin")
    refused = await post_form(client, "/ui/admin/roles/admin/permissions/rbac.manage", {}, token)
    assert refused.status == 200 and "checked" in await refused.text()
    assert "hx-swap-oob" in await refused.text()
    # the audit viewer finds the change, and exports it
    found = await (await client.get("/ui/audit?entity_type=role&entity_id=supervisor")).text()
    assert re.search(r'data-entity="role/supervisor" data-field="permissions"', found)
    assert "cases.supervise" in found
    form = export_form(found, "audit-export")
    assert form["kind"] == "audit" and form["f.entity_type"] == "role"
    assert form["f.entity_id"] == "supervisor" and "f.from" not in form
    export = await post_form(client, "/ui/exports", {**form, "format": "csv"}, token)
    assert export.status == 200 and export.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO((await export.read()).decode("utf-8-sig"))))
    assert rows[0][1] == "at" and rows[1][5:8] == ["role", "supervisor", "permissions"]
    assert len(rows) == 1 + found.count('class="audit-row"')
    xlsx = await post_form(client, "/ui/exports", {**form, "format": "xlsx"}, token)
    assert xlsx.status == 200 and xlsx.headers["Content-Type"].endswith("spreadsheetml.sheet")
    assert (await xlsx.read())[:2] == b"PK"
    # the period of the viewer (business days, both included) reaches the export
    dated = await (await client.get("/ui/audit?since=2026-05-01&until=2026-05-03")).text()
    period = export_form(dated, "audit-export")
    assert period["f.from"].startswith("2026-05-01T00:00:00")
    assert period["f.to"].startswith("2026-05-04T00:00:00")
    bad = await client.get("/ui/audit?since=2026-05-02&until=2026-05-01")
    assert bad.status == 400


async def test_audit_viewer_pages_by_keyset(client, demo_users, admin_conn) -> None:
    await ui_login(client, "admin")
    for i in range(60):
        await admin_conn.execute(
            "INSERT INTO audit_log (actor_login, action, entity_type, entity_id, field, old_value, "
            "new_value) VALUES ('tester', 'update', 'widget', '1', 'n', $1::jsonb, $2::jsonb)",
            str(i),
            str(i + 1),
        )
    first = await (await client.get("/ui/audit?entity_type=widget&user=tester")).text()
    ids = re.findall(r'class="audit-row" data-id="(\d+)"', first)
    assert len(ids) == 50
    more = re.search(r'hx-get="/ui/audit/rows\?([^"]+)"', first)
    assert more
    second = await (
        await client.get("/ui/audit/rows?" + more.group(1).replace("&amp;", "&"))
    ).text()
    rest = re.findall(r'class="audit-row" data-id="(\d+)"', second)
    assert len(rest) == 10 and not set(rest) & set(ids)
    assert min(int(i) for i in ids) > max(int(i) for i in rest)


async def test_case_settings_and_integrations(client, demo_users, admin_conn) -> None:
    token = await ui_login(client, "admin")
    page = await client.get("/ui/admin/cases")
    assert page.status == 200, await page.text()
    html = await page.text()
    assert 'id="category-tree"' in html and 'id="statuses"' in html and 'id="calendars"' in html
    added = await post_form(
        client,
        "/ui/admin/cases/categories",
        {"code": "ui_new_topic", "name_uk": "Нова тема", "name_en": "New topic"},
        token,
    )
    assert added.status == 200 and 'data-code="ui_new_topic"' in await added.text()
    all_week = {d: [WorkInterval("09:00", "18:00")] for d in ("mon", "tue", "wed", "thu", "fri")}
    calendar = (
        await calendars.create_calendar(
            admin_conn,
            ADMIN,
            BusinessCalendarSpec(name="Офіс", week=WeekHours(**all_week)),
        )
    ).id
    if calendar is not None:
        day = await post_form(
            client,
            f"/ui/admin/cases/calendars/{calendar}/holidays",
            {"date": "2026-12-31", "name": "Передноворічний", "start": "09:00", "end": "14:00"},
            token,
        )
        assert day.status == 200, await day.text()
        assert 'data-date="2026-12-31"' in await day.text()
    wrong = await post_form(
        client, f"/ui/admin/cases/calendars/{calendar}/holidays", {"date": "nope"}, token
    )
    assert wrong.status == 400 and "«Дата»" in await wrong.text()
    integrations = await (await client.get("/ui/admin/integrations")).text()
    assert 'data-secret="HERALD_PROVIDER_API_TOKEN"' in integrations
    assert "dev-token" not in integrations
    ext = await post_form(
        client,
        "/ui/admin/integrations/extensions",
        {"extension": "SIP/777", "login": "operator.cc"},
        token,
    )
    assert ext.status == 200 and 'data-extension="SIP/777"' in await ext.text()
    # an operator has no administration
    await ui_login(client, "operator_cc")
    assert (await client.get("/ui/admin/users")).status == 403
    assert (await client.get("/ui/audit")).status == 403
