"""The supervisor's live view (SR-11): open cases with SLA state, breached and at-risk
cases, agent load and presence, filtered by channel, topic and group.

"Open" here is work not yet done: a case that is neither resolved nor closed. Counts
come from one grouped query over the open set (a covering partial index, migration
0024), shared by every subscriber of a process for one change window and filtered per
subscriber in Python, so fifty supervisors watching cost one query per window, not fifty.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, Generic, TypeVar

import asyncpg
import msgspec

from crm.cases import routing, sla
from crm.cases.routing import AgentLoad
from crm.cases.sla_types import CaseSla
from crm.cases.types import CaseType, Channel, Priority
from herald.bounds import Id

SlaState = str
LIST_LIMIT = 50
#: Where a page of the nearest-deadline order stops: the last case's next deadline and id.
Position = tuple[dt.datetime | None, int]

# The next deadline that matters: first response while none was given, else resolution.
NEXT_DUE_SQL = (
    "CASE WHEN first_response_at IS NULL "
    "THEN least(first_response_due_at, resolution_due_at) ELSE resolution_due_at END"
)
OPEN_SQL = "status NOT IN ('resolved', 'closed')"


class SupervisorFilter(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What a supervisor watches; all given must hold. ``category_id`` includes its subcategories."""

    channel: Channel | None = None
    category_id: Id | None = None
    group_code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    case_type: CaseType | None = None
    priority: Priority | None = None


class SupervisorCase(msgspec.Struct):
    """An open case as the live view shows it; ``removed`` when it left the view."""

    id: int
    number: str
    channel: str
    status: str
    priority: str
    case_type: str | None
    category_id: int | None
    group_code: str | None
    assignee_id: int | None
    client_id: int | None
    created_at: dt.datetime
    sla_state: str
    sla_paused: bool
    first_response_due_at: dt.datetime | None
    resolution_due_at: dt.datetime | None
    first_response_at: dt.datetime | None
    next_due_at: dt.datetime | None
    removed: bool = False
    # Business time left per target, from the case's calendar (crm.cases.sla).
    sla: CaseSla | None = None


class Breakdown(msgspec.Struct):
    """Open cases of one channel, group or category, by SLA state."""

    key: str | None
    open: int = 0
    unassigned: int = 0
    ok: int = 0
    warning: int = 0
    breached: int = 0
    no_sla: int = 0


class Totals(msgspec.Struct):
    at: dt.datetime
    all: Breakdown
    by_channel: list[Breakdown]
    by_group: list[Breakdown]
    by_category: list[Breakdown]


class Escalation(msgspec.Struct):
    """An escalation rule that asked to tell the supervisors (SR-09), with its case."""

    id: int
    case_id: int
    number: str
    rule_id: int
    rule_name: str
    target: str
    level: str
    at: dt.datetime
    actions: Any


class SupervisorSnapshot(msgspec.Struct):
    """Everything a supervisor's screen shows, at ``totals.at``."""

    filter: SupervisorFilter
    totals: Totals
    breached: list[SupervisorCase]
    at_risk: list[SupervisorCase]
    agents: list[AgentLoad]
    escalations: list[Escalation] = []


class CountRow(msgspec.Struct, frozen=True):
    channel: str
    group_code: str | None
    category_id: int | None
    case_type: str | None
    priority: str
    sla_state: str
    unassigned: bool
    n: int


CASE_COLUMNS = f"""
id, number, channel, status, priority, case_type, category_id, group_code, assignee_id,
client_id, created_at, sla_state, sla_paused_at IS NOT NULL AS sla_paused,
first_response_due_at, resolution_due_at, first_response_at, {NEXT_DUE_SQL} AS next_due_at
"""


async def with_sla(
    conn: asyncpg.Connection, rows: Iterable[asyncpg.Record]
) -> list[SupervisorCase]:
    """The rows as view cases, each with its SLA block (one query for all)."""
    cases = [SupervisorCase(**dict(r)) for r in rows]
    blocks = await sla.sla_for(conn, [c.id for c in cases])
    for case in cases:
        case.sla = blocks.get(case.id)
    return cases


async def category_scope(conn: asyncpg.Connection, category_id: int) -> frozenset[int]:
    """The category and all of its descendants."""
    rows = await conn.fetch(
        """
        WITH RECURSIVE tree AS (
            SELECT id FROM case_categories WHERE id = $1
            UNION SELECT c.id FROM case_categories c JOIN tree t ON c.parent_id = t.id)
        SELECT id FROM tree
        """,
        category_id,
    )
    return frozenset(r["id"] for r in rows)


class Scope(msgspec.Struct, frozen=True):
    """A filter with its category expanded to the whole subtree."""

    filter: SupervisorFilter
    categories: frozenset[int] | None

    def matches(
        self,
        channel: str,
        group_code: str | None,
        category_id: int | None,
        case_type: str | None,
        priority: str,
    ) -> bool:
        f = self.filter
        return (
            (f.channel is None or channel == f.channel)
            and (f.group_code is None or group_code == f.group_code)
            and (self.categories is None or category_id in self.categories)
            and (f.case_type is None or case_type == f.case_type)
            and (f.priority is None or priority == f.priority)
        )

    def keeps(self, case: SupervisorCase) -> bool:
        return case.status not in ("resolved", "closed") and self.matches(
            case.channel, case.group_code, case.category_id, case.case_type, case.priority
        )

    def where(self, args: list[object]) -> str:
        """SQL conditions of this scope over ``cases``, binding into ``args``."""
        parts = [OPEN_SQL]

        def bind(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        f = self.filter
        for column, value in (
            ("channel", f.channel),
            ("group_code", f.group_code),
            ("case_type", f.case_type),
            ("priority", f.priority),
        ):
            if value is not None:
                parts.append(f"{column} = {bind(value)}")
        if self.categories is not None:
            parts.append(f"category_id = ANY({bind(sorted(self.categories))}::bigint[])")
        return " AND ".join(parts)


async def scope_of(conn: asyncpg.Connection, f: SupervisorFilter) -> Scope:
    return Scope(f, await category_scope(conn, f.category_id) if f.category_id else None)


async def count_rows(conn: asyncpg.Connection) -> list[CountRow]:
    rows = await conn.fetch(
        f"""
        SELECT channel, group_code, category_id, case_type, priority, sla_state,
               assignee_id IS NULL AS unassigned, count(*) AS n
        FROM cases WHERE {OPEN_SQL}
        GROUP BY 1, 2, 3, 4, 5, 6, 7
        """
    )
    return [CountRow(**dict(r)) for r in rows]


def _add(b: Breakdown, row: CountRow) -> None:
    b.open += row.n
    if row.unassigned:
        b.unassigned += row.n
    if row.sla_state == "none":
        b.no_sla += row.n
    else:
        setattr(b, row.sla_state, getattr(b, row.sla_state) + row.n)


def totals(rows: Iterable[CountRow], scope: Scope, at: dt.datetime) -> Totals:
    """The counts of ``scope`` from the grouped rows of the whole open set."""
    everything = Breakdown(None)
    by: dict[str, dict[str | None, Breakdown]] = defaultdict(dict)
    for row in rows:
        if not scope.matches(
            row.channel, row.group_code, row.category_id, row.case_type, row.priority
        ):
            continue
        _add(everything, row)
        for name, key in (
            ("channel", row.channel),
            ("group", row.group_code),
            ("category", None if row.category_id is None else str(row.category_id)),
        ):
            _add(by[name].setdefault(key, Breakdown(key)), row)

    def ordered(name: str) -> list[Breakdown]:
        return sorted(by[name].values(), key=lambda b: (-b.breached, -b.open, b.key or ""))

    return Totals(at, everything, ordered("channel"), ordered("group"), ordered("category"))


async def cases_by_ids(conn: asyncpg.Connection, ids: Iterable[int]) -> list[SupervisorCase]:
    rows = await conn.fetch(
        f"SELECT {CASE_COLUMNS} FROM cases WHERE id = ANY($1::bigint[])", list(ids)
    )
    return await with_sla(conn, rows)


async def listed(
    conn: asyncpg.Connection,
    scope: Scope,
    sla_state: str | None,
    limit: int = LIST_LIMIT,
    after: Position | None = None,
) -> list[SupervisorCase]:
    """Open cases of ``scope`` (in ``sla_state`` if given), the nearest deadline first,
    cases without one last; ``after`` is the keyset position of the previous page's last case."""
    args: list[object] = []
    where = [scope.where(args)]
    if sla_state is not None:
        args.append(sla_state)
        where.append(f"sla_state = ${len(args)}")
    if after is not None:
        due, case_id = after
        args.append(case_id)
        after_id = f"id > ${len(args)}"
        if due is None:
            where.append(f"({NEXT_DUE_SQL}) IS NULL AND {after_id}")
        else:
            args.append(due)
            d = f"${len(args)}"
            where.append(
                f"(({NEXT_DUE_SQL}) > {d} OR (({NEXT_DUE_SQL}) = {d} AND {after_id}) "
                f"OR ({NEXT_DUE_SQL}) IS NULL)"
            )
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT {CASE_COLUMNS} FROM cases WHERE {' AND '.join(where)} "
        f"ORDER BY {NEXT_DUE_SQL} NULLS LAST, id LIMIT ${len(args)}",
        *args,
    )
    return await with_sla(conn, rows)


def position(case: SupervisorCase) -> Position:
    """The keyset position of ``case`` in the nearest-deadline order."""
    return case.next_due_at, case.id


async def last_escalation_id(conn: asyncpg.Connection) -> int:
    """The id of the newest escalation (0 for none): a stream shows only those after it."""
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM case_escalations"))


_ESCALATIONS = """
SELECT e.id, e.case_id, c.number, e.rule_id, r.name AS rule_name, e.target, e.level, e.at,
       e.actions, c.channel, c.group_code, c.category_id, c.case_type, c.priority
FROM case_escalations e JOIN cases c ON c.id = e.case_id
JOIN case_escalation_rules r ON r.id = e.rule_id
WHERE e.notify_supervisors
"""


def _escalations(rows: Iterable[asyncpg.Record], scope: Scope) -> list[Escalation]:
    return [
        Escalation(
            r["id"],
            r["case_id"],
            r["number"],
            r["rule_id"],
            r["rule_name"],
            r["target"],
            r["level"],
            r["at"],
            r["actions"],
        )
        for r in rows
        if scope.matches(
            r["channel"], r["group_code"], r["category_id"], r["case_type"], r["priority"]
        )
    ]


async def recent_escalations(
    conn: asyncpg.Connection, scope: Scope, limit: int = LIST_LIMIT
) -> list[Escalation]:
    """The latest escalations of the scope's cases, newest first."""
    rows = await conn.fetch(_ESCALATIONS + " ORDER BY e.at DESC, e.id DESC LIMIT $1", limit * 4)
    return _escalations(rows, scope)[:limit]


async def escalations_of(
    conn: asyncpg.Connection, scope: Scope, case_ids: Iterable[int], after_id: int
) -> list[Escalation]:
    """Escalations of the changed cases newer than ``after_id`` (the last one shown)."""
    rows = await conn.fetch(
        _ESCALATIONS + " AND e.case_id = ANY($1::bigint[]) AND e.id > $2 ORDER BY e.id",
        list(case_ids),
        after_id,
    )
    return _escalations(rows, scope)


def agents_in(agents: Iterable[AgentLoad], scope: Scope) -> list[AgentLoad]:
    group = scope.filter.group_code
    return [a for a in agents if group is None or group in a.groups]


T = TypeVar("T")


class Shared(Generic[T]):
    """A value computed at most once per caller's freshness bound, shared by all callers."""

    def __init__(self, compute: Callable[[], Awaitable[T]]) -> None:
        self._compute = compute
        self._lock = asyncio.Lock()
        self._value: T | None = None
        self._started = float("-inf")

    async def get(self, fresh_after: float) -> T:
        """A value whose computation started at or after ``fresh_after`` (monotonic time)."""
        if self._started >= fresh_after and self._value is not None:
            return self._value
        async with self._lock:
            if self._started < fresh_after or self._value is None:
                started = time.monotonic()
                self._value = await self._compute()
                self._started = started
            return self._value


class SharedReads:
    """The reads every subscriber of one process shares: grouped counts and agent loads."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.counts: Shared[list[CountRow]] = Shared(self._counts)
        self.agents: Shared[list[AgentLoad]] = Shared(self._agents)

    async def _counts(self) -> list[CountRow]:
        async with self.pool.acquire() as conn:
            return await count_rows(conn)

    async def _agents(self) -> list[AgentLoad]:
        async with self.pool.acquire() as conn:
            return await routing.agent_loads(conn)


async def snapshot(
    conn: asyncpg.Connection, reads: SharedReads, scope: Scope, fresh_after: float
) -> SupervisorSnapshot:
    at = await conn.fetchval("SELECT herald_now()")
    rows = await reads.counts.get(fresh_after)
    agents = await reads.agents.get(fresh_after)
    return SupervisorSnapshot(
        filter=scope.filter,
        totals=totals(rows, scope, at),
        breached=await listed(conn, scope, "breached"),
        at_risk=await listed(conn, scope, "warning"),
        agents=agents_in(agents, scope),
        escalations=await recent_escalations(conn, scope),
    )


async def open_case_ids_of(conn: asyncpg.Connection, user_id: int, limit: int = 500) -> list[int]:
    """The open cases assigned to an agent (their queue), oldest first."""
    rows = await conn.fetch(
        f"SELECT id FROM cases WHERE assignee_id = $1 AND {OPEN_SQL} ORDER BY created_at, id "
        "LIMIT $2",
        user_id,
        limit,
    )
    return [r["id"] for r in rows]


class DayCase(msgspec.Struct):
    """A case an agent worked on during the day: what they did to it."""

    id: int
    number: str
    status: str
    priority: str
    replies: int
    status_changes: int
    resolved: bool
    last_at: dt.datetime


class PresenceSpan(msgspec.Struct):
    presence: str
    start: dt.datetime
    end: dt.datetime
    seconds: int


class AgentDay(msgspec.Struct):
    """An agent's day: the cases they handled and their presence, span by span."""

    user_id: int
    since: dt.datetime
    until: dt.datetime
    cases: list[DayCase]
    presence: list[PresenceSpan]
    handled: int
    replies: int
    resolved: int
    seconds_by_presence: dict[str, int]


async def agent_day(
    conn: asyncpg.Connection, user_id: int, since: dt.datetime, until: dt.datetime
) -> AgentDay:
    """What the agent did in [since, until): case events they wrote (index of 0065) and
    their presence log; the presence before ``since`` opens the timeline."""
    rows = await conn.fetch(
        """
        SELECT c.id, c.number, c.status, c.priority,
               count(*) FILTER (WHERE e.kind = 'message' AND e.direction = 'out') AS replies,
               count(*) FILTER (WHERE e.kind = 'status') AS status_changes,
               bool_or(e.kind = 'status' AND e.to_status = 'resolved') AS resolved,
               max(e.at) AS last_at
        FROM case_events e JOIN cases c ON c.id = e.case_id
        WHERE e.actor_id = $1 AND e.at >= $2 AND e.at < $3
        GROUP BY c.id ORDER BY max(e.at) DESC LIMIT 500
        """,
        user_id,
        since,
        until,
    )
    cases = [DayCase(**dict(r)) for r in rows]
    opening = await conn.fetchval(
        "SELECT presence FROM case_agent_presence_log WHERE user_id = $1 AND at < $2 "
        "ORDER BY at DESC, id DESC LIMIT 1",
        user_id,
        since,
    )
    log = await conn.fetch(
        "SELECT presence, at FROM case_agent_presence_log WHERE user_id = $1 AND at >= $2 "
        "AND at < $3 ORDER BY at, id",
        user_id,
        since,
        until,
    )
    now = await conn.fetchval("SELECT herald_now()")
    end = min(until, max(now, since))
    points: list[tuple[str, dt.datetime]] = [(opening or "offline", since)]
    points += [(r["presence"], r["at"]) for r in log]
    spans: list[PresenceSpan] = []
    for i, (presence, start) in enumerate(points):
        stop = points[i + 1][1] if i + 1 < len(points) else end
        if stop > start:
            spans.append(PresenceSpan(presence, start, stop, int((stop - start).total_seconds())))
    by: dict[str, int] = defaultdict(int)
    for span in spans:
        by[span.presence] += span.seconds
    return AgentDay(
        user_id=user_id,
        since=since,
        until=until,
        cases=cases,
        presence=spans,
        handled=len(cases),
        replies=sum(c.replies for c in cases),
        resolved=sum(1 for c in cases if c.resolved),
        seconds_by_presence=dict(by),
    )
