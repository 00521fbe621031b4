"""Producer events and trigger rules: auth, validation, idempotency, conditions, contact policy,
delay, and triggered messages delivered end to end on the realtime path with fallback."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientSession
from dispatch_helpers import Stack, make_clients

from dispatcher.realtime import operator_send, triggers

NOW = "2026-11-22T10:00:00+02:00"


async def producer(stack: Stack, types: list[str] | None = None) -> tuple[int, dict[str, str]]:
    body = {"name": "Білінг", "event_types": types or ["payment.received", "debt.created"]}
    created = await stack.call("POST", "/api/v1/producers", body, 201)
    return created["producer"]["id"], {"Authorization": f"Bearer {created['api_key']}"}


async def rule(stack: Stack, **fields: Any) -> dict[str, Any]:
    template = fields.pop("template_id", None) or await stack.template()
    body = {
        "name": "Дякуємо за оплату",
        "event_type": "payment.received",
        "template_id": template,
        "channel_chain": ["sms"],
        **fields,
    }
    return await stack.call("POST", "/api/v1/trigger-rules", body, 201)


def event(event_id: str, client_id: int | None = None, **fields: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event_id": event_id,
        "type": "payment.received",
        "occurred_at": NOW,
        "data": {"amount": 150},
    }
    if client_id is not None:
        item["client_id"] = client_id
    item.update(fields)
    return item


async def post(
    stack: Stack, key: dict[str, str], events: list[dict[str, Any]], expect: int = 200
) -> dict[str, Any]:
    response = await stack.api.post("/api/v1/events", json={"events": events}, headers=key)
    body = await response.json()
    assert response.status == expect, body
    return body


async def eventually(probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll an async probe until it returns something truthy; fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await probe()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition never met")
        await asyncio.sleep(0.1)


async def message(stack: Stack, message_id: str) -> dict[str, Any]:
    return await stack.call("GET", f"/api/v1/messages/{message_id}")


async def status_is(stack: Stack, message_id: str, *wanted: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        found = await message(stack, message_id)
        return found if found["status"] in wanted else None

    return await eventually(probe)


# -- pure: the condition operators -------------------------------------------------------


@pytest.mark.parametrize(
    "op, actual, expected, result",
    [
        ("eq", 150, 150.0, True),
        ("eq", "150", 150, False),
        ("eq", True, 1, False),
        ("ne", "paid", "due", True),
        ("gt", 150, 100, True),
        ("gte", 100, 100, True),
        ("lt", "2026-01-01", "2026-02-01", True),
        ("lt", "abc", 5, False),
        ("in", "shipped", ["shipped", "delivered"], True),
        ("not_in", 3, [1, 2], True),
        ("contains", "Оплата через банк", "банк", True),
        ("contains", ["a", "b"], "b", True),
        ("contains", 12, "1", False),
        ("exists", None, None, False),
    ],
)
def test_condition_operators(op: str, actual: Any, expected: Any, result: bool) -> None:
    assert triggers.test(op, actual, expected) is result


def test_missing_field_and_nested_paths() -> None:
    data = {"order": {"status": "shipped", "items": [{"sku": "G4"}]}}
    assert triggers.resolve(data, "order.items.0.sku") == "G4"
    missing = triggers.resolve(data, "order.total")
    assert triggers.test("gt", missing, 1) is False
    assert triggers.test("not_exists", missing, None) is True
    assert triggers.test("ne", missing, "x") is True
    # A path into a value that is not an object is missing, never an exception
    assert triggers.test("eq", triggers.resolve(data, "order.status.length"), 7) is False


# -- producers ---------------------------------------------------------------------------


async def test_producer_key_is_required_and_checked(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 1)
    producer_id, key = await producer(stack)
    # Given no key, a wrong key, a user's session instead of a key
    async with ClientSession() as fresh:  # the test client would send its login cookie
        url = stack.api.make_url("/api/v1/events")
        for headers in ({}, {"Authorization": "Bearer hpk_wrong"}, stack.headers):
            async with fresh.post(
                url, json={"events": [event("e1", ids[0])]}, headers=headers
            ) as response:
                assert response.status == 401, await response.text()
                assert (await response.json())["type"] == "/problems/producer-key-invalid"
    # The right key is accepted
    await post(stack, key, [event("e1", ids[0])])
    # When the producer is deactivated, its key is refused with 403
    await stack.call("POST", f"/api/v1/producers/{producer_id}/deactivate")
    response = await stack.api.post(
        "/api/v1/events", json={"events": [event("e2", ids[0])]}, headers=key
    )
    assert response.status == 403
    assert (await response.json())["type"] == "/problems/producer-deactivated"
    listed = await stack.call("GET", "/api/v1/producers")
    assert [(p["id"], p["is_active"]) for p in listed] == [(producer_id, False)]
    assert "api_key" not in listed[0]
    # A producer name is unique
    await stack.call("POST", "/api/v1/producers", {"name": "білінг", "event_types": ["a.b"]}, 409)


async def test_bad_items_get_errors_good_items_are_accepted(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 2)
    _, key = await producer(stack)
    items = [
        event("ok-1", ids[0]),
        {"type": "payment.received", "client_id": ids[0], "occurred_at": NOW},  # no event_id
        event("naive", ids[0], occurred_at="2026-11-22T10:00:00"),
        event("stranger", 999_999),
        event("not-allowed", ids[0], type="order.status_changed"),
        event("both", ids[0], or_number="0000000002"),
        event("by-or", or_number="0000000002"),
        event("bad-or", or_number="9999999999"),
        event("bad-type", ids[0], type="Payment"),
    ]
    result = await post(stack, key, items)
    assert [(r["index"], r["status"]) for r in result["results"]] == [
        (0, "accepted"),
        (6, "accepted"),
    ]
    assert [(e["index"], e["field"]) for e in result["errors"]] == [
        (1, "event_id"),
        (2, "occurred_at"),
        (3, "client_id"),
        (4, "type"),
        (5, "client_id"),
        (7, "or_number"),
        (8, "type"),
    ]
    assert (result["accepted"], result["rejected"]) == (2, 7)
    stored = await stack.conn.fetch("SELECT event_id, client_id FROM producer_events ORDER BY 1")
    assert [(r["event_id"], r["client_id"]) for r in stored] == [
        ("by-or", ids[1]),
        ("ok-1", ids[0]),
    ]
    # A batch with nothing acceptable is a 400 naming each item's field
    problem = await post(stack, key, [event("x", 999_999)], expect=400)
    assert problem["errors"] == [{"field": "events[0].client_id", "message": "no client 999999"}]
    # More than 1,000 events, or no events at all, is refused whole
    assert (await post(stack, key, [event(f"m{i}", ids[0]) for i in range(1001)], 400))["errors"][
        0
    ]["field"] == "events"
    await post(stack, key, [], expect=400)


async def test_a_repeated_event_makes_one_message(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 1)
    _, key = await producer(stack)
    await rule(stack)
    # Given the same event posted twice in one batch and once more later
    first = await post(stack, key, [event("pay-1", ids[0]), event("pay-1", ids[0])])
    assert [r["status"] for r in first["results"]] == ["accepted", "duplicate"]
    assert len(first["results"][0]["messages"]) == 1
    again = await post(stack, key, [event("pay-1", ids[0])])
    assert again["results"][0] == {
        "index": 0,
        "event_id": "pay-1",
        "status": "duplicate",
        "messages": [],
        "refused": [],
    }
    # Then one SMS is delivered, once
    delivered = await status_is(stack, first["results"][0]["messages"][0], "delivered", "read")
    assert delivered["client_id"] == ids[0] and delivered["kind"] == "trigger"
    sms = await stack.sim_stats("sms")
    assert (sms["accepted"], sms["duplicates"]) == (1, 0)
    assert await stack.conn.fetchval("SELECT count(*) FROM realtime_messages") == 1
    # and the message's events carry the client (the client timeline reads them)
    rows = await stack.conn.fetch(
        "SELECT DISTINCT client_id FROM message_events WHERE message_id LIKE 't%'"
    )
    assert [r[0] for r in rows] == [ids[0]]


async def test_conditions_on_event_and_client(stack: Stack) -> None:
    kyiv = await make_clients(stack.conn, 2, region="UA-32")
    lviv = await make_clients(stack.conn, 1, region="UA-46", start=100)
    _, key = await producer(stack)
    await rule(
        stack,
        conditions=[
            {"path": "amount", "op": "gte", "value": 100},
            {"path": "method", "op": "in", "value": ["bank", "card"]},
        ],
        client_conditions=[
            {"attribute": "region", "op": "in", "value": ["UA-32"]},
            {"attribute": "has_debt", "op": "eq", "value": True},
        ],
    )
    result = await post(
        stack,
        key,
        [
            event("big", kyiv[0], data={"amount": 150, "method": "card"}),  # match
            event("small", kyiv[1], data={"amount": 50, "method": "card"}),  # amount too small
            event("cash", kyiv[1], data={"amount": 500, "method": "cash"}),  # wrong method
            event("lviv", lviv[0], data={"amount": 500, "method": "bank"}),  # wrong region
            event("no-data", kyiv[1], data={}),  # fields missing
        ],
    )
    made = {r["event_id"]: len(r["messages"]) for r in result["results"]}
    assert made == {"big": 1, "small": 0, "cash": 0, "lviv": 0, "no-data": 0}
    # An inactive rule matches nothing
    rules = await stack.call("GET", "/api/v1/trigger-rules?event_type=payment.received")
    body = {
        k: v
        for k, v in rules[0].items()
        if k not in ("id", "version", "topic", "created_at", "updated_at")
    }
    updated = await stack.call(
        "PUT", f"/api/v1/trigger-rules/{rules[0]['id']}", {**body, "is_active": False}
    )
    assert updated["version"] == 2
    later = await post(
        stack, key, [event("big-2", kyiv[0], data={"amount": 150, "method": "card"})]
    )
    assert later["results"][0]["messages"] == []
    history = await stack.call("GET", f"/api/v1/audit/trigger_rule/{rules[0]['id']}")
    assert {"is_active", "version"} <= {e["field"] for e in history["items"]}


async def test_bad_rules_are_refused_naming_the_field(stack: Stack) -> None:
    template = await stack.template(variants={"sms": {"text": "Дякуємо, {{ first_name }}!"}})
    base = {
        "name": "r",
        "event_type": "payment.received",
        "template_id": template,
        "channel_chain": ["sms"],
    }

    async def field(body: dict[str, Any]) -> str:
        response = await stack.api.post("/api/v1/trigger-rules", json=body, headers=stack.headers)
        assert response.status == 400, await response.text()
        return (await response.json())["errors"][0]["field"]

    assert await field({**base, "channel_chain": ["viber"]}) == "channel_chain"
    assert await field({**base, "template_id": 999}) == "template_id"
    assert await field({**base, "event_type": "Payment"}) == "event_type"
    assert (
        await field({**base, "conditions": [{"path": "a;drop", "op": "eq", "value": 1}]})
        == "conditions[0].path"
    )
    assert (
        await field({**base, "conditions": [{"path": "a", "op": "in", "value": 1}]})
        == "conditions[0].value"
    )
    assert (
        await field({**base, "conditions": [{"path": "a", "op": "like", "value": 1}]})
        == "conditions[0].op"
    )
    assert (
        await field(
            {**base, "client_conditions": [{"attribute": "region", "op": "gt", "value": "UA-32"}]}
        )
        == "client_conditions[0].op"
    )
    assert (
        await field(
            {**base, "client_conditions": [{"attribute": "debt", "op": "gt", "value": "lots"}]}
        )
        == "client_conditions[0].value"
    )
    assert await field({**base, "max_messages": 2}) == "max_messages"
    # A marketer may manage rules, an operator may not even read them
    from conftest import login_as

    operator = await login_as(stack.api, "operator_cc")
    response = await stack.api.get("/api/v1/trigger-rules", headers=operator)
    assert response.status == 403


async def test_contact_policy_refuses_with_a_recorded_reason(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 2)
    _, key = await producer(stack)
    await rule(stack, name="не більше двох", max_messages=2, period_seconds=3600)
    await rule(stack, name="раз на годину", event_type="debt.created", min_interval_seconds=3600)
    # Given three payments of one client, in two posts
    first = await post(stack, key, [event("p1", ids[0]), event("p2", ids[0])])
    second = await post(stack, key, [event("p3", ids[0]), event("p4", ids[1])])
    # Then two messages went to that client and the third was refused by the policy
    assert [len(r["messages"]) for r in first["results"]] == [1, 1]
    assert second["results"][0]["refused"] == ["contact_policy:max_messages"]
    assert len(second["results"][1]["messages"]) == 1  # another client is not affected
    # And two debt events within the minimum interval: the second is refused
    debts = await post(
        stack,
        key,
        [event("d1", ids[1], type="debt.created"), event("d2", ids[1], type="debt.created")],
    )
    assert [r["refused"] for r in debts["results"]] == [[], ["contact_policy:min_interval"]]
    refused = await stack.conn.fetch(
        "SELECT client_id, reason FROM message_events WHERE status = 'skipped' ORDER BY reason"
    )
    assert [(r["client_id"], r["reason"]) for r in refused] == [
        (ids[0], "contact_policy:max_messages"),
        (ids[1], "contact_policy:min_interval"),
    ]
    # Concurrent posts cannot both take the last allowed message
    results = await asyncio.gather(*(post(stack, key, [event(f"c{i}", ids[1])]) for i in range(4)))
    made = sum(len(r["results"][0]["messages"]) for r in results)
    assert made == 1  # ids[1] had one payment message already; the limit is two
    await eventually(lambda: _sms_accepted(stack, 5))
    assert (await stack.sim_stats("sms"))["duplicates"] == 0


async def _sms_accepted(stack: Stack, n: int) -> bool:
    return (await stack.sim_stats("sms"))["accepted"] == n


async def test_delayed_message_waits_then_the_scheduler_sends_it(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 1)
    _, key = await producer(stack)
    await rule(stack, delay_seconds=3)
    result = await post(stack, key, [event("late", ids[0])])
    message_id = result["results"][0]["messages"][0]
    # Right after the post it is queued with a due time, not handed to the queue
    row = await stack.conn.fetchrow(
        "SELECT due_at > herald_now() AS later, published_at FROM realtime_messages"
    )
    assert row["later"] and row["published_at"] is None
    queued = await message(stack, message_id)
    assert (queued["status"], queued["events"][0]["reason"]) == ("queued", "delayed")
    # Then the scheduler publishes it when due and it is delivered
    await status_is(stack, message_id, "delivered", "read")
    sent_at = await stack.conn.fetchval("SELECT min(at) FROM message_events WHERE status = 'sent'")
    created = await stack.conn.fetchval("SELECT created_at FROM realtime_messages")
    assert sent_at - created >= dt.timedelta(seconds=3)


async def test_a_receipt_that_overtakes_its_sent_still_decides_the_status(
    admin_conn: asyncpg.Connection,
) -> None:
    # Given a message whose receipts were recorded before the worker committed the 'sent'
    # they answer (the worker writes a unit's outcomes after all its provider calls)
    template = await admin_conn.fetchval(
        "INSERT INTO message_templates (name, topic) VALUES ('Оплата', 'debt') RETURNING id"
    )
    await admin_conn.execute(
        "INSERT INTO message_template_versions (template_id, version, variants) "
        "VALUES ($1, 1, '{}')",
        template,
    )
    unit = await admin_conn.fetchval(
        "INSERT INTO realtime_messages (kind, client_id, template_id, template_version, "
        "channel_chain) VALUES ('trigger', 7, $1, 1, '{viber,sms}') RETURNING id",
        template,
    )
    at = dt.datetime(2026, 11, 22, 8, tzinfo=dt.UTC)
    rows = [
        (0, "viber", "queued", 0),
        (0, "viber", "delivered", 1),
        (0, "viber", "sent", 2),
    ]

    async def record(rows: list[tuple[int, str, str, int]]) -> None:
        await admin_conn.executemany(
            "INSERT INTO message_events (message_id, client_id, step, channel, status, at) "
            "VALUES ($1, 7, $2, $3, $4, $5)",
            [(f"t{unit}:7:{s}", s, c, st, at + dt.timedelta(seconds=k)) for s, c, st, k in rows],
        )

    await record(rows)
    # Then the receipt is the status, and the history is in the order of the message's life
    found = await operator_send.message_status(admin_conn, f"t{unit}:7:0")
    assert (found.status, found.channel) == ("delivered", "viber")
    assert [e.status for e in found.events] == ["queued", "sent", "delivered"]
    # And a failed receipt that overtook its 'sent' comes after it, before the fallback
    await admin_conn.execute("DELETE FROM message_events")
    await record(
        [
            (0, "viber", "queued", 0),
            (0, "viber", "failed", 1),
            (0, "viber", "sent", 2),
            (1, "sms", "sent", 3),
        ]
    )
    found = await operator_send.message_status(admin_conn, f"t{unit}:7:0")
    assert (found.status, found.channel) == ("sent", "sms")
    assert [(e.channel, e.status) for e in found.events] == [
        ("viber", "queued"),
        ("viber", "sent"),
        ("viber", "failed"),
        ("sms", "sent"),
    ]


async def test_triggered_message_falls_back_down_the_chain(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 2)
    _, key = await producer(stack)
    await rule(stack, channel_chain=["viber", "sms"])
    # Given one client not on Viber (refused at hand-off)
    await stack.configure("viber", unknown_addresses=[f"+38050{ids[0]:07d}"])
    result = await post(stack, key, [event("a", ids[0]), event("b", ids[1])])
    first, second = (r["messages"][0] for r in result["results"])
    # Then the first got an SMS at once, the second a Viber message
    assert (await status_is(stack, first, "delivered", "read"))["channel"] == "sms"
    assert (await status_is(stack, second, "delivered", "read"))["channel"] == "viber"
    # When Viber's receipts say failed from now on
    await stack.configure("viber", failed_share=1.0)
    later = await post(stack, key, [event("c", ids[1])])
    third = later["results"][0]["messages"][0]
    await status_is(stack, third, "delivered", "read")

    def steps(found: dict[str, Any]) -> list[tuple[str, str]]:
        return [
            (e["channel"], e["status"])
            for e in found["events"]
            if e["status"] in ("sent", "failed")
        ][:3]

    async def all_recorded() -> dict[str, Any] | None:
        # The status can be read before the outcome writer has recorded every event
        found = await message(stack, third)
        return found if len(steps(found)) == 3 else None

    # Then the failed receipt moved it on to SMS
    done = await eventually(all_recorded)
    assert steps(done) == [("viber", "sent"), ("viber", "failed"), ("sms", "sent")]
    assert (await stack.sim_stats("viber"))["duplicates"] == 0
    stats = await stack.call("GET", "/api/v1/realtime-messages/stats")
    assert stats["counters"]["failed:viber"] == 2
