"""Export jobs (issue 16, SR-13): who exported what, with which filters, how many rows.

Every export is a row here and an entry in the audit journal (entity ``export``, action
``export``: kind, format, filters, rows, whether personal data was unmasked). A small
export streams at once (``record_streamed``); a large one is queued, claimed by a runner
(``claim_next``), reports progress (``progress``, also its heartbeat) and ends ``done``
with a file kept until ``expires_at`` (``finish``), or ``failed``. A job whose runner
stopped heartbeating is claimed again and written from the start.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import msgspec

from herald import audit
from herald.audit import Actor, Change
from herald.errors import NotFound

_COLUMNS = """
id, owner_id, owner_login, request_id, kind, format, filters, pii_visible, status,
rows_estimate, rows_done, attempts, file_name, file_size, error, created_at, started_at,
heartbeat_at, finished_at, expires_at
"""
_json = msgspec.json.Encoder()


class ExportJob(msgspec.Struct, frozen=True):
    id: int
    owner_id: int
    owner_login: str
    request_id: str | None
    kind: str
    format: str
    filters: dict[str, Any]
    pii_visible: bool
    status: str
    rows_estimate: int | None
    rows_done: int
    attempts: int
    file_name: str | None
    file_size: int | None
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    finished_at: dt.datetime | None
    expires_at: dt.datetime | None

    @property
    def actor(self) -> Actor:
        return Actor(login=self.owner_login, id=self.owner_id, request_id=self.request_id)


def _job(row: asyncpg.Record) -> ExportJob:
    values = dict(row)
    values["filters"] = msgspec.json.decode(values["filters"])
    return ExportJob(**values)


def _journal(job: ExportJob, rows: int) -> Change:
    return Change(
        "export",
        str(job.id),
        "export",
        new={
            "kind": job.kind,
            "format": job.format,
            "filters": job.filters,
            "rows": rows,
            "pii_visible": job.pii_visible,
        },
    )


async def create(
    conn: asyncpg.Connection,
    actor: Actor,
    *,
    kind: str,
    fmt: str,
    filters: dict[str, Any],
    pii_visible: bool,
    rows_estimate: int | None,
) -> ExportJob:
    """Queue an export for the runner."""
    if actor.id is None:
        raise ValueError("an export belongs to a user")
    row = await conn.fetchrow(
        f"""
        INSERT INTO export_jobs (owner_id, owner_login, request_id, kind, format, filters,
                                 pii_visible, rows_estimate)
        VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8) RETURNING {_COLUMNS}
        """,
        actor.id,
        actor.login,
        actor.request_id,
        kind,
        fmt,
        _json.encode(filters).decode(),
        pii_visible,
        rows_estimate,
    )
    return _job(row)


async def record_streamed(
    conn: asyncpg.Connection,
    actor: Actor,
    *,
    kind: str,
    fmt: str,
    filters: dict[str, Any],
    pii_visible: bool,
    rows: int,
) -> ExportJob:
    """Record an export that was streamed straight to its user, and journal it."""
    async with conn.transaction():
        job = await create(
            conn,
            actor,
            kind=kind,
            fmt=fmt,
            filters=filters,
            pii_visible=pii_visible,
            rows_estimate=rows,
        )
        row = await conn.fetchrow(
            f"""
            UPDATE export_jobs SET status = 'streamed', rows_done = $2, started_at = created_at,
                                   finished_at = herald_now()
            WHERE id = $1 RETURNING {_COLUMNS}
            """,
            job.id,
            rows,
        )
        await audit.record(conn, actor, [_journal(job, rows)])
    return _job(row)


async def claim_next(conn: asyncpg.Connection, *, stale_seconds: float) -> ExportJob | None:
    """Take the oldest queued job, or a running one whose runner stopped heartbeating."""
    row = await conn.fetchrow(
        f"""
        UPDATE export_jobs SET status = 'running', attempts = attempts + 1, rows_done = 0,
                               started_at = herald_now(), heartbeat_at = herald_now()
        WHERE id = (
            SELECT id FROM export_jobs
            WHERE status = 'queued'
               OR (status = 'running'
                   AND heartbeat_at < herald_now() - make_interval(secs => $1))
            ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING {_COLUMNS}
        """,
        float(stale_seconds),
    )
    return _job(row) if row else None


async def progress(conn: asyncpg.Connection, job_id: int, rows_done: int) -> None:
    """Rows written so far; also the runner's heartbeat."""
    await conn.execute(
        "UPDATE export_jobs SET rows_done = $2, heartbeat_at = herald_now() "
        "WHERE id = $1 AND status = 'running'",
        job_id,
        rows_done,
    )


async def finish(
    conn: asyncpg.Connection,
    job: ExportJob,
    *,
    file_name: str,
    file_size: int,
    rows: int,
    keep: dt.timedelta,
) -> ExportJob:
    """The file is ready: keep it for ``keep``, and journal the export."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""
            UPDATE export_jobs SET status = 'done', rows_done = $2, file_name = $3,
                   file_size = $4, finished_at = herald_now(), heartbeat_at = herald_now(),
                   expires_at = herald_now() + $5::interval
            WHERE id = $1 RETURNING {_COLUMNS}
            """,
            job.id,
            rows,
            file_name,
            file_size,
            keep,
        )
        await audit.record(conn, job.actor, [_journal(job, rows)])
    return _job(row)


async def fail(conn: asyncpg.Connection, job_id: int, error: str) -> None:
    await conn.execute(
        "UPDATE export_jobs SET status = 'failed', error = $2, finished_at = herald_now() "
        "WHERE id = $1",
        job_id,
        error[:1000],
    )


async def get(conn: asyncpg.Connection, job_id: int) -> ExportJob:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM export_jobs WHERE id = $1", job_id)
    if row is None:
        raise NotFound(f"export {job_id} not found")
    return _job(row)


async def list_jobs(
    conn: asyncpg.Connection, *, owner_id: int | None, limit: int = 100
) -> list[ExportJob]:
    """Newest first: one user's exports, or everyone's (``owner_id`` None)."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM export_jobs
        WHERE $1::bigint IS NULL OR owner_id = $1
        ORDER BY id DESC LIMIT $2
        """,
        owner_id,
        limit,
    )
    return [_job(r) for r in rows]


async def expire(conn: asyncpg.Connection, now: dt.datetime) -> list[ExportJob]:
    """Mark the finished jobs kept past their time as expired; their files are to delete."""
    rows = await conn.fetch(
        f"""
        UPDATE export_jobs SET status = 'expired'
        WHERE status = 'done' AND expires_at <= $1 RETURNING {_COLUMNS}
        """,
        now,
    )
    return [_job(r) for r in rows]
