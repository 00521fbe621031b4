"""The case rollups: hourly and daily aggregates kept up to date from a dirty-hour queue.

Migration 0070 does the marking: every INSERT or UPDATE of ``cases`` (a statement
trigger, so a bulk load marks each hour once) puts the UTC hours the case's times fall in
- before and after the change - into ``report_dirty_hours``. :func:`refresh` (run by the
scheduler every few seconds, and by ``herald rollups rebuild``) takes a batch of dirty
hours and recomputes those hours of ``report_case_hourly`` from the cases of each hour,
then the business days they fall in of ``report_case_daily`` from the hourly rows.

Definitions (each metric is counted at the hour it happened; the dimensions - channel,
status, type, topic, priority, group, agent - are the case's attributes now; merged-away
cases are left out):

- ``created``: cases created in the hour.
- ``first_responses`` / ``first_response_seconds``: cases first answered in the hour and
  the sum of their wall-clock seconds from creation to the first response.
- ``resolved`` / ``resolution_seconds``: cases resolved in the hour and the sum of their
  seconds from creation to resolution (a reopened case counts at its latest resolution).
- ``handling_seconds``: per resolved case, the seconds from its assignment to the agent
  holding it (``assigned_at``; creation when never assigned) to the resolution.
- SLA, per target (first response, resolution): ``met`` when done no later than its due
  time with no breach recorded, counted when done; ``breached`` when the evaluator
  recorded a breach (counted at that moment, whatever happened later) or, without a
  record, when done after the due time (counted when done). Cases without a policy are
  in neither. An open, overdue case the evaluator has not yet looked at is not counted
  until it does (seconds later, at the evaluator's period).
- ``fcr`` (first-contact resolution), counted at the resolution: the case is resolved,
  was never reopened (``reopen_count`` = 0), no later case of the client was flagged a
  repeat of it (``repeat_of_id``), and the agents sent at most one message on it
  (``case_events`` kind ``message``, direction ``out``): one answer closed the matter.
  ``fcr_percent`` = fcr / resolved.
- ``reopened``: cases resolved in the hour that had been reopened before.

Late corrections: reclassifying (type, topic, priority), reassigning, reopening, a
recorded breach and a new repeat all update ``cases`` (or, for a repeat, insert the case
that points at the earlier one), which marks the affected hours; the next refresh
rewrites them. Nothing is incremented, so a bucket is always exactly what a scan of its
hour would give.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

# Hours recomputed per transaction: ~1 hour of cases each, so a batch stays short.
BATCH_HOURS = 48


async def refresh(conn: asyncpg.Connection, *, batch_hours: int = BATCH_HOURS) -> int:
    """Recompute one batch of dirty hours (and their days); the number of hours done.

    Concurrent refreshers take disjoint batches (SKIP LOCKED)."""
    async with conn.transaction():
        hours = await conn.fetchval(
            """
            WITH d AS (
                DELETE FROM report_dirty_hours WHERE hour IN (
                    SELECT hour FROM report_dirty_hours ORDER BY hour
                    LIMIT $1 FOR UPDATE SKIP LOCKED)
                RETURNING hour)
            SELECT array_agg(hour ORDER BY hour) FROM d
            """,
            batch_hours,
        )
        if not hours:
            return 0
        # Two refreshers whose hours share a business day would rewrite it together.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('report_case_daily'))")
        return int(await conn.fetchval("SELECT report_case_recompute($1)", hours))


async def refresh_all(conn: asyncpg.Connection, *, batch_hours: int = BATCH_HOURS) -> int:
    """Drain the dirty-hour queue; the number of hours recomputed."""
    total = 0
    while done := await refresh(conn, batch_hours=batch_hours):
        total += done
    return total


async def clear(conn: asyncpg.Connection) -> None:
    """Empty the case rollups (before a rebuild: a bulk reload may have removed cases
    without the triggers seeing it)."""
    await conn.execute(
        "TRUNCATE report_dirty_hours, report_case_hourly, report_case_daily, "
        "report_case_daily_lite, report_case_daily_agent, report_case_daily_topic"
    )


async def mark_all(conn: asyncpg.Connection, since: dt.datetime | None = None) -> int:
    """Mark every hour that has a case time (since ``since``) dirty: the rebuild."""
    return int(
        await conn.fetchval(
            """
            WITH m AS (
                INSERT INTO report_dirty_hours (hour)
                SELECT DISTINCT date_trunc('hour', t) FROM cases c,
                       unnest(ARRAY[c.created_at, c.first_response_at, c.resolved_at,
                                    c.first_response_breached_at, c.resolution_breached_at]) t
                WHERE t IS NOT NULL AND ($1::timestamptz IS NULL OR t >= $1)
                ON CONFLICT DO NOTHING RETURNING 1)
            SELECT count(*) FROM m
            """,
            since,
        )
    )


async def pending(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM report_dirty_hours"))
