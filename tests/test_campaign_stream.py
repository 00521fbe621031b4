"""Campaign live progress over Server-Sent Events (IC-04), and the per-client drill-down."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import ClientSession
from conftest import login_as
from dispatch_helpers import Stack, make_clients


async def read_events(response: Any, limit: float = 60.0) -> list[tuple[str, dict[str, Any]]]:
    """Parse an SSE stream until the server closes it: (event name, JSON data) pairs."""
    events: list[tuple[str, dict[str, Any]]] = []
    name, data = "message", ""

    async def consume() -> None:
        nonlocal name, data
        async for raw in response.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif line == "" and data:
                events.append((name, json.loads(data)))
                name, data = "message", ""

    await asyncio.wait_for(consume(), limit)
    return events


async def test_stream_pushes_progress_then_a_final_event(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 30)
    no_phone = await make_clients(stack.conn, 3, phone=False, start=100)
    # Given Viber that does not know five of the clients: they fall back to SMS
    await stack.configure("viber", unknown_addresses=[f"+38050{i:07d}" for i in ids[:5]])
    campaign = await stack.campaign([*ids, *no_phone], chain=["viber", "sms"])
    analyst = await login_as(stack.api, "analyst")
    response = await stack.api.get(f"/api/v1/campaigns/{campaign}/stream", headers=analyst)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    # When the campaign is launched while an analyst follows the stream
    reader = asyncio.create_task(read_events(response))
    await stack.launch(campaign)
    events = await reader
    # Then progress came first (the draft, then the figures as they moved) and one final event
    names = [n for n, _ in events]
    assert names[-1] == "final" and names.count("final") == 1
    assert names.count("progress") >= 2
    assert events[0][1]["status"] == "draft"
    final = events[-1][1]
    assert final["status"] == "completed" and final["audience"] == 33
    assert final["totals"]["sent"] == 30
    assert final["by_channel"]["viber"]["sent"] == 25
    assert final["by_channel"]["sms"]["sent"] == 5
    assert final["by_channel"]["viber"]["failed"] == 5
    assert final["skipped_by_reason"] == {"no_contact": 6}  # no phone: Viber and SMS skipped
    assert final["totals"]["delivered"] == 30 and final["awaiting_receipts"] == 0
    # Progress only ever grows
    sent = [data["totals"]["sent"] for _, data in events]
    assert sent == sorted(sent)
    # The per-client drill-down shows the fallback of one client
    history = await stack.call("GET", f"/api/v1/campaigns/{campaign}/recipients/{ids[0]}")
    assert [(e["channel"], e["status"]) for e in history["events"]][:3] == [
        ("viber", "failed"), ("sms", "sent"), ("sms", "delivered")]


async def test_stream_of_a_finished_campaign_ends_at_once_and_needs_the_permission(
        stack: Stack) -> None:
    ids = await make_clients(stack.conn, 2)
    campaign = await stack.campaign(ids)
    await stack.launch(campaign)
    await stack.wait(lambda s: s["status"] == "completed", campaign)
    response = await stack.api.get(f"/api/v1/campaigns/{campaign}/stream", headers=stack.headers)
    events = await read_events(response, limit=10)
    assert [n for n, _ in events] == ["progress", "final"]
    assert events[-1][1]["totals"]["sent"] == 2
    # Unknown campaign: 404 before any stream; no session: 401; operators lack campaigns.read
    missing = await stack.api.get("/api/v1/campaigns/999/stream", headers=stack.headers)
    assert missing.status == 404
    async with ClientSession() as anonymous:  # the test client keeps the login cookie
        async with anonymous.get(stack.api.make_url(f"/api/v1/campaigns/{campaign}/stream")) as r:
            assert r.status == 401
    operator = await login_as(stack.api, "operator_cc")
    denied = await stack.api.get(f"/api/v1/campaigns/{campaign}/stream", headers=operator)
    assert denied.status == 403
