"""Operator send during a call (Module 3): an allowed template, now, on the realtime path.

The send rules are checked here first, synchronously, so the operator sees why a send is
refused (stop list, no consent, no phone or e-mail) before anything is queued; the worker
checks them again when it sends (the card may have changed meanwhile). An accepted send
is one realtime message, journalled with who sent which template to whom, and its status
is read back by its message id.

Quiet hours and an air-raid alert do not refuse it (IC-09: queued, not dropped): the
message is held at once, as a campaign's or a trigger's would be, until the window ends
or the alert is lifted, and the scheduler then releases it to a worker. The answer says
so (``status: held``, the reason, the release time), the held message is on the client's
timeline, and the operator may cancel it while it waits (``cancel``). An operator who
would rather be refused sends ``hold: false`` and gets the 409 with the release time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Annotated, Any

import asyncpg
import msgspec
import redis.asyncio as aioredis
from msgspec import Meta

from crm.segments.membership import SegmentMembers
from dispatcher import outcomes
from dispatcher.envelopes import parse_realtime_id, realtime_message_id
from dispatcher.realtime import messages as realtime
from dispatcher.recipients import Organisation, load_recipients
from herald import audit
from herald.audit import Actor, Change
from herald.bounds import Id
from herald.errors import Conflict, HeraldError, InvalidInput, NotFound
from herald.settings import Settings
from providers.base import Channel
from rules import batch
from rules.air_raid import AlertMirror
from rules.decision import Hold, Send

DEFAULT_CHAIN: tuple[str, ...] = ("viber", "sms", "email")


class OperatorSendRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the operator picks: an allowed template, a channel or a chain, maybe an account.
    ``hold``: when quiet hours or an air-raid alert keep the message back, hold it until
    they end (the default) rather than refuse it."""

    template_id: Id
    channel: Channel | None = None
    channel_chain: Annotated[list[Channel], Meta(min_length=1, max_length=3)] | None = None
    account_id: Id | None = None
    hold: bool = True


class SendAccepted(msgspec.Struct, frozen=True):
    """``status``: queued (going now) or held (``held_reason``: quiet_hours or air_raid;
    ``release_at`` when quiet hours end, null until an alert is lifted)."""

    message_id: str
    client_id: int
    template_id: int
    template_version: int
    channel_chain: list[str]
    status: str = "queued"
    held_reason: str | None = None
    release_at: dt.datetime | None = None


class SendCancelled(msgspec.Struct, frozen=True):
    message_id: str
    status: str = "cancelled"


class SendRefused(HeraldError):
    """The send rules refuse the message now; ``reason`` is the code the operator is shown."""

    def __init__(
        self,
        status: int,
        reason: str,
        detail: str,
        channels: dict[str, str] | None = None,
        release_at: dt.datetime | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.code = "send-refused-" + reason.replace("_", "-")
        self.channels = channels or {}
        # Quiet hours: when the message could go.
        self.release_at = release_at


class Verdict(msgspec.Struct):
    """What the rules say of a chain now: why each channel before a sendable one cannot go
    (none when the first can), and, when a channel is held back rather than refused, its
    step, reason and release (quiet hours: a time; air raid: the region, no time)."""

    reasons: dict[str, str]
    hold_step: int | None = None
    hold_reason: str | None = None
    release_at: dt.datetime | None = None
    region_code: str | None = None


class AllowedTemplate(msgspec.Struct, frozen=True):
    id: int
    name: str
    topic: str
    urgent: bool
    current_version: int
    channels: list[str]


async def allowed_templates(conn: asyncpg.Connection) -> list[AllowedTemplate]:
    """Templates marked for operator sends, with the channels their current version has."""
    rows = await conn.fetch(
        "SELECT t.id, t.name, t.topic, t.urgent, t.current_version, v.variants "
        "FROM message_templates t JOIN message_template_versions v "
        "ON v.template_id = t.id AND v.version = t.current_version "
        "WHERE t.operator_send ORDER BY t.name, t.id"
    )
    return [
        AllowedTemplate(
            r["id"],
            r["name"],
            r["topic"],
            r["urgent"],
            r["current_version"],
            [c for c in DEFAULT_CHAIN if (r["variants"] or {}).get(c)],
        )
        for r in rows
    ]


async def set_allowed(
    conn: asyncpg.Connection, actor: Actor, template_id: int, allowed: bool
) -> bool:
    """Mark a template allowed (or not) for operator sends; journalled. Returns the old value."""
    async with conn.transaction():
        old = await conn.fetchval(
            "SELECT operator_send FROM message_templates WHERE id = $1 FOR UPDATE", template_id
        )
        if old is None:
            raise NotFound(f"template {template_id} does not exist")
        if old != allowed:
            await conn.execute(
                "UPDATE message_templates SET operator_send = $2, updated_at = herald_now() "
                "WHERE id = $1",
                template_id,
                allowed,
            )
            await audit.record(
                conn,
                actor,
                [Change("template", str(template_id), "update", "operator_send", old, allowed)],
            )
    return bool(old)


def _chain(request: OperatorSendRequest, variants: dict[str, Any]) -> list[str]:
    if request.channel is not None and request.channel_chain is not None:
        raise InvalidInput("channel", "give channel or channel_chain, not both")
    if request.channel_chain is not None:
        chain: list[str] = list(request.channel_chain)
        if len(set(chain)) != len(chain):
            raise InvalidInput("channel_chain", "a channel may appear only once in the chain")
    elif request.channel is not None:
        chain = [request.channel]
    else:
        chain = [c for c in DEFAULT_CHAIN if variants.get(c)]
    missing = [c for c in chain if not variants.get(c)]
    if missing or not chain:
        raise SendRefused(
            422,
            "no_variant",
            f"the template has no text for: {', '.join(missing) or 'any channel'}",
        )
    return chain


async def check_rules(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    settings: Settings,
    client_id: int,
    topic: str,
    urgent: bool,
    chain: Sequence[str],
    organisation: Organisation,
) -> dict[str, str]:
    """Why each channel of the chain cannot be sent on now ({} when the first one can)."""
    return (
        await judge(conn, redis, settings, client_id, topic, urgent, chain, organisation)
    ).reasons


async def judge(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    settings: Settings,
    client_id: int,
    topic: str,
    urgent: bool,
    chain: Sequence[str],
    organisation: Organisation,
) -> Verdict:
    """The rules for each channel of the chain (``rules.batch``, as the worker applies
    them): a missing contact or consent passes to the next channel; quiet hours or an
    air-raid alert on the first channel that has both hold the message there."""
    recipients = await load_recipients(conn, [client_id], organisation)
    if not recipients:
        raise NotFound(f"no client {client_id}")
    recipient = recipients[0]
    facts = await batch.load(
        conn,
        [client_id],
        chain,
        topic,
        urgent=urgent,
        mirror=AlertMirror(redis, settings.namespace),
        membership=SegmentMembers(conn),
    )
    decisions = batch.Rules(facts, {client_id: recipient}).preview(client_id, chain)
    verdict = Verdict({})
    for step, (channel, decision) in enumerate(zip(chain, decisions, strict=True)):
        if isinstance(decision, Send):
            return verdict  # this channel can go now
        verdict.reasons[channel] = decision.reason
        if isinstance(decision, Hold) and verdict.hold_step is None:
            verdict.hold_step, verdict.hold_reason = step, decision.reason
            verdict.release_at, verdict.region_code = decision.until, recipient.region_code
    return verdict


_DETAIL = {
    "stop_list": "the client is on a stop list for this topic",
    "no_consent": "the client has not consented to this topic on the channel",
    "no_contact": "the client has no phone or e-mail for the channel",
    "air_raid": "an air-raid alert is active in the client's region",
    "quiet_hours": "quiet hours are in force in the client's time zone",
}


async def send(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    settings: Settings,
    actor: Actor,
    client_id: int,
    request: OperatorSendRequest,
    organisation: Organisation,
) -> tuple[SendAccepted, realtime.Work]:
    """Check the rules, then queue the message; the caller publishes the work after this returns."""
    template = await conn.fetchrow(
        "SELECT t.id, t.topic, t.urgent, t.operator_send, t.current_version, v.variants "
        "FROM message_templates t JOIN message_template_versions v "
        "ON v.template_id = t.id AND v.version = t.current_version WHERE t.id = $1",
        request.template_id,
    )
    if template is None:
        raise InvalidInput("template_id", f"template {request.template_id} does not exist")
    if not template["operator_send"]:
        raise SendRefused(
            422,
            "template_not_allowed",
            f"template {request.template_id} is not allowed for operator sends",
        )
    chain = _chain(request, template["variants"] or {})
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)", client_id):
        raise NotFound(f"no client {client_id}")
    if request.account_id is not None and not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1 AND client_id = $2)",
        request.account_id,
        client_id,
    ):
        raise InvalidInput("account_id", f"account {request.account_id} is not the client's")
    verdict = await judge(
        conn, redis, settings, client_id, template["topic"], template["urgent"], chain, organisation
    )
    reasons = verdict.reasons
    held = len(reasons) == len(chain) and verdict.hold_step is not None
    if len(reasons) == len(chain) and not (held and request.hold):
        # Refused: no channel can go, or the operator asked not to hold it.
        # The reason shown: what keeps it back (the channels before it have no contact
        # or consent), else the first channel's.
        where = chain[0] if verdict.hold_step is None else chain[verdict.hold_step]
        first = reasons[where]
        raise SendRefused(
            409, first, f"{_DETAIL[first]} ({where})", reasons, release_at=verdict.release_at
        )
    async with conn.transaction():
        created, work = await realtime.create(
            conn,
            [
                realtime.NewMessage(
                    kind="operator",
                    client_id=client_id,
                    account_id=request.account_id,
                    template_id=template["id"],
                    template_version=template["current_version"],
                    channel_chain=chain,
                    created_by=actor.id,
                )
            ],
        )
        message_id = created[0].message_id
        held_events: list[outcomes.Event] = []
        if held:
            held_events = await _hold(conn, created[0], chain, verdict)
            work = []  # released to a worker by the scheduler, not published now
        await audit.record(
            conn,
            actor,
            [
                Change(
                    "client",
                    str(client_id),
                    "send_message",
                    None,
                    None,
                    {
                        "message_id": message_id,
                        "template_id": template["id"],
                        "template_version": template["current_version"],
                        "channel_chain": chain,
                        "account_id": request.account_id,
                        **({"held": verdict.hold_reason} if held else {}),
                    },
                )
            ],
        )
    if held:
        await outcomes.count(redis, settings, None, held_events)
        return SendAccepted(
            message_id,
            client_id,
            template["id"],
            template["current_version"],
            chain,
            "held",
            verdict.hold_reason,
            verdict.release_at,
        ), work
    return SendAccepted(
        message_id, client_id, template["id"], template["current_version"], chain
    ), work


async def _hold(
    conn: asyncpg.Connection, created: realtime.Created, chain: Sequence[str], verdict: Verdict
) -> list[outcomes.Event]:
    """Park a new message at its held step as a worker would (the channels before it
    skipped; the row done at that step until released), unpublished: the scheduler
    releases it to a worker when the window ends or the alert is lifted. Returns the
    events written."""
    step = verdict.hold_step or 0
    client_id = created.client_id
    mid = realtime_message_id("operator", created.id, client_id, step)
    events = [
        outcomes.Event(
            realtime_message_id("operator", created.id, client_id, k),
            None,
            client_id,
            k,
            chain[k],
            "skipped",
            verdict.reasons[chain[k]],
        )
        for k in range(step)
    ]
    events.append(
        outcomes.Event(mid, None, client_id, step, chain[step], "held", verdict.hold_reason)
    )
    await outcomes.write_events(conn, events)
    await outcomes.write_holds(
        conn,
        [
            outcomes.Hold(
                mid,
                None,
                client_id,
                step,
                verdict.hold_reason or "quiet_hours",
                verdict.region_code if verdict.hold_reason == "air_raid" else None,
                verdict.release_at.timestamp() if verdict.release_at else None,
            )
        ],
    )
    await conn.execute(
        "UPDATE realtime_messages SET step = $2, done = true, done_at = herald_now() WHERE id = $1",
        created.id,
        step,
    )
    return events


async def cancel(conn: asyncpg.Connection, actor: Actor, message_id: str) -> SendCancelled:
    """Cancel an operator's message still held (quiet hours, an alert): it is never sent;
    its last event says ``cancelled``. A message already on its way is not cancelled."""
    try:
        unit_id, client_id, _ = parse_realtime_id(message_id)
    except ValueError:
        raise InvalidInput("message_id", "an operator message id, e.g. o12:345:0") from None
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT kind, channel_chain, step FROM realtime_messages WHERE id = $1 "
            "AND client_id = $2 FOR UPDATE",
            unit_id,
            client_id,
        )
        if row is None or row["kind"] != "operator":
            raise NotFound(f"no operator message {message_id}")
        ids = [
            realtime_message_id("operator", unit_id, client_id, s)
            for s in range(len(row["channel_chain"]))
        ]
        released = await conn.fetch(
            "DELETE FROM held_messages WHERE message_id = ANY($1::text[]) RETURNING message_id, "
            "step",
            ids,
        )
        if not released:
            raise Conflict(f"message {message_id} is not held: it cannot be cancelled now")
        await conn.execute(
            "UPDATE realtime_messages SET done = true, done_at = herald_now() WHERE id = $1",
            unit_id,
        )
        step = released[0]["step"]
        await outcomes.write_events(
            conn,
            [
                outcomes.Event(
                    released[0]["message_id"],
                    None,
                    client_id,
                    step,
                    row["channel_chain"][step],
                    "cancelled",
                    "operator",
                )
            ],
        )
        await audit.record(
            conn,
            actor,
            [
                Change(
                    "client", str(client_id), "cancel_message", None, None, {"message_id": ids[0]}
                )
            ],
        )
    return SendCancelled(ids[0])


class MessageEventView(msgspec.Struct, frozen=True):
    message_id: str
    step: int
    channel: str | None
    status: str
    reason: str | None
    provider_id: str | None
    at: dt.datetime


class MessageStatus(msgspec.Struct, frozen=True):
    """A realtime message: its latest status over every step, and everything that happened
    (in the order of its life: step by step, each step's statuses in ``_RANK`` order)."""

    message_id: str
    kind: str
    client_id: int
    template_id: int
    template_version: int
    channel_chain: list[str]
    status: str
    channel: str | None
    held: bool
    created_at: dt.datetime
    events: list[MessageEventView]


# A message's life: its steps in order, and within a step its statuses in this order,
# whatever the order of their commits. A receipt can be recorded before the 'sent' of its
# step: the worker writes a unit's outcomes once, after all its provider calls (and the
# fallbacks among them), and the provider's receipt can overtake that commit.
_RANK = {
    "queued": 0,
    "held": 1,
    "cancelled": 2,
    "skipped": 2,
    "sent": 3,
    "failed": 4,
    "delivered": 5,
    "read": 6,
}


async def message_status(conn: asyncpg.Connection, message_id: str) -> MessageStatus:
    """The status of a trigger or operator message, by the id of any of its steps."""
    try:
        unit_id, client_id, _ = parse_realtime_id(message_id)
    except ValueError:
        raise InvalidInput(
            "message_id", "a trigger or operator message id, e.g. o12:345:0"
        ) from None
    row = await conn.fetchrow(
        "SELECT kind, client_id, template_id, template_version, channel_chain, created_at "
        "FROM realtime_messages WHERE id = $1 AND client_id = $2",
        unit_id,
        client_id,
    )
    if row is None:
        raise NotFound(f"no message {message_id}")
    ids = [
        realtime_message_id(row["kind"], unit_id, client_id, s)
        for s in range(len(row["channel_chain"]))
    ]
    events = [
        MessageEventView(**dict(r))
        for r in await conn.fetch(
            "SELECT message_id, step, channel, status, reason, provider_id, at FROM message_events "
            "WHERE message_id = ANY($1::text[])",
            ids,
        )
    ]
    events.sort(key=lambda e: (e.step, _RANK.get(e.status, 0), e.at))
    held = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM held_messages WHERE message_id = ANY($1::text[]))", ids
    )
    latest = events[-1] if events else None
    return MessageStatus(
        ids[0],
        row["kind"],
        client_id,
        row["template_id"],
        row["template_version"],
        list(row["channel_chain"]),
        latest.status if latest else "queued",
        latest.channel if latest else None,
        held,
        row["created_at"],
        events,
    )
