"""Business-time arithmetic over an admin-defined calendar (pure; no database).

A calendar has working intervals per weekday (none, one or several a day), holidays
(a day off, or a shortened day with its own intervals) and an IANA time zone. Intervals
are local wall-clock times, so a working day of 08:00-17:00 is nine real hours on the
days around a DST change too; the instants are computed through ``zoneinfo``.

No library was used: the maintained ones either count whole business days only, or
take one interval per day without shortened holidays (businesstimedelta, last released
in 2019, builds on pytz). The arithmetic is small enough to own and test by properties.

The database keeps the same working intervals materialised per calendar (see
``crm/cases/calendars.py``) so that triggers and the evaluator can do the same sums in SQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

UTC = dt.UTC
MINUTES_PER_DAY = 24 * 60
# add_business_seconds gives up after this many days without reaching the target (a
# calendar with no working time at all, or a target of decades).
MAX_SEARCH_DAYS = 366 * 30

Interval = tuple[int, int]
"""Minutes since local midnight: [start, end), 0 <= start < end <= 1440."""


@dataclass(frozen=True)
class Calendar:
    """``week[0]`` is Monday. ``holidays`` maps a date to its intervals: () is a day off."""

    tz: ZoneInfo
    week: tuple[tuple[Interval, ...], ...]
    holidays: Mapping[dt.date, tuple[Interval, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.week) != 7:
            raise ValueError("week needs 7 days, Monday first")
        for day in (*self.week, *self.holidays.values()):
            check_intervals(day)

    def intervals_on(self, day: dt.date) -> tuple[Interval, ...]:
        found = self.holidays.get(day)
        return found if found is not None else self.week[day.weekday()]


def check_intervals(intervals: Sequence[Interval]) -> None:
    """Raise ValueError unless the intervals are well-formed, sorted and disjoint."""
    previous_end = -1
    for start, end in intervals:
        if not 0 <= start < end <= MINUTES_PER_DAY:
            raise ValueError(f"interval {start}-{end} is not within a day or is empty")
        if start < previous_end:
            raise ValueError("intervals overlap or are not in order")
        previous_end = end


def _instant(day: dt.date, minutes: int, tz: ZoneInfo) -> dt.datetime:
    naive = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=minutes)
    return naive.replace(tzinfo=tz).astimezone(UTC)


def spans_between(
    cal: Calendar, first_day: dt.date, last_day: dt.date
) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """Working spans (UTC, in order) of the local days ``first_day`` .. ``last_day``.

    An interval that touches the next one (17:00-24:00 then 00:00-08:00) stays two spans;
    sums are the same. Local times in a DST gap map past the gap's end, so a span may
    start before the previous one ended: it is clipped to start there (and left out if
    nothing remains); the spans are always disjoint and in order."""
    day = first_day
    last_end: dt.datetime | None = None
    while day <= last_day:
        for start, end in cal.intervals_on(day):
            a, b = _instant(day, start, cal.tz), _instant(day, end, cal.tz)
            if last_end is not None and a < last_end:
                a = last_end
            if b > a:
                yield a, b
                last_end = b
        day += dt.timedelta(days=1)


def _local_day(cal: Calendar, at: dt.datetime) -> dt.date:
    if at.tzinfo is None:
        raise ValueError("a time zone-aware datetime is required")
    return at.astimezone(cal.tz).date()


def business_seconds_between(cal: Calendar, a: dt.datetime, b: dt.datetime) -> float:
    """Working seconds in [a, b); negative when b is before a."""
    if b < a:
        return -business_seconds_between(cal, b, a)
    # A day before and after: intervals are local, and a local day spans at most 26 h.
    first, last = (
        _local_day(cal, a) - dt.timedelta(days=1),
        _local_day(cal, b) + dt.timedelta(days=1),
    )
    total = 0.0
    for start, end in spans_between(cal, first, last):
        lo, hi = max(start, a), min(end, b)
        if hi > lo:
            total += (hi - lo).total_seconds()
    return total


def add_business_seconds(cal: Calendar, start: dt.datetime, seconds: float) -> dt.datetime:
    """The instant at which ``seconds`` of working time have passed since ``start``.

    ``seconds`` = 0 gives ``start``. When the target is reached exactly at the end of a
    working span, that end is returned (a deadline of "end of the working day")."""
    if seconds < 0:
        raise ValueError("seconds must not be negative")
    if seconds == 0:
        return start
    left = float(seconds)
    day = _local_day(cal, start) - dt.timedelta(days=1)
    for _ in range(MAX_SEARCH_DAYS):
        for a, b in spans_between(cal, day, day):
            if b <= start:
                continue
            a = max(a, start)
            length = (b - a).total_seconds()
            if left <= length:
                return a + dt.timedelta(seconds=left)
            left -= length
        day += dt.timedelta(days=1)
    raise ValueError("the calendar has no working time within the search horizon")
