"""Exports wired to the lists (SR-13): the kinds, the direct stream, the background runner.

Each kind names the permission its list needs, the type of its filters and the owning
module's "export query for these filters"; the engine (``herald.exports``) turns that
query into CSV or XLSX. Below ``export_background_rows`` rows (counted with a LIMIT, so
the count never costs more than the threshold) an export streams straight to the
response; above it, it becomes a job.

The jobs run in the API process (``runner_context``), not in the dispatcher's
scheduler: the scheduler is one per installation and times campaigns, SLA and holds, and
a five-minute XLSX must not delay them, while every API process can take a share of
the exports. The state is in ``export_jobs`` (``crm.exports``), so a restart loses
nothing: a job whose runner stopped heartbeating is claimed again by any API process.
The XML work runs in a thread, so the process keeps answering while it exports.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import asyncpg
import msgspec
from aiohttp import web

from admin_api.routing import validation_field
from admin_api.typedefs import DB, REQUEST_ID, SETTINGS
from crm import audit as crm_audit
from crm import exports as jobs
from crm import pii
from crm.audit import AuditExportFilters
from crm.cases import queue, stats
from crm.cases.queue import CaseQueueQuery
from crm.cases.stats import CaseStatsQuery
from crm.contacts import ContactExportFilters
from crm.contacts import export_query as contacts_export_query
from crm.exports import ExportJob
from crm.segments import store as segments
from crm.users import Principal
from dispatcher import outcomes
from dispatcher.campaigns import store as campaigns
from herald import clock, exports
from herald.bounds import Id
from herald.errors import InvalidInput
from herald.exports import ExportQuery
from herald.settings import Settings
from rules import stop_lists

log = logging.getLogger(__name__)

Format = Literal["csv", "xlsx"]
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
STALE_SECONDS = 60.0
"""A running job not heartbeating for this long is taken over (its runner died)."""
HEARTBEAT_ROWS = 20_000


class SegmentMembersFilters(msgspec.Struct, forbid_unknown_fields=True):
    segment_id: Id


class CampaignRecipientsFilters(msgspec.Struct, forbid_unknown_fields=True):
    """All the audience with where each stands, or (``status``) those of one status, as
    the campaign page lists them."""

    campaign_id: Id
    status: outcomes.RecipientStatus | None = None


class StopListFilters(msgspec.Struct, forbid_unknown_fields=True):
    """The entries in force now (``active``, as the page shows by default) or ``all``."""

    show: Literal["active", "all"] = "active"


Build = Callable[[asyncpg.Connection, Any, bool], Awaitable[ExportQuery]]


@dataclass(frozen=True)
class Kind:
    permission: str
    filters: type
    build: Build


async def _cases(conn: asyncpg.Connection, f: CaseQueueQuery, pii_visible: bool) -> ExportQuery:
    return queue.export_query(f)


async def _case_stats(
    conn: asyncpg.Connection, f: CaseStatsQuery, pii_visible: bool
) -> ExportQuery:
    return stats.export_query(f)


async def _segment(
    conn: asyncpg.Connection, f: SegmentMembersFilters, pii_visible: bool
) -> ExportQuery:
    return await segments.members_export_query(conn, f.segment_id)


async def _recipients(
    conn: asyncpg.Connection, f: CampaignRecipientsFilters, pii_visible: bool
) -> ExportQuery:
    await campaigns.get(conn, f.campaign_id)  # 404 for an unknown campaign
    return outcomes.recipients_export_query(f.campaign_id, f.status)


async def _contacts(
    conn: asyncpg.Connection, f: ContactExportFilters, pii_visible: bool
) -> ExportQuery:
    return await contacts_export_query(conn, f, pii_visible=pii_visible)


async def _audit(conn: asyncpg.Connection, f: AuditExportFilters, pii_visible: bool) -> ExportQuery:
    return crm_audit.export_query(f, pii_visible=pii_visible)


async def _stop_list(
    conn: asyncpg.Connection, f: StopListFilters, pii_visible: bool
) -> ExportQuery:
    return stop_lists.export_query(active_at=clock.now() if f.show == "active" else None)


KINDS: dict[str, Kind] = {
    "cases": Kind("cases.read", CaseQueueQuery, _cases),
    "case_stats": Kind("cases.read", CaseStatsQuery, _case_stats),
    "segment_members": Kind("segments.read", SegmentMembersFilters, _segment),
    "campaign_recipients": Kind("campaigns.read", CampaignRecipientsFilters, _recipients),
    "contacts": Kind("clients.read", ContactExportFilters, _contacts),
    "audit": Kind("audit.read", AuditExportFilters, _audit),
    "stop_list": Kind("rules.read", StopListFilters, _stop_list),
}


def kind_of(name: str) -> Kind:
    if name not in KINDS:
        raise InvalidInput("kind", f"unknown export {name!r}; any of {', '.join(KINDS)}")
    return KINDS[name]


def decode_filters(kind: Kind, raw: Any) -> Any:
    """The filters as the kind's type (strings coerced, as in a query string)."""
    if not isinstance(raw, dict):
        raise InvalidInput("filters", "filters must be an object")
    try:
        return msgspec.convert(raw, kind.filters, strict=False)
    except msgspec.ValidationError as exc:
        path, message = validation_field(exc)
        raise InvalidInput(f"filters.{path}" if path != "body" else "filters", message) from None


def stored_filters(filters: Any) -> dict[str, Any]:
    """The filters as the job keeps them (and the journal shows them): no paging, no
    response format, no empty filter."""
    return {
        k: v
        for k, v in msgspec.to_builtins(filters).items()
        if k not in ("limit", "cursor", "format") and v is not None
    }


def export_dir(settings: Settings) -> Path:
    path = Path(settings.export_dir or Path(tempfile.gettempdir()) / "herald-exports")
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_name(job: ExportJob) -> str:
    return f"{job.kind}-{job.id}.{job.format}"


class Prepared(msgspec.Struct, frozen=True):
    kind: str
    format: str
    filters: dict[str, Any]
    pii_visible: bool
    query: ExportQuery
    rows_estimate: int


async def prepare(
    conn: asyncpg.Connection,
    settings: Settings,
    who: Principal,
    kind_name: str,
    fmt: str,
    raw_filters: Any,
) -> Prepared:
    """Check the kind, the right to it and the filters; count the rows up to the threshold."""
    kind = kind_of(kind_name)
    if kind.permission not in who.permissions:
        raise PermissionError(kind.permission)
    filters = decode_filters(kind, raw_filters)
    pii_visible = pii.PERMISSION in who.permissions
    query = await kind.build(conn, filters, pii_visible)
    estimate = await exports.count_capped(conn, query, settings.export_background_rows)
    return Prepared(kind_name, fmt, stored_filters(filters), pii_visible, query, estimate)


async def stream(
    request: web.Request, conn: asyncpg.Connection, who: Principal, prepared: Prepared
) -> web.StreamResponse:
    """Send the export as the response body, then record and journal it."""
    settings = request.app[SETTINGS]
    stamp = clock.now().astimezone(clock.business_tz()).strftime("%Y%m%d-%H%M")
    name = f"{prepared.kind}-{stamp}.{prepared.format}"
    response = web.StreamResponse(
        headers={
            "Content-Type": CONTENT_TYPES[prepared.format],
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    async with exports.transaction(conn):
        if prepared.format == "csv":
            rows = await exports.write_csv(conn, prepared.query, response.write)
        else:
            with tempfile.NamedTemporaryFile(dir=export_dir(settings), suffix=".xlsx") as tmp:
                rows = await exports.write_xlsx(
                    conn, prepared.query, Path(tmp.name), max_rows=settings.export_sheet_rows
                )
                with open(tmp.name, "rb") as f:
                    while chunk := f.read(256 * 1024):
                        await response.write(chunk)
    await jobs.record_streamed(
        conn,
        who.actor(request.get(REQUEST_ID)),
        kind=prepared.kind,
        fmt=prepared.format,
        filters=prepared.filters,
        pii_visible=prepared.pii_visible,
        rows=rows,
    )
    await response.write_eof()
    return response


# -- the background runner -------------------------------------------------------------------


class Runner:
    """Claims queued jobs one at a time and writes their files; purges expired files."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def wake(self) -> None:
        """A job was queued: look now rather than at the next poll."""
        self._idle.clear()
        self._wake.set()

    async def drained(self) -> None:
        """Wait until no queued job is left (tests, and a graceful stop)."""
        await self._idle.wait()

    async def run_one(self) -> ExportJob | None:
        """Claim and write one job; None when there was none."""
        async with self._pool.acquire() as conn:
            job = await jobs.claim_next(conn, stale_seconds=STALE_SECONDS)
            if job is None:
                return None
            try:
                return await self._write(conn, job)
            except asyncio.CancelledError:
                raise  # the process stops: the job is taken over once its heartbeat is stale
            except Exception as exc:
                log.exception("export %d failed", job.id)
                await jobs.fail(conn, job.id, f"{type(exc).__name__}: {exc}")
                return await jobs.get(conn, job.id)

    async def _write(self, conn: asyncpg.Connection, job: ExportJob) -> ExportJob:
        kind = kind_of(job.kind)
        filters: Any = msgspec.convert(job.filters, kind.filters, strict=False)
        folder = export_dir(self._settings)
        final = folder / file_name(job)
        partial = folder / (final.name + ".part")

        async def progress(rows: int) -> None:
            async with self._pool.acquire() as other:
                await jobs.progress(other, job.id, rows)

        try:
            async with exports.transaction(conn):
                query = await kind.build(conn, filters, job.pii_visible)
                if job.format == "csv":
                    rows = await self._csv(conn, query, partial, progress)
                else:
                    rows = await exports.write_xlsx(
                        conn,
                        query,
                        partial,
                        max_rows=self._settings.export_sheet_rows,
                        progress=progress,
                        progress_every=HEARTBEAT_ROWS,
                    )
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(final)
        return await jobs.finish(
            conn,
            job,
            file_name=final.name,
            file_size=final.stat().st_size,
            rows=rows,
            keep=dt.timedelta(hours=self._settings.export_keep_hours),
        )

    @staticmethod
    async def _csv(
        conn: asyncpg.Connection,
        query: ExportQuery,
        path: Path,
        progress: Callable[[int], Awaitable[None]],
    ) -> int:
        lines = 0
        reported = 0
        with open(path, "wb") as out:

            async def write(chunk: bytes) -> None:
                nonlocal lines, reported
                await asyncio.to_thread(out.write, chunk)
                lines += chunk.count(b"\n")  # progress only: a quoted newline counts too
                if lines - reported >= HEARTBEAT_ROWS:
                    reported = lines
                    await progress(lines)

            return await exports.write_csv(conn, query, write)

    async def purge(self, now: dt.datetime) -> list[ExportJob]:
        """Delete the files kept past their time."""
        async with self._pool.acquire() as conn:
            expired = await jobs.expire(conn, now)
        folder = export_dir(self._settings)
        for job in expired:
            if job.file_name:
                (folder / job.file_name).unlink(missing_ok=True)
        return expired

    async def run(self, poll_seconds: float = 5.0) -> None:
        """Forever: jobs while there are any, expired files, then wait for a wake-up or poll."""
        while True:
            self._wake.clear()
            try:
                while await self.run_one() is not None:
                    pass
                await self.purge(clock.now())
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.exception("export runner: will retry")
            if self._wake.is_set():
                continue  # woken while looking: look again before calling it idle
            self._idle.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll_seconds)


RUNNER = web.AppKey("export_runner", Runner)


async def runner_context(app: web.Application) -> AsyncIterator[None]:
    """Run the export runner for the app's lifetime (after the pool, before it closes)."""
    runner = Runner(app[DB], app[SETTINGS])
    app[RUNNER] = runner
    task = asyncio.create_task(runner.run(), name="export-runner")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
