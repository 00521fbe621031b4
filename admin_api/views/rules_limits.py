"""Send rules, part one: channel and provider rate limits, and quiet-hours windows.

Workers cache both tables for a few seconds (``rules.rate_limit.list_limits``,
``rules.quiet_hours.load_windows``), so a change reaches every send within that time.
Every change is journalled by the rules stores: entity types ``rate_limit`` (id
``sms`` or ``sms:sms_http``) and ``quiet_hours_window`` (id the window's id).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor
from admin_api.typedefs import DB
from herald.errors import InvalidInput
from providers.base import CHANNELS
from rules import quiet_hours, rate_limit
from rules.quiet_hours import QuietWindow, WindowSpec
from rules.rate_limit import MAX_PER_HOUR, MAX_PER_MINUTE, RateLimit

endpoints = EndpointTable("send rules")

# The same rule as the rate_limits.provider CHECK (and rules.rate_limit's validation).
_PROVIDER = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")


# -- rate limits ----------------------------------------------------------------------


class RateLimitBody(msgspec.Struct, forbid_unknown_fields=True):
    """A scope's limits; an absent or null period means no limit for it (at least one is set)."""

    per_minute: Annotated[int, msgspec.Meta(ge=1, le=MAX_PER_MINUTE)] | None = None
    per_hour: Annotated[int, msgspec.Meta(ge=1, le=MAX_PER_HOUR)] | None = None


def _scope(request: web.Request) -> tuple[str, str | None]:
    """(channel, provider or None) from the path, or a 400 naming the bad part."""
    channel = request.match_info["channel"]
    if channel not in CHANNELS:
        raise InvalidInput("channel", f"unknown channel {channel!r}; one of {', '.join(CHANNELS)}")
    provider = request.match_info.get("provider")
    if provider is not None and not _PROVIDER.match(provider):
        raise InvalidInput(
            "provider",
            f"bad provider name {provider!r}: lower-case latin letters, "
            "digits, '.', '_' or '-', starting with a letter",
        )
    return channel, provider


@endpoints.get("/api/v1/rate-limits", permission="rules.read", response=list[RateLimit])
async def list_rate_limits(request: web.Request) -> list[RateLimit]:
    """Every configured channel-wide and per-provider limit (a scope not listed is unlimited)."""
    async with request.app[DB].acquire() as conn:
        return await rate_limit.list_limits(conn)


async def _set(request: web.Request, body: RateLimitBody) -> RateLimit:
    channel, provider = _scope(request)
    async with request.app[DB].acquire() as conn:
        return await rate_limit.set_limit(
            conn,
            actor(request),
            channel=channel,
            provider=provider,
            per_minute=body.per_minute,
            per_hour=body.per_hour,
        )


async def _remove(request: web.Request) -> None:
    channel, provider = _scope(request)
    async with request.app[DB].acquire() as conn:
        await rate_limit.remove_limit(conn, actor(request), channel=channel, provider=provider)


@endpoints.put(
    "/api/v1/rate-limits/{channel}",
    permission="rules.manage",
    body=RateLimitBody,
    response=RateLimit,
    errors=(400,),
)
async def set_channel_limit(request: web.Request, body: RateLimitBody) -> RateLimit:
    """Set (create or replace) the limit of a whole channel, all its providers together."""
    return await _set(request, body)


@endpoints.put(
    "/api/v1/rate-limits/{channel}/{provider}",
    permission="rules.manage",
    body=RateLimitBody,
    response=RateLimit,
    errors=(400,),
)
async def set_provider_limit(request: web.Request, body: RateLimitBody) -> RateLimit:
    """Set (create or replace) the limit of one provider of a channel (e.g. sms/sms_http)."""
    return await _set(request, body)


@endpoints.delete(
    "/api/v1/rate-limits/{channel}", permission="rules.manage", status=204, errors=(404,)
)
async def remove_channel_limit(request: web.Request) -> None:
    """Remove a channel-wide limit: the channel is unlimited from then on."""
    await _remove(request)


@endpoints.delete(
    "/api/v1/rate-limits/{channel}/{provider}", permission="rules.manage", status=204, errors=(404,)
)
async def remove_provider_limit(request: web.Request) -> None:
    """Remove one provider's limit (a channel-wide limit still applies)."""
    await _remove(request)


# -- quiet hours ----------------------------------------------------------------------

_WALL_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$")
WallClock = Annotated[
    str,
    msgspec.Meta(
        max_length=8,
        description="wall-clock time HH:MM or HH:MM:SS, no time zone",
        examples=["21:00"],
        extra_json_schema={"pattern": _WALL_CLOCK.pattern},
    ),
]
Weekday = Annotated[int, msgspec.Meta(ge=1, le=7)]


class QuietHoursBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A window's settings; ``end`` <= ``start`` means it ends the next day (21:00-09:00)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    start: WallClock
    end: WallClock
    weekdays: Annotated[list[Weekday], msgspec.Meta(min_length=1, max_length=7)] = msgspec.field(
        default_factory=lambda: [1, 2, 3, 4, 5, 6, 7]
    )
    channels: Annotated[list[str], msgspec.Meta(max_length=len(CHANNELS))] | None = None
    is_active: bool = True


def _wall_clock(field: str, value: str) -> dt.time:
    if not _WALL_CLOCK.match(value):
        raise InvalidInput(
            field,
            f"a wall-clock time HH:MM or HH:MM:SS from 00:00 to 23:59:59 "
            f"without a time zone is expected, got {value!r}",
        )
    return dt.time.fromisoformat(value)


def _spec(body: QuietHoursBody) -> WindowSpec:
    return WindowSpec(
        name=body.name,
        start=_wall_clock("start", body.start),
        end=_wall_clock("end", body.end),
        weekdays=body.weekdays,
        channels=body.channels,
        is_active=body.is_active,
    )


class QuietHoursWindow(msgspec.Struct):
    """A quiet-hours window: from ``start`` to ``end`` wall-clock time in the recipient's zone."""

    id: int
    name: str
    start: dt.time
    end: dt.time
    weekdays: list[int]
    channels: list[str] | None
    is_active: bool
    crosses_midnight: bool


def _window(w: QuietWindow) -> QuietHoursWindow:
    assert w.id is not None
    return QuietHoursWindow(
        id=w.id,
        name=w.name,
        start=w.start,
        end=w.end,
        weekdays=sorted(w.weekdays),
        channels=None if w.channels is None else sorted(w.channels),
        is_active=w.is_active,
        crosses_midnight=w.end < w.start,
    )


@endpoints.get("/api/v1/quiet-hours", permission="rules.read", response=list[QuietHoursWindow])
async def list_quiet_hours(request: web.Request) -> list[QuietHoursWindow]:
    """Every quiet-hours window, active or not, by id."""
    async with request.app[DB].acquire() as conn:
        return [_window(w) for w in await quiet_hours.list_windows(conn)]


@endpoints.post(
    "/api/v1/quiet-hours",
    permission="rules.manage",
    body=QuietHoursBody,
    response=QuietHoursWindow,
    status=201,
    errors=(400,),
)
async def create_quiet_hours(request: web.Request, body: QuietHoursBody) -> QuietHoursWindow:
    """Add a window; times are "HH:MM" in the recipient's zone, end <= start crosses midnight."""
    spec = _spec(body)
    async with request.app[DB].acquire() as conn:
        return _window(await quiet_hours.create_window(conn, actor(request), spec))


@endpoints.put(
    "/api/v1/quiet-hours/{window_id}",
    permission="rules.manage",
    body=QuietHoursBody,
    response=QuietHoursWindow,
    errors=(400, 404),
)
async def update_quiet_hours(request: web.Request, body: QuietHoursBody) -> QuietHoursWindow:
    """Replace a window's settings (fields left out take their defaults)."""
    window_id = path_int(request, "window_id")
    spec = _spec(body)
    async with request.app[DB].acquire() as conn:
        return _window(await quiet_hours.update_window(conn, actor(request), window_id, spec))


@endpoints.delete(
    "/api/v1/quiet-hours/{window_id}", permission="rules.manage", status=204, errors=(404,)
)
async def delete_quiet_hours(request: web.Request) -> None:
    """Remove a window; messages it holds are released when it would have ended."""
    window_id = path_int(request, "window_id")
    async with request.app[DB].acquire() as conn:
        await quiet_hours.delete_window(conn, actor(request), window_id)
