"""E-mail over real SMTP (aiosmtplib) through a small pool of persistent connections.

Each message is multipart/alternative (text + HTML, UTF-8, base64) and carries its
``message_id`` twice: ``Message-ID: <{id}@herald>`` and ``X-Herald-Message-Id``. SMTP
has no idempotency key of its own, so a message whose DATA reply was lost (timeout,
dropped connection) comes back TRANSIENT and may reach a real server twice if resent;
the Herald SMTP sink deduplicates on ``X-Herald-Message-Id`` and counts it.

A message whose content carries an ``unsubscribe_url`` (dispatcher.templating.templates.EmailMessage)
also gets ``List-Unsubscribe`` and, for an https link, ``List-Unsubscribe-Post:
List-Unsubscribe=One-Click`` (RFC 2369, RFC 8058), so mail clients offer their own
unsubscribe button; the link's POST opts the recipient out at once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import hashlib
import re
from collections.abc import Iterator, Sequence

import aiosmtplib

from providers.base import (
    Channel,
    EmailContent,
    Outbound,
    Outcome,
    ProviderUnavailable,
    SendResult,
)

_QUEUED_AS = re.compile(r"queued as (\S+)", re.IGNORECASE)
# Characters allowed in the left part of a Message-ID (RFC 5322 dot-atom-text).
_NOT_ATEXT = re.compile(r"[^A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]")
_UNSAFE_HEADER = re.compile(r"[\x00-\x1f\x7f]")
_ADDRESS_SPECIALS = re.compile(r"[\s<>,;()\[\]\\\"]")
# A message id as it may go between angle brackets in a header: printable ASCII, no <>.
_THREAD_ID = re.compile(r"^[\x21-\x3b\x3d\x3f-\x7e]{1,900}$")
# A link that can go into a header as is: http(s), printable ASCII, no <, > or spaces.
_HEADER_URL = re.compile(r"^https?://[\x21-\x3b\x3d\x3f-\x7e]{1,900}$")
# Failures of the connection itself (as opposed to an SMTP reply with a code).
_CONNECTION_ERRORS = (
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPTimeoutError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


class _ConnectFailed(Exception):
    """No SMTP session could be opened."""


class SmtpProvider:
    """Sends e-mail over ``pool_size`` persistent SMTP connections, one transaction each at a time."""

    name: str = "smtp"
    channel: Channel = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        pool_size: int = 8,
        max_batch: int = 200,
        timeout: float = 15.0,
        start_tls: bool | None = False,
        username: str | None = None,
        password: str | None = None,
        local_hostname: str = "herald.local",
    ) -> None:
        self.max_batch = max_batch
        self._host, self._port, self._timeout = host, port, timeout
        self._start_tls, self._username, self._password = start_tls, username, password
        self._local_hostname = local_hostname
        display, address = email.utils.parseaddr(sender)
        if not address:
            raise ValueError(f"smtp sender {sender!r} has no address")
        self._envelope_from = address
        self._mail_from = b"FROM:<" + address.encode() + b">"
        self._from_header = email.utils.formataddr((display, address), charset="utf-8")
        # LIFO: the most recently used connection is the one most likely still open.
        self._idle: asyncio.LifoQueue[aiosmtplib.SMTP | None] = asyncio.LifoQueue()
        for _ in range(pool_size):
            self._idle.put_nowait(None)
        self._pool_size = pool_size
        self._closed = False

    async def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
        """Send each message in its own SMTP transaction, spread over the pool; results in order."""
        if self._closed:
            raise ProviderUnavailable("smtp: provider is closed")
        if len(batch) > self.max_batch:
            raise ValueError(f"smtp: batch of {len(batch)} exceeds max_batch {self.max_batch}")
        results: list[SendResult | None] = [None] * len(batch)
        state = _BatchState(iter(range(len(batch))))
        date = email.utils.formatdate()
        workers = min(self._pool_size, len(batch))
        await asyncio.gather(*(self._worker(batch, results, state, date) for _ in range(workers)))
        if not state.reached_server and state.connect_error is not None:
            raise ProviderUnavailable(
                f"smtp: cannot connect to {self._host}:{self._port}: {state.connect_error}"
            )
        for i, result in enumerate(results):
            if result is None:  # left when the server went away mid-batch
                results[i] = SendResult(
                    batch[i].message_id, Outcome.TRANSIENT, error="connect_failed"
                )
        return results  # type: ignore[return-value]  # every slot is filled above

    async def _worker(
        self,
        batch: Sequence[Outbound],
        results: list[SendResult | None],
        state: _BatchState,
        date: str,
    ) -> None:
        smtp = await self._idle.get()
        try:
            for i in state.indices:
                if state.connect_error is not None:
                    return  # the server is gone; the caller retries the rest
                message = batch[i]
                prepared = self._prepare(message, date)
                if isinstance(prepared, str):
                    results[i] = SendResult(message.message_id, Outcome.PERMANENT, error=prepared)
                    continue
                try:
                    smtp, results[i] = await self._transaction(
                        smtp, message.message_id, *prepared, state
                    )
                except _ConnectFailed as exc:
                    state.connect_error = str(exc) or type(exc.__cause__).__name__
                    smtp = None
        except BaseException:
            # Cancelled (a campaign paused) mid-transaction: the session is in an
            # unknown state, so it is dropped rather than handed to the next sender.
            if smtp is not None:
                smtp.close()
            smtp = None
            raise
        finally:
            if self._closed and smtp is not None:
                smtp.close()
                smtp = None
            self._idle.put_nowait(smtp)

    async def _transaction(
        self,
        smtp: aiosmtplib.SMTP | None,
        mid: str,
        address: str,
        payload: bytes,
        state: _BatchState,
    ) -> tuple[aiosmtplib.SMTP | None, SendResult]:
        # A pooled connection the server closed while idle fails on MAIL, before any
        # content left: reconnecting once and sending again is safe.
        for fresh in (False, True):
            if smtp is None or not smtp.is_connected:
                smtp, fresh = await self._connect(), True
            step = "mail"
            try:
                # MAIL and RCPT by hand: aiosmtplib's helpers re-parse both addresses
                # with the email package on every message, which halves the rate.
                await _expect(smtp, (250,), b"MAIL", self._mail_from)
                step = "rcpt"
                await _expect(smtp, (250, 251), b"RCPT", b"TO:<" + address.encode() + b">")
                step = "data"
                reply = await smtp.data(payload)
            except aiosmtplib.SMTPResponseException as exc:
                state.reached_server = True
                await _reset_quietly(smtp)
                outcome = Outcome.TRANSIENT if 400 <= exc.code < 500 else Outcome.PERMANENT
                return smtp, SendResult(mid, outcome, error=f"smtp_{exc.code}: {exc.message}"[:200])
            except _CONNECTION_ERRORS as exc:
                await _close_quietly(smtp)
                smtp = None
                if step == "data" or fresh:
                    # The server may have taken the message: hand it back as transient
                    # instead of sending it again here.
                    return None, SendResult(
                        mid, Outcome.TRANSIENT, error=f"connection_lost:{type(exc).__name__}"
                    )
                continue
            state.reached_server = True
            found = _QUEUED_AS.search(reply.message)
            return smtp, SendResult(
                mid, Outcome.ACCEPTED, provider_id=found.group(1) if found else None
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connect(self) -> aiosmtplib.SMTP:
        smtp = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            timeout=self._timeout,
            start_tls=self._start_tls,
            username=self._username,
            password=self._password,
            local_hostname=self._local_hostname,
        )
        try:
            await smtp.connect()
            if smtp.last_ehlo_response is None:
                try:
                    await smtp.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await smtp.helo()
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            await _close_quietly(smtp)
            raise _ConnectFailed(str(exc)) from exc
        return smtp

    def _prepare(self, message: Outbound, date: str) -> tuple[str, bytes] | str:
        """The envelope recipient and the message bytes, or an error code when it cannot be sent."""
        content = message.content
        if not isinstance(content, EmailContent):
            return f"unsupported_content:{type(content).__name__}"
        if _UNSAFE_HEADER.search(message.message_id) or not message.message_id.isascii():
            return "invalid_message_id"
        address = _ascii_address(message.address)
        if address is None:
            return "invalid_address"
        return address, build_mime(message.message_id, self._from_header, address, content, date)

    async def aclose(self) -> None:
        """Say QUIT on every pooled connection; later sends raise ProviderUnavailable."""
        self._closed = True
        while not self._idle.empty():
            smtp = self._idle.get_nowait()
            if smtp is not None and smtp.is_connected:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                    await asyncio.wait_for(smtp.quit(), 2.0)
                await _close_quietly(smtp)


class _BatchState:
    """What the workers of one ``send`` share: the next message to take and how the server is."""

    __slots__ = ("indices", "reached_server", "connect_error")

    def __init__(self, indices: Iterator[int]) -> None:
        self.indices = indices
        self.reached_server = False
        self.connect_error: str | None = None


def build_mime(
    message_id: str, from_header: str, to: str, content: EmailContent, date: str
) -> bytes:
    """A multipart/alternative UTF-8 message with Herald's id headers, built without the slow email package."""
    boundary = "=_herald_" + hashlib.blake2b(message_id.encode(), digest_size=8).hexdigest()
    subject = content.subject.replace("\r", " ").replace("\n", " ")
    thread = thread_headers(
        getattr(content, "in_reply_to", None), getattr(content, "references", ())
    )
    if not subject.isascii() or len(subject) > 70:
        subject = encode_header_words(subject)
    lines = (
        f"From: {from_header}\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: <{_NOT_ATEXT.sub(_hex, message_id)}@herald>\r\n"
        f"X-Herald-Message-Id: {message_id}\r\n"
        f"{unsubscribe_headers(getattr(content, 'unsubscribe_url', None))}"
        f"{thread}"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    return b"".join(
        (
            lines,
            _base64_lines(content.text),
            f'--{boundary}\r\nContent-Type: text/html; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n".encode(),
            _base64_lines(content.html),
            f"--{boundary}--\r\n".encode(),
        )
    )


def unsubscribe_headers(url: str | None) -> str:
    """List-Unsubscribe headers for ``url`` ("" without one, or when it is unsafe in a header).

    One-click (List-Unsubscribe-Post) is declared only for https links, as RFC 8058 asks.
    """
    if not url or not _HEADER_URL.match(url):
        return ""
    one_click = (
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        if url.startswith("https://")
        else ""
    )
    return f"List-Unsubscribe: <{url}>\r\n{one_click}"


def thread_headers(in_reply_to: str | None, references: Sequence[str]) -> str:
    """In-Reply-To and References (RFC 5322 3.6.4) of a reply; ids unsafe in a header are left out.

    Ids are given without angle brackets; References is folded one id per line.
    """
    out = (
        f"In-Reply-To: <{in_reply_to}>\r\n" if in_reply_to and _THREAD_ID.match(in_reply_to) else ""
    )
    kept = [f"<{r}>" for r in references if _THREAD_ID.match(r)]
    if kept:
        out += "References: " + "\r\n ".join(kept) + "\r\n"
    return out


def encode_header_words(text: str) -> str:
    """``text`` as RFC 2047 base64 encoded words of at most 75 characters, folded; no char split."""
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in text:
        length = len(char.encode())
        # 45 bytes make 60 base64 characters: with "=?utf-8?b?" and "?=", 72 per word.
        if size + length > 45:
            words.append(base64.b64encode("".join(chunk).encode()).decode())
            chunk, size = [], 0
        chunk.append(char)
        size += length
    if chunk:
        words.append(base64.b64encode("".join(chunk).encode()).decode())
    return "\r\n ".join(f"=?utf-8?b?{w}?=" for w in words)


async def _expect(smtp: aiosmtplib.SMTP, codes: tuple[int, ...], *command: bytes) -> None:
    response = await smtp.execute_command(*command)
    if response.code not in codes:
        raise aiosmtplib.SMTPResponseException(response.code, response.message)


def _base64_lines(text: str) -> bytes:
    return base64.encodebytes(text.encode()).replace(b"\n", b"\r\n")


def _hex(match: re.Match[str]) -> str:
    return "".join(f"={b:02X}" for b in match.group(0).encode())


def _ascii_address(address: str) -> str | None:
    """The address as SMTP can carry it without SMTPUTF8 (IDN domain in punycode), or None."""
    if (
        _UNSAFE_HEADER.search(address)
        or address.count("@") != 1
        or _ADDRESS_SPECIALS.search(address)
    ):
        return None
    local, domain = address.split("@")
    if not local or not domain or not local.isascii():
        return None
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode()
        except UnicodeError:
            return None
    return f"{local}@{domain}"


async def _reset_quietly(smtp: aiosmtplib.SMTP) -> None:
    if smtp.is_connected:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            await smtp.rset()


async def _close_quietly(smtp: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(Exception):
        smtp.close()
