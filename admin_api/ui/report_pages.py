"""Report pages (issue 16): my work, the team, cases, messaging; each with period and filter
pickers, a uPlot chart and the table, and a CSV download of the same rows. The pages call
the report builders of crm.reports and dispatcher.reports, which read the rollups.

``Filters`` is the one filter language of the pages and of the dashboards' widgets: a
period (named, or ``from``/``to`` dates, both included) and a filter per dimension.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal, cast

import asyncpg
import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable
from admin_api.security import principal
from admin_api.typedefs import DB
from admin_api.ui import forms
from admin_api.ui.labels import LABELS
from admin_api.ui.menu import N_
from admin_api.ui.rendering import render
from admin_api.views.reports import answer
from crm.cases import categories, groups
from crm.cases.stats import AgentLoadStatsQuery, agent_load
from crm.cases.types import CaseType, Channel, Priority, Status
from crm.reports import team
from crm.reports.cases import CaseReportQuery, GroupBy, case_report, operator_query
from crm.reports.periods import PeriodName, Spec, fetch
from crm.reports.team import TeamReportQuery
from dispatcher import reports as messaging
from dispatcher.reports import GroupBy as MessagingGroupBy
from dispatcher.reports import MessagingReportQuery
from herald import clock
from herald.bounds import Id
from herald.errors import HeraldError, InvalidInput
from rules.consent import ConsentChannel

endpoints = EndpointTable("ui")

Code = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
PERIODS: tuple[tuple[str, str], ...] = (
    ("today", N_("Today")),
    ("yesterday", N_("Yesterday")),
    ("week", N_("This week")),
    ("month", N_("This month")),
    ("last_7_days", N_("Last 7 days")),
    ("last_30_days", N_("Last 30 days")),
    ("year", N_("Last 365 days")),
    ("custom", N_("Dates…")),
)
CASE_GROUPINGS: tuple[tuple[str, str], ...] = (
    ("none", N_("Total")),
    ("day", N_("By day")),
    ("week", N_("By week")),
    ("hour", N_("By hour")),
    ("channel", N_("By channel")),
    ("status", N_("By status")),
    ("case_type", N_("By type")),
    ("topic_root", N_("By topic")),
    ("topic", N_("By subtopic")),
    ("priority", N_("By priority")),
    ("group", N_("By group")),
    ("agent", N_("By agent")),
)
MESSAGING_GROUPINGS: tuple[tuple[str, str], ...] = (
    ("source", N_("By campaign and rule")),
    ("source_channel", N_("By campaign, rule and channel")),
    ("channel", N_("By channel")),
    ("day", N_("By day")),
    ("week", N_("By week")),
    ("hour", N_("By hour")),
    ("none", N_("Total")),
)
METRICS: dict[str, str] = {
    "created": N_("Created"),
    "resolved": N_("Resolved"),
    "first_response_avg_seconds": N_("Average first response"),
    "resolution_avg_seconds": N_("Average resolution time"),
    "handling_avg_seconds": N_("Average handling time"),
    "first_response_met_percent": N_("First response in time, %%"),
    "resolution_met_percent": N_("Resolved in time, %%"),
    "resolution_breached": N_("Resolution SLA breached"),
    "fcr_percent": N_("First-contact resolution, %%"),
    "reopened": N_("Reopened"),
    # messaging
    "audience": N_("Audience"),
    "sent": N_("Sent"),
    "delivered": N_("Delivered"),
    "read": N_("Read"),
    "converted": N_("Converted"),
    "failed": N_("Failed"),
    "held": N_("Held"),
    "fallback_hops": N_("Fallback hops"),
    "opt_outs": N_("Opt-outs"),
    "cost": N_("Cost"),
    # team
    "open_cases": N_("Open cases"),
}
CASE_METRICS = tuple(k for k in METRICS if k not in ("audience", "sent", "open_cases"))[:10]
MESSAGING_METRICS = (
    "sent",
    "delivered",
    "read",
    "converted",
    "failed",
    "held",
    "fallback_hops",
    "opt_outs",
    "cost",
    "audience",
)
FUNNEL = ("audience", "sent", "delivered", "read", "converted")
# Codes a chart's categories may be (channels, statuses...): the page names them.
CODE_LABELS = tuple(LABELS)
SECONDS = {"first_response_avg_seconds", "resolution_avg_seconds", "handling_avg_seconds"}


class Filters(msgspec.Struct, forbid_unknown_fields=True):
    """The pickers of a report page (and the parameters of a dashboard widget)."""

    period: PeriodName = "month"
    from_: dt.date | None = msgspec.field(default=None, name="from")
    to: dt.date | None = None
    group_by: str | None = None
    metric: str | None = None
    channel: Channel | None = None
    status: Status | None = None
    case_type: CaseType | None = None
    topic: Code | None = None
    priority: Priority | None = None
    group_code: Code | None = None
    agent_id: Id | None = None
    source: Literal["campaign", "trigger", "operator"] | None = None
    source_id: Id | None = None
    message_channel: ConsentChannel | None = None
    top: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None


def _bounds(f: Filters) -> tuple[PeriodName | None, dt.datetime | None, dt.datetime | None]:
    if f.period != "custom":
        return f.period, None, None
    if f.from_ is None:
        raise InvalidInput("from", "choose the first day of the period")
    if f.to is None:
        raise InvalidInput("to", "choose the last day of the period")
    if f.to < f.from_:
        raise InvalidInput("to", "the last day is before the first")
    tz = clock.business_tz()
    start = dt.datetime.combine(f.from_, dt.time(), tz)
    end = dt.datetime.combine(f.to + dt.timedelta(days=1), dt.time(), tz)
    return "custom", start, end


def _choice(
    value: str | None, allowed: tuple[tuple[str, str], ...], default: str, field: str
) -> str:
    if value is None:
        return default
    if value not in {k for k, _ in allowed}:
        raise InvalidInput(field, f"unknown choice {value!r}")
    return value


def case_spec(f: Filters, *, agent_id: int | None = None, default_group: str = "day") -> Spec:
    period, start, end = _bounds(f)
    group_by = cast(GroupBy, _choice(f.group_by, CASE_GROUPINGS, default_group, "group_by"))
    q = CaseReportQuery(
        period=period,
        from_=start,
        to=end,
        group_by=group_by,
        channel=f.channel,
        status=f.status,
        case_type=f.case_type,
        topic=f.topic,
        priority=f.priority,
        group_code=f.group_code,
        agent_id=f.agent_id,
        top=f.top,
    )
    if agent_id is not None:
        return case_report(operator_query(q, agent_id), name="operator")
    return case_report(q)


def messaging_spec(f: Filters, default_group: str = "source") -> Spec:
    period, start, end = _bounds(f)
    group_by = cast(
        MessagingGroupBy, _choice(f.group_by, MESSAGING_GROUPINGS, default_group, "group_by")
    )
    return messaging.messaging_report(
        MessagingReportQuery(
            period=period,
            from_=start,
            to=end,
            group_by=group_by,
            source=f.source,
            source_id=f.source_id,
            channel=f.message_channel,
            top=f.top,
        )
    )


def team_spec(f: Filters) -> Spec:
    period, start, end = _bounds(f)
    return team.agents(TeamReportQuery(period=period, from_=start, to=end, group_code=f.group_code))


def chart(
    rows: list[dict[str, Any]],
    metrics: list[str],
    names: dict[str, str],
    *,
    key: str = "key",
    label_of: Any = None,
) -> str:
    """The JSON a [data-chart] element draws: a line over time, or bars per category."""
    keys = [r.get(key) for r in rows]
    timed = bool(keys) and all(isinstance(k, dt.date | dt.datetime) for k in keys)
    x: list[float] | None = None
    if timed:
        x = [_instant(k).timestamp() for k in keys]
    labels = [label_of(r) if label_of else str(r.get(key)) for r in rows]
    series = [
        {"name": names.get(m, m), "values": [_number(r.get(m), m) for r in rows]} for m in metrics
    ]
    return json.dumps(
        {"kind": "line" if timed else "bar", "x": x, "labels": labels, "series": series}
    )


def _instant(k: Any) -> dt.datetime:
    if isinstance(k, dt.datetime):
        return k
    return dt.datetime.combine(k, dt.time(), clock.business_tz())


def _number(value: Any, metric: str) -> float | None:
    if value is None:
        return None
    return round(float(value) / 60, 1) if metric in SECONDS else float(value)


async def _choices(conn: asyncpg.Connection) -> dict[str, Any]:
    agents = await agent_load(conn, AgentLoadStatsQuery())
    return {
        "groups": await groups.list_groups(conn),
        "topics": await categories.list_categories(conn, include_inactive=False),
        "agents": [(a.user_id, a.full_name) for a in agents.rows],
    }


def _base(request: web.Request, f: Filters, tab: str) -> dict[str, Any]:
    query = {k: v for k, v in request.query.items() if v.strip() and k != "format"}
    return {
        "tab": tab,
        "f": f,
        "periods": PERIODS,
        "metric_names": METRICS,
        "seconds_metrics": SECONDS,
        "csv_query": "&".join(f"{k}={v}" for k, v in query.items()),
        "channels": ("call", "viber", "telegram", "site", "cabinet", "email", "app", "walk_in"),
        "message_channels": ("sms", "viber", "email", "push", "telegram"),
        "statuses": ("new", "in_progress", "on_hold", "resolved", "closed"),
        "types": ("technical", "financial", "informational"),
        "priorities": ("low", "normal", "high", "urgent"),
        "error": None,
        "error_field": None,
        "code_labels": CODE_LABELS,
    }


def _filters(request: web.Request) -> tuple[Filters, HeraldError | None]:
    try:
        return forms.query(request, Filters), None
    except InvalidInput as exc:
        return Filters(), exc


async def _page(request: web.Request, tab: str, build: Any) -> web.Response:
    f, error = _filters(request)
    ctx = _base(request, f, tab)
    async with request.app[DB].acquire() as conn:
        ctx.update(await _choices(conn))
        if error is None:
            try:
                ctx.update(await build(conn, f))
            except InvalidInput as exc:
                error = exc
        if error is not None:
            ctx.update(error=error, error_field=getattr(error, "field", None), rows=[], columns=[])
    return await render(request, "reports.html", ctx, status=400 if error else 200)


@endpoints.get(
    "/ui/reports/my", permission="reports.own", response=str, media_type="text/html", errors=(400,)
)
async def my_report(request: web.Request) -> web.Response:
    """My cases: handled, times, SLA and FCR for the period, by day."""
    me = principal(request).user_id

    async def build(conn: asyncpg.Connection, f: Filters) -> dict[str, Any]:
        totals = await fetch(
            conn, case_spec(msgspec.structs.replace(f, group_by="none", agent_id=None), agent_id=me)
        )
        spec = case_spec(
            msgspec.structs.replace(f, group_by=f.group_by or "day", agent_id=None), agent_id=me
        )
        rows = await fetch(conn, spec)
        metric = f.metric if f.metric in CASE_METRICS else "resolved"
        return {
            "totals": totals[0] if totals else {},
            "rows": rows,
            "columns": spec.columns,
            "groupings": CASE_GROUPINGS,
            "metrics": CASE_METRICS,
            "metric": metric,
            "chart": chart(rows, ["created", "resolved"], {}, label_of=_label_of),
            "csv_report": "operator",
        }

    return await _page(request, "my", build)


def _label_of(row: dict[str, Any]) -> str:
    label = row.get("label")
    return str(
        label if label is not None else row.get("key") if row.get("key") is not None else "—"
    )


@endpoints.get(
    "/ui/reports/cases",
    permission="reports.team",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def cases_report(request: web.Request) -> web.Response:
    """Cases: distribution by any dimension or trend over time, filtered on each."""

    async def build(conn: asyncpg.Connection, f: Filters) -> dict[str, Any]:
        spec = case_spec(f)
        rows = await fetch(conn, spec)
        metric = f.metric if f.metric in CASE_METRICS else "created"
        return {
            "rows": rows,
            "columns": spec.columns,
            "groupings": CASE_GROUPINGS,
            "metrics": CASE_METRICS,
            "metric": metric,
            "chart": chart(rows, [metric], {}, label_of=_label_of)
            if spec.columns[0] == "key"
            else None,
            "csv_report": "cases",
        }

    return await _page(request, "cases", build)


@endpoints.get(
    "/ui/reports/team",
    permission="reports.team",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def team_report(request: web.Request) -> web.Response:
    """The team: agents side by side, backlog and its age, top topics, SLA by group."""

    async def build(conn: asyncpg.Connection, f: Filters) -> dict[str, Any]:
        agents = await fetch(conn, team_spec(f))
        topics = await fetch(
            conn, case_spec(msgspec.structs.replace(f, group_by="topic", top=10, group_code=None))
        )
        by_group = await fetch(
            conn, case_spec(msgspec.structs.replace(f, group_by="group", group_code=None))
        )
        return {
            "agents": agents,
            "backlog": await fetch(conn, team.backlog(f.group_code)),
            "topics": topics,
            "by_group": by_group,
            "rows": agents,
            "columns": team.AGENT_COLUMNS,
            "topics_chart": chart(topics, ["created"], {}, label_of=_label_of),
            "agents_chart": chart(
                sorted(agents, key=lambda r: -(r["resolved"] or 0))[:15],
                ["resolved", "open_cases"],
                {},
                key="agent_id",
                label_of=lambda r: r["full_name"],
            ),
            "csv_report": "team",
        }

    return await _page(request, "team", build)


@endpoints.get(
    "/ui/reports/messaging",
    permission="reports.team",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def messaging_report(request: web.Request) -> web.Response:
    """Messaging: the funnel per campaign and trigger rule and channel, fallback hops,
    cost and opt-outs; messages per channel over time."""

    async def build(conn: asyncpg.Connection, f: Filters) -> dict[str, Any]:
        spec = messaging_spec(f)
        rows = await fetch(conn, spec)
        over_time = await fetch(
            conn,
            messaging_spec(
                msgspec.structs.replace(f, group_by="day" if f.period != "today" else "hour")
            ),
        )
        metric = f.metric if f.metric in MESSAGING_METRICS else "sent"
        return {
            "rows": rows,
            "columns": spec.columns,
            "groupings": MESSAGING_GROUPINGS,
            "metrics": MESSAGING_METRICS,
            "metric": metric,
            "chart": chart(over_time, ["sent", "delivered", "read", "failed"], {}),
            "prices": await messaging.prices(conn),
            "csv_report": "messaging",
        }

    return await _page(request, "messaging", build)


@endpoints.get(
    "/ui/reports", permission="reports.own", response=str, media_type="text/html", errors=(400,)
)
async def reports_home(request: web.Request) -> web.Response:
    """The reports: the cases report for those who may see the team's, one's own otherwise."""
    has_team = "reports.team" in principal(request).permissions
    response: web.Response = await (cases_report if has_team else my_report)(request)
    return response


class PriceForm(msgspec.Struct, forbid_unknown_fields=True):
    channel: ConsentChannel
    price: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)]


@endpoints.post(
    "/ui/reports/prices",
    permission="reports.admin",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def set_price(request: web.Request) -> web.Response:
    """Set the price of one message on a channel; the prices table again."""
    form = await forms.form(request, PriceForm)
    async with request.app[DB].acquire() as conn:
        await messaging.set_price(
            conn, messaging.ChannelPrice(form.channel, form.price), principal(request).login
        )
        prices = await messaging.prices(conn)
    return await render(
        request,
        "_prices.html",
        {"prices": prices, "message_channels": ("sms", "viber", "email", "push", "telegram")},
    )


@endpoints.get(
    r"/ui/reports/{code:(cases|operator|team|messaging)}.csv",
    permission="reports.own",
    response=str,
    media_type="text/csv",
    errors=(400, 403),
)
async def report_csv(request: web.Request) -> web.StreamResponse:
    """The rows of a report page as CSV (the same filters), streamed."""
    name = request.match_info["code"]
    who = principal(request)
    if name != "operator" and "reports.team" not in who.permissions:
        raise web.HTTPForbidden()
    f = forms.query(request, Filters)
    spec = {
        "cases": lambda: case_spec(f),
        "operator": lambda: case_spec(
            msgspec.structs.replace(f, agent_id=None), agent_id=who.user_id
        ),
        "team": lambda: team_spec(f),
        "messaging": lambda: messaging_spec(f),
    }[name]()
    result = await answer(request, spec, "csv")
    assert isinstance(result, web.StreamResponse)
    return result
