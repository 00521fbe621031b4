"""The one clock: Herald's idea of the current time, in Python and in PostgreSQL.

Code that needs "now" asks this module (Python) or ``herald_now()`` /
``herald_clock_timestamp()`` (SQL, migration 0031); neither reads the wall clock any
other way. Both add the same offset, read once at start-up from
``HERALD_CLOCK_OFFSET_DAYS``: the offset reaches PostgreSQL as the session setting
``herald.clock_offset``, which ``load_settings`` puts in the database URLs, so every
connection of every process has it. So the whole suite, or a whole
stand, can run as if it were another day, and a date written into a test that the real
calendar reaches one day shows up at once instead of on that day.

The business time zone (``HERALD_BUSINESS_TZ``: what "today" means for billing, meters,
segments, case numbers and the UI) is configured here as well and read with
``business_tz()``; SQL reads the same setting with ``herald_business_tz()`` (migration
0045), which ``load_settings`` also puts in the database URLs when it is not the default.

The offset is process-wide, as the wall clock itself is: it is set once by the process's
entry point (``configure``) and never changes while requests are served. Code that must
be driven to an exact instant (SLA cycles, the planner, retries) still takes ``now`` or a
clock as an argument; this module is what those arguments default to.
"""

from __future__ import annotations

import datetime as dt
import time as _time
from typing import Protocol
from zoneinfo import ZoneInfo

from herald.settings import CLOCK_PG_SETTING, DEFAULT_BUSINESS_TZ, Settings

#: The PostgreSQL setting ``herald_now()`` adds to ``now()`` (an interval).
PG_SETTING = CLOCK_PG_SETTING


class Clock(Protocol):
    """Anything that tells the time: this module, or a test's frozen clock."""

    def now(self) -> dt.datetime: ...


class _Offset:
    """The process's offset from the wall clock (zero in production)."""

    seconds: float = 0.0
    business_tz: ZoneInfo = ZoneInfo(DEFAULT_BUSINESS_TZ)


def configure(settings: Settings) -> None:
    """Take the offset and the business time zone from the settings; called once by each
    process's entry point."""
    _Offset.seconds = settings.clock_offset_days * 86_400.0
    _Offset.business_tz = ZoneInfo(settings.business_tz)


def business_tz() -> ZoneInfo:
    """The business's time zone (``HERALD_BUSINESS_TZ``, Europe/Kyiv by default)."""
    return _Offset.business_tz


def offset() -> dt.timedelta:
    """How far Herald's clock is ahead of (or, negative, behind) the wall clock."""
    return dt.timedelta(seconds=_Offset.seconds)


def now() -> dt.datetime:
    """The current instant, aware, in UTC."""
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=_Offset.seconds)


def time() -> float:
    """The current instant as seconds since the epoch (Redis scores, deadlines)."""
    return _time.time() + _Offset.seconds


def today(tz: dt.tzinfo) -> dt.date:
    """Today's date in the time zone ``tz``."""
    return now().astimezone(tz).date()


class SystemClock:
    """This module as a ``Clock`` object, for code that takes a clock as an argument."""

    def now(self) -> dt.datetime:
        return now()


SYSTEM = SystemClock()
