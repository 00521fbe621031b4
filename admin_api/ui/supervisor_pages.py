"""The supervisor's workspace (SR-11): the live wallboard, the team's queue with bulk
actions, and an agent's day.

The wallboard shows open work by SLA state, channel, group and topic, the breached and
at-risk cases, the agents with presence and load, and the escalations. It reloads its
board when the tab's one live stream (``admin_api.ui.live``) says that cases or agents
changed. The board is a snapshot shared by every open wallboard of the process with the
same filter (:class:`Boards`): computed only when the change feed heard of a change since
the last one, and at most once per ``MIN_INTERVAL``, so a hundred open wallboards cost
one grouped count (itself shared, ``crm.cases.supervisor.SharedReads``) and two short
list queries per second, not one set per tab.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor
from admin_api.typedefs import DB
from admin_api.ui import forms
from admin_api.ui.rendering import render
from admin_api.views.supervisor import FEED, READS
from crm.cases import categories, correction, groups, routing, sla, supervisor
from crm.cases.correction import ClassificationPatch
from crm.cases.routing import Reassignment
from crm.cases.supervisor import Scope, SupervisorFilter, SupervisorSnapshot
from crm.cases.types import CHANNELS
from crm.users import get_user
from herald import clock, cursors, db
from herald.bounds import Id
from herald.cursors import AwareTime
from herald.errors import HeraldError, InvalidInput

endpoints = EndpointTable("ui")

MIN_INTERVAL = 1.0
PRIORITIES = ("low", "normal", "high", "urgent")
TEAM_PAGE = 100
_POSITION = tuple[AwareTime | None, Id]


class _Board:
    """One filter's shared snapshot: its value and when its computation started."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.value: SupervisorSnapshot | None = None
        self.started = float("-inf")
        self.server_now = ""


class Boards:
    """The wallboard snapshots of this process, one per filter, shared by all tabs."""

    def __init__(self) -> None:
        self._boards: dict[SupervisorFilter, _Board] = {}

    async def get(self, app: web.Application, scope: Scope) -> tuple[SupervisorSnapshot, str]:
        board = self._boards.setdefault(scope.filter, _Board())
        async with board.lock:
            changed = app[FEED].changed_at
            if board.value is not None and board.started >= changed:
                return board.value, board.server_now
            # At most one computation per interval: a burst of changes waits for the next.
            wait = board.started + MIN_INTERVAL - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            started = time.monotonic()
            async with app[DB].acquire() as conn:
                snap = await supervisor.snapshot(conn, app[READS], scope, started)
                cases = [*snap.breached, *snap.at_risk]
                blocks = await sla.sla_for(conn, [c.id for c in cases], now=snap.totals.at)
            for case in cases:
                case.sla = blocks.get(case.id)
            board.value, board.started = snap, started
            board.server_now = snap.totals.at.isoformat()
            return snap, board.server_now


BOARDS = web.AppKey("ui_wallboards", Boards)


def _filter(request: web.Request) -> SupervisorFilter:
    return forms.query(request, SupervisorFilter)


async def _names(request: web.Request) -> dict[str, object]:
    async with request.app[DB].acquire() as conn:
        found_groups = await groups.list_groups(conn)
        found_categories = await categories.list_categories(conn, include_inactive=True)
    return {
        "groups": found_groups,
        "group_names": {g.code: g for g in found_groups},
        "categories": found_categories,
        "category_names": {str(c.id): c for c in found_categories},
    }


async def _board(request: web.Request) -> dict[str, object]:
    f = _filter(request)
    async with request.app[DB].acquire() as conn:
        scope = await supervisor.scope_of(conn, f)
    snap, server_now = await request.app[BOARDS].get(request.app, scope)
    names = await _names(request)
    agent_names = {a.user_id: a for a in snap.agents}
    if f.group_code is not None:
        async with request.app[DB].acquire() as conn:
            agent_names = {a.user_id: a for a in await routing.agent_loads(conn)}
    return {
        "snap": snap,
        "f": f,
        "server_now": server_now,
        "agent_names": agent_names,
        "channels": CHANNELS,
        **names,
    }


@endpoints.get(
    "/ui/supervisor",
    permission="cases.supervise",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def wallboard(request: web.Request) -> web.Response:
    """The live wallboard: open work by SLA state, channel, group and topic; breached and
    at-risk cases; agents with presence and load; escalations."""
    return await render(request, "supervisor.html", await _board(request))


@endpoints.get(
    "/ui/supervisor/board",
    permission="cases.supervise",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def board(request: web.Request) -> web.Response:
    """The wallboard's board, as it is now (reloaded on the live stream's events)."""
    return await render(request, "_wallboard.html", await _board(request))


class ReassignForm(msgspec.Struct):
    """``to``: ``user:<id>`` or ``group:<code>`` (the group's queue)."""

    to: str
    comment: str | None = None


def _target(value: str) -> Reassignment:
    kind, _, key = value.partition(":")
    if kind == "user" and key.isdigit():
        return Reassignment(user_id=int(key))
    if kind == "group" and key:
        return Reassignment(group_code=key)
    raise InvalidInput("to", "choose an agent or a group")


FLASH = {"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"}


@endpoints.post(
    r"/ui/supervisor/cases/{case_id:\d+}/reassign",
    permission="cases.route",
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def reassign_case(request: web.Request) -> web.Response:
    """Move a case to an agent or to a group's queue; the board follows by the stream."""
    form = await forms.form(request, ReassignForm)
    to = _target(form.to)
    async with request.app[DB].acquire() as conn:
        case = await routing.reassign(
            conn,
            actor(request),
            path_int(request, "case_id"),
            msgspec.structs.replace(to, comment=form.comment),
        )
    return await render(
        request, "_sv_flash.html", {"done": "reassigned", "number": case.number}, headers=FLASH
    )


class TakeQueueForm(msgspec.Struct):
    """Where the agent's open cases go: ``group:`` (each back to its group's queue) or
    ``user:<id>`` (to another agent)."""

    to: str = "group:"


@endpoints.post(
    r"/ui/supervisor/agents/{user_id:\d+}/take-queue",
    permission="cases.route",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def take_queue(request: web.Request) -> web.Response:
    """Take an agent's queue: every open case assigned to them goes back to its group's
    queue (or to another agent); the cases that cannot move are counted, not hidden."""
    form = await forms.form(request, TakeQueueForm)
    user_id = path_int(request, "user_id")
    target = None if form.to == "group:" else _target(form.to)
    moved = failed = 0
    async with request.app[DB].acquire() as conn:
        await get_user(conn, user_id)
        queue = await supervisor.cases_by_ids(
            conn, await supervisor.open_case_ids_of(conn, user_id)
        )
        for case in queue:
            to = target or Reassignment(group_code=case.group_code)
            try:
                if to.group_code is None and to.user_id is None:
                    raise InvalidInput("to", "the case has no group")
                await routing.reassign(conn, actor(request), case.id, to)
                moved += 1
            except HeraldError:
                failed += 1
    return await render(
        request,
        "_sv_flash.html",
        {"done": "taken", "moved": moved, "failed": failed},
        headers=FLASH,
    )


# -- The team's queue ------------------------------------------------------------------


class TeamFilter(msgspec.Struct, forbid_unknown_fields=True):
    group_code: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    sla_state: Literal["none", "ok", "warning", "breached"] | None = None
    cursor: str | None = None


async def _team(request: web.Request) -> dict[str, object]:
    q = forms.query(request, TeamFilter)
    f = SupervisorFilter(group_code=q.group_code)
    after = cursors.decode(q.cursor, _POSITION) if q.cursor else None
    async with request.app[DB].acquire() as conn:
        scope = await supervisor.scope_of(conn, f)
        items = await supervisor.listed(conn, scope, q.sla_state, TEAM_PAGE, after)
        agents = await routing.agent_loads(conn)
        now = await db.now(conn)
    return {
        "items": items,
        "q": q,
        "next_cursor": (
            cursors.encode(*supervisor.position(items[-1])) if len(items) == TEAM_PAGE else None
        ),
        "agents": agents,
        "agent_names": {a.user_id: a for a in agents},
        "priorities": PRIORITIES,
        "server_now": now.isoformat(),
        **await _names(request),
    }


@endpoints.get(
    "/ui/supervisor/team",
    permission="cases.route",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def team_page(request: web.Request) -> web.Response:
    """The team's open cases (a group's, or all), nearest deadline first, with bulk
    reassignment and priority change."""
    return await render(request, "team.html", await _team(request))


@endpoints.get(
    "/ui/supervisor/team/rows",
    permission="cases.route",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def team_rows(request: web.Request) -> web.Response:
    """The team queue's table for the filters."""
    return await render(request, "_team_rows.html", await _team(request))


class BulkForm(msgspec.Struct):
    case_ids: list[Id] = []
    action: Literal["reassign", "priority"] = "reassign"
    to: str | None = None
    priority: str | None = None


@endpoints.post(
    "/ui/supervisor/team/bulk",
    permission="cases.route",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def team_bulk(request: web.Request) -> web.Response:
    """Reassign the ticked cases, or change their priority; each case is its own
    transaction, and the report counts those that could not change (closed meanwhile,
    an agent at capacity)."""
    form = await forms.form(request, BulkForm, lists=("case_ids",))
    if not form.case_ids:
        raise InvalidInput("case_ids", "tick the cases to change")
    if len(form.case_ids) > 500:
        raise InvalidInput("case_ids", "at most 500 cases at once")
    if form.action == "reassign":
        to = _target(form.to or "")
    else:
        if form.priority not in PRIORITIES:
            raise InvalidInput("priority", "choose a priority")
        patch = ClassificationPatch(priority=form.priority)  # type: ignore[arg-type]  # in PRIORITIES
    done, failed = 0, []
    async with request.app[DB].acquire() as conn:
        for case_id in form.case_ids:
            try:
                if form.action == "reassign":
                    await routing.reassign(conn, actor(request), case_id, to)
                else:
                    await correction.correct(conn, actor(request), case_id, patch)
                done += 1
            except HeraldError as error:
                failed.append((case_id, error))
    return await render(
        request,
        "_bulk_report.html",
        {"done": done, "failed": failed, "action": form.action},
        headers={"HX-Trigger": "herald:cases"},
    )


# -- An agent's day --------------------------------------------------------------------


class DayQuery(msgspec.Struct, forbid_unknown_fields=True):
    day: dt.date | None = None


@endpoints.get(
    r"/ui/supervisor/agents/{user_id:\d+}",
    permission="cases.supervise",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def agent_day(request: web.Request) -> web.Response:
    """An agent's day: the cases they handled (replies, status changes, resolved) and
    their presence, span by span, in business time."""
    q = forms.query(request, DayQuery)
    tz = clock.business_tz()
    day = q.day or clock.today(tz)
    since = dt.datetime.combine(day, dt.time(), tz)
    until = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz)
    user_id = path_int(request, "user_id")
    async with request.app[DB].acquire() as conn:
        user = await get_user(conn, user_id)
        found = await supervisor.agent_day(conn, user_id, since, until)
        loads = {a.user_id: a for a in await routing.agent_loads(conn)}
    total = sum(found.seconds_by_presence.values()) or 1
    return await render(
        request,
        "agent_day.html",
        {
            "agent": user,
            "load": loads.get(user_id),
            "day": day,
            "d": found,
            "total": total,
            "previous": day - dt.timedelta(days=1),
            "next": day + dt.timedelta(days=1),
        },
    )
