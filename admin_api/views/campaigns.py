"""Campaigns: create, edit while draft, copy, launch, pause, resume, stop, live statistics."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from admin_api import paging
from admin_api.routing import PROVIDER, EndpointTable, path_int
from admin_api.security import actor
from admin_api.typedefs import AMQP, DB, REDIS, SETTINGS
from dispatcher import deadlines, outcomes, scheduler
from dispatcher.campaigns import store as campaigns
from dispatcher.campaigns.types import Campaign, CampaignSpec
from dispatcher.outcomes import MessageEvent
from dispatcher.receipts import apply as receipts
from dispatcher.receipts import holds
from herald.bounds import Id, IdOrZero
from herald.errors import InvalidInput
from providers.base import CHANNELS, Receipt

endpoints = EndpointTable("campaigns")


class CampaignQuery(msgspec.Struct, forbid_unknown_fields=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50
    before_id: Annotated[Id | None, paging.DEPRECATED_PARAM] = None
    cursor: paging.Cursor | None = None
    status: (
        Literal[
            "draft", "scheduled", "launching", "running", "paused", "stopped", "completed", "failed"
        ]
        | None
    ) = None


class CampaignPage(msgspec.Struct):
    items: list[Campaign]
    next_before_id: Annotated[int | None, paging.DEPRECATED_FIELD]
    next_cursor: str | None = None


class LaunchRequest(msgspec.Struct, forbid_unknown_fields=True):
    at: dt.datetime | None = None


class CampaignStats(msgspec.Struct):
    """Live counters (events so far: 'held' counts every time a message was parked),
    ``held_now`` (parked at this moment, by reason) and ``awaiting_receipts`` (sent, no
    delivery receipt yet)."""

    campaign_id: int
    status: str
    audience: int | None
    counters: dict[str, int]
    held_now: dict[str, int]
    awaiting_receipts: int
    updated_at: float | None


class RecipientHistory(msgspec.Struct):
    campaign_id: int
    client_id: int
    events: list[MessageEvent]
    held: bool


class ReceiptsAccepted(msgspec.Struct):
    applied: int


class Conversions(msgspec.Struct, forbid_unknown_fields=True):
    client_ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=10_000)]


class ConversionsRecorded(msgspec.Struct):
    recorded: int
    ignored: int


@endpoints.get(
    "/api/v1/campaigns", permission="campaigns.read", query=CampaignQuery, response=CampaignPage
)
async def list_campaigns(request: web.Request, query: CampaignQuery) -> CampaignPage:
    """Campaigns, newest first, optionally of one status."""
    before_id = paging.start(query.cursor, query.before_id)
    async with request.app[DB].acquire() as conn:
        items = await campaigns.list_campaigns(
            conn, limit=query.limit, before_id=before_id, status=query.status
        )
    return CampaignPage(items, *paging.following(items, query.limit, lambda i: i.id))


@endpoints.post(
    "/api/v1/campaigns",
    permission="campaigns.manage",
    body=CampaignSpec,
    response=Campaign,
    status=201,
    errors=(400,),
)
async def create_campaign(request: web.Request, body: CampaignSpec) -> Campaign:
    """Create a draft campaign: audience, template version, channel chain, rate limits."""
    async with request.app[DB].acquire() as conn:
        return await campaigns.create(conn, actor(request), body)


@endpoints.get(
    "/api/v1/campaigns/{campaign_id}", permission="campaigns.read", response=Campaign, errors=(404,)
)
async def get_campaign(request: web.Request) -> Campaign:
    """One campaign."""
    async with request.app[DB].acquire() as conn:
        return await campaigns.get(conn, path_int(request, "campaign_id"))


@endpoints.put(
    "/api/v1/campaigns/{campaign_id}",
    permission="campaigns.manage",
    body=CampaignSpec,
    response=Campaign,
    errors=(404, 409),
)
async def update_campaign(request: web.Request, body: CampaignSpec) -> Campaign:
    """Replace the settings of a draft (a launched campaign is copied instead)."""
    async with request.app[DB].acquire() as conn:
        return await campaigns.update(conn, actor(request), path_int(request, "campaign_id"), body)


@endpoints.post(
    "/api/v1/campaigns/{campaign_id}/copy",
    permission="campaigns.manage",
    response=Campaign,
    status=201,
    errors=(404,),
)
async def copy_campaign(request: web.Request) -> Campaign:
    """A new draft with this campaign's settings."""
    async with request.app[DB].acquire() as conn:
        return await campaigns.copy(conn, actor(request), path_int(request, "campaign_id"))


@endpoints.post(
    "/api/v1/campaigns/{campaign_id}/launch",
    permission="campaigns.launch",
    body=LaunchRequest,
    response=Campaign,
    errors=(404, 409),
)
async def launch_campaign(request: web.Request, body: LaunchRequest) -> Campaign:
    """Launch a draft now, or at ``at``; the scheduler snapshots the audience and starts it."""
    async with request.app[DB].acquire() as conn:
        return await campaigns.launch(
            conn, actor(request), path_int(request, "campaign_id"), body.at
        )


async def _transition(request: web.Request, action: str) -> Campaign:
    app = request.app
    return await scheduler.control(
        app[DB],
        app[REDIS],
        app[AMQP],
        app[SETTINGS],
        actor(request),
        path_int(request, "campaign_id"),
        action,
    )


@endpoints.post(
    "/api/v1/campaigns/{campaign_id}/pause",
    permission="campaigns.launch",
    response=Campaign,
    errors=(404, 409),
)
async def pause_campaign(request: web.Request) -> Campaign:
    """Pause: no new message goes to a provider after this returns (in-flight ones finish)."""
    return await _transition(request, "pause")


@endpoints.post(
    "/api/v1/campaigns/{campaign_id}/resume",
    permission="campaigns.launch",
    response=Campaign,
    errors=(404, 409),
)
async def resume_campaign(request: web.Request) -> Campaign:
    """Resume where it paused; nothing already sent is sent again."""
    return await _transition(request, "resume")


@endpoints.post(
    "/api/v1/campaigns/{campaign_id}/stop",
    permission="campaigns.launch",
    response=Campaign,
    errors=(404, 409),
)
async def stop_campaign(request: web.Request) -> Campaign:
    """Stop for good: recipients not reached yet are not sent to."""
    return await _transition(request, "stop")


@endpoints.get(
    "/api/v1/campaigns/{campaign_id}/stats",
    permission="campaigns.read",
    response=CampaignStats,
    errors=(404,),
)
async def campaign_stats(request: web.Request) -> CampaignStats:
    """Live counters: sent, delivered, read, failed, skipped by reason, held, per channel."""
    return await collect_stats(request.app, path_int(request, "campaign_id"))


async def collect_stats(app: web.Application, campaign_id: int) -> CampaignStats:
    """A campaign's live statistics (also pushed by the progress stream); NotFound if none."""
    async with app[DB].acquire() as conn:
        campaign = await campaigns.get(conn, campaign_id)
        held = await holds.held_by_reason(conn, campaign_id)
    raw = await outcomes.live_stats(app[REDIS], app[SETTINGS], campaign_id)
    updated = raw.pop("updated_at", None)
    return CampaignStats(
        campaign_id,
        campaign.status,
        campaign.audience_size,
        {k: int(v) for k, v in raw.items()},
        held,
        await deadlines.awaiting(app[REDIS], app[SETTINGS], campaign_id),
        updated,
    )


@endpoints.get(
    "/api/v1/campaigns/{campaign_id}/recipients/{client_id}",
    permission="campaigns.read",
    response=RecipientHistory,
    errors=(404,),
)
async def recipient_history(request: web.Request) -> RecipientHistory:
    """Everything that happened to one client's messages in a campaign, oldest first."""
    campaign_id = path_int(request, "campaign_id")
    client_id = path_int(request, "client_id")
    async with request.app[DB].acquire() as conn:
        await campaigns.get(conn, campaign_id)
        events = await outcomes.recipient_events(conn, campaign_id, client_id)
        held = await holds.is_held(conn, campaign_id, client_id)
    return RecipientHistory(campaign_id, client_id, events, held)


@endpoints.get(
    "/api/v1/campaigns/{campaign_id}/series",
    permission="campaigns.read",
    response=list[outcomes.SeriesPoint],
    errors=(404,),
)
async def campaign_series(request: web.Request) -> list[outcomes.SeriesPoint]:
    """The throughput over time: [start, sent, delivered, failed] per 10-second bucket."""
    campaign_id = path_int(request, "campaign_id")
    async with request.app[DB].acquire() as conn:
        await campaigns.get(conn, campaign_id)
    return await outcomes.series(request.app[REDIS], request.app[SETTINGS], campaign_id)


RecipientStatus = outcomes.RecipientStatus


class RecipientQuery(msgspec.Struct, forbid_unknown_fields=True):
    status: RecipientStatus
    after: IdOrZero = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class RecipientPage(msgspec.Struct):
    """Recipients with an event of the status (the last such event), by Client_ID;
    ``next_after``: pass as ``after`` for the next page, null on the last."""

    items: list[outcomes.Recipient]
    next_after: int | None


@endpoints.get(
    "/api/v1/campaigns/{campaign_id}/recipients",
    permission="campaigns.read",
    query=RecipientQuery,
    response=RecipientPage,
    errors=(404,),
)
async def list_recipients(request: web.Request, query: RecipientQuery) -> RecipientPage:
    """Recipients by status: who was sent, delivered, failed, held... by Client_ID."""
    campaign_id = path_int(request, "campaign_id")
    async with request.app[DB].acquire() as conn:
        await campaigns.get(conn, campaign_id)
        items = await outcomes.recipients(
            conn, campaign_id, query.status, after=query.after, limit=query.limit
        )
    return RecipientPage(items, items[-1].client_id if len(items) == query.limit else None)


@endpoints.post(
    "/api/v1/campaigns/{campaign_id}/conversions",
    permission="campaigns.conversions",
    body=Conversions,
    response=ConversionsRecorded,
    errors=(404,),
)
async def record_conversions(request: web.Request, body: Conversions) -> ConversionsRecorded:
    """Clients who acted on the campaign (paid, ordered); counted once each, only if sent to."""
    campaign_id = path_int(request, "campaign_id")
    async with request.app[DB].acquire() as conn:
        recorded = await campaigns.record_conversions(conn, campaign_id, body.client_ids)
    if recorded:
        await outcomes.count(
            request.app[REDIS],
            request.app[SETTINGS],
            campaign_id,
            [outcomes.Event("", campaign_id, c, 0, None, "converted") for c in recorded],
        )
    return ConversionsRecorded(len(recorded), len(set(body.client_ids)) - len(recorded))


@endpoints.post(
    "/api/v1/providers/{channel}/receipts",
    permission=PROVIDER,
    body=Annotated[list[Receipt], msgspec.Meta(max_length=10_000)],
    response=ReceiptsAccepted,
    errors=(400,),
)
async def provider_receipts(request: web.Request, body: list[Receipt]) -> ReceiptsAccepted:
    """Delivery and read receipts posted back by a provider, in batches."""
    channel = request.match_info["channel"]
    if channel not in CHANNELS:
        raise InvalidInput("channel", f"unknown channel {channel!r}; one of {', '.join(CHANNELS)}")
    app = request.app
    applied = await receipts.apply_receipts(
        app[DB], app[REDIS], await app[AMQP].publisher(), app[SETTINGS], channel, body
    )
    return ReceiptsAccepted(applied)
