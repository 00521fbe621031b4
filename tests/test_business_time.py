"""Business-time arithmetic (pure): known cases around DST, holidays and shortened days,
several intervals a day, and properties over random calendars."""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from crm.cases.business_time import (
    Calendar,
    add_business_seconds,
    business_seconds_between,
    spans_between,
)

KYIV = ZoneInfo("Europe/Kyiv")
UTC = dt.UTC
H = 3600.0


def office(holidays: dict[dt.date, tuple[tuple[int, int], ...]] | None = None) -> Calendar:
    day = ((8 * 60, 17 * 60),)
    return Calendar(KYIV, (day, day, day, day, day, (), ()), holidays or {})


def kyiv(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=KYIV)


ALWAYS = Calendar(KYIV, tuple(((0, 1440),) for _ in range(7)))


def test_spring_forward_day_has_23_hours_and_fall_back_25() -> None:
    assert business_seconds_between(ALWAYS, kyiv(2026, 3, 29), kyiv(2026, 3, 30)) == 23 * H
    assert business_seconds_between(ALWAYS, kyiv(2026, 10, 25), kyiv(2026, 10, 26)) == 25 * H
    assert business_seconds_between(ALWAYS, kyiv(2026, 6, 1), kyiv(2026, 6, 2)) == 24 * H


def test_working_day_is_nine_real_hours_on_both_sides_of_dst() -> None:
    cal = office()
    # Friday 27 March (+02:00) 16:00 plus 2 working hours: Monday 30 March (+03:00) 09:00.
    due = add_business_seconds(cal, kyiv(2026, 3, 27, 16), 2 * H)
    assert due == kyiv(2026, 3, 30, 9) and due.utcoffset() is not None
    assert due.astimezone(UTC) == dt.datetime(2026, 3, 30, 6, tzinfo=UTC)
    assert business_seconds_between(cal, kyiv(2026, 3, 27, 8), kyiv(2026, 3, 30, 17)) == 18 * H
    # Autumn: Friday 23 October (+03:00) 16:30 + 1 h -> Monday 26 October (+02:00) 08:30.
    assert add_business_seconds(cal, kyiv(2026, 10, 23, 16, 30), H) == kyiv(2026, 10, 26, 8, 30)


def test_holiday_and_shortened_day() -> None:
    cal = office({dt.date(2026, 12, 25): (), dt.date(2026, 12, 31): ((8 * 60, 13 * 60),)})
    # Thursday 24 Dec 16:00 + 2 h: the Friday is a holiday, so Monday 28th 09:00.
    assert add_business_seconds(cal, kyiv(2026, 12, 24, 16), 2 * H) == kyiv(2026, 12, 28, 9)
    # The shortened 31st ends at 13:00: 12:00 + 2 h -> Friday 1 January 09:00.
    assert add_business_seconds(cal, kyiv(2026, 12, 31, 12), 2 * H) == kyiv(2027, 1, 1, 9)
    assert (
        business_seconds_between(cal, kyiv(2026, 12, 21), kyiv(2027, 1, 1))
        == (4 * 9 + 3 * 9 + 5) * H
    )
    # A holiday given on a weekend with hours makes it a working day.
    saturday = office({dt.date(2026, 12, 26): ((10 * 60, 12 * 60),)})
    assert add_business_seconds(saturday, kyiv(2026, 12, 25, 16), 2 * H) == kyiv(2026, 12, 26, 11)


def test_several_intervals_a_day_and_exact_ends() -> None:
    split = ((8 * 60, 12 * 60), (13 * 60, 17 * 60))
    cal = Calendar(KYIV, (split,) * 5 + ((), ()))
    assert add_business_seconds(cal, kyiv(2026, 12, 1, 11, 30), H) == kyiv(2026, 12, 1, 13, 30)
    assert business_seconds_between(cal, kyiv(2026, 12, 1, 11), kyiv(2026, 12, 1, 14)) == 2 * H
    # A target reached exactly at the end of the day is the end of the day.
    assert add_business_seconds(cal, kyiv(2026, 12, 1, 8), 8 * H) == kyiv(2026, 12, 1, 17)
    # Starting outside working time starts at the next opening.
    assert add_business_seconds(cal, kyiv(2026, 12, 5, 3), 60) == kyiv(2026, 12, 7, 8, 1)
    assert add_business_seconds(cal, kyiv(2026, 12, 5, 3), 0) == kyiv(2026, 12, 5, 3)
    assert business_seconds_between(cal, kyiv(2026, 12, 1, 14), kyiv(2026, 12, 1, 11)) == -2 * H


def test_bad_calendars_and_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        Calendar(KYIV, ((),) * 6)
    with pytest.raises(ValueError):
        Calendar(KYIV, (((600, 700), (650, 800)),) + ((),) * 6)
    with pytest.raises(ValueError):
        Calendar(KYIV, (((700, 700),),) + ((),) * 6)
    with pytest.raises(ValueError):
        add_business_seconds(Calendar(KYIV, ((),) * 7), kyiv(2026, 1, 1), 60)
    with pytest.raises(ValueError):
        business_seconds_between(office(), dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2))


# -- properties over random calendars ---------------------------------------------------------


@st.composite
def day_intervals(draw: st.DrawFn) -> tuple[tuple[int, int], ...]:
    cuts = sorted(set(draw(st.lists(st.integers(0, 96), max_size=6))))
    if len(cuts) % 2:
        cuts = cuts[:-1]
    return tuple((cuts[i] * 15, cuts[i + 1] * 15) for i in range(0, len(cuts), 2))


@st.composite
def calendars(draw: st.DrawFn) -> Calendar:
    week = tuple(draw(day_intervals()) for _ in range(7))
    if not any(week):
        week = (((9 * 60, 18 * 60),),) + week[1:]
    zone = ZoneInfo(
        draw(
            st.sampled_from(
                ["Europe/Kyiv", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"]
            )
        )
    )
    days = draw(
        st.lists(st.dates(dt.date(2026, 1, 1), dt.date(2027, 12, 31)), max_size=8, unique=True)
    )
    holidays = {d: draw(day_intervals()) for d in days}
    return Calendar(zone, week, holidays)


instants = st.datetimes(dt.datetime(2026, 1, 1), dt.datetime(2027, 12, 1), timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(calendars(), instants, st.floats(0, 40 * 24 * H, allow_nan=False))
def test_between_undoes_add(cal: Calendar, start: dt.datetime, seconds: float) -> None:
    try:
        due = add_business_seconds(cal, start, seconds)
    except ValueError:
        # Beyond the search horizon (30 years): 40 days' worth on a calendar of 15 minutes
        # a week. Such a calendar is refused work, not answered wrongly.
        weekly = sum(b - a for day in cal.week for a, b in day) * 60
        assert seconds > weekly * 52 * 29
        reject()
    assert due >= start
    assert business_seconds_between(cal, start, due) == pytest.approx(seconds, abs=1e-3)
    # The due time is in working time (or at the end of a span): a moment earlier still
    # had working time left before it (datetimes resolve microseconds only).
    if seconds >= 0.01:
        just_before = due - dt.timedelta(milliseconds=1)
        assert business_seconds_between(cal, just_before, due) > 0


@settings(max_examples=300, deadline=None)
@given(calendars(), instants, instants, instants)
def test_between_is_additive_and_bounded(
    cal: Calendar, a: dt.datetime, b: dt.datetime, c: dt.datetime
) -> None:
    ab, bc = business_seconds_between(cal, a, b), business_seconds_between(cal, b, c)
    assert ab + bc == pytest.approx(business_seconds_between(cal, a, c), abs=1e-3)
    assert abs(ab) <= abs((b - a).total_seconds()) + 1e-6


@settings(max_examples=200, deadline=None)
@given(calendars(), instants, st.floats(0, 10 * 24 * H), st.floats(0, 10 * 24 * H))
def test_add_is_monotonic(cal: Calendar, start: dt.datetime, s1: float, s2: float) -> None:
    lo, hi = sorted((s1, s2))
    assert add_business_seconds(cal, start, lo) <= add_business_seconds(cal, start, hi)


@settings(max_examples=200, deadline=None)
@given(calendars(), st.dates(dt.date(2026, 1, 1), dt.date(2027, 12, 1)))
def test_spans_are_ordered_and_disjoint(cal: Calendar, first: dt.date) -> None:
    spans = list(spans_between(cal, first, first + dt.timedelta(days=20)))
    assert all(a < b for a, b in spans)
    assert all(b <= c for (_, b), (c, _) in itertools.pairwise(spans))
