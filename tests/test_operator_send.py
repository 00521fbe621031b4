"""Operator send during a call: allowed templates, delivered at once, refused with the reason."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import aio_pika
import redis.asyncio as aioredis
from conftest import login_as
from dispatch_helpers import Stack, make_clients

from dispatcher import worker
from dispatcher.envelopes import RealtimeMessages
from dispatcher.receipts import holds
from dispatcher.send import pipeline
from herald import clock
from herald.audit import SYSTEM
from herald.db import create_pool
from providers.registry import build_providers, close_providers
from rules import consent, quiet_hours, stop_lists
from rules.rate_limit import RedisRateLimiter

BANK_DETAILS = {
    "name": "Реквізити для оплати",
    "topic": "billing",
    "variants": {
        "sms": {"text": "{{ first_name }}, оплата за ОР {{ or_number }}: {{ payment_url }}"},
        "viber": {
            "text": "{{ first_name }}, реквізити для оплати за ОР {{ or_number }}.",
            "button_text": "Сплатити",
            "button_url": "{{ payment_url }}",
        },
    },
}


async def allowed_template(stack: Stack) -> int:
    template = await stack.template(**BANK_DETAILS)
    await stack.call("PUT", f"/api/v1/templates/{template}/operator-send", {"allowed": True})
    return template


async def send(
    stack: Stack, headers: dict[str, str], client_id: int, body: dict[str, Any], expect: int
) -> dict[str, Any]:
    response = await stack.api.post(
        f"/api/v1/clients/{client_id}/messages", json=body, headers=headers
    )
    found = await response.json()
    assert response.status == expect, found
    return found


async def wait_status(
    stack: Stack, headers: dict[str, str], message_id: str, *wanted: str
) -> dict[str, Any]:
    for _ in range(300):
        response = await stack.api.get(f"/api/v1/messages/{message_id}", headers=headers)
        found = await response.json()
        assert response.status == 200, found
        if found["status"] in wanted:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{message_id} never reached {wanted}: {found}")


async def test_operator_sends_an_allowed_template_and_sees_it_delivered(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 1)
    # A second account of the client, in another region: the operator sends about it
    await stack.conn.execute(
        "INSERT INTO accounts (id, client_id, or_number, eic_code, region_code, city, street, "
        "building, consumer_type, tariff_code, opened_at) VALUES (500, $1, '0000000500', "
        "'56XS00000000500A', 'UA-46', 'Львів', 'вул. Городоцька', '5', 'household', "
        "'household_fixed', '2021-01-01')",
        ids[0],
    )
    template = await allowed_template(stack)
    hidden = await stack.template(name="Не для операторів")
    operator = await login_as(stack.api, "operator_cc")
    # The operator's list holds only the allowed template, with its channels
    listed = await stack.call("GET", "/api/v1/operator-templates")
    assert [(t["id"], t["channels"]) for t in listed] == [(template, ["viber", "sms"])]
    assert hidden not in [t["id"] for t in listed]
    # When the operator sends it by SMS about the second account
    accepted = await send(
        stack, operator, ids[0], {"template_id": template, "channel": "sms", "account_id": 500}, 202
    )
    assert accepted["message_id"].startswith("o") and accepted["channel_chain"] == ["sms"]
    # Then it is delivered, with the variables of that account, and its status is readable
    done = await wait_status(stack, operator, accepted["message_id"], "delivered", "read")
    assert (done["channel"], done["client_id"], done["kind"]) == ("sms", ids[0], "operator")
    found = await stack.sim("GET", f"/sms/sim/messages?message_id={accepted['message_id']}")
    assert "0000000500" in str(found["messages"][0]["content"])
    assert "https://pay.example.ua/0000000500" in str(found["messages"][0]["content"])
    # and who sent what is journalled on the client
    history = await stack.call("GET", f"/api/v1/audit/client/{ids[0]}")
    entry = next(e for e in history["items"] if e["action"] == "send_message")
    assert entry["actor_login"] != "admin" and entry["new_value"]["template_id"] == template
    assert entry["new_value"]["message_id"] == accepted["message_id"]
    # Without a channel the template's chain is used: Viber first
    again = await send(stack, operator, ids[0], {"template_id": template}, 202)
    assert again["channel_chain"] == ["viber", "sms"]
    assert (await wait_status(stack, operator, again["message_id"], "delivered", "read"))[
        "channel"
    ] == "viber"


async def test_refused_sends_say_why(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 3)
    no_phone = await make_clients(stack.conn, 1, phone=False, start=50)
    template = await allowed_template(stack)
    operator = await login_as(stack.api, "operator_cos")
    # Given a client who opted out of billing messages by SMS and Viber
    for channel in ("sms", "viber"):
        await consent.record_consent(
            stack.conn,
            SYSTEM,
            client_id=ids[0],
            channel=channel,
            topic="billing",
            opted_in=False,
            source="cabinet",
        )
    refused = await send(stack, operator, ids[0], {"template_id": template}, 409)
    assert refused["type"] == "/problems/send-refused-no-consent"
    assert refused["checks"] == {
        "reason": "no_consent",
        "channels": {"viber": "no_consent", "sms": "no_consent"},
    }
    # A client on a stop list for billing
    await stop_lists.add_entry(
        stack.conn, SYSTEM, reason="судова справа", client_id=ids[1], topics=["billing"]
    )
    refused = await send(stack, operator, ids[1], {"template_id": template, "channel": "sms"}, 409)
    assert refused["checks"]["reason"] == "stop_list"
    # A client without a phone
    refused = await send(stack, operator, no_phone[0], {"template_id": template}, 409)
    assert refused["checks"]["reason"] == "no_contact"
    # A template not allowed for operators, or a channel the template has no text for
    other = await stack.template(variants={"sms": {"text": "Текст {{ first_name }}"}})
    refused = await send(stack, operator, ids[2], {"template_id": other}, 422)
    assert refused["checks"]["reason"] == "template_not_allowed"
    refused = await send(
        stack, operator, ids[2], {"template_id": template, "channel": "email"}, 422
    )
    assert refused["checks"]["reason"] == "no_variant"
    # Bad input and unknown things
    problem = await send(stack, operator, ids[2], {"template_id": template, "channel": "fax"}, 400)
    assert problem["errors"][0]["field"] == "channel"
    problem = await send(stack, operator, ids[2], {"template_id": template, "account_id": 2}, 400)
    assert problem["errors"][0]["field"] == "account_id"
    await send(stack, operator, 999_999, {"template_id": template}, 404)
    # Nothing was queued or sent for any of these
    assert await stack.conn.fetchval("SELECT count(*) FROM realtime_messages") == 0
    # A marketer may not send from a card; the client with consent gets the message
    marketer = await login_as(stack.api, "marketer")
    await send(stack, marketer, ids[2], {"template_id": template}, 403)
    accepted = await send(stack, operator, ids[2], {"template_id": template}, 202)
    await wait_status(stack, operator, accepted["message_id"], "delivered", "read")
    assert (await stack.sim_stats("viber"))["accepted"] == 1
    assert (await stack.sim_stats("sms"))["accepted"] == 0


async def test_quiet_hours_refuse_when_asked_and_a_withdrawn_consent_is_honoured_by_the_worker(
    stack: Stack,
) -> None:
    ids = await make_clients(stack.conn, 2)
    template = await allowed_template(stack)
    operator = await login_as(stack.api, "supervisor")
    # Given quiet hours around the clock (two windows) on SMS only
    for start, end in (("00:00", "12:00"), ("12:00", "00:00")):
        await stack.call(
            "POST",
            "/api/v1/quiet-hours",
            {"name": "Тиша", "start": start, "end": end, "channels": ["sms"]},
            201,
        )
    # The operator who asks not to hold it is refused, and told when it could go
    refused = await send(
        stack, operator, ids[0], {"template_id": template, "channel": "sms", "hold": False}, 409
    )
    assert refused["checks"]["reason"] == "quiet_hours"
    assert refused["checks"]["release_at"] is not None
    # Viber is not quiet: the chain's first step can go
    accepted = await send(stack, operator, ids[0], {"template_id": template}, 202)
    assert (await wait_status(stack, operator, accepted["message_id"], "delivered", "read"))[
        "channel"
    ] == "viber"
    # A message id that is not a realtime one, or unknown, is a clear 4xx
    response = await stack.api.get("/api/v1/messages/c1:2:0", headers=operator)
    assert (await response.json())["errors"][0]["field"] == "message_id"
    response = await stack.api.get("/api/v1/messages/o999:1:0", headers=operator)
    assert response.status == 404


async def test_quiet_hours_hold_an_operator_send_until_they_end_or_it_is_cancelled(
    stack: Stack,
) -> None:
    """Issue 20 point 3 (IC-09): queued, not dropped. The send is held until the window
    ends, as campaigns and triggers are; the operator may cancel it meanwhile."""
    ids = await make_clients(stack.conn, 2)
    template = await allowed_template(stack)
    operator = await login_as(stack.api, "operator_cc")
    await stack.stop_worker()  # nothing is published for a held message: no worker needed
    # Given a quiet window on SMS around the present moment in Kyiv
    now = clock.now().astimezone(ZoneInfo("Europe/Kyiv"))
    window = await quiet_hours.create_window(
        stack.conn,
        SYSTEM,
        quiet_hours.WindowSpec(
            name="Ніч",
            start=(now - dt.timedelta(hours=1)).time().replace(microsecond=0),
            end=(now + dt.timedelta(hours=1)).time().replace(microsecond=0),
            channels=["sms"],
        ),
    )
    # When the operator sends by SMS
    held = await send(stack, operator, ids[0], {"template_id": template, "channel": "sms"}, 202)
    # Then it is accepted as held until the window ends, and shows so
    assert (held["status"], held["held_reason"]) == ("held", "quiet_hours")
    release = dt.datetime.fromisoformat(held["release_at"])
    assert dt.timedelta(minutes=50) < release - clock.now() <= dt.timedelta(hours=1, minutes=1)
    status = await wait_status(stack, operator, held["message_id"], "held")
    assert status["held"] is True
    timeline = await stack.call("GET", f"/api/v1/clients/{ids[0]}/timeline?limit=20")
    assert [
        (i["status"], i["detail"]["message_id"])
        for i in timeline["items"]
        if i["source"] == "message"
    ] == [("held", held["message_id"])]
    # The operator who changes their mind cancels it: never sent, shown as cancelled
    other = await send(stack, operator, ids[1], {"template_id": template, "channel": "sms"}, 202)
    url = f"/api/v1/messages/{other['message_id']}/cancel"
    cancelled = await stack.api.post(url, headers=operator)
    assert cancelled.status == 200, await cancelled.text()
    assert (await cancelled.json())["status"] == "cancelled"
    assert (await stack.api.post(url, headers=operator)).status == 409
    assert not await stack.conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM held_messages WHERE client_id = $1)", ids[1]
    )
    timeline = await stack.call("GET", f"/api/v1/clients/{ids[1]}/timeline?limit=20")
    assert [i["status"] for i in timeline["items"] if i["source"] == "message"] == ["cancelled"]
    history = await stack.call("GET", f"/api/v1/audit/client/{ids[1]}")
    assert "cancel_message" in [e["action"] for e in history["items"]]
    # When the window ends, the scheduler releases the first one and a worker sends it
    assert window.id is not None
    await quiet_hours.delete_window(stack.conn, SYSTEM, window.id)
    await stack.conn.execute("UPDATE held_messages SET release_at = herald_now()")
    settings = stack.settings
    pool = await create_pool(settings)
    redis = aioredis.Redis.from_url(settings.redis_url)
    providers = build_providers(settings)
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        channel = await connection.channel()
        assert await holds.release_all(pool, channel, settings, "due") == 1
        row = await stack.conn.fetchrow("SELECT id, step FROM realtime_messages WHERE NOT done")
        ctx = pipeline.Context(settings, pool, redis, providers, RedisRateLimiter(redis))
        await worker.handle(ctx, RealtimeMessages([(row["id"], row["step"])]))
        await channel.close()
    finally:
        await connection.close()
        await close_providers(providers)
        await redis.aclose()
        await pool.close()
    done = await wait_status(stack, operator, held["message_id"], "delivered", "read")
    assert done["channel"] == "sms" and done["held"] is False
    sms = await stack.sim_stats("sms")
    assert (sms["accepted"], sms["duplicates"]) == (1, 0)
