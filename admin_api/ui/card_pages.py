"""The client card page and its live parts: billing refresh, timeline, audit history, meters."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor, principal
from admin_api.typedefs import DB
from admin_api.ui import forms
from admin_api.ui.contact_pages import ROLES
from admin_api.ui.rendering import render
from admin_api.views.client_activity import TimelineQuery
from admin_api.views.clients import BILLING
from crm import audit, card_history, contacts, meters, timeline
from crm import card as cards
from crm.timeline import TimelineFilter
from dispatcher.realtime import operator_send
from herald.bounds import Id
from herald.errors import InvalidInput

endpoints = EndpointTable("ui")

# The timeline's filter buttons: a label and the kinds it shows.
TIMELINE_FILTERS = (
    ("all", ""),
    ("message", "message"),
    ("call", "call"),
    ("case", "case,application"),
    ("reading", "reading"),
    ("payment", "charge,payment"),
    ("shop_order", "shop_order"),
)
TIMELINE_PAGE = 20


class CardForm(msgspec.Struct):
    from_: dt.date | None = msgspec.field(name="from", default=None)
    to: dt.date | None = None
    call: Id | None = None


class ReadingForm(msgspec.Struct):
    value: str
    read_on: dt.date | None = None
    is_replacement: bool = False


def period(form: CardForm) -> tuple[dt.date, dt.date]:
    start, end = cards.default_period(form.to or cards.kyiv_today())
    start = form.from_ or start
    if start > end:
        raise InvalidInput("from", "the period starts after it ends")
    return start, end


async def _card(
    request: web.Request, client_id: int, form: CardForm, refresh: bool = False
) -> cards.Card:
    who = principal(request)
    return await cards.build_card(
        request.app[DB],
        request.app[BILLING],
        client_id=client_id,
        pii="clients.pii" in who.permissions,
        refresh=refresh,
        period=period(form),
        refreshed_by=who.login,
    )


@endpoints.get(
    r"/ui/clients/{client_id:\d+}",
    permission="clients.read",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def card_page(request: web.Request) -> web.Response:
    """The client card: identity, dashboard, accounts with billing and meters, contacts,
    channels, orders, experience; the timeline and the history load beside it."""
    client_id = path_int(request, "client_id")
    form = forms.query(request, CardForm)
    card = await _card(request, client_id, form)
    templates = []
    if "messages.send" in principal(request).permissions:
        async with request.app[DB].acquire() as conn:
            templates = await operator_send.allowed_templates(conn)
    return await render(
        request,
        "card.html",
        {
            "card": card,
            "form": form,
            "templates": templates,
            "call_id": form.call,
            "timeline_filters": TIMELINE_FILTERS,
            # the contacts block (also rendered alone by contact_pages)
            "client_id": client_id,
            "contacts_list": card.contacts,
            "roles": ROLES,
            "account_choices": [(a.id, a.or_number) for a in card.accounts],
        },
    )


@endpoints.get(
    r"/ui/clients/{client_id:\d+}/dashboard",
    permission="clients.read",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def dashboard(request: web.Request) -> web.Response:
    """The dashboard for another period."""
    form = forms.query(request, CardForm)
    card = await _card(request, path_int(request, "client_id"), form)
    return await render(request, "_dashboard.html", {"card": card, "form": form})


@endpoints.post(
    r"/ui/clients/{client_id:\d+}/billing/refresh",
    permission="clients.read",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def refresh_billing(request: web.Request) -> web.Response:
    """Ask billing now; the accounts block comes back with what billing answered (or the
    cache marked stale when billing fails)."""
    card = await _card(request, path_int(request, "client_id"), CardForm(), refresh=True)
    return await render(request, "_accounts.html", {"card": card, "refreshed": True})


@endpoints.get(
    r"/ui/clients/{client_id:\d+}/timeline",
    permission="clients.read",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def timeline_part(request: web.Request) -> web.Response:
    """A page of the timeline (newest first); the last row fetches the next when revealed."""
    client_id = path_int(request, "client_id")
    query = forms.query(request, TimelineQuery)
    cursor = timeline.decode_cursor(query.cursor) if query.cursor else None
    flt = TimelineFilter(
        frozenset(query.kinds.split(",")) if query.kinds else None,
        query.channel,
        query.since,
        query.until,
    )
    async with request.app[DB].acquire() as conn:
        page = await timeline.client_timeline(
            conn, client_id, limit=min(query.limit, TIMELINE_PAGE), cursor=cursor, flt=flt
        )
    return await render(
        request,
        "_timeline.html",
        {"page": page, "client_id": client_id, "kinds": query.kinds or "", "first": cursor is None},
    )


@endpoints.get(
    r"/ui/clients/{client_id:\d+}/history",
    permission="clients.read",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def history_part(request: web.Request) -> web.Response:
    """The change history of the card, newest first: the client record, its accounts,
    meters, contacts and applications (crm.card_history: what the card shows, so whoever
    reads the card reads its history), passports and tax ids masked without clients.pii."""
    client_id = path_int(request, "client_id")
    async with request.app[DB].acquire() as conn:
        entries = await card_history.card_history(conn, client_id, limit=HISTORY_LIMIT)
    pii = "clients.pii" in principal(request).permissions
    if not pii:
        entries = [masked(e) for e in entries]
    return await render(
        request,
        "_history.html",
        {"entries": entries, "pii_masked": not pii, "limit": HISTORY_LIMIT},
    )


HISTORY_LIMIT = 100
PII_FIELDS = frozenset({"passport_number", "tax_id"})


def masked(entry: audit.AuditEntry) -> audit.AuditEntry:
    """An entry with passport and tax id values masked, for roles without clients.pii."""
    if entry.field not in PII_FIELDS:
        return entry
    hide = contacts.mask_passport if entry.field == "passport_number" else cards.mask
    return msgspec.structs.replace(
        entry, old_value=hide(entry.old_value), new_value=hide(entry.new_value)
    )


@endpoints.post(
    r"/ui/meters/{meter_id:\d+}/readings",
    permission="clients.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def enter_reading(request: web.Request) -> web.Response:
    """An operator enters a meter reading; the meter's row comes back with it."""
    meter_id = path_int(request, "meter_id")
    body = await forms.form(request, ReadingForm)
    try:
        value = Decimal(body.value.replace(",", ".").replace(" ", ""))
    except InvalidOperation:
        raise InvalidInput("value", "a reading is a number, e.g. 1234.5") from None
    async with request.app[DB].acquire() as conn:
        await meters.enter_reading(
            conn,
            actor(request),
            meter_id,
            value=value,
            read_on=body.read_on or meters.today_in_kyiv(),
            source="operator",
            is_replacement=body.is_replacement,
        )
        meter = await meters.get_meter(conn, meter_id)
    return await render(request, "_meter.html", {"meter": meter, "saved": True})
