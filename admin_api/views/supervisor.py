"""The supervisor's live view (issue 5, point 8; SR-11): a snapshot, a page of open
cases by nearest deadline, and a Server-Sent Events stream of changes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import asyncpg
import msgspec
from aiohttp import web
from aiohttp_sse import EventSourceResponse

from admin_api.routing import EndpointTable
from admin_api.sse import event_stream, viewer_gone
from admin_api.typedefs import DB, SETTINGS
from crm.cases import supervisor
from crm.cases.live import ChangeFeed
from crm.cases.routing import AgentLoad
from crm.cases.supervisor import (
    Escalation,
    Scope,
    SharedReads,
    SupervisorCase,
    SupervisorFilter,
    SupervisorSnapshot,
    Totals,
)
from herald import cursors, db
from herald.bounds import Id
from herald.cursors import AwareTime
from herald.db import init_connection

FEED = web.AppKey("case_change_feed", ChangeFeed)
READS = web.AppKey("supervisor_reads", SharedReads)

PING_SECONDS = 15.0
POLL_SECONDS = 1.0

endpoints = EndpointTable("supervisor")


async def live_context(app: web.Application) -> AsyncIterator[None]:
    """The process's LISTEN connection and shared reads: a cleanup context after the pool."""
    settings = app[SETTINGS]

    async def connect() -> asyncpg.Connection:
        conn = await asyncpg.connect(
            settings.database_url, server_settings={"application_name": "herald-live"}
        )
        await init_connection(conn)
        return conn

    feed = ChangeFeed(connect, window=settings.supervisor_push_window_seconds)
    app[FEED] = feed
    app[READS] = SharedReads(app[DB])
    await feed.start()
    try:
        yield
    finally:
        await feed.close()


class SupervisorCasesQuery(SupervisorFilter, forbid_unknown_fields=True, frozen=True):
    """Open cases of the filter, the nearest deadline first (cases without one last)."""

    sla_state: Literal["none", "ok", "warning", "breached"] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100
    cursor: str | None = None


class SupervisorCasesPage(msgspec.Struct):
    items: list[SupervisorCase]
    next_cursor: str | None


class CasesChanged(msgspec.Struct):
    """A stream event: cases that changed; ``removed`` ones left the view (done or moved)."""

    at: dt.datetime
    items: list[SupervisorCase]


class AgentsChanged(msgspec.Struct):
    agents: list[AgentLoad]


class Escalated(msgspec.Struct):
    """A stream event: escalations of the filter's cases since the last one shown."""

    items: list[Escalation]


def _filter(query: SupervisorFilter) -> SupervisorFilter:
    return SupervisorFilter(
        channel=query.channel,
        category_id=query.category_id,
        group_code=query.group_code,
        case_type=query.case_type,
        priority=query.priority,
    )


_CURSOR = tuple[AwareTime | None, Id]


async def _scope(request: web.Request, query: SupervisorFilter) -> Scope:
    async with request.app[DB].acquire() as conn:
        return await supervisor.scope_of(conn, _filter(query))


@endpoints.get(
    "/api/v1/supervisor/view",
    permission="cases.supervise",
    query=SupervisorFilter,
    response=SupervisorSnapshot,
    errors=(400,),
)
async def get_view(request: web.Request, query: SupervisorFilter) -> SupervisorSnapshot:
    """Open cases by SLA state, channel, group and category; breached and at-risk cases;
    agents with their presence and load."""
    scope = await _scope(request, query)
    async with request.app[DB].acquire() as conn:
        return await supervisor.snapshot(conn, request.app[READS], scope, time.monotonic())


@endpoints.get(
    "/api/v1/supervisor/cases",
    permission="cases.supervise",
    query=SupervisorCasesQuery,
    response=SupervisorCasesPage,
    errors=(400,),
)
async def list_cases(request: web.Request, query: SupervisorCasesQuery) -> SupervisorCasesPage:
    """One page of open cases of the filter (and SLA state), the nearest deadline first."""
    scope = await _scope(request, query)
    after = cursors.decode(query.cursor, _CURSOR) if query.cursor else None
    async with request.app[DB].acquire() as conn:
        items = await supervisor.listed(conn, scope, query.sla_state, query.limit, after)
    return SupervisorCasesPage(
        items,
        cursors.encode(*supervisor.position(items[-1])) if len(items) == query.limit else None,
    )


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


@endpoints.get(
    "/api/v1/supervisor/stream",
    permission="cases.supervise",
    query=SupervisorFilter,
    response=SupervisorSnapshot,
    media_type="text/event-stream",
    errors=(400,),
)
async def stream(request: web.Request, query: SupervisorFilter) -> web.StreamResponse:
    """Server-Sent Events of the supervisor's view.

    First a ``snapshot`` event (the body of ``GET /api/v1/supervisor/view``); then, within
    about ``HERALD_SUPERVISOR_PUSH_WINDOW_SECONDS`` of a committed change: ``cases`` (the
    changed cases of the filter; ``removed: true`` for a case shown before that left it, e.g.
    resolved or moved to another group), ``escalations`` when an escalation rule asked to tell
    the supervisors, ``totals`` when the counts changed, ``agents`` when an agent's presence
    or load changed. ``snapshot`` is sent again after the server lost
    its change feed, and the screen should then replace everything. ``: ping`` comments
    keep the connection alive.
    """
    scope = await _scope(request, query)
    feed = request.app[FEED]
    async with feed.subscribe() as sub, event_stream(request, ping_interval=PING_SECONDS) as resp:
        view = _LiveView(resp, scope, request.app[DB], request.app[READS])
        aggregates = asyncio.create_task(view.keep_aggregates())
        try:
            await view.send_snapshot(time.monotonic())
            while resp.is_connected() and not viewer_gone(request) and not aggregates.done():
                changes = await sub.next(timeout=POLL_SECONDS)
                if changes is None:
                    continue
                fresh = time.monotonic()
                if changes.resync:
                    await view.send_snapshot(fresh)
                elif changes.case_ids:
                    await view.send_cases(changes.case_ids)
                    view.refresh(fresh, counts=True)
                elif changes.agents:
                    view.refresh(fresh, counts=False)
        finally:
            aggregates.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await aggregates
                except (ConnectionResetError, TimeoutError):
                    # The aggregates' own write to a viewer who left ends the stream too.
                    if not viewer_gone(request):
                        raise
    return resp


class _LiveView:
    """One supervisor's stream: changed cases are sent at once; the counts and the agents,
    which cost a grouped query over all open work, follow from a task of their own, so a
    slow count never holds up the next change."""

    def __init__(
        self, resp: EventSourceResponse, scope: Scope, pool: asyncpg.Pool, reads: SharedReads
    ) -> None:
        self.resp, self.scope, self.pool, self.reads = resp, scope, pool, reads
        self.shown: set[int] = set()
        self.last_totals: Totals | None = None
        self.last_agents: list[AgentLoad] | None = None
        self.last_escalation = 0
        self._send_lock = asyncio.Lock()
        self._due = asyncio.Event()
        self._fresh = 0.0
        self._counts = False

    async def _send(self, value: object, event: str) -> None:
        async with self._send_lock:
            await self.resp.send(_json(value), event=event)

    async def send_snapshot(self, fresh: float) -> None:
        async with self.pool.acquire() as conn:
            snap = await supervisor.snapshot(conn, self.reads, self.scope, fresh)
            self.last_escalation = await supervisor.last_escalation_id(conn)
        self.shown = {c.id for c in (*snap.breached, *snap.at_risk)}
        self.last_totals, self.last_agents = snap.totals, snap.agents
        await self._send(snap, "snapshot")

    async def send_cases(self, case_ids: set[int]) -> None:
        async with self.pool.acquire() as conn:
            changed = await supervisor.cases_by_ids(conn, case_ids)
            at = await db.now(conn)
            escalated = await supervisor.escalations_of(
                conn, self.scope, case_ids, self.last_escalation
            )
        items = []
        for case in changed:
            if self.scope.keeps(case):
                self.shown.add(case.id)
                items.append(case)
            elif case.id in self.shown:
                self.shown.discard(case.id)
                case.removed = True
                items.append(case)
        if items:
            await self._send(CasesChanged(at, items), "cases")
        if escalated:
            self.last_escalation = escalated[-1].id
            await self._send(Escalated(escalated), "escalations")

    def refresh(self, fresh: float, *, counts: bool) -> None:
        """Ask for counts (or only agents) read after ``fresh`` (monotonic time)."""
        self._fresh = max(self._fresh, fresh)
        self._counts = self._counts or counts
        self._due.set()

    async def keep_aggregates(self) -> None:
        while True:
            await self._due.wait()
            self._due.clear()
            fresh, counts, self._counts = self._fresh, self._counts, False
            if counts:
                rows = await self.reads.counts.get(fresh)
                async with self.pool.acquire() as conn:
                    at = await db.now(conn)
                new_totals = supervisor.totals(rows, self.scope, at)
                if self.last_totals is None or _counts_differ(new_totals, self.last_totals):
                    self.last_totals = new_totals
                    await self._send(new_totals, "totals")
            agents = supervisor.agents_in(await self.reads.agents.get(fresh), self.scope)
            if agents != self.last_agents:
                self.last_agents = agents
                await self._send(AgentsChanged(agents), "agents")


def _counts_differ(a: Totals, b: Totals) -> bool:
    return (a.all, a.by_channel, a.by_group, a.by_category) != (
        b.all,
        b.by_channel,
        b.by_group,
        b.by_category,
    )
