"""Cases from the operator's chair: the queue with filters and "take next", the case page
(thread, status transitions, classification, replies, info request, hand-off, merge, the
SLA timer) and the registration of a walk-in case (SR-01..10)."""

from __future__ import annotations

import datetime as dt

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable, decode_query, path_int
from admin_api.security import actor, principal
from admin_api.typedefs import AMQP, DB, REDIS, SETTINGS
from admin_api.ui import forms
from admin_api.ui.rendering import render
from admin_api.views.case_messages import _send_now
from crm.cases import (
    agents,
    categories,
    correction,
    duplicates,
    groups,
    intake,
    queue,
    routing,
    rule_engine,
    sla,
    store,
    tasks,
    transitions,
)
from crm.cases.channels import WalkInRegistration
from crm.cases.correction import ClassificationPatch
from crm.cases.queue import CaseQueueQuery
from crm.cases.tasks import CaseTaskSpec
from crm.cases.types import CHANNELS
from dispatcher.realtime import case_deliveries, case_notify, case_replies
from dispatcher.realtime import messages as realtime
from dispatcher.realtime.case_replies import InfoRequest, ReplyRequest
from dispatcher.realtime.operator_send import SendRefused
from herald import clock
from herald.bounds import Id
from herald.errors import InvalidInput, NotFound

endpoints = EndpointTable("ui")

STATUSES = ("new", "in_progress", "on_hold", "resolved", "closed")
PRIORITIES = ("low", "normal", "high", "urgent")
CASE_TYPES = ("technical", "financial", "informational")
SLA_STATES = ("ok", "warning", "breached", "none")


PRESENCES = ("online", "busy", "away", "offline")


class PresenceForm(msgspec.Struct):
    presence: str


class StatusForm(msgspec.Struct):
    status: str
    comment: str | None = None


class ReplyForm(msgspec.Struct):
    text: str
    channel: str | None = None
    subject: str | None = None


class TaskForm(msgspec.Struct):
    group_code: str
    title: str
    due_on: dt.date
    body: str | None = None


class MergeForm(msgspec.Struct):
    into: Id


async def _queue(request: web.Request, query: CaseQueueQuery) -> dict[str, object]:
    now = clock.now()
    async with request.app[DB].acquire() as conn:
        page = await queue.list_queue(conn, query)
        ids = [item.id for item in page.items]
        blocks = await sla.sla_for(conn, ids, now=now)
        clocks = await sla.sla_clocks(conn, ids, now=now)
    for item in page.items:
        item.sla = blocks.get(item.id)
    return {
        "page": page,
        "query": query,
        "server_now": now.isoformat(),
        "sla_clocks": clocks,
        "export_filters": {name: getattr(query, name) for name in EXPORTED_FILTERS},
    }


# The list's filters its Export buttons pass on (paging left out: the export is whole).
EXPORTED_FILTERS = (
    "status",
    "open",
    "channel",
    "priority",
    "case_type",
    "category_id",
    "client_id",
    "assignee_id",
    "anonymous",
    "is_repeat",
    "duplicate",
    "number",
    "sla_state",
    "order",
)


def _filters(request: web.Request) -> CaseQueueQuery:
    raw = {k: v for k, v in request.query.items() if v.strip() != ""}
    raw.setdefault("open", "true")
    return decode_query(raw, CaseQueueQuery)


@endpoints.get(
    "/ui/cases", permission="cases.read", response=str, media_type="text/html", errors=(400,)
)
async def queue_page(request: web.Request) -> web.Response:
    """The queue across channels with its filters; it reloads itself when cases change."""
    ctx = await _queue(request, _filters(request))
    agent = None
    if "cases.manage" in principal(request).permissions:
        async with request.app[DB].acquire() as conn:
            await agents.ensure_agent(conn, principal(request).user_id)
            agent = await agents.get_agent(conn, principal(request).user_id)
    return await render(
        request,
        "cases.html",
        {
            **ctx,
            "statuses": STATUSES,
            "channels": CHANNELS,
            "priorities": PRIORITIES,
            "sla_states": SLA_STATES,
            "agent": agent,
            "presences": PRESENCES,
        },
    )


@endpoints.post(
    "/ui/me/presence",
    permission="cases.manage",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def set_presence(request: web.Request) -> web.Response:
    """Set my presence: online gets new cases (and may take next)."""
    form = await forms.form(request, PresenceForm)
    async with request.app[DB].acquire() as conn:
        agent = await agents.set_presence(
            conn, actor(request), principal(request).user_id, form.presence
        )
    return await render(request, "_presence.html", {"agent": agent, "presences": PRESENCES})


@endpoints.get(
    "/ui/cases/rows", permission="cases.read", response=str, media_type="text/html", errors=(400,)
)
async def queue_rows(request: web.Request) -> web.Response:
    """The queue's rows for the filters (and the next page)."""
    return await render(request, "_case_rows.html", await _queue(request, _filters(request)))


@endpoints.post(
    "/ui/cases/next", permission="cases.manage", response=str, media_type="text/html", errors=(409,)
)
async def take_next(request: web.Request) -> web.Response:
    """Claim the best unassigned case of my groups and open it."""
    async with request.app[DB].acquire() as conn:
        case = await routing.take_next(conn, actor(request))
    if case is None:
        return await render(
            request,
            "_flash.html",
            {"status": 200, "level": "warn", "message": "", "nothing_to_take": True},
            headers={"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"},
        )
    if request.headers.get("HX-Request") == "true":
        return web.Response(status=200, headers={"HX-Location": _hx_location(case.id)})
    raise web.HTTPSeeOther(f"/ui/cases/{case.id}")


def _hx_location(case_id: int) -> str:
    return msgspec.json.encode(
        {"path": f"/ui/cases/{case_id}", "target": "#main", "select": "#main", "swap": "outerHTML"}
    ).decode()


async def _case_context(request: web.Request, case_id: int) -> dict[str, object]:
    now = clock.now()
    async with request.app[DB].acquire() as conn:
        detail = await store.detail(conn, case_id)
        detail.sla = (await sla.sla_for(conn, [case_id], now=now)).get(case_id)
        clocks = await sla.sla_clocks(conn, [case_id], now=now)
        events = await store.events(conn, case_id, after_id=None, limit=500)
        allowed = await transitions.allowed_from(conn, detail.case.status)
        tree = await categories.list_categories(conn, include_inactive=False)
        case_groups = await groups.list_groups(conn)
        case_tasks = await tasks.case_tasks(conn, case_id)
        deliveries = await case_deliveries.deliveries(conn, events)
    names = {c.id: c for c in tree}
    return {
        "d": detail,
        "c": detail.case,
        "events": events,
        "allowed": allowed,
        "categories": tree,
        "category_names": names,
        "groups": case_groups,
        "tasks": case_tasks,
        "priorities": PRIORITIES,
        "case_types": CASE_TYPES,
        "server_now": now.isoformat(),
        "sla_clocks": clocks,
        "deliveries": deliveries,
    }


@endpoints.get(
    r"/ui/cases/{case_id:\d+}",
    permission="cases.read",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def case_page(request: web.Request) -> web.Response:
    """One case: client, flags, SLA timer, classification, thread, actions."""
    return await render(
        request, "case.html", await _case_context(request, path_int(request, "case_id"))
    )


@endpoints.get(
    r"/ui/cases/{case_id:\d+}/body",
    permission="cases.read",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def case_body(request: web.Request) -> web.Response:
    """The case page's body alone: reloaded when the live stream says the case changed."""
    return await render(
        request, "_case_body.html", await _case_context(request, path_int(request, "case_id"))
    )


STOP_POLLING = 286  # htmx stops an ``every`` poll on this status


@endpoints.get(
    r"/ui/cases/{case_id:\d+}/events/{event_id:\d+}/delivery",
    permission="cases.read",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def delivery(request: web.Request) -> web.Response:
    """The delivery status of what one thread event sent the client; polled until final."""
    case_id, event_id = path_int(request, "case_id"), path_int(request, "event_id")
    async with request.app[DB].acquire() as conn:
        found = await store.events(conn, case_id, after_id=event_id - 1, limit=1)
        if not found or found[0].id != event_id:
            raise NotFound(f"case {case_id} has no event {event_id}")
        shown = await case_deliveries.delivery(conn, found[0])
    if shown is None:
        raise NotFound(f"event {event_id} sent nothing")
    return await render(
        request,
        "_delivery.html",
        {"dl": shown, "case_id": case_id},
        status=STOP_POLLING if shown.final else 200,
    )


async def _reloaded(
    request: web.Request, case_id: int, message: str = "", level: str = "ok"
) -> web.Response:
    ctx = await _case_context(request, case_id)
    return await render(request, "_case_body.html", {**ctx, "message": message, "level": level})


@endpoints.post(
    r"/ui/cases/{case_id:\d+}/status",
    permission="cases.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def change_status(request: web.Request) -> web.Response:
    """Move the case along the configured status model."""
    case_id = path_int(request, "case_id")
    body = await forms.form(request, StatusForm)
    async with request.app[DB].acquire() as conn:
        await rule_engine.changing_case(
            conn,
            transitions.change_status(conn, actor(request), case_id, body.status, body.comment),
        )
    return await _reloaded(request, case_id, "status")


@endpoints.post(
    r"/ui/cases/{case_id:\d+}/classification",
    permission="cases.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def classify(request: web.Request) -> web.Response:
    """Correct category, type or priority (the history keeps what was proposed)."""
    case_id = path_int(request, "case_id")
    patch = await forms.form(request, ClassificationPatch)
    async with request.app[DB].acquire() as conn:
        await rule_engine.changing_case(
            conn, correction.correct(conn, actor(request), case_id, patch)
        )
    return await _reloaded(request, case_id, "classification")


@endpoints.post(
    r"/ui/cases/{case_id:\d+}/reply",
    permission="cases.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def reply(request: web.Request) -> web.Response:
    """Reply by e-mail in the thread, or by Viber/SMS; a refusal says why."""
    app = request.app
    case_id = path_int(request, "case_id")
    form = await forms.form(request, ReplyForm)
    body = decode_query(
        {k: v for k, v in msgspec.structs.asdict(form).items() if v is not None}, ReplyRequest
    )
    try:
        async with app[DB].acquire() as conn:
            _accepted, outbox, work = await case_replies.reply(
                conn,
                app[REDIS],
                app[SETTINGS],
                actor(request),
                case_id,
                body,
                case_notify.organisation_of(app[SETTINGS]),
            )
    except SendRefused as refused:
        return await _reloaded(request, case_id, f"refused:{refused.reason}", "error")
    await realtime.publish(await app[AMQP].publisher(), app[SETTINGS], work)
    await _send_now(app, outbox)
    return await _reloaded(request, case_id, "reply")


@endpoints.post(
    r"/ui/cases/{case_id:\d+}/info-request",
    permission="cases.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def info_request(request: web.Request) -> web.Response:
    """Ask the client for information; the case goes On Hold."""
    app = request.app
    case_id = path_int(request, "case_id")
    body = await forms.form(request, InfoRequest)
    async with app[DB].acquire() as conn:
        _result, outbox = await case_replies.request_info(
            conn, actor(request), case_id, body, case_notify.organisation_of(app[SETTINGS])
        )
    await _send_now(app, outbox)
    return await _reloaded(request, case_id, "info")


@endpoints.post(
    r"/ui/cases/{case_id:\d+}/tasks",
    permission="cases.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def hand_off(request: web.Request) -> web.Response:
    """Hand work on the case to another department, due at the end of a day."""
    case_id = path_int(request, "case_id")
    form = await forms.form(request, TaskForm)
    due = dt.datetime.combine(form.due_on, dt.time(18, 0), tzinfo=clock.business_tz())
    spec = CaseTaskSpec(group_code=form.group_code, title=form.title, due_at=due, body=form.body)
    async with request.app[DB].acquire() as conn:
        await tasks.create_task(conn, actor(request), case_id, spec)
    return await _reloaded(request, case_id, "task")


@endpoints.post(
    r"/ui/cases/{case_id:\d+}/merge",
    permission="cases.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def merge(request: web.Request) -> web.Response:
    """Merge this case into another (a duplicate into its original) and open that one."""
    case_id = path_int(request, "case_id")
    form = await forms.form(request, MergeForm)
    if form.into == case_id:
        raise InvalidInput("into", "a case cannot be merged into itself")
    async with request.app[DB].acquire() as conn:
        into = await duplicates.merge(conn, actor(request), case_id, form.into)
    return web.Response(status=200, headers={"HX-Location": _hx_location(into.id)})


@endpoints.get("/ui/cases/new", permission="cases.manage", response=str, media_type="text/html")
async def new_case(request: web.Request) -> web.Response:
    """Register a case by hand: a walk-in visit (or a call taken without CTI)."""
    async with request.app[DB].acquire() as conn:
        tree = await categories.list_categories(conn, include_inactive=False)
    return await render(
        request,
        "case_new.html",
        {
            "categories": tree,
            "priorities": PRIORITIES,
            "case_types": CASE_TYPES,
            "client_id": request.query.get("client_id", ""),
            "error": None,
        },
    )


@endpoints.post(
    "/ui/cases/new", permission="cases.manage", response=str, media_type="text/html", errors=(400,)
)
async def register(request: web.Request) -> web.Response:
    """Register the case and open it."""
    body = await forms.form(request, WalkInRegistration)
    async with request.app[DB].acquire() as conn:
        result = await intake.from_walk_in(conn, actor(request), body)
    return web.Response(status=303, headers={"Location": f"/ui/cases/{result.case_id}"})
