"""Operator replies (e-mail in the thread, SMS/Viber on the realtime path) and client
updates of cases by admin-defined rules, through a running worker and the simulators."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from conftest import login_as
from dispatch_helpers import Stack, make_clients
from sim_helpers import free_port
from test_cases_support import bad, ok

from admin_api.app import init_app
from dispatcher.realtime import case_replies
from herald.audit import SYSTEM
from herald.db import create_pool
from providers.sim.server import init_simulators_app
from providers.sim.smtp_sink import EMAIL_SIM, start_smtp_sink
from providers.smtp import thread_headers
from rules import consent

EMAIL_URL = "/api/v1/case-intake/email"


async def inbound_email(stack: Stack, **body: Any) -> dict[str, Any]:
    integration = await login_as(stack.api, "integration")
    found: dict[str, Any] = await ok(
        await stack.api.post(EMAIL_URL, headers=integration, json=body)
    )
    return found


async def walk_in(stack: Stack, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    found = await ok(
        await stack.api.post(
            "/api/v1/cases", headers=headers, json={"text": "Прошу перевірити показники", **body}
        ),
        201,
    )
    return found["case"]


async def sim_messages(
    stack: Stack, channel: str, message_id: str | None = None
) -> list[dict[str, Any]]:
    query = f"?message_id={message_id}" if message_id else ""
    found: list[dict[str, Any]] = (await stack.sim("GET", f"/{channel}/sim/messages{query}"))[
        "messages"
    ]
    return found


async def eventually(read: Any, timeout: float = 60.0) -> Any:
    """Poll the coroutine function ``read`` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await read()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never happened: {read}")
        await asyncio.sleep(0.2)


async def notifications(stack: Stack, case_id: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await stack.call("GET", f"/api/v1/cases/{case_id}/messages"))[
        "notifications"
    ]
    return found


async def texts_to(stack: Stack, channel: str, address: str) -> list[str]:
    return [
        m["content"]["text"] for m in await sim_messages(stack, channel) if m["address"] == address
    ]


async def test_email_reply_threads_and_the_answer_lands_in_the_same_case(stack: Stack) -> None:
    await make_clients(stack.conn, 1)
    first = await inbound_email(
        stack,
        **{
            "from": "Олена <client1@example.com>",
            "message_id": "<m1@mail.example.ua>",
            "subject": "Рахунок за березень",
            "text": "Чому такий великий рахунок?",
        },
    )
    operator = await login_as(stack.api, "operator_cc")
    # When the operator replies
    reply = await ok(
        await stack.api.post(
            f"/api/v1/cases/{first['case_id']}/replies",
            headers=operator,
            json={"text": "Перевірили: нараховано за показниками."},
        ),
        202,
    )
    assert (reply["channel"], reply["status"]) == ("email", "sent")
    assert reply["external_id"] == f"email:{reply['message_id']}@herald"
    # Then the client gets an e-mail in the thread: In-Reply-To and References name the
    # client's message, the subject carries the case number
    [mail] = await sim_messages(stack, "email", reply["message_id"])
    content = mail["content"]
    assert mail["address"] == "client1@example.com"
    assert content["message_id_header"] == f"<{reply['message_id']}@herald>"
    assert content["in_reply_to"] == "<m1@mail.example.ua>"
    assert content["references"] == ["<m1@mail.example.ua>"]
    assert content["subject"] == f"Re: Рахунок за березень [{first['number']}]"
    assert "нараховано за показниками" in content["text"]
    # When the client answers it (their mail client names only our Message-ID)
    answer = await inbound_email(
        stack,
        **{
            "from": "client1@example.com",
            "message_id": "<m2@mail.example.ua>",
            "subject": "Re: Рахунок",
            "in_reply_to": content["message_id_header"],
            "text": "Дякую, а коли перерахунок?",
        },
    )
    assert (answer["case_id"], answer["appended"], answer["created"]) == (
        first["case_id"],
        True,
        False,
    )
    # A second reply continues the thread with every id of it
    again = await ok(
        await stack.api.post(
            f"/api/v1/cases/{first['case_id']}/replies",
            headers=operator,
            json={"text": "У наступному рахунку.", "subject": "Перерахунок"},
        ),
        202,
    )
    [second] = await sim_messages(stack, "email", again["message_id"])
    assert second["content"]["in_reply_to"] == "<m2@mail.example.ua>"
    assert second["content"]["references"] == [
        "<m1@mail.example.ua>",
        f"<{reply['message_id']}@herald>",
        "<m2@mail.example.ua>",
    ]
    assert second["content"]["subject"] == f"Перерахунок [{first['number']}]"
    events = (await stack.call("GET", f"/api/v1/cases/{first['case_id']}/events"))["items"]
    out = [e for e in events if e["kind"] == "message" and e["direction"] == "out"]
    assert [e["external_id"] for e in out] == [reply["external_id"], again["external_id"]]
    assert all(e["actor_login"] != "system" and e["channel"] == "email" for e in out)
    history = await stack.call("GET", f"/api/v1/audit/case/{first['case_id']}")
    assert [e["new_value"]["message_id"] for e in history["items"] if e["action"] == "reply"] == [
        again["message_id"],
        reply["message_id"],
    ]
    # Each reply is on the client's timeline with its status
    feed = await stack.call("GET", "/api/v1/clients/1/timeline")
    replies = [
        (i["detail"]["message_id"], i["status"], i["channel"])
        for i in feed["items"]
        if i["kind"] == "case_reply"
    ]
    assert sorted(replies) == sorted(
        [(reply["message_id"], "sent", "email"), (again["message_id"], "sent", "email")]
    )
    statuses = (await stack.call("GET", f"/api/v1/cases/{first['case_id']}/messages"))[
        "email_replies"
    ]
    assert [(s["message_id"], s["status"], s["attempts"]) for s in statuses] == [
        (reply["message_id"], "sent", 1),
        (again["message_id"], "sent", 1),
    ]


async def test_smtp_down_then_up_sends_the_reply_once(
    settings, demo_users, aiohttp_client, admin_conn
) -> None:
    # Given SMTP that nobody answers
    port = free_port()
    settings = msgspec.structs.replace(settings, smtp_host="127.0.0.1", smtp_port=port)
    api = await aiohttp_client(init_app(settings))
    await make_clients(admin_conn, 1)
    integration = await login_as(api, "integration")
    case = await ok(
        await api.post(
            EMAIL_URL,
            headers=integration,
            json={
                "from": "client1@example.com",
                "message_id": "<q1@mail.example.ua>",
                "text": "Питання",
            },
        )
    )
    operator = await login_as(api, "operator_cos")
    reply = await ok(
        await api.post(
            f"/api/v1/cases/{case['case_id']}/replies", headers=operator, json={"text": "Відповідь"}
        ),
        202,
    )
    # The reply is stored and waits: nothing lost
    assert reply["status"] == "pending"
    row = await admin_conn.fetchrow(
        "SELECT status, attempts, last_error, next_attempt_at > herald_now() "
        "AS later FROM case_email_outbox"
    )
    assert (row["status"], row["attempts"], row["later"]) == ("pending", 1, True)
    assert "cannot connect" in row["last_error"]
    pool = await create_pool(settings)
    try:
        # Not due yet: the scheduler's duty leaves it alone
        assert await case_replies.deliver_due(pool, settings) == 0
        # When SMTP is back and the back-off has passed
        sims = init_simulators_app(settings)
        ledger = sims[EMAIL_SIM]
        ledger.configure({"receipts_enabled": False})
        sink = await start_smtp_sink(ledger, "127.0.0.1", port)
        try:
            await admin_conn.execute("UPDATE case_email_outbox SET next_attempt_at = herald_now()")
            # Two schedulers at once: one claims the row, the other finds nothing
            sent = await asyncio.gather(
                case_replies.deliver_due(pool, settings), case_replies.deliver_due(pool, settings)
            )
            assert sorted(sent) == [0, 1]
            # A re-run afterwards sends nothing more
            await admin_conn.execute("UPDATE case_email_outbox SET next_attempt_at = herald_now()")
            assert await case_replies.deliver_due(pool, settings) == 0
        finally:
            sink.close()
            await sink.wait_closed()
    finally:
        await pool.close()
    assert (ledger.stats.accepted, ledger.stats.duplicates) == (1, 0)
    row = await admin_conn.fetchrow("SELECT status, attempts, last_error FROM case_email_outbox")
    assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 2, None)


async def test_a_temporary_smtp_failure_is_retried_by_the_scheduler(stack: Stack) -> None:
    await make_clients(stack.conn, 1)
    case = await inbound_email(
        stack,
        **{"from": "client1@example.com", "message_id": "<t1@mail.example.ua>", "text": "Питання"},
    )
    await stack.configure("email", fail_next_requests=1)
    reply = await ok(
        await stack.api.post(
            f"/api/v1/cases/{case['case_id']}/replies",
            headers=stack.headers,
            json={"text": "Відповідь"},
        ),
        202,
    )
    assert reply["status"] == "pending"

    async def sent() -> bool:
        statuses = (await stack.call("GET", f"/api/v1/cases/{case['case_id']}/messages"))[
            "email_replies"
        ]
        return statuses[0]["status"] == "sent"

    await eventually(sent)
    stats = await stack.sim_stats("email")
    assert (stats["accepted"], stats["duplicates"], stats["transient"]) == (1, 0, 1)


async def test_phone_replies_go_through_the_realtime_path(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 2)
    operator = await login_as(stack.api, "operator_cc")
    case = await walk_in(stack, operator, client_id=ids[0])
    # Viber first by default, with the case number and the text
    reply = await ok(
        await stack.api.post(
            f"/api/v1/cases/{case['id']}/replies",
            headers=operator,
            json={"text": "Показники прийнято"},
        ),
        202,
    )
    assert (reply["channel"], reply["channel_chain"]) == ("viber", ["viber", "sms"])
    assert reply["message_id"].startswith("o")
    [viber] = await eventually(lambda: sim_messages(stack, "viber", reply["message_id"]))
    assert viber["address"] == "+380500000001"
    assert viber["content"]["text"] == f"Звернення {case['number']}\nПоказники прийнято"
    # SMS when asked for
    sms = await ok(
        await stack.api.post(
            f"/api/v1/cases/{case['id']}/replies",
            headers=operator,
            json={"text": "Перерахунок зроблено", "channel": "sms"},
        ),
        202,
    )
    [found] = await eventually(lambda: sim_messages(stack, "sms", sms["message_id"]))
    assert found["content"]["text"] == f"{case['number']}: Перерахунок зроблено"
    status = await eventually(lambda: _delivered(stack, sms["message_id"]))
    assert (status["kind"], status["client_id"]) == ("operator", ids[0])
    events = (await stack.call("GET", f"/api/v1/cases/{case['id']}/events"))["items"]
    out = [
        (e["channel"], e["data"]["message_id"])
        for e in events
        if e["kind"] == "message" and e["direction"] == "out"
    ]
    assert out == [("viber", reply["message_id"]), ("sms", sms["message_id"])]
    # A client who opted out of case messages: refused with the reason, nothing queued
    for channel in ("sms", "viber"):
        await consent.record_consent(
            stack.conn,
            SYSTEM,
            client_id=ids[1],
            channel=channel,
            topic="case_status",
            opted_in=False,
            source="cabinet",
        )
    other = await walk_in(stack, operator, client_id=ids[1])
    before = await stack.conn.fetchval(
        "SELECT count(*) FROM realtime_messages WHERE kind = 'operator'"
    )
    refused = await bad(
        await stack.api.post(
            f"/api/v1/cases/{other['id']}/replies", headers=operator, json={"text": "Відповідь"}
        ),
        "",
        409,
    )
    assert refused["type"] == "/problems/send-refused-no-consent"
    assert refused["checks"]["channels"] == {"viber": "no_consent", "sms": "no_consent"}
    assert (
        await stack.conn.fetchval("SELECT count(*) FROM realtime_messages WHERE kind = 'operator'")
        == before
    )
    # An anonymous case cannot be answered by SMS (no client to send to)
    anonymous = await walk_in(stack, operator, phone="+380671234567")
    refused = await bad(
        await stack.api.post(
            f"/api/v1/cases/{anonymous['id']}/replies", headers=operator, json={"text": "Відповідь"}
        ),
        "",
        422,
    )
    assert refused["checks"]["reason"] == "anonymous"
    # Bad input names the field; unknown case 404; roles without cases.manage 403
    url = f"/api/v1/cases/{case['id']}/replies"
    await bad(await stack.api.post(url, headers=operator, json={"text": ""}), "text")
    await bad(
        await stack.api.post(url, headers=operator, json={"text": "x", "channel": "fax"}), "channel"
    )
    await bad(await stack.api.post(url, headers=operator, json={"text": "x" * 1001}), "text")
    await bad(
        await stack.api.post(url, headers=operator, json={"text": "ї" * 300, "channel": "sms"}),
        "text",
    )
    # Too long for an SMS: Viber alone
    long = await ok(await stack.api.post(url, headers=operator, json={"text": "ї" * 300}), 202)
    assert long["channel_chain"] == ["viber"]
    await bad(await stack.api.post(url, headers=operator, json={"text": "x", "extra": 1}), "extra")
    await bad(
        await stack.api.post("/api/v1/cases/999999/replies", headers=operator, json={"text": "x"}),
        "",
        404,
    )
    for role in ("analyst", "marketer"):
        await bad(
            await stack.api.post(url, headers=await login_as(stack.api, role), json={"text": "x"}),
            "",
            403,
        )


async def _delivered(stack: Stack, message_id: str) -> dict[str, Any] | None:
    found = await stack.call("GET", f"/api/v1/messages/{message_id}")
    return found if found["status"] in ("delivered", "read") else None


async def test_client_updates_of_every_kind_reach_the_client_once(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 2)
    operator = await login_as(stack.api, "operator_cc")
    phone = "+380500000001"
    # Rules: the seeded ones (registered, resolved, info needed active), plus an SMS rule
    # for every answer and the seeded deadline rule switched on
    rules = {r["name"]: r for r in await stack.call("GET", "/api/v1/case-notification-rules")}
    assert {n for n, r in rules.items() if r["is_active"]} == {
        "Звернення зареєстровано",
        "Звернення вирішено",
        "Потрібна інформація",
    }
    deadline_rule = rules["Змінено строк звернення"]
    await stack.call(
        "PUT",
        f"/api/v1/case-notification-rules/{deadline_rule['id']}",
        {
            "name": deadline_rule["name"],
            "event": "deadline_changed",
            "template_id": deadline_rule["template_id"],
            "channel_chain": ["sms"],
        },
    )
    answer_rule = await stack.call(
        "POST",
        "/api/v1/case-notification-rules",
        {
            "name": "Відповідь надано (SMS)",
            "event": "answer_given",
            "template_id": rules["Надано відповідь"]["template_id"],
            "channel_chain": ["sms"],
        },
        201,
    )
    # Case registered -> Viber
    case = await walk_in(stack, operator, client_id=ids[0])
    number = case["number"]

    async def viber_with(text: str) -> list[str]:
        return [t for t in await texts_to(stack, "viber", phone) if text in t]

    async def sms_with(text: str) -> list[str]:
        return [t for t in await texts_to(stack, "sms", phone) if text in t]

    [registered] = await eventually(lambda: viber_with("зареєстровано"))
    assert number in registered
    # Status changes: in progress (no active rule) and resolved (a rule for that status)
    await ok(
        await stack.api.post(
            f"/api/v1/cases/{case['id']}/status", headers=operator, json={"status": "in_progress"}
        )
    )
    # More information needed: the case goes On Hold and the question is sent
    asked = await ok(
        await stack.api.post(
            f"/api/v1/cases/{case['id']}/info-request",
            headers=operator,
            json={"question": "Надішліть фото лічильника"},
        )
    )
    assert (asked["case"]["status"], asked["on_hold"], asked["sent_by"]) == (
        "on_hold",
        True,
        "notification",
    )
    [question] = await eventually(lambda: viber_with("фото лічильника"))
    assert number in question and "Потрібна додаткова інформація" in question
    await ok(
        await stack.api.post(
            f"/api/v1/cases/{case['id']}/status", headers=operator, json={"status": "resolved"}
        )
    )
    [resolved] = await eventually(lambda: viber_with("Вирішено"))
    assert f"{number} має статус «Вирішено»" in resolved
    # A deadline moved by the SLA part (crm.cases.sla.change_deadline's event) -> SMS
    await stack.conn.execute(
        "INSERT INTO case_events (case_id, kind, actor_login, body, data) VALUES ($1, 'deadline', "
        "'sla', 'Потрібен виїзд', '{\"target\": \"resolution\", "
        '"old_due_at": "2026-12-04T15:00:00+00:00", '
        '"new_due_at": "2026-12-05T15:00:00+00:00", "reason": "Потрібен виїзд"}\')',
        case["id"],
    )
    [deadline] = await eventually(lambda: sms_with("новий строк"))
    assert deadline == f"Звернення {number}: новий строк розгляду 05.12.2026 17:00."
    # An answer by e-mail -> the SMS of the answer rule (an e-mail case of the same client)
    mail = await inbound_email(
        stack,
        **{"from": "client1@example.com", "message_id": "<n1@mail.example.ua>", "text": "Питання"},
    )
    await ok(
        await stack.api.post(
            f"/api/v1/cases/{mail['case_id']}/replies",
            headers=operator,
            json={"text": "Відповідь у листі"},
        ),
        202,
    )
    [answered] = await eventually(lambda: sms_with("надано відповідь"))
    assert answered == f"На звернення {mail['number']} надано відповідь."
    # Each is a notification case event with its message, and its delivery status is shown
    found = await eventually(lambda: _all_delivered(stack, case["id"], 4))
    assert [n["channel"] for n in found] == ["viber", "viber", "viber", "sms"]
    events = (await stack.call("GET", f"/api/v1/cases/{case['id']}/events"))["items"]
    sent = [e for e in events if e["kind"] == "notification"]
    assert [e["data"]["event"] for e in sent] == [
        "case_registered",
        "info_needed",
        "status_changed",
        "deadline_changed",
    ]
    assert [e["data"]["message_id"] for e in sent] == [n["message_id"] for n in found]
    assert all(e["actor_login"] == "notifications" for e in sent)
    # ... and on the client's timeline, with the delivery status
    timeline = await stack.call("GET", f"/api/v1/clients/{ids[0]}/timeline?limit=100")
    on_timeline = {i["id"]: i["status"] for i in timeline["items"] if i["source"] == "message"}
    for n in found:
        assert on_timeline[n["message_id"]] in ("delivered", "read")
    # A re-run over the same events sends nothing twice
    viber_before, sms_before = await stack.sim_stats("viber"), await stack.sim_stats("sms")
    messages_before = await stack.conn.fetchval("SELECT count(*) FROM realtime_messages")
    await stack.conn.execute(
        "INSERT INTO case_notify_queue (event_id) SELECT id FROM case_events ON CONFLICT DO NOTHING"
    )
    await eventually(lambda: _queue_empty(stack))
    assert await stack.conn.fetchval("SELECT count(*) FROM realtime_messages") == messages_before
    await asyncio.sleep(1.0)
    assert (await stack.sim_stats("viber"))["accepted"] == viber_before["accepted"]
    assert (await stack.sim_stats("sms"))["accepted"] == sms_before["accepted"]
    assert answer_rule["is_active"]


async def _all_delivered(stack: Stack, case_id: int, n: int) -> list[dict[str, Any]] | None:
    found = await notifications(stack, case_id)
    if len(found) == n and all(f["status"] in ("delivered", "read") for f in found):
        return found
    return None


async def _queue_empty(stack: Stack) -> bool:
    return bool(await stack.conn.fetchval("SELECT count(*) FROM case_notify_queue") == 0)


async def test_anonymous_skipped_and_opted_out_recorded(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 2)
    no_phone = await make_clients(stack.conn, 1, phone=False, start=10)
    operator = await login_as(stack.api, "supervisor")
    for channel in ("sms", "viber"):
        await consent.record_consent(
            stack.conn,
            SYSTEM,
            client_id=ids[1],
            channel=channel,
            topic="case_status",
            opted_in=False,
            source="cabinet",
        )
    anonymous = await walk_in(stack, operator, phone="+380671234567")
    opted_out = await walk_in(stack, operator, client_id=ids[1])
    without_phone = await walk_in(stack, operator, client_id=no_phone[0])

    async def skipped(case_id: int) -> list[dict[str, Any]]:
        events = (await stack.call("GET", f"/api/v1/cases/{case_id}/events"))["items"]
        return [e for e in events if e["kind"] == "notification"]

    [anon] = await eventually(lambda: skipped(anonymous["id"]))
    assert anon["data"]["skipped"] == "anonymous" and "message_id" not in anon["data"]
    [none] = await eventually(lambda: skipped(without_phone["id"]))
    assert none["data"]["skipped"] == "no_phone"
    # The opted-out client's notification is made, and the worker refuses it with the reason
    [refused] = await eventually(lambda: skipped(opted_out["id"]))
    status = await eventually(lambda: _status_is(stack, refused["data"]["message_id"], "skipped"))
    assert {e["reason"] for e in status["events"] if e["status"] == "skipped"} == {"no_consent"}
    assert (await stack.sim_stats("sms"))["accepted"] == 0
    assert (await stack.sim_stats("viber"))["accepted"] == 0
    listed = await notifications(stack, opted_out["id"])
    assert [(n["message_id"], n["status"]) for n in listed] == [
        (refused["data"]["message_id"], "skipped")
    ]
    assert [n["skipped"] for n in await notifications(stack, anonymous["id"])] == ["anonymous"]


async def _status_is(stack: Stack, message_id: str, wanted: str) -> dict[str, Any] | None:
    found = await stack.call("GET", f"/api/v1/messages/{message_id}")
    return found if found["status"] == wanted else None


async def test_notification_rules_crud_rbac_and_fields(client, demo_users, app_conn) -> None:
    admin = await login_as(client, "admin")
    url = "/api/v1/case-notification-rules"
    template = await app_conn.fetchval(
        "SELECT id FROM message_templates WHERE name = 'Статус звернення змінено'"
    )
    rule = await ok(
        await client.post(
            url,
            headers=admin,
            json={
                "name": "В роботі",
                "event": "status_changed",
                "to_status": "in_progress",
                "template_id": template,
            },
        ),
        201,
    )
    assert (rule["template_version"], rule["channel_chain"], rule["is_active"]) == (
        1,
        ["viber", "sms"],
        True,
    )
    changed = await ok(
        await client.put(
            f"{url}/{rule['id']}",
            headers=admin,
            json={
                "name": "В роботі (SMS)",
                "event": "status_changed",
                "to_status": "in_progress",
                "template_id": template,
                "channel_chain": ["sms"],
            },
        )
    )
    assert changed["channel_chain"] == ["sms"]
    await ok(await client.delete(f"{url}/{rule['id']}", headers=admin), 204)
    listed = {r["id"]: r for r in await ok(await client.get(url, headers=admin))}
    assert listed[rule["id"]]["is_active"] is False
    # Journalled, field by field
    journal = await ok(
        await client.get(f"/api/v1/audit/case_notification_rule/{rule['id']}", headers=admin)
    )
    assert {e["field"] for e in journal["items"] if e["action"] == "update"} >= {
        "name",
        "channel_chain",
        "is_active",
    }
    # Bad input names the field
    base = {"name": "x", "event": "status_changed", "template_id": template}
    for patch, field in (
        ({"event": "lunch"}, "event"),
        ({"to_status": "nowhere"}, "to_status"),
        ({"event": "answer_given", "to_status": "resolved"}, "to_status"),
        ({"template_id": 999999}, "template_id"),
        ({"template_version": 7}, "template_version"),
        ({"channel_chain": ["email"]}, "channel_chain[0]"),
        ({"channel_chain": ["sms", "sms"]}, "channel_chain"),
        ({"name": ""}, "name"),
    ):
        await bad(await client.post(url, headers=admin, json={**base, **patch}), field)
    await bad(await client.put(f"{url}/999999", headers=admin, json=base), "", 404)
    # Only cases.admin
    for role in ("operator_cc", "supervisor"):
        headers = await login_as(client, role)
        await bad(await client.get(url, headers=headers), "", 403)
        await bad(await client.post(url, headers=headers, json=base), "", 403)


async def test_info_request_on_an_email_case_asks_in_the_thread(stack: Stack) -> None:
    await make_clients(stack.conn, 1, phone=False)
    case = await inbound_email(
        stack,
        **{"from": "client1@example.com", "message_id": "<i1@mail.example.ua>", "text": "Питання"},
    )
    operator = await login_as(stack.api, "operator_cc")
    url = f"/api/v1/cases/{case['case_id']}/info-request"
    # The default transitions have no New -> On Hold: the case goes through In Progress
    asked = await ok(
        await stack.api.post(url, headers=operator, json={"question": "Який номер лічильника?"})
    )
    assert (asked["case"]["status"], asked["on_hold"], asked["sent_by"]) == (
        "on_hold",
        True,
        "email",
    )
    [mail] = await sim_messages(stack, "email", asked["message_id"])
    assert mail["content"]["in_reply_to"] == "<i1@mail.example.ua>"
    assert "Який номер лічильника?" in mail["content"]["text"]
    await bad(await stack.api.post(url, headers=operator, json={"question": ""}), "question")
    await bad(
        await stack.api.post(
            "/api/v1/cases/999999/info-request", headers=operator, json={"question": "x"}
        ),
        "",
        404,
    )
    await bad(
        await stack.api.post(
            url, headers=await login_as(stack.api, "analyst"), json={"question": "x"}
        ),
        "",
        403,
    )
    events = (await stack.call("GET", f"/api/v1/cases/{case['case_id']}/events"))["items"]
    assert [e["kind"] for e in events].count("info_request") == 1
    # No phone: the info_needed rule records the skip; no answer_given for the question mail
    await eventually(lambda: _queue_empty(stack))
    found = await notifications(stack, case["case_id"])
    assert [n["skipped"] for n in found] == ["no_phone", "no_phone"]  # registered, info needed
    # A closed case is not asked anything
    for status in ("in_progress", "resolved", "closed"):
        await ok(
            await stack.api.post(
                f"/api/v1/cases/{case['case_id']}/status", headers=operator, json={"status": status}
            )
        )
    await bad(
        await stack.api.post(url, headers=operator, json={"question": "Ще питання?"}), "", 409
    )


def test_thread_headers_leave_out_ids_unsafe_in_a_header() -> None:
    assert thread_headers("a@b", ["x@y", "bad\r\nBcc: evil@z", "<c@d>", "ok@e"]) == (
        "In-Reply-To: <a@b>\r\nReferences: <x@y>\r\n <ok@e>\r\n"
    )
    assert thread_headers("in\njected", []) == ""
    assert thread_headers(None, ["x" * 901]) == ""


async def test_info_request_puts_a_new_case_on_hold_and_pauses_its_sla(
    client, demo_users, app_conn
) -> None:
    """Issue 20 point 4: New -> On Hold is not a transition of its own; asking the client
    takes the case into work (the question is a first response) and then On Hold."""
    admin = await login_as(client, "admin")
    operator = await login_as(client, "operator_cc")
    always = {
        d: [{"start": "00:00", "end": "24:00"}]
        for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    }
    cal = await ok(
        await client.post(
            "/api/v1/business-calendars", headers=admin, json={"name": "Цілодобово", "week": always}
        ),
        201,
    )
    await ok(
        await client.post(
            "/api/v1/case-sla-policies",
            headers=admin,
            json={
                "name": "Усі",
                "calendar_id": cal["id"],
                "first_response_minutes": 60,
                "resolution_minutes": 600,
            },
        ),
        201,
    )
    case = (
        await ok(
            await client.post(
                "/api/v1/cases", headers=operator, json={"text": "Прошу перевірити показники"}
            ),
            201,
        )
    )["case"]
    assert case["status"] == "new"
    asked = await ok(
        await client.post(
            f"/api/v1/cases/{case['id']}/info-request",
            headers=operator,
            json={"question": "Надішліть фото лічильника"},
        )
    )
    assert (asked["case"]["status"], asked["on_hold"]) == ("on_hold", True)
    row = await app_conn.fetchrow(
        "SELECT sla_paused_at, first_response_at FROM cases WHERE id = $1", case["id"]
    )
    assert row["sla_paused_at"] is not None and row["first_response_at"] is not None
    events = (await ok(await client.get(f"/api/v1/cases/{case['id']}/events", headers=operator)))[
        "items"
    ]
    assert [(e["from_status"], e["to_status"]) for e in events if e["kind"] == "status"] == [
        ("new", "in_progress"),
        ("in_progress", "on_hold"),
    ]
    # A transition table without any way to On Hold leaves the case where it is
    second = (
        await ok(
            await client.post("/api/v1/cases", headers=operator, json={"text": "Ще питання"}), 201
        )
    )["case"]
    await ok(
        await client.put(
            "/api/v1/case-transitions",
            headers=admin,
            json={
                "transitions": [
                    {"from_status": "new", "to_status": "in_progress"},
                    {"from_status": "in_progress", "to_status": "resolved"},
                    {"from_status": "resolved", "to_status": "closed"},
                ]
            },
        )
    )
    asked = await ok(
        await client.post(
            f"/api/v1/cases/{second['id']}/info-request",
            headers=operator,
            json={"question": "Номер лічильника?"},
        )
    )
    assert (asked["case"]["status"], asked["on_hold"]) == ("new", False)
