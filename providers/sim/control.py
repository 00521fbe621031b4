"""The control endpoints every simulated channel shares, under ``/{channel}/sim/``.

``GET|PUT config`` (PUT merges a partial JSON object), ``GET stats``, ``POST reset``
(ids, counts, receipts due and config back to start), ``GET messages?message_id=|address=|limit=``;
plus the background task posting the channel's receipts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from herald.settings import Settings
from providers.sim.ledger import ChannelSpec, Ledger, MessageRecord, SimConfig
from providers.sim.receipts import post_receipts_forever

Describe = Callable[[Any], Any]
"""Turns a recorded message's content into JSON-able data for GET messages."""

_encoder = msgspec.json.Encoder()


def default_config(settings: Settings, channel: str) -> SimConfig:
    """A channel's starting config: receipts go to this Herald's callback endpoint."""
    return SimConfig(
        callback_url=f"{settings.public_base_url.rstrip('/')}/api/v1/providers/{channel}/receipts",
        callback_token=settings.provider_api_token,
    )


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON response encoded with msgspec."""
    return web.Response(body=_encoder.encode(data), status=status, content_type="application/json")


def problem(status: int, detail: str) -> web.Response:
    """An RFC 9457 problem response."""
    body = {"type": "about:blank", "status": status, "detail": detail}
    return web.Response(
        body=_encoder.encode(body), status=status, content_type="application/problem+json"
    )


def mount_ledger(
    app: web.Application,
    settings: Settings,
    spec: ChannelSpec,
    key: web.AppKey[Ledger],
    describe: Describe = msgspec.to_builtins,
) -> Ledger:
    """Create a channel's ledger, store it under ``key`` and add its control routes and receipt poster."""
    ledger = Ledger(spec, default_config(settings, spec.channel))
    app[key] = ledger
    prefix = f"/{spec.channel}/sim"

    async def get_config(request: web.Request) -> web.Response:
        return json_response(ledger.config)

    async def put_config(request: web.Request) -> web.Response:
        try:
            patch = msgspec.json.decode(await request.read())
        except msgspec.DecodeError as exc:
            return problem(400, f"body is not JSON: {exc}")
        if not isinstance(patch, dict):
            return problem(400, "body must be a JSON object of config fields")
        try:
            return json_response(ledger.configure(patch))
        except ValueError as exc:
            return problem(400, str(exc))

    async def get_stats(request: web.Request) -> web.Response:
        return json_response(ledger.snapshot())

    async def post_reset(request: web.Request) -> web.Response:
        ledger.reset()
        return json_response(ledger.snapshot())

    async def get_messages(request: web.Request) -> web.Response:
        query = request.query
        message_id = query.get("message_id")
        try:
            limit = int(query.get("limit", "100"))
        except ValueError:
            return problem(400, "limit must be a whole number")
        records = ledger.find(message_id, query.get("address"), limit)
        body: dict[str, Any] = {"messages": [_describe(r, describe) for r in records]}
        if message_id is not None:
            body["accepted"] = ledger.was_accepted(message_id)
        return json_response(body)

    app.router.add_get(f"{prefix}/config", get_config)
    app.router.add_put(f"{prefix}/config", put_config)
    app.router.add_get(f"{prefix}/stats", get_stats)
    app.router.add_post(f"{prefix}/reset", post_reset)
    app.router.add_get(f"{prefix}/messages", get_messages)
    app.cleanup_ctx.append(_receipt_poster(ledger))
    return ledger


def _describe(record: MessageRecord, describe: Describe) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.structs.asdict(record)
    data["content"] = describe(record.content) if record.content is not None else None
    return data


def _receipt_poster(ledger: Ledger) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        session = aiohttp.ClientSession()
        task = asyncio.create_task(
            post_receipts_forever(ledger, session), name=f"receipts-{ledger.spec.channel}"
        )
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await session.close()

    return context
