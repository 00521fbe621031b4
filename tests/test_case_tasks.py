"""Hand-off of work on a case to another department as a task with its own deadline."""

from __future__ import annotations

import datetime as dt

from conftest import login_as
from test_cases_routing import bulk_cases, make_agent, user_id_of
from test_cases_support import bad, events_of, journal, ok

from herald import clock


def _at(hours: float) -> str:
    return (clock.now() + dt.timedelta(hours=hours)).isoformat()


async def test_tasks_handed_off_listed_overdue_and_closed(client, demo_users, app_conn) -> None:
    operator = await login_as(client, "operator_cc")
    cos = await login_as(client, "operator_cos")
    supervisor = await login_as(client, "supervisor")
    cos_id = await user_id_of(app_conn, demo_users["operator_cos"])
    await app_conn.execute(
        "INSERT INTO case_group_members (group_code, user_id) VALUES ('finance', $1)", cos_id
    )
    technician = await make_agent(app_conn, groups=("technical",))
    case_id, other_case = await bulk_cases(app_conn, 2)
    url = f"/api/v1/cases/{case_id}/tasks"
    late = await ok(
        await client.post(
            url,
            headers=operator,
            json={
                "group_code": "finance",
                "title": "Перевірити оплату",
                "due_at": _at(-2),
                "body": "Клієнт оплатив 01.12, оплата не зарахована",
            },
        ),
        201,
    )
    soon = await ok(
        await client.post(
            url,
            headers=operator,
            json={
                "group_code": "finance",
                "title": "Перерахувати борг",
                "due_at": _at(24),
                "assignee_id": cos_id,
            },
        ),
        201,
    )
    tech = await ok(
        await client.post(
            f"/api/v1/cases/{other_case}/tasks",
            headers=operator,
            json={
                "group_code": "technical",
                "title": "Перевірити лічильник",
                "due_at": _at(-1),
                "assignee_id": technician,
            },
        ),
        201,
    )
    assert (late["status"], late["overdue"], soon["overdue"]) == ("open", True, False)
    assert late["case_id"] == case_id and late["created_by_login"] == demo_users["operator_cc"]
    # Lists: the case's, a group's, mine (assigned to me or to my group unassigned), overdue
    assert [t["id"] for t in await ok(await client.get(url, headers=operator))] == [
        late["id"],
        soon["id"],
    ]
    overdue = await ok(await client.get("/api/v1/case-tasks?overdue=true", headers=supervisor))
    assert [t["id"] for t in overdue] == [late["id"], tech["id"]]
    finance = await ok(
        await client.get("/api/v1/case-tasks?group_code=finance&overdue=false", headers=supervisor)
    )
    assert [t["id"] for t in finance] == [soon["id"]]
    mine = await ok(await client.get("/api/v1/case-tasks?mine=true", headers=cos))
    assert [t["id"] for t in mine] == [late["id"], soon["id"]]
    assert await ok(await client.get("/api/v1/case-tasks?mine=true", headers=operator)) == []
    # Closing: a member of the group, the author or a supervisor; never twice
    body = await bad(
        await client.post(f"/api/v1/case-tasks/{tech['id']}/done", headers=cos, json={}), "", 409
    )
    assert "technical" in body["detail"]
    done = await ok(
        await client.post(
            f"/api/v1/case-tasks/{late['id']}/done",
            headers=cos,
            json={"result": "Оплату знайдено та зараховано"},
        )
    )
    assert (done["status"], done["overdue"], done["closed_by_login"]) == (
        "done",
        False,
        demo_users["operator_cos"],
    )
    await bad(
        await client.post(f"/api/v1/case-tasks/{late['id']}/cancel", headers=cos, json={}), "", 409
    )
    cancelled = await ok(
        await client.post(f"/api/v1/case-tasks/{tech['id']}/cancel", headers=supervisor, json={})
    )
    assert cancelled["status"] == "cancelled"
    assert [
        t["id"]
        for t in await ok(await client.get("/api/v1/case-tasks?overdue=true", headers=supervisor))
    ] == []
    assert [
        t["id"]
        for t in await ok(await client.get("/api/v1/case-tasks?status=open", headers=supervisor))
    ] == [soon["id"]]
    # Every change is a task event of the case and an audit entry
    events = [e for e in await events_of(client, operator, case_id) if e["kind"] == "task"]
    assert [(e["data"]["action"], e["data"]["task_id"]) for e in events] == [
        ("create", late["id"]),
        ("create", soon["id"]),
        ("done", late["id"]),
    ]
    assert events[2]["body"] == "Оплату знайдено та зараховано"
    assert [
        (e["action"], e["field"]) for e in await journal(client, f"case_task/{late['id']}")
    ] == [("update", "status"), ("create", None)]


async def test_task_input_and_permissions(client, demo_users, app_conn) -> None:
    operator = await login_as(client, "operator_cc")
    analyst = await login_as(client, "analyst")
    case_id = (await bulk_cases(app_conn, 1))[0]
    url = f"/api/v1/cases/{case_id}/tasks"
    good = {"group_code": "finance", "title": "Перевірити", "due_at": _at(4)}
    await bad(await client.post(url, headers=analyst, json=good), "", 403)
    await bad(
        await client.post(url, headers=operator, json={**good, "group_code": "nope"}), "group_code"
    )
    await bad(await client.post(url, headers=operator, json={**good, "title": ""}), "title")
    await bad(
        await client.post(url, headers=operator, json={**good, "due_at": "tomorrow"}), "due_at"
    )
    await bad(
        await client.post(url, headers=operator, json={**good, "due_at": "2026-12-04T12:00:00"}),
        "due_at",
    )
    await bad(
        await client.post(url, headers=operator, json={**good, "assignee_id": 10**9}), "assignee_id"
    )
    outsider = await make_agent(app_conn, groups=("technical",))
    await bad(
        await client.post(url, headers=operator, json={**good, "assignee_id": outsider}),
        "assignee_id",
    )
    await bad(await client.get("/api/v1/case-tasks?status=late", headers=operator), "status")
    await bad(
        await client.post("/api/v1/cases/999999999/tasks", headers=operator, json=good), "", 404
    )
    await bad(
        await client.post("/api/v1/case-tasks/999999999/done", headers=operator, json={}), "", 404
    )
    await app_conn.execute("UPDATE cases SET status = 'closed' WHERE id = $1", case_id)
    await bad(await client.post(url, headers=operator, json=good), "", 409)
