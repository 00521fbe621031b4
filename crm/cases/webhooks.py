"""Secrets of the chat webhooks and the checks of each platform's authentication.

Telegram sends the bot's ``secret_token`` back in ``X-Telegram-Bot-Api-Secret-Token``;
Viber signs the raw body: ``X-Viber-Content-Signature`` is the hex HMAC-SHA256 of the
body keyed with the bot's auth token. The secrets are set by an administrator, stored
in ``case_webhook_secrets`` and never returned.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Annotated, Literal

import asyncpg
import msgspec

from herald import audit
from herald.audit import Actor, Change

WebhookChannel = Literal["viber", "telegram"]
VIBER_SIGNATURE = "X-Viber-Content-Signature"
TELEGRAM_SECRET = "X-Telegram-Bot-Api-Secret-Token"


class CaseWebhookSecret(msgspec.Struct, forbid_unknown_fields=True):
    # Telegram allows 1-256 of A-Z a-z 0-9 _ -; Viber auth tokens fit the same alphabet.
    secret: Annotated[str, msgspec.Meta(min_length=16, max_length=256, pattern=r"^[A-Za-z0-9_-]+$")]


class CaseWebhookState(msgspec.Struct):
    channel: str
    configured: bool
    updated_at: dt.datetime | None
    updated_by: str | None


async def states(conn: asyncpg.Connection) -> list[CaseWebhookState]:
    rows = {
        r["channel"]: r
        for r in await conn.fetch(
            "SELECT channel, updated_at, updated_by FROM case_webhook_secrets"
        )
    }
    return [
        CaseWebhookState(
            c,
            c in rows,
            rows[c]["updated_at"] if c in rows else None,
            rows[c]["updated_by"] if c in rows else None,
        )
        for c in ("viber", "telegram")
    ]


async def set_secret(conn: asyncpg.Connection, actor: Actor, channel: str, secret: str) -> None:
    async with conn.transaction():
        existed = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM case_webhook_secrets WHERE channel = $1)", channel
        )
        await conn.execute(
            "INSERT INTO case_webhook_secrets (channel, secret, updated_by) VALUES ($1, $2, $3) "
            "ON CONFLICT (channel) DO UPDATE SET secret = EXCLUDED.secret, updated_at = herald_now(), "
            "updated_by = EXCLUDED.updated_by",
            channel,
            secret,
            actor.login,
        )
        # The secret itself never goes to the journal.
        await audit.record(
            conn,
            actor,
            [Change("case_webhook", channel, "update" if existed else "create", "secret")],
        )


async def _secret(conn: asyncpg.Connection, channel: str) -> str | None:
    return await conn.fetchval(
        "SELECT secret FROM case_webhook_secrets WHERE channel = $1", channel
    )


async def viber_signed(conn: asyncpg.Connection, body: bytes, signature: str | None) -> bool:
    """Whether the body carries a valid signature of the configured Viber bot."""
    secret = await _secret(conn, "viber")
    if secret is None or not signature:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    # A header may hold any bytes (aiohttp keeps invalid UTF-8 as surrogates): compare bytes.
    return hmac.compare_digest(
        expected.encode(), signature.strip().lower().encode("utf-8", "surrogateescape")
    )


async def telegram_authentic(conn: asyncpg.Connection, token: str | None) -> bool:
    """Whether the header carries the configured Telegram webhook secret."""
    secret = await _secret(conn, "telegram")
    if secret is None or not token:
        return False
    return hmac.compare_digest(secret.encode(), token.encode("utf-8", "surrogateescape"))
