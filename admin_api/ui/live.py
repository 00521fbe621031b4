"""One Server-Sent Events stream per browser tab, carrying every live event the tab needs.

Browsers open at most six HTTP/1.1 connections per host (aiohttp serves no HTTP/2), so a
tab never opens a stream per widget. ``GET /ui/live`` sends:

- ``ready`` first (and again after every reconnection): the page re-reads what it shows,
  since events sent while the stream was down are gone (htmx's SSE extension reconnects
  by itself, with backoff);
- ``call``: an incoming call of this operator (VICIdial via Redis pub/sub, crm.cti),
  as the HTML of the call panel, which may open the identified client's card at once;
- ``case``: ids of cases that changed (PostgreSQL NOTIFY through the process's one
  change feed, crm.cases.live), or ``resync`` when the feed was lost; the page reloads
  the parts showing those cases;
- ``agents``: an agent's presence, capacity or groups changed (supervisors only: the
  wallboard reloads its board).

- ``campaign``: the figures of the campaigns under way, as JSON, whenever they change
  (``admin_api.ui.campaign_live``: one watcher per process, whatever the number of tabs).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from aiohttp import web

from admin_api.routing import AUTHENTICATED, EndpointTable
from admin_api.security import principal
from admin_api.sse import event_stream
from admin_api.typedefs import REDIS, SETTINGS
from admin_api.ui.campaign_live import progress as campaign_progress
from admin_api.ui.guard import SECURITY_HEADERS
from admin_api.ui.rendering import render_text
from admin_api.views.supervisor import FEED
from crm import cti
from crm.cti import CallPush

endpoints = EndpointTable("ui")

PING_SECONDS = 15.0
STREAMS = web.AppKey("ui_live_streams", set[asyncio.Task[Any]])


async def end_streams(app: web.Application) -> None:
    """On shutdown: end the open streams now (browsers reconnect to another process)
    rather than keep the server waiting for them."""
    streams = app[STREAMS]
    for task in list(streams):
        task.cancel()


_decode_push = msgspec.json.Decoder(CallPush)


async def _calls(request: web.Request, out: asyncio.Queue[tuple[str, str]]) -> None:
    """This operator's call events, rendered as the call panel."""
    pubsub = request.app[REDIS].pubsub()
    try:
        await pubsub.subscribe(
            cti.agent_channel(request.app[SETTINGS].namespace, principal(request).login)
        )
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
            if message is None:
                continue
            push = _decode_push.decode(message["data"])
            html = await render_text(request, "_call.html", {"push": push})
            await out.put(("call", html))
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()


async def _cases(request: web.Request, out: asyncio.Queue[tuple[str, str]]) -> None:
    """Ids of changed cases, batched by the change feed's window; agents' changes too
    for a supervisor."""
    supervises = "cases.supervise" in principal(request).permissions
    async with request.app[FEED].subscribe() as sub:
        while True:
            changes = await sub.next(timeout=30.0)
            if changes is None:
                continue
            if changes.resync:
                await out.put(("case", "resync"))
            elif changes.case_ids:
                await out.put(("case", " ".join(str(i) for i in sorted(changes.case_ids))))
            if changes.agents and supervises:
                await out.put(("agents", "changed"))  # presence or load: the wallboard


@endpoints.get("/ui/live", permission=AUTHENTICATED, response=str, media_type="text/event-stream")
async def live(request: web.Request) -> web.StreamResponse:
    """The tab's one stream: ``ready``, then ``call`` and ``case`` events as they happen."""
    permissions = principal(request).permissions
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    sources: list[Any] = []
    if "clients.read" in permissions:
        sources.append(_calls)
    if "cases.read" in permissions:
        sources.append(_cases)
    if "campaigns.read" in permissions:
        sources.append(campaign_progress)
    tasks = [asyncio.create_task(source(request, queue)) for source in sources]
    me = asyncio.current_task()
    if me is not None:
        request.app[STREAMS].add(me)
    try:
        async with event_stream(
            request, ping_interval=PING_SECONDS, headers=SECURITY_HEADERS
        ) as stream:
            await stream.send("ready", event="ready")
            while stream.is_connected():
                try:
                    event, data = await asyncio.wait_for(queue.get(), timeout=PING_SECONDS)
                except TimeoutError:
                    if any(t.done() for t in tasks):
                        break  # a source failed (Redis gone): end; the browser reconnects
                    continue
                await stream.send(data, event=event)
        return stream
    finally:
        request.app[STREAMS].discard(me)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
