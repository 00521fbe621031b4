"""The client timeline (CM-07): sources merged newest first, keyset pages, filters, updates."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from conftest import login_as
from dispatch_helpers import counter, make_clients

from crm import meters, timeline
from herald import clock
from herald.audit import Actor

UTC = dt.UTC
T0 = clock.now().replace(microsecond=0) - dt.timedelta(days=2)


def t(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


async def _campaign(conn: asyncpg.Connection, name: str) -> int:
    template = await conn.fetchval(
        "INSERT INTO message_templates (name, topic) VALUES ('Борг', 'debt') RETURNING id"
    )
    await conn.execute(
        "INSERT INTO message_template_versions (template_id, version, variants) "
        "VALUES ($1, 1, '{}')",
        template,
    )
    return int(
        await conn.fetchval(
            "INSERT INTO campaigns (name, template_id, template_version, audience) "
            'VALUES ($1, $2, 1, \'{"kind": "clients", "client_ids": [1]}\') RETURNING id',
            name,
            template,
        )
    )


async def _message_events(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Rows of message_events as the dispatcher writes them (several per message)."""
    await conn.executemany(
        "INSERT INTO message_events (message_id, campaign_id, client_id, step, channel, status, "
        "reason, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        rows,
    )


async def _billing(
    conn: asyncpg.Connection,
    account_id: int,
    charges: list[dict[str, Any]],
    payments: list[dict[str, Any]],
) -> None:
    # The billing helper's migration 0009 adds these columns; add them if it has not landed.
    await conn.execute(
        "ALTER TABLE billing_snapshots ADD COLUMN IF NOT EXISTS charges jsonb, "
        "ADD COLUMN IF NOT EXISTS payments jsonb"
    )
    await conn.execute(
        "UPDATE billing_snapshots SET charges = $2, payments = $3 WHERE account_id = $1",
        account_id,
        charges,
        payments,
    )


async def _every_source(admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection) -> int:
    """Client 1 with one item or more of every source at known times; returns the campaign id."""
    await make_clients(app_conn, 2)
    campaign = await _campaign(admin_conn, "Нагадування про борг, травень")
    await _message_events(
        app_conn,
        [
            ("c1:1:0", campaign, 1, 0, "viber", "sent", None, t(10)),
            ("c1:1:0", campaign, 1, 0, "viber", "failed", "not_viber_user", t(11)),
            ("c1:1:1", campaign, 1, 1, "sms", "sent", None, t(12)),
            ("c1:1:1", campaign, 1, 1, "sms", "delivered", None, t(13)),
            ("c1:1:1", campaign, 1, 1, "sms", "converted", None, t(300)),
            ("op:77", None, 1, 0, "sms", "sent", None, t(40)),
            ("op:77", None, 1, 0, "sms", "delivered", None, t(40)),  # one COPY: the same clock
            ("c1:2:0", campaign, 2, 0, "sms", "sent", None, t(15)),  # another client's
        ],
    )
    await timeline.record_event(
        app_conn,
        client_id=1,
        kind="call",
        at=t(20),
        title="Вхідний дзвінок",
        status="completed",
        channel="call",
        direction="in",
        ref_type="call",
        ref_id="9001",
        detail={"recording_url": "https://pbx/rec/9001.mp3", "transcript": "Добрий день..."},
    )
    await timeline.record_event(app_conn, client_id=2, kind="call", at=t(21), title="Чужий дзвінок")
    await app_conn.execute(
        "INSERT INTO meters (id, account_id, serial_number, model, size_class, installed_at) "
        "VALUES (1, 1, 'SN-1', 'm', 'G4', '2020-01-01'), (2, 2, 'SN-2', 'm', 'G4', '2020-01-01')"
    )
    await app_conn.execute(
        "INSERT INTO meter_readings (meter_id, read_on, value, source, at) VALUES "
        "(1, $1, 100, 'cabinet', $2), (2, $1, 5, 'app', $3)",
        t(30).date(),
        t(30),
        t(31),
    )
    await _billing(
        admin_conn,
        1,
        [
            {
                "id": "ch-5",
                "period": "2025-05-01",
                "volume_m3": "12.5",
                "amount": "99.50",
                "posted_at": t(5).isoformat(),
            },
            {"id": "ch-bad", "period": "2025-04-01", "amount": "1", "posted_at": "not a date"},
        ],
        [{"id": "p-1", "paid_at": t(50).isoformat(), "amount": "200.00", "method": "card"}],
    )
    return campaign


async def test_sources_merge_newest_first(
    client, demo_users, admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection
) -> None:
    await _every_source(admin_conn, app_conn)
    headers = await login_as(client, "operator_cc")
    response = await client.get("/api/v1/clients/1/timeline", headers=headers)
    assert response.status == 200, await response.text()
    page = await response.json()
    got = [(i["source"], i["kind"], i["status"], i["channel"]) for i in page["items"]]
    assert got == [
        ("payment", "payment", None, None),
        ("message", "message", "delivered", "sms"),  # op:77, sent and delivered at once
        ("reading", "reading", None, "cabinet"),
        ("event", "call", "completed", "call"),
        ("message", "message", "delivered", "sms"),  # c1:1:1: converted is not a status
        ("message", "message", "failed", "viber"),  # c1:1:0
        ("charge", "charge", None, None),
    ]
    assert page["next_cursor"] is None
    by_source = {i["source"]: i for i in page["items"]}
    assert by_source["event"]["detail"]["recording_url"] == "https://pbx/rec/9001.mp3"
    assert by_source["event"]["detail"]["transcript"] == "Добрий день..."
    failed = page["items"][5]
    assert failed["detail"]["reason"] == "not_viber_user"
    assert failed["detail"]["campaign_name"] == "Нагадування про борг, травень"
    assert failed["detail"]["topic"] == "debt"
    assert "Нагадування про борг" in failed["title"]
    assert dt.datetime.fromisoformat(failed["at"]) == t(10)
    assert by_source["charge"]["detail"]["amount"] == "99.50"
    assert by_source["payment"]["detail"]["method"] == "card"
    assert by_source["reading"]["detail"]["value"] == "100.000"


async def test_pages_have_no_gaps_or_repeats(
    client, demo_users, admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection
) -> None:
    await _every_source(admin_conn, app_conn)
    # Many items sharing one instant across sources: the cursor must order ties itself
    same = t(100)
    for n in range(5):
        await timeline.record_event(
            app_conn, client_id=1, kind="chat", at=same, title=f"Чат {n}", channel="chatbot"
        )
    await _message_events(
        app_conn, [(f"tie:{n}", None, 1, 0, "email", "sent", None, same) for n in range(4)]
    )
    await app_conn.execute(
        "INSERT INTO meter_readings (meter_id, read_on, value, source, at) "
        "SELECT 1, $1::date - n, 100 - n, 'operator', $2 FROM generate_series(1, 3) n",
        same.date(),
        same,
    )
    headers = await login_as(client, "analyst")
    whole = await (await client.get("/api/v1/clients/1/timeline?limit=200", headers=headers)).json()
    assert len(whole["items"]) == 7 + 5 + 4 + 3
    for limit in (1, 2, 3, 5):
        seen: list[tuple[str, str]] = []
        cursor = None
        while True:
            url = f"/api/v1/clients/1/timeline?limit={limit}" + (
                f"&cursor={cursor}" if cursor else ""
            )
            page = await (await client.get(url, headers=headers)).json()
            assert len(page["items"]) <= limit
            seen += [(i["source"], i["id"]) for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [(i["source"], i["id"]) for i in whole["items"]], limit
    stamps = [dt.datetime.fromisoformat(i["at"]) for i in whole["items"]]
    assert stamps == sorted(stamps, reverse=True)


async def test_filters_by_kind_channel_and_period(
    client, demo_users, admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection
) -> None:
    await _every_source(admin_conn, app_conn)
    headers = await login_as(client, "operator_cos")

    async def sources(query: str) -> list[tuple[str, str]]:
        response = await client.get(f"/api/v1/clients/1/timeline?{query}", headers=headers)
        assert response.status == 200, await response.text()
        return [(i["source"], i["kind"]) for i in (await response.json())["items"]]

    assert await sources("kinds=message") == [("message", "message")] * 3
    assert await sources("kinds=call,reading") == [("reading", "reading"), ("event", "call")]
    assert await sources("kinds=charge,payment") == [("payment", "payment"), ("charge", "charge")]
    assert await sources("channel=sms") == [("message", "message")] * 2
    assert await sources("channel=cabinet") == [("reading", "reading")]
    since, until = t(11).isoformat().replace("+", "%2B"), t(40).isoformat().replace("+", "%2B")
    assert await sources(f"since={since}&until={until}") == [
        ("reading", "reading"),
        ("event", "call"),
        ("message", "message"),
    ]
    assert await sources("kinds=case") == []


async def test_bad_queries_and_access(client, demo_users, app_conn: asyncpg.Connection) -> None:
    await make_clients(app_conn, 1)
    headers = await login_as(client, "operator_cc")
    for query, field in [
        ("cursor=abc", "cursor"),
        ("cursor=WzEsMiwzXQ", "cursor"),
        ("kinds=Call", "kinds"),
        ("limit=0", "limit"),
        ("limit=500", "limit"),
        ("since=2025-01-01T00:00:00", "since"),
        ("since=2025-02-01T00:00:00Z&until=2025-01-01T00:00:00Z", "until"),
        ("colour=red", "colour"),
    ]:
        response = await client.get(f"/api/v1/clients/1/timeline?{query}", headers=headers)
        assert response.status == 400, query
        assert (await response.json())["errors"][0]["field"] == field, query
    assert (await client.get("/api/v1/clients/404/timeline", headers=headers)).status == 404
    marketer = await login_as(client, "marketer")
    assert (await client.get("/api/v1/clients/1/timeline", headers=marketer)).status == 403


async def test_record_event_updates_the_item_of_the_same_object(
    app_conn: asyncpg.Connection,
) -> None:
    await make_clients(app_conn, 2)
    await timeline.record_event(
        app_conn,
        client_id=1,
        kind="call",
        at=t(0),
        title="Дзвінок",
        status="ringing",
        channel="call",
        direction="in",
        ref_type="call",
        ref_id="42",
        detail={"agent": "operator.cc"},
    )
    await timeline.record_event(
        app_conn,
        client_id=1,
        kind="call",
        at=t(3),
        title="Дзвінок завершено",
        status="completed",
        ref_type="call",
        ref_id="42",
        detail={"recording_url": "https://pbx/42.mp3", "talk_time": 95},
    )
    await timeline.record_event(
        app_conn,
        client_id=1,
        kind="case",
        at=t(1),
        title="Звернення",
        status="new",
        ref_type="call",
        ref_id="42",
    )
    page = await timeline.client_timeline(app_conn, 1, limit=10)
    calls = [i for i in page.items if i.kind == "call"]
    assert len(calls) == 1 and len(page.items) == 2
    call = calls[0]
    assert (call.title, call.status, call.channel, call.direction, call.at) == (
        "Дзвінок завершено",
        "completed",
        "call",
        "in",
        t(0),
    )
    assert call.detail == {
        "agent": "operator.cc",
        "recording_url": "https://pbx/42.mp3",
        "talk_time": 95,
        "ref_type": "call",
        "ref_id": "42",
    }
    with pytest.raises(Exception, match="own source"):
        await timeline.record_event(app_conn, client_id=1, kind="message", at=t(0), title="x")
    # A bulk repost of the same objects is recognised, not duplicated
    again = await timeline.append_new(
        app_conn,
        [
            timeline.NewEvent(1, "call", t(5), "x", ref_type="call", ref_id="42"),
            timeline.NewEvent(2, "call", t(5), "y", ref_type="call", ref_id="42"),
            timeline.NewEvent(2, "call", t(5), "y", ref_type="call", ref_id="42"),
            timeline.NewEvent(
                2, "note", t(6), "z", detail={"sum": Decimal("1.50"), "on": dt.date(2025, 1, 2)}
            ),
        ],
    )
    assert again == [False, True, False, True]
    assert await app_conn.fetchval("SELECT count(*) FROM timeline_events") == 4
    note = await app_conn.fetchval("SELECT detail FROM timeline_events WHERE kind = 'note'")
    assert note == {"sum": "1.50", "on": "2025-01-02"}


async def test_readings_entered_through_the_api_reach_the_timeline(
    client, demo_users, app_conn: asyncpg.Connection
) -> None:
    await make_clients(app_conn, 1)
    await app_conn.execute(
        "INSERT INTO meters (id, account_id, serial_number, model, size_class, "
        "installed_at) VALUES (1, 1, 'SN-7', 'm', 'G4', '2020-01-01')"
    )
    await meters.enter_reading(
        app_conn,
        Actor("operator.cc", 1),
        1,
        value=Decimal("12.5"),
        read_on=meters.today_in_kyiv(),
        source="operator",
    )
    await meters.record_billing_readings(
        app_conn,
        1,
        [{"meter_serial": "SN-7", "value": Decimal("10"), "read_on": dt.date(2025, 1, 31)}],
    )
    headers = await login_as(client, "operator_cc")
    page = await (
        await client.get("/api/v1/clients/1/timeline?kinds=reading", headers=headers)
    ).json()
    assert [(i["channel"], i["detail"]["value"], i["direction"]) for i in page["items"]] == [
        ("operator", "12.500", "in"),
        ("gdo", "10.000", "out"),
    ]
    # A GDO reading from billing is placed at its read date (midnight in Kyiv)
    assert dt.datetime.fromisoformat(page["items"][1]["at"]) == dt.datetime(
        2025, 1, 31, tzinfo=clock.business_tz()
    )


@pytest.mark.timeout(300)
async def test_a_receipt_recorded_before_its_sent_still_is_the_status(
    app_conn: asyncpg.Connection,
) -> None:
    # Given a receipt that overtook the worker's commit of the 'sent' it answers
    await make_clients(app_conn, 1)
    await _message_events(
        app_conn,
        [
            ("t1:1:0", None, 1, 0, "viber", "queued", None, t(0)),
            ("t1:1:0", None, 1, 0, "viber", "delivered", None, t(1)),
            ("t1:1:0", None, 1, 0, "viber", "sent", None, t(2)),
        ],
    )
    # Then the message is delivered, not sent
    page = await timeline.client_timeline(app_conn, 1, limit=10)
    [item] = [i for i in page.items if i.kind == "message"]
    assert (item.status, item.channel) == ("delivered", "viber")


async def test_a_dispatched_message_appears_with_its_latest_status(stack) -> None:
    # Given a client and a one-recipient SMS campaign run by the real worker and simulator
    await make_clients(stack.conn, 1)
    campaign_id = await stack.campaign([1], chain=("sms",), name="Борг за газ: травень")
    await stack.launch(campaign_id)
    await stack.wait(lambda s: counter(s, "delivered") + counter(s, "read") == 1, campaign_id)

    # Then the client's feed shows one item for the message, with its latest status
    page = await stack.call("GET", "/api/v1/clients/1/timeline?kinds=message")
    assert len(page["items"]) == 1, page
    item = page["items"][0]
    assert item["status"] in ("delivered", "read") and item["channel"] == "sms"
    assert item["detail"]["campaign_id"] == campaign_id
    assert item["detail"]["campaign_name"] == "Борг за газ: травень"
    events = await stack.conn.fetch("SELECT status FROM message_events WHERE client_id = 1")
    assert len(events) >= 2  # sent, then the receipt: collapsed into the one item above
