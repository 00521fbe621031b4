"""Member sets: a materialisation fills a new set and switches to it; old sets are purged."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from test_segment_compiler import load_population

from crm.segments import member_sets, store
from crm.segments.refresh import refresh_dirty, run_duty
from herald.audit import SYSTEM
from herald.db import create_pool, init_connection
from herald.settings import Settings

LVIV = {"attribute": "account.region", "op": "equals", "value": "UA-46"}
TWO = {"attribute": "account.region", "op": "in", "value": ["UA-46", "UA-30"]}
Ranges = list[tuple[int, int]]


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(settings)
    yield pool
    await pool.close()


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> Ranges:
    """Every fill with a pool is shared out, however small; the id ranges inserted are listed."""
    monkeypatch.setattr(member_sets, "PARALLEL_MIN_ROWS", 0)
    ranges: Ranges = []
    insert = member_sets._insert

    async def spy(
        conn: asyncpg.Connection,
        build: member_sets.RangeQuery,
        params: list[object],
        set_id: int,
        low: int,
        high: int,
    ) -> int:
        ranges.append((low, high))
        return await insert(conn, build, params, set_id, low, high)

    monkeypatch.setattr(member_sets, "_insert", spy)
    return ranges


async def members(conn: asyncpg.Connection, segment_id: int) -> set[int]:
    return {
        r["client_id"]
        for r in await conn.fetch(
            "SELECT client_id FROM segment_members WHERE segment_id = $1", segment_id
        )
    }


async def in_regions(conn: asyncpg.Connection, *regions: str) -> set[int]:
    return {
        r["client_id"]
        for r in await conn.fetch(
            "SELECT DISTINCT client_id FROM accounts WHERE region_code = ANY($1::text[])",
            list(regions),
        )
    }


async def members_set(conn: asyncpg.Connection, segment_id: int) -> int:
    return await conn.fetchval("SELECT members_set FROM segments WHERE id = $1", segment_id)


async def orphan_rows(conn: asyncpg.Connection) -> int:
    """Rows of sets no segment points at."""
    return await conn.fetchval(
        "SELECT count(*) FROM segment_member_rows r "
        "WHERE NOT EXISTS (SELECT 1 FROM segments s WHERE s.members_set = r.set_id)"
    )


async def purge_all(pool: asyncpg.Pool) -> int:
    done = 0
    while deleted := await member_sets.purge(pool, chunk=7, grace_s=0.0):
        done += deleted
    return done


async def test_a_shared_fill_selects_what_one_query_would(
    app_conn: asyncpg.Connection, pool: asyncpg.Pool, shared: Ranges
) -> None:
    await load_population(app_conn, n=200)
    segment = await store.create(
        app_conn, SYSTEM, name="two", kind="static", condition=TWO, pool=pool
    )
    expected = await in_regions(app_conn, "UA-46", "UA-30")
    assert 10 < len(expected) < 200
    assert await members(app_conn, segment.id) == expected
    assert segment.member_count == len(expected)
    # Both halves of the id range were written, and the set was adopted (not left to purge)
    rows = [
        r["client_id"]
        for r in await app_conn.fetch(
            "SELECT client_id FROM segment_member_rows WHERE set_id = $1 ORDER BY client_id",
            await members_set(app_conn, segment.id),
        )
    ]
    assert rows[0] < 100 < rows[-1]
    assert len(shared) == member_sets.FILLERS and shared[0][1] == shared[1][0]
    assert await app_conn.fetchval("SELECT count(*) FROM segment_member_sets_retired") == 0
    # The members page and the export read the same set
    page = await store.members_page(app_conn, segment.id, after_client_id=0, limit=1000)
    assert page == sorted(expected)
    exported = b"".join(
        [chunk async for chunk in store.export_members(app_conn, segment.id, chunk=9)]
    )
    assert exported == ("client_id\n" + "".join(f"{c}\n" for c in sorted(expected))).encode()


async def test_shared_set_operations_match_python_sets(
    app_conn: asyncpg.Connection, pool: asyncpg.Pool, shared: Ranges
) -> None:
    await load_population(app_conn, n=200)
    left = await store.create(app_conn, SYSTEM, name="l", kind="static", condition=TWO, pool=pool)
    right = await store.create(
        app_conn,
        SYSTEM,
        name="r",
        kind="static",
        pool=pool,
        condition={"attribute": "account.region", "op": "in", "value": ["UA-30", "UA-51"]},
    )
    a, b = await members(app_conn, left.id), await members(app_conn, right.id)
    assert a & b and a - b and b - a
    combinations: tuple[tuple[store.SetOp, set[int]], ...] = (
        ("union", a | b),
        ("intersection", a & b),
        ("exclusion", a - b),
    )
    for op, expected in combinations:
        made = await store.combine(app_conn, SYSTEM, left.id, op, right.id, pool=pool)
        assert await members(app_conn, made.id) == expected, op
        assert made.member_count == len(expected)
        # Refreshing the result fills a new set with the same members
        before = await members_set(app_conn, made.id)
        await store.refresh(app_conn, SYSTEM, made.id, pool=pool)
        assert await members_set(app_conn, made.id) != before
        assert await members(app_conn, made.id) == expected
    # Two segments, three results, three refreshes: each one shared out
    assert len(shared) == member_sets.FILLERS * 8


async def test_replacing_members_retires_the_old_set_and_the_duty_purges_it(
    app_conn: asyncpg.Connection, pool: asyncpg.Pool, shared: Ranges
) -> None:
    await load_population(app_conn, n=120)
    segment = await store.create(
        app_conn, SYSTEM, name="s", kind="static", condition=LVIV, pool=pool
    )
    old_set = await members_set(app_conn, segment.id)
    old_rows = await app_conn.fetchval(
        "SELECT count(*) FROM segment_member_rows WHERE set_id = $1", old_set
    )
    assert old_rows == segment.member_count > 0
    # When the condition changes, the segment points at a new set at once ...
    await store.update(app_conn, SYSTEM, segment.id, condition=TWO, pool=pool)
    assert await members(app_conn, segment.id) == await in_regions(app_conn, "UA-46", "UA-30")
    assert await members_set(app_conn, segment.id) != old_set
    assert (
        await app_conn.fetchval(
            "SELECT count(*) FROM segment_member_sets_retired WHERE set_id = $1", old_set
        )
        == 1
    )
    # ... and the old rows stay for the grace period (a reader walking pages can finish)
    assert await member_sets.purge(pool) == 0
    assert await orphan_rows(app_conn) == old_rows
    # Once it is over, the duty deletes them a chunk at a time, and nothing of the current set
    await app_conn.execute(
        "UPDATE segment_member_sets_retired SET retired_at = herald_now() - interval '1 hour'"
    )
    current = await members(app_conn, segment.id)
    while await run_duty(pool) or await orphan_rows(app_conn):
        pass
    assert await orphan_rows(app_conn) == 0
    assert await app_conn.fetchval("SELECT count(*) FROM segment_member_sets_retired") == 0
    assert await members(app_conn, segment.id) == current


async def test_readers_see_the_old_members_until_the_switch_commits(
    app_conn: asyncpg.Connection, pool: asyncpg.Pool, settings: Settings, shared: Ranges
) -> None:
    await load_population(app_conn, n=120)
    segment = await store.create(
        app_conn, SYSTEM, name="s", kind="static", condition=LVIV, pool=pool
    )
    old = await members(app_conn, segment.id)
    reader = await asyncpg.connect(settings.database_url)
    try:
        async with app_conn.transaction():
            await store.update(app_conn, SYSTEM, segment.id, condition=TWO, pool=pool)
            # The new set's rows are committed by the helpers, but the switch is not yet
            assert await members(reader, segment.id) == old
        assert await members(reader, segment.id) == await in_regions(app_conn, "UA-46", "UA-30")
    finally:
        await reader.close()


async def test_a_fill_rolled_back_changes_nothing_and_leaves_nothing(
    app_conn: asyncpg.Connection, pool: asyncpg.Pool, shared: Ranges
) -> None:
    await load_population(app_conn, n=120)
    segment = await store.create(
        app_conn, SYSTEM, name="s", kind="static", condition=LVIV, pool=pool
    )
    old = await members(app_conn, segment.id)

    class Abandon(Exception):
        pass

    with pytest.raises(Abandon):
        async with app_conn.transaction():
            await store.update(app_conn, SYSTEM, segment.id, condition=TWO, pool=pool)
            raise Abandon
    assert await members(app_conn, segment.id) == old
    assert (await store.get(app_conn, segment.id)).member_count == len(old)
    # The helpers' committed rows belong to a set still listed as retired: purged later
    assert await orphan_rows(app_conn) > 0
    assert await purge_all(pool) > 0
    assert await orphan_rows(app_conn) == 0
    assert await members(app_conn, segment.id) == old


async def test_a_set_being_filled_is_not_purged(
    app_conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    await app_conn.execute(
        "INSERT INTO segment_member_sets_retired (set_id, retired_at) "
        "VALUES (424242, herald_now() - interval '1 hour')"
    )
    await app_conn.execute(
        "INSERT INTO segment_member_rows (set_id, client_id) "
        "SELECT 424242, g FROM generate_series(1, 20) g"
    )
    async with app_conn.transaction():
        await app_conn.execute(
            "SELECT 1 FROM segment_member_sets_retired WHERE set_id = 424242 FOR UPDATE"
        )
        assert await member_sets.purge(pool, grace_s=0.0) == 0
    assert await purge_all(pool) == 20
    assert await app_conn.fetchval("SELECT count(*) FROM segment_member_sets_retired") == 0


async def test_deleting_a_segment_retires_its_members(
    app_conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    await load_population(app_conn, n=80)
    segment = await store.create(app_conn, SYSTEM, name="s", kind="static", condition=LVIV)
    assert segment.member_count > 0
    await store.delete(app_conn, SYSTEM, segment.id)
    assert await members(app_conn, segment.id) == set()
    assert await orphan_rows(app_conn) == segment.member_count
    assert await purge_all(pool) == segment.member_count
    assert await orphan_rows(app_conn) == 0


async def test_a_busy_pool_fills_on_the_callers_connection(
    app_conn: asyncpg.Connection, settings: Settings, shared: Ranges
) -> None:
    await load_population(app_conn, n=120)
    busy = await asyncpg.create_pool(
        settings.database_url, min_size=1, max_size=1, init=init_connection
    )
    try:
        async with busy.acquire():
            segment = await store.create(
                app_conn, SYSTEM, name="s", kind="static", condition=LVIV, pool=busy
            )
        assert await members(app_conn, segment.id) == await in_regions(app_conn, "UA-46")
        assert await app_conn.fetchval("SELECT count(*) FROM segment_member_sets_retired") == 0
        assert len(shared) == 1  # one INSERT of every id
    finally:
        await busy.close()


async def test_a_dynamic_segment_stays_incremental_across_a_switch(
    app_conn: asyncpg.Connection, pool: asyncpg.Pool, shared: Ranges
) -> None:
    await load_population(app_conn, n=120)
    segment = await store.create(
        app_conn, SYSTEM, name="d", kind="dynamic", condition=LVIV, pool=pool
    )
    assert len(shared) == member_sets.FILLERS
    outside = min(
        set(range(1, 121)) - await in_regions(app_conn, "UA-46") - {c for c in range(10, 121, 10)}
    )  # every tenth client has no account
    # When a client moves to Lviv, the next refresh adds it to the current set
    await app_conn.execute(
        "UPDATE accounts SET region_code = 'UA-46' WHERE client_id = $1", outside
    )
    await refresh_dirty(pool)
    assert outside in await members(app_conn, segment.id)
    assert (await store.get(app_conn, segment.id)).member_count == len(
        await in_regions(app_conn, "UA-46")
    )
    # After a full re-evaluation (a new set), changes still reach the segment
    await store.refresh(app_conn, SYSTEM, segment.id, pool=pool)
    await app_conn.execute(
        "UPDATE accounts SET region_code = 'UA-30' WHERE client_id = $1", outside
    )
    await refresh_dirty(pool)
    assert await members(app_conn, segment.id) == await in_regions(app_conn, "UA-46")
    assert outside not in await members(app_conn, segment.id)
    assert (await store.get(app_conn, segment.id)).member_count == len(
        await in_regions(app_conn, "UA-46")
    )
