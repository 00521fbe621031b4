"""Case reports over the rollups (crm.reports.rollups): distribution by any dimension,
trends by hour/day/week, FCR and SLA, with a filter on each dimension, for any period.

Every function here builds a :class:`~crm.reports.periods.Spec`; nothing reads ``cases``
(the rollups hold at most one row per hour or day and combination of dimensions, so a
year is read from ~365 x combinations rows whatever the number of cases).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

from crm.cases.types import CaseType, Channel, Priority, Status
from crm.reports.periods import Period, PeriodName, Spec, resolve
from herald import clock
from herald.bounds import Id

GroupBy = Literal[
    "none",
    "channel",
    "status",
    "case_type",
    "topic",
    "topic_root",
    "priority",
    "group",
    "agent",
    "hour",
    "day",
    "week",
]
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]

# (SQL over rollup row r, output column) per grouping; times are filled in per table.
_DIMENSIONS = {
    "channel": "r.channel",
    "status": "r.status",
    "case_type": "r.case_type",
    "topic": "r.category_id",
    "topic_root": "tr.root_id",
    "priority": "r.priority",
    "group": "r.group_code",
    "agent": "r.agent_id",
}

METRICS = [
    "created",
    "resolved",
    "first_responses",
    "first_response_avg_seconds",
    "resolution_avg_seconds",
    "handling_avg_seconds",
    "first_response_met",
    "first_response_breached",
    "first_response_met_percent",
    "resolution_met",
    "resolution_breached",
    "resolution_met_percent",
    "fcr",
    "fcr_percent",
    "reopened",
]

_AGGREGATES = """
    sum(r.created)::bigint AS created,
    sum(r.resolved)::bigint AS resolved,
    sum(r.first_responses)::bigint AS first_responses,
    round((sum(r.first_response_seconds) / nullif(sum(r.first_responses), 0))::numeric, 1)::float8
        AS first_response_avg_seconds,
    round((sum(r.resolution_seconds) / nullif(sum(r.resolved), 0))::numeric, 1)::float8
        AS resolution_avg_seconds,
    round((sum(r.handling_seconds) / nullif(sum(r.resolved), 0))::numeric, 1)::float8
        AS handling_avg_seconds,
    sum(r.first_response_met)::bigint AS first_response_met,
    sum(r.first_response_breached)::bigint AS first_response_breached,
    round(100.0 * sum(r.first_response_met)
          / nullif(sum(r.first_response_met) + sum(r.first_response_breached), 0), 2)::float8
        AS first_response_met_percent,
    sum(r.resolution_met)::bigint AS resolution_met,
    sum(r.resolution_breached)::bigint AS resolution_breached,
    round(100.0 * sum(r.resolution_met)
          / nullif(sum(r.resolution_met) + sum(r.resolution_breached), 0), 2)::float8
        AS resolution_met_percent,
    sum(r.fcr)::bigint AS fcr,
    round(100.0 * sum(r.fcr) / nullif(sum(r.resolved), 0), 2)::float8 AS fcr_percent,
    sum(r.reopened)::bigint AS reopened
"""

_TOPIC_TREE = """
WITH RECURSIVE tr (id, root_id) AS (
    SELECT id, id FROM case_categories WHERE parent_id IS NULL
    UNION ALL
    SELECT c.id, tr.root_id FROM case_categories c JOIN tr ON c.parent_id = tr.id
)
"""


class CaseReportQuery(msgspec.Struct, forbid_unknown_fields=True):
    """A case report: the period, one grouping, a filter per dimension (``topic`` takes a
    category code and includes its subtopics), ``top`` for the N largest groups."""

    period: PeriodName | None = None
    from_: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = msgspec.field(
        default=None, name="from"
    )
    to: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = None
    group_by: GroupBy = "none"
    channel: Channel | None = None
    status: Status | None = None
    case_type: CaseType | None = None
    topic: Code | None = None
    priority: Priority | None = None
    group_code: Code | None = None
    agent_id: Id | None = None
    top: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    format: Literal["json", "csv"] = "json"


# The daily tables and the dimensions each has (migration 0070), narrowest first.
_DAILY = (
    ("report_case_daily_agent", {"agent"}),
    ("report_case_daily_topic", {"topic", "topic_root"}),
    ("report_case_daily_lite", {"channel", "status", "case_type", "priority", "group"}),
)


def _daily_table(q: CaseReportQuery) -> str:
    """The narrowest daily table with every dimension the report groups or filters by."""
    needed: set[str] = {str(q.group_by)} - {"none", "hour", "day", "week"}
    for name, value in (
        ("channel", q.channel),
        ("status", q.status),
        ("case_type", q.case_type),
        ("topic", q.topic),
        ("priority", q.priority),
        ("group", q.group_code),
        ("agent", q.agent_id),
    ):
        if value is not None:
            needed.add(name)
    for table, dimensions in _DAILY:
        if needed <= dimensions:
            return table
    return "report_case_daily"


def _time_key(group_by: str, table: str) -> str:
    tz = "herald_business_tz()"
    if table == "hourly":
        return {
            "hour": "r.hour",
            "day": f"(r.hour AT TIME ZONE {tz})::date",
            "week": f"date_trunc('week', r.hour AT TIME ZONE {tz})::date",
        }[group_by]
    return {"day": "r.day", "week": "date_trunc('week', r.day)::date"}[group_by]


def case_report(q: CaseReportQuery, *, name: str = "cases", period: Period | None = None) -> Spec:
    """The spec of a case report (rows ordered by the grouping, or largest first with top)."""
    p = period or resolve(q.period, q.from_, q.to)
    spec = Spec(name, [], "", period=p)
    hourly = q.group_by == "hour" or not p.whole_days
    if hourly:
        where = [f"r.hour >= {spec.arg(p.start)}", f"r.hour < {spec.arg(p.end)}"]
        table = "report_case_hourly"
    else:
        where = [f"r.day >= {spec.arg(p.first_day)}", f"r.day < {spec.arg(p.end_day)}"]
        table = _daily_table(q)
    for column, value in (
        ("r.channel", q.channel),
        ("r.status", q.status),
        ("r.case_type", q.case_type),
        ("r.priority", q.priority),
        ("r.group_code", q.group_code),
        ("r.agent_id", q.agent_id),
    ):
        if value is not None:
            where.append(f"{column} = {spec.arg(value)}")
    if q.topic is not None:
        where.append(
            f"""r.category_id IN (WITH RECURSIVE sub (id) AS (
                SELECT id FROM case_categories WHERE code = {spec.arg(q.topic)}
                UNION ALL SELECT c.id FROM case_categories c JOIN sub ON c.parent_id = sub.id)
              SELECT id FROM sub)"""
        )
    join = "LEFT JOIN tr ON tr.id = r.category_id" if q.group_by == "topic_root" else ""
    prefix = _TOPIC_TREE if q.group_by == "topic_root" else ""
    if q.group_by == "none":
        key_sql, key_cols = "", []
    elif q.group_by in ("hour", "day", "week"):
        key_sql, key_cols = (
            f"{_time_key(q.group_by, 'hourly' if hourly else 'daily')} AS key, ",
            ["key"],
        )
    else:
        key_sql, key_cols = f"{_DIMENSIONS[q.group_by]} AS key, ", ["key"]
    grouped = f"""
        {prefix}
        SELECT {key_sql}{_AGGREGATES}
        FROM {table} r {join}
        WHERE {" AND ".join(where)}
        {"GROUP BY 1" if key_cols else ""}
    """
    label = _label_sql(q.group_by)
    order = "g.created DESC, g.key" if q.top else ("g.key" if key_cols else "1")
    limit = f"LIMIT {int(q.top)}" if q.top else ""
    if key_cols:
        spec.sql = f"""
            SELECT g.key, {label} AS label, {", ".join("g." + m for m in METRICS)}
            FROM ({grouped}) g
            ORDER BY {order} NULLS LAST {limit}
        """
        spec.columns = ["key", "label", *METRICS]
    else:
        spec.sql = grouped
        spec.columns = list(METRICS)
    return spec


def _label_sql(group_by: str) -> str:
    if group_by == "agent":
        return "(SELECT u.full_name FROM users u WHERE u.id = g.key)"
    if group_by in ("topic", "topic_root"):
        return "(SELECT c.name_uk FROM case_categories c WHERE c.id = g.key)"
    if group_by == "group":
        return "(SELECT g2.name_uk FROM case_groups g2 WHERE g2.code = g.key)"
    return "NULL::text"


def operator_query(q: CaseReportQuery, agent_id: int) -> CaseReportQuery:
    """The operator's own report: the same rollups narrowed to one agent."""
    return msgspec.structs.replace(q, agent_id=agent_id)


def today() -> dt.date:
    return clock.now().astimezone(clock.business_tz()).date()
