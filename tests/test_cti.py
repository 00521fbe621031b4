"""Incoming calls (issue 4, point 8, SR-03): VICIdial events, identification pushed to the
right operator's SSE stream before the answer, idempotency, the call on the timeline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from conftest import login_as
from sse_helpers import Stream

CALLS = "/api/v1/cti/calls"
STREAM = "/api/v1/cti/stream"


async def insert_clients(conn: asyncpg.Connection) -> None:
    # 201: one phone of its own; 202 and 203 share a family phone; 204 has no phone.
    people = [
        (201, "Шевченко", "Тарас", "1000000201", ["+380671110201"]),
        (202, "Коваль", "Ірина", "1000000202", ["+380502220000"]),
        (203, "Коваль", "Петро", "1000000203", ["+380502220000"]),
        (204, "Бондар", "Іван", "1000000204", []),
    ]
    for client_id, last, first, or_number, phones in people:
        await conn.execute(
            "INSERT INTO clients (id, last_name, first_name) VALUES ($1, $2, $3)",
            client_id,
            last,
            first,
        )
        await conn.execute(
            "INSERT INTO accounts (client_id, or_number, eic_code, region_code, city, street, building, "
            "consumer_type, tariff_code, opened_at) VALUES ($1, $2, $3, 'UA-30', 'м. Київ', "
            "'вул. Садова', '1', 'household', 'household_fixed', '2020-01-01')",
            client_id,
            or_number,
            f"56XG00000000{client_id}K",
        )
        for phone in phones:
            await conn.execute(
                "INSERT INTO contacts (client_id, first_name, phone) VALUES ($1, $2, $3)",
                client_id,
                first,
                phone,
            )


@asynccontextmanager
async def open_stream(client, headers) -> AsyncIterator[Stream]:
    response = await client.get(STREAM, headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    stream = Stream(response)
    try:
        # Calls are pushed only after the feed is subscribed: wait for "ready".
        assert await stream.next() == ("ready", {"agent": headers["_login"]})
        yield stream
    finally:
        response.close()


@pytest.fixture
async def cti(client, demo_users, admin_conn):
    await insert_clients(admin_conn)
    roles = {}
    for role in ("integration", "operator_cc", "supervisor"):
        roles[role] = await login_as(client, role)
        roles[role]["_login"] = demo_users[role]
    return roles


def _h(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if not k.startswith("_")}


async def post(client, cti, **event) -> dict[str, Any]:
    response = await client.post(CALLS, json=event, headers=_h(cti["integration"]))
    body = await response.json()
    assert response.status == 200, body
    return body


async def test_ringing_pushes_the_match_to_that_agent_only(client, cti) -> None:
    operator, supervisor = cti["operator_cc"], cti["supervisor"]
    async with (
        open_stream(client, _h(operator) | {"_login": operator["_login"]}) as mine,
        open_stream(client, _h(supervisor) | {"_login": supervisor["_login"]}) as other,
    ):
        # Given a known caller ringing on the operator's line (VICIdial user = Herald login)
        accepted = await post(
            client,
            cti,
            event="ringing",
            call_id="V1122000001",
            phone_number="0671110201",
            user=operator["_login"].upper(),
            extension="SIP/101",
            campaign="INBOUND",
        )
        assert accepted["new"] is True and accepted["pushed"] is True
        assert accepted["identification"] == "match"
        # Then the operator's stream has the client before any answer
        event, push = await mine.next()
        assert event == "call"
        assert push["event"] == "ringing" and push["identification"] == "match"
        assert push["identified_by"] == "phone" and push["phone"] == "+380671110201"
        assert push["client"]["client_id"] == 201
        assert push["client"]["full_name"] == "Шевченко Тарас"
        assert push["client"]["accounts"][0]["or_number"] == "1000000201"
        assert push["call_id"] == accepted["call"]["id"]
        # And the supervisor's stream did not get it: its first call event is its own call
        await post(
            client,
            cti,
            event="ringing",
            call_id="V1122000002",
            phone_number="0999999999",
            user=supervisor["_login"],
        )
        event, push = await other.next()
        assert (event, push["call_ref"], push["identification"]) == (
            "call",
            "V1122000002",
            "unknown",
        )
        # Answer and hang-up reach the operator too, in order
        await post(client, cti, event="answered", call_id="V1122000001")
        await post(client, cti, event="hung_up", call_id="V1122000001", dispo="SALE")
        assert [(await mine.next())[1]["event"] for _ in range(2)] == ["answered", "hung_up"]
    call = accepted["call"]
    assert call["client_id"] == 201 and call["agent_login"] == operator["_login"].upper()
    assert call["agent_user_id"] is not None and call["extension"] == "SIP/101"


async def test_shared_phone_gives_candidates(client, cti) -> None:
    operator = cti["operator_cc"]
    async with open_stream(client, _h(operator) | {"_login": operator["_login"]}) as stream:
        await post(
            client,
            cti,
            event="ringing",
            call_id="V2",
            phone_number="+380502220000",
            user=operator["_login"],
        )
        _, push = await stream.next()
    assert push["identification"] == "candidates" and "client" not in push
    assert [c["client_id"] for c in push["candidates"]] == [202, 203]
    assert {c["full_name"] for c in push["candidates"]} == {"Коваль Ірина", "Коваль Петро"}


async def test_unknown_number_and_what_the_ivr_collected(client, cti) -> None:
    operator = cti["operator_cc"]
    async with open_stream(client, _h(operator) | {"_login": operator["_login"]}) as stream:
        await post(
            client,
            cti,
            event="ringing",
            call_id="V3",
            phone_number="0441234567",
            user=operator["_login"],
        )
        _, push = await stream.next()
        assert push["identification"] == "unknown"
        assert "client" not in push and "candidates" not in push
        # The IVR collected an OR number: it decides when the phone does not
        await post(
            client,
            cti,
            event="ringing",
            call_id="V4",
            phone_number="0441234567",
            user=operator["_login"],
            or_number="1000000204",
        )
        _, push = await stream.next()
        assert (push["identification"], push["identified_by"]) == ("match", "or_number")
        assert push["client"]["client_id"] == 204
        # ... and a Client_ID decides among the candidates of a shared phone
        await post(
            client,
            cti,
            event="ringing",
            call_id="V5",
            phone_number="+380502220000",
            user=operator["_login"],
            client_id=203,
        )
        _, push = await stream.next()
        assert (push["identified_by"], push["client"]["client_id"]) == ("client_id", 203)
        # An anonymous caller (no valid number) is unknown, and still stored
        accepted = await post(
            client,
            cti,
            event="ringing",
            call_id="V6",
            phone_number="anonymous",
            user=operator["_login"],
        )
        _, push = await stream.next()
        assert push["identification"] == "unknown" and push["phone"] is None
    assert accepted["call"]["phone_raw"] == "anonymous"


async def test_queue_call_reaches_the_agent_who_answers_with_the_match(client, cti) -> None:
    operator = cti["operator_cc"]
    async with open_stream(client, _h(operator) | {"_login": operator["_login"]}) as stream:
        # Ringing in a queue before an agent is chosen: identified, pushed to nobody
        ringing = await post(client, cti, event="ringing", call_id="Q1", phone_number="0671110201")
        assert (ringing["identification"], ringing["pushed"]) == ("match", False)
        # The answer names the agent: the identification reaches that agent now
        answered = await post(
            client, cti, event="call_answered", call_id="Q1", user=operator["_login"]
        )
        assert answered["pushed"] is True
        _, push = await stream.next()
    assert (push["event"], push["identification"]) == ("answered", "match")
    assert push["client"]["client_id"] == 201


async def test_dispo_only_call_is_identified_and_stored(client, cti) -> None:
    # VICIdial configured with only a Dispo Call URL: one event carries the whole call
    accepted = await post(
        client,
        cti,
        event="dispo",
        call_id="D1",
        phone_number="0671110201",
        user="nobody.here",
        dispo="NI",
        talk_time=12,
    )
    call = accepted["call"]
    assert (call["client_id"], call["identification"], call["disposition"]) == (201, "match", "NI")
    assert call["agent_user_id"] is None and accepted["pushed"] is False


async def test_repost_is_idempotent(client, cti, admin_conn) -> None:
    operator = cti["operator_cc"]
    event = {
        "event": "ringing",
        "call_id": "V7",
        "phone_number": "0671110201",
        "user": operator["_login"],
    }
    async with open_stream(client, _h(operator) | {"_login": operator["_login"]}) as stream:
        first = await post(client, cti, **event)
        again = await post(client, cti, **event)
        assert (first["new"], again["new"], again["pushed"]) == (True, False, False)
        assert again["call"]["id"] == first["call"]["id"]
        # The repost pushed nothing: the next event on the stream is the next call's
        await post(
            client,
            cti,
            event="ringing",
            call_id="V8",
            phone_number="0671110201",
            user=operator["_login"],
        )
        assert (await stream.next())[1]["call_ref"] == "V7"
        assert (await stream.next())[1]["call_ref"] == "V8"
    assert (
        await admin_conn.fetchval(
            "SELECT count(*) FROM call_events e JOIN calls c ON c.id = e.call_id "
            "WHERE c.call_ref = 'V7'"
        )
        == 1
    )
    hung = {"event": "hung_up", "call_id": "V7", "dispo": "DONE"}
    assert (await post(client, cti, **hung))["new"] is True
    assert (await post(client, cti, **hung | {"dispo": "OTHER"}))["call"]["disposition"] == "DONE"


async def test_hang_up_records_the_outcome_and_lands_on_the_timeline(
    client, cti, admin_conn
) -> None:
    operator = cti["operator_cc"]
    ringing = await post(
        client,
        cti,
        event="ringing",
        call_id="V9",
        phone_number="0671110201",
        user=operator["_login"],
    )
    await post(client, cti, event="call_answered", call_id="V9")
    await post(
        client,
        cti,
        event="hung_up",
        call_id="V9",
        dispo="INFO",
        talk_time=95,
        recording_url="https://pbx.example.ua/rec/V9.mp3",
        transcript="Добрий день ...",
    )
    call_id = ringing["call"]["id"]
    response = await client.get(f"{CALLS}/{call_id}", headers=_h(operator))
    call = await response.json()
    assert response.status == 200, call
    assert call["ringing_at"] and call["answered_at"] and call["hung_up_at"]
    assert (call["disposition"], call["talk_time"]) == ("INFO", 95)
    assert call["recording_url"] == "https://pbx.example.ua/rec/V9.mp3"
    assert call["transcript"] == "Добрий день ..."
    rows = await admin_conn.fetch(
        "SELECT kind, ref_type, ref_id, status, detail FROM timeline_events WHERE client_id = 201"
    )
    calls = [r for r in rows if r["kind"] == "call"]
    assert len(calls) == 1, rows
    assert str(calls[0]["ref_id"]) == str(call_id)
    assert calls[0]["detail"]["recording_url"] == "https://pbx.example.ua/rec/V9.mp3"
    # The finished call is a case in the operators' queue, once, even when hung_up is reposted
    await post(client, cti, event="hung_up", call_id="V9", dispo="INFO")
    cases = await admin_conn.fetch(
        "SELECT channel, client_id, subject, body FROM cases WHERE contact_phone = '+380671110201'"
    )
    assert [(c["channel"], c["client_id"], c["subject"]) for c in cases] == [
        ("call", 201, "Вхідний дзвінок")
    ]
    assert cases[0]["body"] == "Добрий день ..."


async def test_a_missed_call_becomes_a_case(client, cti, admin_conn) -> None:
    operator = cti["operator_cc"]
    await post(
        client,
        cti,
        event="ringing",
        call_id="V10",
        phone_number="0671110201",
        user=operator["_login"],
    )
    await post(client, cti, event="hung_up", call_id="V10", dispo="DROP")
    cases = await admin_conn.fetch("SELECT channel, client_id, subject FROM cases")
    assert [(c["channel"], c["client_id"], c["subject"]) for c in cases] == [
        ("call", 201, "Пропущений дзвінок")
    ]


async def test_form_and_query_parameters_as_vicidial_sends_them(client, cti) -> None:
    operator = cti["operator_cc"]
    headers = _h(cti["integration"])
    async with open_stream(client, _h(operator) | {"_login": operator["_login"]}) as stream:
        # VICIdial's Start Call URL variables as query parameters; empty ones are absent
        response = await client.post(
            CALLS,
            headers=headers,
            params={
                "event": "start",
                "uniqueid": "1700000000.42",
                "phone_number": "380671110201",
                "user": operator["_login"],
                "campaign": "INB",
                "lead_id": "",
                "epoch": "",
            },
        )
        body = await response.json()
        assert response.status == 200, body
        assert body["event"] == "ringing" and body["identification"] == "match"
        assert (await stream.next())[1]["client"]["client_id"] == 201
    # The Dispo Call URL variables form-encoded
    response = await client.post(
        CALLS,
        headers=headers,
        data={"event": "dispo", "uniqueid": "1700000000.42", "dispo": "SALE", "talk_time": "61"},
    )
    body = await response.json()
    assert response.status == 200, body
    assert body["event"] == "hung_up"
    assert (body["call"]["disposition"], body["call"]["talk_time"]) == ("SALE", 61)


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"event": "exploded", "call_id": "X1", "phone_number": "0671110201"}, "event"),
        ({"event": "ringing", "phone_number": "0671110201"}, "call_id"),
        ({"event": "ringing", "call_id": "X2"}, "phone_number"),
        (
            {"event": "ringing", "call_id": "X3", "phone_number": "0671110201", "direction": "up"},
            "direction",
        ),
        (
            {"event": "ringing", "call_id": "X4", "phone_number": "0671110201", "client_id": "abc"},
            "client_id",
        ),
        (
            {"event": "ringing", "call_id": "X5", "phone_number": "0671110201", "colour": "red"},
            "colour",
        ),
    ],
)
async def test_bad_event_is_a_400_naming_the_field(client, cti, event, field) -> None:
    response = await client.post(CALLS, json=event, headers=_h(cti["integration"]))
    assert response.status == 400, await response.text()
    assert [e["field"] for e in (await response.json())["errors"]] == [field]
    response = await client.post(CALLS, data=event, headers=_h(cti["integration"]))
    assert response.status == 400, await response.text()
    assert [e["field"] for e in (await response.json())["errors"]] == [field]


async def test_malformed_json_and_unknown_call(client, cti) -> None:
    response = await client.post(
        CALLS,
        data=b"{not json",
        headers=_h(cti["integration"]) | {"Content-Type": "application/json"},
    )
    assert response.status == 400
    response = await client.get(f"{CALLS}/999999", headers=_h(cti["operator_cc"]))
    assert response.status == 404


async def test_only_integration_posts_events(client, cti) -> None:
    event = {"event": "ringing", "call_id": "P1", "phone_number": "0671110201"}
    client.session.cookie_jar.clear()  # the logins above left a session cookie
    assert (await client.post(CALLS, json=event)).status == 401
    for role in ("operator_cc", "supervisor"):
        response = await client.post(CALLS, json=event, headers=_h(cti[role]))
        assert response.status == 403
    # The stream needs clients.read, which the integration role does not have
    assert (await client.get(STREAM, headers=_h(cti["integration"]))).status == 403
    assert (await client.get(STREAM)).status == 401


async def test_an_event_naming_only_the_phone_reaches_the_operator_mapped_to_it(
    client, cti
) -> None:
    operator = cti["operator_cc"]
    admin = await login_as(client, "admin")
    url = "/api/v1/cti/extensions"
    # Given an administrator mapped the phone SIP/204 to the operator
    mapped = await client.put(
        url, headers=admin, json={"extension": "SIP/204", "login": operator["_login"]}
    )
    body = await mapped.json()
    assert mapped.status == 200, body
    assert (body["extension"], body["login"]) == ("SIP/204", operator["_login"])
    listed = await (await client.get(url, headers=admin)).json()
    assert [m["extension"] for m in listed] == ["SIP/204"]
    async with open_stream(client, _h(operator) | {"_login": operator["_login"]}) as stream:
        # When VICIdial rings that phone without naming the agent
        accepted = await post(
            client,
            cti,
            event="ringing",
            call_id="V30",
            phone_number="0671110201",
            extension="SIP/204",
        )
        assert accepted["pushed"] is True
        assert accepted["call"]["agent_login"] == operator["_login"]
        # Then the operator at it gets the caller
        event, push = await stream.next()
        assert (event, push["call_ref"], push["client"]["client_id"]) == ("call", "V30", 201)
        # and VICIdial's phone_login works the same way
        await post(
            client,
            cti,
            event="ringing",
            call_id="V31",
            phone_number="0671110201",
            phone_login="SIP/204",
        )
        assert (await stream.next())[1]["call_ref"] == "V31"
    # An unknown login or a bad extension is a 400 naming it; an operator may not map phones
    for wrong, field in (
        ({"extension": "SIP/205", "login": "nobody.here"}, "login"),
        ({"extension": " x", "login": operator["_login"]}, "extension"),
    ):
        response = await client.put(url, headers=admin, json=wrong)
        assert (response.status, (await response.json())["errors"][0]["field"]) == (400, field)
    response = await client.put(
        url, headers=_h(operator), json={"extension": "SIP/206", "login": operator["_login"]}
    )
    assert response.status == 403
    # Removing the mapping is journalled with the mapping itself
    gone = {"extension": "SIP/204"}
    assert (await client.delete(url, headers=admin, params=gone)).status == 204
    assert (await client.delete(url, headers=admin, params=gone)).status == 404
    journal = await (
        await client.get("/api/v1/audit/cti_extension/SIP%2F204", headers=admin)
    ).json()
    assert [e["action"] for e in journal.get("items", [])] == ["delete", "create"], journal
    unmapped = await post(
        client, cti, event="ringing", call_id="V32", phone_number="0671110201", extension="SIP/204"
    )
    assert (unmapped["call"]["agent_login"], unmapped["pushed"]) == (None, False)
