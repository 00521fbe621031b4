"""Segments and their members: create, change, materialise, preview, page, export, combine.

Members are written inside PostgreSQL (one INSERT ... SELECT in client_id order, so the
primary key grows at its right edge); no process ever holds a segment's members.
Changes to segments are journalled as entity ``segment``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import asyncpg
import msgspec

from crm import audit
from crm.errors import Conflict, InvalidInput, NotFound
from crm.segments import catalogue as catalogue_mod
from crm.segments.catalogue import Catalogue
from crm.segments.compiler import client_ids, count_query
from crm.segments.conditions import Condition, parse

Kind = Literal["static", "dynamic"]
SetOp = Literal["union", "intersection", "exclusion"]

# Above this many clients (the planner's estimate) a preview counts a sample of the
# clients' pages unless an exact count is asked for: an exact count scans every account.
EXACT_PREVIEW_LIMIT = 1_000_000
SAMPLE_CLIENTS = 130_000
# Materialising millions of members sorts and hashes millions of ids: more memory than the
# default work_mem, and more time than the API's default statement timeout.
_BULK_SETTINGS = "SET LOCAL work_mem = '256MB'; SET LOCAL statement_timeout = '20min'"
_UNFINISHED = ("draft", "scheduled", "launching", "running", "paused")


class Segment(msgspec.Struct):
    id: int
    name: str
    description: str
    kind: str
    condition: Any
    origin: Any
    relative_dates: bool
    member_count: int
    materialised_at: dt.datetime | None
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime


class Preview(msgspec.Struct):
    """A count of the clients a condition selects; an estimate from a sample when not exact."""

    count: int
    exact: bool
    sample_percent: float | None
    elapsed_ms: float


_COLUMNS = ("id, name, description, kind, condition, origin, relative_dates, member_count, "
            "materialised_at, created_by, created_at, updated_at")


def _segment(row: asyncpg.Record) -> Segment:
    return Segment(**dict(row))


async def get(conn: asyncpg.Connection, segment_id: int, *, lock: bool = False) -> Segment:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM segments WHERE id = $1"
                              + (" FOR UPDATE" if lock else ""), segment_id)
    if row is None:
        raise NotFound(f"no segment {segment_id}")
    return _segment(row)


async def list_segments(conn: asyncpg.Connection, *, after_id: int, limit: int,
                        kind: str | None = None) -> list[Segment]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM segments WHERE id > $1 AND ($2::text IS NULL OR kind = $2) "
        "ORDER BY id LIMIT $3", after_id, kind, limit)
    return [_segment(r) for r in rows]


def _check_name(name: str, description: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 200 or "\x00" in name:
        raise InvalidInput("name", "a name of 1 to 200 characters is required")
    if len(description) > 2000 or "\x00" in description:
        raise InvalidInput("description", "at most 2000 characters")
    return name


async def compile_condition(conn: asyncpg.Connection, raw: Any,
                            path: str = "condition") -> tuple[Condition, Catalogue]:
    """The catalogue and the validated condition (InvalidInput naming the path)."""
    catalogue = await catalogue_mod.load(conn)
    return parse(raw, catalogue, path), catalogue


async def materialise(conn: asyncpg.Connection, segment_id: int, condition: Condition,
                      catalogue: Catalogue) -> int:
    """Replace the members with the clients the condition selects now; call in a transaction."""
    await conn.execute(_BULK_SETTINGS)
    await conn.execute("DELETE FROM segment_members WHERE segment_id = $1", segment_id)
    query = client_ids(condition, catalogue)
    seg = query.param(segment_id, "bigint")
    status = await conn.execute(
        f"INSERT INTO segment_members (segment_id, client_id) "
        f"SELECT {seg}, client_id FROM ({query.sql}) matching ORDER BY client_id", *query.params)
    count = int(status.split()[-1])
    await conn.execute("UPDATE segments SET member_count = $2, materialised_at = now(), "
                       "updated_at = now() WHERE id = $1", segment_id, count)
    return count


async def create(conn: asyncpg.Connection, actor: audit.Actor, *, name: str, kind: Kind,
                 condition: Any, description: str = "") -> Segment:
    """A new segment with its members materialised now (static: this moment's snapshot).

    A dynamic segment is committed before it is materialised: from then on every change
    is marked for it, so a change made while its members are computed is applied by the
    next refresh rather than lost.
    """
    name = _check_name(name, description)
    parsed, catalogue = await compile_condition(conn, condition)
    insert = ("INSERT INTO segments (name, description, kind, condition, relative_dates, created_by, "
              "created_by_id) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id")
    values = (name, description, kind, condition, parsed.relative_dates, actor.login, actor.id)
    if kind == "dynamic":
        segment_id = await conn.fetchval(insert, *values)
    try:
        async with conn.transaction():
            if kind == "static":
                segment_id = await conn.fetchval(insert, *values)
            else:
                await get(conn, segment_id, lock=True)
            count = await materialise(conn, segment_id, parsed, catalogue)
            await audit.record(conn, actor, [audit.Change(
                "segment", str(segment_id), "create", None, None,
                {"name": name, "kind": kind, "condition": condition, "members": count})])
            return await get(conn, segment_id)
    except Exception:
        if kind == "dynamic":  # never leave a dynamic segment that was not materialised
            await conn.execute("DELETE FROM segments WHERE id = $1", segment_id)
        raise


async def update(conn: asyncpg.Connection, actor: audit.Actor, segment_id: int, *,
                 name: str | None = None, description: str | None = None,
                 kind: Kind | None = None, condition: Any = None) -> Segment:
    """Change a segment; a new condition or kind materialises the members again."""
    if kind == "dynamic":
        # Marked changes must reach it from before it is materialised (see create).
        async with conn.transaction():
            before = await get(conn, segment_id, lock=True)
            if before.origin is not None:
                raise Conflict(f"segment {segment_id} was made by a set operation; it stays a "
                               "static snapshot")
            if before.kind != "dynamic":
                parse(condition if condition is not None else before.condition,
                      await catalogue_mod.load(conn))
                await conn.execute("UPDATE segments SET kind = 'dynamic' WHERE id = $1", segment_id)
        return await _update(conn, actor, segment_id, name=name, description=description,
                             kind=kind, condition=condition, was=before)
    return await _update(conn, actor, segment_id, name=name, description=description, kind=kind,
                         condition=condition, was=None)


async def _update(conn: asyncpg.Connection, actor: audit.Actor, segment_id: int, *,
                  name: str | None, description: str | None, kind: Kind | None, condition: Any,
                  was: Segment | None) -> Segment:
    async with conn.transaction():
        before = await get(conn, segment_id, lock=True)
        if was is not None:
            before = msgspec.structs.replace(before, kind=was.kind)
        new_name = _check_name(name if name is not None else before.name,
                               description if description is not None else before.description)
        new_description = description if description is not None else before.description
        if before.origin is not None and (condition is not None or kind not in (None, "static")):
            raise Conflict(f"segment {segment_id} was made by a set operation; it stays a static "
                           "snapshot (combine again, or create a segment with a condition)")
        new_kind = kind or before.kind
        new_condition = condition if condition is not None else before.condition
        rematerialise = condition is not None or new_kind != before.kind
        parsed = None
        if rematerialise:
            parsed, catalogue = await compile_condition(conn, new_condition)
        await conn.execute(
            "UPDATE segments SET name = $2, description = $3, kind = $4, condition = $5, "
            "relative_dates = coalesce($6, relative_dates), updated_at = now() WHERE id = $1",
            segment_id, new_name, new_description, new_kind,
            new_condition, parsed.relative_dates if parsed else None)
        if parsed is not None:
            await materialise(conn, segment_id, parsed, catalogue)
        after = await get(conn, segment_id)
        await audit.record(conn, actor, audit.field_changes(
            "segment", segment_id,
            {"name": before.name, "description": before.description, "kind": before.kind,
             "condition": before.condition},
            {"name": after.name, "description": after.description, "kind": after.kind,
             "condition": after.condition}))
        return after


async def refresh(conn: asyncpg.Connection, actor: audit.Actor, segment_id: int) -> Segment:
    """Materialise again on request: a new snapshot (static) or a full recount (dynamic)."""
    async with conn.transaction():
        segment = await get(conn, segment_id, lock=True)
        if segment.origin is not None:
            await _fill_set_operation(conn, segment_id, segment.origin["op"],
                                      segment.origin["left"], segment.origin["right"])
        else:
            parsed, catalogue = await compile_condition(conn, segment.condition)
            await materialise(conn, segment_id, parsed, catalogue)
        after = await get(conn, segment_id)
        await audit.record(conn, actor, [audit.Change(
            "segment", str(segment_id), "refresh", "member_count", segment.member_count,
            after.member_count)])
        return after


async def delete(conn: asyncpg.Connection, actor: audit.Actor, segment_id: int) -> None:
    """Delete a segment and its members; refused while a campaign or stop list uses it."""
    async with conn.transaction():
        segment = await get(conn, segment_id, lock=True)
        campaign = await conn.fetchval(
            "SELECT id FROM campaigns WHERE audience->>'kind' = 'segment' "
            "AND audience->>'segment_id' = $1 AND status = ANY($2::text[]) LIMIT 1",
            str(segment_id), list(_UNFINISHED))
        if campaign is not None:
            raise Conflict(f"segment {segment_id} is the audience of campaign {campaign}, "
                           "which is not finished")
        entry = await conn.fetchval(
            "SELECT id FROM stop_list_entries WHERE segment_id = $1 LIMIT 1", segment_id)
        if entry is not None:
            raise Conflict(f"segment {segment_id} is used by stop-list entry {entry}; "
                           "remove the entry first")
        await conn.execute("SET LOCAL statement_timeout = '20min'")
        await conn.execute("DELETE FROM segment_members WHERE segment_id = $1", segment_id)
        await conn.execute("DELETE FROM segments WHERE id = $1", segment_id)
        await audit.record(conn, actor, [audit.Change(
            "segment", str(segment_id), "delete", None,
            {"name": segment.name, "kind": segment.kind, "condition": segment.condition,
             "origin": segment.origin}, None)])


async def preview(conn: asyncpg.Connection, raw: Any, *, exact: bool = False) -> Preview:
    """Count what a condition being edited selects: exact on small data or when asked,
    else estimated from a sample of about SAMPLE_CLIENTS clients."""
    parsed, catalogue = await compile_condition(conn, raw)
    started = time.perf_counter()
    clients = await conn.fetchval(
        "SELECT reltuples::bigint FROM pg_class WHERE oid = 'clients'::regclass")
    async with conn.transaction():
        await conn.execute("SET LOCAL work_mem = '256MB'")
        if exact or clients <= EXACT_PREVIEW_LIMIT:
            if exact:
                await conn.execute("SET LOCAL statement_timeout = '10min'")
            query = count_query(parsed, catalogue)
            count = await conn.fetchval(query.sql, *query.params)
            percent = None
        else:
            percent = min(100.0, max(0.01, 100.0 * SAMPLE_CLIENTS / clients))
            # The sampled clients' accounts and billing by index, not by hashing 13 M rows
            # (the planner would rather scan whole tables); no JIT for a sub-second query.
            await conn.execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; "
                               "SET LOCAL jit = off")
            query = count_query(parsed, catalogue, "sample", sample_percent=percent)
            count = round(await conn.fetchval(query.sql, *query.params) * 100.0 / percent)
    return Preview(int(count), percent is None, percent,
                   round((time.perf_counter() - started) * 1000, 1))


async def members_page(conn: asyncpg.Connection, segment_id: int, *, after_client_id: int,
                       limit: int) -> list[int]:
    """Member client ids in ascending order after ``after_client_id`` (keyset)."""
    await get(conn, segment_id)
    rows = await conn.fetch(
        "SELECT client_id FROM segment_members WHERE segment_id = $1 AND client_id > $2 "
        "ORDER BY client_id LIMIT $3", segment_id, after_client_id, limit)
    return [r["client_id"] for r in rows]


async def export_members(conn: asyncpg.Connection, segment_id: int, *,
                         chunk: int = 10_000) -> AsyncIterator[bytes]:
    """The members as CSV (header, then one client id a line), in chunks, walked by keyset."""
    await get(conn, segment_id)
    yield b"client_id\n"
    after = 0
    while True:
        rows = await conn.fetch(
            "SELECT client_id FROM segment_members WHERE segment_id = $1 AND client_id > $2 "
            "ORDER BY client_id LIMIT $3", segment_id, after, chunk)
        if not rows:
            return
        yield "".join(f"{r['client_id']}\n" for r in rows).encode()
        after = rows[-1]["client_id"]


# Each set operation walks both member lists in client_id order (two index scans joined
# by merge), so the result comes out sorted and is appended to the new segment's key.
_SET_SQL: dict[str, str] = {
    "union": """
        SELECT $1::bigint, coalesce(x.client_id, y.client_id) AS client_id
        FROM (SELECT client_id FROM segment_members WHERE segment_id = $2) x
        FULL JOIN (SELECT client_id FROM segment_members WHERE segment_id = $3) y
               ON y.client_id = x.client_id
        ORDER BY 2""",
    "intersection": """
        SELECT $1::bigint, x.client_id
        FROM segment_members x JOIN segment_members y
             ON y.segment_id = $3 AND y.client_id = x.client_id
        WHERE x.segment_id = $2
        ORDER BY 2""",
    "exclusion": """
        SELECT $1::bigint, x.client_id
        FROM segment_members x
        WHERE x.segment_id = $2
          AND NOT EXISTS (SELECT 1 FROM segment_members y
                          WHERE y.segment_id = $3 AND y.client_id = x.client_id)
        ORDER BY 2""",
}


async def _fill_set_operation(conn: asyncpg.Connection, segment_id: int, op: str, left: int,
                              right: int) -> int:
    for source in (left, right):
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM segments WHERE id = $1)", source):
            raise Conflict(f"segment {source} used by this set operation no longer exists")
    await conn.execute(_BULK_SETTINGS)
    await conn.execute("DELETE FROM segment_members WHERE segment_id = $1", segment_id)
    status = await conn.execute(
        f"INSERT INTO segment_members (segment_id, client_id) {_SET_SQL[op]}",
        segment_id, left, right)
    count = int(status.split()[-1])
    await conn.execute("UPDATE segments SET member_count = $2, materialised_at = now(), "
                       "updated_at = now() WHERE id = $1", segment_id, count)
    return count


async def combine(conn: asyncpg.Connection, actor: audit.Actor, left: int, op: SetOp, right: int,
                  *, name: str | None = None) -> Segment:
    """A new static segment: the union, intersection or exclusion (left minus right)."""
    async with conn.transaction():
        # Share locks: a refresh of either source cannot change it while it is read.
        first = await conn.fetchrow("SELECT id, name FROM segments WHERE id = $1 FOR SHARE", left)
        if first is None:
            raise NotFound(f"no segment {left}")
        second = await conn.fetchrow("SELECT id, name FROM segments WHERE id = $1 FOR SHARE", right)
        if second is None:
            raise InvalidInput("other", f"no segment {right}")
        label = {"union": "∪", "intersection": "∩", "exclusion": "∖"}[op]
        new_name = _check_name(name or f"{first['name']} {label} {second['name']}"[:200], "")
        origin = {"op": op, "left": left, "right": right}
        segment_id = await conn.fetchval(
            "INSERT INTO segments (name, kind, origin, created_by, created_by_id) "
            "VALUES ($1, 'static', $2, $3, $4) RETURNING id", new_name, origin, actor.login, actor.id)
        count = await _fill_set_operation(conn, segment_id, op, left, right)
        await audit.record(conn, actor, [audit.Change(
            "segment", str(segment_id), "create", None, None,
            {"name": new_name, "kind": "static", "origin": origin, "members": count})])
        return await get(conn, segment_id)

