"""Quiet hours (IC-09): no sends in admin-set wall-clock windows of the recipient's time zone.

A window starts at ``start`` on each of its ISO weekdays and ends at ``end`` the same
day, or the next day when ``end <= start`` (21:00-09:00 crosses midnight). A message
caught in a window is held until the window ends (``Hold.until``), never dropped; a
scheduler releases it then and the rules are evaluated again. Windows may be limited
to some channels. Urgency is a property of the message (``message_templates.urgent``),
not of the window: the caller passes ``urgent=True`` and no window holds the message.

Daylight-saving time: the window is a range of wall-clock times, so it covers every
instant whose local time lies in it. A boundary on a repeated wall time (autumn) takes
the first occurrence for a start and the second for an end, so the window never
shrinks; a boundary on a skipped wall time (spring) is the moment clocks jump.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence

import asyncpg
import msgspec

from herald import audit, clock
from herald.errors import InvalidInput, NotFound
from providers.base import CHANNELS
from rules.decision import Hold
from rules.regions import time_zones_of, zone

UTC = dt.UTC
ALL_DAYS: frozenset[int] = frozenset(range(1, 8))
# Chained windows (21:00-24:00 then 00:00-09:00) are followed to the end of the last
# one; this bounds the walk when windows cover the whole week.
_MAX_CHAINED = 16


class QuietWindow(msgspec.Struct, frozen=True, kw_only=True):
    """One quiet-hours window as the pure functions use it."""

    start: dt.time
    end: dt.time
    weekdays: frozenset[int] = ALL_DAYS
    channels: frozenset[str] | None = None
    id: int | None = None
    name: str = ""
    is_active: bool = True

    def applies_to(self, channel: str) -> bool:
        return self.is_active and (self.channels is None or channel in self.channels)


def release_at(
    now_utc: dt.datetime, tz: dt.tzinfo | str, windows: Iterable[QuietWindow]
) -> dt.datetime | None:
    """None if a message may go now; else the UTC moment the covering window(s) end."""
    if now_utc.tzinfo is None:
        raise ValueError("now_utc must be an aware datetime")
    where = zone(tz) if isinstance(tz, str) else tz
    active = [w for w in windows if w.is_active]
    t = now_utc.astimezone(UTC)
    released: dt.datetime | None = None
    for _ in range(_MAX_CHAINED):
        end = _end_of_covering(t, where, active)
        if end is None:
            break
        released = t = end
    return released


def check(
    now_utc: dt.datetime,
    client_ids: Iterable[int],
    client_regions: Mapping[int, Sequence[str]],
    time_zones: Mapping[str, str],
    windows: Sequence[QuietWindow],
    *,
    channel: str,
    urgent: bool = False,
) -> dict[int, Hold]:
    """The batch check: clients inside a window on ``channel``, held until it ends."""
    if urgent:
        return {}
    applicable = [w for w in windows if w.applies_to(channel)]
    if not applicable:
        return {}
    # Every zone a client can be in (their regions' zones, else the default) is among
    # these few: when none of them is quiet now, nobody is held.
    by_zone: dict[str, dt.datetime | None] = {
        name: release_at(now_utc, name, applicable)
        for name in {*time_zones.values(), clock.business_tz().key}
    }
    if not any(by_zone.values()):
        return {}
    by_regions: dict[tuple[str, ...], dt.datetime | None] = {}
    held: dict[int, Hold] = {}
    for client_id in client_ids:
        regions = tuple(client_regions.get(client_id, ()))
        if regions not in by_regions:
            ends: list[dt.datetime] = []
            for name in time_zones_of(regions, time_zones):
                if name not in by_zone:
                    by_zone[name] = release_at(now_utc, name, applicable)
                end = by_zone[name]
                if end is not None:
                    ends.append(end)
            by_regions[regions] = max(ends) if ends else None
        until = by_regions[regions]
        if until is not None:
            held[client_id] = Hold("quiet_hours", until)
    return held


def _end_of_covering(
    t: dt.datetime, tz: dt.tzinfo, windows: Sequence[QuietWindow]
) -> dt.datetime | None:
    """The latest end among the window occurrences covering instant ``t``."""
    today = t.astimezone(tz).date()
    best: dt.datetime | None = None
    for w in windows:
        # A window lasts less than 24 wall-clock hours, so only occurrences that
        # started yesterday or today can cover t.
        for day in (today - dt.timedelta(days=1), today):
            if day.isoweekday() not in w.weekdays:
                continue
            start = _instant(day, w.start, tz, earliest=True)
            end_day = day if w.end > w.start else day + dt.timedelta(days=1)
            end = _instant(end_day, w.end, tz, earliest=False)
            if start <= t < end and (best is None or end > best):
                best = end
    return best


def _instant(day: dt.date, at: dt.time, tz: dt.tzinfo, *, earliest: bool) -> dt.datetime:
    """The UTC instant of a local wall-clock time, resolving DST folds and gaps."""
    naive = dt.datetime.combine(day, at)
    first = naive.replace(tzinfo=tz).astimezone(UTC)
    second = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return first
    if first < second:  # the wall time happens twice (clocks set back)
        return first if earliest else second
    # The wall time never happens (clocks set forward): PEP 495 maps it past the jump
    # with fold=0 and before it with fold=1; the jump itself lies between.
    return _jump(second, first, tz)


def _jump(before: dt.datetime, after: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """The first second at or after which ``tz`` uses the offset it has at ``after``."""
    lo, hi = math.floor(before.timestamp()), math.ceil(after.timestamp())
    old = dt.datetime.fromtimestamp(lo, tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, tz).utcoffset() == old:
            lo = mid
        else:
            hi = mid
    return dt.datetime.fromtimestamp(hi, UTC)


# -- store ----------------------------------------------------------------------------


class WindowSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What an administrator sets for a window."""

    name: str
    start: dt.time
    end: dt.time
    weekdays: list[int] = msgspec.field(default_factory=lambda: sorted(ALL_DAYS))
    channels: list[str] | None = None
    is_active: bool = True


_COLUMNS = "id, name, weekdays, start_time, end_time, channels, is_active"


def _validate(spec: WindowSpec) -> None:
    if not 1 <= len(spec.name.strip()) <= 200:
        raise InvalidInput("name", "a name of 1 to 200 characters is required")
    for field in ("start", "end"):
        if getattr(spec, field).tzinfo is not None:
            raise InvalidInput(field, "a wall-clock time without a time zone is expected")
    if spec.start == spec.end:
        raise InvalidInput(
            "end", "must differ from start (a window of 24 hours is not quiet hours)"
        )
    if not spec.weekdays or any(d not in ALL_DAYS for d in spec.weekdays):
        raise InvalidInput("weekdays", "ISO weekdays 1 (Monday) to 7 (Sunday), at least one")
    if spec.channels is not None:
        unknown = sorted(set(spec.channels) - set(CHANNELS))
        if not spec.channels or unknown:
            raise InvalidInput(
                "channels",
                f"channels among {', '.join(CHANNELS)}, at least one "
                "(or none at all for every channel)",
            )


def _from_row(row: asyncpg.Record) -> QuietWindow:
    return QuietWindow(
        id=row["id"],
        name=row["name"],
        start=row["start_time"],
        end=row["end_time"],
        weekdays=frozenset(row["weekdays"]),
        channels=None if row["channels"] is None else frozenset(row["channels"]),
        is_active=row["is_active"],
    )


def _journal_value(w: QuietWindow) -> dict[str, object]:
    return {
        "name": w.name,
        "start": w.start.isoformat(),
        "end": w.end.isoformat(),
        "weekdays": sorted(w.weekdays),
        "channels": None if w.channels is None else sorted(w.channels),
        "is_active": w.is_active,
    }


def _args(spec: WindowSpec) -> tuple[object, ...]:
    return (
        spec.name.strip(),
        sorted(set(spec.weekdays)),
        spec.start,
        spec.end,
        None if spec.channels is None else sorted(set(spec.channels)),
        spec.is_active,
    )


async def create_window(
    conn: asyncpg.Connection, actor: audit.Actor, spec: WindowSpec
) -> QuietWindow:
    """Add a window; journalled in the same transaction."""
    _validate(spec)
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""
            INSERT INTO quiet_hours_windows (name, weekdays, start_time, end_time, channels, is_active)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}
            """,
            *_args(spec),
        )
        window = _from_row(row)
        await audit.record(
            conn,
            actor,
            [
                audit.Change(
                    "quiet_hours_window",
                    str(window.id),
                    "create",
                    None,
                    None,
                    _journal_value(window),
                )
            ],
        )
    return window


async def update_window(
    conn: asyncpg.Connection, actor: audit.Actor, window_id: int, spec: WindowSpec
) -> QuietWindow:
    """Replace a window's settings; one journal entry per changed field."""
    _validate(spec)
    async with conn.transaction():
        old = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM quiet_hours_windows WHERE id = $1 FOR UPDATE", window_id
        )
        if old is None:
            raise NotFound(f"no quiet-hours window {window_id}")
        row = await conn.fetchrow(
            f"""
            UPDATE quiet_hours_windows
            SET name = $2, weekdays = $3, start_time = $4, end_time = $5, channels = $6,
                is_active = $7, updated_at = herald_now()
            WHERE id = $1 RETURNING {_COLUMNS}
            """,
            window_id,
            *_args(spec),
        )
        window = _from_row(row)
        await audit.record(
            conn,
            actor,
            audit.field_changes(
                "quiet_hours_window",
                window_id,
                _journal_value(_from_row(old)),
                _journal_value(window),
            ),
        )
    return window


async def delete_window(conn: asyncpg.Connection, actor: audit.Actor, window_id: int) -> None:
    """Remove a window; the journal keeps what it was."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"DELETE FROM quiet_hours_windows WHERE id = $1 RETURNING {_COLUMNS}", window_id
        )
        if row is None:
            raise NotFound(f"no quiet-hours window {window_id}")
        await audit.record(
            conn,
            actor,
            [
                audit.Change(
                    "quiet_hours_window",
                    str(window_id),
                    "delete",
                    None,
                    _journal_value(_from_row(row)),
                    None,
                )
            ],
        )


async def list_windows(conn: asyncpg.Connection, *, active_only: bool = False) -> list[QuietWindow]:
    """The configured windows by id; ``active_only`` for what the worker applies."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM quiet_hours_windows WHERE is_active OR NOT $1 ORDER BY id",
        active_only,
    )
    return [_from_row(r) for r in rows]


async def load_windows(conn: asyncpg.Connection) -> list[QuietWindow]:
    """The active windows: what a worker loads per batch (a tiny table) or caches briefly."""
    return await list_windows(conn, active_only=True)
