"""Bulk cases for ``herald bench cases``: millions of historical cases and the open work.

Generated inside PostgreSQL (``INSERT ... SELECT`` over ``generate_series``) in chunks,
with the secondary indexes of ``cases`` dropped during the load and rebuilt after it
from their own definitions, the way the client seeder loads 13 M clients. Deterministic:
every value is a function of the row number. Historical cases are closed, spread over
five years, with first-response and resolution times and SLA outcomes set; open cases
are spread over the last days with deadlines around now, so that some are breached,
some at risk and most in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import asyncpg

Say = Callable[[str], None]
CHUNK = 500_000

_CHANNELS = "ARRAY['call','viber','telegram','site','cabinet','email','app','walk_in']"
_PRIORITIES = "ARRAY['low','normal','normal','normal','high','urgent']"
_TYPES = "ARRAY['technical','financial','informational']"

# $1 first row number, $2 last, $3 rows in all, $4 first client id, $5 clients,
# $6 category ids, $7 agent ids, $8 the "now" of the load. h: a per-row hash.
_HISTORY = f"""
INSERT INTO cases (number, channel, client_id, identified_by, contact_phone, subject, body,
    text_hash, category_id, case_type, priority, status, status_changed_at, group_code,
    assignee_id, created_by_login, created_at, updated_at, last_inbound_at, last_outbound_at,
    first_response_due_at, resolution_due_at, first_response_at, resolved_at, sla_state)
SELECT 'ЗВ-' || to_char(created, 'YYYY') || '-Б' || lpad(g::text, 9, '0'),
       ({_CHANNELS})[1 + h % 8],
       CASE WHEN h % 10 < 8 THEN $4 + (h / 10) % $5 END,
       CASE WHEN h % 10 < 8 THEN 'phone' END,
       '+38067' || lpad((h % 10000000)::text, 7, '0'),
       'Звернення ' || g, body, sha256(convert_to(body, 'UTF8')),
       ($6::bigint[])[1 + (h / 7) % cardinality($6::bigint[])],
       ({_TYPES})[1 + (h / 3) % 3], ({_PRIORITIES})[1 + (h / 11) % 6],
       'closed', resolved + interval '3 days', 'cc_l1',
       ($7::bigint[])[1 + (h / 13) % cardinality($7::bigint[])],
       'bench', created, resolved + interval '3 days', created, responded,
       created + interval '8 hours', created + interval '3 days', responded, resolved,
       CASE WHEN resolved > created + interval '3 days' OR responded > created + interval '8 hours'
            THEN 'breached' ELSE 'ok' END
FROM (
    SELECT g, h, body, created,
           created + make_interval(mins => 5 + (h / 17) % 600) AS responded,
           created + make_interval(hours => 1 + (h / 19) % 90) AS resolved
    FROM (
        SELECT g, h, 'Текст звернення ' || g || ': прошу перевірити нарахування за газ' AS body,
               $8::timestamptz - interval '5 years'
                 + make_interval(secs => (g::float8 / $3) * 5 * 365 * 86400 - 30 * 86400) AS created
        FROM (SELECT g, abs(hashint8(g)) AS h FROM generate_series($1::bigint, $2::bigint) g) s
    ) t
) u
"""

_OPEN = f"""
INSERT INTO cases (number, channel, client_id, identified_by, contact_phone, subject, body,
    text_hash, category_id, case_type, priority, status, status_changed_at, group_code,
    assignee_id, created_by_login, created_at, updated_at, last_inbound_at,
    first_response_due_at, resolution_due_at, first_response_at, sla_state, sla_paused_at)
SELECT 'ЗВ-' || to_char(created, 'YYYY') || '-В' || lpad(g::text, 9, '0'),
       ({_CHANNELS})[1 + h % 8],
       CASE WHEN h % 10 < 8 THEN $4 + (h / 10) % $5 END,
       CASE WHEN h % 10 < 8 THEN 'phone' END,
       '+38050' || lpad((h % 10000000)::text, 7, '0'),
       'Відкрите звернення ' || g, body, sha256(convert_to(body, 'UTF8')),
       ($6::bigint[])[1 + (h / 7) % cardinality($6::bigint[])],
       ({_TYPES})[1 + (h / 3) % 3], ({_PRIORITIES})[1 + (h / 11) % 6],
       status, created, ({"ARRAY['cc_l1','cc_l1','cc_l2','service_centre','technical','finance']"})[1 + (h / 23) % 6],
       CASE WHEN status = 'new' THEN NULL ELSE ($7::bigint[])[1 + (h / 13) % cardinality($7::bigint[])] END,
       'bench', created, created, created,
       created + interval '8 hours', created + interval '3 days',
       CASE WHEN status = 'new' THEN NULL ELSE created + interval '1 hour' END,
       CASE WHEN created + interval '3 days' < $8 THEN 'breached'
            WHEN created + interval '3 days' < $8 + interval '12 hours' THEN 'warning'
            WHEN status = 'new' AND created + interval '8 hours' < $8 THEN 'breached'
            ELSE 'ok' END,
       CASE WHEN status = 'on_hold' THEN created + interval '2 hours' END
FROM (
    SELECT g, h, 'Відкрите звернення ' || g || ': немає газу в будинку' AS body,
           (ARRAY['new','in_progress','in_progress','on_hold'])[1 + (h / 29) % 4] AS status,
           $8::timestamptz - make_interval(secs => (h / 31) % (4 * 86400)) AS created
    FROM (SELECT g, abs(hashint8(g + 1000000000)) AS h FROM generate_series($1::bigint, $2::bigint) g
          WHERE $3::bigint > 0) s
) t
"""


# The evaluator's schedule (migration 0027) for the open cases: a check within the hour.
_OPEN_CHECKS = """
INSERT INTO case_sla_checks (case_id, next_check_at)
SELECT id, $1::timestamptz + make_interval(secs => abs(hashint8(id)) % 3600)
FROM cases WHERE number LIKE 'ЗВ-____-В%' AND status <> 'closed'
ON CONFLICT (case_id) DO NOTHING
"""


async def _secondary_indexes(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        """
        SELECT i.relname AS name, pg_get_indexdef(x.indexrelid) AS definition
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
        WHERE x.indrelid = 'cases'::regclass AND NOT x.indisprimary
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
        ORDER BY i.relname
        """
    )
    return [(r["name"], r["definition"]) for r in rows]


async def ensure_agents(conn: asyncpg.Connection, count: int, password_hash: str) -> list[int]:
    """``count`` contact-centre agents (``bench.agentNNN``), online, in every case group."""
    await conn.execute(
        """
        INSERT INTO users (login, full_name, password_hash)
        SELECT 'bench.agent' || lpad(n::text, 3, '0'), 'Оператор ' || n, $2
        FROM generate_series(1, $1) n
        ON CONFLICT DO NOTHING
        """,
        count,
        password_hash,
    )
    ids = [
        r["id"]
        for r in await conn.fetch(
            "SELECT id FROM users WHERE login LIKE 'bench.agent%' ORDER BY id LIMIT $1", count
        )
    ]
    await conn.execute(
        "INSERT INTO user_roles (user_id, role_code) SELECT unnest($1::bigint[]), "
        "'operator_cc' ON CONFLICT DO NOTHING",
        ids,
    )
    await conn.execute(
        "INSERT INTO case_agents (user_id, presence, presence_changed_at, capacity) "
        "SELECT unnest($1::bigint[]), 'online', herald_now(), 1000 ON CONFLICT (user_id) DO NOTHING",
        ids,
    )
    await conn.execute(
        "INSERT INTO case_group_members (group_code, user_id) "
        "SELECT g.code, u FROM case_groups g, unnest($1::bigint[]) u ON CONFLICT DO NOTHING",
        ids,
    )
    return ids


async def _load(
    conn: asyncpg.Connection, sql: str, rows: int, args: tuple[object, ...], what: str, say: Say
) -> None:
    started = time.monotonic()
    for first in range(1, rows + 1, CHUNK):
        last = min(rows, first + CHUNK - 1)
        await conn.execute(sql, first, last, rows, *args)
        rate = last / max(time.monotonic() - started, 1e-9)
        say(f"  {what}: {last:,}/{rows:,} ({rate:,.0f}/s)")


async def seed_cases(
    conn: asyncpg.Connection,
    *,
    history: int,
    open_cases: int,
    agents: int,
    password_hash: str,
    say: Say,
) -> dict[str, float]:
    """Load ``history`` closed and ``open_cases`` open cases (as the owner role), unless the
    database already holds as many; return the seconds each phase took."""
    have = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE number LIKE 'ЗВ-____-Б%') AS history, "
        "count(*) FILTER (WHERE number LIKE 'ЗВ-____-В%') AS open FROM cases"
    )
    timings: dict[str, float] = {}
    agent_ids = await ensure_agents(conn, agents, password_hash)
    if have["history"] >= history and have["open"] >= open_cases:
        say(f"cases already seeded: {have['history']:,} historical, {have['open']:,} open")
        return timings
    if have["history"] or have["open"]:
        # Earlier runs worked those cases (events, escalations, journal): not undone here.
        raise RuntimeError(
            f"the database holds {have['history']:,} historical and {have['open']:,} open "
            f"benchmark cases, fewer than asked ({history:,} and {open_cases:,}): run the "
            "benchmark on a fresh database, or ask for at most as many"
        )
    bounds = await conn.fetchrow("SELECT min(id) AS lo, max(id) AS hi, count(*) AS n FROM clients")
    if not bounds["n"] or bounds["hi"] - bounds["lo"] + 1 != bounds["n"]:
        raise RuntimeError("the benchmark needs seeded clients with contiguous ids (herald seed)")
    categories = [
        r["id"]
        for r in await conn.fetch(
            "SELECT id FROM case_categories WHERE parent_id IS NOT NULL ORDER BY id"
        )
    ]
    now = await conn.fetchval("SELECT herald_now()")
    args = (bounds["lo"], bounds["n"], categories, agent_ids, now)  # after first, last, total
    indexes = await _secondary_indexes(conn)
    started = time.monotonic()
    async with conn.transaction():
        # The load is the benchmark's own data: no change feed, no SLA or routing hooks.
        await conn.execute("ALTER TABLE cases DISABLE TRIGGER USER")
        for name, _ in indexes:
            await conn.execute(f'DROP INDEX "{name}"')
        await _load(conn, _HISTORY, history, args, "historical cases", say)
        await _load(conn, _OPEN, open_cases, args, "open cases", say)
        await conn.execute(_OPEN_CHECKS, now)
        timings["load_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        for n, (name, definition) in enumerate(indexes, 1):
            await conn.execute(definition)
            say(f"  rebuilt index {n}/{len(indexes)}: {name}")
        await conn.execute("ALTER TABLE cases ENABLE TRIGGER USER")
        await conn.execute(
            "SELECT setval('case_number_seq', greatest(nextval('case_number_seq'), 1))"
        )
    timings["index_s"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    await conn.execute("ANALYZE cases")
    timings["analyze_s"] = round(time.monotonic() - started, 1)
    return timings


_PLAN_OPEN = """
WITH planned AS (
    SELECT id, created_at, sla_paused_at,
           business_add($2, created_at, $3 * 60.0) AS fr_due,
           business_add($2, created_at, $3 * 60.0 * $5 / 100) AS fr_warn,
           business_add($2, created_at, $4 * 60.0) AS res_due,
           business_add($2, created_at, $4 * 60.0 * $5 / 100) AS res_warn
    FROM cases
    WHERE number LIKE 'ЗВ-____-В%' AND sla_policy_id IS NULL AND status NOT IN ('resolved', 'closed')
)
UPDATE cases c
SET sla_policy_id = $1, first_response_due_at = p.fr_due, first_response_warn_at = p.fr_warn,
    resolution_due_at = p.res_due, resolution_warn_at = p.res_warn,
    sla_state = CASE
        WHEN coalesce(p.sla_paused_at, herald_now()) >= p.res_due
             OR (c.first_response_at IS NULL AND coalesce(p.sla_paused_at, herald_now()) >= p.fr_due)
            THEN 'breached'
        WHEN coalesce(p.sla_paused_at, herald_now()) >= p.res_warn
             OR (c.first_response_at IS NULL AND coalesce(p.sla_paused_at, herald_now()) >= p.fr_warn)
            THEN 'warning'
        ELSE 'ok' END
FROM planned p WHERE c.id = p.id
"""


async def plan_open_cases(
    conn: asyncpg.Connection,
    *,
    policy_id: int,
    calendar_id: int,
    first_response_minutes: int,
    resolution_minutes: int,
    warning_percent: int,
) -> int:
    """Give the open benchmark cases the policy's business-time deadlines and their state
    now (idempotent: only cases without a policy yet)."""
    status = await conn.execute(
        _PLAN_OPEN,
        policy_id,
        calendar_id,
        first_response_minutes,
        resolution_minutes,
        warning_percent,
    )
    return int(status.split()[-1])
