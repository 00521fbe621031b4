"""My exports (SR-13): the exports a person asked for, their progress and their files; and
the form behind the Export buttons of the lists (the case list first).

A list's Export button posts its current filters here: a small export comes back as the
file at once, a large one becomes a background job and the browser lands on this page,
which refreshes itself every two seconds while a job of the person is still running.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from admin_api import inputs
from admin_api.routing import AUTHENTICATED, EndpointTable
from admin_api.security import principal
from admin_api.typedefs import DB
from admin_api.ui.menu import N_
from admin_api.ui.rendering import render
from admin_api.views import exports as export_views
from crm import exports as jobs
from crm.exports import ExportJob
from herald.errors import InvalidInput

endpoints = EndpointTable("ui")

KIND_NAMES = {
    "cases": N_("Cases"),
    "case_stats": N_("Case statistics"),
    "segment_members": N_("Segment members"),
    "campaign_recipients": N_("Campaign recipients"),
    "contacts": N_("Contacts"),
    "audit": N_("Audit journal"),
    "stop_list": N_("Stop list"),
}
STATUS_NAMES = {
    "queued": N_("Queued"),
    "running": N_("Being written"),
    "done": N_("Ready"),
    "failed": N_("Failed"),
    "expired": N_("Deleted (kept time over)"),
    "streamed": N_("Downloaded at once"),
}
# How a job's filters read on the page (the order of a list is left out: it changes no row).
FILTER_NAMES = {
    "status": N_("Status"),
    "open": N_("open only"),
    "channel": N_("Channel"),
    "priority": N_("Priority"),
    "case_type": N_("Type"),
    "sla_state": "SLA",
    "number": N_("Number"),
    "client_id": "Client_ID",
    "is_repeat": N_("repeat"),
    "anonymous": N_("unidentified"),
    "duplicate": N_("duplicate"),
    "segment_id": N_("Segment"),
    "campaign_id": N_("Campaign"),
    "active_only": N_("active only"),
    "entity_type": N_("Entity"),
    "actor_login": N_("User"),
    "from": N_("From"),
    "to": N_("To"),
    "group_by": N_("Grouping"),
    "show": N_("Entries"),
}
HIDDEN_FILTERS = frozenset({"order"})
FILTER_PREFIX = "f."


async def _context(request: web.Request) -> dict[str, Any]:
    async with request.app[DB].acquire() as conn:
        found = await jobs.list_jobs(conn, owner_id=principal(request).user_id, limit=50)
    return {
        "exports": [export_views.view_of(j) for j in found],
        "active": any(j.status in ("queued", "running") for j in found),
        "kind_names": KIND_NAMES,
        "status_names": STATUS_NAMES,
        "filter_names": FILTER_NAMES,
        "hidden_filters": HIDDEN_FILTERS,
    }


@endpoints.get("/ui/exports", permission=AUTHENTICATED, response=str, media_type="text/html")
async def exports_page(request: web.Request) -> web.Response:
    """My exports, newest first, with their progress and download links."""
    return await render(request, "exports.html", await _context(request))


@endpoints.get("/ui/exports/rows", permission=AUTHENTICATED, response=str, media_type="text/html")
async def export_rows(request: web.Request) -> web.Response:
    """The table of my exports (polled while one is running)."""
    return await render(request, "_export_rows.html", await _context(request))


@endpoints.post(
    "/ui/exports",
    permission=AUTHENTICATED,
    response=str,
    media_type="text/html",
    errors=(400, 403, 404),
)
async def start_export(request: web.Request) -> web.StreamResponse:
    """Export a list with the filters posted (fields ``f.<filter>``): the file, or a job."""
    posted = await inputs.read_form(request)
    kind = str(posted.get("kind", ""))
    fmt = str(posted.get("format", "csv"))
    if fmt not in ("csv", "xlsx"):
        raise InvalidInput("format", "csv or xlsx")
    filters = {
        key[len(FILTER_PREFIX) :]: value
        for key, value in posted.items()
        if key.startswith(FILTER_PREFIX) and isinstance(value, str) and value.strip()
    }
    started = await export_views.start(request, kind, fmt, filters, None)
    if isinstance(started, ExportJob):
        raise web.HTTPSeeOther(f"/ui/exports#export-{started.id}")
    return started
