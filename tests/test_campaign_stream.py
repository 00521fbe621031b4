"""Campaign live progress over Server-Sent Events (IC-04), and the per-client drill-down."""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
import re
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from conftest import login_as
from dispatch_helpers import TEMPLATE, Stack, make_clients
from sse_helpers import GUARD, Stream

from admin_api.app import init_app
from herald.settings import Settings


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
        ("viber", "failed"),
        ("sms", "sent"),
        ("sms", "delivered"),
    ]


async def test_stream_of_a_finished_campaign_ends_at_once_and_needs_the_permission(
    stack: Stack,
) -> None:
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
    # A session of its own: the test client keeps the login cookie.
    async with (
        ClientSession() as anonymous,
        anonymous.get(stack.api.make_url(f"/api/v1/campaigns/{campaign}/stream")) as r,
    ):
        assert r.status == 401
    operator = await login_as(stack.api, "operator_cc")
    denied = await stack.api.get(f"/api/v1/campaigns/{campaign}/stream", headers=operator)
    assert denied.status == 403


async def _requests_counted(api: Any, route: str) -> dict[str, float]:
    """This API process's request counts of ``route`` by status (its /metrics)."""
    text = await (await api.get("/metrics")).text()
    pattern = (
        r'herald_http_requests_total\{method="GET",route="'
        + re.escape(route)
        + r'",status="(\d+)"\} ([0-9.]+)'
    )
    return {m.group(1): float(m.group(2)) for m in re.finditer(pattern, text)}


class _Server(TestServer):
    """A test server that cancels handlers of a lost client, or (like ``herald serve``,
    aiohttp's default) lets them run on until they write."""

    def __init__(self, app: web.Application, *, cancel: bool) -> None:
        super().__init__(app)
        self.cancel = cancel

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return web.AppRunner(self.app, **{**kwargs, "handler_cancellation": self.cancel})


@pytest.mark.parametrize(("cancel", "status"), [(False, "200"), (True, "499")])
async def test_a_viewer_leaving_the_stream_is_not_a_server_error(
    settings: Settings,
    demo_users: Any,
    aiohttp_client: Any,
    admin_conn: asyncpg.Connection,
    caplog: Any,
    cancel: bool,
    status: str,
) -> None:
    """Issue 20 point 8: the viewer closes the stream while figures are still moving. The
    write that finds the viewer gone ends the stream as the 200 it was; a server that
    cancels the handler instead counts a 499 (client closed request). Never a 5xx."""
    api = await aiohttp_client(
        _Server(
            init_app(msgspec.structs.replace(settings, campaign_stream_interval_seconds=0.01)),
            cancel=cancel,
        )
    )
    admin = await login_as(api, "admin")
    template = await (await api.post("/api/v1/templates", headers=admin, json=TEMPLATE)).json()
    created = await api.post(
        "/api/v1/campaigns",
        headers=admin,
        json={
            "name": "Тестова розсилка",
            "template_id": template["template"]["id"],
            "audience": {"kind": "clients", "client_ids": [1]},
            "channel_chain": ["sms"],
        },
    )
    campaign = (await created.json())["id"]
    route = "/api/v1/campaigns/{campaign_id}/stream"
    response = await api.get(f"/api/v1/campaigns/{campaign}/stream", headers=admin)
    assert (await Stream(response).next())[0] == "progress"
    # When the viewer leaves while the figures keep changing (each change is a new write)
    response.close()
    with caplog.at_level(logging.INFO):
        loop = asyncio.get_running_loop()
        guard = loop.time() + GUARD
        audience = 1
        while not (counted := await _requests_counted(api, route)):
            assert loop.time() < guard, "the stream never ended"
            audience += 1
            await admin_conn.execute(
                "UPDATE campaigns SET audience_size = $2 WHERE id = $1", campaign, audience
            )
            await asyncio.sleep(0.01)
    # Then the stream ended without a server error, and none was logged
    assert counted == {status: 1.0}
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_every_sse_view_opens_its_stream_through_the_helper() -> None:
    """The same for the CTI and supervisor streams: no view opens an SSE response itself."""
    views = pathlib.Path(__file__).resolve().parent.parent / "admin_api" / "views"
    direct = [
        p.name
        for p in sorted(views.glob("*.py"))
        if re.search(r"\bsse_response\b|EventSourceResponse\(", p.read_text(encoding="utf-8"))
    ]
    assert direct == []
    streams = [
        p.name
        for p in sorted(views.glob("*.py"))
        if 'media_type="text/event-stream"' in p.read_text(encoding="utf-8")
    ]
    assert streams == ["cti.py", "events.py", "supervisor.py"]
    assert all(
        re.search(r"event_stream\(\s*request", (views / name).read_text(encoding="utf-8"))
        for name in streams
    )
    # The web UI's one stream per tab too
    live = (views.parent / "ui" / "live.py").read_text(encoding="utf-8")
    assert re.search(r"event_stream\(\s*request", live)
    assert not re.search(r"\bsse_response\b", live)
