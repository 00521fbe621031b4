"""A client's consents: explicit opt-ins and opt-outs per channel and topic, and every change.

Without an explicit choice a topic's default applies: allowed unless the topic requires
an opt-in (marketing). Choices are read when each batch is sent, so an opt-out recorded
here is honoured by every batch not sent yet. Every change is written to the consent
log (``/consents/history``, what the card shows) and journalled as entity ``consent``
with id ``<client_id>:<channel>:<topic>``, in the statement that makes it.

Who changes them: an operator (``PUT /clients/{id}/consents``), the cabinet, app and
chatbot (``/self-service/consents``, role integration), the client from an e-mail
(``/u/{token}``), an SMS STOP reply (``/providers/sms/inbound``), and imports.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from admin_api import inputs, paging
from admin_api.routing import PROVIDER, PUBLIC, EndpointTable, path_int
from admin_api.security import actor
from admin_api.typedefs import DB, REQUEST_ID, SETTINGS
from crm import clients, consents
from crm.consents import ClientConsents
from herald.audit import Actor
from herald.bounds import Id
from herald.errors import InvalidInput
from herald.phones import normalise_phone
from rules import consent
from rules.consent import (
    Applied,
    ConsentChannel,
    ConsentLogEntry,
    ImportReport,
    InboundResult,
    RowError,
    Source,
    StagedRow,
    UnsubscribeLinks,
    record_consent,
)

endpoints = EndpointTable("consents")


class ConsentChange(msgspec.Struct, forbid_unknown_fields=True):
    """A client's choice for one topic on one channel, and where it came from."""

    channel: ConsentChannel
    topic: Annotated[str, msgspec.Meta(min_length=1, max_length=41)]
    opted_in: bool
    source: Source


class ConsentRecorded(msgspec.Struct):
    client_id: int
    channel: str
    topic: str
    opted_in: bool
    source: str
    changed_at: dt.datetime
    # The explicit choice before this one; null when the topic default applied.
    previous: bool | None


@endpoints.get(
    "/api/v1/clients/{client_id}/consents",
    permission="consents.read",
    response=ClientConsents,
    errors=(404,),
)
async def client_consents(request: web.Request) -> ClientConsents:
    """The client's explicit choices, and each topic's default for channels without one."""
    async with request.app[DB].acquire() as conn:
        return await consents.of_client(conn, path_int(request, "client_id"))


@endpoints.put(
    "/api/v1/clients/{client_id}/consents",
    permission="consents.manage",
    body=ConsentChange,
    response=ConsentRecorded,
    errors=(400, 404),
)
async def set_client_consent(request: web.Request, body: ConsentChange) -> ConsentRecorded:
    """Record a client's opt-in or opt-out of a topic on a channel (journalled)."""
    client_id = path_int(request, "client_id")
    async with request.app[DB].acquire() as conn:
        await consents.require_client_and_topic(conn, client_id, body.topic)
        previous = await record_consent(
            conn,
            actor(request),
            client_id=client_id,
            channel=body.channel,
            topic=body.topic,
            opted_in=body.opted_in,
            source=body.source,
        )
        changed_at = await consents.changed_at(conn, client_id, body.channel, body.topic)
    return ConsentRecorded(
        client_id, body.channel, body.topic, body.opted_in, body.source, changed_at, previous
    )


# --- the consent log of the card -------------------------------------------------------


class ConsentHistoryQuery(msgspec.Struct, forbid_unknown_fields=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50
    before_id: Annotated[Id | None, paging.DEPRECATED_PARAM] = None
    cursor: paging.Cursor | None = None


class ConsentHistory(msgspec.Struct):
    client_id: int
    items: list[ConsentLogEntry]
    next_before_id: Annotated[int | None, paging.DEPRECATED_FIELD]
    next_cursor: str | None = None


@endpoints.get(
    "/api/v1/clients/{client_id}/consents/history",
    permission="consents.read",
    query=ConsentHistoryQuery,
    response=ConsentHistory,
    errors=(404,),
)
async def consent_history(request: web.Request, query: ConsentHistoryQuery) -> ConsentHistory:
    """Every change of the client's consents, newest first: who, when, source, old and new."""
    client_id = path_int(request, "client_id")
    before_id = paging.start(query.cursor, query.before_id)
    async with request.app[DB].acquire() as conn:
        await clients.require(conn, client_id)
        items = await consent.history(conn, client_id, limit=query.limit, before_id=before_id)
    return ConsentHistory(client_id, items, *paging.following(items, query.limit, lambda i: i.id))


# --- the cabinet, the app and the chatbot ------------------------------------------------

OrNumber = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{10}$")]
ClientId = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]


class ConsentClientRef(msgspec.Struct, forbid_unknown_fields=True):
    """A client as a self-service channel knows them: Client_ID or the OR number of an account."""

    client_id: ClientId | None = None
    or_number: OrNumber | None = None


class SelfServiceChange(msgspec.Struct, forbid_unknown_fields=True):
    channel: ConsentChannel
    topic: Annotated[str, msgspec.Meta(min_length=1, max_length=41)]
    opted_in: bool


class SelfServiceConsents(msgspec.Struct, forbid_unknown_fields=True):
    """Choices a client made in the cabinet, the app or the chatbot, recorded together."""

    source: Literal["cabinet", "app", "chatbot"]
    changes: Annotated[list[SelfServiceChange], msgspec.Meta(min_length=1, max_length=50)]
    client_id: ClientId | None = None
    or_number: OrNumber | None = None


class SelfServiceRecorded(msgspec.Struct):
    client_id: int
    source: str
    # Per change: ``previous`` is the explicit state before (null: the topic default),
    # ``changed`` false when the client already had this choice (nothing logged).
    changes: list[Applied]


@endpoints.get(
    "/api/v1/self-service/consents",
    permission="consents.client",
    query=ConsentClientRef,
    response=ClientConsents,
    errors=(404,),
)
async def self_service_consents(request: web.Request, query: ConsentClientRef) -> ClientConsents:
    """A client's choices and the topic defaults, for the cabinet, app or chatbot to show."""
    async with request.app[DB].acquire() as conn:
        client_id = await clients.resolve(conn, query.client_id, query.or_number)
        return await consents.of_client(conn, client_id)


@endpoints.put(
    "/api/v1/self-service/consents",
    permission="consents.client",
    body=SelfServiceConsents,
    response=SelfServiceRecorded,
    errors=(400, 404),
)
async def self_service_change(
    request: web.Request, body: SelfServiceConsents
) -> SelfServiceRecorded:
    """Record the choices a client made in the cabinet, app or chatbot (source named), at once."""
    seen: dict[tuple[str, str], int] = {}
    for i, change in enumerate(body.changes):
        if (change.channel, change.topic) in seen:
            raise InvalidInput(
                f"changes.{i}",
                f"the same channel and topic as changes.{seen[(change.channel, change.topic)]}",
            )
        seen[(change.channel, change.topic)] = i
    async with request.app[DB].acquire() as conn:
        client_id = await clients.resolve(conn, body.client_id, body.or_number)
        topics = await consents.topic_codes(conn)
        for i, change in enumerate(body.changes):
            await consents.require_topic(conn, f"changes.{i}.topic", change.topic, topics)
        applied = await consent.apply_choices(
            conn,
            actor(request),
            body.source,
            [consent.Choice(client_id, c.channel, c.topic, c.opted_in) for c in body.changes],
        )
    return SelfServiceRecorded(client_id, body.source, applied)


# --- the unsubscribe link of e-mails (RFC 8058 one-click) ---------------------------------


def _system_actor(request: web.Request, login: str) -> Actor:
    """The actor of a change no user makes (a link, a gateway), with the request id."""
    return Actor(login=login, request_id=request.get(REQUEST_ID))


_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}
_PAGE = """<!doctype html>
<html lang="uk"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title>
<style>body{{font:17px/1.5 system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem}}
button{{font:inherit;padding:.5rem 1.2rem;cursor:pointer}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(
        text=_PAGE.format(title=html.escape(title), body=body),
        status=status,
        content_type="text/html",
        headers=_PAGE_HEADERS,
    )


async def _link_target(request: web.Request, conn: Any) -> tuple[int, str, str] | None:
    """(client, topic, topic name) of a genuine link to an existing client and topic."""
    found = UnsubscribeLinks.from_settings(request.app[SETTINGS]).read(request.match_info["token"])
    if found is None:
        return None
    client_id, topic = found
    name = await consents.link_topic_name(conn, client_id, topic)
    return None if name is None else (client_id, topic, name)


def _invalid_link() -> web.Response:
    return _page(
        "Посилання недійсне",
        "<p>Посилання для відписки недійсне або пошкоджене. Скопіюйте його з листа "
        "повністю або змініть налаштування в особистому кабінеті.</p>",
        404,
    )


@endpoints.get("/u/{token}", permission=PUBLIC, response=str, media_type="text/html", errors=(404,))
async def unsubscribe_page(request: web.Request) -> web.Response:
    """The page an e-mail's unsubscribe link opens: asks to confirm (a GET changes nothing)."""
    async with request.app[DB].acquire() as conn:
        target = await _link_target(request, conn)
        if target is None:
            return _invalid_link()
        client_id, topic, name = target
        opted_in = await consents.email_choice(conn, client_id, topic)
    if opted_in is False:
        return _page(
            "Ви вже відписані",
            f"<p>Ви вже не отримуєте листів «{html.escape(name)}» на електронну пошту.</p>",
        )
    # Mail scanners open links: only the button (a POST) unsubscribes.
    return _page(
        "Відписатися від листів",
        f"<p>Більше не надсилати вам листів «{html.escape(name)}» на електронну "
        'пошту?</p><form method="post"><button type="submit">Відписатися</button>'
        "</form>",
    )


@endpoints.post(
    "/u/{token}", permission=PUBLIC, response=str, media_type="text/html", errors=(404,)
)
async def unsubscribe(request: web.Request) -> web.Response:
    """Opt the link's client out of its topic on e-mail (the page's button, or a one-click POST)."""
    async with request.app[DB].acquire() as conn:
        target = await _link_target(request, conn)
        if target is None:
            return _invalid_link()
        client_id, topic, name = target
        await record_consent(
            conn,
            _system_actor(request, "unsubscribe-link"),
            client_id=client_id,
            channel="email",
            topic=topic,
            opted_in=False,
            source="email_unsubscribe",
        )
    return _page(
        "Ви відписалися",
        f"<p>Ви більше не отримуватимете листів «{html.escape(name)}» на електронну "
        "пошту. Змінити вибір можна в особистому кабінеті.</p>",
    )


# --- STOP replies to SMS ----------------------------------------------------------------


class InboundSms(msgspec.Struct, forbid_unknown_fields=True):
    """An SMS a client sent to Herald's number, as the gateway posts it."""

    phone: Annotated[str, msgspec.Meta(min_length=3, max_length=32)]
    text: Annotated[str, msgspec.Meta(max_length=2000)]
    message_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    received_at: dt.datetime | None = None


@endpoints.post(
    "/api/v1/providers/sms/inbound",
    permission=PROVIDER,
    body=InboundSms,
    response=InboundResult,
    errors=(400,),
)
async def sms_inbound(request: web.Request, body: InboundSms) -> InboundResult:
    """An inbound SMS: "STOP" ("СТОП", "стоп"...) opts the number's clients out of SMS
    (every topic but service notices); other text is logged, nothing else."""
    phone = normalise_phone(body.phone)
    if phone is None:
        raise InvalidInput("phone", f"not a phone number: {body.phone!r}")
    async with request.app[DB].acquire() as conn:
        return await consent.inbound_sms(
            conn,
            _system_actor(request, "sms-gateway"),
            phone=phone,
            text=body.text,
            provider_message_id=body.message_id,
        )


# --- import ---------------------------------------------------------------------------

MAX_IMPORT_BYTES = 64 * 2**20
_JSONL_TYPES = (
    "application/x-ndjson",
    "application/jsonl",
    "application/json-lines",
    "application/x-jsonlines",
)


class ConsentImportQuery(msgspec.Struct, forbid_unknown_fields=True):
    """``format`` defaults from the Content-Type (text/csv or application/x-ndjson), then csv;
    ``source`` is import, or contract for choices signed in a contract; ``dry_run`` checks only."""

    format: Literal["csv", "jsonl"] | None = None
    source: Literal["import", "contract"] = "import"
    dry_run: bool = False


async def _read_file(request: web.Request) -> str:
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > MAX_IMPORT_BYTES:
            raise InvalidInput(
                "body", f"the file is larger than {MAX_IMPORT_BYTES // 2**20} MB; split it"
            )
        chunks.append(chunk)
    try:
        text = b"".join(chunks).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            "body", f"the file is not UTF-8 text (byte {exc.start}); save it as CSV UTF-8"
        ) from None
    if not text.strip():
        raise InvalidInput("body", "the file is empty")
    if "\x00" in text or inputs.nul_field(text.encode()) is not None:
        raise InvalidInput("body", "the file " + inputs.NUL_DETAIL)
    return text


def _parse_csv(text: str) -> tuple[int, list[StagedRow], list[RowError]]:
    """Rows of a CSV with a header (comma or semicolon separated); row numbers as a sheet shows them."""
    first = text.split("\n", 1)[0]
    reader = csv.reader(
        io.StringIO(text),
        delimiter=";" if first.count(";") > first.count(",") else ",",
        strict=True,
    )
    try:
        header = [h.strip().lower() for h in next(reader)]
        unknown = [h for h in header if h not in consent.IMPORT_COLUMNS]
        if unknown or len(set(header)) != len(header):
            raise InvalidInput(
                "body",
                f"header: unknown or repeated column(s) "
                f"{', '.join(unknown) or 'repeated'}; the columns are "
                f"{', '.join(consent.IMPORT_COLUMNS)}",
            )
        missing = [h for h in ("channel", "topic", "opted_in") if h not in header]
        if missing or not {"client_id", "or_number"} & set(header):
            raise InvalidInput(
                "body", "header: needs channel, topic, opted_in and client_id or or_number"
            )
        rows = 0
        staged: list[StagedRow] = []
        refused: list[RowError] = []
        for values in reader:
            if not values or values == [""]:
                continue
            rows += 1
            if len(values) != len(header):
                field = header[len(values)] if len(values) < len(header) else "row"
                refused.append(
                    RowError(
                        reader.line_num,
                        field,
                        f"{len(values)} values, the header has {len(header)}",
                    )
                )
                continue
            found = consent.stage_row(reader.line_num, dict(zip(header, values, strict=True)))
            if isinstance(found, RowError):
                refused.append(found)
            else:
                staged.append(found)
    except csv.Error as exc:
        raise InvalidInput("body", f"row {reader.line_num}: {exc}") from None
    return rows, staged, refused


def _parse_jsonl(text: str) -> tuple[int, list[StagedRow], list[RowError]]:
    """One JSON object per line; row numbers are line numbers."""
    rows = 0
    staged: list[StagedRow] = []
    refused: list[RowError] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        rows += 1
        if inputs.too_deep(line.encode()):
            refused.append(
                RowError(number, "row", f"nested more than {inputs.MAX_JSON_DEPTH} levels deep")
            )
            continue
        try:
            values = msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            refused.append(RowError(number, "row", f"not JSON: {exc}"))
            continue
        if not isinstance(values, dict):
            refused.append(RowError(number, "row", "not a JSON object"))
            continue
        unknown = sorted(k for k in values if k not in consent.IMPORT_COLUMNS)
        found = (
            RowError(number, unknown[0], "unknown field")
            if unknown
            else consent.stage_row(number, values)
        )
        if isinstance(found, RowError):
            refused.append(found)
        else:
            staged.append(found)
    return rows, staged, refused


@endpoints.post(
    "/api/v1/consents/import",
    permission="consents.manage",
    query=ConsentImportQuery,
    response=ImportReport,
    errors=(400,),
)
async def import_consents(request: web.Request, query: ConsentImportQuery) -> ImportReport:
    """Import choices from CSV or JSON lines (client_id or or_number, channel, topic, opted_in):
    valid rows are applied, every refused row is listed with its row number and field."""
    fmt = query.format or ("jsonl" if request.content_type in _JSONL_TYPES else "csv")
    text = await _read_file(request)
    rows, staged, refused = _parse_csv(text) if fmt == "csv" else _parse_jsonl(text)
    if rows == 0:
        raise InvalidInput("body", "the file has no rows")
    async with request.app[DB].acquire() as conn:
        return await consent.import_choices(
            conn,
            actor(request),
            source=query.source,
            rows=rows,
            staged=staged,
            refused=refused,
            dry_run=query.dry_run,
        )


def parse_import_csv(text: str) -> tuple[int, list[StagedRow], list[RowError]]:
    """An import CSV's rows read, the rows staged and the rows refused (the page's import
    reads a file the same way as this endpoint)."""
    return _parse_csv(text)
