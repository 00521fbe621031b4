"""Event data as template variables (event.<key>) in triggered messages."""

from __future__ import annotations

from dispatch_helpers import Stack, make_clients
from test_triggers import event, message, post, producer, rule, status_is

TEXT = (
    "{{ first_name }}, оплату {{ event.amount|money }} за замовлення {{ event.order_id }} отримано."
)


async def test_triggered_message_renders_the_events_data(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 2)
    _, key = await producer(stack)
    template = await stack.template(variants={"sms": {"text": TEXT}})
    await rule(stack, template_id=template)
    # Given two events with their own data, one without the order id the template reads
    result = await post(
        stack,
        key,
        [
            event("p1", ids[0], data={"amount": 245.5, "order_id": "A-17"}),
            event("p2", ids[1], data={"amount": 99}),
        ],
    )
    good, bad = (r["messages"][0] for r in result["results"])
    # Then the first SMS carries its event's amount and order
    await status_is(stack, good, "delivered", "read")
    found = await stack.sim("GET", f"/sms/sim/messages?message_id={good}")
    text = str(found["messages"][0]["content"])
    assert "245,50" in text and "A-17" in text and "Олена" in text
    # and the second failed to render, naming the field, and never reached the provider
    failed = await status_is(stack, bad, "failed")
    assert any((e["reason"] or "").startswith("render_error:") for e in failed["events"])
    assert (await stack.sim_stats("sms"))["accepted"] == 1
    assert (await message(stack, bad))["status"] == "failed"


async def test_event_variables_are_checked_on_save(stack: Stack) -> None:
    # A template reading event keys saves; the preview uses example values
    saved = await stack.call(
        "POST",
        "/api/v1/templates",
        {"name": "Оплата", "topic": "service", "variants": {"sms": {"text": TEXT}}},
        201,
    )
    assert "event" in saved["variables"]
    # Names that are not top-level event keys are refused, naming the field
    for text, words in (
        ("{{ event.items }}", "event.items"),
        ("{{ event.order.id }}", ".id"),
        ("{{ evnt }}", "evnt"),
    ):
        refused = await stack.call(
            "POST",
            "/api/v1/templates",
            {"name": "Погано", "topic": "service", "variants": {"sms": {"text": text}}},
            400,
        )
        assert "variants.sms.text" in str(refused) and words in str(refused), refused


async def test_a_campaign_refuses_a_template_that_reads_the_event(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 1)
    template = await stack.template(variants={"sms": {"text": TEXT}})
    body = {
        "name": "Розсилка",
        "template_id": template,
        "channel_chain": ["sms"],
        "audience": {"kind": "clients", "client_ids": ids},
    }
    refused = await stack.call("POST", "/api/v1/campaigns", body, 400)
    assert "template_id" in str(refused) and "event" in str(refused)
