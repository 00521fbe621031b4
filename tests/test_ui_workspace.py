"""The operator's workspace over HTTP, beyond the foundation (test_ui_pages.py): the SLA
timer in business time, the call that became a case, delivery statuses in a case's thread,
English texts of domain errors and timeline titles, the card's history by role."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
from conftest import login_as
from test_card import make_client
from ui_helpers import post_form, ui_login

from crm.cases import sla

KYIV = ZoneInfo("Europe/Kyiv")
OFFICE_HOURS = {
    d: [{"start": "09:00", "end": "18:00"}] for d in ("mon", "tue", "wed", "thu", "fri")
}


async def _policy(client, name: str, week: dict, **targets: int) -> None:
    admin = await login_as(client, "admin")
    calendar = await (
        await client.post(
            "/api/v1/business-calendars", headers=admin, json={"name": name, "week": week}
        )
    ).json()
    policy = await client.post(
        "/api/v1/case-sla-policies",
        headers=admin,
        json={"name": name, "calendar_id": calendar["id"], **targets},
    )
    assert policy.status == 201, await policy.text()


async def _walk_in(client, token: str, **fields: str) -> int:
    response = await post_form(
        client,
        "/ui/cases/new",
        {"text": "Перевірте нарахування", **fields},
        token,
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    return int(response.headers["Location"].rsplit("/", 1)[1])


# Wednesday 15 April 2026, 19:00 in Kyiv: after the office's working hours.
@pytest.mark.clock(dt.datetime(2026, 4, 15, 19, 0, tzinfo=KYIV))
async def test_sla_timer_shows_business_time_and_why_it_stands_still(
    client, demo_users, admin_conn
) -> None:
    await _policy(client, "Офіс", OFFICE_HOURS, first_response_minutes=60, resolution_minutes=540)
    token = await ui_login(client, "operator_cos")
    case_id = await _walk_in(client, token)
    # After hours: the whole hour is left, the timer stands still until Thursday 09:00
    page = await (await client.get(f"/ui/cases/{case_id}")).text()
    timer = re.search(r'<span class="sla sla-ok sla-stopped"[^>]*>', page)
    assert timer, page
    assert 'data-left="3600"' in timer.group(0) and 'data-running="false"' in timer.group(0)
    assert 'data-changes-at="2026-04-16T06:00:00+00:00"' in timer.group(0)  # 09:00 in Kyiv
    assert 'data-why="off_hours"' in page and "поза робочим часом" in page
    assert ">01:00:00<" in page
    # The same case on Thursday at 10:00: running until 18:00, an hour less left
    at_ten = dt.datetime(2026, 4, 16, 10, 0, tzinfo=KYIV)
    clocks = await sla.sla_clocks(admin_conn, [case_id], now=at_ten)
    assert clocks[case_id] == sla.SlaClock(True, dt.datetime(2026, 4, 16, 18, 0, tzinfo=KYIV))
    block = (await sla.sla_for(admin_conn, [case_id], now=at_ten))[case_id]
    assert block.first_response is not None and block.first_response.remaining_seconds == 0
    # On Hold: the timer stands still and says why
    await post_form(client, f"/ui/cases/{case_id}/status", {"status": "in_progress"}, token)
    await post_form(client, f"/ui/cases/{case_id}/status", {"status": "on_hold"}, token)
    page = await (await client.get(f"/ui/cases/{case_id}")).text()
    assert 'data-why="on_hold"' in page and 'data-running="false"' in page
    # The queue shows the same timer
    rows = await (await client.get("/ui/cases/rows")).text()
    assert f'data-case-id="{case_id}"' in rows and 'data-why="on_hold"' in rows


# Wednesday 15 April 2026, 11:00 in Kyiv: no quiet hours hold the SMS.
@pytest.mark.clock(dt.datetime(2026, 4, 15, 11, 0, tzinfo=KYIV))
async def test_case_thread_shows_delivery_of_replies_and_notifications(
    client, demo_users, admin_conn
) -> None:
    client_id, _ = await make_client(admin_conn, ("1000000911",))
    token = await ui_login(client, "operator_cos")
    case_id = await _walk_in(client, token, client_id=str(client_id))
    # An SMS reply: queued, its status polled in the thread until final
    body = await (
        await post_form(
            client,
            f"/ui/cases/{case_id}/reply",
            {"text": "Перерахунок зроблено.", "channel": "sms"},
            token,
        )
    ).text()
    assert 'id="case-message"' in body and 'role="status"' in body, body
    event_id, message_id = await admin_conn.fetchrow(
        "SELECT id, data->>'message_id' FROM case_events WHERE case_id = $1 AND kind = 'message' "
        "AND direction = 'out'",
        case_id,
    )
    tag = re.search(rf'<span class="delivery" id="delivery-{event_id}"[^>]*>', body)
    assert tag and f'hx-get="/ui/cases/{case_id}/events/{event_id}/delivery"' in tag.group(0)
    # the provider's receipt: the next poll shows it delivered and stops (286)
    await admin_conn.execute(
        "INSERT INTO message_events (message_id, client_id, step, channel, status, at) "
        "VALUES ($1, $2, 0, 'sms', 'delivered', herald_now())",
        message_id,
        client_id,
    )
    polled = await client.get(f"/ui/cases/{case_id}/events/{event_id}/delivery")
    assert polled.status == 286
    text = await polled.text()
    assert 'data-status="delivered"' in text and "Доставлено" in text and "hx-get" not in text
    # An e-mail reply: the outbox row's status (sent to the SMTP sink, or still sending)
    await post_form(
        client, f"/ui/cases/{case_id}/reply", {"text": "Деталі в листі.", "channel": "email"}, token
    )
    mail_event = await admin_conn.fetchval(
        "SELECT id FROM case_events WHERE case_id = $1 AND channel = 'email' AND direction = 'out'",
        case_id,
    )
    page = await (await client.get(f"/ui/cases/{case_id}")).text()
    assert re.search(rf'id="delivery-{mail_event}" data-status="(sent|pending|failed)"', page)
    # The registration notification of the notifier (no worker here: made by hand)
    await admin_conn.execute(
        "INSERT INTO case_events (case_id, kind, actor_login, body, data) VALUES "
        "($1, 'notification', 'notifications', 'Звернення зареєстровано', "
        '\'{"skipped": "no_phone"}\')',
        case_id,
    )
    page = await (await client.get(f"/ui/cases/{case_id}")).text()
    assert 'data-status="skipped"' in page and "немає номера телефону" in page
    # Another case's event is not this case's
    other = await _walk_in(client, token)
    missing = await client.get(f"/ui/cases/{other}/events/{event_id}/delivery")
    assert missing.status == 404


async def test_english_ui_translates_domain_errors_and_timeline_titles(
    client, demo_users, admin_conn
) -> None:
    client_id, _ = await make_client(admin_conn, ("1000000921",))
    meter_id = await admin_conn.fetchval(
        "SELECT m.id FROM meters m JOIN accounts a ON a.id = m.account_id WHERE a.client_id = $1",
        client_id,
    )
    integration = await login_as(client, "integration")
    token = await ui_login(client, "operator_cos")
    # A reading entered and a VICIdial call: both on the timeline with generated titles
    await post_form(client, f"/ui/meters/{meter_id}/readings", {"value": "1234,5"}, token)
    for event in ("ringing", "hung_up"):
        await client.post(
            "/api/v1/cti/calls",
            headers=integration,
            json={
                "event": event,
                "call_id": "V4000000001",
                "phone_number": "0501112233",
                "user": "operator.cos",
            },
        )
    uk = await (await client.get(f"/ui/clients/{client_id}/timeline")).text()
    assert "Показник лічильника" in uk and "Вхідний дзвінок +380501112233" in uk
    case_id = await _walk_in(client, token, client_id=str(client_id))
    wrong = await post_form(client, f"/ui/cases/{case_id}/status", {"status": "closed"}, token)
    text = await wrong.text()
    assert wrong.status == 400 and "Це неможливо зробити в поточному стані." in text
    assert 'lang="en"' in text  # the system's own words, marked as English
    # The same in English
    await post_form(client, "/ui/language", {"language": "en", "next": "/ui/search"}, token)
    en = await (await client.get(f"/ui/clients/{client_id}/timeline")).text()
    assert re.search(r"Meter SN\d+ reading: 1,234\.5 m³ \(Operator\)", en), en
    assert "Incoming call +380501112233" in en
    titles = re.findall(r'<div class="tl-title">([^<]*)<', en)
    assert "Missed call" in titles  # the call's case: a generated subject
    # only what a person typed (the walk-in's text) stays as typed
    assert [t for t in titles if re.search(r"[а-яіїєґ]", t)] == ["Перевірте нарахування"]
    wrong = await post_form(client, f"/ui/cases/{case_id}/status", {"status": "closed"}, token)
    assert "This cannot be done in the current state." in await wrong.text()
    bad = await post_form(client, f"/ui/meters/{meter_id}/readings", {"value": "abc"}, token)
    assert "The value of “Reading” is not accepted." in await bad.text()
