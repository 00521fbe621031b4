"""Producer events, trigger rules, operator sends and campaign live progress (issue 6).

Producers post events with their own API key (``PRODUCER`` routes); administrators
manage producers and marketers trigger rules; operators send allowed templates from the
card; anyone who may read campaigns can follow one's progress over Server-Sent Events.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import msgspec
from aiohttp import web

from admin_api.problems import FieldError, problem_response
from admin_api.routing import PRODUCER, EndpointTable, path_int, validation_field
from admin_api.security import actor, producer
from admin_api.sse import event_stream
from admin_api.typedefs import AMQP, DB, REDIS, SETTINGS
from admin_api.views.campaigns import CampaignStats, collect_stats
from dispatcher import outcomes
from dispatcher.deadlines import realtime_deadlines_key
from dispatcher.realtime import intake, operator_send, producers, triggers
from dispatcher.realtime import messages as realtime
from dispatcher.realtime.intake import EventBatch, EventIn, IngestResult, ItemError
from dispatcher.realtime.operator_send import (
    AllowedTemplate,
    MessageStatus,
    OperatorSendRequest,
    SendAccepted,
    SendCancelled,
    SendRefused,
)
from dispatcher.realtime.producers import Producer, ProducerCreated, ProducerSpec, RecentEvent
from dispatcher.realtime.triggers import TriggerRule, TriggerRuleSpec
from dispatcher.recipients import Organisation

endpoints = EndpointTable("events")

FINAL_STATES = frozenset({"completed", "stopped", "failed"})


# -- producers and their events ---------------------------------------------------------


@endpoints.post(
    "/api/v1/producers",
    permission="events.manage",
    body=ProducerSpec,
    response=ProducerCreated,
    status=201,
    errors=(409,),
)
async def create_producer(request: web.Request, body: ProducerSpec) -> ProducerCreated:
    """Register an event producer; its API key is in this answer only."""
    async with request.app[DB].acquire() as conn:
        return await producers.create(conn, actor(request), body)


@endpoints.get("/api/v1/producers", permission="events.manage", response=list[Producer])
async def list_producers(request: web.Request) -> list[Producer]:
    """Every producer, active or not (keys are never shown again)."""
    async with request.app[DB].acquire() as conn:
        return await producers.list_producers(conn)


@endpoints.post(
    "/api/v1/producers/{producer_id}/deactivate",
    permission="events.manage",
    response=Producer,
    errors=(404,),
)
async def deactivate_producer(request: web.Request) -> Producer:
    """Refuse the producer's key from now on (403); its events stay."""
    async with request.app[DB].acquire() as conn:
        return await producers.deactivate(conn, actor(request), path_int(request, "producer_id"))


def decode_items(raw: list[msgspec.Raw]) -> tuple[list[tuple[int, EventIn]], list[ItemError]]:
    """Each event decoded on its own: (index, event) for the good ones, an error for the others."""
    good: list[tuple[int, EventIn]] = []
    errors: list[ItemError] = []
    decoder = msgspec.json.Decoder(EventIn)
    for index, item in enumerate(raw):
        try:
            event = decoder.decode(item)
        except msgspec.ValidationError as exc:
            field, message = validation_field(exc)
            errors.append(ItemError(index, field if field != "body" else "event", message))
            continue
        if event.occurred_at.tzinfo is None:
            errors.append(ItemError(index, "occurred_at", "give a time zone, e.g. +02:00 or Z"))
        elif (event.client_id is None) == (event.or_number is None):
            errors.append(ItemError(index, "client_id", "give either client_id or or_number"))
        else:
            good.append((index, event))
    return good, errors


@endpoints.post(
    "/api/v1/events", permission=PRODUCER, body=EventBatch, response=IngestResult, errors=(403,)
)
async def post_events(request: web.Request, body: EventBatch) -> IngestResult | web.Response:
    """One event or a batch of up to 1,000, idempotent on each event's id per producer.

    Bad items are reported by index and field and the good ones accepted; 400 only
    when no item of the batch could be accepted."""
    good, errors = decode_items(body.events)
    app = request.app
    async with app[DB].acquire() as conn:
        result, work = await intake.ingest(conn, producer(request), good, errors)
    await realtime.publish(await app[AMQP].publisher(), app[SETTINGS], work)
    if result.accepted == 0 and result.duplicates == 0:
        return problem_response(
            request,
            400,
            code="invalid-input",
            detail="no event of the batch was accepted",
            errors=[FieldError(f"events[{e.index}].{e.field}", e.message) for e in result.errors],
        )
    return result


class RecentQuery(msgspec.Struct, forbid_unknown_fields=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 50
    type: Annotated[str, msgspec.Meta(max_length=100)] | None = None


@endpoints.get(
    "/api/v1/producer-events",
    permission="triggers.read",
    query=RecentQuery,
    response=list[RecentEvent],
)
async def recent_events(request: web.Request, query: RecentQuery) -> list[RecentEvent]:
    """The latest events received, newest first, with the messages each caused (its rule,
    the channel and status reached, or the contact policy's refusal)."""
    async with request.app[DB].acquire() as conn:
        return await producers.recent_events(conn, limit=query.limit, event_type=query.type)


# -- trigger rules -----------------------------------------------------------------------


class RuleQuery(msgspec.Struct, forbid_unknown_fields=True):
    event_type: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    active: bool = False


@endpoints.get(
    "/api/v1/trigger-rules", permission="triggers.read", query=RuleQuery, response=list[TriggerRule]
)
async def list_rules(request: web.Request, query: RuleQuery) -> list[TriggerRule]:
    """Trigger rules, optionally of one event type, optionally only active ones."""
    async with request.app[DB].acquire() as conn:
        return await triggers.list_rules(
            conn, event_type=query.event_type, active_only=query.active
        )


@endpoints.post(
    "/api/v1/trigger-rules",
    permission="triggers.manage",
    body=TriggerRuleSpec,
    response=TriggerRule,
    status=201,
)
async def create_rule(request: web.Request, body: TriggerRuleSpec) -> TriggerRule:
    """Create a trigger rule: event type, conditions, template version, chain, delay, policy."""
    async with request.app[DB].acquire() as conn:
        return await triggers.create_rule(conn, actor(request), body)


@endpoints.get(
    "/api/v1/trigger-rules/{rule_id}",
    permission="triggers.read",
    response=TriggerRule,
    errors=(404,),
)
async def get_rule(request: web.Request) -> TriggerRule:
    """One trigger rule (its change history: GET /api/v1/audit/trigger_rule/{rule_id})."""
    async with request.app[DB].acquire() as conn:
        return await triggers.get_rule(conn, path_int(request, "rule_id"))


@endpoints.put(
    "/api/v1/trigger-rules/{rule_id}",
    permission="triggers.manage",
    body=TriggerRuleSpec,
    response=TriggerRule,
    errors=(404,),
)
async def update_rule(request: web.Request, body: TriggerRuleSpec) -> TriggerRule:
    """Replace a rule's settings (a new rule version; deactivate with is_active false)."""
    async with request.app[DB].acquire() as conn:
        return await triggers.update_rule(conn, actor(request), path_int(request, "rule_id"), body)


class RealtimeStats(msgspec.Struct):
    """Live counters of every trigger and operator message (names as in campaign stats)."""

    counters: dict[str, int]
    awaiting_receipts: int


@endpoints.get(
    "/api/v1/realtime-messages/stats", permission="triggers.read", response=RealtimeStats
)
async def realtime_stats(request: web.Request) -> RealtimeStats:
    """Sent, delivered, failed, skipped by reason... of triggered and operator messages."""
    app = request.app
    raw = await outcomes.live_stats(app[REDIS], app[SETTINGS], None)
    raw.pop("updated_at", None)
    waiting = await app[REDIS].zcard(realtime_deadlines_key(app[SETTINGS]))
    return RealtimeStats({k: int(v) for k, v in raw.items()}, int(waiting))


# -- operator sends ------------------------------------------------------------------------


class OperatorSendFlag(msgspec.Struct, forbid_unknown_fields=True):
    allowed: bool


class OperatorSendFlagSet(msgspec.Struct):
    template_id: int
    allowed: bool
    previous: bool


@endpoints.put(
    "/api/v1/templates/{template_id}/operator-send",
    permission="templates.operator",
    body=OperatorSendFlag,
    response=OperatorSendFlagSet,
    errors=(404,),
)
async def set_operator_send(request: web.Request, body: OperatorSendFlag) -> OperatorSendFlagSet:
    """Allow (or stop allowing) operators to send this template from a client's card."""
    template_id = path_int(request, "template_id")
    async with request.app[DB].acquire() as conn:
        old = await operator_send.set_allowed(conn, actor(request), template_id, body.allowed)
    return OperatorSendFlagSet(template_id, body.allowed, old)


@endpoints.get(
    "/api/v1/operator-templates", permission="messages.send", response=list[AllowedTemplate]
)
async def operator_templates(request: web.Request) -> list[AllowedTemplate]:
    """The templates an operator may send from the card, with their channels."""
    async with request.app[DB].acquire() as conn:
        return await operator_send.allowed_templates(conn)


def _organisation(request: web.Request) -> Organisation:
    s = request.app[SETTINGS]
    return Organisation(
        service_centre=s.org_service_centre,
        contact_phone=s.org_contact_phone,
        cabinet_url=s.org_cabinet_url,
        app_url=s.org_app_url,
        payment_url=s.org_payment_url,
    )


@endpoints.post(
    "/api/v1/clients/{client_id}/messages",
    permission="messages.send",
    body=OperatorSendRequest,
    response=SendAccepted,
    status=202,
    errors=(404, 409, 422),
)
async def send_message(
    request: web.Request, body: OperatorSendRequest
) -> SendAccepted | web.Response:
    """Send the client an allowed template now (realtime path); 409/422 say why it cannot go.
    Quiet hours or an air-raid alert hold it until they end (``status: held``), unless
    ``hold`` is false: then 409 with ``checks.release_at``."""
    app = request.app
    client_id = path_int(request, "client_id")
    try:
        async with app[DB].acquire() as conn:
            accepted, work = await operator_send.send(
                conn,
                app[REDIS],
                app[SETTINGS],
                actor(request),
                client_id,
                body,
                _organisation(request),
            )
    except SendRefused as refused:
        checks: dict[str, object] = {"reason": refused.reason, "channels": refused.channels}
        if refused.release_at is not None:  # quiet hours: when it could go
            checks["release_at"] = refused.release_at
        return problem_response(
            request, refused.status, code=refused.code, detail=refused.detail, checks=checks
        )
    await realtime.publish(await app[AMQP].publisher(), app[SETTINGS], work)
    return accepted


@endpoints.post(
    "/api/v1/messages/{message}/cancel",
    permission="messages.send",
    response=SendCancelled,
    errors=(400, 404, 409),
)
async def cancel_message(request: web.Request) -> SendCancelled:
    """Cancel an operator's message that is held (quiet hours, an air-raid alert): it is
    never sent. 409 when it is not held (already sent, or on its way)."""
    async with request.app[DB].acquire() as conn:
        return await operator_send.cancel(conn, actor(request), request.match_info["message"])


@endpoints.get(
    "/api/v1/messages/{message}", permission="clients.read", response=MessageStatus, errors=(404,)
)
async def message_status(request: web.Request) -> MessageStatus:
    """A triggered or operator message: its latest delivery status and its history."""
    async with request.app[DB].acquire() as conn:
        return await operator_send.message_status(conn, request.match_info["message"])


# -- campaign live progress (IC-04) --------------------------------------------------------


class Progress(msgspec.Struct):
    """A campaign's progress: totals, per channel, by reason; ``held_now`` is parked right now."""

    campaign_id: int
    status: str
    audience: int | None
    totals: dict[str, int]
    by_channel: dict[str, dict[str, int]]
    skipped_by_reason: dict[str, int]
    failed_by_reason: dict[str, int]
    held_by_reason: dict[str, int]
    held_now: dict[str, int]
    awaiting_receipts: int
    updated_at: float | None


_STATUSES = ("sent", "delivered", "read", "failed", "skipped", "held", "converted")


def progress_of(stats: CampaignStats) -> Progress:
    """Reshape the flat live counters ('sent', 'sent:sms', 'skipped:reason:no_consent')."""
    totals = {s: 0 for s in _STATUSES}
    by_channel: dict[str, dict[str, int]] = {}
    reasons: dict[str, dict[str, int]] = {"skipped": {}, "failed": {}, "held": {}}
    for name, value in stats.counters.items():
        parts = name.split(":", 2)
        if parts[0] not in totals:
            continue
        if len(parts) == 1:
            totals[parts[0]] = value
        elif len(parts) == 2:
            by_channel.setdefault(parts[1], {})[parts[0]] = value
        elif parts[1] == "reason" and parts[0] in reasons:
            reasons[parts[0]][parts[2]] = value
    return Progress(
        stats.campaign_id,
        stats.status,
        stats.audience,
        totals,
        by_channel,
        reasons["skipped"],
        reasons["failed"],
        reasons["held"],
        stats.held_now,
        stats.awaiting_receipts,
        stats.updated_at,
    )


_progress_encoder = msgspec.json.Encoder()


@endpoints.get(
    "/api/v1/campaigns/{campaign_id}/stream",
    permission="campaigns.read",
    response=Progress,
    media_type="text/event-stream",
    errors=(404,),
)
async def campaign_stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: a 'progress' event about once a second while the figures change,
    then one 'final' event when the campaign is completed, stopped or failed. A viewer
    may leave at any time (no error)."""
    campaign_id = path_int(request, "campaign_id")
    stats = await collect_stats(request.app, campaign_id)  # 404 before the stream opens
    async with event_stream(request) as stream:
        last = b""
        while stream.is_connected():
            data = _progress_encoder.encode(progress_of(stats))
            final = stats.status in FINAL_STATES
            if data != last:
                await stream.send(data.decode(), event="progress")
                last = data
            if final:
                await stream.send(data.decode(), event="final")
                break
            await asyncio.sleep(request.app[SETTINGS].campaign_stream_interval_seconds)
            stats = await collect_stats(request.app, campaign_id)
    return stream
