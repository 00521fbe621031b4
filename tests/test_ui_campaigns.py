"""The marketer's campaign and trigger pages (/ui/campaigns, /ui/triggers) over HTTP:
create a draft with a chain and limits, a bad field shown next to it, edit, launch,
pause, stop, copy, recipients and the drill-down, the live stream's campaign figures;
trigger rules, producers and their keys, recent events; the new API endpoints."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from conftest import login_as
from dispatch_helpers import TEMPLATE, Stack, make_clients
from ui_helpers import export_form, origin, post_form, ui_login

from admin_api.ui.trigger_pages import parse_value, show_value


async def _setup(client: Any, conn: Any, n: int = 5) -> tuple[int, int, dict[str, str]]:
    await make_clients(conn, n, region="UA-46")
    admin = await login_as(client, "admin")
    response = await client.post("/api/v1/templates", json=TEMPLATE, headers=admin)
    assert response.status == 201, await response.text()
    template_id = (await response.json())["template"]["id"]
    body = {
        "name": "Львів",
        "kind": "static",
        "condition": {"attribute": "account.region", "op": "equals", "value": "UA-46"},
    }
    response = await client.post("/api/v1/segments", json=body, headers=admin)
    assert response.status == 201, await response.text()
    return template_id, (await response.json())["id"], admin


def _form(template_id: int, segment_id: int, **extra: str) -> dict[str, Any]:
    return {
        "name": "Борг грудня",
        "segment_id": str(segment_id),
        "template": f"{template_id}:1",
        "channel_chain": ["email", "viber", "sms"],
        "rate_per_minute": "600",
        "receipt_timeout_seconds": "60",
        **extra,
    }


async def _post(client: Any, path: str, data: Any, token: str) -> Any:
    """A plain form post (a full page, not htmx), as the campaign form sends it."""
    headers = {"Origin": origin(client)}
    if isinstance(data, dict):
        data = [(k, x) for k, v in data.items() for x in (v if isinstance(v, list) else [v])]
    data = [*data, ("csrf_token", token)]
    return await client.post(path, data=data, headers=headers, allow_redirects=False)


async def test_campaign_form_creates_edits_launches_and_copies(
    client, demo_users, admin_conn
) -> None:
    template_id, segment_id, _ = await _setup(client, admin_conn)
    token = await ui_login(client, "marketer")
    page = await client.get("/ui/campaigns/new")
    text = await page.text()
    assert page.status == 200 and "Львів" in text and f'value="{template_id}:1"' in text
    # A bad field: the form comes back with the error next to that field, values kept
    bad = await _post(
        client, "/ui/campaigns/new", _form(template_id, segment_id, rate_per_minute="0"), token
    )
    text = await bad.text()
    assert bad.status == 400
    assert 'data-error-for="rate_per_minute"' in text and "Борг грудня" in text
    no_chain = _form(template_id, segment_id)
    no_chain["channel_chain"] = []
    bad = await _post(client, "/ui/campaigns/new", no_chain, token)
    assert bad.status == 400 and 'data-error-for="channel_chain"' in await bad.text()
    # The chain's order is the order of the boxes sent: SMS first, then e-mail
    form = _form(template_id, segment_id)
    form["channel_chain"] = ["sms", "email"]
    created = await _post(client, "/ui/campaigns/new", form, token)
    assert created.status == 303, await created.text()
    campaign_id = int(created.headers["Location"].rsplit("/", 1)[1])
    row = await admin_conn.fetchrow("SELECT * FROM campaigns WHERE id = $1", campaign_id)
    assert row["channel_chain"] == ["sms", "email"]
    assert row["rate_per_minute"] == 600 and row["rate_per_hour"] is None
    assert row["audience"] == {"kind": "segment", "segment_id": segment_id}
    # Edit the draft: the chain becomes Email -> Viber -> SMS with an hourly limit
    edited = await _post(
        client,
        f"/ui/campaigns/{campaign_id}/edit",
        _form(template_id, segment_id, rate_per_hour="10000"),
        token,
    )
    assert edited.status == 303
    row = await admin_conn.fetchrow("SELECT * FROM campaigns WHERE id = $1", campaign_id)
    assert row["channel_chain"] == ["email", "viber", "sms"] and row["rate_per_hour"] == 10000
    page = await (await client.get(f"/ui/campaigns/{campaign_id}")).text()
    assert 'id="launch"' in page and "Viber → SMS" in page
    # Listed, filtered by status
    listed = await (await client.get("/ui/campaigns/rows?status=draft")).text()
    assert f'data-campaign-row="{campaign_id}"' in listed
    listed = await (await client.get("/ui/campaigns/rows?status=running")).text()
    assert f'data-campaign-row="{campaign_id}"' not in listed
    bad_filter = await client.get("/ui/campaigns/rows?status=nope")
    assert bad_filter.status == 400
    # Launch at a later time: scheduled; stop it; a stopped campaign cannot be edited
    launched = await post_form(
        client, f"/ui/campaigns/{campaign_id}/launch", {"at": "2099-01-01T09:00"}, token
    )
    assert launched.status == 200 and 'data-status="scheduled"' in await launched.text()
    refused = await post_form(client, f"/ui/campaigns/{campaign_id}/pause", {}, token)
    assert refused.status == 400  # a page shows the conflict (guard: HTML, not JSON)
    stopped = await post_form(client, f"/ui/campaigns/{campaign_id}/stop", {}, token)
    assert 'data-status="stopped"' in await stopped.text()
    edit = await client.get(f"/ui/campaigns/{campaign_id}/edit", allow_redirects=False)
    assert edit.status == 303
    # Copy: a new draft with the same settings, its form opens
    copied = await _post(client, f"/ui/campaigns/{campaign_id}/copy", {}, token)
    assert copied.status == 303
    found = re.search(r"/ui/campaigns/(\d+)/edit", copied.headers["Location"])
    assert found is not None
    copy_id = int(found.group(1))
    row = await admin_conn.fetchrow("SELECT * FROM campaigns WHERE id = $1", copy_id)
    assert row["status"] == "draft" and row["channel_chain"] == ["email", "viber", "sms"]
    assert row["rate_per_minute"] == 600 and row["rate_per_hour"] == 10000
    # An analyst sees campaigns but has no buttons and may not launch
    token = await ui_login(client, "analyst")
    page = await (await client.get(f"/ui/campaigns/{copy_id}")).text()
    assert 'id="launch"' not in page and 'id="copy-campaign"' not in page
    refused = await post_form(client, f"/ui/campaigns/{copy_id}/launch", {}, token)
    assert refused.status == 403


async def test_campaign_runs_funnel_recipients_drill_down_and_live_figures(
    stack: Stack,
) -> None:
    client = stack.api
    ids = await make_clients(stack.conn, 6, region="UA-46")
    template_id = await stack.template()
    campaign_id = await stack.campaign(
        ids, chain=("email", "viber", "sms"), template_id=template_id
    )
    token = await ui_login(client, "marketer")
    # The live stream carries the campaign's figures as it runs
    got: list[str] = []

    async def listen() -> None:
        async with client.get("/ui/live") as response:
            event = ""
            async for raw in response.content:
                line = raw.decode().strip()
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "campaign":
                    got.append(line[5:])
                    if f'"{campaign_id}":{{"status":"completed"' in line:
                        return

    listener = asyncio.create_task(listen())
    launched = await post_form(client, f"/ui/campaigns/{campaign_id}/launch", {}, token)
    assert launched.status == 200
    await stack.wait(lambda s: s["status"] == "completed", campaign_id)
    await asyncio.wait_for(listener, 20)
    assert got and '"sent":6' in got[-1] and '"audience":6' in got[-1]
    # The page's funnel, by channel
    page = await (await client.get(f"/ui/campaigns/{campaign_id}")).text()
    assert re.search(r'data-k="sent:email">6<', page), page
    # Recipients by status, and the export engine writes every one (CSV and XLSX)
    part = await (await client.get(f"/ui/campaigns/{campaign_id}/recipients?status=sent")).text()
    assert all(f'data-client="{i}"' in part for i in ids)
    form = export_form(page, "recipients-export")
    assert form["kind"] == "campaign_recipients" and form["f.status"] == "sent"
    assert form["f.campaign_id"] == str(campaign_id)
    export = await post_form(client, "/ui/exports", {**form, "format": "csv"}, token)
    lines = (await export.text()).lstrip("\ufeff").strip().split("\n")
    assert export.status == 200 and lines[0] == "client_id,status,step,channel,reason,at"
    assert sorted(int(x.split(",")[0]) for x in lines[1:]) == ids
    assert all(",sent,0,email," in x for x in lines[1:])
    xlsx = await post_form(client, "/ui/exports", {**form, "format": "xlsx"}, token)
    assert xlsx.status == 200 and (await xlsx.read())[:2] == b"PK"
    gone = await client.get(f"/api/v1/campaigns/{campaign_id}/recipients.csv?status=sent")
    assert gone.status == 404
    bad = await client.get(f"/api/v1/campaigns/{campaign_id}/recipients?status=nope")
    assert bad.status == 400 and (await bad.json())["errors"][0]["field"] == "status"
    page1 = await client.get(
        f"/api/v1/campaigns/{campaign_id}/recipients?status=sent&limit=4", headers=stack.headers
    )
    body = await page1.json()
    assert [r["client_id"] for r in body["items"]] == ids[:4] and body["next_after"] == ids[3]
    # The drill-down: one client's messages, steps and receipts
    drill = await (
        await client.get(f"/ui/campaigns/{campaign_id}/recipient?client_id={ids[0]}")
    ).text()
    assert 'data-status="sent"' in drill and 'data-status="delivered"' in drill
    assert f"c{campaign_id}:{ids[0]}:0" in drill
    # The throughput series has the sends
    series = await (await client.get(f"/api/v1/campaigns/{campaign_id}/series")).json()
    assert sum(p[1] for p in series) == 6


async def test_trigger_rules_producers_and_recent_events(client, demo_users, admin_conn) -> None:
    template_id, _, admin = await _setup(client, admin_conn, 2)
    token = await ui_login(client, "admin")
    page = await (await client.get("/ui/triggers/new")).text()
    assert 'name="cond_path"' in page
    form = [
        ("name", "Оплата отримана"),
        ("event_type", "billing.payment_received"),
        ("template", f"{template_id}:1"),
        ("channel_chain", "viber"),
        ("channel_chain", "sms"),
        ("cond_path", "amount"),
        ("cond_op", "gte"),
        ("cond_value", "100"),
        ("cond_path", ""),
        ("cond_op", "eq"),
        ("cond_value", ""),
        ("client_attribute", "region"),
        ("client_op", "in"),
        ("client_value", "UA-46, UA-32"),
        ("delay_seconds", "0"),
        ("max_messages", "2"),
        ("period_seconds", "86400"),
        ("is_active", "true"),
    ]
    # A bad value: shown next to the conditions, the rows kept
    bad = await _post(
        client,
        "/ui/triggers/new",
        [*form[:6], ("cond_op", "in"), ("cond_value", ""), *form[8:]],
        token,
    )
    text = await bad.text()
    assert bad.status == 400 and 'data-error-for="conditions"' in text and "Оплата отримана" in text
    created = await _post(client, "/ui/triggers/new", form, token)
    assert created.status == 303, await created.text()
    rule = await admin_conn.fetchrow("SELECT * FROM trigger_rules ORDER BY id DESC LIMIT 1")
    assert rule["channel_chain"] == ["viber", "sms"] and rule["max_messages"] == 2
    assert rule["conditions"][0]["value"] == 100
    assert rule["client_conditions"][0]["value"] == ["UA-46", "UA-32"]
    # Disable and enable from the list
    off = await post_form(client, f"/ui/triggers/{rule['id']}/active", {"active": "false"}, token)
    assert off.status == 200 and 'aria-pressed="false"' in await off.text()
    assert not await admin_conn.fetchval(
        "SELECT is_active FROM trigger_rules WHERE id = $1", rule["id"]
    )
    await post_form(client, f"/ui/triggers/{rule['id']}/active", {"active": "true"}, token)
    # The edit form shows the conditions as they were typed
    edit = await (await client.get(f"/ui/triggers/{rule['id']}/edit")).text()
    assert 'value="UA-46, UA-32"' in edit and 'value="100"' in edit
    # A producer: its key is shown once, then only its prefix
    made = await post_form(
        client,
        "/ui/triggers/producers",
        {"name": "Білінг", "event_types": "billing.payment_received"},
        token,
    )
    text = await made.text()
    shown = re.search(r'id="api-key">([^<]+)<', text)
    assert shown is not None
    key = shown.group(1)
    assert key.startswith("hpk_")
    listed = await (await client.get("/ui/triggers")).text()
    assert key not in listed and "Білінг" in listed
    # The producer posts an event: it shows with the message it caused
    event = {
        "events": [
            {
                "event_id": "pay-1",
                "type": "billing.payment_received",
                "client_id": 1,
                "occurred_at": "2026-12-01T10:00:00+02:00",
                "data": {"amount": 150},
            }
        ]
    }
    posted = await client.post(
        "/api/v1/events", json=event, headers={"Authorization": f"Bearer {key}"}
    )
    assert posted.status == 200, await posted.text()
    events = await (await client.get("/ui/triggers/events")).text()
    assert 'data-event="pay-1"' in events and "Оплата отримана" in events
    api = await (await client.get("/api/v1/producer-events", headers=admin)).json()
    assert api[0]["event_id"] == "pay-1" and api[0]["messages"][0]["rule_id"] == rule["id"]
    # Revoke the key: refused from now on
    producer_id = api[0]["producer_id"]
    await post_form(client, f"/ui/triggers/producers/{producer_id}/revoke", {}, token)
    again = await client.post(
        "/api/v1/events", json=event, headers={"Authorization": f"Bearer {key}"}
    )
    assert again.status == 403
    # A marketer manages rules but not producers
    await ui_login(client, "marketer")
    page = await (await client.get("/ui/triggers")).text()
    assert 'id="producer-form"' not in page and 'id="new-rule"' in page


def test_condition_values_round_trip() -> None:
    assert parse_value("in", "UA-46, 3, true") == ["UA-46", 3, True]
    assert parse_value("gte", "100.5") == 100.5
    assert parse_value("eq", "0012") == "0012"
    assert parse_value("exists", "x") is None
    assert show_value(["UA-46", 3, True]) == "UA-46, 3, true"
