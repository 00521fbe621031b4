"""Simulated SMS gateway and Viber business-messages API: ``POST /{sms|viber}/v1/messages``.

They speak the batch wire format of providers/http_batch.py. Per-message work is kept
to a hash, a table probe and a verdict: no logging, msgspec both ways, so one core
takes tens of thousands of messages a second.
"""

from __future__ import annotations

import asyncio

import msgspec
from aiohttp import web

from herald.settings import Settings
from providers.http_batch import WireMessage, WireResponse, WireResult
from providers.sim.control import mount_ledger, problem
from providers.sim.ledger import ACCEPTED, SPECS, Ledger, ReceiptBatch

SMS_SIM = web.AppKey("sms_simulator", Ledger)
VIBER_SIM = web.AppKey("viber_simulator", Ledger)
MAX_BATCH = 1000


def mount_sms(app: web.Application, settings: Settings) -> None:
    """Add the SMS gateway simulator under /sms."""
    _mount_gateway(app, settings, "sms", SMS_SIM)


def mount_viber(app: web.Application, settings: Settings) -> None:
    """Add the Viber API simulator under /viber."""
    _mount_gateway(app, settings, "viber", VIBER_SIM)


def _mount_gateway(
    app: web.Application, settings: Settings, channel: str, key: web.AppKey[Ledger]
) -> None:
    ledger = mount_ledger(app, settings, SPECS[channel], key)
    expected_auth = f"Bearer {settings.provider_api_token}"
    decoder = msgspec.json.Decoder(list[WireMessage])
    encoder = msgspec.json.Encoder()

    async def post_messages(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != expected_auth:
            return problem(401, "missing or wrong bearer token")
        try:
            items = decoder.decode(await request.read())
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return problem(400, f"bad batch: {exc}")
        if len(items) > MAX_BATCH:
            return problem(413, f"at most {MAX_BATCH} messages per request")
        refusal = ledger.admit(len(items), request.headers.get("Idempotency-Key"))
        if refusal is not None:
            await _sleep(ledger.latency())
            if refusal.status == 429:
                return web.Response(
                    status=429,
                    headers={"Retry-After": f"{refusal.retry_after:g}"},
                    text="throttled",
                )
            return problem(refusal.status, "simulated provider failure")
        receipts = ReceiptBatch()
        submit = ledger.submit
        results = []
        for item in items:
            status, detail = submit(item.message_id, item.to, item, receipts)
            if status == ACCEPTED:
                results.append(WireResult(item.message_id, status, provider_id=detail))
            else:
                results.append(WireResult(item.message_id, status, error=detail))
        ledger.schedule_receipts(receipts)
        # The work is done before the wait: a client timing out has still been served,
        # as with a real gateway, and its resend must be caught as a duplicate.
        await _sleep(ledger.latency())
        return web.Response(
            body=encoder.encode(WireResponse(results)), content_type="application/json"
        )

    app.router.add_post(f"/{channel}/v1/messages", post_messages)


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)
