"""Server-Sent Events responses whose viewer may leave at any moment.

A viewer closing the tab, or a stalled client the send timeout gave up on, is how every
stream ends sooner or later: the write that finds the connection gone ends the stream
as a normal response (logged at INFO, counted as the 200 it was), never a 500. Any
other error, and a write failing while the viewer is still there, is raised as before.
Every SSE view opens its stream here (tests/test_campaign_stream.py checks it).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

log = logging.getLogger("herald.api.sse")

PING_SECONDS = 15.0


def viewer_gone(request: web.Request) -> bool:
    """The client's connection is closed or closing."""
    transport = request.transport
    return transport is None or transport.is_closing()


@asynccontextmanager
async def event_stream(
    request: web.Request,
    *,
    ping_interval: float = PING_SECONDS,
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[EventSourceResponse]:
    """An open SSE response; a write to a viewer who left ends the block quietly."""
    async with sse_response(
        request, ping_interval=ping_interval, headers=dict(headers or {})
    ) as resp:
        try:
            yield resp
        except (ConnectionResetError, TimeoutError):
            # aiohttp's ClientConnectionResetError is a ConnectionResetError; a send that
            # timed out on a stalled client has aborted its transport.
            if not viewer_gone(request):
                raise
            log.info("the viewer of %s left", request.path)
