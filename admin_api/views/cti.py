"""Incoming-call identification: VICIdial events and the agent's live feed (issue 4, point 8).

Agent mapping: VICIdial's ``user`` variable must be the operator's Herald login (compared
case-insensitively); configure VICIdial users with the same IDs as Herald logins. An event
that names only the phone (``extension`` or ``phone_login``) goes to the user an
administrator mapped to it (``PUT /api/v1/cti/extensions``). The
operator's workspace opens ``GET /api/v1/cti/stream`` with its own session and receives
the events of calls whose ``user`` is its login, whichever API process took the event
(Redis pub/sub carries them between processes).
"""

from __future__ import annotations

import dataclasses

import msgspec
from aiohttp import web

from admin_api.inputs import read_form
from admin_api.routing import (
    ENDPOINT_ATTR,
    EndpointTable,
    decode_json,
    decode_query,
    path_int,
)
from admin_api.security import actor, principal
from admin_api.sse import event_stream, viewer_gone
from admin_api.typedefs import DB, REDIS, SETTINGS
from crm import cti, cti_extensions
from crm.cti import Call, CallAccepted, CallEvent, CallPush
from crm.cti_extensions import Extension, ExtensionMapping, ExtensionSpec

endpoints = EndpointTable("cti")

PING_SECONDS = 15.0
# How often the stream loop wakes without traffic to notice a client that went away.
POLL_SECONDS = 1.0
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class StreamReady(msgspec.Struct):
    """First event of a stream: the feed is subscribed; calls for ``agent`` follow."""

    agent: str


async def _call_event(request: web.Request) -> CallEvent:
    """The event from a JSON body, a form body, or query parameters (VICIdial URL style)."""
    if request.content_type == "application/json":
        return decode_json(await request.read(), CallEvent)
    params: dict[str, str] = {k: v for k, v in request.query.items() if v != ""}
    if request.content_type in _FORM_TYPES:
        form = await read_form(request)
        params.update({k: v for k, v in form.items() if isinstance(v, str) and v != ""})
    elif request.can_read_body:
        raise web.HTTPUnsupportedMediaType(text="send JSON, a form, or query parameters")
    # VICIdial substitutes an empty string for a variable without a value: treated as absent.
    return decode_query(params, CallEvent)


@endpoints.post(
    "/api/v1/cti/calls", permission="cti.events", response=CallAccepted, errors=(400, 415)
)
async def post_call_event(request: web.Request) -> CallAccepted:
    """A VICIdial call event (ringing, answered, hung_up); on ringing the agent gets the match.

    Body: JSON (schema below), or the same variables form-encoded or as query parameters,
    the way VICIdial's Start/Dispo Call URLs send them (``?event=start&call_id=--A--call_id--B--
    &phone_number=--A--phone_number--B--&user=--A--user--B--``), posted with the bearer token
    of a user of the role ``integration``. Idempotent per (call, event).
    """
    received = cti.now()
    body = await _call_event(request)
    async with request.app[DB].acquire() as conn:
        call, event, new, push = await cti.record_event(conn, body, received=received)
    pushed = False
    if push is not None and call.agent_login:
        pushed = (
            await cti.push_to_agent(
                request.app[REDIS], request.app[SETTINGS].namespace, call.agent_login, push
            )
            > 0
        )
    return CallAccepted(
        call=call,
        event=event,
        new=new,
        identification=push.identification if push else None,
        pushed=pushed,
    )


# The handler reads JSON, forms and query strings itself; the document declares the JSON body.
_declared, _handler = endpoints.endpoints[-1]
_declared = dataclasses.replace(_declared, body=CallEvent)
endpoints.endpoints[-1] = (_declared, _handler)
setattr(_handler, ENDPOINT_ATTR, _declared)


@endpoints.get(
    "/api/v1/cti/calls/{call_id}", permission="clients.read", response=Call, errors=(404,)
)
async def get_call(request: web.Request) -> Call:
    """One call: client, agent, times, disposition, recording and transcript."""
    call_id = path_int(request, "call_id")
    async with request.app[DB].acquire() as conn:
        return await cti.get_call(conn, call_id)


@endpoints.get(
    "/api/v1/cti/stream",
    permission="clients.read",
    response=CallPush,
    media_type="text/event-stream",
)
async def call_stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events for the logged-in operator: ``ready``, then ``call`` events.

    A ``call`` event with ``event: ringing`` carries the identification (one client with
    its accounts, the candidates, or unknown) before the call is answered; ``answered``
    and ``hung_up`` follow. Comment lines (``: ping``) keep the connection alive.
    """
    login = principal(request).login
    pubsub = request.app[REDIS].pubsub()
    try:
        await pubsub.subscribe(cti.agent_channel(request.app[SETTINGS].namespace, login))
        async with event_stream(request, ping_interval=PING_SECONDS) as resp:
            await resp.send(msgspec.json.encode(StreamReady(login)).decode(), event="ready")
            while resp.is_connected() and not viewer_gone(request):
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=POLL_SECONDS
                )
                if message is not None:
                    await resp.send(message["data"].decode(), event="call")
        return resp
    finally:
        await pubsub.aclose()


class ExtensionQuery(msgspec.Struct, forbid_unknown_fields=True):
    extension: Extension


@endpoints.get("/api/v1/cti/extensions", permission="users.read", response=list[ExtensionMapping])
async def list_extensions(request: web.Request) -> list[ExtensionMapping]:
    """VICIdial phones (extension or phone login) and the Herald user at each."""
    async with request.app[DB].acquire() as conn:
        return await cti_extensions.list_mappings(conn)


@endpoints.put(
    "/api/v1/cti/extensions",
    permission="users.manage",
    body=ExtensionSpec,
    response=ExtensionMapping,
    errors=(400,),
)
async def put_extension(request: web.Request, body: ExtensionSpec) -> ExtensionMapping:
    """Map an extension (``SIP/101``) to a user: a call event naming only that phone reaches
    its operator."""
    async with request.app[DB].acquire() as conn:
        return await cti_extensions.set_mapping(conn, actor(request), body)


@endpoints.delete(
    "/api/v1/cti/extensions",
    permission="users.manage",
    query=ExtensionQuery,
    status=204,
    errors=(400, 404),
)
async def delete_extension(request: web.Request, query: ExtensionQuery) -> None:
    """Remove an extension's mapping (``?extension=SIP/101``)."""
    async with request.app[DB].acquire() as conn:
        await cti_extensions.delete_mapping(conn, actor(request), query.extension)
