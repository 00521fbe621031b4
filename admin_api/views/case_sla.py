"""Case SLA (issue 5 points 5 and 9): business calendars, SLA policies, escalation rules,
a case's deadlines changed by hand, escalations for supervisors, and case statistics."""

from __future__ import annotations

import csv
import io
from typing import Annotated

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor
from admin_api.typedefs import DB
from crm.cases import calendars, sla, sla_config, sla_evaluator, stats
from crm.cases.calendars import BusinessCalendar, BusinessCalendarSpec
from crm.cases.sla import DeadlineChange
from crm.cases.sla_config import EscalationRule, EscalationRuleSpec, SlaPolicy, SlaPolicySpec
from crm.cases.sla_evaluator import CaseEscalation
from crm.cases.sla_types import CaseSla
from crm.cases.stats import CaseStats, CaseStatsQuery
from herald.bounds import Id

endpoints = EndpointTable("case-sla")


class CaseEscalationsQuery(msgspec.Struct, forbid_unknown_fields=True):
    """``notify``: only the escalations that notify supervisors; ``before_id``: the page
    before that id (newest first)."""

    notify: bool | None = None
    case_id: Id | None = None
    before_id: Id | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100


# -- calendars -------------------------------------------------------------------------------


@endpoints.get(
    "/api/v1/business-calendars", permission="cases.read", response=list[BusinessCalendar]
)
async def list_calendars(request: web.Request) -> list[BusinessCalendar]:
    """Business calendars: weekly hours, holidays and shortened days, time zone."""
    async with request.app[DB].acquire() as conn:
        return await calendars.list_calendars(conn)


@endpoints.get(
    "/api/v1/business-calendars/{calendar_id}",
    permission="cases.read",
    response=BusinessCalendar,
    errors=(404,),
)
async def get_calendar(request: web.Request) -> BusinessCalendar:
    """One business calendar."""
    async with request.app[DB].acquire() as conn:
        return await calendars.get_calendar(conn, path_int(request, "calendar_id"))


@endpoints.post(
    "/api/v1/business-calendars",
    permission="cases.admin",
    body=BusinessCalendarSpec,
    response=BusinessCalendar,
    status=201,
    errors=(400, 409),
)
async def create_calendar(request: web.Request, body: BusinessCalendarSpec) -> BusinessCalendar:
    """Add a business calendar."""
    async with request.app[DB].acquire() as conn:
        return await calendars.create_calendar(conn, actor(request), body)


@endpoints.put(
    "/api/v1/business-calendars/{calendar_id}",
    permission="cases.admin",
    body=BusinessCalendarSpec,
    response=BusinessCalendar,
    errors=(400, 404, 409),
)
async def update_calendar(request: web.Request, body: BusinessCalendarSpec) -> BusinessCalendar:
    """Replace a calendar (deadlines already set on cases stay)."""
    async with request.app[DB].acquire() as conn:
        return await calendars.update_calendar(
            conn, actor(request), path_int(request, "calendar_id"), body
        )


@endpoints.delete(
    "/api/v1/business-calendars/{calendar_id}",
    permission="cases.admin",
    status=204,
    errors=(404, 409),
)
async def delete_calendar(request: web.Request) -> None:
    """Delete a calendar no SLA policy uses."""
    async with request.app[DB].acquire() as conn:
        await calendars.delete_calendar(conn, actor(request), path_int(request, "calendar_id"))


# -- policies and escalation rules ----------------------------------------------------------


@endpoints.get("/api/v1/case-sla-policies", permission="cases.read", response=list[SlaPolicy])
async def list_policies(request: web.Request) -> list[SlaPolicy]:
    """SLA policies; the most specific matching one applies to a case."""
    async with request.app[DB].acquire() as conn:
        return await sla_config.list_policies(conn)


@endpoints.post(
    "/api/v1/case-sla-policies",
    permission="cases.admin",
    body=SlaPolicySpec,
    response=SlaPolicy,
    status=201,
    errors=(400, 409),
)
async def create_policy(request: web.Request, body: SlaPolicySpec) -> SlaPolicy:
    """Add a policy: targets for a case type / priority / category, with a calendar."""
    async with request.app[DB].acquire() as conn:
        return await sla_config.create_policy(conn, actor(request), body)


@endpoints.put(
    "/api/v1/case-sla-policies/{policy_id}",
    permission="cases.admin",
    body=SlaPolicySpec,
    response=SlaPolicy,
    errors=(400, 404, 409),
)
async def update_policy(request: web.Request, body: SlaPolicySpec) -> SlaPolicy:
    """Replace a policy (applies from a case's next intake or reclassification)."""
    async with request.app[DB].acquire() as conn:
        return await sla_config.update_policy(
            conn, actor(request), path_int(request, "policy_id"), body
        )


@endpoints.delete(
    "/api/v1/case-sla-policies/{policy_id}", permission="cases.admin", status=204, errors=(404, 409)
)
async def delete_policy(request: web.Request) -> None:
    """Delete a policy no case uses (deactivate a used one)."""
    async with request.app[DB].acquire() as conn:
        await sla_config.delete_policy(conn, actor(request), path_int(request, "policy_id"))


@endpoints.get(
    "/api/v1/case-escalation-rules", permission="cases.read", response=list[EscalationRule]
)
async def list_rules(request: web.Request) -> list[EscalationRule]:
    """Escalation rules: on a warning or breach, notify, raise the priority, reassign."""
    async with request.app[DB].acquire() as conn:
        return await sla_config.list_rules(conn)


@endpoints.post(
    "/api/v1/case-escalation-rules",
    permission="cases.admin",
    body=EscalationRuleSpec,
    response=EscalationRule,
    status=201,
    errors=(400,),
)
async def create_rule(request: web.Request, body: EscalationRuleSpec) -> EscalationRule:
    """Add an escalation rule."""
    async with request.app[DB].acquire() as conn:
        return await sla_config.create_rule(conn, actor(request), body)


@endpoints.put(
    "/api/v1/case-escalation-rules/{rule_id}",
    permission="cases.admin",
    body=EscalationRuleSpec,
    response=EscalationRule,
    errors=(400, 404),
)
async def update_rule(request: web.Request, body: EscalationRuleSpec) -> EscalationRule:
    """Replace an escalation rule."""
    async with request.app[DB].acquire() as conn:
        return await sla_config.update_rule(
            conn, actor(request), path_int(request, "rule_id"), body
        )


@endpoints.delete(
    "/api/v1/case-escalation-rules/{rule_id}",
    permission="cases.admin",
    status=204,
    errors=(404, 409),
)
async def delete_rule(request: web.Request) -> None:
    """Delete a rule that never fired (deactivate one that did)."""
    async with request.app[DB].acquire() as conn:
        await sla_config.delete_rule(conn, actor(request), path_int(request, "rule_id"))


# -- a case's SLA ---------------------------------------------------------------------------


@endpoints.patch(
    "/api/v1/cases/{case_id}/sla",
    permission="cases.manage",
    body=DeadlineChange,
    response=CaseSla,
    errors=(400, 404, 409),
)
async def change_deadline(request: web.Request, body: DeadlineChange) -> CaseSla:
    """Set a target's due time by hand, with a reason (a ``deadline`` event)."""
    async with request.app[DB].acquire() as conn:
        return await sla.change_deadline(conn, actor(request), path_int(request, "case_id"), body)


@endpoints.get(
    "/api/v1/case-escalations",
    permission="cases.read",
    query=CaseEscalationsQuery,
    response=list[CaseEscalation],
    errors=(400,),
)
async def list_escalations(
    request: web.Request, query: CaseEscalationsQuery
) -> list[CaseEscalation]:
    """What escalation rules did, newest first (the supervisor's notifications)."""
    async with request.app[DB].acquire() as conn:
        return await sla_evaluator.escalations(
            conn,
            notify=query.notify,
            case_id=query.case_id,
            before_id=query.before_id,
            limit=query.limit,
        )


# -- statistics -----------------------------------------------------------------------------


def _cell(value: object) -> object:
    return "" if value is None else value


@endpoints.get(
    "/api/v1/case-stats",
    permission="cases.read",
    query=CaseStatsQuery,
    response=CaseStats,
    errors=(400,),
)
async def case_stats(request: web.Request, query: CaseStatsQuery) -> CaseStats | web.StreamResponse:
    """Counts, response and resolution times, SLA met/breached and FCR for a period,
    grouped; ``Accept: text/csv`` or ``format=csv`` streams the same rows as CSV."""
    wants_csv = query.format == "csv" or "text/csv" in request.headers.get("Accept", "")
    async with request.app[DB].acquire() as conn:
        if not wants_csv:
            return await stats.case_stats(conn, query)
        names = stats.groups_of(query)
        columns = stats.csv_columns(names)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": 'attachment; filename="case-stats.csv"',
            }
        )
        await response.prepare(request)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        async for row in stats.iter_rows(conn, query):
            writer.writerow([_cell(getattr(row, c)) for c in columns])
            if buffer.tell() > 64_000:
                await response.write(buffer.getvalue().encode())
                buffer.seek(0)
                buffer.truncate()
        await response.write(buffer.getvalue().encode())
        await response.write_eof()
        return response


@endpoints.get(
    "/api/v1/case-stats/agent-load",
    permission="cases.read",
    query=stats.AgentLoadStatsQuery,
    response=stats.AgentLoadStats,
    errors=(400,),
)
async def agent_load(
    request: web.Request, query: stats.AgentLoadStatsQuery
) -> stats.AgentLoadStats:
    """Agent load now (SR-12): each agent's open assigned cases by status against their
    capacity, and the total; ``group_code`` narrows to one group's members."""
    async with request.app[DB].acquire() as conn:
        return await stats.agent_load(conn, query)
