"""No-code dashboards (issue 16): a grid of widgets a user adds, removes, resizes and
reorders - number, time series, bar / top-N, table, funnel - each on a report with its
filters and period. Personal dashboards, and an administrator's copy assigned to a role
as its start page. Widgets on the team's live figures reload when the tab's one SSE stream
(admin_api/ui/live.py) says cases changed (the ``herald:cases`` event of herald.js).
"""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable, path_int
from admin_api.security import principal
from admin_api.typedefs import DB
from admin_api.ui import forms
from admin_api.ui.menu import N_, ROLE_NAMES
from admin_api.ui.rendering import render
from admin_api.ui.report_pages import (
    CASE_GROUPINGS,
    CASE_METRICS,
    CODE_LABELS,
    FUNNEL,
    MESSAGING_METRICS,
    METRICS,
    PERIODS,
    SECONDS,
    Filters,
    case_spec,
    chart,
    messaging_spec,
    team_spec,
)
from crm.reports import dashboards, team
from crm.reports.dashboards import Dashboard, Widget
from crm.reports.periods import Spec, fetch
from crm.users import Principal
from herald.errors import HeraldError, InvalidInput

endpoints = EndpointTable("ui")

KINDS = (
    ("number", N_("Number")),
    ("timeseries", N_("Time series")),
    ("bar", N_("Bars, top 10")),
    ("table", N_("Table")),
    ("funnel", N_("Funnel")),
)
REPORTS = (
    ("my", N_("My work")),
    ("cases", N_("Cases")),
    ("team", N_("Team")),
    ("backlog", N_("Backlog")),
    ("messaging", N_("Messaging")),
)
# Figures that change as cases move: their widgets reload on the tab's live events.
LIVE_REPORTS = {"team", "backlog", "cases", "my"}


class NewDashboard(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class NewWidget(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    report: str
    metric: Annotated[str, msgspec.Meta(max_length=64)] = "created"
    title: Annotated[str, msgspec.Meta(max_length=120)] = ""
    period: Annotated[str, msgspec.Meta(max_length=20)] = "month"
    group_by: Annotated[str, msgspec.Meta(max_length=20)] | None = None


class Change(msgspec.Struct, forbid_unknown_fields=True):
    action: str


class Assign(msgspec.Struct, forbid_unknown_fields=True):
    role_code: Annotated[str, msgspec.Meta(min_length=1, max_length=63)]


def _may_edit(who: Principal, board: Dashboard) -> bool:
    if board.owner_id is not None:
        return board.owner_id == who.user_id
    return "reports.admin" in who.permissions


def _may_see(who: Principal, board: Dashboard) -> bool:
    return board.owner_id == who.user_id or (
        board.role_code in who.roles or "reports.admin" in who.permissions
    )


async def _board(request: web.Request, conn: asyncpg.Connection, *, edit: bool) -> Dashboard:
    who = principal(request)
    board = await dashboards.get(conn, path_int(request, "dashboard_id"))
    if not _may_see(who, board) or (edit and not _may_edit(who, board)):
        raise web.HTTPForbidden()
    return board


def _spec(widget: Widget, who: Principal) -> Spec:
    f = msgspec.convert(widget.params, Filters, strict=False)
    if widget.report in ("team", "cases", "messaging", "backlog") and (
        "reports.team" not in who.permissions
    ):
        raise web.HTTPForbidden()
    if widget.report == "backlog":
        return team.backlog(f.group_code)
    if widget.report == "team":
        return team_spec(f)
    if widget.report == "messaging":
        group = {"number": "none", "funnel": "none", "timeseries": "day"}.get(widget.kind)
        return messaging_spec(msgspec.structs.replace(f, group_by=group or f.group_by or "source"))
    group = {
        "number": "none",
        "timeseries": f.group_by if f.group_by in ("hour", "week") else "day",
    }.get(widget.kind, f.group_by or "channel")
    top = 10 if widget.kind == "bar" else 20 if widget.kind == "table" else None
    f = msgspec.structs.replace(
        f, group_by=group, top=top if group not in ("hour", "day", "week") else None
    )
    return case_spec(f, agent_id=who.user_id if widget.report == "my" else None)


async def _widget_context(
    conn: asyncpg.Connection, widget: Widget, who: Principal
) -> dict[str, Any]:
    spec = _spec(widget, who)
    rows = await fetch(conn, spec)
    metric = widget.metric if widget.metric in METRICS else spec.columns[-1]
    ctx: dict[str, Any] = {"w": widget, "rows": rows, "columns": spec.columns, "metric": metric}
    if widget.kind == "number":
        total = rows[0] if rows else {}
        if widget.report in ("team", "backlog"):
            field = "open_cases" if widget.report == "backlog" else metric
            ctx["value"] = sum((r.get(field) or 0) for r in rows)
        else:
            ctx["value"] = total.get(metric)
    elif widget.kind == "funnel":
        total = rows[0] if rows else {}
        ctx["chart"] = chart(
            [{"key": m, "label": m, "value": total.get(m) or 0} for m in FUNNEL],
            ["value"],
            {},
            label_of=lambda r: r["key"],
        )
        ctx["funnel_labels"] = True
    elif widget.kind in ("timeseries", "bar"):
        key = "key" if "key" in spec.columns else spec.columns[0]
        ctx["chart"] = chart(
            rows,
            [metric],
            {},
            key=key,
            label_of=lambda r: str(
                r.get("label") or r.get("full_name") or r.get("name") or r.get(key) or "—"
            ),
        )
    return ctx


def _base(board: Dashboard, who: Principal) -> dict[str, Any]:
    return {
        "board": board,
        "editable": _may_edit(who, board),
        "kinds": KINDS,
        "reports": REPORTS,
        "periods": PERIODS,
        "groupings": CASE_GROUPINGS,
        "metric_names": METRICS,
        "case_metrics": CASE_METRICS,
        "messaging_metrics": MESSAGING_METRICS,
        "seconds_metrics": SECONDS,
        "live_reports": LIVE_REPORTS,
        "role_names": ROLE_NAMES,
        "roles": [r for r in ROLE_NAMES if r != "integration"],
        "error": None,
        "code_labels": CODE_LABELS,
    }


@endpoints.get("/ui/dashboards", permission="reports.own", response=str, media_type="text/html")
async def dashboards_page(request: web.Request) -> web.Response:
    """My dashboards and my role's start page; a form to make a new one."""
    who = principal(request)
    async with request.app[DB].acquire() as conn:
        boards = await dashboards.list_for(conn, who.user_id, who.roles)
    return await render(request, "dashboards.html", {"boards": boards, "role_names": ROLE_NAMES})


@endpoints.post(
    "/ui/dashboards", permission="reports.own", response=str, media_type="text/html", errors=(400,)
)
async def create_dashboard(request: web.Request) -> web.Response:
    """A new personal dashboard, started with three widgets of one's own work."""
    form = await forms.form(request, NewDashboard)
    who = principal(request)
    starter = [
        Widget(1, "number", "my", "resolved", {"period": "today"}, "", 1),
        Widget(2, "number", "my", "fcr_percent", {"period": "month"}, "", 1),
        Widget(3, "timeseries", "my", "resolved", {"period": "last_30_days"}, "", 2),
    ]
    async with request.app[DB].acquire() as conn:
        board = await dashboards.create(conn, who.user_id, form.name, starter)
    raise web.HTTPSeeOther(f"/ui/dashboards/{board.id}")


@endpoints.get(
    r"/ui/dashboards/{dashboard_id:\d+}",
    permission="reports.own",
    response=str,
    media_type="text/html",
    errors=(403, 404),
)
async def dashboard_page(request: web.Request) -> web.Response:
    """A dashboard: its widgets in a grid (each loads its report), and the editor."""
    async with request.app[DB].acquire() as conn:
        board = await _board(request, conn, edit=False)
    return await render(request, "dashboard.html", _base(board, principal(request)))


@endpoints.get(
    r"/ui/dashboards/{dashboard_id:\d+}/widgets/{widget_id:\d+}",
    permission="reports.own",
    response=str,
    media_type="text/html",
    errors=(400, 403, 404),
)
async def widget(request: web.Request) -> web.Response:
    """One widget's figures (a number, a chart, a table)."""
    who = principal(request)
    wanted = path_int(request, "widget_id")
    async with request.app[DB].acquire() as conn:
        board = await _board(request, conn, edit=False)
        found = next((w for w in board.widgets if w.id == wanted), None)
        if found is None:
            raise web.HTTPNotFound()
        ctx = _base(board, who)
        try:
            ctx.update(await _widget_context(conn, found, who))
        except (HeraldError, msgspec.ValidationError) as exc:
            ctx.update(w=found, error=exc)
    return await render(request, "_widget_body.html", ctx)


async def _grid(
    request: web.Request, board: Dashboard, *, status: int = 200, error: Any = None
) -> web.Response:
    ctx = _base(board, principal(request))
    ctx["error"] = error
    return await render(request, "_dashboard_grid.html", ctx, status=status)


@endpoints.post(
    r"/ui/dashboards/{dashboard_id:\d+}/widgets",
    permission="reports.own",
    response=str,
    media_type="text/html",
    errors=(400, 403, 404),
)
async def add_widget(request: web.Request) -> web.Response:
    """Add a widget at the end of the grid."""
    async with request.app[DB].acquire() as conn:
        board = await _board(request, conn, edit=True)
        try:
            form = await forms.form(request, NewWidget)
            params = {"period": form.period}
            if form.group_by:
                params["group_by"] = form.group_by
            new = msgspec.convert(
                {
                    "id": max((w.id for w in board.widgets), default=0) + 1,
                    "kind": form.kind,
                    "report": form.report,
                    "metric": form.metric,
                    "params": params,
                    "title": form.title,
                    "w": 1 if form.kind == "number" else 2,
                },
                Widget,
            )
            msgspec.convert(new.params, Filters, strict=False)
            if new.kind == "funnel" and new.report != "messaging":
                raise InvalidInput("kind", "a funnel shows a messaging report")
            board = await dashboards.save_widgets(conn, board.id, [*board.widgets, new])
        except msgspec.ValidationError as exc:
            field = "kind" if "kind" in str(exc) else "report" if "report" in str(exc) else "period"
            return await _grid(request, board, status=400, error=InvalidInput(field, str(exc)))
        except InvalidInput as exc:
            return await _grid(request, board, status=400, error=exc)
    return await _grid(request, board)


@endpoints.post(
    r"/ui/dashboards/{dashboard_id:\d+}/widgets/{widget_id:\d+}",
    permission="reports.own",
    response=str,
    media_type="text/html",
    errors=(400, 403, 404),
)
async def change_widget(request: web.Request) -> web.Response:
    """Remove, widen, narrow, or move a widget earlier or later in the grid."""
    form = await forms.form(request, Change)
    wanted = path_int(request, "widget_id")
    async with request.app[DB].acquire() as conn:
        board = await _board(request, conn, edit=True)
        widgets = list(board.widgets)
        index = next((i for i, w in enumerate(widgets) if w.id == wanted), None)
        if index is None:
            raise web.HTTPNotFound()
        w = widgets[index]
        if form.action == "remove":
            del widgets[index]
        elif form.action in ("wider", "narrower"):
            width = min(4, w.w + 1) if form.action == "wider" else max(1, w.w - 1)
            widgets[index] = msgspec.structs.replace(w, w=width)
        elif form.action in ("taller", "shorter"):
            widgets[index] = msgspec.structs.replace(w, h=2 if form.action == "taller" else 1)
        elif form.action in ("earlier", "later"):
            other = index - 1 if form.action == "earlier" else index + 1
            if 0 <= other < len(widgets):
                widgets[index], widgets[other] = widgets[other], widgets[index]
        else:
            raise InvalidInput("action", f"unknown action {form.action!r}")
        board = await dashboards.save_widgets(conn, board.id, widgets)
    return await _grid(request, board)


@endpoints.post(
    r"/ui/dashboards/{dashboard_id:\d+}/assign",
    permission="reports.admin",
    response=str,
    media_type="text/html",
    errors=(400, 403, 404),
)
async def assign(request: web.Request) -> web.Response:
    """Make a copy of this dashboard a role's start page."""
    form = await forms.form(request, Assign)
    async with request.app[DB].acquire() as conn:
        await _board(request, conn, edit=False)
        copy = await dashboards.assign_to_role(
            conn, path_int(request, "dashboard_id"), form.role_code
        )
    raise web.HTTPSeeOther(f"/ui/dashboards/{copy.id}")
