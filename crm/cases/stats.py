"""Case statistics (issue 5 point 9), computed from the stored case columns.

The population is the cohort of cases **created** in [from, to) (merged-away cases left
out), grouped by any of agent (assignee), channel, case type, group and day of creation
(in ``time_zone``) and status (the cases' status now). For each group:

- ``created``: cases of the cohort; ``resolved``: of them, those with ``resolved_at`` set
  (Resolved now, or Closed after being resolved); ``closed``: of them, those Closed.
- Time to first response and to resolution are **wall-clock** seconds from creation to
  ``first_response_at`` / ``resolved_at`` (mean and median of the cases that have one);
  on-hold time is included. SLA compliance uses the business-time deadlines instead.
- SLA per target: ``met`` = done no later than its due time and no breach recorded;
  ``breached`` = a breach recorded by the evaluator (kept whatever deadline was planned
  since), or done after the due time, or still not done and overdue at the time of the
  query; ``met_percent`` = met / (met + breached). Cases without that target (no policy)
  are in neither.
- First-contact resolution: a case counts as FCR when it has been resolved, was never
  reopened (``reopen_count`` = 0: it never left Resolved for an open status) and no later
  case of the same client was flagged a repeat of it (``repeat_of_id``: the same client
  and category within the repeat window of the case settings). ``fcr_percent`` = FCR
  cases / resolved cases.

One scan of the cohort by ``cases_created_idx`` (plus ``cases_repeat_of_idx`` probes);
10 M cases over a year-long period stay well inside the 30 s the reports may take.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Annotated, Literal
from zoneinfo import available_timezones

import asyncpg
import msgspec

from crm.cases.types import CaseType, Channel
from herald import clock
from herald.bounds import Id
from herald.errors import InvalidInput
from herald.exports import ExportQuery

GROUPS = {
    "agent": "c.assignee_id",
    "channel": "c.channel",
    "case_type": "c.case_type",
    "group": "c.group_code",
    "status": "c.status",
    "day": "(c.created_at AT TIME ZONE {tz})::date",
}
_GROUP_FIELDS = {
    "agent": "agent_id",
    "channel": "channel",
    "case_type": "case_type",
    "group": "group_code",
    "status": "status",
    "day": "day",
}


class CaseStatsQuery(msgspec.Struct, forbid_unknown_fields=True):
    """``group_by``: comma-separated agent, channel, case_type, group, status (the
    status now), day."""

    from_: Annotated[dt.datetime, msgspec.Meta(tz=True)] = msgspec.field(name="from")
    to: Annotated[dt.datetime, msgspec.Meta(tz=True)] = msgspec.field()
    group_by: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    channel: Channel | None = None
    case_type: CaseType | None = None
    agent_id: Id | None = None
    # Of the "day" grouping; the business time zone (HERALD_BUSINESS_TZ) when not given.
    time_zone: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    format: Literal["json", "csv"] = "json"


class CaseStatsRow(msgspec.Struct):
    agent_id: int | None = None
    channel: str | None = None
    case_type: str | None = None
    group_code: str | None = None
    status: str | None = None
    day: dt.date | None = None
    created: int = 0
    resolved: int = 0
    closed: int = 0
    first_response_mean_seconds: float | None = None
    first_response_median_seconds: float | None = None
    resolution_mean_seconds: float | None = None
    resolution_median_seconds: float | None = None
    first_response_met: int = 0
    first_response_breached: int = 0
    first_response_met_percent: float | None = None
    resolution_met: int = 0
    resolution_breached: int = 0
    resolution_met_percent: float | None = None
    fcr: int = 0
    fcr_percent: float | None = None


class CaseStats(msgspec.Struct):
    period_from: dt.datetime
    period_to: dt.datetime
    group_by: list[str]
    time_basis: str
    rows: list[CaseStatsRow]


METRICS = [f for f in CaseStatsRow.__struct_fields__ if f not in _GROUP_FIELDS.values()]


def groups_of(q: CaseStatsQuery) -> list[str]:
    if q.from_ >= q.to:
        raise InvalidInput("from", "from must be before to")
    if q.time_zone is not None and q.time_zone not in available_timezones():
        raise InvalidInput("time_zone", f"{q.time_zone!r} is not an IANA time zone")
    names = [g.strip() for g in (q.group_by or "").split(",") if g.strip()]
    for name in names:
        if name not in GROUPS:
            raise InvalidInput("group_by", f"unknown grouping {name!r}; any of {', '.join(GROUPS)}")
    if len(set(names)) != len(names):
        raise InvalidInput("group_by", "a grouping is given twice")
    return names


def _sql(q: CaseStatsQuery, names: list[str]) -> tuple[str, list[object]]:
    args: list[object] = [q.from_, q.to, clock.now()]
    exprs = dict(GROUPS)
    if "day" in names:
        args.append(q.time_zone or clock.business_tz().key)
        exprs["day"] = GROUPS["day"].format(tz=f"${len(args)}::text")
    where = ["c.created_at >= $1", "c.created_at < $2", "c.merged_into_id IS NULL"]
    for column, value in (
        ("c.channel", q.channel),
        ("c.case_type", q.case_type),
        ("c.assignee_id", q.agent_id),
    ):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    selected = [f"{exprs[n]} AS {_GROUP_FIELDS[n]}" for n in names]
    keys = ", ".join(exprs[n] for n in names)
    group = f"GROUP BY {keys} ORDER BY {keys}" if names else ""
    fr = "extract(epoch FROM c.first_response_at - c.created_at)::float8"
    res = "extract(epoch FROM c.resolved_at - c.created_at)::float8"
    # A breach the evaluator recorded counts whatever the deadline became since (0036).
    fr_met = (
        "c.first_response_at <= c.first_response_due_at AND c.first_response_breached_at IS NULL"
    )
    fr_breached = (
        "(c.first_response_breached_at IS NOT NULL "
        "OR coalesce(c.first_response_at, $3) > c.first_response_due_at)"
    )
    res_met = "c.resolved_at <= c.resolution_due_at AND c.resolution_breached_at IS NULL"
    res_breached = (
        "(c.resolution_breached_at IS NOT NULL "
        "OR coalesce(c.resolved_at, $3) > c.resolution_due_at)"
    )
    fcr = (
        "c.resolved_at IS NOT NULL AND c.reopen_count = 0 AND NOT EXISTS "
        "(SELECT 1 FROM cases r WHERE r.repeat_of_id = c.id)"
    )
    sql = f"""
    SELECT {"".join(s + ", " for s in selected)}
           count(*) AS created,
           count(*) FILTER (WHERE c.resolved_at IS NOT NULL) AS resolved,
           count(*) FILTER (WHERE c.status = 'closed') AS closed,
           avg({fr}) AS first_response_mean_seconds,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY {fr}) AS first_response_median_seconds,
           avg({res}) AS resolution_mean_seconds,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY {res}) AS resolution_median_seconds,
           count(*) FILTER (WHERE {fr_met}) AS first_response_met,
           count(*) FILTER (WHERE {fr_breached}) AS first_response_breached,
           count(*) FILTER (WHERE {res_met}) AS resolution_met,
           count(*) FILTER (WHERE {res_breached}) AS resolution_breached,
           count(*) FILTER (WHERE {fcr}) AS fcr
    FROM cases c
    WHERE {" AND ".join(where)}
    {group}
    """
    return sql, args


def _percent(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


def _row(r: asyncpg.Record) -> CaseStatsRow:
    row = CaseStatsRow(**dict(r))
    row.first_response_met_percent = _percent(
        row.first_response_met, row.first_response_met + row.first_response_breached
    )
    row.resolution_met_percent = _percent(
        row.resolution_met, row.resolution_met + row.resolution_breached
    )
    row.fcr_percent = _percent(row.fcr, row.resolved)
    return row


async def iter_rows(conn: asyncpg.Connection, q: CaseStatsQuery) -> AsyncIterator[CaseStatsRow]:
    """The rows one at a time off a server-side cursor (for the streamed CSV)."""
    sql, args = _sql(q, groups_of(q))
    async with conn.transaction():
        async for r in conn.cursor(sql, *args, prefetch=500):
            yield _row(r)


async def case_stats(conn: asyncpg.Connection, q: CaseStatsQuery) -> CaseStats:
    names = groups_of(q)
    sql, args = _sql(q, names)
    rows = [_row(r) for r in await conn.fetch(sql, *args)]
    return CaseStats(q.from_, q.to, names, "wall", rows)


def csv_columns(names: list[str]) -> list[str]:
    return [_GROUP_FIELDS[n] for n in names] + METRICS


def export_query(q: CaseStatsQuery) -> ExportQuery:
    """The rows of ``case_stats`` (the CSV's columns), the percentages computed in SQL."""
    names = groups_of(q)
    sql, args = _sql(q, names)
    pct = "round((100.0 * {0} / nullif({1}, 0))::numeric, 2)::float8"
    computed = {
        "first_response_met_percent": pct.format(
            "first_response_met", "first_response_met + first_response_breached"
        ),
        "resolution_met_percent": pct.format(
            "resolution_met", "resolution_met + resolution_breached"
        ),
        "fcr_percent": pct.format("fcr", "resolved"),
    }
    columns = csv_columns(names)
    selected = ", ".join(f"{computed[c]} AS {c}" if c in computed else c for c in columns)
    return ExportQuery(
        f"SELECT {selected} FROM ({sql}) AS s", tuple(args), tuple(columns), title="case-stats"
    )


# -- agent load ------------------------------------------------------------------------------


class AgentLoadStatsQuery(msgspec.Struct, forbid_unknown_fields=True):
    group_code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None


class AgentLoadStatsRow(msgspec.Struct):
    """One agent now: open assigned cases (New, In Progress, On Hold) against capacity."""

    user_id: int
    login: str
    full_name: str
    presence: str
    capacity: int
    open_cases: int
    by_status: dict[str, int]
    # open_cases / capacity; None for a capacity of 0.
    load_percent: float | None
    groups: list[str]


class AgentLoadStats(msgspec.Struct):
    at: dt.datetime
    open_cases: int
    capacity: int
    load_percent: float | None
    rows: list[AgentLoadStatsRow]


_AGENT_LOAD = """
SELECT a.user_id, u.login, u.full_name, a.presence, a.capacity,
       count(c.id) FILTER (WHERE c.status = 'new') AS new,
       count(c.id) FILTER (WHERE c.status = 'in_progress') AS in_progress,
       count(c.id) FILTER (WHERE c.status = 'on_hold') AS on_hold,
       coalesce((SELECT array_agg(m.group_code ORDER BY m.group_code)
                 FROM case_group_members m WHERE m.user_id = a.user_id), '{}') AS groups
FROM case_agents a JOIN users u ON u.id = a.user_id
LEFT JOIN cases c ON c.assignee_id = a.user_id AND c.status IN ('new', 'in_progress', 'on_hold')
WHERE $1::text IS NULL OR EXISTS (SELECT 1 FROM case_group_members m
                                  WHERE m.user_id = a.user_id AND m.group_code = $1)
GROUP BY a.user_id, u.login, u.full_name, a.presence, a.capacity
ORDER BY u.login
"""


async def agent_load(conn: asyncpg.Connection, q: AgentLoadStatsQuery) -> AgentLoadStats:
    """Every agent's (or one group's agents') load now, and the total (SR-12)."""
    at = await conn.fetchval("SELECT herald_now()")
    rows: list[AgentLoadStatsRow] = []
    for r in await conn.fetch(_AGENT_LOAD, q.group_code):
        by_status = {"new": r["new"], "in_progress": r["in_progress"], "on_hold": r["on_hold"]}
        total = sum(by_status.values())
        rows.append(
            AgentLoadStatsRow(
                r["user_id"],
                r["login"],
                r["full_name"],
                r["presence"],
                r["capacity"],
                total,
                by_status,
                _percent(total, r["capacity"]),
                list(r["groups"]),
            )
        )
    open_cases = sum(r.open_cases for r in rows)
    capacity = sum(r.capacity for r in rows)
    return AgentLoadStats(at, open_cases, capacity, _percent(open_cases, capacity), rows)
