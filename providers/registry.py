"""Building the channel adapters a process sends through, from its settings, and closing them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

from herald.settings import Settings
from providers.base import Provider
from providers.sms_http import SmsHttpProvider
from providers.smtp import SmtpProvider
from providers.viber_http import ViberHttpProvider


def build_providers(settings: Settings) -> dict[str, Provider]:
    """One adapter per channel (email, viber, sms), not yet connected: pools open on first send."""
    return {
        "email": SmtpProvider(
            host=settings.smtp_host, port=settings.smtp_port, sender=settings.smtp_sender
        ),
        "viber": ViberHttpProvider(
            base_url=settings.viber_api_url, token=settings.provider_api_token
        ),
        "sms": SmsHttpProvider(
            base_url=settings.sms_gateway_url, token=settings.provider_api_token
        ),
    }


async def close_providers(providers: Mapping[str, Provider]) -> None:
    """Close every adapter; one failing to close does not keep the others open."""
    await asyncio.gather(*(p.aclose() for p in providers.values()), return_exceptions=True)


@contextlib.asynccontextmanager
async def open_providers(settings: Settings) -> AsyncIterator[dict[str, Provider]]:
    """The adapters of ``build_providers`` for the life of a ``async with`` block."""
    providers = build_providers(settings)
    try:
        yield providers
    finally:
        await asyncio.shield(close_providers(providers))
