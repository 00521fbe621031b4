"""Reports (issue 16): operator's own, the supervisor's team and backlog, cases, messaging;
JSON, or CSV streamed off a server-side cursor (``format=csv`` or ``Accept: text/csv``).
Channel prices for the messaging cost. The SQL of each report is in crm.reports and
dispatcher.reports; it reads the rollups, never a scan of all cases or messages."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from admin_api.problems import problem_response
from admin_api.routing import EndpointTable
from admin_api.security import actor, principal
from admin_api.typedefs import DB
from crm.reports import team
from crm.reports.cases import CaseReportQuery, case_report, operator_query
from crm.reports.periods import ReportResult, Spec, fetch, stream
from crm.reports.team import TeamReportQuery
from dispatcher import reports as messaging
from dispatcher.reports import ChannelPrice, MessagingReportQuery
from herald import clock
from herald.errors import InvalidInput
from rules.consent import ConsentChannel

endpoints = EndpointTable("reports")


class BacklogQuery(msgspec.Struct, forbid_unknown_fields=True):
    group_code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    format: Literal["json", "csv"] = "json"


class PriceIn(msgspec.Struct, forbid_unknown_fields=True):
    price: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)]
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")] = "UAH"


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


async def answer(request: web.Request, spec: Spec, fmt: str) -> ReportResult | web.StreamResponse:
    wants_csv = fmt == "csv" or "text/csv" in request.headers.get("Accept", "")
    async with request.app[DB].acquire() as conn:
        if not wants_csv:
            now = clock.now()
            start = spec.period.start if spec.period else now
            end = spec.period.end if spec.period else now
            return ReportResult(spec.name, start, end, spec.columns, await fetch(conn, spec))
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="report-{spec.name}.csv"',
            }
        )
        await response.prepare(request)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(spec.columns)
        async for row in stream(conn, spec):
            writer.writerow([_cell(v) for v in row])
            if buffer.tell() > 64_000:
                await response.write(buffer.getvalue().encode())
                buffer.seek(0)
                buffer.truncate()
        await response.write(buffer.getvalue().encode())
        await response.write_eof()
        return response


@endpoints.get(
    "/api/v1/reports/cases",
    permission="reports.team",
    query=CaseReportQuery,
    response=ReportResult,
    errors=(400,),
)
async def cases_report(request: web.Request, query: CaseReportQuery) -> Any:
    """Cases for a period: counts, response, resolution and handling times, SLA met and
    breached, FCR; grouped by a dimension or by hour/day/week, filtered on each."""
    return await answer(request, case_report(query), query.format)


@endpoints.get(
    "/api/v1/reports/operator",
    permission="reports.own",
    query=CaseReportQuery,
    response=ReportResult,
    errors=(400, 403),
)
async def operator_report(request: web.Request, query: CaseReportQuery) -> Any:
    """The operator's own cases (totals, or grouped: by day, week...) for today, the
    week, the month or any period; another agent's needs reports.team."""
    me = principal(request)
    agent = query.agent_id or me.user_id
    if agent != me.user_id and "reports.team" not in me.permissions:
        return problem_response(
            request,
            403,
            code="permission-denied",
            detail="another agent's report needs 'reports.team'",
        )
    return await answer(
        request, case_report(operator_query(query, agent), name="operator"), query.format
    )


@endpoints.get(
    "/api/v1/reports/team",
    permission="reports.team",
    query=TeamReportQuery,
    response=ReportResult,
    errors=(400,),
)
async def team_report(request: web.Request, query: TeamReportQuery) -> Any:
    """Agents side by side: load now, presence time and their cases in the period."""
    return await answer(request, team.agents(query), query.format)


@endpoints.get(
    "/api/v1/reports/backlog",
    permission="reports.team",
    query=BacklogQuery,
    response=ReportResult,
    errors=(400,),
)
async def backlog_report(request: web.Request, query: BacklogQuery) -> Any:
    """The open cases now per group, by status and age, and how many are overdue."""
    return await answer(request, team.backlog(query.group_code), query.format)


@endpoints.get(
    "/api/v1/reports/messaging",
    permission="reports.team",
    query=MessagingReportQuery,
    response=ReportResult,
    errors=(400,),
)
async def messaging_report(request: web.Request, query: MessagingReportQuery) -> Any:
    """Per campaign and trigger rule the funnel per channel, fallback hops, cost and
    opt-outs; or messages per channel over time (group_by hour, day, week)."""
    return await answer(request, messaging.messaging_report(query), query.format)


@endpoints.get(
    "/api/v1/reports/channel-prices", permission="reports.team", response=list[ChannelPrice]
)
async def list_prices(request: web.Request) -> list[ChannelPrice]:
    """The price of one message per channel (the messaging reports' cost)."""
    async with request.app[DB].acquire() as conn:
        return await messaging.prices(conn)


@endpoints.put(
    "/api/v1/reports/channel-prices/{channel}",
    permission="reports.admin",
    body=PriceIn,
    response=ChannelPrice,
    errors=(400,),
)
async def set_price(request: web.Request, body: PriceIn) -> ChannelPrice:
    """Set the price of one message on a channel."""
    try:
        channel = msgspec.convert(request.match_info["channel"], ConsentChannel)
    except msgspec.ValidationError:
        raise InvalidInput("channel", "unknown channel") from None
    async with request.app[DB].acquire() as conn:
        return await messaging.set_price(
            conn,
            ChannelPrice(channel, body.price, body.currency),
            actor(request).login,
        )
