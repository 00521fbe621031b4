"""The operator's hand-off tasks page (/ui/tasks): the tasks handed to me and to my
groups with deadlines and overdue marks, "done", the menu entry by role."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from ui_helpers import post_form, ui_login

from crm.cases import groups, tasks
from crm.cases.tasks import CaseTaskSpec
from herald.audit import Actor

KYIV = ZoneInfo("Europe/Kyiv")
NOW = dt.datetime(2026, 4, 15, 11, 0, tzinfo=KYIV)


async def _ids(conn: asyncpg.Connection, *logins: str) -> list[int]:
    rows = await conn.fetch(
        "SELECT id, login FROM users WHERE login = ANY($1::text[])", list(logins)
    )
    by = {r["login"]: r["id"] for r in rows}
    return [by[login] for login in logins]


@pytest.mark.clock(NOW)
async def test_tasks_page_lists_mine_marks_overdue_and_closes(
    client, demo_users, admin_conn
) -> None:
    cos_id, cc_id = await _ids(admin_conn, "operator.cos", "operator.cc")
    actor = Actor(login="test")
    await groups.set_members(admin_conn, actor, "finance", [cos_id])
    await groups.set_members(admin_conn, actor, "technical", [cc_id])
    token = await ui_login(client, "operator_cc")
    response = await post_form(
        client, "/ui/cases/new", {"text": "Переплата за березень"}, token, allow_redirects=False
    )
    assert response.status == 303, await response.text()
    case_id = int(response.headers["Location"].rsplit("/", 1)[1])
    cc = Actor(id=cc_id, login="operator.cc")
    late = await tasks.create_task(
        admin_conn,
        cc,
        case_id,
        CaseTaskSpec(
            group_code="finance",
            title="Перерахувати <b>переплату</b>",
            due_at=NOW - dt.timedelta(days=1),
        ),
    )
    soon = await tasks.create_task(
        admin_conn,
        cc,
        case_id,
        CaseTaskSpec(
            group_code="finance",
            title="Підтвердити оплату",
            due_at=NOW + dt.timedelta(days=2),
            assignee_id=cos_id,
        ),
    )
    other = await tasks.create_task(
        admin_conn,
        cc,
        case_id,
        CaseTaskSpec(
            group_code="technical", title="Перевірити лічильник", due_at=NOW + dt.timedelta(days=1)
        ),
    )

    token = await ui_login(client, "operator_cos")
    page = await (await client.get("/ui/tasks")).text()
    assert 'href="/ui/tasks"' in page  # the menu entry
    rows = re.findall(r'<tr class="task-row( overdue)?" id="task-(\d+)"', page)
    assert [(bool(o), int(i)) for o, i in rows] == [(True, late.id), (False, soon.id)], rows
    assert "прострочено" in page and "Перерахувати &lt;b&gt;переплату&lt;/b&gt;" in page
    assert "Фінансовий відділ" in page
    # Overdue only
    only = await (await client.get("/ui/tasks/rows?overdue=true")).text()
    assert f'id="task-{late.id}"' in only and f'id="task-{soon.id}"' not in only
    # Done, with its result; it leaves the open list and shows under "done"
    done = await post_form(client, f"/ui/tasks/{late.id}/done", {"result": "Перераховано"}, token)
    assert done.status == 200, await done.text()
    row = await done.text()
    assert "Виконано" in row and "Перераховано" in row and "<form" not in row
    assert (await tasks.get_task(admin_conn, late.id)).status == "done"
    assert f'id="task-{late.id}"' not in await (await client.get("/ui/tasks/rows")).text()
    assert f'id="task-{late.id}"' in await (await client.get("/ui/tasks/rows?status=done")).text()
    # Twice: refused with the reason, not a 500
    again = await post_form(client, f"/ui/tasks/{late.id}/done", {}, token)
    assert again.status == 400 and "task-" not in await again.text()
    # Not this operator's group: not listed, and a supervisor sees every group
    assert f'id="task-{other.id}"' not in page
    await ui_login(client, "supervisor")
    everything = await (await client.get("/ui/tasks/rows?scope=all&status=any")).text()
    assert all(f'id="task-{t.id}"' in everything for t in (late, soon, other))
    # A role without cases.manage has no entry and is refused
    await ui_login(client, "analyst")
    assert 'href="/ui/tasks"' not in await (await client.get("/ui/account")).text()
    assert (await client.get("/ui/tasks", allow_redirects=False)).status == 403


async def test_tasks_page_empty(client, demo_users) -> None:
    await ui_login(client, "operator_cos")
    page = await (await client.get("/ui/tasks")).text()
    assert 'id="tasks-empty"' in page and "0 задач" in page
