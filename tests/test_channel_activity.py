"""Digital-channel intake (issue 4, point 9), shop orders, customer experience, applications."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
from conftest import login_as
from dispatch_helpers import make_clients

from crm import activity
from herald import clock

UTC = dt.UTC
NOW = clock.now().replace(microsecond=0)


def ago(minutes: int) -> str:
    return (NOW - dt.timedelta(minutes=minutes)).isoformat()


def event(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "channel": "cabinet",
        "type": "login",
        "at": ago(100 - n),
        "external_id": f"ok-{n}",
        "client_id": 1,
        **fields,
    }


async def _timeline(client, headers, client_id: int, kinds: str) -> list[dict[str, Any]]:
    response = await client.get(
        f"/api/v1/clients/{client_id}/timeline?kinds={kinds}", headers=headers
    )
    assert response.status == 200, await response.text()
    return (await response.json())["items"]


async def test_channel_events_count_once_and_fill_the_usage_block(
    client, demo_users, app_conn: asyncpg.Connection
) -> None:
    await make_clients(app_conn, 2)
    system = await login_as(client, "integration")
    operator = await login_as(client, "operator_cc")
    batch = [
        event(0),
        event(1, type="payment_viewed"),
        event(2, channel="app", external_id="a-1", client_id=None, or_number="0000000001"),
        event(3, channel="chatbot", type="chat", external_id="c-1", detail={"topic": "борг"}),
        event(4, client_id=2),
    ]

    first = await client.post("/api/v1/channel-events", headers=system, json=batch)
    assert first.status == 200, await first.text()
    assert await first.json() == {"accepted": 5, "duplicates": 0, "errors": []}
    # A repost (the cabinet retried) and one single new event
    again = await client.post("/api/v1/channel-events", headers=system, json=batch[:2])
    assert await again.json() == {"accepted": 0, "duplicates": 2, "errors": []}
    single = await client.post(
        "/api/v1/channel-events",
        headers=system,
        json=event(9, type="reading_submitted", external_id="ok-9"),
    )
    assert await single.json() == {"accepted": 1, "duplicates": 0, "errors": []}

    block = await (await client.get("/api/v1/clients/1/digital-channels", headers=operator)).json()
    usage = {c["channel"]: c for c in block["channels"]}
    assert list(usage) == ["cabinet", "app", "shop", "chatbot"]
    assert usage["cabinet"]["used"] is True and usage["cabinet"]["interactions"] == 3
    assert dt.datetime.fromisoformat(usage["cabinet"]["first_at"]) == NOW - dt.timedelta(
        minutes=100
    )
    assert dt.datetime.fromisoformat(usage["cabinet"]["last_at"]) == NOW - dt.timedelta(minutes=91)
    assert usage["cabinet"]["last_type"] == "reading_submitted"
    assert usage["app"]["interactions"] == 1 and usage["chatbot"]["interactions"] == 1
    assert usage["shop"] == {
        "channel": "shop",
        "used": False,
        "first_at": None,
        "last_at": None,
        "interactions": 0,
        "last_type": None,
    }
    # An older event arriving late moves first_at, not last_type
    late = await client.post(
        "/api/v1/channel-events",
        headers=system,
        json=event(0, external_id="ok-old", at=ago(1000), type="logout"),
    )
    assert (await late.json())["accepted"] == 1
    usage = {c.channel: c for c in await activity.channel_usage(app_conn, 1)}
    assert usage["cabinet"].interactions == 4 and usage["cabinet"].last_type == "reading_submitted"
    assert usage["cabinet"].first_at == NOW - dt.timedelta(minutes=1000)

    items = await _timeline(client, operator, 1, "channel,chat")
    assert len(items) == 6
    assert [i["channel"] for i in items[:2]] == ["cabinet", "chatbot"]
    assert items[1]["kind"] == "chat" and items[1]["detail"]["topic"] == "борг"
    assert await app_conn.fetchval("SELECT count(*) FROM timeline_events WHERE client_id = 2") == 1


async def test_a_batch_stores_the_good_items_and_lists_the_bad(
    client, demo_users, app_conn: asyncpg.Connection
) -> None:
    await make_clients(app_conn, 2)
    system = await login_as(client, "integration")
    batch = [
        event(0),
        event(1, client_id=404),  # unknown client
        event(2, client_id=None, or_number="9999999999"),  # unknown account
        event(3, client_id=2, or_number="0000000001"),  # account of another client
        event(4, at=(NOW + dt.timedelta(hours=1)).isoformat()),  # in the future
        {k: v for k, v in event(5).items() if k != "channel"},  # missing field
        event(6, channel="fax"),  # wrong value
        event(7, client_id=None),  # no client at all
        event(8, at="2025-01-01T10:00:00"),  # no time zone
        event(9),
    ]
    response = await client.post("/api/v1/channel-events", headers=system, json=batch)
    assert response.status == 200, await response.text()
    result = await response.json()
    assert result["accepted"] == 2 and result["duplicates"] == 0
    assert [(e["index"], e["field"]) for e in result["errors"]] == [
        (1, "client_id"),
        (2, "or_number"),
        (3, "or_number"),
        (4, "at"),
        (5, "channel"),
        (6, "channel"),
        (7, "client_id"),
        (8, "at"),
    ]
    assert all(e["message"] for e in result["errors"])
    assert await app_conn.fetchval("SELECT count(*) FROM timeline_events") == 2

    # One item alone that is bad: a plain 400 naming the field
    for body, field in [
        (event(1, client_id=404), "client_id"),
        (event(6, channel="fax"), "channel"),
        ({"channel": "app"}, "type"),
    ]:
        response = await client.post("/api/v1/channel-events", headers=system, json=body)
        assert response.status == 400, body
        assert (await response.json())["errors"][0]["field"] == field
    too_many = await client.post(
        "/api/v1/channel-events",
        headers=system,
        json=[event(n, external_id=f"x{n}") for n in range(1001)],
    )
    assert too_many.status == 400
    assert (await client.post("/api/v1/channel-events", headers=system, json=[])).status == 400
    operator = await login_as(client, "operator_cc")
    assert (
        await client.post("/api/v1/channel-events", headers=operator, json=event(0))
    ).status == 403


async def test_shop_orders_upserted_current_and_past(
    client, demo_users, app_conn: asyncpg.Connection
) -> None:
    await make_clients(app_conn, 2)
    system = await login_as(client, "integration")
    operator = await login_as(client, "operator_cos")
    order = {
        "client_id": 1,
        "status": "new",
        "total": "4599.00",
        "ordered_at": ago(60),
        "items": [
            {"name": "Газовий котел Vaillant", "quantity": 1, "price": "4599.00", "sku": "VL-100"}
        ],
    }
    created = await client.put("/api/v1/shop-orders/TG-1001", headers=system, json=order)
    assert created.status == 201, await created.text()
    assert (await created.json())["is_final"] is False
    other = {
        **order,
        "client_id": None,
        "or_number": "0000000001",
        "status": "paid",
        "total": 120,
        "items": [{"name": "Фільтр", "quantity": 2, "price": 60}],
    }
    assert (
        await client.put("/api/v1/shop-orders/TG-1002", headers=system, json=other)
    ).status == 201
    updated = await client.put(
        "/api/v1/shop-orders/TG-1001", headers=system, json={**order, "status": "delivered"}
    )
    assert updated.status == 200 and (await updated.json())["is_final"] is True

    block = await (await client.get("/api/v1/clients/1/digital-channels", headers=operator)).json()
    assert [o["source_id"] for o in block["shop_orders"]["current"]] == ["TG-1002"]
    assert [(o["source_id"], o["status"]) for o in block["shop_orders"]["past"]] == [
        ("TG-1001", "delivered")
    ]
    assert block["shop_orders"]["past"][0]["items"][0]["sku"] == "VL-100"
    items = await _timeline(client, operator, 1, "shop_order")
    assert sorted((i["detail"]["ref_id"], i["status"]) for i in items) == [
        ("TG-1001", "delivered"),
        ("TG-1002", "paid"),
    ]

    # The order of one client cannot move to another; bad input names the field
    moved = await client.put(
        "/api/v1/shop-orders/TG-1001", headers=system, json={**order, "client_id": 2}
    )
    assert moved.status == 409
    for body, field in [
        ({**order, "client_id": 404}, "client_id"),
        ({**order, "total": "-1"}, "total"),
        ({**order, "status": "lost"}, "status"),
        ({**order, "ordered_at": (NOW + dt.timedelta(days=1)).isoformat()}, "ordered_at"),
        ({**order, "items": [{"name": "x", "quantity": 0, "price": 1}]}, "items[0].quantity"),
    ]:
        response = await client.put("/api/v1/shop-orders/TG-2", headers=system, json=body)
        assert response.status == 400, body
        assert (await response.json())["errors"][0]["field"] == field
    long_id = "x" * 101
    assert (
        await client.put(f"/api/v1/shop-orders/{long_id}", headers=system, json=order)
    ).status == 400


async def test_customer_experience_block(client, demo_users, app_conn: asyncpg.Connection) -> None:
    await make_clients(app_conn, 1)
    system = await login_as(client, "integration")
    operator = await login_as(client, "operator_cc")
    batch = [
        {
            "kind": "survey",
            "external_id": "s-1",
            "at": ago(50),
            "client_id": 1,
            "score": 4,
            "topic": "Якість обслуговування",
            "comment": "Швидко",
            "answers": [{"question": "Чи вирішено питання?", "answer": "Так"}],
        },
        {
            "kind": "outbound_call",
            "external_id": "v-1",
            "at": ago(40),
            "or_number": "0000000001",
            "result": "answered",
            "topic": "Борг",
            "answers": [{"question": "Коли сплатите?", "answer": "До 10 числа"}],
        },
        {"kind": "survey", "external_id": "s-2", "at": ago(30), "client_id": 1, "score": 9},
        {
            "kind": "outbound_call",
            "external_id": "v-2",
            "at": ago(20),
            "client_id": 1,
            "result": "teleported",
        },
        {"kind": "complaint", "external_id": "z", "at": ago(20), "client_id": 1},
    ]
    response = await client.post("/api/v1/cx-events", headers=system, json=batch)
    result = await response.json()
    assert (result["accepted"], result["duplicates"]) == (2, 0), result
    assert [(e["index"], e["field"]) for e in result["errors"]] == [
        (2, "score"),
        (3, "result"),
        (4, "kind"),
    ]
    again = await client.post("/api/v1/cx-events", headers=system, json=batch[0])
    assert await again.json() == {"accepted": 0, "duplicates": 1, "errors": []}
    await app_conn.execute(
        "INSERT INTO consents (client_id, channel, topic, opted_in, source) VALUES "
        "(1, 'sms', 'marketing', false, 'sms_stop'), (1, 'email', 'debt', true, 'cabinet')"
    )

    cx = await (await client.get("/api/v1/clients/1/customer-experience", headers=operator)).json()
    assert [(s["score"], s["scale_max"], s["comment"]) for s in cx["surveys"]] == [(4, 5, "Швидко")]
    assert cx["surveys"][0]["answers"] == [{"question": "Чи вирішено питання?", "answer": "Так"}]
    assert [(c["result"], c["topic"]) for c in cx["outbound_calls"]] == [("answered", "Борг")]
    assert cx["outbound_calls"][0]["answers"][0]["answer"] == "До 10 числа"
    assert [(o["channel"], o["topic"], o["source"]) for o in cx["opt_outs"]] == [
        ("sms", "marketing", "sms_stop")
    ]
    items = await _timeline(client, operator, 1, "survey,outbound_call")
    assert [(i["kind"], i["status"]) for i in items] == [
        ("outbound_call", "answered"),
        ("survey", None),
    ]
    assert "4 з 5" in items[1]["title"]
    assert (
        await client.get("/api/v1/clients/9/customer-experience", headers=operator)
    ).status == 404


async def test_applications_land_on_the_timeline_and_in_the_journal(
    client, demo_users, app_conn: asyncpg.Connection
) -> None:
    await make_clients(app_conn, 2)
    operator = await login_as(client, "operator_cc")
    admin = await login_as(client, "admin")
    response = await client.post(
        "/api/v1/clients/1/applications",
        headers=operator,
        json={
            "kind": "owner_change",
            "channel": "visit",
            "account_id": 1,
            "description": "Зміна власника після купівлі квартири",
        },
    )
    assert response.status == 201, await response.text()
    app_id = (await response.json())["id"]
    assert (
        await client.post(
            "/api/v1/clients/1/applications",
            headers=operator,
            json={"kind": "data_update", "channel": "call"},
        )
    ).status == 201
    changed = await client.post(
        f"/api/v1/applications/{app_id}/status", headers=operator, json={"status": "completed"}
    )
    assert (await changed.json())["status"] == "completed"

    listed = await (
        await client.get("/api/v1/clients/1/applications?limit=1", headers=operator)
    ).json()
    assert len(listed["items"]) == 1 and listed["next_before_id"] is not None
    rest = await (
        await client.get(
            f"/api/v1/clients/1/applications?before_id={listed['next_before_id']}", headers=operator
        )
    ).json()
    assert [a["id"] for a in rest["items"]] == [app_id]
    items = await _timeline(client, operator, 1, "application")
    assert [(i["status"], i["channel"]) for i in items] == [
        ("registered", "call"),
        ("completed", "visit"),
    ]
    assert "зміна власника" in items[1]["title"]
    history = await (await client.get(f"/api/v1/audit/application/{app_id}", headers=admin)).json()
    assert {
        (e["action"], e["field"], e["new_value"] if e["field"] else None) for e in history["items"]
    } == {("create", None, None), ("update", "status", "completed")}

    for body, field in [
        ({"kind": "data_update", "channel": "call", "account_id": 2}, "account_id"),
        ({"kind": "wish", "channel": "call"}, "kind"),
        ({"kind": "other", "channel": "pigeon"}, "channel"),
    ]:
        response = await client.post("/api/v1/clients/1/applications", headers=operator, json=body)
        assert response.status == 400
        assert (await response.json())["errors"][0]["field"] == field
    assert (
        await client.post(
            "/api/v1/clients/99/applications",
            headers=operator,
            json={"kind": "other", "channel": "call"},
        )
    ).status == 404
    assert (
        await client.post(
            "/api/v1/applications/999/status", headers=operator, json={"status": "completed"}
        )
    ).status == 404
    analyst = await login_as(client, "analyst")
    assert (
        await client.post(
            "/api/v1/clients/1/applications",
            headers=analyst,
            json={"kind": "other", "channel": "call"},
        )
    ).status == 403
