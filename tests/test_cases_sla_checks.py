"""The SLA evaluator's schedule (migration 0027): checks live in ``case_sla_checks``, and
a check that finds nothing new leaves the ``cases`` row as it was (same ``xmin``: no new
row version, no index entries, no change notification). Time is driven by ``now``."""

from __future__ import annotations

import datetime as dt

import asyncpg
from conftest import login_as
from test_cases_sla import _calendar, _case, _move, _policy, kyiv

from crm.cases.sla_evaluator import run_sla_cycle
from herald.db import create_pool


async def _xmin(conn: asyncpg.Connection, case_id: int) -> str:
    return await conn.fetchval("SELECT xmin::text FROM cases WHERE id = $1", case_id)


async def _next_check(conn: asyncpg.Connection, case_id: int) -> dt.datetime | None:
    return await conn.fetchval(
        "SELECT next_check_at FROM case_sla_checks WHERE case_id = $1", case_id
    )


async def _force_due(conn: asyncpg.Connection, case_id: int, at: dt.datetime) -> None:
    await conn.execute(
        "UPDATE case_sla_checks SET next_check_at = $2 WHERE case_id = $1", case_id, at
    )


async def test_a_check_that_changes_nothing_does_not_update_the_case(
    client, demo_users, settings, app_conn
) -> None:
    admin = await login_as(client, "admin")
    cal = await _calendar(client, admin)
    await _policy(
        client,
        admin,
        cal["id"],
        case_type="technical",
        first_response_minutes=60,
        resolution_minutes=480,
    )
    # Monday 09:00: first response due 10:00, its warning at 09:48
    case_id = await _case(app_conn, kyiv(2026, 12, 7, 9))
    assert await _next_check(app_conn, case_id) == kyiv(2026, 12, 7, 9, 48)
    row = await app_conn.fetchrow("SELECT * FROM cases WHERE id = $1", case_id)
    assert "sla_next_check_at" not in row.keys()  # noqa: SIM118  # `in` a Record looks at values
    pool = await create_pool(settings)
    try:
        before = await _xmin(app_conn, case_id)
        await _force_due(app_conn, case_id, kyiv(2026, 12, 7, 9, 10))
        assert await run_sla_cycle(pool, now=kyiv(2026, 12, 7, 9, 20)) == 1
        assert await _xmin(app_conn, case_id) == before
        assert await _next_check(app_conn, case_id) == kyiv(2026, 12, 7, 9, 48)
        # The warning changes the state: the row is written, once
        assert await run_sla_cycle(pool, now=kyiv(2026, 12, 7, 9, 50)) == 1
        row = await app_conn.fetchrow(
            "SELECT sla_state, xmin::text AS x FROM cases WHERE id = $1", case_id
        )
        assert row["sla_state"] == "warning" and row["x"] != before
        assert await _next_check(app_conn, case_id) == kyiv(2026, 12, 7, 10)
        # Checked again before the due time: the warning is recorded already, nothing changes
        await _force_due(app_conn, case_id, kyiv(2026, 12, 7, 9, 51))
        assert await run_sla_cycle(pool, now=kyiv(2026, 12, 7, 9, 55)) == 1
        assert await _xmin(app_conn, case_id) == row["x"]
        assert (
            await app_conn.fetchval(
                "SELECT count(*) FROM case_sla_warnings WHERE case_id = $1", case_id
            )
            == 1
        )
        assert (
            await app_conn.fetchval(
                "SELECT count(*) FROM case_events WHERE case_id = $1 AND kind = 'sla'", case_id
            )
            == 1
        )
        # Breached: written again; both targets still open, so a check stays for resolution
        assert await run_sla_cycle(pool, now=kyiv(2026, 12, 7, 10, 5)) == 1
        row = await app_conn.fetchrow(
            "SELECT sla_state, xmin::text AS x FROM cases WHERE id = $1", case_id
        )
        assert row["sla_state"] == "breached"
        assert await _next_check(app_conn, case_id) == kyiv(2026, 12, 7, 15, 24)  # 80 % of 8 h
        await _force_due(app_conn, case_id, kyiv(2026, 12, 7, 10, 6))
        assert await run_sla_cycle(pool, now=kyiv(2026, 12, 7, 10, 7)) == 1
        assert await _xmin(app_conn, case_id) == row["x"]
        # Closing the case drops its check
        await _move(app_conn, case_id, "closed", kyiv(2026, 12, 7, 11))
        assert await _next_check(app_conn, case_id) is None
    finally:
        await pool.close()


async def test_a_case_locked_by_another_transaction_is_checked_at_the_next_cycle(
    client, demo_users, settings, app_conn
) -> None:
    admin = await login_as(client, "admin")
    cal = await _calendar(client, admin)
    await _policy(client, admin, cal["id"], case_type="technical", first_response_minutes=60)
    case_id = await _case(app_conn, kyiv(2026, 12, 7, 9))
    pool = await create_pool(settings)
    try:
        async with pool.acquire() as other, other.transaction():
            await other.execute("SELECT 1 FROM cases WHERE id = $1 FOR UPDATE", case_id)
            # The warning is due but the case row is held: the evaluator neither waits nor
            # records anything, and leaves the check due for its next cycle
            assert await run_sla_cycle(pool, now=kyiv(2026, 12, 7, 9, 50)) == 0
            assert await _next_check(app_conn, case_id) == kyiv(2026, 12, 7, 9, 50, 1)
        assert await app_conn.fetchval("SELECT sla_state FROM cases WHERE id = $1", case_id) == "ok"
        assert await run_sla_cycle(pool, now=kyiv(2026, 12, 7, 9, 51)) == 1
        assert (
            await app_conn.fetchval("SELECT sla_state FROM cases WHERE id = $1", case_id)
            == "warning"
        )
        assert (
            await app_conn.fetchval(
                "SELECT count(*) FROM case_sla_warnings WHERE case_id = $1", case_id
            )
            == 1
        )
    finally:
        await pool.close()
