"""Operator replies to a case's client (issue 5 point 1): e-mail in the thread, or SMS/Viber.

An e-mail reply is one row of case_email_outbox plus the case's outgoing message event,
written in one transaction; it is handed to SMTP after commit (``deliver_due``) and, if
SMTP was down or answered 4xx, again by the scheduler with a growing back-off. Its
Message-ID is '<message_id@herald>' and the case event's external id is
'email:<message_id>@herald', so the client's answer (In-Reply-To/References naming it)
threads back into the case through intake.

Guarantee: a reply is never lost (it is committed before any send) and is never handed
to SMTP twice once SMTP accepted it; each attempt claims the row under a lease, so two
senders never send it at once. A second hand-over happens only when the outcome of an
attempt is unknown (the process died mid-send, or the connection broke after DATA),
and it carries the same Message-ID and X-Herald-Message-Id, which receivers (and the
Herald SMTP sink) use to drop the copy.

A reply on a phone channel (call, Viber, app, walk-in, forms without an e-mail) is a
realtime message of the reply template, its text carried as the ``case_text`` variable,
Viber first and SMS as the fallback (Viber alone when the text is too long for an SMS);
the send rules (stop list, consent, quiet hours, air-raid) are checked first and a
refusal names its reason.
"""

from __future__ import annotations

import datetime as dt
import html
import secrets
from collections.abc import Sequence
from typing import Annotated, Literal

import asyncpg
import msgspec
import redis.asyncio as aioredis
from msgspec import Meta

from crm import timeline
from crm.cases import rule_engine, store, transitions
from crm.cases.store import NewEvent
from crm.cases.types import Case
from dispatcher.realtime import messages as realtime
from dispatcher.realtime.operator_send import _DETAIL, SendRefused, check_rules
from dispatcher.recipients import Organisation, load_recipients
from dispatcher.templating.sms_text import sms_stats
from dispatcher.templating.templates import TemplateLimits
from herald import audit, clock
from herald.audit import Actor, Change
from herald.errors import Conflict, InvalidInput
from herald.settings import Settings
from providers.base import (
    EmailContent,
    Outbound,
    Outcome,
    ProviderUnavailable,
    SendResult,
)
from providers.smtp import SmtpProvider

# How long one attempt holds its row: a sender that died frees it after this.
LEASE_SECONDS = 120.0
MAX_BACKOFF_SECONDS = 900.0
PHONE_TEXT_MAX = 1000
SMS_SEGMENTS_MAX = TemplateLimits().max_sms_segments
_THREAD_MAX = 20
_PHONE_CHANNELS = ("call", "viber", "app", "walk_in")

ReplyChannel = Literal["email", "sms", "viber"]


class ReplyRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the operator writes; ``channel`` overrides the case's own channel."""

    text: Annotated[str, Meta(min_length=1, max_length=20_000)]
    subject: Annotated[str, Meta(min_length=1, max_length=300)] | None = None
    channel: ReplyChannel | None = None


class ReplyAccepted(msgspec.Struct, frozen=True):
    case_id: int
    channel: str
    message_id: str
    channel_chain: list[str] = []
    external_id: str | None = None
    status: str = "queued"


class ThreadedEmail(EmailContent, frozen=True, tag="email"):
    """An e-mail that continues a thread: the SMTP adapter writes In-Reply-To and References."""

    in_reply_to: str | None = None
    references: tuple[str, ...] = ()


def _email_html(text: str) -> str:
    return "<p>" + html.escape(text).replace("\n", "<br>\n") + "</p>"


async def case_variables(
    conn: asyncpg.Connection, case: Case, text: str = "", *, status: str | None = None
) -> dict[str, object]:
    """The case's template variables (its status, or ``status`` when given, by name)."""
    row = await conn.fetchrow(
        "SELECT s.name_uk, s.name_en, cat.name_uk AS category FROM case_statuses s "
        "LEFT JOIN case_categories cat ON cat.id = $2 WHERE s.code = $1",
        status or case.status,
        case.category_id,
    )
    deadline = await conn.fetchrow(
        "SELECT body, data FROM case_events WHERE case_id = $1 AND kind = 'deadline' "
        "ORDER BY id DESC LIMIT 1",
        case.id,
    )
    return {
        "case_number": case.number,
        "case_status": row["name_uk"] if row else "",
        "case_status_en": row["name_en"] if row else "",
        "case_category": (row["category"] if row else None) or "не визначено",
        "case_deadline": deadline_text(deadline["data"]) if deadline else "",
        "case_text": text,
    }


def deadline_text(data: object) -> str:
    """A deadline event's due time in Kyiv time ('05.12.2026 17:00').

    ``crm.cases.sla.change_deadline`` stores the new time as ``data.new_due_at`` in
    ISO 8601 (its text is the reason, never shown as a time).
    """
    if isinstance(data, dict):
        for key in ("new_due_at",):
            value = data.get(key)
            if isinstance(value, str):
                try:
                    moment = dt.datetime.fromisoformat(value)
                except ValueError:
                    continue
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=dt.UTC)
                return moment.astimezone(clock.business_tz()).strftime("%d.%m.%Y %H:%M")
    return ""


def reply_channel(case: Case, request: ReplyRequest, has_email: bool) -> str:
    """Where the reply goes: the requested channel, else the case's own."""
    if request.channel is not None:
        return request.channel
    if case.channel == "email" or (case.channel in ("site", "cabinet") and has_email):
        return "email"
    if case.channel in (*_PHONE_CHANNELS, "site", "cabinet"):
        return "phone"
    raise SendRefused(
        422,
        "channel_unsupported",
        f"replies on the {case.channel} channel are not supported; "
        "choose channel sms, viber or email",
    )


async def _client_contact(
    conn: asyncpg.Connection, client_id: int | None, organisation: Organisation
) -> tuple[str | None, str | None]:
    if client_id is None:
        return None, None
    found = await load_recipients(conn, [client_id], organisation)
    return (found[0].phone, found[0].email) if found else (None, None)


async def _email_thread(
    conn: asyncpg.Connection, case_id: int
) -> tuple[str | None, list[str], str | None]:
    """(In-Reply-To, References, subject of the latest inbound) from the case's e-mails."""
    rows = await conn.fetch(
        "SELECT external_id, direction, data FROM case_events WHERE case_id = $1 "
        "AND external_id LIKE 'email:%' ORDER BY id",
        case_id,
    )
    ids = [r["external_id"][len("email:") :] for r in rows]
    inbound = [r for r in rows if r["direction"] == "in"]
    latest = inbound[-1] if inbound else (rows[-1] if rows else None)
    subject = None
    if inbound and isinstance(inbound[-1]["data"], dict):
        subject = inbound[-1]["data"].get("subject")
    return (latest["external_id"][len("email:") :] if latest else None), ids[-_THREAD_MAX:], subject


def _reply_subject(case: Case, requested: str | None, thread_subject: str | None) -> str:
    if requested:
        subject = requested
    else:
        base = thread_subject or case.subject or "Ваше звернення"
        subject = base if base.lower().startswith("re:") else f"Re: {base}"
    # The case number in the subject threads the answer even when a mail client drops
    # the reference headers.
    return subject if case.number in subject else f"{subject} [{case.number}]"


async def queue_email(
    conn: asyncpg.Connection,
    actor: Actor,
    case: Case,
    address: str,
    text: str,
    subject: str | None,
    *,
    data: dict[str, object] | None = None,
) -> tuple[int, str, str]:
    """Write an e-mail reply (outbox row + case event) in the caller's transaction.

    Returns (outbox id, message id, case event external id).
    """
    in_reply_to, refs, thread_subject = await _email_thread(conn, case.id)
    message_id = f"case{case.id}-{secrets.token_hex(8)}"
    external_id = f"email:{message_id}@herald"
    full_subject = _reply_subject(case, subject, thread_subject)
    outbox_id = await conn.fetchval(
        "INSERT INTO case_email_outbox (case_id, message_id, address, subject, body, "
        "in_reply_to, refs, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        case.id,
        message_id,
        address,
        full_subject,
        text,
        in_reply_to,
        refs,
        actor.id,
    )
    await store.append_events(
        conn,
        actor,
        case.id,
        [
            NewEvent(
                kind="message",
                channel="email",
                direction="out",
                external_id=external_id,
                body=text,
                data={
                    "subject": full_subject,
                    "outbox_id": outbox_id,
                    "to": address,
                    "in_reply_to": in_reply_to,
                    **(data or {}),
                },
            )
        ],
    )
    if case.client_id is not None:
        await _on_timeline(conn, case.client_id, message_id, full_subject, "queued", case.number)
    return outbox_id, message_id, external_id


async def _on_timeline(
    conn: asyncpg.Connection,
    client_id: int,
    message_id: str,
    subject: str,
    status: str,
    case_number: str | None = None,
) -> None:
    """The e-mail reply on the client's timeline (one item, its status updated on sending)."""
    await timeline.record_event(
        conn,
        client_id=client_id,
        kind="case_reply",
        at=clock.now(),
        title=subject,
        status=status,
        channel="email",
        direction="out",
        ref_type="email",
        ref_id=message_id,
        detail={"message_id": message_id, **({"case_number": case_number} if case_number else {})},
    )


async def _phone_reply(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    settings: Settings,
    actor: Actor,
    case: Case,
    text: str,
    channel: str,
    organisation: Organisation,
) -> tuple[realtime.Created, list[str], realtime.Work]:
    if case.client_id is None:
        raise SendRefused(
            422,
            "anonymous",
            f"case {case.number} is anonymous: link it to a client before replying by SMS or Viber",
        )
    if len(text) > PHONE_TEXT_MAX:
        raise InvalidInput("text", f"an SMS/Viber reply is at most {PHONE_TEXT_MAX} characters")
    template = await conn.fetchrow(
        "SELECT t.id, t.topic, t.urgent, t.current_version FROM case_message_settings s "
        "JOIN message_templates t ON t.id = s.reply_template_id"
    )
    chain = ["viber", "sms"] if channel == "phone" else [channel]
    segments = sms_stats(f"{case.number}: {text}").segments
    if segments > SMS_SEGMENTS_MAX:
        # Too long for an SMS: Viber alone when the operator left the choice to Herald.
        if channel == "sms":
            raise InvalidInput(
                "text",
                f"{segments} SMS segments; an SMS reply is at most "
                f"{SMS_SEGMENTS_MAX} (shorten it, or send by Viber)",
            )
        chain = [c for c in chain if c != "sms"]
    reasons = await check_rules(
        conn,
        redis,
        settings,
        case.client_id,
        template["topic"],
        template["urgent"],
        chain,
        organisation,
    )
    if len(reasons) == len(chain):
        first = reasons[chain[0]]
        raise SendRefused(409, first, f"{_DETAIL[first]} ({chain[0]})", reasons)
    variables = await case_variables(conn, case, text)
    created, work = await realtime.create(
        conn,
        [
            realtime.NewMessage(
                kind="operator",
                client_id=case.client_id,
                account_id=case.account_id,
                template_id=template["id"],
                template_version=template["current_version"],
                channel_chain=chain,
                created_by=actor.id,
                variables=variables,
            )
        ],
    )
    return created[0], chain, work


async def reply(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    settings: Settings,
    actor: Actor,
    case_id: int,
    request: ReplyRequest,
    organisation: Organisation,
) -> tuple[ReplyAccepted, list[int], realtime.Work]:
    """Store the reply; returns it with the outbox ids to send and the realtime work to publish."""
    work: realtime.Work
    async with conn.transaction():
        case = await store.get_case(conn, case_id, lock=True)
        _, email = await _client_contact(conn, case.client_id, organisation)
        address = case.contact.email or email
        channel = reply_channel(case, request, address is not None)
        if channel == "email":
            if address is None:
                raise SendRefused(409, "no_contact", f"case {case.number} has no e-mail address")
            outbox_id, message_id, external_id = await queue_email(
                conn, actor, case, address, request.text, request.subject
            )
            accepted = ReplyAccepted(case.id, "email", message_id, ["email"], external_id)
            outbox, work = [outbox_id], []
        else:
            created, chain, work = await _phone_reply(
                conn, redis, settings, actor, case, request.text, channel, organisation
            )
            await store.append_events(
                conn,
                actor,
                case.id,
                [
                    NewEvent(
                        kind="message",
                        channel=chain[0],
                        direction="out",
                        body=request.text,
                        data={"message_id": created.message_id, "channel_chain": chain},
                    )
                ],
            )
            accepted = ReplyAccepted(case.id, chain[0], created.message_id, chain)
            outbox = []
        await store.mark_replied(conn, case.id)
        await audit.record(
            conn,
            actor,
            [
                Change(
                    "case",
                    str(case.id),
                    "reply",
                    None,
                    None,
                    {"channel": accepted.channel, "message_id": accepted.message_id},
                )
            ],
        )
        await rule_engine.process(conn, case_id)  # agent_replied rules, in this transaction
    return accepted, outbox, work


class InfoRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    question: Annotated[str, Meta(min_length=1, max_length=PHONE_TEXT_MAX)]
    subject: Annotated[str, Meta(min_length=1, max_length=300)] | None = None


class InfoRequested(msgspec.Struct, frozen=True):
    """``sent_by``: 'email' (a reply in the thread) or 'notification' (the info_needed rule)."""

    case: Case
    on_hold: bool
    sent_by: str
    message_id: str | None = None


async def request_info(
    conn: asyncpg.Connection,
    actor: Actor,
    case_id: int,
    request: InfoRequest,
    organisation: Organisation,
) -> tuple[InfoRequested, list[int]]:
    """Ask the client for more information: an info_request event, On Hold (through In
    Progress when the transitions want it; left as it is when no allowed way leads
    there), and the question sent (e-mail cases: in the thread; others: by the
    info_needed rules)."""
    async with conn.transaction():
        case = await store.get_case(conn, case_id, lock=True)
        if case.status == "closed":
            raise Conflict(f"case {case.number} is closed: register a new case instead")
        _, email = await _client_contact(conn, case.client_id, organisation)
        address = case.contact.email or email
        by_email = case.channel == "email" and address is not None
        await store.append_events(
            conn,
            actor,
            case.id,
            [NewEvent(kind="info_request", body=request.question, data={"by_email": by_email})],
        )
        outbox: list[int] = []
        message_id = None
        if by_email and address is not None:
            outbox_id, message_id, _ = await queue_email(
                conn,
                actor,
                case,
                address,
                request.question,
                request.subject,
                data={"info_request": True},
            )
            outbox = [outbox_id]
        # The question is an answer: a New case goes into work on the way to On Hold
        # when the transition table has no New -> On Hold (the default one has not).
        # A Resolved case is not reopened by a question (the client's answer reopens it).
        path = await transitions.path_to(
            conn, case.status, "on_hold", through=("in_progress",) if case.status == "new" else ()
        )
        for status in path or []:
            case = await transitions.apply(
                conn, actor, case, status, comment="Запит додаткової інформації"
            )
        on_hold = case.status == "on_hold"
        await audit.record(
            conn,
            actor,
            [
                Change(
                    "case", str(case.id), "info_request", None, None, {"question": request.question}
                )
            ],
        )
        await rule_engine.process(conn, case.id)
        case = await store.get_case(conn, case.id)
    return InfoRequested(case, on_hold, "email" if by_email else "notification", message_id), outbox


def _backoff(attempts: int) -> float:
    return min(5.0 * 2.0 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS)


_CLAIM = """
WITH due AS (
    SELECT id FROM case_email_outbox
    WHERE status = 'pending' AND next_attempt_at <= herald_now()
      AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
    ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)
UPDATE case_email_outbox o
SET attempts = o.attempts + 1, next_attempt_at = herald_now() + make_interval(secs => $3)
FROM due WHERE o.id = due.id
RETURNING o.id, o.message_id, o.address, o.subject, o.body, o.in_reply_to, o.refs, o.attempts,
          (SELECT client_id FROM cases c WHERE c.id = o.case_id) AS client_id
"""


async def deliver_due(
    pool: asyncpg.Pool, settings: Settings, *, ids: Sequence[int] | None = None, limit: int = 100
) -> int:
    """Hand due e-mail replies (or just ``ids``) to SMTP; returns how many SMTP accepted."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            _CLAIM, list(ids) if ids is not None else None, limit, LEASE_SECONDS
        )
    if not rows:
        return 0
    provider = SmtpProvider(
        host=settings.smtp_host,
        port=settings.smtp_port,
        sender=settings.smtp_sender,
        pool_size=min(4, len(rows)),
    )
    batch = [
        Outbound(
            r["message_id"],
            "email",
            r["address"],
            ThreadedEmail(
                subject=r["subject"],
                html=_email_html(r["body"]),
                text=r["body"],
                in_reply_to=r["in_reply_to"],
                references=tuple(r["refs"]),
            ),
        )
        for r in rows
    ]
    try:
        results = await provider.send(batch)
    except ProviderUnavailable as exc:
        results = [SendResult(m.message_id, Outcome.TRANSIENT, error=str(exc)[:200]) for m in batch]
    finally:
        await provider.aclose()
    sent = [
        (r, res) for r, res in zip(rows, results, strict=True) if res.outcome is Outcome.ACCEPTED
    ]
    failed = [
        (r, res) for r, res in zip(rows, results, strict=True) if res.outcome is Outcome.PERMANENT
    ]
    retry = [
        (r, res)
        for r, res in zip(rows, results, strict=True)
        if res.outcome in (Outcome.TRANSIENT, Outcome.THROTTLED)
    ]
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE case_email_outbox o SET status = 'sent', sent_at = herald_now(), provider_id = r.p, "
            "last_error = NULL FROM unnest($1::bigint[], $2::text[]) AS r(i, p) WHERE o.id = r.i",
            [r["id"] for r, _ in sent],
            [res.provider_id for _, res in sent],
        )
        await conn.execute(
            "UPDATE case_email_outbox o SET status = 'failed', last_error = r.e "
            "FROM unnest($1::bigint[], $2::text[]) AS r(i, e) WHERE o.id = r.i",
            [r["id"] for r, _ in failed],
            [res.error for _, res in failed],
        )
        await conn.execute(
            "UPDATE case_email_outbox o SET last_error = r.e, "
            "next_attempt_at = herald_now() + make_interval(secs => r.b) "
            "FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS r(i, e, b) WHERE o.id = r.i",
            [r["id"] for r, _ in retry],
            [res.error for _, res in retry],
            [_backoff(r["attempts"]) for r, _ in retry],
        )
        for status, done in (("sent", sent), ("failed", failed)):
            for r, _ in done:
                if r["client_id"] is not None:
                    await _on_timeline(conn, r["client_id"], r["message_id"], r["subject"], status)
    return len(sent)


class EmailReplyStatus(msgspec.Struct, frozen=True):
    message_id: str
    status: str
    attempts: int
    last_error: str | None
    sent_at: dt.datetime | None


async def email_statuses(conn: asyncpg.Connection, case_id: int) -> list[EmailReplyStatus]:
    rows = await conn.fetch(
        "SELECT message_id, status, attempts, last_error, sent_at FROM case_email_outbox "
        "WHERE case_id = $1 ORDER BY id",
        case_id,
    )
    return [EmailReplyStatus(**dict(r)) for r in rows]


async def outbox_status(conn: asyncpg.Connection, outbox_id: int) -> str | None:
    """The delivery status of one queued e-mail reply (pending, sent, failed)."""
    status: str | None = await conn.fetchval(
        "SELECT status FROM case_email_outbox WHERE id = $1", outbox_id
    )
    return status
