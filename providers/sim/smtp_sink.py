"""SMTP sink (aiosmtpd): takes Herald's e-mail, counts it like the other simulators, sends receipts.

The message id is read from the ``X-Herald-Message-Id`` header; a second message with
an id already accepted is answered 250 but counted as a duplicate and not delivered.
Every transaction is one "request" to the ledger, so throttling, deterministic
failures and latency apply per message: 4xx replies for transient trouble, 5xx for
permanent. Delivered receipts follow, and read ones for a share (open tracking).
Its stats and config live on the simulators' HTTP app under ``/email/sim/``.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from herald.settings import Settings
from providers.sim.control import mount_ledger
from providers.sim.ledger import ACCEPTED, SPECS, TRANSIENT, Ledger, ReceiptBatch

EMAIL_SIM = web.AppKey("email_simulator", Ledger)

_ID_HEADER = re.compile(rb"^X-Herald-Message-Id:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*<([^>]+)>", re.IGNORECASE | re.MULTILINE)
_PLAIN_ADDRESS = re.compile(r"\s*<([A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+)>")


def mount_email(app: web.Application, settings: Settings) -> None:
    """Add the e-mail simulator's control routes under /email/sim (the SMTP listener is separate)."""
    mount_ledger(app, settings, SPECS["email"], EMAIL_SIM, describe=describe_email)


class SinkHandler:
    """aiosmtpd handler judging each message with the e-mail ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        ledger = self.ledger
        raw = envelope.original_content or b""
        head = raw[: raw.find(b"\r\n\r\n")]
        found = _ID_HEADER.search(head) or _MESSAGE_ID.search(head)
        message_id = (
            found.group(1).decode(errors="replace")
            if found
            else "sha-" + hashlib.blake2b(raw, digest_size=12).hexdigest()
        )
        address = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        refusal = ledger.admit(1)
        delay = ledger.latency()
        if delay:
            await asyncio.sleep(delay)
        if refusal is not None:
            if refusal.status == 429:
                return "451 4.7.0 Rate limited, try again later"
            return "451 4.3.0 Simulated temporary failure"
        receipts = ReceiptBatch()
        status, detail = ledger.submit(message_id, address, raw, receipts)
        if status == ACCEPTED:
            ledger.schedule_receipts(receipts)
            return f"250 2.0.0 OK queued as {detail}"
        if status == TRANSIENT:
            return f"451 4.3.0 {detail}"
        return f"550 5.1.1 {detail}"


class _SinkSMTP(SMTP):
    """aiosmtpd's SMTP with a fast path for plain ``<local@domain>`` arguments of MAIL and RCPT."""

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # The email-package parser aiosmtpd uses costs ~40 % of the sink's time per
        # message; anything but a plain address still goes through it.
        found = _PLAIN_ADDRESS.match(arg)
        if found:
            return found.group(1), arg[found.end() :]
        return super()._getaddr(arg)


async def start_smtp_sink(
    ledger: Ledger,
    host: str,
    port: int,
    *,
    idle_timeout: float = 300.0,
    sock: socket.socket | None = None,
) -> asyncio.Server:
    """Listen for SMTP on host:port (0: any free port), or on the bound ``sock``, in the
    running loop."""
    loop = asyncio.get_running_loop()
    handler = SinkHandler(ledger)
    # aiosmtpd logs every connection at INFO; a sink taking a campaign must not.
    logging.getLogger("mail.log").setLevel(logging.WARNING)

    def protocol() -> SMTP:
        # A fixed hostname: the default asks DNS (getfqdn) for every connection.
        return _SinkSMTP(
            handler,
            hostname="herald-smtp-sink",
            ident="Herald SMTP sink",
            enable_SMTPUTF8=True,
            timeout=idle_timeout,
            loop=loop,
        )

    if sock is not None:
        return await loop.create_server(protocol, sock=sock)
    return await loop.create_server(protocol, host=host, port=port)


def smtp_sink_context(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context running the SMTP sink on settings.smtp_host:smtp_port with the app."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        server = await start_smtp_sink(app[EMAIL_SIM], settings.smtp_host, settings.smtp_port)
        try:
            yield
        finally:
            server.close()
            await server.wait_closed()

    return context


def describe_email(raw: Any) -> dict[str, Any]:
    """The parts of a recorded message a test looks at: headers, subject, text and HTML."""
    message = email.message_from_bytes(bytes(raw), policy=email.policy.default)
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    return {
        "from": str(message["From"]),
        "to": str(message["To"]),
        "subject": str(message["Subject"]),
        "message_id_header": str(message["Message-ID"]),
        "x_herald_message_id": str(message["X-Herald-Message-Id"]),
        "in_reply_to": str(message["In-Reply-To"]) if message["In-Reply-To"] else None,
        "references": str(message["References"]).split() if message["References"] else [],
        "content_type": message.get_content_type(),
        "text": text.get_content() if text is not None else None,
        "html": html.get_content() if html is not None else None,
    }
