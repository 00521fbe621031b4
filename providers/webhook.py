"""Signed webhook calls of the case rules (issue 15).

The body is JSON; ``X-Herald-Signature: sha256=<hex>`` is the HMAC-SHA256 of
``<X-Herald-Timestamp>.<body>`` keyed with the installation's webhook secret, so a
receiver can check both the sender and the freshness. One call has a time limit; the
retries are the caller's (the case rule outbox, with backoff).
"""

from __future__ import annotations

import hashlib
import hmac

import aiohttp

SIGNATURE = "X-Herald-Signature"
TIMESTAMP = "X-Herald-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class WebhookClient:
    """One HTTP session for the webhooks of a process (made on first use)."""

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._own = session is None

    async def post_signed(
        self, url: str, body: bytes, secret: str, timestamp: str, *, timeout: float = 5.0
    ) -> str | None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return await post_signed(self._session, url, body, secret, timestamp, timeout=timeout)

    async def close(self) -> None:
        if self._session is not None and self._own:
            await self._session.close()
        self._session = None


async def post_signed(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    secret: str,
    timestamp: str,
    *,
    timeout: float = 5.0,
) -> str | None:
    """POST the body; None when the receiver answered 2xx, else what went wrong."""
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP: timestamp,
        SIGNATURE: sign(secret, timestamp, body),
    }
    try:
        async with session.post(
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            if 200 <= response.status < 300:
                return None
            return f"HTTP {response.status}"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except aiohttp.ClientError as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
