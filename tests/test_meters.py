"""Meters and readings (issue 4, point 5): entry rules, sources, pagination, billing's GDO import."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import asyncpg
from conftest import login_as
from dispatch_helpers import make_clients

from crm import meters
from crm.meters import today_in_kyiv


def day(offset: int) -> str:
    # Kyiv's date now, not when the module was imported: a run may cross Kyiv's midnight
    # (22:00 UTC in winter), and a reading dated "tomorrow" is then today.
    return (today_in_kyiv() + dt.timedelta(days=offset)).isoformat()


async def _meter(client, headers, account_id: int = 1, serial: str = "SN-0001") -> int:
    response = await client.post(
        f"/api/v1/accounts/{account_id}/meters",
        headers=headers,
        json={
            "serial_number": serial,
            "model": "Самгаз G4 RS/2001",
            "size_class": "G4",
            "installed_at": "2021-03-01",
        },
    )
    assert response.status == 201, await response.text()
    return int((await response.json())["id"])


async def _read(client, headers, meter_id: int, value, read_on: str, **extra):
    return await client.post(
        f"/api/v1/meters/{meter_id}/readings",
        headers=headers,
        json={"value": value, "read_on": read_on, **extra},
    )


async def test_lower_reading_is_refused_unless_the_meter_was_replaced(
    client, demo_users, app_conn: asyncpg.Connection
) -> None:
    # Given a meter with a reading of 1250.5 m³
    await make_clients(app_conn, 1)
    operator = await login_as(client, "operator_cc")
    meter_id = await _meter(client, operator)
    assert (await _read(client, operator, meter_id, 1250.5, day(-30))).status == 201

    # When a lower value is entered, it is refused naming the field and the last value
    response = await _read(client, operator, meter_id, "1200", day(-1))
    assert response.status == 400
    problem = await response.json()
    assert problem["errors"][0]["field"] == "value"
    assert "1250.500" in problem["errors"][0]["message"]

    # A backdated value above a later reading is refused too
    response = await _read(client, operator, meter_id, 1300, day(-40))
    assert response.status == 400
    assert (await response.json())["errors"][0]["field"] == "value"

    # Marked as a meter replacement it is accepted, and becomes the latest reading
    response = await _read(client, operator, meter_id, "3.2", day(-1), is_replacement=True)
    assert response.status == 201, await response.text()
    assert (await _read(client, operator, meter_id, "2", day(0))).status == 400
    assert (await _read(client, operator, meter_id, "7.125", day(0))).status == 201
    meter = await (await client.get(f"/api/v1/meters/{meter_id}", headers=operator)).json()
    assert meter["latest_reading"]["value"] == "7.125"
    assert meter["latest_reading"]["read_on"] == day(0)


async def test_bad_readings_get_a_400_naming_the_field(
    client, demo_users, app_conn: asyncpg.Connection
) -> None:
    await make_clients(app_conn, 1)
    operator = await login_as(client, "operator_cc")
    meter_id = await _meter(client, operator)
    cases = [
        ({"value": 10, "read_on": day(1)}, "read_on"),
        ({"value": -1, "read_on": day(0)}, "value"),
        ({"value": "1.2345", "read_on": day(0)}, "value"),
        ({"value": "abc", "read_on": day(0)}, "value"),
        ({"value": 1, "read_on": "2024-02-30"}, "read_on"),
        ({"value": 1, "read_on": day(0), "source": "telepathy"}, "source"),
        ({"value": 1, "read_on": day(0), "colour": "red"}, "colour"),
        ({"read_on": day(0)}, "value"),
    ]
    for body, field in cases:
        response = await client.post(
            f"/api/v1/meters/{meter_id}/readings", headers=operator, json=body
        )
        assert response.status == 400, (body, await response.text())
        assert (await response.json())["errors"][0]["field"] == field, body
    assert (await _read(client, operator, 999, 1, day(0))).status == 404
    assert (await client.get("/api/v1/accounts/999/meters", headers=operator)).status == 404
    assert await app_conn.fetchval("SELECT count(*) FROM meter_readings") == 0


async def test_sources_need_their_permission_and_are_listed(
    client, demo_users, app_conn: asyncpg.Connection
) -> None:
    await make_clients(app_conn, 1)
    operator = await login_as(client, "operator_cc")
    system = await login_as(client, "integration")
    analyst = await login_as(client, "analyst")
    meter_id = await _meter(client, operator)

    # An operator may not pretend to be the cabinet; a system may not pretend to be an operator
    assert (await _read(client, operator, meter_id, 10, day(-3), source="cabinet")).status == 403
    assert (await _read(client, system, meter_id, 10, day(-3), source="operator")).status == 403
    assert (await _read(client, analyst, meter_id, 10, day(-3))).status == 403

    for n, source in enumerate(("cabinet", "app", "ivr", "chatbot")):
        response = await _read(client, system, meter_id, 10 + n, day(-4 + n), source=source)
        assert response.status == 201, await response.text()
    assert (await _read(client, operator, meter_id, 20, day(0))).status == 201

    # A repost of the same reading is recognised; another value for the same slot conflicts
    again = await _read(client, system, meter_id, 13, day(-1), source="chatbot")
    assert again.status == 200 and (await again.json())["created"] is False
    assert (await _read(client, system, meter_id, 14, day(-1), source="chatbot")).status == 409

    page = await (await client.get(f"/api/v1/meters/{meter_id}/readings", headers=analyst)).json()
    assert [(r["source"], r["value"], r["read_on"]) for r in page["items"]] == [
        ("operator", "20.000", day(0)),
        ("chatbot", "13.000", day(-1)),
        ("ivr", "12.000", day(-2)),
        ("app", "11.000", day(-3)),
        ("cabinet", "10.000", day(-4)),
    ]
    assert {r["entered_by_login"] for r in page["items"]} == {"operator.cc", "integration"}
    assert page["next_cursor"] is None


async def test_readings_are_paginated_without_gaps_or_repeats(
    client, demo_users, app_conn: asyncpg.Connection
) -> None:
    await make_clients(app_conn, 1)
    operator = await login_as(client, "supervisor")
    meter_id = await _meter(client, operator)
    for n in range(7):
        assert (await _read(client, operator, meter_id, 100 + n, day(-20 + n))).status == 201
    # Two sources on the same day: both listed, in a stable order
    system = await login_as(client, "integration")
    assert (await _read(client, system, meter_id, 106, day(-14), source="app")).status == 201

    seen, cursor, pages = [], None, 0
    while True:
        url = f"/api/v1/meters/{meter_id}/readings?limit=3" + (
            f"&cursor={cursor}" if cursor else ""
        )
        page = await (await client.get(url, headers=operator)).json()
        seen += [r["id"] for r in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 8
    rows = await app_conn.fetch("SELECT id FROM meter_readings ORDER BY read_on DESC, id DESC")
    assert seen == [r["id"] for r in rows]
    bad = await client.get(f"/api/v1/meters/{meter_id}/readings?cursor=%%%", headers=operator)
    assert bad.status == 400 and (await bad.json())["errors"][0]["field"] == "cursor"


async def test_manual_readings_and_meter_changes_are_journalled(
    client, demo_users, app_conn: asyncpg.Connection
) -> None:
    await make_clients(app_conn, 1)
    operator = await login_as(client, "operator_cos")
    admin = await login_as(client, "admin")
    meter_id = await _meter(client, operator)
    # The same serial cannot be active twice on one account
    duplicate = await client.post(
        "/api/v1/accounts/1/meters",
        headers=operator,
        json={
            "serial_number": "SN-0001",
            "model": "x",
            "size_class": "G4",
            "installed_at": "2021-03-01",
        },
    )
    assert duplicate.status == 409
    assert (await _read(client, operator, meter_id, "42.5", day(-2))).status == 201
    removed = await client.post(f"/api/v1/meters/{meter_id}/remove", headers=operator)
    assert (await removed.json())["status"] == "removed"
    assert (await _read(client, operator, meter_id, 43, day(0))).status == 409

    history = await (await client.get(f"/api/v1/audit/meter/{meter_id}", headers=admin)).json()
    entries = {(e["action"], e["field"]): e for e in history["items"]}
    assert set(entries) == {("create", None), ("add_reading", "reading"), ("update", "status")}
    reading = entries[("add_reading", "reading")]
    assert reading["actor_login"] == "operator.cos"
    assert reading["new_value"]["value"] == "42.5" and reading["new_value"]["source"] == "operator"
    assert entries[("update", "status")]["new_value"] == "removed"
    listed = await (await client.get("/api/v1/accounts/1/meters", headers=operator)).json()
    assert [
        (m["serial_number"], m["status"], m["latest_reading"]["value"]) for m in listed["items"]
    ] == [("SN-0001", "removed", "42.500")]


async def test_billing_gdo_readings_are_imported_once(app_conn: asyncpg.Connection) -> None:
    await make_clients(app_conn, 2)
    await app_conn.execute(
        "INSERT INTO meters (id, account_id, serial_number, model, size_class, installed_at) VALUES "
        "(1, 1, 'GDO-1', 'm', 'G4', '2020-01-01'), (2, 1, 'GDO-2', 'm', 'G6', '2020-01-01'), "
        "(3, 2, 'GDO-3', 'm', 'G4', '2020-01-01')"
    )
    items: list[dict[str, Any]] = [
        {"meter_serial": "GDO-1", "value": Decimal("100.5"), "read_on": dt.date(2025, 1, 31)},
        {"meter_serial": "GDO-1", "value": Decimal("140"), "read_on": dt.date(2025, 2, 28)},
        {"meter_serial": "GDO-2", "value": "7.25", "read_on": "2025-02-28"},
        {
            "meter_serial": "GDO-3",
            "value": Decimal("1"),
            "read_on": dt.date(2025, 2, 28),
        },  # other account
        {"meter_serial": "NOPE", "value": Decimal("1"), "read_on": dt.date(2025, 2, 28)},
        {"meter_serial": "GDO-2", "value": "-3", "read_on": "2025-03-31"},  # malformed: skipped
        {"meter_serial": "GDO-2", "read_on": "2025-03-31"},
    ]
    assert await meters.record_billing_readings(app_conn, 1, items) == 3
    assert await meters.record_billing_readings(app_conn, 1, items) == 0
    assert await meters.record_billing_readings(app_conn, 1, []) == 0
    rows = await app_conn.fetch(
        "SELECT meter_id, value, read_on, source FROM meter_readings ORDER BY meter_id, read_on"
    )
    assert [(r["meter_id"], r["value"], r["read_on"], r["source"]) for r in rows] == [
        (1, Decimal("100.500"), dt.date(2025, 1, 31), "gdo"),
        (1, Decimal("140.000"), dt.date(2025, 2, 28), "gdo"),
        (2, Decimal("7.250"), dt.date(2025, 2, 28), "gdo"),
    ]
    latest = await meters.latest_readings(app_conn, [1, 2, 3])
    assert set(latest) == {1, 2}
    assert latest[1].value == Decimal("140.000") and latest[1].source == "gdo"
    # A reading dated before 2018 lands in the open-ended partition and is still found; a
    # future one (billing bug) is skipped
    assert (
        await meters.record_billing_readings(
            app_conn, 2, [{"meter_serial": "GDO-3", "value": "5", "read_on": "2016-05-31"}]
        )
        == 1
    )
    assert (await meters.latest_readings(app_conn, [3]))[3].read_on == dt.date(2016, 5, 31)
