"""Member sets: one generation of a segment's members, filled, swapped in, purged later.

A segment points at its current set (``segments.members_set``); the view
``segment_members`` shows that set's rows under the segment's id (migration 0026).
Replacing the members fills a new set and points the segment at it in the caller's
transaction, so a reader sees the old set or the new one, and a rollback leaves the old
one in place. The old set is retired and deleted later by ``purge`` (a scheduler duty):
deleting millions of rows is no longer part of a materialisation.

A large fill runs on ``FILLERS`` pool connections at once, each over one range of client
ids, all from one exported snapshot: the set is exactly what one query at that moment
would have selected, and both cores work on it. Those connections
commit their rows before the caller commits the switch; the new set is listed as retired
until a segment adopts it, so a fill that fails, is cancelled or is cut by a crash is
purged like any replaced set.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

import asyncpg

# Below this many clients (or source members) one INSERT on the caller's connection is
# quicker than sharing out the work.
PARALLEL_MIN_ROWS = 300_000
FILLERS = 2
# A helper connection not free within this wait: fill on the caller's connection rather
# than wait for a busy pool (or deadlock one whose connections all wait for helpers).
ACQUIRE_TIMEOUT_S = 0.5
PURGE_CHUNK = 20_000
# A retired set stays this long: a reader walking it page by page can finish, and a set
# being filled is never purged from under its fill.
PURGE_GRACE_S = 60.0
BULK_SETTINGS = "SET LOCAL work_mem = '256MB'; SET LOCAL statement_timeout = '20min'"
_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+(-[0-9]+)?$")
_LOWEST, _BEYOND = -(2**63), 2**63 - 1

# Builds ``SELECT client_id ...`` limited to client_id >= lo and < hi from the placeholders
# of lo and hi; the ids may come in any order.
RangeQuery = Callable[[str, str], str]


async def fill(
    conn: asyncpg.Connection,
    build: RangeQuery,
    params: Sequence[Any],
    *,
    pool: asyncpg.Pool | None = None,
    bounds: tuple[int, int] | None = None,
    rows: int = 0,
    plan: str = "",
) -> tuple[int, int]:
    """A new set of the ids ``build`` selects; returns (set id, members). In a transaction.

    With a ``pool``, the ``bounds`` of the ids the query may return (lowest, highest) and
    ``rows`` it reads (an estimate) of at least PARALLEL_MIN_ROWS, the work is shared out.
    ``plan``: more ``SET LOCAL`` settings for the fill's transactions.
    """
    if pool is not None and bounds is not None and rows >= PARALLEL_MIN_ROWS:
        helpers = await _acquire(pool, FILLERS)
        if helpers:
            try:
                return await _fill_shared(conn, helpers, build, params, bounds, plan)
            finally:
                for helper in helpers:
                    await pool.release(helper)
    await conn.execute(BULK_SETTINGS + plan)
    set_id = await conn.fetchval("SELECT nextval('segment_member_set_seq')")
    count = await _insert(conn, build, params, set_id, _LOWEST, _BEYOND)
    return set_id, count


async def adopt(conn: asyncpg.Connection, segment_id: int, set_id: int, count: int) -> None:
    """Point the segment at its new set and retire the old one (in the fill's transaction)."""
    old = await conn.fetchval(
        "UPDATE segments s SET members_set = $2, member_count = $3, materialised_at = herald_now(), "
        "updated_at = herald_now() FROM segments o WHERE s.id = $1 AND o.id = s.id "
        "RETURNING o.members_set",
        segment_id,
        set_id,
        count,
    )
    await conn.execute("DELETE FROM segment_member_sets_retired WHERE set_id = $1", set_id)
    if old is not None:
        await retire(conn, old)


async def retire(conn: asyncpg.Connection, set_id: int) -> None:
    """The set's rows are to be deleted once no reader needs them."""
    await conn.execute(
        "INSERT INTO segment_member_sets_retired (set_id) VALUES ($1) "
        "ON CONFLICT (set_id) DO NOTHING",
        set_id,
    )


async def purge(
    pool: asyncpg.Pool, *, chunks: int = 1, chunk: int = PURGE_CHUNK, grace_s: float = PURGE_GRACE_S
) -> int:
    """Delete up to ``chunks`` x ``chunk`` rows of retired sets; returns how many rows.

    Each chunk is its own short transaction, so the duty never holds much at once; an
    entry locked by a fill in progress is skipped.
    """
    done = 0
    for _ in range(chunks):
        async with pool.acquire() as conn, conn.transaction():
            set_id = await conn.fetchval(
                "SELECT r.set_id FROM segment_member_sets_retired r "
                "WHERE r.retired_at < herald_now() - make_interval(secs => $1) "
                "AND NOT EXISTS (SELECT 1 FROM segments s WHERE s.members_set = r.set_id) "
                "ORDER BY r.retired_at, r.set_id LIMIT 1 FOR UPDATE SKIP LOCKED",
                grace_s,
            )
            if set_id is None:
                return done
            status = await conn.execute(
                "DELETE FROM segment_member_rows WHERE set_id = $1 AND client_id IN ("
                " SELECT client_id FROM segment_member_rows WHERE set_id = $1"
                " ORDER BY client_id LIMIT $2)",
                set_id,
                chunk,
            )
            deleted = int(status.split()[-1])
            done += deleted
            if deleted < chunk:
                await conn.execute(
                    "DELETE FROM segment_member_sets_retired WHERE set_id = $1", set_id
                )
    return done


async def _acquire(pool: asyncpg.Pool, n: int) -> list[asyncpg.Connection]:
    helpers: list[asyncpg.Connection] = []
    try:
        for _ in range(n):
            helpers.append(await pool.acquire(timeout=ACQUIRE_TIMEOUT_S))
    except TimeoutError:
        for helper in helpers:
            await pool.release(helper)
        return []
    return helpers


async def _fill_shared(
    conn: asyncpg.Connection,
    helpers: list[asyncpg.Connection],
    build: RangeQuery,
    params: Sequence[Any],
    bounds: tuple[int, int],
    plan: str,
) -> tuple[int, int]:
    set_id = await helpers[0].fetchval(
        "INSERT INTO segment_member_sets_retired (set_id) "
        "VALUES (nextval('segment_member_set_seq')) RETURNING set_id"
    )
    if (
        await conn.fetchval(
            "SELECT set_id FROM segment_member_sets_retired WHERE set_id = $1 FOR UPDATE", set_id
        )
        is None
    ):
        raise RuntimeError(f"member set {set_id} was purged before its fill began")
    low, high = bounds
    step = (high - low) // len(helpers) + 1
    edges = [low + i * step for i in range(len(helpers))] + [_BEYOND]
    edges[0] = _LOWEST
    async with AsyncExitStack() as transactions:
        # The first helper's snapshot, taken after the caller locked the segment, is every
        # helper's: together they select what one query would have. (Exported by a helper,
        # not by the caller, which may be inside a savepoint.)
        snapshot = ""
        for helper in helpers:
            await transactions.enter_async_context(helper.transaction(isolation="repeatable_read"))
            if not snapshot:
                snapshot = await helper.fetchval("SELECT pg_export_snapshot()")
                if not _SNAPSHOT_ID.match(snapshot):
                    raise RuntimeError(f"unexpected snapshot id {snapshot!r}")
            else:
                await helper.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            await helper.execute(BULK_SETTINGS + plan)
        results = await asyncio.gather(
            *(
                _insert(helper, build, params, set_id, edges[i], edges[i + 1])
                for i, helper in enumerate(helpers)
            ),
            return_exceptions=True,
        )
        # Every helper has finished before an error is raised, and leaving this block then
        # rolls all of them back.
        counts: list[int] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            counts.append(result)
    return set_id, sum(counts)


async def _insert(
    conn: asyncpg.Connection,
    build: RangeQuery,
    params: Sequence[Any],
    set_id: int,
    low: int,
    high: int,
) -> int:
    n = len(params)
    # In client_id order: the rows of a new set are appended at the right edge of the key.
    status = await conn.execute(
        f"INSERT INTO segment_member_rows (set_id, client_id) "
        f"SELECT ${n + 1}::bigint, client_id FROM ({build(f'${n + 2}::bigint', f'${n + 3}::bigint')}) m "
        f"ORDER BY client_id",
        *params,
        set_id,
        low,
        high,
    )
    return int(status.split()[-1])
