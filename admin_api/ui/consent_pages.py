"""Consents and stop lists (IC-07, IC-08): a client's consents per channel and topic with
the change log (also a block of the client card), the bulk import of consents, and the
stop lists by client and by segment, per message topic, with who added whom and why.

Both are read by the dispatcher before every batch (rules.consent, rules.stop_lists):
what is recorded here applies to the next send.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import msgspec
from aiohttp import web

from admin_api import inputs
from admin_api.routing import EndpointTable, decode_query, path_int
from admin_api.security import actor
from admin_api.typedefs import DB
from admin_api.ui import forms
from admin_api.ui.rendering import render
from admin_api.views.rules_consents import parse_import_csv
from admin_api.views.segments import read_text
from crm import consents
from crm.segments import store as segment_store
from herald import clock
from herald.bounds import Id
from herald.errors import InvalidInput
from rules import consent, stop_lists
from rules.consent import CONSENT_CHANNELS, record_consent

endpoints = EndpointTable("ui")

CHANNEL_ORDER = ("sms", "viber", "email", "push", "telegram", "voice")
assert set(CHANNEL_ORDER) == CONSENT_CHANNELS
LOG_LIMIT = 50
ENTRIES_LIMIT = 200


class ConsentCell(msgspec.Struct):
    channel: str
    opted_in: bool  # what applies now
    explicit: bool  # the client chose (else the topic's default)
    source: str | None = None
    changed_at: dt.datetime | None = None


class ConsentRow(msgspec.Struct):
    topic: consents.Topic
    cells: list[ConsentCell]


async def consent_block(request: web.Request, client_id: int, **extra: Any) -> web.Response:
    """A client's consents (topic x channel, explicit or by default) and the change log."""
    async with request.app[DB].acquire() as conn:
        found = await consents.of_client(conn, client_id)
        topics = await consents.topics(conn)
        log = await consent.history(conn, client_id, limit=LOG_LIMIT)
        blocked = await stop_lists.list_entries(conn, client_id=client_id, active_at=clock.now())
    chosen = {(c.topic, c.channel): c for c in found.consents}
    rows = []
    for topic in topics:
        cells = []
        for channel in CHANNEL_ORDER:
            c = chosen.get((topic.code, channel))
            cells.append(
                ConsentCell(channel, c.opted_in, True, c.source, c.changed_at)
                if c is not None
                else ConsentCell(channel, not topic.requires_opt_in, False)
            )
        rows.append(ConsentRow(topic, cells))
    return await render(
        request,
        "_consents.html",
        {
            "client_id": client_id,
            "rows": rows,
            "channels": CHANNEL_ORDER,
            "log": log,
            "blocked": blocked,
            "topic_names": {t.code: t for t in topics},
            **extra,
        },
    )


@endpoints.get(
    r"/ui/clients/{client_id:\d+}/consents",
    permission="consents.read",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def consents_part(request: web.Request) -> web.Response:
    """The consents block of a client (the card and the consents page load it)."""
    return await consent_block(request, path_int(request, "client_id"))


class ConsentForm(msgspec.Struct):
    # Named apart from the card's send form (its "channel" radios share the page).
    channel: Literal["sms", "viber", "email", "push", "telegram", "voice"] = msgspec.field(
        name="consent_channel"
    )
    topic: str = msgspec.field(name="consent_topic")
    opted_in: bool = msgspec.field(name="consent_opted_in")


@endpoints.post(
    r"/ui/clients/{client_id:\d+}/consents",
    permission="consents.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def set_consent(request: web.Request) -> web.Response:
    """Record the client's opt-in or opt-out (source: operator); the block comes back."""
    client_id = path_int(request, "client_id")
    form = await forms.form(request, ConsentForm)
    async with request.app[DB].acquire() as conn:
        await consents.require_client_and_topic(conn, client_id, form.topic)
        await record_consent(
            conn,
            actor(request),
            client_id=client_id,
            channel=form.channel,
            topic=form.topic,
            opted_in=form.opted_in,
            source="operator",
        )
    return await consent_block(request, client_id, changed=(form.topic, form.channel))


class StopListsQuery(msgspec.Struct):
    client_id: Id | None = None
    show: Literal["active", "all"] = "active"


async def _stop_lists_page(
    request: web.Request,
    query: StopListsQuery,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    report: consent.ImportReport | None = None,
    status: int = 200,
) -> web.Response:
    async with request.app[DB].acquire() as conn:
        entries = await stop_lists.list_entries(
            conn,
            active_at=clock.now() if query.show == "active" else None,
            limit=ENTRIES_LIMIT,
        )
        topics = await consents.topics(conn)
        segments = await segment_store.list_segments(conn, after_id=0, limit=200, kind=None)
    return await render(
        request,
        "stop_lists.html",
        {
            "entries": sorted(entries, key=lambda e: e.id, reverse=True),
            "topics": topics,
            "topic_names": {t.code: t for t in topics},
            "segments": segments,
            "segment_names": {s.id: s.name for s in segments},
            "query": query,
            "errors": errors or {},
            "values": values or {},
            "report": report,
            "now": clock.now(),
        },
        status=status,
    )


@endpoints.get("/ui/stop-lists", permission="rules.read", response=str, media_type="text/html")
async def stop_lists_page(request: web.Request) -> web.Response:
    """Stop lists (in force, or all) with who added whom and why; a client's consents."""
    return await _stop_lists_page(request, forms.query(request, StopListsQuery))


class StopListForm(msgspec.Struct):
    target: Literal["client", "segment"] = "client"
    client_id: Id | None = None
    segment_id: Id | None = None
    topics: list[str] = []
    reason: str = ""
    valid_until: dt.date | None = None


def end_of_day(day: dt.date) -> dt.datetime:
    """The end of a day in the business's time zone (the first moment of the next)."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), clock.business_tz())


@endpoints.post(
    "/ui/stop-lists", permission="stoplists.manage", response=str, media_type="text/html"
)
async def add_stop_list_entry(request: web.Request) -> web.Response:
    """Block a client or a segment from some topics (none ticked: all) until a day."""
    posted = await inputs.read_form(request)
    values = {k: v for k, v in posted.items() if isinstance(v, str) and k != "csrf_token"}
    try:
        form = await forms.form(request, StopListForm, lists=("topics",))
        client_id = form.client_id if form.target == "client" else None
        segment_id = form.segment_id if form.target == "segment" else None
        if form.target == "client" and client_id is None:
            raise InvalidInput("client_id", "give the Client_ID to block")
        if form.target == "segment" and segment_id is None:
            raise InvalidInput("segment_id", "choose the segment to block")
        async with request.app[DB].acquire() as conn:
            if segment_id is not None and not await segment_store.exists(conn, segment_id):
                raise InvalidInput("segment_id", f"no segment {segment_id}")
            await stop_lists.add_entry(
                conn,
                actor(request),
                reason=form.reason,
                client_id=client_id,
                segment_id=segment_id,
                topics=form.topics or None,
                valid_until=end_of_day(form.valid_until) if form.valid_until else None,
            )
    except InvalidInput as error:
        field = error.field.split(".")[0].split("[")[0]
        return await _stop_lists_page(
            request, StopListsQuery(), errors={field: error.detail}, values=values, status=400
        )
    raise web.HTTPSeeOther("/ui/stop-lists")


@endpoints.post(
    r"/ui/stop-lists/{entry_id:\d+}/delete",
    permission="stoplists.manage",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def remove_stop_list_entry(request: web.Request) -> web.Response:
    """Delete an entry (the journal keeps it)."""
    async with request.app[DB].acquire() as conn:
        await stop_lists.remove_entry(conn, actor(request), path_int(request, "entry_id"))
    raise web.HTTPSeeOther("/ui/stop-lists")


class ConsentImportForm(msgspec.Struct):
    source: Literal["import", "contract"] = "import"
    dry_run: bool = False


@endpoints.post(
    "/ui/consents/import", permission="consents.manage", response=str, media_type="text/html"
)
async def import_consents(request: web.Request) -> web.Response:
    """Bulk import of consents from a CSV (client_id or or_number, channel, topic,
    opted_in): the valid rows are applied, every refused row is listed."""
    posted = await inputs.read_form(request)
    upload = posted.get("file")
    try:
        form = decode_query(
            {k: v for k, v in posted.items() if k in ("source", "dry_run") and isinstance(v, str)},
            ConsentImportForm,
        )
        if upload is None or isinstance(upload, str):
            raise InvalidInput("file", "choose a CSV file")
        text = await read_text(request, upload.file.read())
        rows, staged, refused = parse_import_csv(text)
        if rows == 0:
            raise InvalidInput("file", "the file has no rows")
        async with request.app[DB].acquire() as conn:
            report = await consent.import_choices(
                conn,
                actor(request),
                source=form.source,
                rows=rows,
                staged=staged,
                refused=refused,
                dry_run=form.dry_run,
            )
    except InvalidInput as error:
        return await _stop_lists_page(
            request, StopListsQuery(), errors={"import": error.detail}, status=400
        )
    return await _stop_lists_page(request, StopListsQuery(), report=report)


class ConsentLookup(msgspec.Struct):
    client_id: Id


@endpoints.get(
    "/ui/consents/client",
    permission="consents.read",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def consents_lookup(request: web.Request) -> web.Response:
    """The consents block of the client whose Client_ID was typed on the page."""
    return await consent_block(request, forms.query(request, ConsentLookup).client_id)
