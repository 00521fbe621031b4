"""A message from the card mid-call: pick a template, see it rendered for this client, send
it by Viber or SMS, follow its delivery; a refusal (consent, stop list, quiet hours) says why."""

from __future__ import annotations

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor
from admin_api.typedefs import AMQP, DB, REDIS, SETTINGS
from admin_api.ui import forms
from admin_api.ui.rendering import render
from admin_api.views.events import _organisation
from admin_api.views.templates import ENGINE
from dispatcher.realtime import messages as realtime
from dispatcher.realtime import operator_send
from dispatcher.realtime.operator_send import OperatorSendRequest, SendRefused
from dispatcher.templating import store as template_store
from herald.bounds import Id
from rules.consent import UnsubscribeLinks

endpoints = EndpointTable("ui")

SEND_CHANNELS = ("viber", "sms")
FINAL_STATUSES = frozenset({"delivered", "read", "failed", "skipped", "converted"})
STOP_POLLING = 286  # htmx stops an ``every`` poll on this status


class SendForm(msgspec.Struct):
    template_id: Id | None = None
    channel: str = "viber"


def _text(content: object) -> str:
    """The words the client will read, whatever the channel's content type."""
    for name in ("text", "text_body", "subject"):
        value = getattr(content, name, None)
        if value:
            return str(value)
    return ""


@endpoints.get(
    r"/ui/clients/{client_id:\d+}/send/preview",
    permission="messages.send",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def preview(request: web.Request) -> web.Response:
    """The chosen template rendered for this client on the chosen channel."""
    client_id = path_int(request, "client_id")
    form = forms.query(request, SendForm)
    if form.template_id is None:
        return await render(request, "_send_preview.html", {"preview": None, "text": ""})
    async with request.app[DB].acquire() as conn:
        allowed = {t.id: t for t in await operator_send.allowed_templates(conn)}
        if form.template_id not in allowed:
            return await render(request, "_send_preview.html", {"preview": None, "text": ""})
        shown = await template_store.preview(
            conn,
            request.app[ENGINE],
            form.template_id,
            allowed[form.template_id].current_version,
            client_id=client_id,
            channel=form.channel,
            language=None,
            organisation=_organisation(request),
            links=UnsubscribeLinks.from_settings(request.app[SETTINGS]),
        )
    return await render(
        request,
        "_send_preview.html",
        {"preview": shown, "text": _text(shown.content) if shown.content else ""},
    )


@endpoints.post(
    r"/ui/clients/{client_id:\d+}/send",
    permission="messages.send",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def send(request: web.Request) -> web.Response:
    """Send now on the realtime path; the result polls the delivery status."""
    app = request.app
    client_id = path_int(request, "client_id")
    form = await forms.form(request, SendForm)
    if form.template_id is None or form.channel not in SEND_CHANNELS:
        return await render(
            request, "_send_result.html", {"refused": None, "missing": True, "status": None}
        )
    body = OperatorSendRequest(template_id=form.template_id, channel=form.channel)  # type: ignore[arg-type]  # in SEND_CHANNELS
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
        return await render(
            request, "_send_result.html", {"refused": refused, "missing": False, "status": None}
        )
    await realtime.publish(await app[AMQP].publisher(), app[SETTINGS], work)
    return await render(
        request,
        "_send_result.html",
        {"refused": None, "missing": False, "status": None, "accepted": accepted},
        headers={"HX-Trigger": "herald:timeline"},
    )


@endpoints.get(
    "/ui/messages/{message}/status",
    permission="clients.read",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def status(request: web.Request) -> web.Response:
    """A sent message's latest status; polled until final, and the timeline reloads when it
    changes."""
    async with request.app[DB].acquire() as conn:
        found = await operator_send.message_status(conn, request.match_info["message"])
    final = found.status in FINAL_STATUSES
    headers = {"HX-Trigger": "herald:timeline"} if request.query.get("seen") != found.status else {}
    return await render(
        request,
        "_message_status.html",
        {"status": found, "final": final},
        status=STOP_POLLING if final else 200,
        headers=headers,
    )
