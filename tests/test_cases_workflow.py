"""Categorisation (SR-04), the status model and its automations (SR-07), the queue, and
the configuration endpoints."""

from __future__ import annotations

import asyncpg
from conftest import login_as
from test_cases_support import (
    TELEGRAM_SECRET,
    bad,
    configure_webhooks,
    events_of,
    journal,
    make_client,
    ok,
    telegram_update,
)

from crm.cases import automation, intake
from crm.cases.channels import Inbound
from herald.audit import Actor
from herald.db import create_pool

SITE = Actor(login="forms")
DEFAULT_TRANSITIONS = [
    ("new", "in_progress"),
    ("in_progress", "on_hold"),
    ("in_progress", "resolved"),
    ("on_hold", "in_progress"),
    ("on_hold", "resolved"),
    ("resolved", "in_progress"),
    ("resolved", "closed"),
]


async def _new(conn: asyncpg.Connection, text: str = "Питання", **kw) -> int:
    return (
        await intake.ingest(conn, SITE, Inbound(channel=kw.pop("channel", "site"), text=text, **kw))
    ).case_id


async def _status(client, headers, case_id: int, status: str):
    return await client.post(
        f"/api/v1/cases/{case_id}/status", headers=headers, json={"status": status}
    )


# -- categories ----------------------------------------------------------------------------


async def test_category_tree_crud_and_no_delete_of_used(client, demo_users, app_conn) -> None:
    admin = await login_as(client, "admin")
    operator = await login_as(client, "operator_cc")
    tree = await ok(await client.get("/api/v1/case-categories", headers=operator))
    codes = {c["code"]: c for c in tree}
    assert codes["billing.debt"]["parent_id"] == codes["billing"]["id"]
    # Add a branch and a leaf, rename, move
    top = await ok(
        await client.post(
            "/api/v1/case-categories",
            headers=admin,
            json={"code": "complaint", "name_uk": "Скарги", "name_en": "Complaints"},
        ),
        201,
    )
    leaf = await ok(
        await client.post(
            "/api/v1/case-categories",
            headers=admin,
            json={
                "code": "complaint.staff",
                "name_uk": "На працівника",
                "name_en": "About staff",
                "parent_id": top["id"],
            },
        ),
        201,
    )
    moved = await ok(
        await client.patch(
            f"/api/v1/case-categories/{leaf['id']}",
            headers=admin,
            json={"parent_id": codes["info"]["id"], "name_uk": "Поведінка працівника"},
        )
    )
    assert (moved["parent_id"], moved["name_uk"]) == (codes["info"]["id"], "Поведінка працівника")
    # A cycle, an unknown parent, a duplicate code, a bad code are refused
    await bad(
        await client.patch(
            f"/api/v1/case-categories/{codes['billing']['id']}",
            headers=admin,
            json={"parent_id": codes["billing.debt"]["id"]},
        ),
        "parent_id",
    )
    await bad(
        await client.post(
            "/api/v1/case-categories",
            headers=admin,
            json={"code": "x.y", "name_uk": "a", "name_en": "a", "parent_id": 10**9},
        ),
        "parent_id",
    )
    await bad(
        await client.post(
            "/api/v1/case-categories",
            headers=admin,
            json={"code": "complaint", "name_uk": "a", "name_en": "a"},
        ),
        "",
        409,
    )
    await bad(
        await client.post(
            "/api/v1/case-categories",
            headers=admin,
            json={"code": "Bad Code", "name_uk": "a", "name_en": "a"},
        ),
        "code",
    )
    await bad(
        await client.patch(f"/api/v1/case-categories/{leaf['id']}", headers=admin, json={}), "body"
    )
    # An unused category can be deleted; a used one only deactivated
    used = codes["billing.debt"]["id"]
    await _new(app_conn, "У мене борг")
    body = await bad(await client.delete(f"/api/v1/case-categories/{used}", headers=admin), "", 409)
    assert "deactivate" in body["detail"]
    # A category with subcategories cannot go either
    await bad(
        await client.delete(f"/api/v1/case-categories/{codes['info']['id']}", headers=admin),
        "",
        409,
    )
    await ok(await client.delete(f"/api/v1/case-categories/{leaf['id']}", headers=admin), 204)
    await ok(await client.delete(f"/api/v1/case-categories/{top['id']}", headers=admin), 204)
    await ok(
        await client.patch(
            f"/api/v1/case-categories/{used}", headers=admin, json={"is_active": False}
        )
    )
    active = {
        c["code"] for c in await ok(await client.get("/api/v1/case-categories", headers=operator))
    }
    assert "billing.debt" not in active and "billing" in active
    everything = await ok(
        await client.get("/api/v1/case-categories?include_inactive=true", headers=operator)
    )
    assert "billing.debt" in {c["code"] for c in everything}
    assert [e["action"] for e in await journal(client, f"case_category/{leaf['id']}")] == [
        "delete",
        "update",
        "update",
        "create",
    ]
    await bad(
        await client.post(
            "/api/v1/case-categories",
            headers=operator,
            json={"code": "nope", "name_uk": "a", "name_en": "a"},
        ),
        "",
        403,
    )


# -- classification ------------------------------------------------------------------------


async def test_rules_propose_by_keyword_channel_and_client_attributes(
    client, demo_users, app_conn
) -> None:
    admin = await login_as(client, "admin")
    cats = {
        r["code"]: r["id"] for r in await app_conn.fetch("SELECT code, id FROM case_categories")
    }
    # Given rules ahead of the seeded ones: calls of indebted clients, and condominiums
    indebted = await ok(
        await client.post(
            "/api/v1/case-classification-rules",
            headers=admin,
            json={
                "name": "Боржники телефоном",
                "position": 1,
                "channels": ["call"],
                "has_debt": True,
                "category_id": cats["billing.debt"],
                "case_type": "financial",
                "priority": "high",
            },
        ),
        201,
    )
    osbb = await ok(
        await client.post(
            "/api/v1/case-classification-rules",
            headers=admin,
            json={
                "name": "ОСББ",
                "position": 2,
                "consumer_types": ["condominium"],
                "keywords": ["Лічильник"],
                "case_type": "technical",
            },
        ),
        201,
    )
    assert osbb["keywords"] == ["лічильник"]
    debtor = await make_client(app_conn, debt=1250.5)
    condo = await make_client(app_conn, consumer_type="condominium")
    plain = await make_client(app_conn)
    cases = {
        "debtor_call": await _new(
            app_conn, "Добрий день", channel="call", client_id=debtor["client_id"]
        ),
        "debtor_site": await _new(app_conn, "Добрий день", client_id=debtor["client_id"]),
        "condo": await _new(
            app_conn, "Лічильник у підвалі не працює", client_id=condo["client_id"]
        ),
        "plain_meter": await _new(app_conn, "Лічильник у підвалі", client_id=plain["client_id"]),
        "leak": await _new(app_conn, "Відчуваю ЗАПАХ газу в під'їзді!"),
        "nothing": await _new(app_conn, "Дякую за допомогу"),
    }
    rows = {
        r["id"]: (r["category_id"], r["case_type"], r["priority"], r["proposed_rule_id"])
        for r in await app_conn.fetch(
            "SELECT id, category_id, case_type, priority, proposed_rule_id FROM cases"
        )
    }
    leak_rule = await app_conn.fetchval(
        "SELECT id FROM case_classification_rules WHERE name = 'Запах газу'"
    )
    assert rows[cases["debtor_call"]] == (cats["billing.debt"], "financial", "high", indebted["id"])
    assert rows[cases["debtor_site"]] == (None, None, "normal", None)
    assert rows[cases["condo"]] == (None, "technical", "normal", osbb["id"])
    assert rows[cases["plain_meter"]] == (None, None, "normal", None)
    assert rows[cases["leak"]] == (cats["supply.leak"], "technical", "urgent", leak_rule)
    assert rows[cases["nothing"]] == (None, None, "normal", None)
    # An inactive rule proposes nothing; a rule may be edited and deleted
    await ok(
        await client.put(
            f"/api/v1/case-classification-rules/{indebted['id']}",
            headers=admin,
            json={
                "name": "Боржники",
                "position": 1,
                "channels": ["call"],
                "has_debt": True,
                "priority": "high",
                "is_active": False,
            },
        )
    )
    again = await _new(app_conn, "Ще раз", channel="call", client_id=debtor["client_id"])
    assert (await app_conn.fetchval("SELECT priority FROM cases WHERE id = $1", again)) == "normal"
    await ok(
        await client.delete(f"/api/v1/case-classification-rules/{osbb['id']}", headers=admin), 204
    )
    names = [
        r["name"]
        for r in await ok(await client.get("/api/v1/case-classification-rules", headers=admin))
    ]
    assert names[0] == "Боржники" and "ОСББ" not in names
    # Bad rules are 400s naming the field
    url = "/api/v1/case-classification-rules"
    await bad(
        await client.post(url, headers=admin, json={"name": "x", "keywords": ["борг"]}),
        "category_id",
    )
    await bad(
        await client.post(url, headers=admin, json={"name": "x", "priority": "asap"}), "priority"
    )
    await bad(
        await client.post(
            url, headers=admin, json={"name": "x", "channels": ["fax"], "priority": "low"}
        ),
        "channels[0]",
    )
    await bad(
        await client.post(
            url, headers=admin, json={"name": "x", "keywords": ["!!"], "priority": "low"}
        ),
        "keywords[0]",
    )
    await bad(
        await client.post(url, headers=admin, json={"name": "x", "category_id": 10**9}),
        "category_id",
    )
    await bad(
        await client.put(f"{url}/999999", headers=admin, json={"name": "x", "priority": "low"}),
        "",
        404,
    )
    operator = await login_as(client, "operator_cc")
    await bad(await client.get(url, headers=operator), "", 403)


async def test_operator_correction_is_recorded_as_proposed_vs_chosen(
    client, demo_users, app_conn
) -> None:
    cats = {
        r["code"]: r["id"] for r in await app_conn.fetch("SELECT code, id FROM case_categories")
    }
    known = await make_client(app_conn)
    earlier = await _new(app_conn, "Заміна лічильника", client_id=known["client_id"])
    await app_conn.execute(
        "UPDATE cases SET category_id = $1 WHERE id = $2", cats["meter.verification"], earlier
    )
    case_id = await _new(app_conn, "Маю борг за лютий", client_id=known["client_id"])
    operator = await login_as(client, "operator_cc")
    url = f"/api/v1/cases/{case_id}/classification"
    # The rules proposed debt; the operator says it is a meter verification, urgent
    corrected = await ok(
        await client.patch(
            url,
            headers=operator,
            json={"category_id": cats["meter.verification"], "priority": "urgent"},
        )
    )
    assert (corrected["category_id"], corrected["case_type"], corrected["priority"]) == (
        cats["meter.verification"],
        "financial",
        "urgent",
    )
    assert corrected["proposed"]["category_id"] == cats["billing.debt"]
    # and the corrected category makes it a repeat of the earlier meter case
    assert (corrected["is_repeat"], corrected["repeat_of_id"]) == (True, earlier)
    events = await events_of(client, operator, case_id)
    correction = [e for e in events if e["kind"] == "classification"][0]
    assert correction["actor_login"] == "operator.cc"
    assert correction["data"]["proposed"]["category_id"] == cats["billing.debt"]
    assert correction["data"]["before"] == {
        "category_id": cats["billing.debt"],
        "case_type": "financial",
        "priority": "normal",
    }
    assert correction["data"]["chosen"] == {
        "category_id": cats["meter.verification"],
        "case_type": "financial",
        "priority": "urgent",
    }
    assert [e["kind"] for e in events][-1] == "flag"
    fields = {e["field"] for e in await journal(client, f"case/{case_id}")}
    assert {"category_id", "priority", "is_repeat"} <= fields
    await bad(await client.patch(url, headers=operator, json={}), "category_id")
    await bad(await client.patch(url, headers=operator, json={"case_type": "other"}), "case_type")
    await bad(await client.patch(url, headers=operator, json={"category_id": 10**9}), "category_id")
    await bad(
        await client.patch(
            "/api/v1/cases/999999/classification", headers=operator, json={"priority": "low"}
        ),
        "",
        404,
    )
    await bad(
        await client.patch(
            "/api/v1/cases/abc/classification", headers=operator, json={"priority": "low"}
        ),
        "case_id",
    )


# -- status model ----------------------------------------------------------------------------


async def test_every_default_transition_is_allowed_and_an_illegal_one_refused(
    client, demo_users, app_conn
) -> None:
    operator = await login_as(client, "operator_cc")
    table = await ok(await client.get("/api/v1/case-transitions", headers=operator))
    assert [s["code"] for s in table["statuses"]] == [
        "new",
        "in_progress",
        "on_hold",
        "resolved",
        "closed",
    ]
    assert sorted((t["from_status"], t["to_status"]) for t in table["transitions"]) == sorted(
        DEFAULT_TRANSITIONS
    )
    # Each default transition, walked on cases that reach its from-status
    for from_status, to_status in DEFAULT_TRANSITIONS:
        case_id = await _new(app_conn, f"{from_status} -> {to_status}")
        path = {
            "new": [],
            "in_progress": ["in_progress"],
            "on_hold": ["in_progress", "on_hold"],
            "resolved": ["in_progress", "resolved"],
        }[from_status]
        for step in [*path, to_status]:
            changed = await ok(await _status(client, operator, case_id, step))
            assert changed["status"] == step
        events = [e for e in await events_of(client, operator, case_id) if e["kind"] == "status"]
        assert [(e["from_status"], e["to_status"], e["actor_login"]) for e in events][-1] == (
            from_status,
            to_status,
            "operator.cc",
        )
    # An illegal transition is a 409 naming both statuses and what is allowed
    case_id = await _new(app_conn, "Нове")
    body = await bad(await _status(client, operator, case_id, "closed"), "", 409)
    assert "'new' to 'closed'" in body["detail"] and "in_progress" in body["detail"]
    await bad(await _status(client, operator, case_id, "new"), "", 409)
    await bad(await _status(client, operator, case_id, "done"), "status")
    await bad(await _status(client, operator, 999999, "in_progress"), "", 404)
    # The change is stamped and journalled
    await ok(await _status(client, operator, case_id, "in_progress"))
    row = await app_conn.fetchrow(
        "SELECT status, status_changed_at > created_at AS moved FROM cases WHERE id = $1", case_id
    )
    assert (row["status"], row["moved"]) == ("in_progress", True)
    assert [
        (e["field"], e["old_value"], e["new_value"], e["actor_login"])
        for e in await journal(client, f"case/{case_id}")
    ][0] == ("status", "new", "in_progress", "operator.cc")
    analyst = await login_as(client, "analyst")
    await bad(await _status(client, analyst, case_id, "on_hold"), "", 403)


async def test_the_admin_edited_transition_table_is_honoured(client, demo_users, app_conn) -> None:
    admin = await login_as(client, "admin")
    operator = await login_as(client, "operator_cc")
    case_id = await _new(app_conn)
    # Given an admin who lets new cases be closed at once and forbids new -> in_progress
    edited = [
        {"from_status": f, "to_status": t}
        for f, t in DEFAULT_TRANSITIONS
        if (f, t) != ("new", "in_progress")
    ] + [{"from_status": "new", "to_status": "closed"}]
    table = await ok(
        await client.put("/api/v1/case-transitions", headers=admin, json={"transitions": edited})
    )
    assert ("new", "closed") in {(t["from_status"], t["to_status"]) for t in table["transitions"]}
    body = await bad(await _status(client, operator, case_id, "in_progress"), "", 409)
    assert "'new' to 'in_progress'" in body["detail"]
    assert (await ok(await _status(client, operator, case_id, "closed")))["status"] == "closed"
    entries = {
        (e["entity_id"], e["action"])
        for e in [
            *await journal(client, "case_transition/new>closed"),
            *await journal(client, "case_transition/new>in_progress"),
        ]
    }
    assert entries == {("new>closed", "create"), ("new>in_progress", "delete")}
    # Nothing leaves closed; a status must change; unknown statuses are 400s
    url = "/api/v1/case-transitions"
    await bad(
        await client.put(
            url,
            headers=admin,
            json={"transitions": [{"from_status": "closed", "to_status": "new"}]},
        ),
        "transitions[0].from_status",
    )
    await bad(
        await client.put(
            url, headers=admin, json={"transitions": [{"from_status": "new", "to_status": "new"}]}
        ),
        "transitions[0].to_status",
    )
    await bad(
        await client.put(
            url, headers=admin, json={"transitions": [{"from_status": "new", "to_status": "done"}]}
        ),
        "transitions[0].to_status",
    )
    await bad(await client.put(url, headers=operator, json={"transitions": []}), "", 403)


# -- automations -----------------------------------------------------------------------------


async def test_client_reply_while_on_hold_moves_the_case_to_in_progress(
    client, demo_users, app_conn
) -> None:
    await configure_webhooks(client)
    secret = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}
    first = await ok(
        await client.post(
            "/api/v1/case-intake/telegram",
            headers=secret,
            json=telegram_update(1, 4242, 1, "Не прийшов рахунок"),
        )
    )
    case_id = first["case"]["case_id"]
    operator = await login_as(client, "operator_cc")
    await ok(await _status(client, operator, case_id, "in_progress"))
    await ok(await _status(client, operator, case_id, "on_hold"))
    # When the client replies in the chat
    reply = await ok(
        await client.post(
            "/api/v1/case-intake/telegram",
            headers=secret,
            json=telegram_update(2, 4242, 2, "Ось мій особовий"),
        )
    )
    # Then the automation moves it back to work, stamped as the automation's doing
    assert (reply["case"]["case_id"], reply["case"]["status"]) == (case_id, "in_progress")
    last = [e for e in await events_of(client, operator, case_id) if e["kind"] == "status"][-1]
    assert (last["from_status"], last["to_status"], last["actor_login"]) == (
        "on_hold",
        "in_progress",
        "automation",
    )
    assert last["data"]["trigger"] == "client_reply"
    # A reply while in progress changes nothing
    again = await ok(
        await client.post(
            "/api/v1/case-intake/telegram",
            headers=secret,
            json=telegram_update(3, 4242, 3, "Ще щось"),
        )
    )
    assert again["case"]["status"] == "in_progress"
    # With the rule switched off, a reply on hold leaves the status alone
    admin = await login_as(client, "admin")
    rules = await ok(await client.get("/api/v1/case-automation-rules", headers=admin))
    on_hold = next(
        r for r in rules if r["trigger"] == "client_reply" and r["from_status"] == "on_hold"
    )
    await ok(
        await client.put(
            f"/api/v1/case-automation-rules/{on_hold['id']}",
            headers=admin,
            json={
                "name": on_hold["name"],
                "trigger": "client_reply",
                "from_status": "on_hold",
                "to_status": "in_progress",
                "is_active": False,
            },
        )
    )
    await ok(await _status(client, operator, case_id, "on_hold"))
    quiet = await ok(
        await client.post(
            "/api/v1/case-intake/telegram",
            headers=secret,
            json=telegram_update(4, 4242, 4, "Алло?"),
        )
    )
    assert quiet["case"]["status"] == "on_hold"


async def test_resolved_without_reply_for_72_hours_is_closed(
    client, demo_users, settings, app_conn, admin_conn
) -> None:
    operator = await login_as(client, "operator_cc")
    stale, replied, fresh, held = [await _new(app_conn, t) for t in ("a", "b", "c", "d")]
    for case_id in (stale, replied, fresh, held):
        await ok(await _status(client, operator, case_id, "in_progress"))
        await ok(
            await _status(client, operator, case_id, "resolved" if case_id != held else "on_hold")
        )
    # Given: resolved 73 h ago; resolved 73 h ago but the client wrote 10 h ago;
    # resolved just now; on hold for 100 h (no idle rule for on hold)
    await app_conn.execute(
        "UPDATE cases SET status_changed_at = herald_now() - interval '73 hours', "
        "last_inbound_at = herald_now() - interval '80 hours' WHERE id = ANY($1::bigint[])",
        [stale, replied],
    )
    await app_conn.execute(
        "UPDATE cases SET last_inbound_at = herald_now() - interval '10 hours' WHERE id = $1",
        replied,
    )
    await app_conn.execute(
        "UPDATE cases SET status_changed_at = herald_now() - interval '100 hours', "
        "last_inbound_at = herald_now() - interval '100 hours' WHERE id = $1",
        held,
    )
    pool = await create_pool(settings)
    try:
        # When the scheduler runs the automations (twice: the second finds nothing)
        assert await automation.run_due_automations(pool) == 1
        assert await automation.run_due_automations(pool) == 0
    finally:
        await pool.close()
    statuses = {r["id"]: r["status"] for r in await app_conn.fetch("SELECT id, status FROM cases")}
    assert statuses == {stale: "closed", replied: "resolved", fresh: "resolved", held: "on_hold"}
    last = (await events_of(client, operator, stale))[-1]
    assert (last["kind"], last["from_status"], last["to_status"], last["actor_login"]) == (
        "status",
        "resolved",
        "closed",
        "automation",
    )
    assert last["data"] == {
        "automation_rule_id": last["data"]["automation_rule_id"],
        "trigger": "idle",
        "idle_hours": 72,
    }
    assert [
        (e["field"], e["new_value"], e["actor_login"])
        for e in await journal(client, f"case/{stale}")
    ][0] == ("status", "closed", "automation")


async def test_automation_rules_are_validated(client, demo_users) -> None:
    admin = await login_as(client, "admin")
    url = "/api/v1/case-automation-rules"
    created = await ok(
        await client.post(
            url,
            headers=admin,
            json={
                "name": "Нове без руху 24 год — в роботу",
                "trigger": "idle",
                "from_status": "new",
                "to_status": "in_progress",
                "idle_hours": 24,
            },
        ),
        201,
    )
    assert created["idle_hours"] == 24
    await bad(
        await client.post(
            url,
            headers=admin,
            json={"name": "x", "trigger": "idle", "from_status": "new", "to_status": "in_progress"},
        ),
        "idle_hours",
    )
    await bad(
        await client.post(
            url,
            headers=admin,
            json={
                "name": "x",
                "trigger": "client_reply",
                "from_status": "new",
                "to_status": "closed",
            },
        ),
        "to_status",
    )
    await bad(
        await client.post(
            url,
            headers=admin,
            json={"name": "x", "trigger": "sometimes", "from_status": "new", "to_status": "closed"},
        ),
        "trigger",
    )
    await ok(await client.delete(f"{url}/{created['id']}", headers=admin), 204)
    await bad(await client.delete(f"{url}/{created['id']}", headers=admin), "", 404)
    assert [e["action"] for e in await journal(client, f"case_automation/{created['id']}")] == [
        "delete",
        "create",
    ]


# -- the queue -------------------------------------------------------------------------------


async def test_one_queue_across_channels_with_filters_and_keyset_pages(
    client, demo_users, app_conn
) -> None:
    known = await make_client(app_conn)
    ids = {}
    for i, channel in enumerate(
        ["call", "viber", "telegram", "site", "cabinet", "email", "app", "walk_in"]
    ):
        ids[channel] = await _new(
            app_conn,
            f"Звернення {i}",
            channel=channel,
            client_id=known["client_id"] if i % 2 else None,
        )
    operator = await login_as(client, "operator_cc")
    await ok(await _status(client, operator, ids["call"], "in_progress"))
    await app_conn.execute("UPDATE cases SET priority = 'urgent' WHERE id = $1", ids["email"])
    # Every channel lands in the same queue, oldest first, three to a page
    seen, cursor = [], None
    while True:
        page = await ok(
            await client.get(
                "/api/v1/cases",
                headers=operator,
                params={"limit": 3, **({"cursor": cursor} if cursor else {})},
            )
        )
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(ids.values())
    newest = await ok(await client.get("/api/v1/cases?order=desc&limit=2", headers=operator))
    assert [i["id"] for i in newest["items"]] == [ids["walk_in"], ids["app"]]

    async def only(**params: object) -> list[int]:
        page = await ok(
            await client.get(
                "/api/v1/cases",
                headers=operator,
                params={
                    k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()
                },
            )
        )
        return [i["id"] for i in page["items"]]

    assert await only(status="in_progress") == [ids["call"]]
    assert await only(channel="viber") == [ids["viber"]]
    assert await only(priority="urgent", open=True) == [ids["email"]]
    assert await only(client_id=known["client_id"]) == [
        ids[c] for c in ("viber", "site", "email", "walk_in")
    ]
    assert await only(anonymous=True) == [ids[c] for c in ("call", "telegram", "cabinet", "app")]
    assert await only(open=False) == []
    number = await app_conn.fetchval("SELECT number FROM cases WHERE id = $1", ids["app"])
    assert await only(number=number) == [ids["app"]]
    await bad(await client.get("/api/v1/cases?status=done", headers=operator), "status")
    await bad(await client.get("/api/v1/cases?limit=0", headers=operator), "limit")
    await bad(await client.get("/api/v1/cases?cursor=zzz", headers=operator), "cursor")
    await bad(await client.get("/api/v1/cases?colour=red", headers=operator), "colour")
    await bad(await client.get("/api/v1/cases/0", headers=operator), "case_id")
    await bad(await client.get("/api/v1/cases/999999", headers=operator), "", 404)


async def test_a_clients_case_is_on_their_timeline_and_follows_its_status(
    client, demo_users, app_conn
) -> None:
    known = await make_client(app_conn)
    case_id = await _new(app_conn, "Немає газу з ранку", client_id=known["client_id"])
    anonymous = await _new(app_conn, "Анонімне питання", email="anon@example.ua")
    operator = await login_as(client, "operator_cc")
    await ok(await _status(client, operator, case_id, "in_progress"))
    number = await app_conn.fetchval("SELECT number FROM cases WHERE id = $1", case_id)
    rows = await app_conn.fetch(
        "SELECT e.kind, e.title, e.status, e.channel, e.detail FROM timeline_events e "
        "JOIN timeline_refs r ON r.event_id = e.id AND r.event_at = e.at "
        "WHERE r.client_id = $1 AND r.ref_type = 'case'",
        known["client_id"],
    )
    # One item per case, updated in place: the latest status, the case's topic
    assert [(r["kind"], r["title"], r["status"], r["channel"]) for r in rows] == [
        ("case", "Немає газу з ранку", "in_progress", "site")
    ]
    assert rows[0]["detail"]["case_type"] == "technical"
    assert (
        await app_conn.fetchval("SELECT ref_id FROM timeline_refs WHERE ref_type = 'case'")
        == number
    )
    # An anonymous case is on nobody's timeline until it is linked
    assert await app_conn.fetchval("SELECT count(*) FROM timeline_refs") == 1
    await ok(
        await client.post(
            f"/api/v1/cases/{anonymous}/client",
            headers=operator,
            json={"client_id": known["client_id"]},
        )
    )
    assert await app_conn.fetchval("SELECT count(*) FROM timeline_refs") == 2
