"""Identification, immutability of a case's metadata, previous cases, repeat and duplicate
flags, merging and linking an anonymous case (SR-02, SR-03, SR-05, SR-06)."""

from __future__ import annotations

import asyncpg
import pytest
from conftest import login_as
from test_cases_support import bad, events_of, journal, make_client, ok

from crm.cases import intake
from crm.cases.channels import Inbound
from crm.cases.identify import identify
from crm.cases.text import similarity, text_hash
from herald.audit import Actor
from herald.phones import normalise_phone

FORMS = Actor(login="forms")


async def old_case(
    admin_conn: asyncpg.Connection,
    client_id: int,
    channel: str,
    text: str,
    category_id: int | None,
    *,
    days: int = 0,
    minutes: int = 0,
) -> int:
    """A case created in the past (a loader may set created_at; nobody may change it)."""
    return await admin_conn.fetchval(
        """
        INSERT INTO cases (channel, client_id, identified_by, body, text_hash, category_id,
                           created_by_login, created_at)
        VALUES ($1, $2, 'client_id', $3, $4, $5, 'loader',
                herald_now() - make_interval(days => $6, mins => $7))
        RETURNING id
        """,
        channel,
        client_id,
        text,
        text_hash(None, text),
        category_id,
        days,
        minutes,
    )


async def _form(client, headers, **fields):
    return await ok(
        await client.post(
            "/api/v1/case-intake/forms", headers=headers, json={"source": "site", **fields}
        )
    )


async def test_identification_by_each_key_and_anonymous(app_conn: asyncpg.Connection) -> None:
    a = await make_client(app_conn, phone="+380501110001", email="a@example.ua")
    b = await make_client(app_conn, phone="+380501110002")
    # Two clients share a phone (a family): ambiguous
    c = await make_client(app_conn, phone="+380501110003")
    d = await make_client(app_conn, phone="+380501110003", email="d@example.ua")
    found = await identify(app_conn, client_id=b["client_id"])
    assert (found.client_id, found.identified_by) == (b["client_id"], "client_id")
    found = await identify(app_conn, or_number=a["or_number"])
    assert (found.client_id, found.account_id, found.identified_by) == (
        a["client_id"],
        a["account_id"],
        "or_number",
    )
    found = await identify(app_conn, phone=normalise_phone("050 111 00 02"))
    assert (found.client_id, found.identified_by) == (b["client_id"], "phone")
    found = await identify(app_conn, email="A@Example.UA")
    assert (found.client_id, found.identified_by) == (a["client_id"], "email")
    # Several candidates: anonymous, the candidates listed
    found = await identify(app_conn, phone="+380501110003")
    assert (found.client_id, found.candidates) == (None, (c["client_id"], d["client_id"]))
    # ... unless the e-mail settles it
    found = await identify(app_conn, phone="+380501110003", email="d@example.ua")
    assert (found.client_id, found.identified_by) == (d["client_id"], "email")
    # Phone of one client and e-mail of another: ambiguous
    found = await identify(app_conn, phone="+380501110002", email="a@example.ua")
    assert (found.client_id, found.candidates) == (None, (a["client_id"], b["client_id"]))
    # Nothing known: anonymous; an unknown Client_ID or OR falls through to the contact
    assert await identify(app_conn, phone="+380509999999") == await identify(app_conn)
    found = await identify(app_conn, client_id=10**9, or_number="0000000000", phone="+380501110001")
    assert (found.client_id, found.identified_by) == (a["client_id"], "phone")
    # A merged-away (inactive) contact identifies no one
    await app_conn.execute("UPDATE contacts SET is_active = false WHERE phone = '+380501110002'")
    assert (await identify(app_conn, phone="+380501110002")).client_id is None


async def test_ambiguous_contact_lists_candidates_and_the_operator_links_once(
    client, demo_users, app_conn
) -> None:
    c = await make_client(app_conn, last_name="Мельник", phone="+380661234567")
    d = await make_client(app_conn, last_name="Мельничук", phone="+380661234567")
    integration = await login_as(client, "integration")
    created = await _form(client, integration, phone="066 123 45 67", text="Хто я?")
    operator = await login_as(client, "operator_cc")
    detail = await ok(await client.get(f"/api/v1/cases/{created['case_id']}", headers=operator))
    assert detail["case"]["anonymous"] is True
    assert [x["last_name"] for x in detail["candidates"]] == ["Мельник", "Мельничук"]
    # The operator links it to the client they identified
    url = f"/api/v1/cases/{created['case_id']}/client"
    await bad(await client.post(url, headers=operator, json={"client_id": 10**9}), "client_id")
    await bad(
        await client.post(
            url, headers=operator, json={"client_id": c["client_id"], "account_id": d["account_id"]}
        ),
        "account_id",
    )
    linked = await ok(
        await client.post(
            url, headers=operator, json={"client_id": c["client_id"], "account_id": c["account_id"]}
        )
    )
    assert (linked["client_id"], linked["identified_by"], linked["candidate_client_ids"]) == (
        c["client_id"],
        "operator",
        [],
    )
    # Once linked, the client never changes: the API says so, the database refuses it
    await bad(await client.post(url, headers=operator, json={"client_id": d["client_id"]}), "", 409)
    with pytest.raises(asyncpg.RestrictViolationError, match="client is immutable"):
        await app_conn.execute(
            "UPDATE cases SET client_id = $1 WHERE id = $2", d["client_id"], created["case_id"]
        )
    kinds = [e["kind"] for e in await events_of(client, operator, created["case_id"])]
    assert kinds == ["created", "message", "client_link"]
    changes = [
        (e["field"], e["new_value"]) for e in await journal(client, f"case/{created['case_id']}")
    ]
    assert ("client_id", c["client_id"]) in changes


async def test_metadata_is_immutable_in_the_database_even_for_the_app_role(
    app_conn: asyncpg.Connection, admin_conn: asyncpg.Connection
) -> None:
    known = await make_client(app_conn)
    case = await intake.ingest(
        app_conn, FORMS, Inbound(channel="site", text="Текст", client_id=known["client_id"])
    )
    other = await make_client(app_conn)
    for conn in (app_conn, admin_conn):
        for assignment in (
            "created_at = '2020-01-01T00:00:00Z'",
            "channel = 'email'",
            f"client_id = {int(other['client_id'])}",
            "body = 'інший текст'",
            "contact_phone = '+380500000000'",
            "number = 'ЗВ-2020-0000001'",
        ):
            with pytest.raises(asyncpg.RestrictViolationError, match="immutable"):
                await conn.execute(f"UPDATE cases SET {assignment} WHERE id = $1", case.case_id)
    # An anonymous case's client may be set once (the link action), never unset
    anon = await intake.ingest(
        app_conn, FORMS, Inbound(channel="site", text="Анонім", email="nobody@example.ua")
    )
    await app_conn.execute(
        "UPDATE cases SET client_id = $1, identified_by = 'operator' WHERE id = $2",
        known["client_id"],
        anon.case_id,
    )
    with pytest.raises(asyncpg.RestrictViolationError, match="client is immutable"):
        await app_conn.execute(
            "UPDATE cases SET client_id = NULL, identified_by = NULL WHERE id = $1", anon.case_id
        )
    # Working fields do change; cases are never deleted by the application
    await app_conn.execute("UPDATE cases SET priority = 'high' WHERE id = $1", case.case_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute("DELETE FROM cases WHERE id = $1", case.case_id)
    # The events are append-only, for the owner too
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute("UPDATE case_events SET body = 'x' WHERE case_id = $1", case.case_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await admin_conn.execute("DELETE FROM case_events WHERE case_id = $1", case.case_id)


async def test_previous_cases_and_the_repeat_flag(client, demo_users, app_conn, admin_conn) -> None:
    known = await make_client(app_conn, phone="+380671112233")
    integration = await login_as(client, "integration")
    admin = await login_as(client, "admin")
    # Given a debt question, then an unrelated one
    first = await _form(client, integration, phone="0671112233", text="Маю борг, як розстрочити?")
    other = await _form(client, integration, phone="0671112233", text="Графік роботи ЦОС")
    # When the client asks about the debt again within the window
    again = await _form(client, integration, phone="0671112233", text="Знову про заборгованість")
    operator = await login_as(client, "operator_cc")
    detail = await ok(await client.get(f"/api/v1/cases/{again['case_id']}", headers=operator))
    # Then it is flagged as a repeat of the first, and the previous cases come with it
    assert (detail["case"]["is_repeat"], detail["case"]["repeat_of_id"]) == (True, first["case_id"])
    assert detail["case"]["client_id"] == known["client_id"]
    assert [p["id"] for p in detail["previous_cases"]] == [other["case_id"], first["case_id"]]
    not_repeat = await ok(await client.get(f"/api/v1/cases/{other['case_id']}", headers=operator))
    assert not_repeat["case"]["is_repeat"] is False
    # The window is the admin's: a debt case 3 days old is a repeat within 5 days, not 1
    late_a = await make_client(app_conn)
    late_b = await make_client(app_conn)
    debt = await app_conn.fetchval("SELECT id FROM case_categories WHERE code = 'billing.debt'")
    old_a = await old_case(admin_conn, late_a["client_id"], "site", "Борг", debt, days=3)
    old_b = await old_case(admin_conn, late_b["client_id"], "site", "Борг", debt, days=3)
    await ok(
        await client.put(
            "/api/v1/case-settings",
            headers=admin,
            json={"repeat_window_days": 1, "duplicate_window_minutes": 10},
        )
    )
    not_late = await _form(client, integration, client_id=late_a["client_id"], text="Знову борг")
    await ok(
        await client.put(
            "/api/v1/case-settings",
            headers=admin,
            json={"repeat_window_days": 5, "duplicate_window_minutes": 10},
        )
    )
    late = await _form(client, integration, client_id=late_b["client_id"], text="Знову борг")
    flags = {
        r["id"]: r["repeat_of_id"]
        for r in await app_conn.fetch(
            "SELECT id, repeat_of_id FROM cases WHERE id = ANY($1::bigint[])",
            [not_late["case_id"], late["case_id"]],
        )
    }
    assert flags == {not_late["case_id"]: None, late["case_id"]: old_b}
    assert old_a != old_b
    # the queue can show only repeats
    page = await ok(await client.get("/api/v1/cases?is_repeat=true", headers=operator))
    assert {i["id"] for i in page["items"]} == {again["case_id"], late["case_id"]}
    await bad(
        await client.put(
            "/api/v1/case-settings",
            headers=admin,
            json={"repeat_window_days": 0, "duplicate_window_minutes": 10},
        ),
        "repeat_window_days",
    )
    await bad(
        await client.put(
            "/api/v1/case-settings",
            headers=operator,
            json={"repeat_window_days": 5, "duplicate_window_minutes": 10},
        ),
        "",
        403,
    )


async def test_duplicates_are_flagged_and_merged(client, demo_users, app_conn) -> None:
    known = await make_client(app_conn, email="dup@example.ua")
    other = await make_client(app_conn, email="other@example.ua")
    integration = await login_as(client, "integration")
    original = await _form(
        client, integration, email="dup@example.ua", text="Не прийшов рахунок за березень"
    )
    # The same text again (other case and punctuation), same client and channel, in minutes
    dup = await _form(
        client, integration, email="dup@example.ua", text="  не прийшов РАХУНОК за березень!! "
    )
    # Another channel is a duplicate too (issue 20 point 5); another client is not
    other_channel = await ok(
        await client.post(
            "/api/v1/case-intake/forms",
            headers=integration,
            json={
                "source": "cabinet",
                "email": "dup@example.ua",
                "text": "Не прийшов рахунок за березень",
            },
        )
    )
    other_client = await _form(
        client, integration, email="other@example.ua", text="Не прийшов рахунок за березень"
    )
    operator = await login_as(client, "operator_cc")
    flags = {
        r["id"]: r["duplicate_of_id"]
        for r in await app_conn.fetch("SELECT id, duplicate_of_id FROM cases")
    }
    assert flags == {
        original["case_id"]: None,
        dup["case_id"]: original["case_id"],
        other_channel["case_id"]: original["case_id"],
        other_client["case_id"]: None,
    }
    detail = await ok(await client.get(f"/api/v1/cases/{original['case_id']}", headers=operator))
    assert [d["id"] for d in detail["duplicates"]] == [dup["case_id"], other_channel["case_id"]]
    # Merge the duplicate into its original
    merged = await ok(
        await client.post(
            f"/api/v1/cases/{dup['case_id']}/merge",
            headers=operator,
            json={"into": original["case_id"]},
        )
    )
    assert merged["id"] == original["case_id"]
    source = await ok(await client.get(f"/api/v1/cases/{dup['case_id']}", headers=operator))
    assert (source["case"]["status"], source["case"]["merged_into_id"]) == (
        "closed",
        original["case_id"],
    )
    target = await ok(await client.get(f"/api/v1/cases/{original['case_id']}", headers=operator))
    assert [m["id"] for m in target["merged_cases"]] == [dup["case_id"]]
    src_events = await events_of(client, operator, dup["case_id"])
    assert [(e["kind"], e["to_status"]) for e in src_events][-2:] == [
        ("merge", None),
        ("status", "closed"),
    ]
    assert (await events_of(client, operator, original["case_id"]))[-1]["kind"] == "merge"
    assert ("merged_into_id", original["case_id"]) in [
        (e["field"], e["new_value"]) for e in await journal(client, f"case/{dup['case_id']}")
    ]
    # Refused: merging again, into itself, into another client's case, into nothing
    url = f"/api/v1/cases/{dup['case_id']}/merge"
    await bad(await client.post(url, headers=operator, json={"into": original["case_id"]}), "", 409)
    url = f"/api/v1/cases/{other_channel['case_id']}/merge"
    await bad(
        await client.post(url, headers=operator, json={"into": other_channel["case_id"]}), "into"
    )
    await bad(
        await client.post(url, headers=operator, json={"into": other_client["case_id"]}), "", 409
    )
    await bad(await client.post(url, headers=operator, json={"into": 10**9}), "into")
    await bad(await client.post(url, headers=operator, json={"into": "x"}), "into")
    await bad(
        await client.post(
            "/api/v1/cases/999999/merge", headers=operator, json={"into": original["case_id"]}
        ),
        "",
        404,
    )
    analyst = await login_as(client, "analyst")
    await bad(await client.post(url, headers=analyst, json={"into": original["case_id"]}), "", 403)
    assert other["client_id"] != known["client_id"]


async def test_the_duplicate_window_is_the_admins(
    app_conn: asyncpg.Connection, admin_conn: asyncpg.Connection
) -> None:
    a = await make_client(app_conn)
    b = await make_client(app_conn)
    # Given the same text posted 20 minutes ago by two clients
    old_a = await old_case(admin_conn, a["client_id"], "app", "Однаковий текст", None, minutes=20)
    old_b = await old_case(admin_conn, b["client_id"], "app", "Однаковий текст", None, minutes=20)
    # With a 10-minute window it is no duplicate; with 30 it is
    await app_conn.execute("UPDATE case_settings SET duplicate_window_minutes = 10")
    fresh_a = await intake.ingest(
        app_conn, FORMS, Inbound(channel="app", text="Однаковий текст", client_id=a["client_id"])
    )
    await app_conn.execute("UPDATE case_settings SET duplicate_window_minutes = 30")
    fresh_b = await intake.ingest(
        app_conn, FORMS, Inbound(channel="app", text="Однаковий текст", client_id=b["client_id"])
    )
    flags = {
        r["id"]: r["duplicate_of_id"]
        for r in await app_conn.fetch("SELECT id, duplicate_of_id FROM cases")
    }
    assert flags == {old_a: None, old_b: None, fresh_a.case_id: None, fresh_b.case_id: old_b}


async def test_duplicates_across_channels_say_how_they_matched(
    client, demo_users, app_conn, admin_conn
) -> None:
    """Issue 20 point 5 (SR-06): the client writes by e-mail, then comes to the walk-in
    desk about the same thing; the operator types it in their own words."""
    known = await make_client(app_conn, email="olena@example.ua")
    integration = await login_as(client, "integration")
    operator = await login_as(client, "operator_cos")
    mail = await ok(
        await client.post(
            "/api/v1/case-intake/email",
            headers=integration,
            json={
                "from": "Олена <olena@example.ua>",
                "message_id": "<d1@mail.example.ua>",
                "subject": "Рахунок",
                "text": "Добрий день! Не прийшов рахунок за березень. Прошу перевірити.",
            },
        )
    )
    walk_in = (
        await ok(
            await client.post(
                "/api/v1/cases",
                headers=operator,
                json={
                    "text": "Клієнтка каже, що не прийшов рахунок за березень",
                    "client_id": known["client_id"],
                },
            ),
            201,
        )
    )["case"]
    assert walk_in["duplicate_of_id"] == mail["case_id"]
    [flag] = [e for e in await events_of(client, operator, walk_in["id"]) if e["kind"] == "flag"]
    match = flag["data"]["duplicate_match"]
    assert (match["how"], match["channel"], match["cross_channel"]) == (
        "similar_text",
        "email",
        True,
    )
    assert match["similarity"] >= 0.6 and match["topic"] in ("same_category", "unknown")
    # The same client about another thing at the desk: no duplicate
    other = (
        await ok(
            await client.post(
                "/api/v1/cases",
                headers=operator,
                json={
                    "text": "Відчувається запах газу біля лічильника",
                    "client_id": known["client_id"],
                },
            ),
            201,
        )
    )["case"]
    assert other["duplicate_of_id"] is None
    # The same words in another category (the operator chose it): another topic, no duplicate
    debt = await app_conn.fetchval("SELECT id FROM case_categories WHERE code = 'billing.debt'")
    outage = await app_conn.fetchval("SELECT id FROM case_categories WHERE code = 'supply.outage'")
    await admin_conn.execute(
        "UPDATE cases SET category_id = $2 WHERE id = ANY($1::bigint[])",
        [mail["case_id"], walk_in["id"]],
        debt,
    )
    elsewhere = (
        await ok(
            await client.post(
                "/api/v1/cases",
                headers=operator,
                json={
                    "text": "Не прийшов рахунок за березень, прошу перевірити",
                    "category_id": outage,
                    "client_id": known["client_id"],
                },
            ),
            201,
        )
    )["case"]
    assert elsewhere["duplicate_of_id"] is None
    # Outside the window (the admin's duplicate window, 10 minutes by default): no duplicate
    late = await make_client(app_conn)
    await old_case(
        admin_conn,
        late["client_id"],
        "email",
        "Не прийшов рахунок за квітень, перевірте будь ласка",
        None,
        minutes=30,
    )
    again = await intake.ingest(
        app_conn,
        FORMS,
        Inbound(
            channel="walk_in", text="Рахунок за квітень не прийшов", client_id=late["client_id"]
        ),
    )
    assert (
        await app_conn.fetchval("SELECT duplicate_of_id FROM cases WHERE id = $1", again.case_id)
        is None
    )
    # The window and the similarity threshold are the admin's
    admin = await login_as(client, "admin")
    settings = await ok(
        await client.put(
            "/api/v1/case-settings",
            headers=admin,
            json={
                "repeat_window_days": 30,
                "duplicate_window_minutes": 60,
                "duplicate_similarity_percent": 70,
            },
        )
    )
    assert settings["duplicate_similarity_percent"] == 70
    # 3 of the 3 words of the shorter text: 100 % (>= 70)
    again = await intake.ingest(
        app_conn,
        FORMS,
        Inbound(
            channel="walk_in", text="Рахунок за квітень не прийшов!", client_id=late["client_id"]
        ),
    )
    assert (
        await app_conn.fetchval("SELECT duplicate_of_id FROM cases WHERE id = $1", again.case_id)
        is not None
    )
    # Leaving the threshold out keeps it
    settings = await ok(
        await client.put(
            "/api/v1/case-settings",
            headers=admin,
            json={"repeat_window_days": 30, "duplicate_window_minutes": 60},
        )
    )
    assert settings["duplicate_similarity_percent"] == 70
    await bad(
        await client.put(
            "/api/v1/case-settings",
            headers=admin,
            json={
                "repeat_window_days": 30,
                "duplicate_window_minutes": 10,
                "duplicate_similarity_percent": 5,
            },
        ),
        "duplicate_similarity_percent",
    )


def test_text_similarity_is_the_share_of_the_shorter_texts_words() -> None:
    assert similarity("Не прийшов рахунок за березень", "не прийшов РАХУНОК за березень!") == 1.0
    # Word endings do not matter (рахунок / рахунку), short words do not count
    assert similarity("Немає рахунку за березень місяць", "Не прийшов рахунок за березень") >= 0.6
    assert similarity("Запах газу в підʼїзді", "Не прийшов рахунок за березень") == 0.0
    assert similarity("Так", "Так") == 1.0 and similarity("", "Так") == 0.0
