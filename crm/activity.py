"""What a client does outside the contact centre, and what the card shows of it.

Intake (issue 4, point 9): interactions posted by the personal cabinet, the mobile app,
the shop and the chatbot (``ingest_channel_events``), shop orders (``upsert_shop_order``),
survey answers and outbound call results (``ingest_cx_events``); applications entered
by operators. Every one lands on the client's timeline. The card's blocks
(``channel_usage``, ``shop_orders``, ``customer_experience``) are one or two indexed
queries each.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any, Literal

import asyncpg
import msgspec

from crm import timeline
from herald import clock
from herald.audit import Actor, Change, record
from herald.errors import Conflict, InvalidInput, NotFound

CHANNELS = ("cabinet", "app", "shop", "chatbot")
Channel = Literal["cabinet", "app", "shop", "chatbot"]
OrNumber = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{10}$")]
ClientId = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
ExternalId = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Moment = Annotated[dt.datetime, msgspec.Meta(tz=True)]
Text = Annotated[str, msgspec.Meta(max_length=2000)]
# Clocks of the posting systems may run a little ahead of ours.
CLOCK_SKEW = dt.timedelta(minutes=5)

_CHANNEL_TITLES = {
    "cabinet": "Особовий кабінет",
    "app": "Мобільний застосунок",
    "shop": "Інтернет-магазин",
    "chatbot": "Чат-бот",
}
_TYPE_TITLES = {
    "login": "вхід",
    "reading_submitted": "передано показник",
    "payment_viewed": "переглянуто рахунок",
    "payment": "оплата",
    "chat": "чат",
    "application": "заявка",
    "order_placed": "замовлення",
}


class ItemError(msgspec.Struct, frozen=True):
    """Why one item of a batch was not stored."""

    index: int
    field: str
    message: str


class IntakeResult(msgspec.Struct, frozen=True):
    """A batch's outcome: new items stored, reposts recognised, items refused."""

    accepted: int
    duplicates: int
    errors: list[ItemError]


class ChannelEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An interaction in a digital channel; the client by ``client_id`` or ``or_number``."""

    channel: Channel
    type: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{1,40}$")]
    at: Moment
    external_id: ExternalId
    client_id: ClientId | None = None
    or_number: OrNumber | None = None
    detail: dict[str, Any] | None = None


class ChannelUsage(msgspec.Struct, frozen=True):
    """Whether the client uses a channel, and when first and last."""

    channel: str
    used: bool
    first_at: dt.datetime | None = None
    last_at: dt.datetime | None = None
    interactions: int = 0
    last_type: str | None = None


class ShopItem(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
    quantity: Annotated[int, msgspec.Meta(ge=1, le=100_000)]
    price: Decimal
    sku: Annotated[str, msgspec.Meta(max_length=100)] | None = None


ShopStatus = Literal[
    "new", "confirmed", "paid", "in_delivery", "delivered", "cancelled", "returned"
]
FINAL_SHOP_STATUSES = ("delivered", "cancelled", "returned")


class ShopOrderSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An order as the shop knows it now (sent whole on every change)."""

    status: ShopStatus
    total: Decimal
    items: Annotated[list[ShopItem], msgspec.Meta(max_length=500)]
    ordered_at: Moment
    client_id: ClientId | None = None
    or_number: OrNumber | None = None
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")] = "UAH"


class ShopOrder(msgspec.Struct, frozen=True):
    source_id: str
    client_id: int
    status: str
    is_final: bool
    total: Decimal
    currency: str
    items: list[dict[str, Any]]
    ordered_at: dt.datetime
    updated_at: dt.datetime


class ShopOrders(msgspec.Struct, frozen=True):
    """Orders not in a final status, and the latest finished ones."""

    current: list[ShopOrder]
    past: list[ShopOrder]


class Answer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    question: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    answer: Annotated[str, msgspec.Meta(max_length=2000)]


class SurveyEvent(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="survey", tag_field="kind"
):
    """A client's survey answer: a score out of ``scale_max`` and an optional comment."""

    external_id: ExternalId
    at: Moment
    score: Annotated[int, msgspec.Meta(ge=0, le=100)]
    scale_max: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    topic: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    comment: Text | None = None
    answers: Annotated[list[Answer], msgspec.Meta(max_length=100)] = []
    client_id: ClientId | None = None
    or_number: OrNumber | None = None


CallResult = Literal[
    "answered", "no_answer", "busy", "refused", "wrong_number", "callback_requested", "failed"
]


class OutboundCallEvent(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="outbound_call", tag_field="kind"
):
    """The result of an outbound call (VICIdial campaign): time, result, answers."""

    external_id: ExternalId
    at: Moment
    result: CallResult
    topic: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    comment: Text | None = None
    answers: Annotated[list[Answer], msgspec.Meta(max_length=100)] = []
    client_id: ClientId | None = None
    or_number: OrNumber | None = None


CxEvent = SurveyEvent | OutboundCallEvent


class SurveyResult(msgspec.Struct, frozen=True):
    at: dt.datetime
    topic: str | None
    score: int
    scale_max: int
    comment: str | None
    answers: list[dict[str, Any]]


class OutboundCallResult(msgspec.Struct, frozen=True):
    at: dt.datetime
    topic: str | None
    result: str
    comment: str | None
    answers: list[dict[str, Any]]


class OptOut(msgspec.Struct, frozen=True):
    channel: str
    topic: str
    source: str
    changed_at: dt.datetime


class CustomerExperience(msgspec.Struct, frozen=True):
    """Recent surveys and outbound calls, and every explicit opt-out (by channel and topic)."""

    surveys: list[SurveyResult]
    outbound_calls: list[OutboundCallResult]
    opt_outs: list[OptOut]


# -- Resolving the client of an item ---------------------------------------------------------


async def resolve_clients(
    conn: asyncpg.Connection, refs: Sequence[tuple[int | None, str | None]]
) -> list[int | tuple[str, str]]:
    """Per (client_id, or_number): the client's id, or (field, message) why not."""
    ids = sorted({c for c, _ in refs if c is not None})
    ors = sorted({o for _, o in refs if o is not None})
    known = (
        {
            r["id"]
            for r in await conn.fetch("SELECT id FROM clients WHERE id = ANY($1::bigint[])", ids)
        }
        if ids
        else set()
    )
    owner = (
        {
            r["or_number"]: r["client_id"]
            for r in await conn.fetch(
                "SELECT or_number, client_id FROM accounts WHERE or_number = ANY($1::text[])", ors
            )
        }
        if ors
        else {}
    )
    out: list[int | tuple[str, str]] = []
    for client_id, or_number in refs:
        if client_id is None and or_number is None:
            out.append(("client_id", "give client_id or or_number"))
        elif client_id is not None and client_id not in known:
            out.append(("client_id", f"no client {client_id}"))
        elif or_number is not None and or_number not in owner:
            out.append(("or_number", f"no personal account {or_number}"))
        elif client_id is not None and or_number is not None and owner[or_number] != client_id:
            out.append(("or_number", f"account {or_number} is not client {client_id}'s"))
        else:
            out.append(client_id if client_id is not None else owner[or_number])
    return out


def _check_time(at: dt.datetime, now: dt.datetime) -> tuple[str, str] | None:
    if at > now + CLOCK_SKEW:
        return "at", f"{at.isoformat()} is in the future"
    return None


# -- Channel interactions --------------------------------------------------------------------


async def ingest_channel_events(
    conn: asyncpg.Connection,
    events: Sequence[tuple[int, ChannelEvent]],
    *,
    now: dt.datetime | None = None,
) -> IntakeResult:
    """Store interactions (index, event) once each: a repost of an external id counts once.

    Updates the per-channel usage of each client and puts each new interaction on the
    client's timeline, in one transaction; items that cannot be stored are listed.
    """
    now = now or clock.now()
    errors: list[ItemError] = []
    clients = await resolve_clients(conn, [(e.client_id, e.or_number) for _, e in events])
    valid: list[tuple[int, int, ChannelEvent]] = []
    for (n, e), client in zip(events, clients, strict=True):
        if isinstance(client, tuple):
            errors.append(ItemError(n, *client))
        elif problem := _check_time(e.at, now):
            errors.append(ItemError(n, *problem))
        else:
            valid.append((n, client, e))
    new_events = [
        timeline.NewEvent(
            client,
            "chat" if e.type == "chat" else "channel",
            e.at,
            f"{_CHANNEL_TITLES[e.channel]}: {_TYPE_TITLES.get(e.type, e.type)}",
            None,
            e.channel,
            "in",
            f"{e.channel}_event",
            e.external_id,
            {"type": e.type, **(e.detail or {})},
        )
        for _, client, e in valid
    ]
    async with conn.transaction():
        fresh = await timeline.append_new(conn, new_events)
        stored = [
            (client, e) for (_, client, e), is_new in zip(valid, fresh, strict=True) if is_new
        ]
        if stored:
            await conn.execute(
                """
                INSERT INTO channel_usage AS u (client_id, channel, first_at, last_at,
                                                interactions, last_type)
                SELECT c, ch, min(a), max(a), count(*), (array_agg(t ORDER BY a DESC))[1]
                FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::text[]) AS i(c, ch, a, t)
                GROUP BY c, ch ORDER BY c, ch
                ON CONFLICT (client_id, channel) DO UPDATE SET
                    first_at = least(u.first_at, excluded.first_at),
                    last_at = greatest(u.last_at, excluded.last_at),
                    interactions = u.interactions + excluded.interactions,
                    last_type = CASE WHEN excluded.last_at >= u.last_at THEN excluded.last_type
                                     ELSE u.last_type END
                """,
                [c for c, _ in stored],
                [e.channel for _, e in stored],
                [e.at for _, e in stored],
                [e.type for _, e in stored],
            )
    return IntakeResult(len(stored), len(valid) - len(stored), errors)


async def channel_usage(conn: asyncpg.Connection, client_id: int) -> list[ChannelUsage]:
    """The four digital channels, used or not, with first and last interaction."""
    rows = {
        r["channel"]: r
        for r in await conn.fetch(
            "SELECT channel, first_at, last_at, interactions, last_type FROM channel_usage "
            "WHERE client_id = $1",
            client_id,
        )
    }
    return [
        ChannelUsage(
            c,
            True,
            rows[c]["first_at"],
            rows[c]["last_at"],
            rows[c]["interactions"],
            rows[c]["last_type"],
        )
        if c in rows
        else ChannelUsage(c, False)
        for c in CHANNELS
    ]


# -- Shop orders -----------------------------------------------------------------------------

_ORDER_COLUMNS = (
    "source_id, client_id, status, is_final, total, currency, items, ordered_at, updated_at"
)


def _order(row: Any) -> ShopOrder:
    return ShopOrder(
        row["source_id"],
        row["client_id"],
        row["status"],
        row["is_final"],
        row["total"],
        row["currency"],
        row["items"],
        row["ordered_at"],
        row["updated_at"],
    )


async def upsert_shop_order(
    conn: asyncpg.Connection, source_id: str, spec: ShopOrderSpec, *, now: dt.datetime | None = None
) -> tuple[ShopOrder, bool]:
    """Create or replace the shop's order ``source_id``; return it and whether it is new."""
    if not 1 <= len(source_id) <= 100:
        raise InvalidInput("source_id", "1 to 100 characters")
    if not spec.total.is_finite() or spec.total < 0 or spec.total >= Decimal("1e12"):
        raise InvalidInput("total", "a non-negative amount below 10^12")
    for n, item in enumerate(spec.items):
        if not item.price.is_finite() or item.price < 0:
            raise InvalidInput(f"items[{n}].price", "a non-negative amount")
    if problem := _check_time(spec.ordered_at, now or clock.now()):
        raise InvalidInput("ordered_at", problem[1])
    client = (await resolve_clients(conn, [(spec.client_id, spec.or_number)]))[0]
    if isinstance(client, tuple):
        raise InvalidInput(*client)
    async with conn.transaction():
        before = await conn.fetchrow(
            "SELECT client_id, status FROM shop_orders WHERE source_id = $1 FOR UPDATE", source_id
        )
        if before is not None and before["client_id"] != client:
            raise Conflict(f"order {source_id} belongs to another client ({before['client_id']})")
        row = await conn.fetchrow(
            f"""
            INSERT INTO shop_orders (source_id, client_id, status, total, currency, items, ordered_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (source_id) DO UPDATE SET
                status = excluded.status, total = excluded.total, currency = excluded.currency,
                items = excluded.items, ordered_at = excluded.ordered_at, updated_at = herald_now()
            RETURNING {_ORDER_COLUMNS}
            """,
            source_id,
            client,
            spec.status,
            spec.total,
            spec.currency,
            msgspec.to_builtins(spec.items),
            spec.ordered_at,
        )
        if before is None or before["status"] != spec.status:
            await timeline.record_event(
                conn,
                client_id=client,
                kind="shop_order",
                at=spec.ordered_at,
                title=f"Замовлення {source_id} в інтернет-магазині: {spec.total} {spec.currency}",
                status=spec.status,
                channel="shop",
                direction="in",
                ref_type="shop_order",
                ref_id=source_id,
                detail={
                    "total": str(spec.total),
                    "currency": spec.currency,
                    "items": len(spec.items),
                },
            )
    return _order(row), before is None


async def shop_orders(
    conn: asyncpg.Connection, client_id: int, *, past_limit: int = 20
) -> ShopOrders:
    """The client's current orders (all) and the latest ``past_limit`` finished ones."""
    rows = await conn.fetch(
        f"""
        (SELECT {_ORDER_COLUMNS} FROM shop_orders WHERE client_id = $1 AND NOT is_final
         ORDER BY ordered_at DESC LIMIT 100)
        UNION ALL
        (SELECT {_ORDER_COLUMNS} FROM shop_orders WHERE client_id = $1 AND is_final
         ORDER BY ordered_at DESC LIMIT $2)
        """,
        client_id,
        past_limit,
    )
    orders = [_order(r) for r in rows]
    return ShopOrders([o for o in orders if not o.is_final], [o for o in orders if o.is_final])


# -- Customer experience ---------------------------------------------------------------------


async def ingest_cx_events(
    conn: asyncpg.Connection,
    events: Sequence[tuple[int, CxEvent]],
    *,
    now: dt.datetime | None = None,
) -> IntakeResult:
    """Store survey answers and outbound call results once per (kind, external id)."""
    now = now or clock.now()
    errors: list[ItemError] = []
    clients = await resolve_clients(conn, [(e.client_id, e.or_number) for _, e in events])
    valid: list[tuple[int, CxEvent]] = []
    for (n, e), client in zip(events, clients, strict=True):
        if isinstance(client, tuple):
            errors.append(ItemError(n, *client))
            continue
        problem = _check_time(e.at, now)
        if problem is None and isinstance(e, SurveyEvent) and e.score > e.scale_max:
            problem = ("score", f"{e.score} is above scale_max {e.scale_max}")
        if problem:
            errors.append(ItemError(n, *problem))
        else:
            valid.append((client, e))
    if not valid:
        return IntakeResult(0, 0, errors)
    kinds = ["survey" if isinstance(e, SurveyEvent) else "outbound_call" for _, e in valid]
    async with conn.transaction():
        rows = await conn.fetch(
            """
            INSERT INTO cx_events (client_id, kind, external_id, at, topic, score, scale_max,
                                   comment, result, answers)
            SELECT c, k, x, a, t, s, m, co, r, an::jsonb
            FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
                        $6::smallint[], $7::smallint[], $8::text[], $9::text[], $10::text[])
                 AS i(c, k, x, a, t, s, m, co, r, an)
            ON CONFLICT (kind, external_id) DO NOTHING
            RETURNING id, client_id, kind, external_id, at, topic, score, scale_max, result
            """,
            [c for c, _ in valid],
            kinds,
            [e.external_id for _, e in valid],
            [e.at for _, e in valid],
            [e.topic for _, e in valid],
            [getattr(e, "score", None) for _, e in valid],
            [getattr(e, "scale_max", None) for _, e in valid],
            [e.comment for _, e in valid],
            [getattr(e, "result", None) for _, e in valid],
            [msgspec.json.encode(e.answers).decode() for _, e in valid],
        )
        await timeline.append_new(
            conn,
            [
                timeline.NewEvent(
                    r["client_id"],
                    r["kind"],
                    r["at"],
                    (
                        f"Опитування{' «' + r['topic'] + '»' if r['topic'] else ''}: "
                        f"{r['score']} з {r['scale_max']}"
                    )
                    if r["kind"] == "survey"
                    else f"Вихідний обдзвін{' «' + r['topic'] + '»' if r['topic'] else ''}: {r['result']}",
                    r["result"],
                    "call" if r["kind"] == "outbound_call" else None,
                    "out" if r["kind"] == "outbound_call" else "in",
                    "cx",
                    str(r["id"]),
                    {
                        "external_id": r["external_id"],
                        "score": r["score"],
                        "scale_max": r["scale_max"],
                    }
                    if r["kind"] == "survey"
                    else {"external_id": r["external_id"]},
                )
                for r in rows
            ],
        )
    return IntakeResult(len(rows), len(valid) - len(rows), errors)


async def customer_experience(
    conn: asyncpg.Connection, client_id: int, *, limit: int = 10
) -> CustomerExperience:
    """The latest ``limit`` surveys and outbound calls, and the client's opt-outs."""
    rows = await conn.fetch(
        """
        (SELECT kind, at, topic, score, scale_max, comment, result, answers FROM cx_events
         WHERE client_id = $1 AND kind = 'survey' ORDER BY at DESC LIMIT $2)
        UNION ALL
        (SELECT kind, at, topic, score, scale_max, comment, result, answers FROM cx_events
         WHERE client_id = $1 AND kind = 'outbound_call' ORDER BY at DESC LIMIT $2)
        """,
        client_id,
        limit,
    )
    opt_outs = await conn.fetch(
        "SELECT channel, topic, source, changed_at FROM consents "
        "WHERE client_id = $1 AND NOT opted_in ORDER BY changed_at DESC",
        client_id,
    )
    return CustomerExperience(
        [
            SurveyResult(
                r["at"], r["topic"], r["score"], r["scale_max"], r["comment"], r["answers"] or []
            )
            for r in rows
            if r["kind"] == "survey"
        ],
        [
            OutboundCallResult(r["at"], r["topic"], r["result"], r["comment"], r["answers"] or [])
            for r in rows
            if r["kind"] == "outbound_call"
        ],
        [OptOut(r["channel"], r["topic"], r["source"], r["changed_at"]) for r in opt_outs],
    )


# -- Applications ----------------------------------------------------------------------------

ApplicationKind = Literal["new_connection", "data_update", "owner_change", "contract", "other"]
ApplicationChannel = Literal["call", "visit", "chat", "email", "cabinet", "app"]
ApplicationStatus = Literal["registered", "in_progress", "completed", "rejected", "cancelled"]
_KIND_TITLES = {
    "new_connection": "нове приєднання",
    "data_update": "актуалізація даних",
    "owner_change": "зміна власника",
    "contract": "договір",
    "other": "інше",
}


class Application(msgspec.Struct, frozen=True):
    id: int
    client_id: int
    account_id: int | None
    kind: str
    channel: str
    status: str
    description: str | None
    created_by: int | None
    created_at: dt.datetime
    updated_at: dt.datetime


_APP_COLUMNS = (
    "id, client_id, account_id, kind, channel, status, description, created_by, "
    "created_at, updated_at"
)


def _application(row: Any) -> Application:
    return Application(**{k: row[k] for k in Application.__struct_fields__})


async def _on_timeline(conn: asyncpg.Connection, app: Application) -> None:
    await timeline.record_event(
        conn,
        client_id=app.client_id,
        kind="application",
        at=app.created_at,
        title=f"Заявка №{app.id}: {_KIND_TITLES[app.kind]}",
        status=app.status,
        channel=app.channel,
        direction="in",
        ref_type="application",
        ref_id=str(app.id),
        detail={
            "application_kind": app.kind,
            "account_id": app.account_id,
            "description": app.description,
        },
    )


async def create_application(
    conn: asyncpg.Connection,
    actor: Actor,
    client_id: int,
    *,
    kind: ApplicationKind,
    channel: ApplicationChannel,
    status: ApplicationStatus = "registered",
    account_id: int | None = None,
    description: str | None = None,
) -> Application:
    """Register a client's application (journalled, on the timeline)."""
    async with conn.transaction():
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)", client_id
        ):
            raise NotFound(f"no client {client_id}")
        if (
            account_id is not None
            and await conn.fetchval("SELECT client_id FROM accounts WHERE id = $1", account_id)
            != client_id
        ):
            raise InvalidInput("account_id", f"account {account_id} is not client {client_id}'s")
        app = _application(
            await conn.fetchrow(
                f"INSERT INTO applications (client_id, account_id, kind, channel, status, description, "
                f"created_by) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_APP_COLUMNS}",
                client_id,
                account_id,
                kind,
                channel,
                status,
                description,
                actor.id,
            )
        )
        await record(
            conn,
            actor,
            [
                Change(
                    "application",
                    str(app.id),
                    "create",
                    None,
                    None,
                    {
                        "client_id": client_id,
                        "account_id": account_id,
                        "kind": kind,
                        "channel": channel,
                        "status": status,
                        "description": description,
                    },
                )
            ],
        )
        await _on_timeline(conn, app)
    return app


async def set_application_status(
    conn: asyncpg.Connection, actor: Actor, application_id: int, status: ApplicationStatus
) -> Application:
    """Change an application's status (journalled; its timeline item follows)."""
    async with conn.transaction():
        before = await conn.fetchrow(
            f"SELECT {_APP_COLUMNS} FROM applications WHERE id = $1 FOR UPDATE", application_id
        )
        if before is None:
            raise NotFound(f"no application {application_id}")
        if before["status"] == status:
            return _application(before)
        app = _application(
            await conn.fetchrow(
                f"UPDATE applications SET status = $2, updated_at = herald_now() WHERE id = $1 "
                f"RETURNING {_APP_COLUMNS}",
                application_id,
                status,
            )
        )
        await record(
            conn,
            actor,
            [Change("application", str(app.id), "update", "status", before["status"], status)],
        )
        await _on_timeline(conn, app)
    return app


async def list_applications(
    conn: asyncpg.Connection, client_id: int, *, limit: int, before_id: int | None = None
) -> list[Application]:
    """A client's applications, newest first (keyset on id)."""
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)", client_id):
        raise NotFound(f"no client {client_id}")
    rows = await conn.fetch(
        f"SELECT {_APP_COLUMNS} FROM applications WHERE client_id = $1 "
        "AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        client_id,
        before_id,
        limit,
    )
    return [_application(r) for r in rows]
