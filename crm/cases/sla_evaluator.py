"""The SLA evaluator (a scheduler duty): warnings, breaches and escalations.

Due cases are found only through ``cases_sla_next_check_idx`` (``sla_next_check_at <=
now``), claimed with ``FOR UPDATE SKIP LOCKED`` in batches, so several processes can run
it at once. Each case's state is re-derived from its stored times (due, warning, done,
paused), and its next check is set to the next warning or due time of a target still
open (none while paused or when every target is done).

A warning is recorded once per case, target and due time (a deadline moved later can
warn again), a breach once per case and target; only a newly recorded
one writes a ``sla`` event and runs the escalation rules, and each rule acts at most once
per case, target and level (unique key of ``case_escalations``).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import asyncpg

from crm import audit
from crm.audit import Actor, Change
from crm.cases import sla_config, store
from crm.cases.sla_config import EscalationRule
from crm.cases.store import NewEvent

EVALUATOR = Actor(login="sla")
BATCH = 5000
PRIORITIES = ("low", "normal", "high", "urgent")
_LEVELS = {1: "warning", 2: "breached"}

_CYCLE = """
WITH due AS (
    SELECT id FROM cases
    WHERE status <> 'closed' AND sla_next_check_at IS NOT NULL AND sla_next_check_at <= $1
    ORDER BY sla_next_check_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), calc AS (
    SELECT c.id,
           CASE WHEN c.sla_policy_id IS NULL OR c.first_response_due_at IS NULL THEN 0
                WHEN c.first_response_at IS NOT NULL
                    THEN CASE WHEN c.first_response_at > c.first_response_due_at THEN 2 ELSE 0 END
                WHEN coalesce(c.sla_paused_at, $1) >= c.first_response_due_at THEN 2
                WHEN coalesce(c.sla_paused_at, $1) >= c.first_response_warn_at THEN 1
                ELSE 0 END AS fr,
           CASE WHEN c.sla_policy_id IS NULL OR c.resolution_due_at IS NULL THEN 0
                WHEN c.resolved_at IS NOT NULL
                    THEN CASE WHEN c.resolved_at > c.resolution_due_at THEN 2 ELSE 0 END
                WHEN coalesce(c.sla_paused_at, $1) >= c.resolution_due_at THEN 2
                WHEN coalesce(c.sla_paused_at, $1) >= c.resolution_warn_at THEN 1
                ELSE 0 END AS res
    FROM cases c JOIN due ON due.id = c.id
), planned AS (
    SELECT calc.*,
           CASE WHEN c.sla_policy_id IS NULL OR c.sla_paused_at IS NOT NULL
                     OR c.first_response_at IS NOT NULL THEN NULL
                WHEN calc.fr = 0 THEN coalesce(c.first_response_warn_at, c.first_response_due_at)
                WHEN calc.fr = 1 THEN c.first_response_due_at END AS fr_next,
           CASE WHEN c.sla_policy_id IS NULL OR c.sla_paused_at IS NOT NULL
                     OR c.resolved_at IS NOT NULL THEN NULL
                WHEN calc.res = 0 THEN coalesce(c.resolution_warn_at, c.resolution_due_at)
                WHEN calc.res = 1 THEN c.resolution_due_at END AS res_next
    FROM calc JOIN cases c ON c.id = calc.id
)
UPDATE cases c
SET sla_state = CASE WHEN c.sla_policy_id IS NULL THEN 'none'
                     ELSE (ARRAY['ok', 'warning', 'breached'])[greatest(p.fr, p.res) + 1] END,
    sla_next_check_at = least(p.fr_next, p.res_next)
FROM planned p
WHERE c.id = p.id
RETURNING c.id, p.fr, p.res, c.first_response_at IS NULL AS fr_open,
          c.resolved_at IS NULL AS res_open, c.first_response_due_at, c.resolution_due_at,
          c.sla_policy_id, c.channel, c.case_type, c.priority, c.category_id, c.group_code,
          c.assignee_id
"""


async def _record(conn: asyncpg.Connection, table: str, time_column: str,
                  alerts: list[tuple[int, str, dt.datetime]], now: dt.datetime) -> set[tuple[int, str]]:
    """Insert the alerts not recorded before; return those that were new."""
    if not alerts:
        return set()
    ids, targets, dues = [a[0] for a in alerts], [a[1] for a in alerts], [a[2] for a in alerts]
    if table == "case_sla_warnings":
        rows = await conn.fetch(
            f"INSERT INTO {table} (case_id, target, due_at, {time_column}) "
            "SELECT i, t, d, $4 FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS a(i, t, d) "
            "ON CONFLICT DO NOTHING RETURNING case_id, target", ids, targets, dues, now)
    else:
        rows = await conn.fetch(
            """
            INSERT INTO case_sla_breaches (case_id, target, due_at, detected_at, policy_id,
                                           channel, case_type, priority, category_id, group_code,
                                           assignee_id)
            SELECT a.i, a.t, a.d, $4, c.sla_policy_id, c.channel, c.case_type, c.priority,
                   c.category_id, c.group_code, c.assignee_id
            FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS a(i, t, d)
            JOIN cases c ON c.id = a.i
            ON CONFLICT DO NOTHING RETURNING case_id, target
            """, ids, targets, dues, now)
    return {(r["case_id"], r["target"]) for r in rows}


def _matches(rule: EscalationRule, case: asyncpg.Record, target: str, level: str) -> bool:
    return (rule.on_level == level and rule.target in (None, target)
            and all(getattr(rule, f) is None or getattr(rule, f) == case[f]
                    for f in ("case_type", "priority", "category_id", "group_code")))


def _raised(current: str, to: str) -> str:
    if to == "step":
        return PRIORITIES[min(PRIORITIES.index(current) + 1, len(PRIORITIES) - 1)]
    return to if PRIORITIES.index(to) > PRIORITIES.index(current) else current


async def _escalate(conn: asyncpg.Connection, case: asyncpg.Record,
                    fired: list[tuple[str, str]], rules: list[EscalationRule],
                    now: dt.datetime) -> int:
    """Apply the matching rules (once each per target and level) to one locked case."""
    priority, group, assignee = case["priority"], case["group_code"], case["assignee_id"]
    events: list[NewEvent] = []
    done = 0
    for target, level in fired:
        for rule in rules:
            if not _matches(rule, case, target, level):
                continue
            actions: dict[str, Any] = {}
            if rule.notify_supervisors:
                actions["notify_supervisors"] = True
            if rule.raise_priority is not None:
                new = _raised(priority, rule.raise_priority)
                if new != priority:
                    actions["priority"] = {"from": priority, "to": new}
                    priority = new
            if rule.reassign_group is not None and rule.reassign_group != group:
                actions["group_code"] = {"from": group, "to": rule.reassign_group}
                group, assignee = rule.reassign_group, None
            inserted = await conn.fetchval(
                "INSERT INTO case_escalations (case_id, rule_id, target, level, at, "
                "notify_supervisors, actions) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT DO NOTHING RETURNING id",
                case["id"], rule.id, target, level, now, rule.notify_supervisors, actions)
            if inserted is None:
                # Escalated before: undo what this pass would have done for the rule.
                if "priority" in actions:
                    priority = actions["priority"]["from"]
                if "group_code" in actions:
                    group, assignee = actions["group_code"]["from"], case["assignee_id"]
                continue
            done += 1
            events.append(NewEvent(kind="escalation", data={
                "escalation_id": inserted, "rule_id": rule.id, "rule": rule.name,
                "target": target, "level": level, "actions": actions}))
    if not events:
        return 0
    changes = audit.field_changes(
        "case", case["id"], {"priority": case["priority"], "group_code": case["group_code"],
                             "assignee_id": case["assignee_id"]},
        {"priority": priority, "group_code": group, "assignee_id": assignee})
    if changes:
        await conn.execute("UPDATE cases SET priority = $2, group_code = $3, assignee_id = $4, "
                           "updated_at = now() WHERE id = $1", case["id"], priority, group, assignee)
    await store.append_events(conn, EVALUATOR, case["id"], events)
    await audit.record(conn, EVALUATOR, [
        *changes, *(Change("case", str(case["id"]), "escalate", None, None, e.data) for e in events)])
    return done


async def _batch(pool: asyncpg.Pool, now: dt.datetime) -> int:
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(_CYCLE, now, BATCH)
        warnings: list[tuple[int, str, dt.datetime]] = []
        breaches: list[tuple[int, str, dt.datetime]] = []
        for r in rows:
            for target, level, is_open, due in (
                    ("first_response", r["fr"], r["fr_open"], r["first_response_due_at"]),
                    ("resolution", r["res"], r["res_open"], r["resolution_due_at"])):
                if level == 1 and is_open:
                    warnings.append((r["id"], target, due))
                elif level == 2:
                    breaches.append((r["id"], target, due))
        warned = await _record(conn, "case_sla_warnings", "warned_at", warnings, now)
        breached = await _record(conn, "case_sla_breaches", "detected_at", breaches, now)
        if not warned and not breached:
            return len(rows)
        fired: dict[int, list[tuple[str, str]]] = defaultdict(list)
        new_events: list[tuple[int, NewEvent]] = []
        for level, found, alerts in (("warning", warned, warnings), ("breached", breached, breaches)):
            for case_id, target, due in alerts:
                if (case_id, target) in found:
                    fired[case_id].append((target, level))
                    new_events.append((case_id, NewEvent(kind="sla", data={
                        "target": target, "level": level, "due_at": due.isoformat()})))
        await store.append_many(conn, EVALUATOR, new_events)
        rules = await sla_config.list_rules(conn, active_only=True)
        if rules:
            by_id = {r["id"]: r for r in rows}
            for case_id, alerts in fired.items():
                await _escalate(conn, by_id[case_id], alerts, rules, now)
        return len(rows)


async def run_sla_cycle(pool: asyncpg.Pool, *, now: dt.datetime | None = None) -> int:
    """Evaluate every case whose next check is due; return how many were evaluated."""
    now = now or dt.datetime.now(dt.UTC)
    total = 0
    while True:
        done = await _batch(pool, now)
        total += done
        if done < BATCH:
            return total
