"""The supervisor's team report: agents side by side for a period (from the daily or
hourly case rollups), each with the load now and the time spent in each presence in the
period (from the presence log, a row per change), and the backlog now by age.

The backlog reads the open cases (New, In Progress, On Hold) through the partial index of
open cases: it is the size of the queue, not of the history.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

from crm.reports.cases import CaseReportQuery, case_report
from crm.reports.periods import PeriodName, Spec, resolve

Code = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]

AGENT_COLUMNS = [
    "agent_id",
    "login",
    "full_name",
    "presence",
    "capacity",
    "open_cases",
    "load_percent",
    "online_seconds",
    "busy_seconds",
    "away_seconds",
    "created",
    "resolved",
    "first_response_avg_seconds",
    "resolution_avg_seconds",
    "handling_avg_seconds",
    "resolution_met",
    "resolution_breached",
    "resolution_met_percent",
    "fcr",
    "fcr_percent",
]


class TeamReportQuery(msgspec.Struct, forbid_unknown_fields=True):
    period: PeriodName | None = None
    from_: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = msgspec.field(
        default=None, name="from"
    )
    to: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = None
    group_code: Code | None = None
    format: Literal["json", "csv"] = "json"


def agents(q: TeamReportQuery) -> Spec:
    """Every agent (of one group, when given) side by side."""
    p = resolve(q.period, q.from_, q.to)
    per_agent = case_report(
        CaseReportQuery(group_by="agent", group_code=None), name="team", period=p
    )
    spec = Spec("team", AGENT_COLUMNS, "", list(per_agent.args), period=p)
    start, end, group = spec.arg(p.start), spec.arg(p.end), spec.arg(q.group_code)
    spec.sql = f"""
        WITH stats AS ({per_agent.sql}),
        presence AS (
            SELECT l.user_id, l.presence,
                   sum(extract(epoch FROM least(coalesce(l.until, herald_now()), {end}::timestamptz)
                                        - greatest(l.at, {start}::timestamptz))) AS seconds
            FROM (SELECT user_id, presence, at,
                         lead(at) OVER (PARTITION BY user_id ORDER BY at, id) AS until
                  FROM case_agent_presence_log
                  WHERE at < {end}::timestamptz) l
            WHERE coalesce(l.until, herald_now()) > {start}::timestamptz
            GROUP BY 1, 2
        ),
        load AS (
            SELECT c.assignee_id AS user_id, count(*) AS open_cases
            FROM cases c
            WHERE c.status IN ('new', 'in_progress', 'on_hold') AND c.assignee_id IS NOT NULL
            GROUP BY 1
        )
        SELECT a.user_id AS agent_id, u.login, u.full_name, a.presence, a.capacity,
               coalesce(ld.open_cases, 0) AS open_cases,
               round(100.0 * coalesce(ld.open_cases, 0) / nullif(a.capacity, 0), 2)::float8
                   AS load_percent,
               round(coalesce((SELECT seconds FROM presence pr
                               WHERE pr.user_id = a.user_id AND pr.presence = 'online'), 0))::bigint
                   AS online_seconds,
               round(coalesce((SELECT seconds FROM presence pr
                               WHERE pr.user_id = a.user_id AND pr.presence = 'busy'), 0))::bigint
                   AS busy_seconds,
               round(coalesce((SELECT seconds FROM presence pr
                               WHERE pr.user_id = a.user_id AND pr.presence = 'away'), 0))::bigint
                   AS away_seconds,
               coalesce(s.created, 0) AS created, coalesce(s.resolved, 0) AS resolved,
               s.first_response_avg_seconds, s.resolution_avg_seconds, s.handling_avg_seconds,
               coalesce(s.resolution_met, 0) AS resolution_met,
               coalesce(s.resolution_breached, 0) AS resolution_breached,
               s.resolution_met_percent, coalesce(s.fcr, 0) AS fcr, s.fcr_percent
        FROM case_agents a
        JOIN users u ON u.id = a.user_id
        LEFT JOIN stats s ON s.key = a.user_id
        LEFT JOIN load ld ON ld.user_id = a.user_id
        WHERE {group}::text IS NULL OR EXISTS (
            SELECT 1 FROM case_group_members m WHERE m.user_id = a.user_id AND m.group_code = {group})
        ORDER BY u.full_name, u.id
    """
    return spec


BACKLOG_COLUMNS = [
    "group_code",
    "label",
    "open_cases",
    "new",
    "in_progress",
    "on_hold",
    "unassigned",
    "age_under_1h",
    "age_1h_4h",
    "age_4h_24h",
    "age_1d_3d",
    "age_over_3d",
    "oldest_seconds",
    "first_response_overdue",
    "resolution_overdue",
]


def backlog(group_code: str | None = None) -> Spec:
    """The open cases now per group, by status and by age (``now`` is Herald's clock)."""
    spec = Spec("backlog", BACKLOG_COLUMNS, "")
    group = spec.arg(group_code)
    spec.sql = f"""
        SELECT c.group_code, (SELECT g.name_uk FROM case_groups g WHERE g.code = c.group_code) AS label,
               count(*) AS open_cases,
               count(*) FILTER (WHERE c.status = 'new') AS new,
               count(*) FILTER (WHERE c.status = 'in_progress') AS in_progress,
               count(*) FILTER (WHERE c.status = 'on_hold') AS on_hold,
               count(*) FILTER (WHERE c.assignee_id IS NULL) AS unassigned,
               count(*) FILTER (WHERE herald_now() - c.created_at < interval '1 hour') AS age_under_1h,
               count(*) FILTER (WHERE herald_now() - c.created_at >= interval '1 hour'
                                  AND herald_now() - c.created_at < interval '4 hours') AS age_1h_4h,
               count(*) FILTER (WHERE herald_now() - c.created_at >= interval '4 hours'
                                  AND herald_now() - c.created_at < interval '1 day') AS age_4h_24h,
               count(*) FILTER (WHERE herald_now() - c.created_at >= interval '1 day'
                                  AND herald_now() - c.created_at < interval '3 days') AS age_1d_3d,
               count(*) FILTER (WHERE herald_now() - c.created_at >= interval '3 days') AS age_over_3d,
               round(extract(epoch FROM herald_now() - min(c.created_at)))::bigint AS oldest_seconds,
               count(*) FILTER (WHERE c.first_response_at IS NULL
                                  AND c.first_response_due_at < herald_now()) AS first_response_overdue,
               count(*) FILTER (WHERE c.resolution_due_at < herald_now()) AS resolution_overdue
        FROM cases c
        WHERE c.status IN ('new', 'in_progress', 'on_hold') AND c.merged_into_id IS NULL
          AND ({group}::text IS NULL OR c.group_code = {group})
        GROUP BY c.group_code
        ORDER BY count(*) DESC, c.group_code NULLS LAST
    """
    return spec
