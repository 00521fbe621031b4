"""The marketer's campaigns (IC-02..IC-05): the list, a draft's form (segment, template
version, channel chain in fallback order, rate limits), copy, launch, pause, resume and
stop, and the campaign's live page: the funnel per channel fed by the tab's stream
(``campaign_live``), the throughput chart, recipients by status with CSV export and the
drill-down to one client. The pages call the same domain functions as
``/api/v1/campaigns`` (``dispatcher.campaigns``, ``dispatcher.scheduler.control``).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable, path_int, validation_field
from admin_api.security import actor, principal
from admin_api.typedefs import AMQP, DB, REDIS, SETTINGS
from admin_api.ui import forms
from admin_api.ui.rendering import render
from admin_api.views.campaigns import RecipientStatus, collect_stats
from crm.segments import store as segments
from dispatcher import outcomes, scheduler
from dispatcher.campaigns import store as campaigns
from dispatcher.campaigns.types import Campaign, CampaignSpec, SegmentAudience
from dispatcher.receipts import holds
from dispatcher.templating import store as template_store
from herald import clock
from herald.bounds import IdOrZero
from herald.errors import InvalidInput

endpoints = EndpointTable("ui")

STATUSES = ("draft", "scheduled", "running", "paused", "stopped", "completed", "failed")
CHANNELS = ("email", "viber", "sms")
# The funnel's rows, in order; "audience" comes from the snapshot, the rest are counters.
FUNNEL = ("sent", "delivered", "read", "converted", "failed", "skipped", "held")
HOLD_REASONS = ("quiet_hours", "air_raid", "rate_limit", "paused")


class ListFilters(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal[STATUSES] | None = None  # type: ignore[valid-type]  # a tuple of literals


class CampaignForm(msgspec.Struct, forbid_unknown_fields=True):
    """The draft form: ``template`` is "<id>:<version>"; the checked ``channel_chain``
    boxes in the order shown are the fallback order."""

    name: str = ""
    segment_id: str = ""
    template: str = ""
    channel_chain: list[str] = []
    receipt_timeout_seconds: str = "900"
    rate_per_minute: str = ""
    rate_per_hour: str = ""


class LaunchForm(msgspec.Struct, forbid_unknown_fields=True):
    at: str | None = None


class RecipientFilter(msgspec.Struct, forbid_unknown_fields=True):
    status: RecipientStatus = "sent"
    after: IdOrZero = 0


class DrillDown(msgspec.Struct, forbid_unknown_fields=True):
    client_id: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]


def _spec(form: CampaignForm) -> CampaignSpec:
    """The form as the API's body; a bad field is an InvalidInput naming it."""
    template_id, _, version = form.template.partition(":")
    if not template_id.isdigit():
        raise InvalidInput("template_id", "choose a template")
    if not form.segment_id:
        raise InvalidInput("audience.segment_id", "choose a segment")
    if not form.channel_chain:
        raise InvalidInput("channel_chain", "choose at least one channel")
    body: dict[str, Any] = {
        "name": form.name,
        "template_id": int(template_id),
        "template_version": int(version) if version.isdigit() else None,
        "audience": {"kind": "segment", "segment_id": form.segment_id},
        "channel_chain": form.channel_chain,
        "receipt_timeout_seconds": form.receipt_timeout_seconds,
        "rate_per_minute": form.rate_per_minute or None,
        "rate_per_hour": form.rate_per_hour or None,
    }
    try:
        return msgspec.convert(body, CampaignSpec, strict=False)
    except msgspec.ValidationError as exc:
        field, message = validation_field(exc)
        raise InvalidInput(field, message) from None


async def _choices(request: web.Request) -> dict[str, Any]:
    """The segments and template versions a form offers."""
    async with request.app[DB].acquire() as conn:
        found_segments = await segments.list_segments(conn, after_id=0, limit=500)
        templates = await template_store.list_templates(conn, limit=500, after_id=0)
    return {"segments": found_segments, "templates": templates}


def _chain_rows(chain: list[str]) -> list[tuple[str, bool]]:
    """The chain's channels first (checked, in order), then the others (unchecked)."""
    return [(c, True) for c in chain] + [(c, False) for c in CHANNELS if c not in chain]


def _form_values(campaign: Campaign | None, form: CampaignForm | None) -> dict[str, Any]:
    if form is not None:
        return {
            "name": form.name,
            "segment_id": form.segment_id,
            "template": form.template,
            "chain": _chain_rows([c for c in form.channel_chain if c in CHANNELS]),
            "receipt_timeout_seconds": form.receipt_timeout_seconds,
            "rate_per_minute": form.rate_per_minute,
            "rate_per_hour": form.rate_per_hour,
        }
    if campaign is not None:
        audience = campaign.audience
        return {
            "name": campaign.name,
            "segment_id": audience.segment_id if isinstance(audience, SegmentAudience) else None,
            "template": f"{campaign.template_id}:{campaign.template_version}",
            "chain": _chain_rows(list(campaign.channel_chain)),
            "receipt_timeout_seconds": campaign.receipt_timeout_seconds,
            "rate_per_minute": campaign.rate_per_minute,
            "rate_per_hour": campaign.rate_per_hour,
        }
    return {
        "name": "",
        "segment_id": None,
        "template": "",
        "chain": _chain_rows(["email", "viber", "sms"]),
        "receipt_timeout_seconds": 900,
        "rate_per_minute": None,
        "rate_per_hour": None,
    }


async def _form_page(
    request: web.Request,
    campaign: Campaign | None,
    form: CampaignForm | None = None,
    error: InvalidInput | None = None,
) -> web.Response:
    ctx = await _choices(request)
    ctx.update(
        campaign=campaign,
        values=_form_values(campaign, form),
        error=error,
        error_field=(error.field.split(".")[-1].split("[")[0] if error is not None else None),
    )
    return await render(request, "campaign_form.html", ctx, status=400 if error else 200)


# -- the list ----------------------------------------------------------------------------


async def _list_context(request: web.Request) -> dict[str, Any]:
    filters = forms.query(request, ListFilters)
    async with request.app[DB].acquire() as conn:
        items = await campaigns.list_campaigns(
            conn, limit=200, before_id=None, status=filters.status
        )
    counters = await outcomes.live_stats_many(
        request.app[REDIS], request.app[SETTINGS], [c.id for c in items]
    )
    return {"campaigns": items, "counters": counters, "filters": filters, "statuses": STATUSES}


@endpoints.get(
    "/ui/campaigns",
    permission="campaigns.read",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def campaigns_page(request: web.Request) -> web.Response:
    """Campaigns, newest first, with their status and progress; filtered by status."""
    return await render(request, "campaigns.html", await _list_context(request))


@endpoints.get(
    "/ui/campaigns/rows",
    permission="campaigns.read",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def campaign_rows(request: web.Request) -> web.Response:
    """The list's table for the filter."""
    return await render(request, "_campaign_rows.html", await _list_context(request))


# -- create, edit, copy ------------------------------------------------------------------


@endpoints.get(
    "/ui/campaigns/new", permission="campaigns.manage", response=str, media_type="text/html"
)
async def new_campaign_page(request: web.Request) -> web.Response:
    """The form of a new draft."""
    return await _form_page(request, None)


async def _save(request: web.Request, campaign_id: int | None) -> web.Response:
    form = await forms.form(request, CampaignForm, lists=("channel_chain",))
    try:
        spec = _spec(form)
        async with request.app[DB].acquire() as conn:
            if campaign_id is None:
                saved = await campaigns.create(conn, actor(request), spec)
            else:
                saved = await campaigns.update(conn, actor(request), campaign_id, spec)
    except InvalidInput as error:
        current = None
        if campaign_id is not None:
            async with request.app[DB].acquire() as conn:
                current = await campaigns.get(conn, campaign_id)
        return await _form_page(request, current, form, error)
    return web.Response(status=303, headers={"Location": f"/ui/campaigns/{saved.id}"})


@endpoints.post(
    "/ui/campaigns/new",
    permission="campaigns.manage",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def create_campaign(request: web.Request) -> web.Response:
    """Create the draft and open its page; a bad field shows next to it."""
    return await _save(request, None)


@endpoints.get(
    r"/ui/campaigns/{campaign_id:\d+}/edit",
    permission="campaigns.manage",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def edit_campaign_page(request: web.Request) -> web.Response:
    """A draft's form (a launched campaign is copied instead)."""
    async with request.app[DB].acquire() as conn:
        campaign = await campaigns.get(conn, path_int(request, "campaign_id"))
    if campaign.status != "draft":
        return web.Response(status=303, headers={"Location": f"/ui/campaigns/{campaign.id}"})
    return await _form_page(request, campaign)


@endpoints.post(
    r"/ui/campaigns/{campaign_id:\d+}/edit",
    permission="campaigns.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def update_campaign(request: web.Request) -> web.Response:
    """Save the draft's settings."""
    return await _save(request, path_int(request, "campaign_id"))


@endpoints.post(
    r"/ui/campaigns/{campaign_id:\d+}/copy",
    permission="campaigns.manage",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def copy_campaign(request: web.Request) -> web.Response:
    """A new draft with this campaign's settings; its form opens."""
    async with request.app[DB].acquire() as conn:
        copied = await campaigns.copy(conn, actor(request), path_int(request, "campaign_id"))
    return web.Response(status=303, headers={"Location": f"/ui/campaigns/{copied.id}/edit"})


# -- the campaign's page and its controls ------------------------------------------------


async def _page_context(request: web.Request, campaign_id: int) -> dict[str, Any]:
    stats = await collect_stats(request.app, campaign_id)
    async with request.app[DB].acquire() as conn:
        campaign = await campaigns.get(conn, campaign_id)
        template = await template_store.get(conn, campaign.template_id)
        segment = None
        if isinstance(campaign.audience, SegmentAudience):
            found = await segments.list_segments(
                conn, after_id=campaign.audience.segment_id - 1, limit=1
            )
            segment = found[0] if found and found[0].id == campaign.audience.segment_id else None
    return {
        "campaign": campaign,
        "template": template,
        "segment": segment,
        "stats": stats,
        "funnel": FUNNEL,
        "hold_reasons": HOLD_REASONS,
        "statuses": STATUSES,
        "recipient_statuses": outcomes.RECIPIENT_STATUSES,
        "business_tz": clock.business_tz().key,
        "may_launch": "campaigns.launch" in principal(request).permissions,
        "may_manage": "campaigns.manage" in principal(request).permissions,
    }


@endpoints.get(
    r"/ui/campaigns/{campaign_id:\d+}",
    permission="campaigns.read",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def campaign_page(request: web.Request) -> web.Response:
    """The campaign: settings, controls, the live funnel and chart, recipients."""
    return await render(
        request, "campaign.html", await _page_context(request, path_int(request, "campaign_id"))
    )


@endpoints.get(
    r"/ui/campaigns/{campaign_id:\d+}/controls",
    permission="campaigns.read",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def campaign_controls(request: web.Request) -> web.Response:
    """The status and the buttons the status allows (reloaded when the status changes)."""
    return await render(
        request,
        "_campaign_controls.html",
        await _page_context(request, path_int(request, "campaign_id")),
    )


def _launch_time(text: str | None) -> dt.datetime | None:
    """A datetime-local value in the business time zone; None (now) when empty."""
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput("at", "a date and time, e.g. 2026-12-01T09:00") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=clock.business_tz())
    return value


@endpoints.post(
    r"/ui/campaigns/{campaign_id:\d+}/launch",
    permission="campaigns.launch",
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def launch_campaign(request: web.Request) -> web.Response:
    """Launch the draft now or at the time given."""
    form = await forms.form(request, LaunchForm)
    campaign_id = path_int(request, "campaign_id")
    async with request.app[DB].acquire() as conn:
        await campaigns.launch(conn, actor(request), campaign_id, _launch_time(form.at))
    return await render(
        request, "_campaign_controls.html", await _page_context(request, campaign_id)
    )


async def _control(request: web.Request, action: str) -> web.Response:
    """Pause, resume or stop: the workers see it before their next batch."""
    app = request.app
    campaign_id = path_int(request, "campaign_id")
    await scheduler.control(
        app[DB], app[REDIS], app[AMQP], app[SETTINGS], actor(request), campaign_id, action
    )
    return await render(
        request, "_campaign_controls.html", await _page_context(request, campaign_id)
    )


@endpoints.post(
    r"/ui/campaigns/{campaign_id:\d+}/pause",
    permission="campaigns.launch",
    response=str,
    media_type="text/html",
    errors=(404, 409),
)
async def pause_campaign(request: web.Request) -> web.Response:
    """Pause: no new message goes to a provider after this returns."""
    return await _control(request, "pause")


@endpoints.post(
    r"/ui/campaigns/{campaign_id:\d+}/resume",
    permission="campaigns.launch",
    response=str,
    media_type="text/html",
    errors=(404, 409),
)
async def resume_campaign(request: web.Request) -> web.Response:
    """Resume where it paused; nothing already sent is sent again."""
    return await _control(request, "resume")


@endpoints.post(
    r"/ui/campaigns/{campaign_id:\d+}/stop",
    permission="campaigns.launch",
    response=str,
    media_type="text/html",
    errors=(404, 409),
)
async def stop_campaign(request: web.Request) -> web.Response:
    """Stop for good: recipients not reached yet are not sent to."""
    return await _control(request, "stop")


# -- recipients and the drill-down -------------------------------------------------------


@endpoints.get(
    r"/ui/campaigns/{campaign_id:\d+}/recipients",
    permission="campaigns.read",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def recipients_part(request: web.Request) -> web.Response:
    """A page of the recipients with an event of the status, by Client_ID."""
    campaign_id = path_int(request, "campaign_id")
    query = forms.query(request, RecipientFilter)
    limit = 50
    async with request.app[DB].acquire() as conn:
        await campaigns.get(conn, campaign_id)
        items = await outcomes.recipients(
            conn, campaign_id, query.status, after=query.after, limit=limit
        )
    return await render(
        request,
        "_campaign_recipients.html",
        {
            "campaign_id": campaign_id,
            "items": items,
            "status": query.status,
            "next_after": items[-1].client_id if len(items) == limit else None,
        },
    )


@endpoints.get(
    r"/ui/campaigns/{campaign_id:\d+}/recipient",
    permission="campaigns.read",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def recipient_part(request: web.Request) -> web.Response:
    """One client's messages in the campaign: every step, channel, status and receipt."""
    campaign_id = path_int(request, "campaign_id")
    query = forms.query(request, DrillDown)
    async with request.app[DB].acquire() as conn:
        await campaigns.get(conn, campaign_id)
        events = await outcomes.recipient_events(conn, campaign_id, query.client_id)
        held = await holds.is_held(conn, campaign_id, query.client_id)
    return await render(
        request,
        "_campaign_recipient.html",
        {"campaign_id": campaign_id, "client_id": query.client_id, "events": events, "held": held},
    )
