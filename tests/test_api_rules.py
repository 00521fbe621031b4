"""The send-rules API: rate limits, quiet hours, air-raid alerts, stop lists, consents."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis
from conftest import login_as

from admin_api.app import init_app
from herald import clock
from herald.settings import Settings
from rules.air_raid import AlertMirror


async def _clients(conn: asyncpg.Connection, n: int) -> list[int]:
    rows = await conn.fetch(
        "INSERT INTO clients (last_name, first_name) SELECT 'Тест', 'Клієнт' || g "
        "FROM generate_series(1, $1) g RETURNING id",
        n,
    )
    return [r["id"] for r in rows]


async def _bad(response: Any, field: str, status: int = 400) -> dict[str, Any]:
    """Assert a problem of ``status`` naming ``field``; return its body."""
    body = await response.json()
    assert response.status == status, body
    assert response.content_type == "application/problem+json"
    if status == 400:
        assert [e["field"] for e in body["errors"]] == [field], body
    return body


async def _journal(client: Any, headers: dict[str, str], entity: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/audit/{entity}", headers=headers)
    assert response.status == 200, await response.text()
    return (await response.json())["items"]


# -- rate limits ----------------------------------------------------------------------


async def test_rate_limits_set_replace_list_remove_and_bad_input(client, demo_users) -> None:
    admin = await login_as(client, "admin")
    # Given a channel-wide SMS limit and a limit of one SMS provider
    response = await client.put("/api/v1/rate-limits/sms", headers=admin, json={"per_minute": 100})
    assert response.status == 200, await response.text()
    assert (await response.json())["per_minute"] == 100
    response = await client.put(
        "/api/v1/rate-limits/sms/sms_http", headers=admin, json={"per_minute": 50, "per_hour": 2000}
    )
    assert response.status == 200, await response.text()
    # When the channel-wide one is replaced (a period left out is no limit)
    response = await client.put("/api/v1/rate-limits/sms", headers=admin, json={"per_hour": 3000})
    assert response.status == 200, await response.text()
    # Then both are listed, channel-wide first, as last set
    listed = await (await client.get("/api/v1/rate-limits", headers=admin)).json()
    assert [
        (r["channel"], r["provider"], r["per_minute"], r["per_hour"], r["updated_by"])
        for r in listed
    ] == [("sms", None, None, 3000, "admin"), ("sms", "sms_http", 50, 2000, "admin")]
    # and the journal has the creation and each changed field
    journal = await _journal(client, admin, "rate_limit/sms")
    assert {(e["action"], e["field"]) for e in journal} == {
        ("create", None),
        ("update", "per_minute"),
        ("update", "per_hour"),
    }
    # When the provider's limit is removed, a second removal finds nothing
    response = await client.delete("/api/v1/rate-limits/sms/sms_http", headers=admin)
    assert response.status == 204
    await _bad(await client.delete("/api/v1/rate-limits/sms/sms_http", headers=admin), "", 404)
    assert [e["action"] for e in await _journal(client, admin, "rate_limit/sms:sms_http")][
        0
    ] == "delete"
    assert len(await (await client.get("/api/v1/rate-limits", headers=admin)).json()) == 1
    # Bad input is a 400 naming the field
    body = await _bad(
        await client.put("/api/v1/rate-limits/fax", headers=admin, json={"per_minute": 10}),
        "channel",
    )
    assert "email, viber, sms" in body["detail"]
    await _bad(
        await client.put("/api/v1/rate-limits/sms", headers=admin, json={"per_minute": 0}),
        "per_minute",
    )
    await _bad(
        await client.put("/api/v1/rate-limits/sms", headers=admin, json={"per_hour": "many"}),
        "per_hour",
    )
    await _bad(await client.put("/api/v1/rate-limits/sms", headers=admin, json={}), "per_minute")
    await _bad(
        await client.put("/api/v1/rate-limits/sms/Bad!", headers=admin, json={"per_minute": 10}),
        "provider",
    )
    await _bad(
        await client.put(
            "/api/v1/rate-limits/sms", headers=admin, json={"per_minute": 10, "burst": 5}
        ),
        "burst",
    )
    await _bad(await client.delete("/api/v1/rate-limits/fax", headers=admin), "channel")


# -- permissions ----------------------------------------------------------------------


async def test_roles_without_the_permission_are_refused(client, demo_users) -> None:
    marketer = await login_as(client, "marketer")
    supervisor = await login_as(client, "supervisor")
    analyst = await login_as(client, "analyst")
    # Readers read the rules; the analyst does not
    for path in (
        "/api/v1/rate-limits",
        "/api/v1/quiet-hours",
        "/api/v1/air-raid/alerts",
        "/api/v1/air-raid/history",
        "/api/v1/stop-lists",
    ):
        assert (await client.get(path, headers=marketer)).status == 200, path
        assert (await client.get(path, headers=supervisor)).status == 200, path
        response = await client.get(path, headers=analyst)
        assert response.status == 403, path
        assert "rules.read" in (await response.json())["detail"]
    # Only managers change them
    refused = [
        ("PUT", "/api/v1/rate-limits/sms", marketer, {"per_minute": 1}),
        ("DELETE", "/api/v1/rate-limits/sms", supervisor, None),
        (
            "POST",
            "/api/v1/quiet-hours",
            marketer,
            {"name": "Ніч", "start": "21:00", "end": "09:00"},
        ),
        ("PUT", "/api/v1/air-raid/alerts/UA-30", marketer, {"active": True}),
        ("POST", "/api/v1/stop-lists", supervisor, {"client_id": 1, "reason": "скарга"}),
        (
            "PUT",
            "/api/v1/clients/1/consents",
            supervisor,
            {"channel": "sms", "topic": "debt", "opted_in": False, "source": "operator"},
        ),
        ("GET", "/api/v1/clients/1/consents", analyst, None),
    ]
    for method, path, headers, body in refused:
        response = await client.request(method, path, headers=headers, json=body)
        assert response.status == 403, (method, path, await response.text())


# -- quiet hours ----------------------------------------------------------------------


async def test_quiet_hours_create_change_delete_and_bad_input(client, demo_users) -> None:
    admin = await login_as(client, "admin")
    # Given a night window on SMS and Viber
    response = await client.post(
        "/api/v1/quiet-hours",
        headers=admin,
        json={"name": "Ніч", "start": "21:00", "end": "09:00", "channels": ["viber", "sms"]},
    )
    created = await response.json()
    assert response.status == 201, created
    assert (created["start"], created["end"], created["crosses_midnight"]) == (
        "21:00:00",
        "09:00:00",
        True,
    )
    assert created["weekdays"] == [1, 2, 3, 4, 5, 6, 7]
    assert created["channels"] == ["sms", "viber"]
    window = f"/api/v1/quiet-hours/{created['id']}"
    # When it is shortened to weekdays, ending at 08:30
    response = await client.put(
        window,
        headers=admin,
        json={
            "name": "Ніч",
            "start": "21:00",
            "end": "08:30:00",
            "weekdays": [1, 2, 3, 4, 5],
            "channels": ["sms", "viber"],
        },
    )
    assert response.status == 200, await response.text()
    # Then the list shows it as changed, and the journal has each change
    listed = await (await client.get("/api/v1/quiet-hours", headers=admin)).json()
    assert [(w["id"], w["end"], w["weekdays"]) for w in listed] == [
        (created["id"], "08:30:00", [1, 2, 3, 4, 5])
    ]
    journal = await _journal(client, admin, f"quiet_hours_window/{created['id']}")
    assert {(e["action"], e["field"]) for e in journal} == {
        ("create", None),
        ("update", "end"),
        ("update", "weekdays"),
    }
    # When it is deleted, it is gone
    assert (await client.delete(window, headers=admin)).status == 204
    await _bad(await client.delete(window, headers=admin), "", 404)
    await _bad(
        await client.put(
            window, headers=admin, json={"name": "Ніч", "start": "21:00", "end": "09:00"}
        ),
        "",
        404,
    )
    assert await (await client.get("/api/v1/quiet-hours", headers=admin)).json() == []

    # Bad input is a 400 naming the field
    async def post(**fields: Any) -> Any:
        return await client.post(
            "/api/v1/quiet-hours",
            headers=admin,
            json={"name": "Ніч", "start": "21:00", "end": "09:00", **fields},
        )

    body = await _bad(await post(end="25:00"), "end")
    assert "HH:MM" in body["detail"]
    await _bad(await post(end="9pm"), "end")
    await _bad(await post(start="21:00+02:00"), "start")
    await _bad(await post(end="21:00:00"), "end")  # same as start
    await _bad(await post(weekdays=[]), "weekdays")
    await _bad(await post(weekdays=[8]), "weekdays[0]")
    await _bad(await post(channels=["fax"]), "channels")
    await _bad(await post(name=""), "name")
    await _bad(
        await client.post(
            "/api/v1/quiet-hours", headers=admin, json={"name": "Ніч", "start": "21:00"}
        ),
        "end",
    )
    await _bad(await client.delete("/api/v1/quiet-hours/first", headers=admin), "window_id")


# -- air-raid alerts ------------------------------------------------------------------


async def test_an_alert_switched_through_the_api_reaches_the_redis_mirror(
    client, demo_users, settings: Settings, redis: aioredis.Redis
) -> None:
    admin = await login_as(client, "admin")
    mirror = AlertMirror(redis, settings.namespace)
    # When an alert is switched on in Kyiv
    response = await client.put(
        "/api/v1/air-raid/alerts/UA-30", headers=admin, json={"active": True}
    )
    state = await response.json()
    assert response.status == 200, state
    assert (state["region_code"], state["active"], state["version"], state["source"]) == (
        "UA-30",
        True,
        1,
        "admin",
    )
    # Then workers see it in the mirror, and the API lists it among all regions
    assert (await mirror.active_regions()).regions == {"UA-30"}
    regions = await (await client.get("/api/v1/air-raid/alerts", headers=admin)).json()
    assert len(regions) > 20
    kyiv = next(r for r in regions if r["region_code"] == "UA-30")
    assert (kyiv["active"], kyiv["name_en"], kyiv["changed_by"]) == (True, "Kyiv City", "admin")
    assert not any(r["active"] for r in regions if r["region_code"] != "UA-30")
    assert next(r for r in regions if r["region_code"] == "UA-46")["version"] is None
    # When the same state is sent again nothing changes; when the feed lifts it, it is gone
    again = await (
        await client.put("/api/v1/air-raid/alerts/UA-30", headers=admin, json={"active": True})
    ).json()
    assert again["version"] == 1
    response = await client.put(
        "/api/v1/air-raid/alerts/UA-30",
        headers=admin,
        json={"active": False, "source": "integration"},
    )
    assert response.status == 200, await response.text()
    assert (await mirror.active_regions()).regions == frozenset()
    # and the history has the closed period, the journal both switches
    history = await (
        await client.get("/api/v1/air-raid/history?region=UA-30", headers=admin)
    ).json()
    [period] = history["items"]
    assert (period["start_source"], period["end_source"], period["ended_by"]) == (
        "admin",
        "integration",
        "admin",
    )
    assert history["next_before_id"] is None
    journal = await _journal(client, admin, "air_raid_alert/UA-30")
    assert [(e["old_value"], e["new_value"]) for e in journal] == [(True, False), (False, True)]


async def test_an_alert_recorded_while_redis_is_down_is_a_503_and_repaired_by_repeating(
    client, demo_users, settings: Settings, redis: aioredis.Redis, aiohttp_client
) -> None:
    mirror = AlertMirror(redis, settings.namespace)
    broken = await aiohttp_client(
        init_app(msgspec.structs.replace(settings, redis_url="redis://127.0.0.1:1/0"))
    )
    # When an alert is switched on while the API cannot reach Redis
    response = await broken.put(
        "/api/v1/air-raid/alerts/UA-05",
        json={"active": True},
        headers=await login_as(broken, "admin"),
    )
    body = await response.json()
    # Then the caller is told to repeat, though PostgreSQL has it
    assert response.status == 503, body
    assert response.headers["Retry-After"] == "2" and "UA-05" in body["detail"]
    admin = await login_as(client, "admin")
    regions = await (await client.get("/api/v1/air-raid/alerts", headers=admin)).json()
    assert next(r for r in regions if r["region_code"] == "UA-05")["active"] is True
    # and repeating the request (a no-op in PostgreSQL) mirrors it
    response = await client.put(
        "/api/v1/air-raid/alerts/UA-05", headers=admin, json={"active": True}
    )
    assert (await response.json())["version"] == 1
    assert (await mirror.active_regions()).regions == {"UA-05"}


async def test_alert_history_pages_and_bad_input(client, demo_users, redis) -> None:
    admin = await login_as(client, "admin")
    for region in ("UA-05", "UA-07", "UA-12"):
        response = await client.put(
            f"/api/v1/air-raid/alerts/{region}", headers=admin, json={"active": True}
        )
        assert response.status == 200, await response.text()
    page = await (await client.get("/api/v1/air-raid/history?limit=2", headers=admin)).json()
    assert [p["region_code"] for p in page["items"]] == ["UA-12", "UA-07"]
    rest = await (
        await client.get(
            f"/api/v1/air-raid/history?limit=2&before_id={page['next_before_id']}", headers=admin
        )
    ).json()
    assert [p["region_code"] for p in rest["items"]] == ["UA-05"]
    assert rest["next_before_id"] is None
    # Bad input is a 400 naming the field
    body = await _bad(
        await client.put("/api/v1/air-raid/alerts/UA-99", headers=admin, json={"active": True}),
        "region",
    )
    assert "UA-99" in body["detail"]
    await _bad(
        await client.put("/api/v1/air-raid/alerts/kyiv", headers=admin, json={"active": True}),
        "region",
    )
    await _bad(
        await client.put(
            "/api/v1/air-raid/alerts/UA-30", headers=admin, json={"active": True, "source": "robot"}
        ),
        "source",
    )
    await _bad(
        await client.put("/api/v1/air-raid/alerts/UA-30", headers=admin, json={"active": "yes"}),
        "active",
    )
    await _bad(await client.put("/api/v1/air-raid/alerts/UA-30", headers=admin, json={}), "active")
    await _bad(await client.get("/api/v1/air-raid/history?region=UA-99", headers=admin), "region")
    await _bad(await client.get("/api/v1/air-raid/history?limit=0", headers=admin), "limit")


# -- stop lists -----------------------------------------------------------------------


async def test_stop_list_entries_add_list_remove_and_bad_input(
    client, demo_users, app_conn
) -> None:
    marketer = await login_as(client, "marketer")
    a, b = await _clients(app_conn, 2)
    # Given a client blocked from marketing and another from everything until a date
    response = await client.post(
        "/api/v1/stop-lists",
        headers=marketer,
        json={"client_id": a, "topics": ["marketing"], "reason": "Скарга на спам"},
    )
    first = await response.json()
    assert response.status == 201, first
    assert (first["client_id"], first["topics"], first["created_by"]) == (
        a,
        ["marketing"],
        "marketer",
    )
    response = await client.post(
        "/api/v1/stop-lists",
        headers=marketer,
        json={
            "client_id": b,
            "reason": "Судове рішення",
            # In force for years from the run's day, whatever day that is
            "valid_until": (clock.now() + dt.timedelta(days=3650)).isoformat(),
        },
    )
    second = await response.json()
    assert response.status == 201, second
    assert second["topics"] is None
    # Then they are listed by client, in force now, and a page at a time
    by_client = await (
        await client.get(f"/api/v1/stop-lists?client_id={b}", headers=marketer)
    ).json()
    assert [e["id"] for e in by_client["items"]] == [second["id"]]
    page = await (await client.get("/api/v1/stop-lists?limit=1", headers=marketer)).json()
    assert [e["id"] for e in page["items"]] == [first["id"]]
    rest = await (
        await client.get(
            f"/api/v1/stop-lists?limit=1&after_id={page['next_after_id']}", headers=marketer
        )
    ).json()
    assert [e["id"] for e in rest["items"]] == [second["id"]]
    later = await (
        await client.get("/api/v1/stop-lists?active_at=2100-01-01T00:00:00Z", headers=marketer)
    ).json()
    assert [e["id"] for e in later["items"]] == [first["id"]]
    # When the first is removed, it is gone, and the journal keeps both facts
    entry = f"/api/v1/stop-lists/{first['id']}"
    assert (await client.delete(entry, headers=marketer)).status == 204
    await _bad(await client.delete(entry, headers=marketer), "", 404)
    admin = await login_as(client, "admin")
    journal = await _journal(client, admin, f"stop_list_entry/{first['id']}")
    assert [e["action"] for e in journal] == ["delete", "create"]
    assert journal[1]["new_value"]["reason"] == "Скарга на спам"

    # Bad input is a 400 naming the field (segment 7 does not exist in this database)
    async def post(**fields: Any) -> Any:
        return await client.post(
            "/api/v1/stop-lists", headers=marketer, json={"reason": "Скарга", **fields}
        )

    body = await _bad(await post(segment_id=7), "segment_id")
    assert "segment" in body["detail"] and "client_id" in body["detail"]
    body = await _bad(await post(client_id=a, topics=["spam"]), "topics")
    assert "spam" in body["detail"]
    await _bad(await post(client_id=a + 1000), "client_id")
    await _bad(await post(), "client_id")
    await _bad(await post(client_id=a, segment_id=7), "client_id")
    await _bad(await post(client_id=a, reason=""), "reason")
    await _bad(await post(client_id=a, valid_until="2000-01-01T00:00:00Z"), "valid_until")
    await _bad(await post(client_id=a, valid_until="2099-01-01T00:00:00"), "valid_until")
    await _bad(await client.get("/api/v1/stop-lists?client_id=x", headers=marketer), "client_id")
    await _bad(await client.delete("/api/v1/stop-lists/0", headers=marketer), "entry_id")
    listed = await (await client.get("/api/v1/stop-lists", headers=marketer)).json()
    assert [e["id"] for e in listed["items"]] == [second["id"]]


# -- consents -------------------------------------------------------------------------


async def test_consents_recorded_read_with_defaults_and_bad_input(
    client, demo_users, app_conn
) -> None:
    operator = await login_as(client, "operator_cc")
    (a,) = await _clients(app_conn, 1)
    path = f"/api/v1/clients/{a}/consents"
    # Given a client who has made no choice, only the topic defaults apply
    fresh = await (await client.get(path, headers=operator)).json()
    assert fresh["consents"] == []
    defaults = {t["code"]: t["allowed_by_default"] for t in fresh["topics"]}
    assert defaults["marketing"] is False and defaults["debt"] is True
    # When they opt in to marketing SMS by phone, then change their mind
    choice = {"channel": "sms", "topic": "marketing", "opted_in": True, "source": "operator"}
    response = await client.put(path, headers=operator, json=choice)
    recorded = await response.json()
    assert response.status == 200, recorded
    assert (recorded["opted_in"], recorded["previous"]) == (True, None)
    response = await client.put(path, headers=operator, json={**choice, "opted_in": False})
    assert (await response.json())["previous"] is True
    # Then the explicit row is there, and both changes are journalled
    read = await (await client.get(path, headers=operator)).json()
    assert [(c["channel"], c["topic"], c["opted_in"], c["source"]) for c in read["consents"]] == [
        ("sms", "marketing", False, "operator")
    ]
    admin = await login_as(client, "admin")
    journal = await _journal(client, admin, f"consent/{a}:sms:marketing")
    assert [(e["action"], e["new_value"], e["actor_login"]) for e in journal] == [
        ("update", False, "operator.cc"),
        ("create", True, "operator.cc"),
    ]
    # An unknown client is a 404, bad input a 400 naming the field
    choice = {"channel": "sms", "topic": "debt", "opted_in": False, "source": "sms_stop"}
    await _bad(await client.get(f"/api/v1/clients/{a + 1000}/consents", headers=admin), "", 404)
    await _bad(
        await client.put(f"/api/v1/clients/{a + 1000}/consents", headers=admin, json=choice),
        "",
        404,
    )
    path = f"/api/v1/clients/{a}/consents"
    body = await _bad(
        await client.put(path, headers=admin, json={**choice, "topic": "spam"}), "topic"
    )
    assert "spam" in body["detail"] and "marketing" in body["detail"]
    await _bad(await client.put(path, headers=admin, json={**choice, "channel": "fax"}), "channel")
    await _bad(await client.put(path, headers=admin, json={**choice, "source": "magic"}), "source")
    await _bad(
        await client.put(
            path, headers=admin, json={"channel": "sms", "topic": "debt", "source": "app"}
        ),
        "opted_in",
    )
    await _bad(await client.get("/api/v1/clients/abc/consents", headers=admin), "client_id")
    # a channel Herald does not send on yet may still carry a client's choice
    response = await client.put(path, headers=admin, json={**choice, "channel": "push"})
    assert response.status == 200, await response.text()
