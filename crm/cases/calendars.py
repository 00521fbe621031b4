"""Business calendars (admin-defined): working hours per weekday, holidays and shortened
days, a time zone; stored as given and materialised as working spans for SQL sums."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import asyncpg
import msgspec

from crm.cases import business_time, sla_replan
from crm.cases.business_time import Calendar
from herald import audit, clock
from herald.audit import Actor, Change
from herald.errors import Conflict, InvalidInput, NotFound

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Spans are kept for local days from this many days back to this many ahead of today;
# the scheduler extends a calendar whose horizon comes within EXTEND_BEFORE_DAYS.
HORIZON_PAST_DAYS = 3 * 366
HORIZON_FUTURE_DAYS = 5 * 366
EXTEND_BEFORE_DAYS = 4 * 366

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")


class WorkInterval(msgspec.Struct, forbid_unknown_fields=True):
    """Local wall-clock times "HH:MM"; ``end`` may be "24:00" (midnight after)."""

    start: str
    end: str


class WeekHours(msgspec.Struct, forbid_unknown_fields=True):
    """Working intervals of each weekday; a day left empty is not a working day."""

    mon: list[WorkInterval] = []
    tue: list[WorkInterval] = []
    wed: list[WorkInterval] = []
    thu: list[WorkInterval] = []
    fri: list[WorkInterval] = []
    sat: list[WorkInterval] = []
    sun: list[WorkInterval] = []


class Holiday(msgspec.Struct, forbid_unknown_fields=True):
    """A holiday: ``hours`` empty is a day off; given, a shortened (or special) day."""

    date: dt.date
    name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    hours: list[WorkInterval] = []


class BusinessCalendarSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    week: WeekHours
    # The business time zone (HERALD_BUSINESS_TZ) when not given.
    time_zone: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    holidays: Annotated[list[Holiday], msgspec.Meta(max_length=2000)] = []


class BusinessCalendar(msgspec.Struct):
    id: int
    name: str
    time_zone: str
    week: WeekHours
    holidays: list[Holiday]
    horizon_from: dt.date
    horizon_to: dt.date
    created_at: dt.datetime
    updated_at: dt.datetime


def _minutes(value: str, where: str) -> int:
    if not _HHMM.match(value):
        raise InvalidInput(where, f"{value!r} is not a time HH:MM (00:00 to 24:00)")
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def _intervals(items: list[WorkInterval], where: str) -> tuple[business_time.Interval, ...]:
    parsed: list[tuple[int, int, int]] = []
    for i, item in enumerate(items):
        start = _minutes(item.start, f"{where}[{i}].start")
        end = _minutes(item.end, f"{where}[{i}].end")
        if end <= start:
            raise InvalidInput(f"{where}[{i}].end", "the end must be after the start")
        parsed.append((start, end, i))
    parsed.sort()
    for (_, prev_end, _), (start, _, i) in itertools.pairwise(parsed):
        if start < prev_end:
            raise InvalidInput(f"{where}[{i}]", "working intervals of a day must not overlap")
    return tuple((s, e) for s, e, _ in parsed)


def _zone(name: str) -> ZoneInfo:
    if name not in available_timezones():
        raise InvalidInput("time_zone", f"{name!r} is not an IANA time zone (e.g. Europe/Kyiv)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput("time_zone", f"{name!r} is not an IANA time zone") from None


def to_calendar(spec: BusinessCalendarSpec | BusinessCalendar) -> Calendar:
    """The arithmetic's calendar; InvalidInput naming the field for bad hours."""
    week = tuple(_intervals(getattr(spec.week, d), f"week.{d}") for d in WEEKDAYS)
    holidays: dict[dt.date, tuple[business_time.Interval, ...]] = {}
    for i, h in enumerate(spec.holidays):
        if h.date in holidays:
            raise InvalidInput(f"holidays[{i}].date", f"{h.date} is given twice")
        holidays[h.date] = _intervals(h.hours, f"holidays[{i}].hours")
    return Calendar(_zone(spec.time_zone or clock.business_tz().key), week, holidays)


def _spans(
    cal: Calendar, first: dt.date, last: dt.date
) -> tuple[list[dt.datetime], list[dt.datetime], list[float], list[float]]:
    starts: list[dt.datetime] = []
    ends: list[dt.datetime] = []
    cum_start: list[float] = []
    cum_end: list[float] = []
    total = 0.0
    for a, b in business_time.spans_between(cal, first, last):
        starts.append(a)
        ends.append(b)
        cum_start.append(total)
        total += (b - a).total_seconds()
        cum_end.append(total)
    return starts, ends, cum_start, cum_end


async def _materialise(
    conn: asyncpg.Connection, calendar_id: int, cal: Calendar, today: dt.date
) -> None:
    first = today - dt.timedelta(days=HORIZON_PAST_DAYS)
    last = today + dt.timedelta(days=HORIZON_FUTURE_DAYS)
    starts, ends, cum_start, cum_end = _spans(cal, first, last)
    await conn.execute("DELETE FROM business_calendar_spans WHERE calendar_id = $1", calendar_id)
    await conn.execute(
        "INSERT INTO business_calendar_spans (calendar_id, starts_at, ends_at, cum_start, cum_end) "
        "SELECT $1, * FROM unnest($2::timestamptz[], $3::timestamptz[], $4::float8[], $5::float8[])",
        calendar_id,
        starts,
        ends,
        cum_start,
        cum_end,
    )
    await conn.execute(
        "UPDATE business_calendars SET horizon_from = $2, horizon_to = $3 WHERE id = $1",
        calendar_id,
        first,
        last,
    )


_SELECT = (
    "SELECT id, name, time_zone, week, holidays, horizon_from, horizon_to, created_at, "
    "updated_at FROM business_calendars"
)


def _from_row(row: asyncpg.Record) -> BusinessCalendar:
    data = dict(row)
    data["week"] = msgspec.convert(data["week"], WeekHours)
    data["holidays"] = msgspec.convert(data["holidays"], list[Holiday], strict=False)
    return BusinessCalendar(**data)


async def list_calendars(conn: asyncpg.Connection) -> list[BusinessCalendar]:
    return [_from_row(r) for r in await conn.fetch(_SELECT + " ORDER BY id")]


async def get_calendar(conn: asyncpg.Connection, calendar_id: int) -> BusinessCalendar:
    row = await conn.fetchrow(_SELECT + " WHERE id = $1", calendar_id)
    if row is None:
        raise NotFound(f"no business calendar {calendar_id}")
    return _from_row(row)


def _stored(spec: BusinessCalendarSpec | BusinessCalendar) -> dict[str, Any]:
    return {
        "name": spec.name,
        "time_zone": spec.time_zone or clock.business_tz().key,
        "week": msgspec.to_builtins(spec.week),
        "holidays": sorted(msgspec.to_builtins(spec.holidays), key=lambda h: h["date"]),
    }


def _today(cal: Calendar) -> dt.date:
    return clock.today(cal.tz)


async def _name_free(conn: asyncpg.Connection, name: str, calendar_id: int | None) -> None:
    if await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM business_calendars WHERE name = $1 "
        "AND id IS DISTINCT FROM $2)",
        name,
        calendar_id,
    ):
        raise Conflict(f"a business calendar named {name!r} exists")


async def create_calendar(
    conn: asyncpg.Connection, actor: Actor, spec: BusinessCalendarSpec
) -> BusinessCalendar:
    cal = to_calendar(spec)
    data = _stored(spec)
    async with conn.transaction():
        await _name_free(conn, spec.name, None)
        today = _today(cal)
        calendar_id = await conn.fetchval(
            "INSERT INTO business_calendars (name, time_zone, week, holidays, horizon_from, "
            "horizon_to) VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $5) RETURNING id",
            data["name"],
            data["time_zone"],
            data["week"],
            data["holidays"],
            today,
        )
        await _materialise(conn, calendar_id, cal, today)
        await audit.record(
            conn, actor, [Change("business_calendar", str(calendar_id), "create", None, None, data)]
        )
        return await get_calendar(conn, calendar_id)


async def update_calendar(
    conn: asyncpg.Connection, actor: Actor, calendar_id: int, spec: BusinessCalendarSpec
) -> BusinessCalendar:
    """Replace a calendar. When its hours, holidays or time zone change, the open cases
    whose policy uses it are planned again (``sla_replan``) in the same transaction."""
    cal = to_calendar(spec)
    data = _stored(spec)
    async with conn.transaction():
        before = await get_calendar(conn, calendar_id)
        await conn.execute("SELECT 1 FROM business_calendars WHERE id = $1 FOR UPDATE", calendar_id)
        await _name_free(conn, spec.name, calendar_id)
        await conn.execute(
            "UPDATE business_calendars SET name = $2, time_zone = $3, week = $4::jsonb, "
            "holidays = $5::jsonb, updated_at = herald_now() WHERE id = $1",
            calendar_id,
            data["name"],
            data["time_zone"],
            data["week"],
            data["holidays"],
        )
        await _materialise(conn, calendar_id, cal, _today(cal))
        await audit.record(
            conn,
            actor,
            audit.field_changes("business_calendar", calendar_id, _stored(before), data),
        )
        old = _stored(before)
        if any(old[k] != data[k] for k in ("time_zone", "week", "holidays")):
            await sla_replan.after_calendar_change(conn, actor, calendar_id, data["name"])
        return await get_calendar(conn, calendar_id)


async def delete_calendar(conn: asyncpg.Connection, actor: Actor, calendar_id: int) -> None:
    async with conn.transaction():
        before = await get_calendar(conn, calendar_id)
        if await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM case_sla_policies WHERE calendar_id = $1)", calendar_id
        ):
            raise Conflict(f"business calendar {calendar_id} is used by an SLA policy")
        await conn.execute("DELETE FROM business_calendars WHERE id = $1", calendar_id)
        await audit.record(
            conn,
            actor,
            [Change("business_calendar", str(calendar_id), "delete", None, _stored(before), None)],
        )


async def load(conn: asyncpg.Connection, calendar_id: int) -> Calendar:
    """The arithmetic's calendar of a stored one."""
    return to_calendar(await get_calendar(conn, calendar_id))


async def extend_horizons(pool: asyncpg.Pool) -> int:
    """Re-materialise calendars whose spans end within EXTEND_BEFORE_DAYS (scheduler duty)."""
    async with pool.acquire() as conn:
        ids = await conn.fetch(
            "SELECT id FROM business_calendars WHERE horizon_to < herald_now()::date + $1::int",
            EXTEND_BEFORE_DAYS,
        )
    for row in ids:
        async with pool.acquire() as conn, conn.transaction():
            stored = await get_calendar(conn, row["id"])
            await conn.execute(
                "SELECT 1 FROM business_calendars WHERE id = $1 FOR UPDATE", row["id"]
            )
            cal = to_calendar(stored)
            await _materialise(conn, row["id"], cal, _today(cal))
    return len(ids)
