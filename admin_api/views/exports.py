"""Exports with no row limit (SR-13): ask for one, follow its progress, download its file.

``POST /api/v1/exports`` streams a small export at once (200, the file) and queues a large
one (202, the job; ``background`` forces either way). Only the owner of an export, or a
holder of ``exports.all`` (the administrator), sees it and downloads its file; to anyone
else it does not exist (404).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from aiohttp import web

from admin_api import exporting
from admin_api.exporting import RUNNER, Format
from admin_api.problems import problem_response
from admin_api.routing import AUTHENTICATED, EndpointTable, path_int
from admin_api.security import actor, principal
from admin_api.typedefs import DB, SETTINGS
from crm import exports as jobs
from crm.exports import ExportJob
from crm.users import Principal
from herald.errors import NotFound

endpoints = EndpointTable("exports")
ALL = "exports.all"


class ExportRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``kind``: cases, case_stats, segment_members, campaign_recipients, contacts, audit;
    ``filters``: those of the kind's list (e.g. the query of ``GET /api/v1/cases``);
    ``background``: true to always make a job, false to always stream, absent to decide
    by the number of rows (``HERALD_EXPORT_BACKGROUND_ROWS``)."""

    kind: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    format: Format = "csv"
    filters: dict[str, Any] = msgspec.field(default_factory=dict)
    background: bool | None = None


class ExportView(msgspec.Struct):
    id: int
    kind: str
    format: str
    filters: dict[str, Any]
    status: str
    owner_login: str
    rows_estimate: int | None
    rows_done: int
    # Of the estimate (capped at the background threshold): a guide, not a promise.
    progress_percent: float | None
    file_size: int | None
    error: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    expires_at: dt.datetime | None
    download_url: str | None


class ExportListQuery(msgspec.Struct, forbid_unknown_fields=True):
    """``everyone``: every user's exports (``exports.all``), not only mine."""

    everyone: bool = False
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100


def view_of(job: ExportJob) -> ExportView:
    percent = None
    if job.status in ("done", "streamed"):
        percent = 100.0
    elif job.rows_estimate:
        percent = min(99.0, round(100.0 * job.rows_done / job.rows_estimate, 1))
    return ExportView(
        id=job.id,
        kind=job.kind,
        format=job.format,
        filters=job.filters,
        status=job.status,
        owner_login=job.owner_login,
        rows_estimate=job.rows_estimate,
        rows_done=job.rows_done,
        progress_percent=percent,
        file_size=job.file_size,
        error=job.error,
        created_at=job.created_at,
        finished_at=job.finished_at,
        expires_at=job.expires_at,
        download_url=f"/api/v1/exports/{job.id}/file" if job.status == "done" else None,
    )


def visible(who: Principal, job: ExportJob) -> bool:
    return job.owner_id == who.user_id or ALL in who.permissions


async def job_for(request: web.Request, export_id: int) -> ExportJob:
    """The export if the caller may see it; NotFound otherwise (others' exports stay hidden)."""
    async with request.app[DB].acquire() as conn:
        job = await jobs.get(conn, export_id)
    if not visible(principal(request), job):
        raise NotFound(f"export {export_id} not found")
    return job


async def start(
    request: web.Request, kind: str, fmt: str, filters: Any, background: bool | None
) -> ExportJob | web.StreamResponse:
    """Stream the export, or queue it and wake the runner; a 403 without the kind's right."""
    settings = request.app[SETTINGS]
    who = principal(request)
    async with request.app[DB].acquire() as conn:
        try:
            prepared = await exporting.prepare(conn, settings, who, kind, fmt, filters)
        except PermissionError as exc:
            return problem_response(
                request,
                403,
                code="permission-denied",
                detail=f"your roles do not grant {exc.args[0]!r}",
            )
        large = prepared.rows_estimate > settings.export_background_rows
        if background is False or (background is None and not large):
            return await exporting.stream(request, conn, who, prepared)
        job = await jobs.create(
            conn,
            actor(request),
            kind=prepared.kind,
            fmt=prepared.format,
            filters=prepared.filters,
            pii_visible=prepared.pii_visible,
            rows_estimate=prepared.rows_estimate,
        )
    request.app[RUNNER].wake()
    return job


@endpoints.post(
    "/api/v1/exports",
    permission=AUTHENTICATED,
    body=ExportRequest,
    response=ExportView,
    status=202,
    errors=(400, 403, 404),
)
async def create_export(request: web.Request, body: ExportRequest) -> Any:
    """Export a list as CSV or XLSX: the file at once (200), or a background job (202)."""
    return await start_response(request, body.kind, body.format, body.filters, body.background)


async def start_response(
    request: web.Request, kind: str, fmt: str, filters: Any, background: bool | None
) -> web.StreamResponse:
    """``start``, a job answered as 202 with its view and Location."""
    started = await start(request, kind, fmt, filters, background)
    if not isinstance(started, ExportJob):
        return started
    return web.Response(
        body=msgspec.json.encode(view_of(started)),
        status=202,
        content_type="application/json",
        headers={"Location": f"/api/v1/exports/{started.id}"},
    )


@endpoints.get(
    "/api/v1/exports",
    permission=AUTHENTICATED,
    query=ExportListQuery,
    response=list[ExportView],
    errors=(400, 403),
)
async def list_exports(request: web.Request, query: ExportListQuery) -> Any:
    """My exports, newest first (everyone's with ``everyone=true`` and ``exports.all``)."""
    who = principal(request)
    if query.everyone and ALL not in who.permissions:
        return problem_response(
            request, 403, code="permission-denied", detail=f"your roles do not grant {ALL!r}"
        )
    async with request.app[DB].acquire() as conn:
        found = await jobs.list_jobs(
            conn, owner_id=None if query.everyone else who.user_id, limit=query.limit
        )
    return [view_of(j) for j in found]


@endpoints.get(
    "/api/v1/exports/{export_id}",
    permission=AUTHENTICATED,
    response=ExportView,
    errors=(404,),
)
async def get_export(request: web.Request) -> ExportView:
    """One export and its progress."""
    return view_of(await job_for(request, path_int(request, "export_id")))


@endpoints.get(
    "/api/v1/exports/{export_id}/file",
    permission=AUTHENTICATED,
    response=str,
    media_type="application/octet-stream",
    errors=(404, 409, 410),
)
async def export_file(request: web.Request) -> web.StreamResponse:
    """The export's file: 409 while it is being written, 410 once it has expired."""
    job = await job_for(request, path_int(request, "export_id"))
    if job.status in ("expired", "streamed"):
        detail = (
            "the file was deleted when its keeping time ran out; export again"
            if job.status == "expired"
            else "this export was streamed when it was asked for and kept no file"
        )
        return problem_response(request, 410, code="export-gone", detail=detail)
    if job.status != "done" or job.file_name is None:
        return problem_response(
            request, 409, code="export-not-ready", detail=f"the export is {job.status}"
        )
    path = exporting.export_dir(request.app[SETTINGS]) / job.file_name
    if not path.exists():
        return problem_response(request, 410, code="export-gone", detail="the file is gone")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": exporting.CONTENT_TYPES[job.format],
            "Content-Disposition": f'attachment; filename="{job.file_name}"',
            "Cache-Control": "no-store",
        },
    )
