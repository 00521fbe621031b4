"""Operator send during a call (Module 3): an allowed template, now, on the realtime path.

The send rules are checked here first, synchronously, so the operator sees why a send is
refused (stop list, no consent, no phone or e-mail, quiet hours, air-raid alert) before
anything is queued; the worker checks them again when it sends (the card may have
changed meanwhile). An accepted send is one realtime message, journalled with who sent
which template to whom, and its status is read back by its message id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Annotated, Any

import asyncpg
import msgspec
import redis.asyncio as aioredis
from msgspec import Meta

from crm import audit
from crm.audit import Actor, Change
from crm.errors import HeraldError, InvalidInput, NotFound
from crm.segments.membership import SegmentMembers
from dispatcher import realtime
from dispatcher.envelopes import parse_realtime_id, realtime_message_id
from dispatcher.recipients import Organisation, load_recipients
from herald import clock
from herald.bounds import Id
from herald.settings import Settings
from providers.base import Channel
from rules import consent, quiet_hours, stop_lists
from rules.air_raid import AlertMirror, MirrorNotReady
from rules.regions import load_time_zones

DEFAULT_CHAIN: tuple[str, ...] = ("viber", "sms", "email")


class OperatorSendRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the operator picks: an allowed template, a channel or a chain, maybe an account."""

    template_id: Id
    channel: Channel | None = None
    channel_chain: Annotated[list[Channel], Meta(min_length=1, max_length=3)] | None = None
    account_id: Id | None = None


class SendAccepted(msgspec.Struct, frozen=True):
    message_id: str
    client_id: int
    template_id: int
    template_version: int
    channel_chain: list[str]
    status: str = "queued"


class SendRefused(HeraldError):
    """The send rules refuse the message now; ``reason`` is the code the operator is shown."""

    def __init__(self, status: int, reason: str, detail: str,
                 channels: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.code = "send-refused-" + reason.replace("_", "-")
        self.channels = channels or {}


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
        "WHERE t.operator_send ORDER BY t.name, t.id")
    return [AllowedTemplate(r["id"], r["name"], r["topic"], r["urgent"], r["current_version"],
                            [c for c in DEFAULT_CHAIN if (r["variants"] or {}).get(c)])
            for r in rows]


async def set_allowed(conn: asyncpg.Connection, actor: Actor, template_id: int,
                      allowed: bool) -> bool:
    """Mark a template allowed (or not) for operator sends; journalled. Returns the old value."""
    async with conn.transaction():
        old = await conn.fetchval("SELECT operator_send FROM message_templates WHERE id = $1 "
                                  "FOR UPDATE", template_id)
        if old is None:
            raise NotFound(f"template {template_id} does not exist")
        if old != allowed:
            await conn.execute("UPDATE message_templates SET operator_send = $2, updated_at = herald_now() "
                               "WHERE id = $1", template_id, allowed)
            await audit.record(conn, actor, [Change("template", str(template_id), "update",
                                                    "operator_send", old, allowed)])
    return bool(old)


def _chain(request: OperatorSendRequest, variants: dict[str, Any]) -> list[str]:
    if request.channel is not None and request.channel_chain is not None:
        raise InvalidInput("channel", "give channel or channel_chain, not both")
    if request.channel_chain is not None:
        chain = list(request.channel_chain)
        if len(set(chain)) != len(chain):
            raise InvalidInput("channel_chain", "a channel may appear only once in the chain")
    elif request.channel is not None:
        chain = [request.channel]
    else:
        chain = [c for c in DEFAULT_CHAIN if variants.get(c)]
    missing = [c for c in chain if not variants.get(c)]
    if missing or not chain:
        raise SendRefused(422, "no_variant", "the template has no text for: "
                                             f"{', '.join(missing) or 'any channel'}")
    return chain


async def check_rules(conn: asyncpg.Connection, redis: aioredis.Redis, settings: Settings,
                      client_id: int, topic: str, urgent: bool, chain: Sequence[str],
                      organisation: Organisation) -> dict[str, str]:
    """Why each channel of the chain cannot be sent on now ({} when the first one can)."""
    recipients = await load_recipients(conn, [client_id], organisation)
    if not recipients:
        raise NotFound(f"no client {client_id}")
    recipient = recipients[0]
    blocked = await stop_lists.blocked_clients(conn, [client_id], topic,
                                               membership=SegmentMembers(conn))
    if blocked:
        return dict.fromkeys(chain, "stop_list")
    consents = await consent.load_consents(conn, [client_id], chain, topic)
    mirror = AlertMirror(redis, settings.namespace)
    try:
        alerts = await mirror.active_regions()
    except MirrorNotReady:
        alerts = await mirror.sync(conn)
    windows = await quiet_hours.load_windows(conn)
    time_zones = await load_time_zones(conn)
    now = clock.now()
    reasons: dict[str, str] = {}
    for channel in chain:
        address = recipient.email if channel == "email" else recipient.phone
        if not address:
            reasons[channel] = "no_contact"
        elif not consent.allowed(consents, client_id, channel):
            reasons[channel] = "no_consent"
        elif not urgent and recipient.region_code in alerts.regions:
            reasons[channel] = "air_raid"
        elif not urgent and quiet_hours.release_at(
                now, time_zones.get(recipient.region_code or "", "Europe/Kyiv"),
                [w for w in windows if w.applies_to(channel)]) is not None:
            reasons[channel] = "quiet_hours"
        else:
            return reasons  # this channel can go now
    return reasons


_DETAIL = {
    "stop_list": "the client is on a stop list for this topic",
    "no_consent": "the client has not consented to this topic on the channel",
    "no_contact": "the client has no phone or e-mail for the channel",
    "air_raid": "an air-raid alert is active in the client's region",
    "quiet_hours": "quiet hours are in force in the client's time zone",
}


async def send(conn: asyncpg.Connection, redis: aioredis.Redis, settings: Settings,
               actor: Actor, client_id: int, request: OperatorSendRequest,
               organisation: Organisation) -> tuple[SendAccepted, realtime.Work]:
    """Check the rules, then queue the message; the caller publishes the work after this returns."""
    template = await conn.fetchrow(
        "SELECT t.id, t.topic, t.urgent, t.operator_send, t.current_version, v.variants "
        "FROM message_templates t JOIN message_template_versions v "
        "ON v.template_id = t.id AND v.version = t.current_version WHERE t.id = $1",
        request.template_id)
    if template is None:
        raise InvalidInput("template_id", f"template {request.template_id} does not exist")
    if not template["operator_send"]:
        raise SendRefused(422, "template_not_allowed",
                          f"template {request.template_id} is not allowed for operator sends")
    chain = _chain(request, template["variants"] or {})
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)", client_id):
        raise NotFound(f"no client {client_id}")
    if request.account_id is not None and not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1 AND client_id = $2)",
            request.account_id, client_id):
        raise InvalidInput("account_id", f"account {request.account_id} is not the client's")
    reasons = await check_rules(conn, redis, settings, client_id, template["topic"],
                                template["urgent"], chain, organisation)
    if len(reasons) == len(chain):
        first = reasons[chain[0]]
        raise SendRefused(409, first, f"{_DETAIL[first]} ({chain[0]})", reasons)
    async with conn.transaction():
        created, work = await realtime.create(conn, [realtime.NewMessage(
            kind="operator", client_id=client_id, account_id=request.account_id,
            template_id=template["id"], template_version=template["current_version"],
            channel_chain=chain, created_by=actor.id)])
        message_id = created[0].message_id
        await audit.record(conn, actor, [Change(
            "client", str(client_id), "send_message", None, None,
            {"message_id": message_id, "template_id": template["id"],
             "template_version": template["current_version"], "channel_chain": chain,
             "account_id": request.account_id})])
    return SendAccepted(message_id, client_id, template["id"], template["current_version"],
                        chain), work


class MessageEventView(msgspec.Struct, frozen=True):
    message_id: str
    step: int
    channel: str | None
    status: str
    reason: str | None
    provider_id: str | None
    at: dt.datetime


class MessageStatus(msgspec.Struct, frozen=True):
    """A realtime message: its latest status over every step, and everything that happened."""

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


# Among events of one instant (one outcome transaction), the later step, then the later
# status in a message's life wins.
_RANK = {"queued": 0, "held": 1, "skipped": 2, "sent": 3, "failed": 4, "delivered": 5, "read": 6}


async def message_status(conn: asyncpg.Connection, message_id: str) -> MessageStatus:
    """The status of a trigger or operator message, by the id of any of its steps."""
    try:
        unit_id, client_id, _ = parse_realtime_id(message_id)
    except ValueError:
        raise InvalidInput("message_id", "a trigger or operator message id, e.g. o12:345:0") from None
    row = await conn.fetchrow(
        "SELECT kind, client_id, template_id, template_version, channel_chain, created_at "
        "FROM realtime_messages WHERE id = $1 AND client_id = $2", unit_id, client_id)
    if row is None:
        raise NotFound(f"no message {message_id}")
    ids = [realtime_message_id(row["kind"], unit_id, client_id, s)
           for s in range(len(row["channel_chain"]))]
    events = [MessageEventView(**dict(r)) for r in await conn.fetch(
        "SELECT message_id, step, channel, status, reason, provider_id, at FROM message_events "
        "WHERE message_id = ANY($1::text[]) ORDER BY at, step", ids)]
    held = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM held_messages "
                               "WHERE message_id = ANY($1::text[]))", ids)
    latest = max(events, key=lambda e: (e.at, e.step, _RANK.get(e.status, 0)), default=None)
    return MessageStatus(ids[0], row["kind"], client_id, row["template_id"],
                         row["template_version"], list(row["channel_chain"]),
                         latest.status if latest else "queued",
                         latest.channel if latest else None, held, row["created_at"], events)
