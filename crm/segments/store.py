"""Segments and their members: create, change, materialise, preview, page, export, combine.

Members are written inside PostgreSQL, as a new member set that the segment then points
at (``member_sets``); no process ever holds a segment's members.
Changes to segments are journalled as entity ``segment``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import asyncpg
import msgspec

from crm.segments import catalogue as catalogue_mod
from crm.segments import member_sets
from crm.segments.catalogue import Catalogue
from crm.segments.compiler import client_ids, count_query
from crm.segments.conditions import Condition, parse
from herald import audit
from herald.errors import Conflict, InvalidInput, NotFound
from herald.exports import ExportQuery

Kind = Literal["static", "dynamic"]
SetOp = Literal["union", "intersection", "exclusion"]

# Above this many clients (the planner's estimate) a preview counts a sample of the
# clients' pages unless an exact count is asked for: an exact count scans every account.
EXACT_PREVIEW_LIMIT = 1_000_000
SAMPLE_CLIENTS = 130_000
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


_COLUMNS = (
    "id, name, description, kind, condition, origin, relative_dates, member_count, "
    "materialised_at, created_by, created_at, updated_at"
)


def _segment(row: asyncpg.Record) -> Segment:
    return Segment(**dict(row))


async def get(conn: asyncpg.Connection, segment_id: int, *, lock: bool = False) -> Segment:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM segments WHERE id = $1" + (" FOR UPDATE" if lock else ""),
        segment_id,
    )
    if row is None:
        raise NotFound(f"no segment {segment_id}")
    return _segment(row)


async def exists(conn: asyncpg.Connection, segment_id: int) -> bool:
    """Whether the segment ``segment_id`` exists."""
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT 1 FROM segments WHERE id = $1)", segment_id)
    )


async def list_segments(
    conn: asyncpg.Connection, *, after_id: int, limit: int, kind: str | None = None
) -> list[Segment]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM segments WHERE id > $1 AND ($2::text IS NULL OR kind = $2) "
        "ORDER BY id LIMIT $3",
        after_id,
        kind,
        limit,
    )
    return [_segment(r) for r in rows]


def _check_name(name: str, description: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 200 or "\x00" in name:
        raise InvalidInput("name", "a name of 1 to 200 characters is required")
    if len(description) > 2000 or "\x00" in description:
        raise InvalidInput("description", "at most 2000 characters")
    return name


async def compile_condition(
    conn: asyncpg.Connection, raw: Any, path: str = "condition"
) -> tuple[Condition, Catalogue]:
    """The catalogue and the validated condition (InvalidInput naming the path)."""
    catalogue = await catalogue_mod.load(conn)
    return parse(raw, catalogue, path), catalogue


async def materialise(
    conn: asyncpg.Connection,
    segment_id: int,
    condition: Condition,
    catalogue: Catalogue,
    *,
    pool: asyncpg.Pool | None = None,
) -> int:
    """Replace the members with the clients the condition selects now; call in a transaction.

    With a ``pool``, a large population is shared out over its connections (member_sets).
    """
    query = client_ids(condition, catalogue)
    bounds, rows = None, 0
    if pool is not None:
        row = await conn.fetchrow(
            "SELECT min(id) AS low, max(id) AS high, (SELECT reltuples::bigint FROM pg_class "
            "WHERE oid = 'clients'::regclass) AS clients FROM clients"
        )
        if row["low"] is not None:
            # reltuples is -1 until the table is first analysed: the id span stands in.
            bounds = (row["low"], row["high"])
            rows = row["clients"] if row["clients"] >= 0 else row["high"] - row["low"] + 1

    def in_range(low: str, high: str) -> str:
        return (
            f"SELECT client_id FROM ({query.sql}) matching "
            f"WHERE client_id >= {low} AND client_id < {high}"
        )

    set_id, count = await member_sets.fill(
        conn, in_range, query.params, pool=pool, bounds=bounds, rows=rows
    )
    await member_sets.adopt(conn, segment_id, set_id, count)
    return count


async def create(
    conn: asyncpg.Connection,
    actor: audit.Actor,
    *,
    name: str,
    kind: Kind,
    condition: Any,
    description: str = "",
    pool: asyncpg.Pool | None = None,
) -> Segment:
    """A new segment with its members materialised now (static: this moment's snapshot).

    A dynamic segment is committed before it is materialised: from then on every change
    is marked for it, so a change made while its members are computed is applied by the
    next refresh rather than lost.
    """
    name = _check_name(name, description)
    parsed, catalogue = await compile_condition(conn, condition)
    insert = (
        "INSERT INTO segments (name, description, kind, condition, relative_dates, created_by, "
        "created_by_id) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id"
    )
    values = (name, description, kind, condition, parsed.relative_dates, actor.login, actor.id)
    if kind == "dynamic":
        segment_id = await conn.fetchval(insert, *values)
    try:
        async with conn.transaction():
            if kind == "static":
                segment_id = await conn.fetchval(insert, *values)
            else:
                await get(conn, segment_id, lock=True)
            count = await materialise(conn, segment_id, parsed, catalogue, pool=pool)
            await audit.record(
                conn,
                actor,
                [
                    audit.Change(
                        "segment",
                        str(segment_id),
                        "create",
                        None,
                        None,
                        {"name": name, "kind": kind, "condition": condition, "members": count},
                    )
                ],
            )
            return await get(conn, segment_id)
    except Exception:
        if kind == "dynamic":  # never leave a dynamic segment that was not materialised
            await conn.execute("DELETE FROM segments WHERE id = $1", segment_id)
        raise


async def update(
    conn: asyncpg.Connection,
    actor: audit.Actor,
    segment_id: int,
    *,
    name: str | None = None,
    description: str | None = None,
    kind: Kind | None = None,
    condition: Any = None,
    pool: asyncpg.Pool | None = None,
) -> Segment:
    """Change a segment; a new condition or kind materialises the members again."""
    if kind == "dynamic":
        # Marked changes must reach it from before it is materialised (see create).
        async with conn.transaction():
            before = await get(conn, segment_id, lock=True)
            if before.origin is not None:
                raise Conflict(
                    f"segment {segment_id} was made by a set operation; it stays a static snapshot"
                )
            if before.kind != "dynamic":
                parse(
                    condition if condition is not None else before.condition,
                    await catalogue_mod.load(conn),
                )
                await conn.execute("UPDATE segments SET kind = 'dynamic' WHERE id = $1", segment_id)
        return await _update(
            conn,
            actor,
            segment_id,
            name=name,
            description=description,
            kind=kind,
            condition=condition,
            was=before,
            pool=pool,
        )
    return await _update(
        conn,
        actor,
        segment_id,
        name=name,
        description=description,
        kind=kind,
        condition=condition,
        was=None,
        pool=pool,
    )


async def _update(
    conn: asyncpg.Connection,
    actor: audit.Actor,
    segment_id: int,
    *,
    name: str | None,
    description: str | None,
    kind: Kind | None,
    condition: Any,
    was: Segment | None,
    pool: asyncpg.Pool | None,
) -> Segment:
    async with conn.transaction():
        before = await get(conn, segment_id, lock=True)
        if was is not None:
            before = msgspec.structs.replace(before, kind=was.kind)
        new_name = _check_name(
            name if name is not None else before.name,
            description if description is not None else before.description,
        )
        new_description = description if description is not None else before.description
        if before.origin is not None and (condition is not None or kind not in (None, "static")):
            raise Conflict(
                f"segment {segment_id} was made by a set operation; it stays a static "
                "snapshot (combine again, or create a segment with a condition)"
            )
        new_kind = kind or before.kind
        new_condition = condition if condition is not None else before.condition
        rematerialise = condition is not None or new_kind != before.kind
        parsed = None
        if rematerialise:
            parsed, catalogue = await compile_condition(conn, new_condition)
        await conn.execute(
            "UPDATE segments SET name = $2, description = $3, kind = $4, condition = $5, "
            "relative_dates = coalesce($6, relative_dates), updated_at = herald_now() WHERE id = $1",
            segment_id,
            new_name,
            new_description,
            new_kind,
            new_condition,
            parsed.relative_dates if parsed else None,
        )
        if parsed is not None:
            await materialise(conn, segment_id, parsed, catalogue, pool=pool)
        after = await get(conn, segment_id)
        await audit.record(
            conn,
            actor,
            audit.field_changes(
                "segment",
                segment_id,
                {
                    "name": before.name,
                    "description": before.description,
                    "kind": before.kind,
                    "condition": before.condition,
                },
                {
                    "name": after.name,
                    "description": after.description,
                    "kind": after.kind,
                    "condition": after.condition,
                },
            ),
        )
        return after


async def refresh(
    conn: asyncpg.Connection,
    actor: audit.Actor,
    segment_id: int,
    *,
    pool: asyncpg.Pool | None = None,
) -> Segment:
    """Materialise again on request: a new snapshot (static) or a full recount (dynamic)."""
    async with conn.transaction():
        segment = await get(conn, segment_id, lock=True)
        if segment.origin is not None and segment.origin.get("op") == "import":
            raise Conflict(
                f"segment {segment_id} is an imported list of clients: there is nothing to "
                "recompute (import the list again)"
            )
        if segment.origin is not None:
            await _fill_set_operation(
                conn,
                segment_id,
                segment.origin["op"],
                segment.origin["left"],
                segment.origin["right"],
                pool=pool,
            )
        else:
            parsed, catalogue = await compile_condition(conn, segment.condition)
            await materialise(conn, segment_id, parsed, catalogue, pool=pool)
        after = await get(conn, segment_id)
        await audit.record(
            conn,
            actor,
            [
                audit.Change(
                    "segment",
                    str(segment_id),
                    "refresh",
                    "member_count",
                    segment.member_count,
                    after.member_count,
                )
            ],
        )
        return after


async def delete(conn: asyncpg.Connection, actor: audit.Actor, segment_id: int) -> None:
    """Delete a segment (its members are purged later); refused while a campaign or stop
    list uses it."""
    async with conn.transaction():
        segment = await get(conn, segment_id, lock=True)
        campaign = await conn.fetchval(
            "SELECT id FROM campaigns WHERE audience->>'kind' = 'segment' "
            "AND audience->>'segment_id' = $1 AND status = ANY($2::text[]) LIMIT 1",
            str(segment_id),
            list(_UNFINISHED),
        )
        if campaign is not None:
            raise Conflict(
                f"segment {segment_id} is the audience of campaign {campaign}, "
                "which is not finished"
            )
        entry = await conn.fetchval(
            "SELECT id FROM stop_list_entries WHERE segment_id = $1 LIMIT 1", segment_id
        )
        if entry is not None:
            raise Conflict(
                f"segment {segment_id} is used by stop-list entry {entry}; remove the entry first"
            )
        members_set = await conn.fetchval(
            "DELETE FROM segments WHERE id = $1 RETURNING members_set", segment_id
        )
        if members_set is not None:
            await member_sets.retire(conn, members_set)
        await audit.record(
            conn,
            actor,
            [
                audit.Change(
                    "segment",
                    str(segment_id),
                    "delete",
                    None,
                    {
                        "name": segment.name,
                        "kind": segment.kind,
                        "condition": segment.condition,
                        "origin": segment.origin,
                    },
                    None,
                )
            ],
        )


async def preview(conn: asyncpg.Connection, raw: Any, *, exact: bool = False) -> Preview:
    """Count what a condition being edited selects: exact on small data or when asked,
    else estimated from a sample of about SAMPLE_CLIENTS clients."""
    parsed, catalogue = await compile_condition(conn, raw)
    started = time.perf_counter()
    clients = await conn.fetchval(
        "SELECT reltuples::bigint FROM pg_class WHERE oid = 'clients'::regclass"
    )
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
            await conn.execute(
                "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; "
                "SET LOCAL jit = off"
            )
            query = count_query(parsed, catalogue, "sample", sample_percent=percent)
            count = round(await conn.fetchval(query.sql, *query.params) * 100.0 / percent)
    return Preview(
        int(count), percent is None, percent, round((time.perf_counter() - started) * 1000, 1)
    )


# The current set's rows by their key, in client_id order (keyset).
_PAGE = (
    "SELECT client_id FROM segment_member_rows "
    "WHERE set_id = (SELECT members_set FROM segments WHERE id = $1) AND client_id > $2 "
    "ORDER BY client_id LIMIT $3"
)


async def members_page(
    conn: asyncpg.Connection, segment_id: int, *, after_client_id: int, limit: int
) -> list[int]:
    """Member client ids in ascending order after ``after_client_id`` (keyset)."""
    await get(conn, segment_id)
    rows = await conn.fetch(_PAGE, segment_id, after_client_id, limit)
    return [r["client_id"] for r in rows]


async def export_members(
    conn: asyncpg.Connection, segment_id: int, *, chunk: int = 10_000
) -> AsyncIterator[bytes]:
    """The members as CSV (header, then one client id a line), in chunks, walked by keyset."""
    await get(conn, segment_id)
    yield b"client_id\n"
    after = 0
    while True:
        rows = await conn.fetch(_PAGE, segment_id, after, chunk)
        if not rows:
            return
        yield "".join(f"{r['client_id']}\n" for r in rows).encode()
        after = rows[-1]["client_id"]


async def members_export_query(conn: asyncpg.Connection, segment_id: int) -> ExportQuery:
    """Every member client id, ascending (the order of ``members_page``)."""
    await get(conn, segment_id)
    return ExportQuery(
        "SELECT client_id FROM segment_member_rows "
        "WHERE set_id = (SELECT members_set FROM segments WHERE id = $1) ORDER BY client_id",
        (segment_id,),
        ("client_id",),
        title=f"segment {segment_id}",
    )


# Each set operation over two sets ($1, $2) within one range of client ids ($3 <= id < $4),
# walking both sets by their key (two index scans joined by merge).
_SET_SQL: dict[str, str] = {
    "union": """
        SELECT coalesce(x.client_id, y.client_id) AS client_id
        FROM (SELECT client_id FROM segment_member_rows
              WHERE set_id = $1 AND client_id >= {low} AND client_id < {high}) x
        FULL JOIN (SELECT client_id FROM segment_member_rows
                   WHERE set_id = $2 AND client_id >= {low} AND client_id < {high}) y
               ON y.client_id = x.client_id""",
    "intersection": """
        SELECT x.client_id
        FROM segment_member_rows x JOIN segment_member_rows y
             ON y.set_id = $2 AND y.client_id = x.client_id
                AND y.client_id >= {low} AND y.client_id < {high}
        WHERE x.set_id = $1 AND x.client_id >= {low} AND x.client_id < {high}""",
    "exclusion": """
        SELECT x.client_id
        FROM segment_member_rows x
        WHERE x.set_id = $1 AND x.client_id >= {low} AND x.client_id < {high}
          AND NOT EXISTS (SELECT 1 FROM segment_member_rows y
                          WHERE y.set_id = $2 AND y.client_id = x.client_id
                            AND y.client_id >= {low} AND y.client_id < {high})""",
}


# A new set's rows are not in the statistics yet: the planner takes a set of millions for a
# few rows and hashes or bitmap-scans it (twice as slow, measured) instead of merging the
# two sets' index scans.
_SET_PLAN = (
    "; SET LOCAL enable_hashjoin = off; SET LOCAL enable_bitmapscan = off; "
    "SET LOCAL enable_seqscan = off"
)


async def _fill_set_operation(
    conn: asyncpg.Connection,
    segment_id: int,
    op: str,
    left: int,
    right: int,
    *,
    pool: asyncpg.Pool | None = None,
) -> int:
    sources = {
        r["id"]: r
        for r in await conn.fetch(
            "SELECT s.id, s.members_set, s.member_count, "
            "(SELECT min(client_id) FROM segment_member_rows WHERE set_id = s.members_set) AS low, "
            "(SELECT max(client_id) FROM segment_member_rows WHERE set_id = s.members_set) AS high "
            "FROM segments s WHERE s.id = ANY($1::bigint[])",
            [left, right],
        )
    }
    for source in (left, right):
        if source not in sources:
            raise Conflict(f"segment {source} used by this set operation no longer exists")
    lows = [r["low"] for r in sources.values() if r["low"] is not None]
    highs = [r["high"] for r in sources.values() if r["high"] is not None]
    bounds = (min(lows), max(highs)) if lows else None
    rows = sum(r["member_count"] for r in sources.values())
    template = _SET_SQL[op]

    def in_range(low: str, high: str) -> str:
        return template.format(low=low, high=high)

    set_id, count = await member_sets.fill(
        conn,
        in_range,
        [sources[left]["members_set"], sources[right]["members_set"]],
        pool=pool,
        bounds=bounds,
        rows=rows,
        plan=_SET_PLAN,
    )
    await member_sets.adopt(conn, segment_id, set_id, count)
    return count


async def combine(
    conn: asyncpg.Connection,
    actor: audit.Actor,
    left: int,
    op: SetOp,
    right: int,
    *,
    name: str | None = None,
    pool: asyncpg.Pool | None = None,
) -> Segment:
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
            "VALUES ($1, 'static', $2, $3, $4) RETURNING id",
            new_name,
            origin,
            actor.login,
            actor.id,
        )
        count = await _fill_set_operation(conn, segment_id, op, left, right, pool=pool)
        await audit.record(
            conn,
            actor,
            [
                audit.Change(
                    "segment",
                    str(segment_id),
                    "create",
                    None,
                    None,
                    {"name": new_name, "kind": "static", "origin": origin, "members": count},
                )
            ],
        )
        return await get(conn, segment_id)


# --- a static segment from a list of Client_IDs (a CSV file) --------------------------

MAX_IMPORT_IDS = 5_000_000


class ImportedIds(msgspec.Struct, frozen=True):
    """A parsed Client_ID list: the ids (unique, in order) and the rows refused."""

    client_ids: list[int]
    rows: int
    refused: list[tuple[int, str]]


def parse_client_ids(text: str) -> ImportedIds:
    """Client_IDs from a CSV: the first column of each row, an optional header row
    (client_id); ``,`` or ``;`` separated. Rows that are not an id are listed by number."""
    ids: dict[int, None] = {}
    refused: list[tuple[int, str]] = []
    rows = 0
    for number, line in enumerate(text.splitlines(), 1):
        cell = line.replace(";", ",").split(",", 1)[0].strip().strip('"').strip()
        if not cell:
            continue
        if (
            number == 1
            and not cell.isdigit()
            and cell.lower().replace(" ", "_")
            in (
                "client_id",
                "clientid",
                "id",
            )
        ):
            continue
        rows += 1
        if not cell.isdigit() or not 1 <= int(cell) <= 2**63 - 1:
            if len(refused) < 100:
                refused.append((number, cell[:40]))
            continue
        ids[int(cell)] = None
    if len(ids) > MAX_IMPORT_IDS:
        raise InvalidInput("file", f"{len(ids)} ids; at most {MAX_IMPORT_IDS} in one list")
    if not ids:
        raise InvalidInput("file", "the file has no Client_ID (one id a row, first column)")
    return ImportedIds(list(ids), rows, refused)


async def import_ids(
    conn: asyncpg.Connection,
    actor: audit.Actor,
    *,
    name: str,
    client_ids: list[int],
    description: str = "",
) -> tuple[Segment, int]:
    """A new static segment of the listed clients that exist; returns it and how many of
    the ids are no client (left out). Journalled; its origin says it was imported."""
    name = _check_name(name, description)
    async with conn.transaction():
        segment_id = await conn.fetchval(
            "INSERT INTO segments (name, description, kind, origin, created_by, created_by_id) "
            "VALUES ($1, $2, 'static', $3, $4, $5) RETURNING id",
            name,
            description,
            {"op": "import", "rows": len(client_ids)},
            actor.login,
            actor.id,
        )

        def in_range(low: str, high: str) -> str:
            return (
                "SELECT c.id AS client_id FROM clients c WHERE c.id = ANY($1::bigint[]) "
                f"AND c.id >= {low} AND c.id < {high}"
            )

        set_id, count = await member_sets.fill(conn, in_range, [client_ids])
        await member_sets.adopt(conn, segment_id, set_id, count)
        await audit.record(
            conn,
            actor,
            [
                audit.Change(
                    "segment",
                    str(segment_id),
                    "create",
                    None,
                    None,
                    {"name": name, "kind": "static", "origin": "import", "members": count},
                )
            ],
        )
        return await get(conn, segment_id), len(client_ids) - count
