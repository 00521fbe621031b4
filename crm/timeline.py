"""The client timeline (CM-07): one feed, newest first, merged at read time from its sources.

Sources: ``event`` (timeline_events: calls, chats, push, applications, channel
interactions, shop orders, surveys, outbound calls, cases), ``message`` (the
dispatcher's message_events, one item per message with its latest status),
``reading`` (meter_readings), ``charge`` and ``payment`` (billing's cached lists in
billing_snapshots). A page takes the ``limit + 1`` newest of every source below the
cursor and keeps the newest ``limit``; the cursor is (at, source, id), a total order
over every source, so pages neither repeat nor skip items.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import asyncpg
import msgspec

from herald import clock, cursors
from herald.bounds import Int64
from herald.errors import InvalidInput

SOURCES = ("charge", "event", "message", "payment", "reading")
# Kinds of the merged sources; every other kind is a timeline_events row.
SOURCE_KINDS = {
    "message": "message",
    "reading": "reading",
    "charge": "charge",
    "payment": "payment",
}
_INT_IDS = ("event", "reading")
_CHANNEL_NAMES = {
    "sms": "SMS",
    "viber": "Viber",
    "email": "E-mail",
    "push": "Push",
    "telegram": "Telegram",
    "voice": "Голосове",
}
_SOURCE_NAMES = {
    "cabinet": "особовий кабінет",
    "app": "мобільний застосунок",
    "ivr": "IVR",
    "chatbot": "чат-бот",
    "operator": "оператор",
    "gdo": "оператор ГРМ",
}


class TimelineItem(msgspec.Struct, frozen=True):
    """One entry of the feed; ``id`` is unique within its ``source``."""

    source: str
    id: str
    kind: str
    at: dt.datetime
    title: str
    status: str | None = None
    channel: str | None = None
    direction: str | None = None
    detail: dict[str, Any] | None = None


class TimelinePage(msgspec.Struct, frozen=True):
    items: list[TimelineItem]
    next_cursor: str | None


class TimelineFilter(msgspec.Struct, frozen=True):
    """Kinds (any of), a channel, and a period [since, until)."""

    kinds: frozenset[str] | None = None
    channel: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


NO_FILTER = TimelineFilter()


class Cursor(msgspec.Struct, frozen=True, array_like=True):
    at: dt.datetime
    source: str
    id: Int64 | str


class NewEvent(msgspec.Struct, frozen=True):
    """A timeline_events row to append (see ``record_event`` for the fields)."""

    client_id: int
    kind: str
    at: dt.datetime
    title: str
    status: str | None = None
    channel: str | None = None
    direction: str | None = None
    ref_type: str | None = None
    ref_id: str | None = None
    detail: dict[str, Any] | None = None


# -- Writing --------------------------------------------------------------------------------

_json = msgspec.json.Encoder()
_SEQ = "nextval(pg_get_serial_sequence('timeline_events', 'id'))"


def _checked(event: NewEvent) -> NewEvent:
    if event.kind in SOURCE_KINDS:
        raise InvalidInput("kind", f"{event.kind!r} items come from their own source")
    if event.direction not in (None, "in", "out"):
        raise InvalidInput("direction", "in or out")
    if (event.ref_type is None) != (event.ref_id is None):
        raise InvalidInput("ref_id", "give ref_type and ref_id together")
    detail = None if event.detail is None else msgspec.to_builtins(event.detail)
    return msgspec.structs.replace(event, title=event.title[:500], detail=detail)


async def record_event(
    conn: asyncpg.Connection,
    *,
    client_id: int,
    kind: str,
    at: dt.datetime,
    title: str,
    status: str | None = None,
    channel: str | None = None,
    direction: str | None = None,
    ref_type: str | None = None,
    ref_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append an item to a client's feed, or update the one of the same object.

    With (ref_type, ref_id), an existing item of that client, kind and object gets the new
    title and status and its detail merged with ``detail`` (keys given replace old ones);
    channel and direction are kept unless given; ``at`` stays the first one.
    """
    event = _checked(
        NewEvent(client_id, kind, at, title, status, channel, direction, ref_type, ref_id, detail)
    )
    async with conn.transaction():
        created = await _append(conn, [event])
        if created[0] or event.ref_type is None:
            return
        ref = await conn.fetchrow(
            "SELECT event_id, event_at FROM timeline_refs WHERE client_id = $1 AND kind = $2 "
            "AND ref_type = $3 AND ref_id = $4",
            client_id,
            kind,
            ref_type,
            ref_id,
        )
        await conn.execute(
            """
            UPDATE timeline_events SET
                title = $3, status = coalesce($4, status), channel = coalesce($5, channel),
                direction = coalesce($6, direction),
                detail = CASE WHEN $7::jsonb IS NULL THEN detail
                              WHEN jsonb_typeof(detail) = 'object' AND jsonb_typeof($7::jsonb) = 'object'
                              THEN detail || $7::jsonb
                              ELSE $7::jsonb END,
                updated_at = herald_now()
            WHERE at = $1 AND id = $2
            """,
            ref["event_at"],
            ref["event_id"],
            event.title,
            status,
            channel,
            direction,
            event.detail,
        )


async def append_new(conn: asyncpg.Connection, events: Sequence[NewEvent]) -> list[bool]:
    """Append events in bulk; one already on the feed under its (ref_type, ref_id) is left
    as it is. Returns, per event, whether it was new (a repost is not)."""
    checked = [_checked(e) for e in events]
    async with conn.transaction():
        return await _append(conn, checked)


async def _append(conn: asyncpg.Connection, events: Sequence[NewEvent]) -> list[bool]:
    new = [True] * len(events)
    ids: list[int | None] = [None] * len(events)
    keyed: dict[tuple[int, str, str, str], int] = {}
    for n, e in enumerate(events):
        if e.ref_type is not None and e.ref_id is not None:
            key = (e.client_id, e.kind, e.ref_type, e.ref_id)
            if key in keyed:
                new[n] = False  # the same object twice in one batch: the first one counts
            else:
                keyed[key] = n
    if keyed:
        keys = sorted(keyed)  # one lock order for concurrent batches
        rows = await conn.fetch(
            f"""
            INSERT INTO timeline_refs (client_id, kind, ref_type, ref_id, event_id, event_at)
            SELECT c, k, t, r, {_SEQ}, a
            FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
                 AS i(c, k, t, r, a)
            ON CONFLICT DO NOTHING
            RETURNING client_id, kind, ref_type, ref_id, event_id
            """,
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [k[3] for k in keys],
            [events[keyed[k]].at for k in keys],
        )
        inserted = {
            (r["client_id"], r["kind"], r["ref_type"], r["ref_id"]): r["event_id"] for r in rows
        }
        for key, n in keyed.items():
            if key in inserted:
                ids[n] = inserted[key]
            else:
                new[n] = False
    todo = [n for n in range(len(events)) if new[n]]
    if todo:
        await conn.execute(
            f"""
            INSERT INTO timeline_events (id, client_id, kind, at, title, status, channel,
                                         direction, ref_type, ref_id, detail)
            SELECT coalesce(i, {_SEQ}), c, k, a, t, s, ch, d, rt, ri, de::jsonb
            FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[], $5::text[],
                        $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
                 AS x(i, c, k, a, t, s, ch, d, rt, ri, de)
            """,
            [ids[n] for n in todo],
            [events[n].client_id for n in todo],
            [events[n].kind for n in todo],
            [events[n].at for n in todo],
            [events[n].title for n in todo],
            [events[n].status for n in todo],
            [events[n].channel for n in todo],
            [events[n].direction for n in todo],
            [events[n].ref_type for n in todo],
            [events[n].ref_id for n in todo],
            [
                None if events[n].detail is None else _json.encode(events[n].detail).decode()
                for n in todo
            ],
        )
    return new


# -- Cursor ---------------------------------------------------------------------------------


def encode_cursor(item: TimelineItem) -> str:
    native: int | str = int(item.id) if item.source in _INT_IDS else item.id
    return cursors.encode(item.at, item.source, native)


def decode_cursor(value: str) -> Cursor:
    """The position a cursor stands for, or a 400 naming ``cursor``."""
    cursor = cursors.decode(value, Cursor)
    if (
        cursor.source not in SOURCES
        or cursor.at.tzinfo is None
        or isinstance(cursor.id, int) != (cursor.source in _INT_IDS)
    ):
        raise InvalidInput("cursor", "not a cursor this API gave out")
    return cursor


def _key(item: TimelineItem) -> tuple[dt.datetime, str, int | str]:
    return item.at, item.source, int(item.id) if item.source in _INT_IDS else item.id


class _Where:
    """Conditions of one source's query, built from fixed fragments with numbered parameters."""

    def __init__(self, *args: Any) -> None:
        self.args: list[Any] = list(args)
        self.parts: list[str] = []

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, fragment: str, *values: Any) -> None:
        self.parts.append(fragment.format(*(self.param(v) for v in values)))

    def position(
        self, at: str, id_: str, source: str, cursor: Cursor | None, flt: TimelineFilter
    ) -> None:
        """Below the cursor (in (at, source, id) order, descending) and within the period."""
        if cursor is not None:
            if source > cursor.source:
                self.add(f"{at} < {{}}", cursor.at)
            elif source == cursor.source:
                self.add(f"{at} <= {{0}} AND ({at} < {{0}} OR {id_} < {{1}})", cursor.at, cursor.id)
            else:
                self.add(f"{at} <= {{}}", cursor.at)
        if flt.since is not None:
            self.add(f"{at} >= {{}}", flt.since)
        if flt.until is not None:
            self.add(f"{at} < {{}}", flt.until)

    @property
    def sql(self) -> str:
        return " AND ".join(self.parts) or "true"


def _below(item: TimelineItem, cursor: Cursor | None) -> bool:
    return cursor is None or _key(item) < (cursor.at, cursor.source, cursor.id)


# -- Reading the sources --------------------------------------------------------------------


async def _events(
    conn: asyncpg.Connection, client_id: int, limit: int, cursor: Cursor | None, flt: TimelineFilter
) -> list[TimelineItem]:
    where = _Where(client_id)
    where.position("at", "id", "event", cursor, flt)
    if flt.kinds is not None:
        where.add("kind = ANY({})", sorted(flt.kinds - set(SOURCE_KINDS)))
    if flt.channel is not None:
        where.add("channel = {}", flt.channel)
    rows = await conn.fetch(
        f"""
        SELECT id, kind, at, title, status, channel, direction, ref_type, ref_id, detail
        FROM timeline_events WHERE client_id = $1 AND {where.sql}
        ORDER BY at DESC, id DESC LIMIT {limit}
        """,
        *where.args,
    )
    items = []
    for r in rows:
        detail = (
            dict(r["detail"])
            if isinstance(r["detail"], dict)
            else (None if r["detail"] is None else {"value": r["detail"]})
        )
        if r["ref_type"] is not None:
            detail = {**(detail or {}), "ref_type": r["ref_type"], "ref_id": r["ref_id"]}
        items.append(
            TimelineItem(
                "event",
                str(r["id"]),
                r["kind"],
                r["at"],
                r["title"],
                r["status"],
                r["channel"],
                r["direction"],
                detail,
            )
        )
    return items


# A message's (one step's) status is its latest stage, whatever the order of the commits: a
# receipt can be recorded before the 'sent' it answers (the worker writes a unit's outcomes
# after all its provider calls); events of one stage go by time.
_STAGE = (
    "CASE e.status WHEN 'read' THEN 7 WHEN 'delivered' THEN 6 WHEN 'failed' THEN 5 "
    "WHEN 'sent' THEN 4 WHEN 'skipped' THEN 3 WHEN 'cancelled' THEN 3 WHEN 'held' THEN 2 "
    "WHEN 'queued' THEN 1 "
    "ELSE 0 END"
)


async def _messages(
    conn: asyncpg.Connection, client_id: int, limit: int, cursor: Cursor | None, flt: TimelineFilter
) -> list[TimelineItem]:
    where = _Where(client_id)
    where.position("m.at", 'm.message_id COLLATE "C"', "message", cursor, flt)
    if flt.channel is not None:
        where.add("m.channel = {}", flt.channel)
    rows = await conn.fetch(
        f"""
        SELECT m.*, c.name AS campaign_name, t.topic
        FROM (
            SELECT e.message_id, min(e.at) AS at, max(e.at) AS updated_at,
                   (array_agg(e.status ORDER BY {_STAGE} DESC, e.at DESC))[1] AS status,
                   (array_agg(e.reason ORDER BY {_STAGE} DESC, e.at DESC))[1] AS reason,
                   (array_agg(e.channel ORDER BY {_STAGE} DESC, e.at DESC)
                        FILTER (WHERE e.channel IS NOT NULL))[1] AS channel,
                   max(e.campaign_id) AS campaign_id, max(e.step) AS step
            FROM message_events e
            WHERE e.client_id = $1 AND e.status <> 'converted'
            GROUP BY e.message_id) m
        LEFT JOIN campaigns c ON c.id = m.campaign_id
        LEFT JOIN message_templates t ON t.id = c.template_id
        WHERE {where.sql}
        ORDER BY m.at DESC, m.message_id COLLATE "C" DESC LIMIT {limit}
        """,
        *where.args,
    )
    items = []
    for r in rows:
        channel_name = _CHANNEL_NAMES.get(r["channel"] or "", r["channel"] or "")
        title = (
            f"{channel_name}: {r['campaign_name']}"
            if r["campaign_name"]
            else f"Повідомлення {channel_name}".strip()
        )
        items.append(
            TimelineItem(
                "message",
                r["message_id"],
                "message",
                r["at"],
                title,
                r["status"],
                r["channel"],
                "out",
                {
                    "message_id": r["message_id"],
                    "campaign_id": r["campaign_id"],
                    "campaign_name": r["campaign_name"],
                    "topic": r["topic"],
                    "step": r["step"],
                    "reason": r["reason"],
                    "status_at": r["updated_at"].isoformat(),
                },
            )
        )
    return items


async def _readings(
    conn: asyncpg.Connection, client_id: int, limit: int, cursor: Cursor | None, flt: TimelineFilter
) -> list[TimelineItem]:
    where = _Where(client_id)
    where.position("r.at", "r.id", "reading", cursor, flt)
    if flt.channel is not None:
        where.add("r.source = {}", flt.channel)
    rows = await conn.fetch(
        f"""
        SELECT r.*, m.serial_number, m.account_id
        FROM accounts a
        JOIN meters m ON m.account_id = a.id
        CROSS JOIN LATERAL (
            SELECT r.id, r.meter_id, r.value, r.read_on, r.source, r.is_replacement, r.at,
                   r.entered_by_login
            FROM meter_readings r
            WHERE r.meter_id = m.id AND {where.sql}
            ORDER BY r.at DESC, r.id DESC LIMIT {limit}) r
        WHERE a.client_id = $1
        ORDER BY r.at DESC, r.id DESC LIMIT {limit}
        """,
        *where.args,
    )
    return [
        TimelineItem(
            "reading",
            str(r["id"]),
            "reading",
            r["at"],
            f"Показник лічильника {r['serial_number']}: {r['value']} м³"
            f" ({_SOURCE_NAMES.get(r['source'], r['source'])})",
            None,
            r["source"],
            "out" if r["source"] == "gdo" else "in",
            {
                "meter_id": r["meter_id"],
                "account_id": r["account_id"],
                "serial_number": r["serial_number"],
                "value": str(r["value"]),
                "read_on": r["read_on"].isoformat(),
                "source": r["source"],
                "is_replacement": r["is_replacement"],
                "entered_by": r["entered_by_login"],
            },
        )
        for r in rows
    ]


def _moment(value: Any) -> dt.datetime | None:
    """An ISO date or date-time from billing's JSON (a bare date is midnight in the business time zone)."""
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=clock.business_tz())
    return moment


def _amount(value: Any) -> str | None:
    try:
        return str(Decimal(str(value))) if value is not None else None
    except InvalidOperation:
        return None


def _billing_items(rows: Iterable[Mapping[str, Any]]) -> list[TimelineItem]:
    items = []
    for r in rows:
        for c in r["charges"] if isinstance(r["charges"], list) else ():
            at = _moment(c.get("posted_at")) if isinstance(c, dict) else None
            if at is None or c.get("id") is None:
                continue
            period = str(c.get("period") or "")[:7]
            amount = _amount(c.get("amount"))
            items.append(
                TimelineItem(
                    "charge",
                    f"{r['account_id']}:{c['id']}",
                    "charge",
                    at,
                    f"Нарахування за {period}: {amount} грн (ОР {r['or_number']})",
                    None,
                    None,
                    None,
                    {
                        "account_id": r["account_id"],
                        "or_number": r["or_number"],
                        "charge_id": str(c["id"]),
                        "period": c.get("period"),
                        "volume_m3": _amount(c.get("volume_m3")),
                        "amount": amount,
                    },
                )
            )
        for p in r["payments"] if isinstance(r["payments"], list) else ():
            at = _moment(p.get("paid_at")) if isinstance(p, dict) else None
            if at is None or p.get("id") is None:
                continue
            amount = _amount(p.get("amount"))
            items.append(
                TimelineItem(
                    "payment",
                    f"{r['account_id']}:{p['id']}",
                    "payment",
                    at,
                    f"Оплата {amount} грн (ОР {r['or_number']})",
                    None,
                    None,
                    "in",
                    {
                        "account_id": r["account_id"],
                        "or_number": r["or_number"],
                        "payment_id": str(p["id"]),
                        "amount": amount,
                        "method": p.get("method"),
                    },
                )
            )
    return items


async def _billing(
    conn: asyncpg.Connection,
    client_id: int,
    wanted: set[str],
    cursor: Cursor | None,
    flt: TimelineFilter,
) -> list[TimelineItem]:
    # Billing's recent lists are a few dozen entries per account: filter them here.
    if flt.channel is not None:
        return []
    rows = await conn.fetch(
        "SELECT b.account_id, a.or_number, b.charges, b.payments FROM accounts a "
        "JOIN billing_snapshots b ON b.account_id = a.id WHERE a.client_id = $1",
        client_id,
    )
    return [
        i
        for i in _billing_items(rows)
        if i.source in wanted
        and _below(i, cursor)
        and (flt.since is None or i.at >= flt.since)
        and (flt.until is None or i.at < flt.until)
    ]


async def client_timeline(
    conn: asyncpg.Connection,
    client_id: int,
    *,
    limit: int,
    cursor: Cursor | None = None,
    flt: TimelineFilter = NO_FILTER,
) -> TimelinePage:
    """One page of the client's feed, newest first."""
    wanted = set(SOURCES)
    if flt.kinds is not None:
        wanted = {s for s in SOURCES if SOURCE_KINDS.get(s) in flt.kinds}
        if flt.kinds - set(SOURCE_KINDS):
            wanted.add("event")
    fetch = limit + 1
    found: list[TimelineItem] = []
    if "event" in wanted:
        found += await _events(conn, client_id, fetch, cursor, flt)
    if "message" in wanted:
        found += await _messages(conn, client_id, fetch, cursor, flt)
    if "reading" in wanted:
        found += await _readings(conn, client_id, fetch, cursor, flt)
    if wanted & {"charge", "payment"}:
        found += await _billing(conn, client_id, wanted, cursor, flt)
    found.sort(key=_key, reverse=True)
    page = found[:limit]
    more = len(found) > limit
    return TimelinePage(page, encode_cursor(page[-1]) if more and page else None)
