"""Meters and readings, the client timeline, digital-channel intake (issue 4, points 5, 6, 9)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from aiohttp import web

from admin_api import paging
from admin_api.problems import problem_response
from admin_api.routing import (
    AUTHENTICATED,
    EndpointTable,
    json_response,
    path_int,
    validation_field,
)
from admin_api.security import actor, principal
from admin_api.typedefs import DB
from crm import activity, clients, meters, timeline
from crm.activity import (
    Application,
    ApplicationChannel,
    ApplicationKind,
    ApplicationStatus,
    ChannelEvent,
    ChannelUsage,
    CustomerExperience,
    CxEvent,
    IntakeResult,
    ItemError,
    ShopOrder,
    ShopOrders,
    ShopOrderSpec,
)
from crm.meters import Meter, MeterSpec, Reading, ReadingSource
from crm.timeline import TimelineFilter, TimelinePage
from herald import cursors
from herald.bounds import Id
from herald.errors import InvalidInput

endpoints = EndpointTable("activity")

MAX_BATCH = 1000
Limit = Annotated[int, msgspec.Meta(ge=1, le=200)]


# -- Meters and readings ---------------------------------------------------------------------


class MeterList(msgspec.Struct):
    items: list[Meter]


class NewMeter(msgspec.Struct, forbid_unknown_fields=True):
    serial_number: Annotated[str, msgspec.Meta(pattern=r"^\S(.{0,62}\S)?$")]
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    size_class: meters.SizeClass
    installed_at: dt.date
    verified_until: dt.date | None = None


class NewReading(msgspec.Struct, forbid_unknown_fields=True):
    """A reading in m³ (a JSON number or a decimal string), its date and where it came from."""

    value: Decimal
    read_on: dt.date
    source: ReadingSource = "operator"
    is_replacement: bool = False


class ReadingEntered(msgspec.Struct):
    reading: Reading
    created: bool


class ReadingQuery(msgspec.Struct, forbid_unknown_fields=True):
    limit: Limit = 50
    cursor: str | None = None


class ReadingPage(msgspec.Struct):
    items: list[Reading]
    next_cursor: str | None


@endpoints.get(
    "/api/v1/accounts/{account_id}/meters",
    permission="clients.read",
    response=MeterList,
    errors=(404,),
)
async def account_meters(request: web.Request) -> MeterList:
    """An account's meters, active first, each with its latest reading."""
    async with request.app[DB].acquire() as conn:
        return MeterList(await meters.list_meters(conn, path_int(request, "account_id")))


@endpoints.post(
    "/api/v1/accounts/{account_id}/meters",
    permission="clients.manage",
    body=NewMeter,
    response=Meter,
    status=201,
    errors=(404, 409),
)
async def add_meter(request: web.Request, body: NewMeter) -> Meter:
    """Install a meter on an account (journalled)."""
    spec = MeterSpec(
        body.serial_number, body.model, body.size_class, body.installed_at, body.verified_until
    )
    async with request.app[DB].acquire() as conn:
        return await meters.add_meter(conn, actor(request), path_int(request, "account_id"), spec)


@endpoints.get(
    "/api/v1/meters/{meter_id}", permission="clients.read", response=Meter, errors=(404,)
)
async def get_meter(request: web.Request) -> Meter:
    """One meter with its latest reading."""
    async with request.app[DB].acquire() as conn:
        return await meters.get_meter(conn, path_int(request, "meter_id"))


@endpoints.post(
    "/api/v1/meters/{meter_id}/remove", permission="clients.manage", response=Meter, errors=(404,)
)
async def remove_meter(request: web.Request) -> Meter:
    """Mark a meter removed; its readings stay (journalled)."""
    async with request.app[DB].acquire() as conn:
        return await meters.remove_meter(conn, actor(request), path_int(request, "meter_id"))


@endpoints.post(
    "/api/v1/meters/{meter_id}/readings",
    permission=AUTHENTICATED,
    body=NewReading,
    response=ReadingEntered,
    status=201,
    errors=(403, 404, 409),
)
async def enter_reading(request: web.Request, body: NewReading) -> Any:
    """Enter a reading. Source operator needs clients.manage; client channels (cabinet, app,
    ivr, chatbot) and gdo need channels.ingest. Lower than the last reading: 400, unless
    is_replacement. The same reading posted again: 200 with created false."""
    needed = "clients.manage" if body.source == "operator" else "channels.ingest"
    if needed not in principal(request).permissions:
        return problem_response(
            request,
            403,
            code="permission-denied",
            detail=f"readings from source {body.source!r} need {needed!r}",
        )
    async with request.app[DB].acquire() as conn:
        reading, created = await meters.enter_reading(
            conn,
            actor(request),
            path_int(request, "meter_id"),
            value=body.value,
            read_on=body.read_on,
            source=body.source,
            is_replacement=body.is_replacement,
        )
    result = ReadingEntered(reading, created)
    return result if created else json_response(result, 200)


def _reading_cursor(value: str) -> tuple[dt.date, int]:
    return cursors.decode(value, tuple[dt.date, Id])


@endpoints.get(
    "/api/v1/meters/{meter_id}/readings",
    permission="clients.read",
    query=ReadingQuery,
    response=ReadingPage,
    errors=(404,),
)
async def list_readings(request: web.Request, query: ReadingQuery) -> ReadingPage:
    """A meter's readings, newest read date first, with source and who entered them."""
    before = _reading_cursor(query.cursor) if query.cursor else None
    async with request.app[DB].acquire() as conn:
        items = await meters.list_readings(
            conn, path_int(request, "meter_id"), limit=query.limit + 1, before=before
        )
    page = items[: query.limit]
    cursor = None
    if len(items) > query.limit:
        cursor = cursors.encode(page[-1].read_on, page[-1].id)
    return ReadingPage(page, cursor)


# -- The timeline ----------------------------------------------------------------------------


class TimelineQuery(msgspec.Struct, forbid_unknown_fields=True):
    """``kinds``: comma-separated (message, reading, charge, payment, call, chat, case,
    application, channel, shop_order, survey, outbound_call, ...); period [since, until)."""

    limit: Limit = 50
    cursor: str | None = None
    kinds: (
        Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{1,40}(,[a-z][a-z0-9_]{1,40}){0,30}$")]
        | None
    ) = None
    channel: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{1,40}$")] | None = None
    since: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = None
    until: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = None


@endpoints.get(
    "/api/v1/clients/{client_id}/timeline",
    permission="clients.read",
    query=TimelineQuery,
    response=TimelinePage,
    errors=(404,),
)
async def client_timeline(request: web.Request, query: TimelineQuery) -> TimelinePage:
    """The client's feed, newest first: calls, messages with delivery status, cases,
    applications, channel interactions, readings, charges, payments (CM-07)."""
    client_id = path_int(request, "client_id")
    if query.since and query.until and query.since >= query.until:
        raise InvalidInput("until", "must be after since")
    cursor = timeline.decode_cursor(query.cursor) if query.cursor else None
    flt = TimelineFilter(
        frozenset(query.kinds.split(",")) if query.kinds else None,
        query.channel,
        query.since,
        query.until,
    )
    async with request.app[DB].acquire() as conn:
        await clients.require(conn, client_id)
        return await timeline.client_timeline(
            conn, client_id, limit=query.limit, cursor=cursor, flt=flt
        )


# -- Applications ----------------------------------------------------------------------------


class NewApplication(msgspec.Struct, forbid_unknown_fields=True):
    kind: ApplicationKind
    channel: ApplicationChannel
    status: ApplicationStatus = "registered"
    account_id: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)] | None = None
    description: Annotated[str, msgspec.Meta(max_length=4000)] | None = None


class ApplicationStatusChange(msgspec.Struct, forbid_unknown_fields=True):
    status: ApplicationStatus


class ApplicationQuery(msgspec.Struct, forbid_unknown_fields=True):
    limit: Limit = 50
    before_id: Annotated[Id | None, paging.DEPRECATED_PARAM] = None
    cursor: paging.Cursor | None = None


class ApplicationPage(msgspec.Struct):
    items: list[Application]
    next_before_id: Annotated[int | None, paging.DEPRECATED_FIELD]
    next_cursor: str | None = None


@endpoints.post(
    "/api/v1/clients/{client_id}/applications",
    permission="clients.manage",
    body=NewApplication,
    response=Application,
    status=201,
    errors=(404,),
)
async def create_application(request: web.Request, body: NewApplication) -> Application:
    """Register a client's application (new connection, data update, owner change...)."""
    async with request.app[DB].acquire() as conn:
        return await activity.create_application(
            conn,
            actor(request),
            path_int(request, "client_id"),
            kind=body.kind,
            channel=body.channel,
            status=body.status,
            account_id=body.account_id,
            description=body.description,
        )


@endpoints.get(
    "/api/v1/clients/{client_id}/applications",
    permission="clients.read",
    query=ApplicationQuery,
    response=ApplicationPage,
    errors=(404,),
)
async def list_applications(request: web.Request, query: ApplicationQuery) -> ApplicationPage:
    """A client's applications, newest first."""
    before_id = paging.start(query.cursor, query.before_id)
    async with request.app[DB].acquire() as conn:
        items = await activity.list_applications(
            conn, path_int(request, "client_id"), limit=query.limit, before_id=before_id
        )
    return ApplicationPage(items, *paging.following(items, query.limit, lambda i: i.id))


@endpoints.post(
    "/api/v1/applications/{application_id}/status",
    permission="clients.manage",
    body=ApplicationStatusChange,
    response=Application,
    errors=(404,),
)
async def set_application_status(
    request: web.Request, body: ApplicationStatusChange
) -> Application:
    """Change an application's status (journalled; the timeline item follows)."""
    async with request.app[DB].acquire() as conn:
        return await activity.set_application_status(
            conn, actor(request), path_int(request, "application_id"), body.status
        )


# -- Digital-channel intake ------------------------------------------------------------------


def _decode_items(
    items: list[msgspec.Raw], type_: Any
) -> tuple[list[tuple[int, Any]], list[ItemError]]:
    """Each item of a batch decoded on its own: the good ones, and one error per bad one."""
    good: list[tuple[int, Any]] = []
    bad: list[ItemError] = []
    for n, raw in enumerate(items):
        try:
            good.append((n, msgspec.json.decode(raw, type=type_)))
        except msgspec.ValidationError as exc:
            field, message = validation_field(exc)
            bad.append(ItemError(n, field, message))
    return good, bad


def _batch(body: Any, type_: Any) -> tuple[list[tuple[int, Any]], list[ItemError], bool]:
    """(items, decoding errors, single) of a body holding one item or a list of them."""
    if not isinstance(body, list):
        return [(0, body)], [], True
    if not 1 <= len(body) <= MAX_BATCH:
        raise InvalidInput("body", f"a batch holds 1 to {MAX_BATCH} items, got {len(body)}")
    good, bad = _decode_items(body, type_)
    return good, bad, False


def _result(result: IntakeResult, decoding: list[ItemError], single: bool) -> IntakeResult:
    errors = sorted([*decoding, *result.errors], key=lambda e: e.index)
    if single and errors:
        raise InvalidInput(errors[0].field, errors[0].message)
    return IntakeResult(result.accepted, result.duplicates, errors)


ChannelEventBody = ChannelEvent | Annotated[list[msgspec.Raw], msgspec.Meta(max_length=MAX_BATCH)]
CxEventBody = CxEvent | Annotated[list[msgspec.Raw], msgspec.Meta(max_length=MAX_BATCH)]


@endpoints.post(
    "/api/v1/channel-events",
    permission="channels.ingest",
    body=ChannelEventBody,
    response=IntakeResult,
)
async def channel_events(request: web.Request, body: Any) -> IntakeResult:
    """Interactions from the cabinet, app, shop and chatbot: one ChannelEvent, or a list of up
    to 1,000. Idempotent per (channel, external_id). In a batch, good items are stored and
    bad ones listed in ``errors`` with their index and field; a single bad item is a 400."""
    items, decoding, single = _batch(body, ChannelEvent)
    async with request.app[DB].acquire() as conn:
        result = await activity.ingest_channel_events(conn, items)
    return _result(result, decoding, single)


@endpoints.put(
    "/api/v1/shop-orders/{source_id}",
    permission="channels.ingest",
    body=ShopOrderSpec,
    response=ShopOrder,
    errors=(409,),
)
async def put_shop_order(request: web.Request, body: ShopOrderSpec) -> Any:
    """Create (201) or replace (200) the shop's order ``source_id``; current while not in a
    final status (delivered, cancelled, returned)."""
    async with request.app[DB].acquire() as conn:
        order, created = await activity.upsert_shop_order(
            conn, request.match_info["source_id"], body
        )
    return json_response(order, 201 if created else 200)


@endpoints.post(
    "/api/v1/cx-events", permission="channels.ingest", body=CxEventBody, response=IntakeResult
)
async def cx_events(request: web.Request, body: Any) -> IntakeResult:
    """Survey answers (kind survey) and outbound call results (kind outbound_call): one, or a
    list of up to 1,000; once per (kind, external_id); per-item errors as for channel events."""
    items, decoding, single = _batch(body, CxEvent)
    async with request.app[DB].acquire() as conn:
        result = await activity.ingest_cx_events(conn, items)
    return _result(result, decoding, single)


# -- The card's blocks, on their own ---------------------------------------------------------


class DigitalChannels(msgspec.Struct):
    channels: list[ChannelUsage]
    shop_orders: ShopOrders


@endpoints.get(
    "/api/v1/clients/{client_id}/digital-channels",
    permission="clients.read",
    response=DigitalChannels,
    errors=(404,),
)
async def digital_channels(request: web.Request) -> DigitalChannels:
    """Cabinet, app, shop, chatbot: used or not, first and last interaction; shop orders."""
    client_id = path_int(request, "client_id")
    async with request.app[DB].acquire() as conn:
        await clients.require(conn, client_id)
        return DigitalChannels(
            await activity.channel_usage(conn, client_id),
            await activity.shop_orders(conn, client_id),
        )


@endpoints.get(
    "/api/v1/clients/{client_id}/customer-experience",
    permission="clients.read",
    response=CustomerExperience,
    errors=(404,),
)
async def customer_experience(request: web.Request) -> CustomerExperience:
    """Recent surveys and outbound call results, and the client's opt-outs."""
    client_id = path_int(request, "client_id")
    async with request.app[DB].acquire() as conn:
        await clients.require(conn, client_id)
        return await activity.customer_experience(conn, client_id)
