"""Hand-off tasks from the operator's chair: the tasks handed to me and to my groups, with
their deadlines and overdue marks, and "done" (SR-10). The page calls the same domain
functions as ``/api/v1/case-tasks`` (``crm.cases.tasks``)."""

from __future__ import annotations

from typing import Literal

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor, principal
from admin_api.typedefs import DB
from admin_api.ui import forms
from admin_api.ui.rendering import render
from crm.cases import groups, rule_engine, tasks
from crm.cases.tasks import CaseTaskQuery

endpoints = EndpointTable("ui")

TASK_STATUSES = ("open", "done", "cancelled")


class TaskFilters(msgspec.Struct, forbid_unknown_fields=True):
    """``scope``: mine (assigned to me, or to my groups with no one assigned) or all (a
    supervisor's view of every group); ``status``: open by default, ``any`` for all."""

    scope: Literal["mine", "all"] = "mine"
    status: Literal["open", "done", "cancelled", "any"] = "open"
    overdue: bool | None = None


class CloseForm(msgspec.Struct):
    result: str | None = None


def _is_supervisor(request: web.Request) -> bool:
    return "cases.route" in principal(request).permissions


async def _context(request: web.Request, filters: TaskFilters) -> dict[str, object]:
    scope = filters.scope if _is_supervisor(request) else "mine"
    query = CaseTaskQuery(
        mine=scope == "mine",
        overdue=filters.overdue,
        limit=500,
        status=None if filters.status == "any" else filters.status,
    )
    async with request.app[DB].acquire() as conn:
        found = await tasks.list_tasks(conn, actor(request), query)
        group_names = {g.code: g for g in await groups.list_groups(conn)}
    return {
        "tasks": found,
        "filters": filters,
        "scope": scope,
        "group_names": group_names,
        "statuses": TASK_STATUSES,
        "may_see_all": _is_supervisor(request),
        "overdue_count": sum(1 for t in found if t.overdue),
    }


@endpoints.get(
    "/ui/tasks", permission="cases.manage", response=str, media_type="text/html", errors=(400,)
)
async def tasks_page(request: web.Request) -> web.Response:
    """The hand-off tasks handed to me and to my groups, soonest deadline first."""
    return await render(
        request, "tasks.html", await _context(request, forms.query(request, TaskFilters))
    )


@endpoints.get(
    "/ui/tasks/rows", permission="cases.manage", response=str, media_type="text/html", errors=(400,)
)
async def task_rows(request: web.Request) -> web.Response:
    """The table of tasks for the filters."""
    return await render(
        request, "_task_rows.html", await _context(request, forms.query(request, TaskFilters))
    )


@endpoints.post(
    r"/ui/tasks/{task_id:\d+}/done",
    permission="cases.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def task_done(request: web.Request) -> web.Response:
    """Mark a task done with its result; the row shows it done."""
    form = await forms.form(request, CloseForm)
    async with request.app[DB].acquire() as conn:
        task = await rule_engine.changing(
            conn,
            tasks.close_task(
                conn,
                actor(request),
                path_int(request, "task_id"),
                "done",
                form.result,
                supervisor=_is_supervisor(request),
            ),
            lambda t: t.case_id,
        )
        group_names = {g.code: g for g in await groups.list_groups(conn)}
    return await render(request, "_task_row.html", {"t": task, "group_names": group_names})
