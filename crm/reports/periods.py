"""The period every report is asked for, and the SQL a report is made of.

A report is a :class:`Spec`: its column names, one SQL statement and its arguments. The
statement yields the final rows (averages and percentages computed in SQL), so a page
reads them as JSON, the API streams them as CSV off a server-side cursor, and an export
engine can run the same statement through ``COPY`` with no row limit.

Periods: ``today``, ``yesterday``, ``week`` (this ISO week so far), ``month`` (this
month so far), ``last_7_days``, ``last_30_days``, ``year`` (the last 365 days) in the
business time zone, or ``custom`` with ``from`` and ``to``. A custom period is widened to
whole hours (the finest bucket of the aggregates). Whole business days are read from the
daily aggregates, anything else from the hourly ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
import msgspec

from herald import clock
from herald.errors import InvalidInput

PeriodName = Literal[
    "today", "yesterday", "week", "month", "last_7_days", "last_30_days", "year", "custom"
]
# A year and a little: what one report may span (daily buckets keep it cheap).
MAX_DAYS = 400


@dataclass(frozen=True, slots=True)
class Period:
    start: dt.datetime
    end: dt.datetime
    # Both ends on business-day boundaries: the daily aggregates answer.
    whole_days: bool

    @property
    def first_day(self) -> dt.date:
        return self.start.astimezone(clock.business_tz()).date()

    @property
    def end_day(self) -> dt.date:
        return self.end.astimezone(clock.business_tz()).date()


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), clock.business_tz()).astimezone(dt.UTC)


def _hour_floor(t: dt.datetime) -> dt.datetime:
    return t.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def _hour_ceil(t: dt.datetime) -> dt.datetime:
    floor = _hour_floor(t)
    return floor if floor == t else floor + dt.timedelta(hours=1)


def resolve(name: PeriodName | None, start: dt.datetime | None, end: dt.datetime | None) -> Period:
    """The period asked for; ``from``/``to`` given make it custom."""
    if start is not None or end is not None or name == "custom":
        if start is None:
            raise InvalidInput("from", "from is required for a custom period")
        if end is None:
            raise InvalidInput("to", "to is required for a custom period")
        if start >= end:
            raise InvalidInput("from", "from must be before to")
        if end - start > dt.timedelta(days=MAX_DAYS):
            raise InvalidInput("to", f"a report spans at most {MAX_DAYS} days")
        s, e = _hour_floor(start), _hour_ceil(end)
        tz = clock.business_tz()
        whole = all(t.astimezone(tz).time() == dt.time() for t in (s, e))
        return Period(s, e, whole)
    today = clock.now().astimezone(clock.business_tz()).date()
    tomorrow = today + dt.timedelta(days=1)
    first = {
        None: today.replace(day=1),
        "month": today.replace(day=1),
        "today": today,
        "yesterday": today - dt.timedelta(days=1),
        "week": today - dt.timedelta(days=today.weekday()),
        "last_7_days": today - dt.timedelta(days=6),
        "last_30_days": today - dt.timedelta(days=29),
        "year": today - dt.timedelta(days=364),
    }[name]
    last = today if name == "yesterday" else tomorrow
    return Period(_midnight(first), _midnight(last), True)


@dataclass(slots=True)
class Spec:
    """One report: the columns of its rows and the SQL that yields them."""

    name: str
    columns: list[str]
    sql: str
    args: list[object] = field(default_factory=list)
    period: Period | None = None

    def arg(self, value: object) -> str:
        self.args.append(value)
        return f"${len(self.args)}"


class ReportResult(msgspec.Struct):
    """A report's answer: its name, the period read, the columns and the rows."""

    report: str
    period_from: dt.datetime
    period_to: dt.datetime
    columns: list[str]
    rows: list[dict[str, Any]]


# Reports read a few thousand rollup rows: compiling the plan (JIT) would cost more than
# running it.
_NO_JIT = "SET LOCAL jit = off"


async def fetch(conn: asyncpg.Connection, spec: Spec) -> list[dict[str, Any]]:
    async with conn.transaction():
        await conn.execute(_NO_JIT)
        return [dict(r) for r in await conn.fetch(spec.sql, *spec.args)]


async def stream(conn: asyncpg.Connection, spec: Spec) -> AsyncIterator[list[Any]]:
    """The rows (as lists in the order of ``spec.columns``) off a server-side cursor."""
    async with conn.transaction():
        await conn.execute(_NO_JIT)
        async for r in conn.cursor(spec.sql, *spec.args, prefetch=1000):
            yield [r[c] for c in spec.columns]
