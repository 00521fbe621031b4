"""The case rule engine (issue 15) without the browser: every trigger, condition and
action, order and stop-processing, the loop guard, the dry run, versions, and webhooks
that fail without blocking the case change (a local aiohttp server is the receiver)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from conftest import login_as
from test_cases_support import bad, events_of, make_client, ok

from crm.cases import intake, rule_engine, store
from crm.cases.channels import Inbound
from crm.cases.store import NewEvent
from dispatcher.realtime import case_rule_outbox
from herald.audit import Actor
from herald.db import create_pool
from herald.errors import InvalidInput
from providers import webhook

SITE = Actor(login="forms")
URL = "/api/v1/case-rules"


def cond(field: str, op: str, value: Any = None) -> dict[str, Any]:
    return {"kind": "cond", "field": field, "op": op, "value": value}


def rule(
    name: str,
    trigger: dict[str, Any],
    actions: list[dict[str, Any]],
    condition: dict[str, Any] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": trigger,
        "condition": condition,
        "actions": actions,
        "is_active": True,
        **kw,
    }


async def add(client: Any, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = await ok(await client.post(URL, headers=headers, json=body), 201)
    return created


async def new_case(conn: asyncpg.Connection, text: str = "Питання", **kw: Any) -> int:
    result = await intake.ingest(
        conn, SITE, Inbound(channel=kw.pop("channel", "site"), text=text, **kw)
    )
    return result.case_id


async def case_row(conn: asyncpg.Connection, case_id: int) -> asyncpg.Record:
    return await conn.fetchrow(
        "SELECT c.status, c.priority, c.group_code, c.assignee_id, c.tags, cat.code AS category "
        "FROM cases c LEFT JOIN case_categories cat ON cat.id = c.category_id WHERE c.id = $1",
        case_id,
    )


async def runs(conn: asyncpg.Connection, case_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT rule_id, trigger, outcome, depth, actions FROM case_rule_runs "
        "WHERE case_id = $1 ORDER BY id",
        case_id,
    )


async def append(conn: asyncpg.Connection, case_id: int, event: NewEvent) -> int:
    """Write an event as its code path would, then let the rules act in that transaction."""
    async with conn.transaction():
        await store.append_events(conn, SITE, case_id, [event])
        return await rule_engine.process(conn, case_id)


# -- validation ------------------------------------------------------------------------------


async def test_rules_are_validated_naming_the_field(client, demo_users) -> None:
    admin = await login_as(client, "admin")
    prio = [{"type": "set_priority", "priority": "high"}]
    created = {"type": "case_created"}
    cases = [
        (rule("r", created, prio, cond("text", "regex", "(a+)+$")), "condition.value"),
        (rule("r", created, prio, cond("text", "regex", "x" * 201)), "condition.value"),
        (rule("r", created, prio, cond("text", "regex", "(a)\\1")), "condition.value"),
        (rule("r", created, prio, cond("text", "regex", "[")), "condition.value"),
        (
            rule("r", created, prio, {"kind": "and", "items": [cond("category", "eq", "nope")]}),
            "condition.items[0].value",
        ),
        (rule("r", created, prio, cond("priority", "gt", 3)), "condition.op"),
        (rule("r", created, prio, cond("client.debt", "gt", "a lot")), "condition.value"),
        (rule("r", {"type": "idle"}, prio), "trigger.hours"),
        (rule("r", {"type": "scheduled"}, prio), "trigger.at"),
        (
            rule("r", created, [{"type": "set_group", "group_code": "nowhere"}]),
            "actions[0].group_code",
        ),
        (
            rule("r", created, [{"type": "send_message", "template_id": 999999}]),
            "actions[0].template_id",
        ),
        (rule("r", created, [{"type": "webhook", "url": "ftp://x"}]), "actions[0].url"),
        (rule("r", created, []), "actions"),
    ]
    for body, field in cases:
        await bad(await client.post(URL, headers=admin, json=body), field)
    # Operators may not configure rules
    operator = await login_as(client, "operator_cc")
    response = await client.get(URL, headers=operator)
    assert response.status == 403


def test_safe_regex_guard_and_time_limit() -> None:
    for pattern in ("(a+)+", "(.*)*", "(a|aa)+", "(\\w+\\s?){2,}", "a{1000}"):
        with pytest.raises(InvalidInput):
            rule_engine.check_regex(pattern, "value")
    rule_engine.check_regex("борг|заборгован", "value")
    rule_engine.check_regex("^\\d{10}$", "value")
    assert rule_engine.regex_search("БОРГ", "у мене борг") is True
    assert rule_engine.regex_search("^x", "у мене борг") is False
    # A pattern that slipped past the guard still runs out of time instead of hanging
    assert rule_engine.regex_search("(a+)+$", "a" * 5000 + "!") is None


# -- the demo rule: Debt topic, debt > 1000 -> high, Finance, SMS -------------------------------


async def test_case_created_rule_with_client_debt_acts_in_the_intake_transaction(
    client, demo_users, app_conn
) -> None:
    admin = await login_as(client, "admin")
    template = await app_conn.fetchval(
        "SELECT id FROM message_templates WHERE name = 'Звернення зареєстровано'"
    )
    created = await add(
        client,
        admin,
        rule(
            "Борг понад 1000",
            {"type": "case_created"},
            [
                {"type": "set_priority", "priority": "high"},
                {"type": "set_group", "group_code": "finance"},
                {"type": "send_message", "template_id": template, "channel_chain": ["sms"]},
            ],
            {
                "kind": "and",
                "items": [
                    cond("category", "under", "billing.debt"),
                    cond("client.debt", "gt", 1000),
                ],
            },
        ),
    )
    assert created["version"] == 1
    assert created["actions"][2]["template_version"] == 1  # pinned
    debtor = await make_client(app_conn, phone="+380501112233", debt=1500)
    small = await make_client(app_conn, phone="+380501112234", debt=500)
    hit = await new_case(app_conn, "У мене борг за газ", or_number=debtor["or_number"])
    miss = await new_case(app_conn, "У мене борг за газ", or_number=small["or_number"])
    row = await case_row(app_conn, hit)
    assert (row["priority"], row["group_code"], row["category"]) == (
        "high",
        "finance",
        "billing.debt",
    )
    other = await case_row(app_conn, miss)
    assert (other["priority"], other["category"]) == ("normal", "billing.debt")
    assert other["group_code"] != "finance" or other["priority"] != "high"
    # Journalled on the case: the run and an automation event naming the rule
    [run] = await runs(app_conn, hit)
    assert (run["rule_id"], run["trigger"], run["outcome"]) == (
        created["id"],
        "case_created",
        "done",
    )
    assert [a["ok"] for a in run["actions"]] == [True, True, True]
    assert await runs(app_conn, miss) == []
    operator = await login_as(client, "operator_cc")
    auto = [e for e in await events_of(client, operator, hit) if e["kind"] == "automation"]
    assert auto[0]["body"] == "Борг понад 1000" and auto[0]["actor_login"] == "automation"
    # The SMS waits in the outbox; the dispatcher turns it into a realtime message
    outbox = await app_conn.fetchrow(
        "SELECT kind, payload, status FROM case_rule_outbox WHERE case_id = $1", hit
    )
    assert (outbox["kind"], outbox["status"]) == ("message", "pending")
    assert outbox["payload"]["channel_chain"] == ["sms"]


async def test_message_outbox_becomes_a_realtime_message(
    client, demo_users, app_conn, settings
) -> None:
    admin = await login_as(client, "admin")
    template = await app_conn.fetchval(
        "SELECT id FROM message_templates WHERE name = 'Звернення зареєстровано'"
    )
    await add(
        client,
        admin,
        rule(
            "SMS",
            {"type": "case_created"},
            [{"type": "send_message", "template_id": template, "channel_chain": ["sms"]}],
        ),
    )
    person = await make_client(app_conn, phone="+380501112299")
    case_id = await new_case(app_conn, or_number=person["or_number"])
    anonymous = await new_case(app_conn, "анонім")
    pool = await create_pool(settings)
    hook = webhook.WebhookClient()
    try:
        assert await case_rule_outbox.deliver_due(pool, None, settings, hook) == 1
    finally:
        await hook.close()
        await pool.close()
    row = await app_conn.fetchrow(
        "SELECT status, attempts FROM case_rule_outbox WHERE case_id = $1", case_id
    )
    assert (row["status"], row["attempts"]) == ("sent", 1)
    assert (
        await app_conn.fetchval(
            "SELECT count(*) FROM realtime_messages WHERE client_id = $1", person["client_id"]
        )
        == 1
    )
    kinds = [e["kind"] for e in await events_of(client, admin, case_id)]
    assert "notification" in kinds
    # An anonymous case has no client: the action is refused and journalled, not fatal
    [run] = await runs(app_conn, anonymous)
    assert run["actions"][0]["ok"] is False


# -- triggers --------------------------------------------------------------------------------


async def test_field_changed_client_and_agent_replies_and_task_done(
    client, demo_users, app_conn
) -> None:
    admin = await login_as(client, "admin")
    on_status = await add(
        client,
        admin,
        rule(
            "Статус",
            {"type": "field_changed", "fields": ["status"]},
            [{"type": "add_tag", "tag": "moved"}, {"type": "add_note", "text": "Статус змінено"}],
            cond("status", "eq", "in_progress"),
        ),
    )
    await add(
        client,
        admin,
        rule(
            "Група",
            {"type": "field_changed", "fields": ["group"]},
            [{"type": "add_tag", "tag": "regrouped"}],
        ),
    )
    await add(
        client,
        admin,
        rule(
            "Клієнт: терміново",
            {"type": "client_replied"},
            [{"type": "set_priority", "priority": "urgent"}],
            cond("text", "regex", "термінов|негайно"),
        ),
    )
    await add(
        client,
        admin,
        rule("Відповідь", {"type": "agent_replied"}, [{"type": "add_tag", "tag": "answered"}]),
    )
    await add(
        client,
        admin,
        rule(
            "Задачу виконано",
            {"type": "task_done"},
            [{"type": "notify_supervisors", "text": "Задачу виконано"}],
        ),
    )
    case_id = await new_case(app_conn)
    operator = await login_as(client, "operator_cc")
    # A status change through the API: the rule acts before the response
    changed = await ok(
        await client.post(
            f"/api/v1/cases/{case_id}/status", headers=operator, json={"status": "in_progress"}
        )
    )
    assert changed["status"] == "in_progress"
    row = await case_row(app_conn, case_id)
    assert "moved" in row["tags"]
    notes = [e for e in await events_of(client, operator, case_id) if e["kind"] == "note"]
    assert notes[-1]["body"] == "Статус змінено"
    # A reassignment to another group
    supervisor = await login_as(client, "supervisor")
    await ok(
        await client.post(
            f"/api/v1/cases/{case_id}/assignment",
            headers=supervisor,
            json={"group_code": "technical"},
        )
    )
    assert "regrouped" in (await case_row(app_conn, case_id))["tags"]
    # The client writes (a follow-up of the case's chat), with and without the keyword
    await append(app_conn, case_id, NewEvent(kind="message", direction="in", body="Дякую"))
    assert (await case_row(app_conn, case_id))["priority"] == "normal"
    await append(
        app_conn, case_id, NewEvent(kind="message", direction="in", body="Прошу ТЕРМІНОВО")
    )
    assert (await case_row(app_conn, case_id))["priority"] == "urgent"
    # An agent replies
    await append(app_conn, case_id, NewEvent(kind="message", direction="out", body="Відповідь"))
    assert "answered" in (await case_row(app_conn, case_id))["tags"]
    # A task is done (through the API)
    task = await ok(
        await client.post(
            f"/api/v1/cases/{case_id}/tasks",
            headers=operator,
            json={
                "group_code": "technical",
                "title": "Перевірити",
                "due_at": "2099-01-01T00:00:00Z",
            },
        ),
        201,
    )
    await ok(
        await client.post(f"/api/v1/case-tasks/{task['id']}/done", headers=supervisor, json={})
    )
    notices = await ok(await client.get("/api/v1/case-rule-alerts", headers=admin))
    assert [(n["case_id"], n["text"]) for n in notices] == [(case_id, "Задачу виконано")]
    triggers = [r["trigger"] for r in await runs(app_conn, case_id)]
    assert triggers == [
        "field_changed",
        "field_changed",
        "client_replied",
        "agent_replied",
        "task_done",
    ]
    # Only the status rule's first run matched "in_progress"; the journal API lists runs
    listed = await ok(await client.get(f"/api/v1/cases/{case_id}/rule-runs", headers=operator))
    assert listed[-1]["rule_id"] == on_status["id"]


async def test_sla_warning_and_breach_run_from_the_queue(
    client, demo_users, app_conn, settings
) -> None:
    admin = await login_as(client, "admin")
    await add(
        client,
        admin,
        rule("Попередження", {"type": "sla_warning"}, [{"type": "add_tag", "tag": "sla_warn"}]),
    )
    await add(
        client,
        admin,
        rule(
            "Порушення",
            {"type": "sla_breach"},
            [
                {"type": "set_priority", "priority": "urgent"},
                {
                    "type": "create_task",
                    "group_code": "cc_l2",
                    "title": "Порушено SLA",
                    "due_hours": 4,
                },
            ],
        ),
    )
    case_id = await new_case(app_conn)
    # The SLA evaluator writes its events in its own transaction, without the rules ...
    await store.append_events(
        app_conn,
        SITE,
        case_id,
        [
            NewEvent(kind="sla", data={"target": "resolution", "level": "warning"}),
            NewEvent(kind="sla", data={"target": "resolution", "level": "breached"}),
        ],
    )
    assert await runs(app_conn, case_id) == []
    # ... and the scheduler's queue duty runs them a moment later
    pool = await create_pool(settings)
    try:
        assert await rule_engine.run_queue(pool) >= 1
    finally:
        await pool.close()
    row = await case_row(app_conn, case_id)
    assert "sla_warn" in row["tags"] and row["priority"] == "urgent"
    task = await app_conn.fetchrow(
        "SELECT group_code, title, due_at - created_at AS left FROM case_tasks WHERE case_id = $1",
        case_id,
    )
    assert (task["group_code"], task["title"]) == ("cc_l2", "Порушено SLA")
    assert abs(task["left"].total_seconds() - 4 * 3600) < 60


async def test_idle_and_scheduled_rules(client, demo_users, app_conn, settings) -> None:
    admin = await login_as(client, "admin")
    await add(
        client,
        admin,
        rule(
            "Тиша 1 год",
            {"type": "idle", "hours": 1},
            [{"type": "add_tag", "tag": "idle"}],
            {"kind": "not", "item": cond("status", "eq", "resolved")},
        ),
    )
    await add(
        client,
        admin,
        rule(
            "Щоранку", {"type": "scheduled", "at": "00:00"}, [{"type": "add_tag", "tag": "daily"}]
        ),
    )
    quiet, busy = await new_case(app_conn, "a"), await new_case(app_conn, "b")
    await app_conn.execute(
        "UPDATE cases SET status_changed_at = herald_now() - interval '20 days', "
        "last_inbound_at = herald_now() - interval '20 days' WHERE id = $1",
        quiet,
    )
    pool = await create_pool(settings)
    try:
        await rule_engine.run_time_rules(pool)
        await rule_engine.run_time_rules(pool)  # the second pass finds nothing new
    finally:
        await pool.close()
    quiet_row, busy_row = await case_row(app_conn, quiet), await case_row(app_conn, busy)
    assert sorted(quiet_row["tags"]) == ["daily", "idle"]
    assert busy_row["tags"] == ["daily"]
    assert [r["trigger"] for r in await runs(app_conn, quiet)].count("idle") == 1


# -- conditions ------------------------------------------------------------------------------


async def test_conditions_on_client_attributes_channel_and_or_not(
    client, demo_users, app_conn
) -> None:
    admin = await login_as(client, "admin")
    person = await make_client(app_conn, consumer_type="household_heating", debt=10)
    await app_conn.execute(
        "UPDATE accounts SET registers = '{privileged}' WHERE client_id = $1", person["client_id"]
    )
    segment = await app_conn.fetchval(
        "INSERT INTO segments (name, kind, condition, created_by, members_set) "
        "VALUES ('VIP', 'static', '{}'::jsonb, 'test', nextval('segment_member_set_seq')) "
        "RETURNING id"
    )
    await app_conn.execute(
        "INSERT INTO segment_member_rows (set_id, client_id) "
        "SELECT members_set, $2 FROM segments WHERE id = $1",
        segment,
        person["client_id"],
    )
    checks = {
        "segment": cond("client.segments", "has", str(segment)),
        "consumer": cond("client.consumer_types", "has", "household_heating"),
        "register": cond("client.registers", "has", "privileged"),
        "channel": {
            "kind": "or",
            "items": [cond("channel", "eq", "email"), cond("channel", "in", ["site", "app"])],
        },
        "not_debt": {"kind": "not", "item": cond("client.debt", "ge", 100)},
        "identified": cond("identified", "eq", True),
        "contains": cond("text", "contains", "ЛІЧИЛЬНИК"),
    }
    for tag, condition in checks.items():
        await add(
            client,
            admin,
            rule(tag, {"type": "case_created"}, [{"type": "add_tag", "tag": tag}], condition),
        )
    hit = await new_case(app_conn, "Не працює лічильник", or_number=person["or_number"])
    assert sorted((await case_row(app_conn, hit))["tags"]) == sorted(checks)
    stranger = await new_case(app_conn, "Інше питання", channel="email", email="x@example.com")
    assert (await case_row(app_conn, stranger))["tags"] == ["channel", "not_debt"]


# -- actions, order, stop-processing ---------------------------------------------------------


async def test_status_category_route_assignee_webhook_actions_and_stop_processing(
    client, demo_users, app_conn
) -> None:
    admin = await login_as(client, "admin")
    user_id = await app_conn.fetchval(
        "SELECT id FROM users WHERE login = $1", demo_users["operator_cc"]
    )
    await app_conn.execute(
        "INSERT INTO case_group_members (group_code, user_id) VALUES ('cc_l1', $1) "
        "ON CONFLICT DO NOTHING",
        user_id,
    )
    first = await add(
        client,
        admin,
        rule(
            "Спершу",
            {"type": "case_created"},
            [
                {"type": "set_status", "status": "in_progress"},
                {"type": "set_category", "category": "meter.reading"},
                {"type": "set_group", "group_code": "cc_l1"},
                {"type": "set_assignee", "user_id": user_id},
                {"type": "set_status", "status": "closed"},  # not allowed: journalled as refused
                {"type": "webhook", "url": "http://127.0.0.1:9/hook"},
            ],
            cond("text", "contains", "показник"),
            stop_processing=True,
        ),
    )
    await add(
        client,
        admin,
        rule("Потім", {"type": "case_created"}, [{"type": "add_tag", "tag": "second"}]),
    )
    await add(
        client,
        admin,
        rule(
            "Маршрут",
            {"type": "case_created"},
            [{"type": "route"}],
            cond("text", "contains", "газ"),
        ),
    )
    hit = await new_case(app_conn, "Передаю показник")
    row = await case_row(app_conn, hit)
    assert (row["status"], row["category"], row["group_code"], row["assignee_id"]) == (
        "in_progress",
        "meter.reading",
        "cc_l1",
        user_id,
    )
    assert row["tags"] == []  # the first rule stopped the processing
    [run] = await runs(app_conn, hit)
    assert [a["ok"] for a in run["actions"]] == [True, True, True, True, False, True]
    assert run["rule_id"] == first["id"]
    assert (
        await app_conn.fetchval("SELECT kind FROM case_rule_outbox WHERE case_id = $1", hit)
        == "webhook"
    )
    other = await new_case(app_conn, "Немає газу")
    row = await case_row(app_conn, other)
    assert row["tags"] == ["second"]
    assert row["group_code"] is not None
    # Moving the second rule above the first changes the order
    ordered = await ok(
        await client.post(f"{URL}/{first['id']}/move", headers=admin, json={"direction": "down"})
    )
    assert [r["name"] for r in ordered][:2] == ["Потім", "Спершу"]
    again = await new_case(app_conn, "Ще показник")
    assert (await case_row(app_conn, again))["tags"] == ["second"]


# -- loop guard -------------------------------------------------------------------------------


async def test_loop_guard_stops_rules_that_trigger_each_other(client, demo_users, app_conn) -> None:
    admin = await login_as(client, "admin")
    watch = {"type": "field_changed", "fields": ["priority"]}
    await add(
        client,
        admin,
        rule(
            "Вгору",
            watch,
            [{"type": "set_priority", "priority": "high"}],
            cond("priority", "eq", "low"),
        ),
    )
    await add(
        client,
        admin,
        rule(
            "Вниз",
            watch,
            [{"type": "set_priority", "priority": "low"}],
            cond("priority", "eq", "high"),
        ),
    )
    case_id = await new_case(app_conn)
    operator = await login_as(client, "operator_cc")
    # The operator's change commits; the ping-pong stops at the depth limit
    await ok(
        await client.patch(
            f"/api/v1/cases/{case_id}/classification", headers=operator, json={"priority": "low"}
        )
    )
    done = await runs(app_conn, case_id)
    # Each round both rules run (the second sees what the first did), for MAX_DEPTH rounds
    assert len(done) == 2 * rule_engine.MAX_DEPTH
    assert max(r["depth"] for r in done) == rule_engine.MAX_DEPTH - 1
    guard = [
        e
        for e in await events_of(client, operator, case_id)
        if e["kind"] == "automation" and (e["data"] or {}).get("outcome") == "depth_limit"
    ]
    assert len(guard) == 1
    assert (
        await app_conn.fetchval("SELECT count(*) FROM case_rule_queue WHERE case_id = $1", case_id)
        == 0
    )
    # The per-case cap: more changes soon stop running the same rules
    for _ in range(6):
        await ok(
            await client.patch(
                f"/api/v1/cases/{case_id}/classification",
                headers=operator,
                json={"priority": "normal"},
            )
        )
        await ok(
            await client.patch(
                f"/api/v1/cases/{case_id}/classification",
                headers=operator,
                json={"priority": "low"},
            )
        )
    outcomes = [r["outcome"] for r in await runs(app_conn, case_id)]
    assert outcomes.count("done") == 2 * rule_engine.RUN_CAP
    assert "capped" in outcomes


# -- webhooks ---------------------------------------------------------------------------------


async def test_failing_webhook_never_blocks_the_case_and_is_retried(
    client, demo_users, app_conn, settings, aiohttp_server
) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    mode = {"answer": 500}

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        if mode["answer"] == 0:
            await asyncio.sleep(2)
        return web.Response(status=mode["answer"] or 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    admin = await login_as(client, "admin")
    await add(
        client,
        admin,
        rule(
            "Вебхук",
            {"type": "case_created"},
            [
                {"type": "webhook", "url": str(server.make_url("/hook"))},
                {"type": "add_tag", "tag": "hooked"},
            ],
        ),
    )
    # The receiver fails: the case is created and tagged all the same
    case_id = await new_case(app_conn, "Питання")
    assert (await case_row(app_conn, case_id))["tags"] == ["hooked"]
    pool = await create_pool(settings)
    client_ = webhook.WebhookClient()
    try:
        assert await case_rule_outbox.deliver_due(pool, None, settings, client_, timeout=0.5) == 1
        row = await app_conn.fetchrow("SELECT status, attempts, last_error FROM case_rule_outbox")
        assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 1, "HTTP 500")
        # Not due yet: nothing is tried before the backoff
        assert await case_rule_outbox.deliver_due(pool, None, settings, client_, timeout=0.5) == 0
        # A slow receiver runs out of time
        mode["answer"] = 0
        await app_conn.execute("UPDATE case_rule_outbox SET next_attempt_at = herald_now()")
        await case_rule_outbox.deliver_due(pool, None, settings, client_, timeout=0.3)
        row = await app_conn.fetchrow("SELECT status, attempts, last_error FROM case_rule_outbox")
        assert row["attempts"] == 2 and "0.3" in row["last_error"]
        # The receiver recovers: sent, signed, and journalled on the case
        mode["answer"] = 204
        await app_conn.execute("UPDATE case_rule_outbox SET next_attempt_at = herald_now()")
        await case_rule_outbox.deliver_due(pool, None, settings, client_, timeout=0.5)
        assert await app_conn.fetchval("SELECT status FROM case_rule_outbox") == "sent"
        # Another failing for good after MAX_ATTEMPTS
        mode["answer"] = 503
        failing = await new_case(app_conn, "Друге")
        for _ in range(case_rule_outbox.MAX_ATTEMPTS):
            await app_conn.execute("UPDATE case_rule_outbox SET next_attempt_at = herald_now()")
            await case_rule_outbox.deliver_due(pool, None, settings, client_, timeout=0.5)
        assert (
            await app_conn.fetchval(
                "SELECT status FROM case_rule_outbox WHERE case_id = $1", failing
            )
            == "failed"
        )
    finally:
        await client_.close()
        await pool.close()
    headers, body = received[-2 - case_rule_outbox.MAX_ATTEMPTS + 1]
    secret = await app_conn.fetchval("SELECT webhook_secret FROM case_rule_settings")
    assert headers[webhook.SIGNATURE] == webhook.sign(secret, headers[webhook.TIMESTAMP], body)
    assert json.loads(body)["case"]["id"] == case_id
    operator = await login_as(client, "operator_cc")
    outcomes = [
        e["data"]["outcome"]
        for e in await events_of(client, operator, failing)
        if e["kind"] == "automation" and "outbox_id" in (e["data"] or {})
    ]
    assert outcomes == ["failed"]


# -- dry run and versions ---------------------------------------------------------------------


async def test_dry_run_writes_nothing(client, demo_users, app_conn) -> None:
    admin = await login_as(client, "admin")
    person = await make_client(app_conn, debt=2000)
    case_id = await new_case(app_conn, "борг", or_number=person["or_number"])
    number = await app_conn.fetchval("SELECT number FROM cases WHERE id = $1", case_id)
    draft = rule(
        "Чернетка",
        {"type": "case_created"},
        [
            {"type": "set_priority", "priority": "high"},
            {"type": "add_tag", "tag": "x"},
            {"type": "webhook", "url": "http://127.0.0.1:9/x"},
        ],
        {
            "kind": "and",
            "items": [cond("client.debt", "gt", 1000), cond("text", "contains", "борг")],
        },
    )
    counts = (
        "SELECT (SELECT count(*) FROM case_events) + (SELECT count(*) FROM case_rule_outbox) "
        "+ (SELECT count(*) FROM audit_log)"
    )
    before = await app_conn.fetchval(counts)
    result = await ok(
        await client.post(
            f"{URL}/dry-run", headers=admin, json={"case_number": number, "rule": draft}
        )
    )
    assert result["matched"] is True
    assert [t["path"] for t in result["trace"]] == [
        "condition",
        "condition.items[0]",
        "condition.items[1]",
    ]
    assert [a["ok"] for a in result["actions"]] == [True, True, True]
    assert (result["before"]["priority"], result["after"]["priority"]) == ("normal", "high")
    assert result["after"]["tags"] == ["x"]
    assert await app_conn.fetchval(counts) == before
    assert (await case_row(app_conn, case_id))["priority"] == "normal"
    await bad(
        await client.post(
            f"{URL}/dry-run", headers=admin, json={"case_number": "ЗВ-0", "rule": draft}
        ),
        "case_number",
    )


async def test_versions_diff_and_rollback(client, demo_users) -> None:
    admin = await login_as(client, "admin")
    body = rule("Версії", {"type": "case_created"}, [{"type": "add_tag", "tag": "v1"}])
    created = await add(client, admin, body)
    url = f"{URL}/{created['id']}"
    body["actions"] = [{"type": "add_tag", "tag": "v2"}]
    body["name"] = "Версії 2"
    await ok(await client.put(url, headers=admin, json=body))
    await ok(await client.patch(url, headers=admin, json={"is_active": False}))
    listed = await ok(await client.get(f"{url}/versions", headers=admin))
    assert [(v["version"], v["action"]) for v in listed] == [
        (3, "update"),
        (2, "update"),
        (1, "create"),
    ]
    assert listed[0]["by_login"] == demo_users["admin"]
    changes = await ok(await client.get(f"{url}/versions/2/diff", headers=admin))
    assert sorted((c["path"], c["old"], c["new"]) for c in changes) == [
        ("actions[0].tag", "v1", "v2"),
        ("name", "Версії", "Версії 2"),
    ]
    back = await ok(await client.post(f"{url}/versions/1/rollback", headers=admin))
    assert (back["version"], back["name"], back["actions"][0]["tag"], back["is_active"]) == (
        4,
        "Версії",
        "v1",
        True,
    )
    assert (await ok(await client.get(f"{url}/versions", headers=admin)))[0]["action"] == "rollback"
    await bad(await client.get(f"{url}/versions/1/diff", headers=admin), "against")
    response = await client.post(f"{url}/versions/9/rollback", headers=admin)
    assert response.status == 404
