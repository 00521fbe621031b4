"""``herald bench cases``: case intake, the queue, the SLA evaluator and the supervisor's
live view over 10 M historical and 50 k open cases.

Setup (not timed): the configured database must hold seeded clients (``herald seed``);
the benchmark cases are loaded into it once (``herald.cli.bench.cases_seed``; a second run finds
them and goes straight to measuring), with bench agents online in every group; the API
runs as a process of its own on ports of the benchmark's own.

Timed, through HTTP as the channels and operators call it: intake per channel (site and
cabinet forms, e-mail, app, Viber and Telegram webhooks, walk-in registration, a
VICIdial hang-up that becomes a case), listing the operator queue with its filters and
pages, one SLA evaluator cycle with every open case due, and a supervisor's SSE stream
receiving a status change (from the POST being sent to the ``cases`` event arriving).
The last line printed is one JSON object.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import msgspec
from argon2 import PasswordHasher

from crm.cases import calendars, rule_store, sla_config
from crm.cases.calendars import BusinessCalendarSpec, WeekHours, WorkInterval
from crm.cases.rule_types import CaseRuleSpec
from crm.cases.sla_config import EscalationRuleSpec, SlaPolicySpec
from crm.cases.sla_evaluator import run_sla_cycle
from crm.users import PasswordPolicy
from herald.audit import Actor
from herald.cli.bench.campaign import Processes, wait_http
from herald.cli.bench.card import Api, _timed, percentiles, push_latencies
from herald.cli.bench.cases_seed import plan_open_cases, seed_cases
from herald.cli.demo import ensure_demo_users
from herald.db import admin_connection, create_pool
from herald.settings import Settings

Say = Callable[[str], None]
Call = Callable[[], Awaitable[bool]]
WEBHOOK_SECRET = "bench-webhook-secret-0123456789"


def bench_settings(settings: Settings) -> Settings:
    """The configured database; the API on a port of this benchmark's own."""
    return msgspec.structs.replace(
        settings, http_port=18082, public_base_url="http://127.0.0.1:18082", log_level="WARNING"
    )


class Poster:
    """Timed POSTs: True when answered 2xx; anything else stops the benchmark."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    def post(
        self,
        path: str,
        headers: dict[str, str],
        *,
        json_body: Any = None,
        data: bytes | None = None,
    ) -> Call:
        async def call() -> bool:
            async with self.session.post(
                self.base + path, headers=headers, json=json_body, data=data
            ) as r:
                body = await r.read()
                if r.status >= 300:
                    raise RuntimeError(f"POST {path}: {r.status} {body[:300]!r}")
                return True

        return call


def _intake_plans(
    p: Poster,
    integration: dict[str, str],
    desk: dict[str, str],
    client_ids: list[int],
    n: int,
    run: str,
) -> dict[str, list[Call]]:
    rnd = random.Random(run)
    tg = {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}

    def phone() -> str:
        return "+38067" + str(rnd.randrange(1000000, 9999999))

    def viber(i: int) -> Call:
        body = json.dumps(
            {
                "event": "message",
                "timestamp": int(time.time() * 1000),
                "message_token": int(run[-6:]) * 100000 + i,
                "sender": {"id": f"bench{run}{i}=", "name": "Клієнт"},
                "message": {"type": "text", "text": f"Немає газу, будинок {i}"},
            }
        ).encode()
        sig = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        return p.post(
            "/api/v1/case-intake/viber",
            {"X-Viber-Content-Signature": sig, "Content-Type": "application/json"},
            data=body,
        )

    def telegram(i: int) -> Call:
        chat = int(run[-6:]) * 100000 + i
        return p.post(
            "/api/v1/case-intake/telegram",
            tg,
            json_body={
                "update_id": chat,
                "message": {
                    "message_id": 1,
                    "date": int(time.time()),
                    "text": f"Питання щодо рахунку {i}",
                    "from": {"id": chat, "is_bot": False, "first_name": "Ігор"},
                    "chat": {"id": chat, "type": "private"},
                },
            },
        )

    def call(i: int) -> Call:
        hang_up = p.post(
            "/api/v1/cti/calls",
            integration,
            json_body={
                "event": "hung_up",
                "call_id": f"bench{run}c{i}",
                "phone_number": phone(),
                "user": "operator.cc",
                "dispo": "DROP",
            },
        )
        return hang_up

    return {
        "site": [
            p.post(
                "/api/v1/case-intake/forms",
                integration,
                json_body={
                    "source": "site",
                    "text": f"Прошу перевірити лічильник {i}",
                    "phone": phone(),
                },
            )
            for i in range(n)
        ],
        "cabinet": [
            p.post(
                "/api/v1/case-intake/forms",
                integration,
                json_body={
                    "source": "cabinet",
                    "text": f"Не зараховано оплату {i}",
                    "client_id": rnd.choice(client_ids),
                },
            )
            for i in range(n)
        ],
        "email": [
            p.post(
                "/api/v1/case-intake/email",
                integration,
                json_body={
                    "from": f"client{i}@example.com",
                    "message_id": f"<bench{run}.{i}@example.com>",
                    "to": ["info@gas.example"],
                    "subject": f"Рахунок {i}",
                    "text": "Доброго дня, прошу пояснити нарахування.",
                },
            )
            for i in range(n)
        ],
        "app": [
            p.post(
                "/api/v1/case-intake/app",
                integration,
                json_body={
                    "client_id": rnd.choice(client_ids),
                    "text": f"Питання з застосунку {i}",
                    "request_id": f"bench{run}a{i}",
                },
            )
            for i in range(n)
        ],
        "viber": [viber(i) for i in range(n)],
        "telegram": [telegram(i) for i in range(n)],
        "walk_in": [
            p.post(
                "/api/v1/cases",
                desk,
                json_body={"text": f"Візит до ЦОК {i}", "client_id": rnd.choice(client_ids)},
            )
            for i in range(n)
        ],
        "call": [call(i) for i in range(n)],
    }


def _queue_plans(api: Api, operator: dict[str, str], n: int) -> list[Call]:
    filters: list[dict[str, Any]] = [
        {"open": "true"},
        {"status": "new"},
        {"open": "true", "order": "desc"},
        {"open": "true", "channel": "viber"},
        {"open": "true", "priority": "urgent"},
        {"status": "in_progress", "channel": "email"},
        {"open": "true", "sla_state": "breached"},
        {"open": "true", "case_type": "financial"},
    ]
    return [api.get("/api/v1/cases", operator, filters[i % len(filters)]) for i in range(n)]


async def _supervisor_push(
    session: aiohttp.ClientSession,
    base: str,
    boss: dict[str, str],
    operator: dict[str, str],
    case_ids: list[int],
    say: Say,
) -> list[float]:
    """Status change POST sent -> the supervisor's stream has a ``cases`` event with it."""

    async def listen(ready: asyncio.Event, seen: asyncio.Queue[tuple[Any, float]]) -> None:
        async with session.get(
            f"{base}/api/v1/supervisor/stream",
            headers=boss,
            timeout=aiohttp.ClientTimeout(total=None),
        ) as r:
            r.raise_for_status()
            event = ""
            async for raw in r.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    if event == "snapshot":
                        ready.set()
                    elif event == "cases":
                        at = time.perf_counter()
                        for item in json.loads(line[5:])["items"]:
                            seen.put_nowait((item["id"], at))

    async def take(case_id: int) -> None:
        async with session.post(
            f"{base}/api/v1/cases/{case_id}/status",
            headers=operator,
            json={"status": "in_progress"},
        ) as r:
            if r.status >= 300:
                raise RuntimeError(f"status change: {r.status} {await r.text()}")

    latencies = await push_latencies(listen, case_ids, take)
    say(f"  supervisor: {len(latencies)} changes pushed")
    return latencies


async def _sla_cycle(settings: Settings, say: Say) -> dict[str, float]:
    """Every open case due at once, then one evaluator cycle over all of them."""
    async with admin_connection(settings) as conn:  # VACUUM needs the owner
        due = await conn.fetchval(
            "WITH d AS (INSERT INTO case_sla_checks (case_id, next_check_at) "
            "SELECT id, herald_now() FROM cases WHERE status NOT IN ('resolved', 'closed') "
            "ON CONFLICT (case_id) DO UPDATE SET next_check_at = excluded.next_check_at "
            "RETURNING 1) SELECT count(*) FROM d"
        )
        # That upsert left a dead row per case in the schedule; in steady operation
        # autovacuum (0027 tunes it for this table) clears them between cycles.
        await conn.execute("VACUUM ANALYZE case_sla_checks")
    pool = await create_pool(settings)
    try:
        started = time.perf_counter()
        processed = await run_sla_cycle(pool)
        ms = (time.perf_counter() - started) * 1000
    finally:
        await pool.close()
    say(f"  sla: {due:,} open cases due; one cycle processed {processed:,} in {ms:.0f} ms")
    return {"ms": round(ms, 1), "due": due, "processed": processed}


BENCH_CALENDAR = "Графік контакт-центру (бенчмарк)"
FIRST_RESPONSE_MINUTES, RESOLUTION_MINUTES, WARNING_PERCENT = 240, 1440, 80


async def _ensure_sla_setup(conn: asyncpg.Connection) -> tuple[int, int]:
    """A working-week calendar, a catch-all policy on it and an escalation rule on breach
    (tell the supervisors, raise the priority one step): the benchmark's SLA setup."""
    actor = Actor(login="bench")
    calendar_id = await conn.fetchval(
        "SELECT id FROM business_calendars WHERE name = $1", BENCH_CALENDAR
    )
    if calendar_id is None:
        day = [WorkInterval("08:00", "20:00")]
        calendar_id = (
            await calendars.create_calendar(
                conn,
                actor,
                BusinessCalendarSpec(
                    name=BENCH_CALENDAR,
                    week=WeekHours(
                        mon=day,
                        tue=day,
                        wed=day,
                        thu=day,
                        fri=day,
                        sat=[WorkInterval("09:00", "15:00")],
                    ),
                ),
            )
        ).id
    policy_id = await conn.fetchval(
        "SELECT id FROM case_sla_policies WHERE case_type IS NULL AND priority IS NULL "
        "AND category_id IS NULL"
    )
    if policy_id is None:
        policy_id = (
            await sla_config.create_policy(
                conn,
                actor,
                SlaPolicySpec(
                    name="Усі звернення (бенчмарк)",
                    calendar_id=calendar_id,
                    first_response_minutes=FIRST_RESPONSE_MINUTES,
                    resolution_minutes=RESOLUTION_MINUTES,
                    warning_percent=WARNING_PERCENT,
                ),
            )
        ).id
        await sla_config.create_rule(
            conn,
            actor,
            EscalationRuleSpec(
                name="Порушення SLA (бенчмарк)",
                on_level="breached",
                notify_supervisors=True,
                raise_priority="step",
            ),
        )
    return policy_id, calendar_id


BENCH_RULE_PREFIX = "bench rule "
BENCH = Actor(login="bench")


def bench_rule_specs(count: int) -> list[CaseRuleSpec]:
    """``count`` active case rules of the kinds a contact centre keeps: most react to a new
    case and look at its category, channel, text and the client's debt; some watch
    replies, field changes, SLA breaches and idle time (not fired by intake, but loaded
    and matched by trigger all the same)."""
    kinds: list[dict[str, Any]] = [
        {  # the demo rule: Debt topic and debt > 1000 -> high priority, Finance
            "trigger": {"type": "case_created"},
            "condition": {
                "kind": "and",
                "items": [
                    {"kind": "cond", "field": "category", "op": "under", "value": "billing"},
                    {"kind": "cond", "field": "client.debt", "op": "gt", "value": 1000},
                ],
            },
            "actions": [
                {"type": "set_priority", "priority": "high"},
                {"type": "add_tag", "tag": "debt"},
            ],
        },
        {
            "trigger": {"type": "case_created"},
            "condition": {
                "kind": "cond",
                "field": "text",
                "op": "regex",
                "value": "запах газу|витік",
            },
            "actions": [
                {"type": "set_priority", "priority": "urgent"},
                {"type": "notify_supervisors", "text": "Витік"},
            ],
        },
        {
            "trigger": {"type": "case_created"},
            "condition": {
                "kind": "or",
                "items": [
                    {
                        "kind": "cond",
                        "field": "channel",
                        "op": "in",
                        "value": ["viber", "telegram"],
                    },
                    {
                        "kind": "not",
                        "item": {"kind": "cond", "field": "identified", "op": "eq", "value": True},
                    },
                ],
            },
            "actions": [{"type": "add_tag", "tag": "chat"}],
        },
        {
            "trigger": {"type": "case_created"},
            "condition": {"kind": "cond", "field": "text", "op": "contains", "value": "показник"},
            "actions": [{"type": "add_note", "text": "Перевірити показники в білінгу"}],
        },
        {
            "trigger": {"type": "client_replied"},
            "condition": {"kind": "cond", "field": "status", "op": "eq", "value": "on_hold"},
            "actions": [{"type": "set_status", "status": "in_progress"}],
        },
        {
            "trigger": {"type": "field_changed", "fields": ["priority"]},
            "condition": {"kind": "cond", "field": "priority", "op": "eq", "value": "urgent"},
            "actions": [{"type": "notify_supervisors", "text": "Терміново"}],
        },
        {
            "trigger": {"type": "sla_breach"},
            "actions": [{"type": "set_priority", "priority": "urgent"}],
        },
        {
            "trigger": {"type": "idle", "hours": 48},
            "actions": [{"type": "add_tag", "tag": "stale"}],
        },
    ]
    return [
        msgspec.convert(
            {"name": f"{BENCH_RULE_PREFIX}{i + 1}", "is_active": True, **kinds[i % len(kinds)]},
            CaseRuleSpec,
        )
        for i in range(count)
    ]


async def _install_rules(settings: Settings, count: int) -> None:
    async with admin_connection(settings) as conn:
        await _remove_rules(conn)
        for spec in bench_rule_specs(count):
            await rule_store.create_rule(conn, BENCH, spec)


async def _remove_rules(conn: asyncpg.Connection) -> None:
    for rule in await rule_store.list_rules(conn):
        if rule.name.startswith(BENCH_RULE_PREFIX):
            await rule_store.delete_rule(conn, BENCH, rule.id)


async def _measure_intake(
    concurrency: int, plans: dict[str, list[Call]], say: Say, label: str
) -> dict[str, dict[str, float]]:
    intake: dict[str, dict[str, float]] = {}
    for channel, calls in plans.items():
        await _timed(concurrency, calls[:5])  # warm-up: pool connections, plans
        latencies, _ = await _timed(concurrency, calls[5:])
        cuts = percentiles(latencies)
        intake[channel] = {"p50": cuts["p50"], "p99": cuts["p99"]}
        say(f"  intake {channel}{label}: {len(latencies)} -> {intake[channel]}")
    return intake


async def run_cases_bench(
    settings: Settings,
    *,
    history: int,
    open_cases: int,
    requests: int,
    concurrency: int,
    say: Say,
    rules: int = 0,
) -> dict[str, object]:
    """Seed (once), then measure; return the figures."""
    async with admin_connection(settings) as conn:
        hasher = PasswordHasher()
        timings = await seed_cases(
            conn,
            history=history,
            open_cases=open_cases,
            agents=50,
            password_hash=hasher.hash("Bench-agent-password-1"),
            say=say,
        )
        await ensure_demo_users(conn, PasswordPolicy(settings.password_min_length))
        policy_id, calendar_id = await _ensure_sla_setup(conn)
        planned = await plan_open_cases(
            conn,
            policy_id=policy_id,
            calendar_id=calendar_id,
            first_response_minutes=FIRST_RESPONSE_MINUTES,
            resolution_minutes=RESOLUTION_MINUTES,
            warning_percent=WARNING_PERCENT,
        )
        if planned:
            say(f"  gave {planned:,} open cases their SLA deadlines")
        # Earlier runs and the planning rewrote the open rows: measure a vacuumed table
        # (VACUUM skips index cleanup below 2 % of dead pages, and open work is far less).
        await conn.execute("VACUUM (ANALYZE, INDEX_CLEANUP ON) cases")
        await conn.execute(
            "INSERT INTO case_webhook_secrets (channel, secret, updated_by) "
            "VALUES ('viber', $1, 'bench'), ('telegram', $1, 'bench') "
            "ON CONFLICT (channel) DO UPDATE SET secret = excluded.secret",
            WEBHOOK_SECRET,
        )
        counts = await conn.fetchrow(
            "SELECT (SELECT reltuples::bigint FROM pg_class WHERE relname = 'cases') AS cases, "
            "(SELECT count(*) FROM cases WHERE status NOT IN ('resolved', 'closed')) AS open"
        )
        client_ids = [
            r["id"]
            for r in await conn.fetch("SELECT id FROM clients TABLESAMPLE SYSTEM (1) LIMIT 2000")
        ]
        if not client_ids:  # a small seed: a 1 % sample of its few pages may find none
            client_ids = [r["id"] for r in await conn.fetch("SELECT id FROM clients LIMIT 2000")]
        to_change = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM cases WHERE status = 'new' AND number LIKE 'ЗВ-____-В%' "
                "ORDER BY id DESC LIMIT $1",
                min(requests, 300),
            )
        ]
    say(f"{counts['cases']:,} cases, {counts['open']:,} open; seeding took {timings or 'nothing'}")
    figures: dict[str, object] = {
        "cases": counts["cases"],
        "open_cases": counts["open"],
        "seed": timings,
    }
    procs = Processes(settings, 0, kinds=("api",))
    base = f"http://127.0.0.1:{settings.http_port}"
    run = str(int(time.time()))
    try:
        await wait_http(base + "/healthz", 60)
        connector = aiohttp.TCPConnector(limit=concurrency + 4)
        async with aiohttp.ClientSession(connector=connector) as session:
            api, poster = Api(session, base), Poster(session, base)
            operator = await api.login("operator_cc")
            integration = await api.login("integration")
            desk = await api.login("operator_cos")
            boss = await api.login("supervisor")
            plans = _intake_plans(poster, integration, desk, client_ids, requests, run)
            intake = await _measure_intake(concurrency, plans, say, "")
            figures["intake_ms"] = intake
            if rules:
                # The same intake again with the rules active (new external ids: new cases)
                await _install_rules(settings, rules)
                try:
                    again = _intake_plans(
                        poster, integration, desk, client_ids, requests, str(int(run) + 1)
                    )
                    with_rules = await _measure_intake(
                        concurrency, again, say, f" with {rules} rules"
                    )
                finally:
                    async with admin_connection(settings) as conn:
                        await _remove_rules(conn)
                figures["rules"] = rules
                figures["intake_with_rules_ms"] = with_rules
                base_p99 = {k: v["p99"] for k, v in intake.items()}
                figures["intake_p99_ratio"] = {
                    k: round(v["p99"] / base_p99[k], 2) if base_p99[k] else None
                    for k, v in with_rules.items()
                }
                say(f"  intake p99 with/without {rules} rules: {figures['intake_p99_ratio']}")
            latencies, timeouts = await _timed(concurrency, _queue_plans(api, operator, requests))
            figures["queue_list_ms"] = {**percentiles(latencies), "timeouts": timeouts}
            say(f"  queue: {len(latencies)} -> {figures['queue_list_ms']}")
            if len(to_change) < 2:  # a tiny seed: too few new cases to change and time
                say(f"  supervisor: skipped, {len(to_change)} new bench case(s) to change")
                figures["supervisor_push_ms"] = None
            else:
                cuts = percentiles(
                    await _supervisor_push(session, base, boss, operator, to_change, say)
                )
                figures["supervisor_push_ms"] = {"p50": cuts["p50"], "p99": cuts["p99"]}
    finally:
        procs.stop()
    sla = await _sla_cycle(settings, say)
    figures["sla_cycle_ms"] = sla["ms"]
    figures["sla_cycle_cases"] = sla["processed"]
    figures["requests"], figures["concurrency"] = requests, concurrency
    return figures
