"""Quiet hours and air-raid holding (IC-09): the quiet-hours windows per channel (edited
here), the air-raid alert switch per region, and the messages held now counted per
campaign, reason and region. Held messages are released by the scheduler on time: at the
end of the window, when the alert is lifted.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
import redis.exceptions
from aiohttp import web

from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor
from admin_api.typedefs import DB, REDIS, SETTINGS
from admin_api.ui import forms
from admin_api.ui.menu import N_
from admin_api.ui.rendering import render
from dispatcher.receipts import holds
from herald.errors import InvalidInput
from providers.base import CHANNELS
from rules import air_raid, quiet_hours
from rules.air_raid import AlertMirror
from rules.quiet_hours import WindowSpec

endpoints = EndpointTable("ui")

WEEKDAYS = {
    1: N_("Mon"),
    2: N_("Tue"),
    3: N_("Wed"),
    4: N_("Thu"),
    5: N_("Fri"),
    6: N_("Sat"),
    7: N_("Sun"),
}


async def _page(
    request: web.Request,
    *,
    errors: dict[str, str] | None = None,
    error_window: int | None = None,
    status: int = 200,
    mirror_failed: str | None = None,
) -> web.Response:
    async with request.app[DB].acquire() as conn:
        windows = await quiet_hours.list_windows(conn)
        regions = await air_raid.region_alerts(conn)
        held = await holds.held_summary(conn)
    return await render(
        request,
        "contact_rules.html",
        {
            "windows": windows,
            "regions": regions,
            "region_names": {r.region_code: r for r in regions},
            "held": held,
            "held_total": sum(h.held for h in held),
            "channels": CHANNELS,
            "weekdays": WEEKDAYS,
            "errors": errors or {},
            "error_window": error_window,
            "mirror_failed": mirror_failed,
        },
        status=status,
    )


@endpoints.get("/ui/contact-rules", permission="rules.read", response=str, media_type="text/html")
async def contact_rules_page(request: web.Request) -> web.Response:
    """Quiet hours, air-raid alerts by region, and the held messages."""
    return await _page(request)


@endpoints.get(
    "/ui/contact-rules/held", permission="rules.read", response=str, media_type="text/html"
)
async def held_part(request: web.Request) -> web.Response:
    """The held messages block alone (refreshed every few seconds)."""
    async with request.app[DB].acquire() as conn:
        held = await holds.held_summary(conn)
        regions = await air_raid.region_alerts(conn)
    return await render(
        request,
        "_held.html",
        {
            "held": held,
            "held_total": sum(h.held for h in held),
            "region_names": {r.region_code: r for r in regions},
        },
    )


class WindowForm(msgspec.Struct):
    name: str = ""
    start: str = ""
    end: str = ""
    weekdays: list[Annotated[int, msgspec.Meta(ge=1, le=7)]] = []
    channels: list[str] = []
    is_active: bool = False


def _time(field: str, value: str) -> dt.time:
    try:
        found = dt.time.fromisoformat(value)
    except ValueError:
        raise InvalidInput(field, "a wall-clock time HH:MM, e.g. 21:00") from None
    if found.tzinfo is not None:
        raise InvalidInput(field, "a wall-clock time HH:MM without a time zone")
    return found


def _spec(form: WindowForm) -> WindowSpec:
    return WindowSpec(
        name=form.name,
        start=_time("start", form.start),
        end=_time("end", form.end),
        weekdays=form.weekdays,
        channels=form.channels or None,  # none ticked: every channel
        is_active=form.is_active,
    )


async def _window_form(request: web.Request) -> WindowSpec:
    return _spec(await forms.form(request, WindowForm, lists=("weekdays", "channels")))


@endpoints.post(
    "/ui/contact-rules/quiet-hours",
    permission="rules.manage",
    response=str,
    media_type="text/html",
)
async def add_window(request: web.Request) -> web.Response:
    """Add a quiet-hours window."""
    try:
        spec = await _window_form(request)
        async with request.app[DB].acquire() as conn:
            await quiet_hours.create_window(conn, actor(request), spec)
    except InvalidInput as error:
        return await _page(request, errors={error.field: error.detail}, error_window=0, status=400)
    raise web.HTTPSeeOther("/ui/contact-rules")


@endpoints.post(
    r"/ui/contact-rules/quiet-hours/{window_id:\d+}",
    permission="rules.manage",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def save_window(request: web.Request) -> web.Response:
    """Change a window (messages it holds keep their release time)."""
    window_id = path_int(request, "window_id")
    try:
        spec = await _window_form(request)
        async with request.app[DB].acquire() as conn:
            await quiet_hours.update_window(conn, actor(request), window_id, spec)
    except InvalidInput as error:
        return await _page(
            request, errors={error.field: error.detail}, error_window=window_id, status=400
        )
    raise web.HTTPSeeOther("/ui/contact-rules")


@endpoints.post(
    r"/ui/contact-rules/quiet-hours/{window_id:\d+}/delete",
    permission="rules.manage",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def delete_window(request: web.Request) -> web.Response:
    """Remove a window; what it holds is released when it would have ended."""
    async with request.app[DB].acquire() as conn:
        await quiet_hours.delete_window(conn, actor(request), path_int(request, "window_id"))
    raise web.HTTPSeeOther("/ui/contact-rules")


class AlertForm(msgspec.Struct):
    active: bool


@endpoints.post(
    r"/ui/contact-rules/alerts/{region:UA-\d\d}",
    permission="alerts.manage",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def switch_alert(request: web.Request) -> web.Response:
    """Switch a region's air-raid alert on or off; workers hold or release at their next batch."""
    region = request.match_info["region"]
    form = await forms.form(request, AlertForm)
    app = request.app
    mirror = AlertMirror(app[REDIS], app[SETTINGS].namespace)
    failed: str | None = None
    async with app[DB].acquire() as conn:
        if not await air_raid.region_exists(conn, region):
            raise InvalidInput("region", f"unknown region {region}")
        try:
            await air_raid.set_alert(
                conn, mirror, actor(request), region, form.active, source="admin"
            )
        except redis.exceptions.RedisError:
            failed = region
    if failed is not None:
        return await _page(request, mirror_failed=failed, status=503)
    raise web.HTTPSeeOther("/ui/contact-rules#alerts")
