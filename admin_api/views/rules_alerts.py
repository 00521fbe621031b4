"""Send rules, part two: air-raid alerts per region, switched by an administrator or a feed.

A switch is committed to PostgreSQL (journalled as entity ``air_raid_alert``, id the
region code) and then mirrored to Redis, where workers read the regions under alert
once per batch. When an alert is lifted the scheduler releases the held messages by
itself within a couple of seconds; nothing here has to trigger it.
"""

from __future__ import annotations

import re
from typing import Annotated

import asyncpg
import msgspec
import redis.exceptions
from aiohttp import web

from admin_api import paging
from admin_api.problems import problem_response
from admin_api.routing import EndpointTable
from admin_api.security import actor
from admin_api.typedefs import DB, REDIS, SETTINGS
from dispatcher.receipts import holds
from dispatcher.receipts.holds import HeldCount
from herald.bounds import Id
from herald.errors import InvalidInput
from rules import air_raid
from rules.air_raid import AlertMirror, AlertPeriod, AlertState, RegionAlert, Source

endpoints = EndpointTable("air-raid alerts")

# The same rule as the regions.code CHECK.
_REGION = re.compile(r"^UA-[0-9]{2}$")


class AlertSwitch(msgspec.Struct, forbid_unknown_fields=True):
    """Switch a region's alert on (``active``: true) or off; the same state again is a no-op."""

    active: bool
    source: Source = "admin"


class AirRaidHistoryQuery(msgspec.Struct, forbid_unknown_fields=True):
    region: Annotated[str, msgspec.Meta(max_length=5)] | None = None
    before_id: Annotated[Id | None, paging.DEPRECATED_PARAM] = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100
    cursor: paging.Cursor | None = None


class AlertPeriodPage(msgspec.Struct):
    items: list[AlertPeriod]
    next_before_id: Annotated[int | None, paging.DEPRECATED_FIELD]
    next_cursor: str | None = None


async def _known_region(conn: asyncpg.Connection, field: str, code: str) -> None:
    if not _REGION.match(code) or not await air_raid.region_exists(conn, code):
        raise InvalidInput(
            field,
            f"unknown region {code!r}: a region code such as UA-30 "
            "(see GET /api/v1/air-raid/alerts for all of them)",
        )


@endpoints.get("/api/v1/air-raid/alerts", permission="rules.read", response=list[RegionAlert])
async def list_alerts(request: web.Request) -> list[RegionAlert]:
    """Every region with its current alert state, by region code."""
    async with request.app[DB].acquire() as conn:
        return await air_raid.region_alerts(conn)


@endpoints.put(
    "/api/v1/air-raid/alerts/{region}",
    permission="alerts.manage",
    body=AlertSwitch,
    response=AlertState,
    errors=(400, 503),
)
async def switch_alert(request: web.Request, body: AlertSwitch) -> AlertState | web.Response:
    """Switch a region's alert on or off; workers see it at their next batch."""
    region = request.match_info["region"]
    app = request.app
    mirror = AlertMirror(app[REDIS], app[SETTINGS].namespace)
    async with app[DB].acquire() as conn:
        # Checked here to name the path parameter; switch_alert checks again in its transaction.
        await _known_region(conn, "region", region)
        # set_alert commits before it mirrors to Redis: the pool's connection is never
        # inside a transaction here.
        try:
            return await air_raid.set_alert(
                conn, mirror, actor(request), region, body.active, source=body.source
            )
        except redis.exceptions.RedisError:
            # Committed but not mirrored: the scheduler's periodic sync mirrors it once Redis
            # answers again, and repeating this PUT (a no-op in PostgreSQL) mirrors it too.
            return problem_response(
                request,
                503,
                code="air-raid-mirror-unavailable",
                detail=f"the alert of {region} was recorded, but Redis could not be updated: "
                "workers see it once Redis is reachable again; repeat the request to "
                "confirm",
                headers={"Retry-After": "2"},
            )


@endpoints.get(
    "/api/v1/air-raid/history",
    permission="rules.read",
    query=AirRaidHistoryQuery,
    response=AlertPeriodPage,
    errors=(400,),
)
async def alert_history(request: web.Request, query: AirRaidHistoryQuery) -> AlertPeriodPage:
    """Alert periods, newest first, of one region or all; pass next_cursor back as cursor."""
    before_id = paging.start(query.cursor, query.before_id)
    async with request.app[DB].acquire() as conn:
        if query.region is not None:
            await _known_region(conn, "region", query.region)
        items = await air_raid.history(
            conn, region_code=query.region, before_id=before_id, limit=query.limit
        )
    return AlertPeriodPage(items, *paging.following(items, query.limit, lambda i: i.id))


@endpoints.get("/api/v1/held-messages", permission="rules.read", response=list[HeldCount])
async def held_messages(request: web.Request) -> list[HeldCount]:
    """Messages held now (quiet hours, air-raid alerts, rate limits, paused campaigns),
    counted per campaign, reason and region, the largest groups first."""
    async with request.app[DB].acquire() as conn:
        return await holds.held_summary(conn)
