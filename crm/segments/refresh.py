"""Keeping dynamic segments current: re-evaluate only the clients whose data changed.

Statement-level triggers (migration 0013) record changed client ids in
``segment_dirty_clients`` while a dynamic segment exists. The scheduler's duty takes a
batch of them (deleting the marks in the same transaction), re-evaluates just those
clients against every dynamic segment (delete + insert of their membership rows), and
commits. A mark made by a transaction still open at that moment holds a row lock the
refresh waits for, or is inserted again after it: no change is missed.

A condition with relative dates ("no payment for 60 days") changes with the calendar as
well as with the data, so such a dynamic segment is also materialised whole once a day.
"""

from __future__ import annotations

import logging

import asyncpg

from crm.segments import catalogue as catalogue_mod
from crm.segments import member_sets
from crm.segments.compiler import client_ids
from crm.segments.conditions import parse
from crm.segments.store import materialise

log = logging.getLogger("herald.segments")

BATCH = 20_000


async def refresh_dirty(pool: asyncpg.Pool, *, batch: int = BATCH, max_batches: int = 50) -> int:
    """Apply pending client changes to every dynamic segment; returns how many clients."""
    done = 0
    for _ in range(max_batches):
        async with pool.acquire() as conn, conn.transaction():
            processed = await _one_batch(conn, batch)
        done += processed
        if processed < batch:
            break
    return done


async def _one_batch(conn: asyncpg.Connection, batch: int) -> int:
    # Lock the dynamic segments first: an edit or full refresh of one waits, and so do we.
    segments = await conn.fetch(
        "SELECT id, condition, members_set FROM segments WHERE kind = 'dynamic' "
        "ORDER BY id FOR UPDATE"
    )
    ids = [
        r["client_id"]
        for r in await conn.fetch(
            """
        DELETE FROM segment_dirty_clients
        WHERE client_id IN (SELECT client_id FROM segment_dirty_clients ORDER BY client_id
                            LIMIT $1 FOR UPDATE SKIP LOCKED)
        RETURNING client_id
        """,
            batch,
        )
    ]
    if not ids or not segments:
        return len(ids)
    catalogue = await catalogue_mod.load(conn)
    for segment in segments:
        if segment["members_set"] is None:  # never materialised: nothing to bring up to date
            continue
        try:
            condition = parse(segment["condition"], catalogue)
        except Exception:  # an attribute left the catalogue: keep the others current
            log.exception("dynamic segment %d no longer compiles; skipped", segment["id"])
            continue
        removed = await conn.fetch(
            "DELETE FROM segment_member_rows WHERE set_id = $1 AND client_id = ANY($2::bigint[]) "
            "RETURNING client_id",
            segment["members_set"],
            ids,
        )
        query = client_ids(condition, catalogue, "ids", ids=ids)
        seg = query.param(segment["members_set"], "bigint")
        status = await conn.execute(
            f"INSERT INTO segment_member_rows (set_id, client_id) "
            f"SELECT {seg}, client_id FROM ({query.sql}) matching",
            *query.params,
        )
        added = int(status.split()[-1])
        if added != len(removed):
            await conn.execute(
                "UPDATE segments SET member_count = member_count + $2 WHERE id = $1",
                segment["id"],
                added - len(removed),
            )
    return len(ids)


async def refresh_relative_dates(pool: asyncpg.Pool) -> list[int]:
    """Materialise again each dynamic segment with relative dates not yet done today (Kyiv)."""
    refreshed: list[int] = []
    while True:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """
                SELECT id, condition FROM segments
                WHERE kind = 'dynamic' AND relative_dates
                  AND (materialised_at IS NULL
                       OR (materialised_at AT TIME ZONE herald_business_tz())::date
                          < (herald_now() AT TIME ZONE herald_business_tz())::date)
                ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
                """
            )
            if row is None:
                return refreshed
            catalogue = await catalogue_mod.load(conn)
            try:
                condition = parse(row["condition"], catalogue)
            except Exception:
                log.exception("dynamic segment %d no longer compiles; skipped", row["id"])
                await conn.execute(
                    "UPDATE segments SET materialised_at = herald_now() WHERE id = $1", row["id"]
                )
                continue
            count = await materialise(conn, row["id"], condition, catalogue, pool=pool)
        log.info("dynamic segment %d re-evaluated for the new day: %d members", row["id"], count)
        refreshed.append(row["id"])


async def run_duty(pool: asyncpg.Pool) -> int:
    """The scheduler's duty: pending changes, the day's relative-date segments, then a few
    chunks of the member sets replaced or deleted (member_sets.purge)."""
    clients = await refresh_dirty(pool)
    await refresh_relative_dates(pool)
    await member_sets.purge(pool)
    return clients
