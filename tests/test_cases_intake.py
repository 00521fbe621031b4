"""Case intake from every channel (SR-01): each adapter opens a case; chat follow-ups and
e-mail replies join the open case; replays add nothing; webhooks and intake endpoints
refuse the unauthenticated; bad input is a 400 naming the field."""

from __future__ import annotations

import asyncio
import datetime as dt
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
import pytest
from conftest import login_as
from test_cases_support import (
    TELEGRAM_SECRET,
    bad,
    configure_webhooks,
    events_of,
    journal,
    make_client,
    ok,
    telegram_update,
    viber_message,
    viber_signature,
)

from crm.cases import intake
from crm.cases.channels import CallRecord
from herald import clock


async def _case(client, headers, case_id: int) -> dict:
    return (await ok(await client.get(f"/api/v1/cases/{case_id}", headers=headers)))["case"]


# -- calls (CTI) ----------------------------------------------------------------------------


async def test_finished_and_missed_calls_become_cases(client, demo_users, app_conn) -> None:
    known = await make_client(app_conn, phone="+380501112233")
    start = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
    # Given a finished call from a known number, with the agent's notes
    answered = await intake.from_call(
        app_conn,
        CallRecord(
            call_id="vd-1001",
            caller="0501112233",
            outcome="answered",
            started_at=start,
            ended_at=start + dt.timedelta(minutes=4),
            agent_login="operator.cc",
            notes="Питання щодо рахунку за лютий",
        ),
    )
    # and a missed call from an unknown number
    missed = await intake.from_call(
        app_conn,
        CallRecord(call_id="vd-1002", caller="+380671234567", outcome="missed", started_at=start),
    )
    assert answered.created and missed.created
    assert answered.number.startswith("ЗВ-") and answered.number != missed.number
    operator = await login_as(client, "operator_cc")
    first = await _case(client, operator, answered.case_id)
    # Then the call is identified by the caller's phone and carries its notes
    assert (first["channel"], first["client_id"], first["identified_by"]) == (
        "call",
        known["client_id"],
        "phone",
    )
    assert first["contact"]["phone"] == "+380501112233"
    assert first["text"] == "Питання щодо рахунку за лютий"
    second = await _case(client, operator, missed.case_id)
    assert (second["subject"], second["anonymous"], second["status"]) == (
        "Пропущений дзвінок",
        True,
        "new",
    )
    message = [
        e for e in await events_of(client, operator, missed.case_id) if e["kind"] == "message"
    ][0]
    assert message["external_id"] == "call:vd-1002" and message["data"]["outcome"] == "missed"
    # A repeated hang-up event of the same call adds nothing
    again = await intake.from_call(
        app_conn,
        CallRecord(call_id="vd-1002", caller="+380671234567", outcome="missed", started_at=start),
    )
    assert (again.case_id, again.replayed, again.created) == (missed.case_id, True, False)
    # and the creation is journalled
    assert [e["action"] for e in await journal(client, f"case/{missed.case_id}")] == ["create"]


# -- Viber ----------------------------------------------------------------------------------


async def test_viber_message_opens_a_case_and_follow_ups_append(
    client, demo_users, app_conn
) -> None:
    await configure_webhooks(client)
    body = viber_message("01234567890A=", "Не працює особистий кабінет", 4912661846655238145)
    # Given a signed message callback from a new chat
    reply = await ok(
        await client.post(
            "/api/v1/case-intake/viber",
            data=body,
            headers={
                "X-Viber-Content-Signature": viber_signature(body),
                "Content-Type": "application/json",
            },
        )
    )
    assert reply["ignored"] is False and reply["case"]["created"] is True
    case_id = reply["case"]["case_id"]
    # When the same chat writes again while the case is open
    follow = viber_message("01234567890A=", "Додаю: помилка 500", 4912661846655238146)
    reply2 = await ok(
        await client.post(
            "/api/v1/case-intake/viber",
            data=follow,
            headers={"X-Viber-Content-Signature": viber_signature(follow)},
        )
    )
    # Then it joins that case instead of opening another
    assert (reply2["case"]["case_id"], reply2["case"]["created"], reply2["case"]["appended"]) == (
        case_id,
        False,
        True,
    )
    # and Viber retrying the same callback adds nothing
    reply3 = await ok(
        await client.post(
            "/api/v1/case-intake/viber",
            data=follow,
            headers={"X-Viber-Content-Signature": viber_signature(follow)},
        )
    )
    assert reply3["case"]["replayed"] is True
    operator = await login_as(client, "operator_cc")
    messages = [e for e in await events_of(client, operator, case_id) if e["kind"] == "message"]
    assert [(m["body"], m["direction"], m["channel"]) for m in messages] == [
        ("Не працює особистий кабінет", "in", "viber"),
        ("Додаю: помилка 500", "in", "viber"),
    ]
    assert await app_conn.fetchval("SELECT count(*) FROM cases") == 1
    # When the sender shares their phone, the anonymous case is linked to the client
    known = await make_client(app_conn, phone="+380931234567")
    shared = viber_message("01234567890A=", "", 4912661846655238147, contact_phone="380931234567")
    await ok(
        await client.post(
            "/api/v1/case-intake/viber",
            data=shared,
            headers={"X-Viber-Content-Signature": viber_signature(shared)},
        )
    )
    case = await _case(client, operator, case_id)
    assert (case["client_id"], case["identified_by"]) == (known["client_id"], "phone")
    # Non-message events (subscribed, delivered, the webhook check) are acknowledged
    for event in (
        {"event": "webhook", "timestamp": 1, "message_token": 1},
        {"event": "subscribed", "user": {"id": "x"}, "timestamp": 2},
    ):
        raw = msgspec.json.encode(event)
        assert (
            await ok(
                await client.post(
                    "/api/v1/case-intake/viber",
                    data=raw,
                    headers={"X-Viber-Content-Signature": viber_signature(raw)},
                )
            )
        )["ignored"] is True


async def test_viber_webhook_refuses_bad_signatures_and_bad_bodies(client, demo_users) -> None:
    body = viber_message("u1", "Привіт", 1)
    # Without a configured token nothing is accepted
    await bad(
        await client.post(
            "/api/v1/case-intake/viber",
            data=body,
            headers={"X-Viber-Content-Signature": viber_signature(body)},
        ),
        "",
        401,
    )
    await configure_webhooks(client)
    # A wrong or missing signature is a 401
    await bad(
        await client.post(
            "/api/v1/case-intake/viber",
            data=body,
            headers={
                "X-Viber-Content-Signature": viber_signature(body, "another-token-0123456789")
            },
        ),
        "",
        401,
    )
    await bad(await client.post("/api/v1/case-intake/viber", data=body), "", 401)
    # A signed message callback without its sender is a 400 naming it
    raw = msgspec.json.encode(
        {"event": "message", "message_token": 5, "message": {"type": "text", "text": "x"}}
    )
    await bad(
        await client.post(
            "/api/v1/case-intake/viber",
            data=raw,
            headers={"X-Viber-Content-Signature": viber_signature(raw)},
        ),
        "sender",
    )
    raw = b'{"event": "message", "sender": {"id": 5}}'
    await bad(
        await client.post(
            "/api/v1/case-intake/viber",
            data=raw,
            headers={"X-Viber-Content-Signature": viber_signature(raw)},
        ),
        "sender.id",
    )


# -- Telegram -------------------------------------------------------------------------------


async def test_telegram_update_opens_a_case_and_follow_ups_append(
    client, demo_users, app_conn
) -> None:
    await configure_webhooks(client)
    secret = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}
    first = await ok(
        await client.post(
            "/api/v1/case-intake/telegram",
            headers=secret,
            json=telegram_update(1001, 555001, 1, "Коли буде газ?"),
        )
    )
    case_id = first["case"]["case_id"]
    assert first["case"]["created"]
    second = await ok(
        await client.post(
            "/api/v1/case-intake/telegram",
            headers=secret,
            json=telegram_update(1002, 555001, 2, "Вулиця Садова 5"),
        )
    )
    assert (second["case"]["case_id"], second["case"]["appended"]) == (case_id, True)
    # Another chat is another case
    other = await ok(
        await client.post(
            "/api/v1/case-intake/telegram",
            headers=secret,
            json=telegram_update(1003, 555002, 1, "Інше питання"),
        )
    )
    assert other["case"]["case_id"] != case_id
    operator = await login_as(client, "operator_cc")
    case = await _case(client, operator, case_id)
    assert (case["channel"], case["contact"]["name"], case["text"]) == (
        "telegram",
        "Ігор Коваль",
        "Коли буде газ?",
    )
    # A closed case does not take follow-ups: the chat opens a new case
    await app_conn.execute("UPDATE cases SET status = 'closed' WHERE id = $1", case_id)
    third = await ok(
        await client.post(
            "/api/v1/case-intake/telegram",
            headers=secret,
            json=telegram_update(1004, 555001, 3, "Знову немає газу"),
        )
    )
    assert third["case"]["created"] and third["case"]["case_id"] not in (
        case_id,
        other["case"]["case_id"],
    )
    # An update that is not a new message is acknowledged and ignored
    ignored = await ok(
        await client.post(
            "/api/v1/case-intake/telegram",
            headers=secret,
            json={"update_id": 1005, "edited_message": {}},
        )
    )
    assert ignored == {"ignored": True, "case": None}
    # A wrong secret is a 401; a body that is not an Update is a 400 naming the field
    await bad(
        await client.post(
            "/api/v1/case-intake/telegram",
            headers={"X-Telegram-Bot-Api-Secret-Token": "wrong-secret-xxxxxxx"},
            json=telegram_update(1, 1, 1, "x"),
        ),
        "",
        401,
    )
    await bad(
        await client.post(
            "/api/v1/case-intake/telegram", headers=secret, json={"edited_message": {}}
        ),
        "update_id",
    )
    await bad(
        await client.post("/api/v1/case-intake/telegram", headers=secret, data=b"not json"), "body"
    )


async def test_simultaneous_messages_of_one_new_chat_open_one_case(
    client, demo_users, app_conn
) -> None:
    await configure_webhooks(client)
    secret = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}
    replies = await asyncio.gather(
        *(
            client.post(
                "/api/v1/case-intake/telegram",
                headers=secret,
                json=telegram_update(2000 + i, 777001, i, f"Повідомлення {i}"),
            )
            for i in range(1, 5)
        )
    )
    bodies = [await ok(r) for r in replies]
    assert len({b["case"]["case_id"] for b in bodies}) == 1
    assert sorted(b["case"]["created"] for b in bodies) == [False, False, False, True]
    assert await app_conn.fetchval("SELECT count(*) FROM case_events WHERE kind = 'message'") == 4


# -- web forms, mobile app ------------------------------------------------------------------


async def test_site_and_cabinet_forms_become_cases(client, demo_users, app_conn) -> None:
    known = await make_client(app_conn, email="ivan@example.ua")
    integration = await login_as(client, "integration")
    site = await ok(
        await client.post(
            "/api/v1/case-intake/forms",
            headers=integration,
            json={
                "source": "site",
                "name": "Іван",
                "email": "Ivan@Example.ua",
                "topic": "Зворотний зв'язок",
                "text": "Прошу перевірити нарахування",
                "submission_id": "site-77",
            },
        )
    )
    cabinet = await ok(
        await client.post(
            "/api/v1/case-intake/forms",
            headers=integration,
            json={"source": "cabinet", "client_id": known["client_id"], "text": "Зміна тарифу"},
        )
    )
    operator = await login_as(client, "operator_cc")
    first = await _case(client, operator, site["case_id"])
    assert (first["channel"], first["client_id"], first["identified_by"], first["subject"]) == (
        "site",
        known["client_id"],
        "email",
        "Зворотний зв'язок",
    )
    second = await _case(client, operator, cabinet["case_id"])
    assert (second["channel"], second["identified_by"]) == ("cabinet", "client_id")
    # The same submission posted again is the same case
    again = await ok(
        await client.post(
            "/api/v1/case-intake/forms",
            headers=integration,
            json={
                "source": "site",
                "email": "ivan@example.ua",
                "text": "Прошу перевірити нарахування",
                "submission_id": "site-77",
            },
        )
    )
    assert (again["case_id"], again["replayed"]) == (site["case_id"], True)
    # Bad input names the field
    url = "/api/v1/case-intake/forms"
    await bad(
        await client.post(
            url, headers=integration, json={"source": "fax", "text": "x", "phone": "0501112233"}
        ),
        "source",
    )
    await bad(
        await client.post(
            url, headers=integration, json={"source": "site", "text": "x", "phone": "12"}
        ),
        "phone",
    )
    await bad(
        await client.post(
            url, headers=integration, json={"source": "site", "text": "x", "email": "nope"}
        ),
        "email",
    )
    await bad(
        await client.post(url, headers=integration, json={"source": "site", "text": "x"}), "phone"
    )
    await bad(
        await client.post(
            url,
            headers=integration,
            json={"source": "site", "text": "x", "phone": "0501112233", "or_number": "12ab"},
        ),
        "or_number",
    )
    await bad(
        await client.post(
            url, headers=integration, json={"source": "site", "text": "", "phone": "0501112233"}
        ),
        "text",
    )
    await bad(
        await client.post(
            url,
            headers=integration,
            json={"source": "site", "text": "x", "phone": "0501112233", "extra": 1},
        ),
        "extra",
    )


async def test_mobile_app_appeal_and_reply_to_an_open_case(client, demo_users, app_conn) -> None:
    known = await make_client(app_conn)
    stranger = await make_client(app_conn)
    integration = await login_as(client, "integration")
    first = await ok(
        await client.post(
            "/api/v1/case-intake/app",
            headers=integration,
            json={
                "client_id": known["client_id"],
                "topic": "Показники",
                "text": "Не приймає показники",
            },
        )
    )
    reply = await ok(
        await client.post(
            "/api/v1/case-intake/app",
            headers=integration,
            json={
                "client_id": known["client_id"],
                "text": "Фото лічильника додаю",
                "case_number": first["number"],
            },
        )
    )
    assert (reply["case_id"], reply["appended"]) == (first["case_id"], True)
    # Another client cannot write into it by quoting its number: a case of their own opens
    other = await ok(
        await client.post(
            "/api/v1/case-intake/app",
            headers=integration,
            json={
                "client_id": stranger["client_id"],
                "text": "Чуже",
                "case_number": first["number"],
            },
        )
    )
    assert other["created"] and other["case_id"] != first["case_id"]
    await bad(
        await client.post("/api/v1/case-intake/app", headers=integration, json={"text": "x"}),
        "client_id",
    )
    await bad(
        await client.post(
            "/api/v1/case-intake/app",
            headers=integration,
            json={"client_id": 1, "text": "x", "case_number": "42"},
        ),
        "case_number",
    )


# -- e-mail ---------------------------------------------------------------------------------


async def test_email_opens_a_case_and_replies_thread_into_it(client, demo_users, app_conn) -> None:
    known = await make_client(app_conn, email="olena@example.ua")
    integration = await login_as(client, "integration")
    url = "/api/v1/case-intake/email"
    first = await ok(
        await client.post(
            url,
            headers=integration,
            json={
                "from": "Олена Петрук <olena@example.ua>",
                "to": ["info@gas.ua"],
                "subject": "Не зараховано оплату",
                "message_id": "<m1@mail.example.ua>",
                "html": "<p>Оплатила 5 березня</p><p>Квитанцію додаю</p>",
            },
        )
    )
    assert first["created"]
    # A reply by In-Reply-To, one by References only, and one quoting the number in the subject
    by_reply = await ok(
        await client.post(
            url,
            headers=integration,
            json={
                "from": "olena@example.ua",
                "subject": "Re: Не зараховано оплату",
                "message_id": "<m2@mail.example.ua>",
                "in_reply_to": "<m1@mail.example.ua>",
                "text": "Ось номер квитанції",
            },
        )
    )
    by_refs = await ok(
        await client.post(
            url,
            headers=integration,
            json={
                "from": "olena@example.ua",
                "subject": "Ще одне",
                "message_id": "<m3@mail.example.ua>",
                "references": ["<m1@mail.example.ua> <m2@mail.example.ua>"],
                "text": "Дякую",
            },
        )
    )
    by_number = await ok(
        await client.post(
            url,
            headers=integration,
            json={
                "from": "olena@example.ua",
                "subject": f"Щодо {first['number']}",
                "message_id": "<m4@mail.example.ua>",
                "text": "Коли буде відповідь?",
            },
        )
    )
    assert {r["case_id"] for r in (by_reply, by_refs, by_number)} == {first["case_id"]}
    assert all(r["appended"] for r in (by_reply, by_refs, by_number))
    # A stranger quoting the number gets a case of their own
    stranger = await ok(
        await client.post(
            url,
            headers=integration,
            json={
                "from": "someone@else.ua",
                "subject": f"Re: {first['number']}",
                "message_id": "<x1@else.ua>",
                "text": "Привіт",
            },
        )
    )
    assert stranger["created"]
    operator = await login_as(client, "operator_cc")
    case = await _case(client, operator, first["case_id"])
    assert (case["channel"], case["client_id"], case["contact"]["email"], case["text"]) == (
        "email",
        known["client_id"],
        "olena@example.ua",
        "Оплатила 5 березня\nКвитанцію додаю",
    )
    messages = [
        e["external_id"]
        for e in await events_of(client, operator, first["case_id"])
        if e["kind"] == "message"
    ]
    assert messages == [
        "email:m1@mail.example.ua",
        "email:m2@mail.example.ua",
        "email:m3@mail.example.ua",
        "email:m4@mail.example.ua",
    ]
    # Bad input names the field
    await bad(
        await client.post(
            url,
            headers=integration,
            json={"from": "no address", "message_id": "<z@z>", "text": "x"},
        ),
        "from",
    )
    await bad(
        await client.post(url, headers=integration, json={"from": "a@b.ua", "message_id": "<z@z>"}),
        "text",
    )
    await bad(
        await client.post(url, headers=integration, json={"from": "a@b.ua", "text": "x"}),
        "message_id",
    )


# -- walk-in, and who may post what ---------------------------------------------------------


async def test_walk_in_registration_by_a_service_centre_operator(
    client, demo_users, app_conn
) -> None:
    known = await make_client(app_conn)
    desk = await login_as(client, "operator_cos")
    category = await app_conn.fetchval(
        "SELECT id FROM case_categories WHERE code = 'account.owner_change'"
    )
    detail = await ok(
        await client.post(
            "/api/v1/cases",
            headers=desk,
            json={
                "or_number": known["or_number"],
                "subject": "Зміна власника",
                "text": "Клієнт приніс договір купівлі-продажу",
                "category_id": category,
                "case_type": "informational",
                "priority": "normal",
            },
        ),
        201,
    )
    case = detail["case"]
    assert (case["channel"], case["client_id"], case["account_id"], case["identified_by"]) == (
        "walk_in",
        known["client_id"],
        known["account_id"],
        "or_number",
    )
    assert (case["category_id"], case["created_by_login"]) == (category, "operator.cos")
    events = await events_of(client, desk, case["id"])
    assert events[0]["kind"] == "created" and events[0]["actor_login"] == "operator.cos"
    # The operator's own classification is recorded against what the rules proposed
    correction = [e for e in events if e["kind"] == "classification"][0]
    assert correction["data"]["chosen"]["category_id"] == category
    await bad(
        await client.post("/api/v1/cases", headers=desk, json={"text": "x", "category_id": 999999}),
        "category_id",
    )
    await bad(
        await client.post("/api/v1/cases", headers=desk, json={"text": "x", "channel": "email"}),
        "channel",
    )
    await bad(
        await client.post("/api/v1/cases", headers=desk, json={"text": "x", "priority": "asap"}),
        "priority",
    )


async def test_intake_refuses_the_unauthenticated_and_the_unpermitted(client, demo_users) -> None:
    form = {"source": "site", "email": "a@b.ua", "text": "x"}
    for url, body in (
        ("/api/v1/case-intake/forms", form),
        ("/api/v1/case-intake/app", {"client_id": 1, "text": "x"}),
        ("/api/v1/case-intake/email", {"from": "a@b.ua", "message_id": "<a@b>", "text": "x"}),
        ("/api/v1/cases", {"text": "x"}),
    ):
        await bad(await client.post(url, json=body), "", 401)
    await bad(await client.get("/api/v1/cases"), "", 401)
    # Operators do not post channel traffic; the integration cannot register or read cases
    operator = await login_as(client, "operator_cc")
    await bad(await client.post("/api/v1/case-intake/forms", headers=operator, json=form), "", 403)
    integration = await login_as(client, "integration")
    await bad(await client.post("/api/v1/cases", headers=integration, json={"text": "x"}), "", 403)
    await bad(await client.get("/api/v1/cases", headers=integration), "", 403)
    marketer = await login_as(client, "marketer")
    await bad(await client.get("/api/v1/cases", headers=marketer), "", 403)


async def test_case_numbers_are_unique_and_immutable_in_the_database(
    app_conn: asyncpg.Connection, admin_conn
) -> None:
    results = [
        await intake.from_call(
            app_conn,
            CallRecord(
                call_id=f"c{i}",
                caller="0441234567",
                outcome="missed",
                started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            ),
        )
        for i in range(3)
    ]
    numbers = [r.number for r in results]
    assert len(set(numbers)) == 3
    year = clock.now().astimezone(ZoneInfo("Europe/Kyiv")).year
    assert all(n.startswith(f"ЗВ-{year}-") and len(n.split("-")[2]) >= 7 for n in numbers)
    # A number is never given twice, even by a loader that supplies its own
    with pytest.raises(asyncpg.UniqueViolationError):
        await admin_conn.execute(
            "INSERT INTO cases (number, channel, body, text_hash, created_by_login) "
            "VALUES ($1, 'site', 'x', '\\x00', 'loader')",
            numbers[0],
        )
    # and no number changes afterwards, not even by the owner
    with pytest.raises(asyncpg.RestrictViolationError, match="immutable"):
        await admin_conn.execute(
            "UPDATE cases SET number = 'ЗВ-2020-0000001' WHERE id = $1", results[1].case_id
        )
