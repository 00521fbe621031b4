"""The SLA evaluator (a scheduler duty): warnings, breaches and escalations.

Due cases are found only through the narrow schedule ``case_sla_checks`` (migration
0027, index on ``next_check_at``), claimed with ``FOR UPDATE SKIP LOCKED`` in batches, so
several processes can run it at once. Each case's state is re-derived in one set-based
statement from its stored times (due, warning, done, paused), and its next check is set
to the next warning or due time of a target still open (no check while paused or when
every target is done). The ``cases`` row is updated only when its state changes: a check
that finds nothing new moves one narrow row, not an entry in every index of ``cases``.

A warning is recorded once per case, target and due time (a deadline moved later can
warn again), a breach once per case and target, and the case keeps it (the target's
``*_breached_at``, migration 0036): a breached target stays breached for the case's state
whatever deadline is planned afterwards (a raised priority re-plans them). Only a newly recorded
one writes a ``sla`` event and runs the escalation rules, and each rule acts at most once
per case, target and level (unique key of ``case_escalations``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from typing import Any

import asyncpg
import msgspec

from crm.cases import sla_config, store
from crm.cases.sla_config import EscalationRule
from crm.cases.store import NewEvent
from herald import audit, clock
from herald.audit import Actor, Change

EVALUATOR = Actor(login="sla")
BATCH = 2000
PRIORITIES = ("low", "normal", "high", "urgent")
_ENCODE = msgspec.json.Encoder()

# Due checks are claimed SKIP LOCKED; a case row is written (and so locked, SKIP LOCKED too:
# the evaluator never waits, so it cannot deadlock with a status change that holds the case
# and waits for its check) only when its state changes or it has an alert not recorded
# before. A case skipped that way is checked again at the next cycle.
_CYCLE = """
WITH due AS (
    SELECT case_id FROM case_sla_checks
    WHERE next_check_at <= $1
    ORDER BY next_check_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), calc AS (
    SELECT c.id, c.sla_policy_id, c.sla_state, c.sla_paused_at, c.first_response_at,
           c.resolved_at, c.first_response_due_at, c.first_response_warn_at,
           c.resolution_due_at, c.resolution_warn_at, c.channel, c.case_type, c.priority,
           c.category_id, c.group_code, c.assignee_id,
           CASE WHEN c.sla_policy_id IS NULL THEN 0
                -- A breach recorded stays, whatever deadline was planned since (0036).
                WHEN c.first_response_breached_at IS NOT NULL THEN 2
                WHEN c.first_response_due_at IS NULL THEN 0
                WHEN c.first_response_at IS NOT NULL
                    THEN CASE WHEN c.first_response_at > c.first_response_due_at THEN 2 ELSE 0 END
                WHEN coalesce(c.sla_paused_at, $1) >= c.first_response_due_at THEN 2
                WHEN coalesce(c.sla_paused_at, $1) >= c.first_response_warn_at THEN 1
                ELSE 0 END AS fr,
           CASE WHEN c.sla_policy_id IS NULL THEN 0
                WHEN c.resolution_breached_at IS NOT NULL THEN 2
                WHEN c.resolution_due_at IS NULL THEN 0
                WHEN c.resolved_at IS NOT NULL
                    THEN CASE WHEN c.resolved_at > c.resolution_due_at THEN 2 ELSE 0 END
                WHEN coalesce(c.sla_paused_at, $1) >= c.resolution_due_at THEN 2
                WHEN coalesce(c.sla_paused_at, $1) >= c.resolution_warn_at THEN 1
                ELSE 0 END AS res
    FROM due JOIN cases c ON c.id = due.case_id
    WHERE c.status <> 'closed'
), planned AS (
    SELECT calc.*,
           CASE WHEN sla_policy_id IS NULL THEN 'none'
                ELSE (ARRAY['ok', 'warning', 'breached'])[greatest(fr, res) + 1] END AS new_state,
           least(CASE WHEN sla_policy_id IS NULL OR sla_paused_at IS NOT NULL
                          OR first_response_at IS NOT NULL THEN NULL
                     WHEN fr = 0 THEN coalesce(first_response_warn_at, first_response_due_at)
                     WHEN fr = 1 THEN first_response_due_at END,
                 CASE WHEN sla_policy_id IS NULL OR sla_paused_at IS NOT NULL
                          OR resolved_at IS NOT NULL THEN NULL
                     WHEN res = 0 THEN coalesce(resolution_warn_at, resolution_due_at)
                     WHEN res = 1 THEN resolution_due_at END) AS next_at,
           -- Probed only for a target at a level (most checks find none): was it recorded
           -- before? Correlated EXISTS keeps each probe an index lookup whatever the
           -- planner guesses of the batch's size (a LEFT JOIN LATERAL was flattened into a
           -- join filter over the whole table).
           (fr = 1 AND first_response_at IS NULL AND NOT EXISTS (
                SELECT 1 FROM case_sla_warnings w WHERE w.case_id = calc.id
                  AND w.target = 'first_response' AND w.due_at = calc.first_response_due_at))
           OR (fr = 2 AND NOT EXISTS (
                SELECT 1 FROM case_sla_breaches b WHERE b.case_id = calc.id
                  AND b.target = 'first_response')) AS fr_alert,
           (res = 1 AND resolved_at IS NULL AND NOT EXISTS (
                SELECT 1 FROM case_sla_warnings w WHERE w.case_id = calc.id
                  AND w.target = 'resolution' AND w.due_at = calc.resolution_due_at))
           OR (res = 2 AND NOT EXISTS (
                SELECT 1 FROM case_sla_breaches b WHERE b.case_id = calc.id
                  AND b.target = 'resolution')) AS res_alert
    FROM calc
), locked AS (
    SELECT c.id FROM cases c
    WHERE c.id = ANY (ARRAY(SELECT id FROM planned
                            WHERE new_state <> sla_state OR fr_alert OR res_alert))
    FOR UPDATE SKIP LOCKED
), checked AS (
    -- taken: evaluated now (nothing to write to the case, or its row is ours); a case
    -- locked by someone else is checked again in a second.
    SELECT p.*, (NOT (p.new_state <> p.sla_state OR p.fr_alert OR p.res_alert)
                 OR p.id = ANY (ARRAY(SELECT id FROM locked))) AS taken
    FROM planned p
), changed AS (
    UPDATE cases c SET sla_state = t.new_state
    FROM checked t
    WHERE c.id = ANY (ARRAY(SELECT id FROM checked WHERE taken AND new_state <> sla_state))
      AND c.id = t.id
), moved AS (
    -- Keys as an array (an index probe each) rather than a join the planner may hash over
    -- the whole schedule for every batch.
    UPDATE case_sla_checks k
    SET next_check_at = CASE WHEN t.taken THEN t.next_at ELSE $1 + interval '1 second' END
    FROM checked t
    WHERE k.case_id = ANY (ARRAY(SELECT id FROM checked WHERE NOT taken OR next_at IS NOT NULL))
      AND k.case_id = t.id
), dropped AS (
    DELETE FROM case_sla_checks k
    WHERE k.case_id = ANY (ARRAY(SELECT case_id FROM due WHERE case_id NOT IN (SELECT id FROM planned)
                                 UNION ALL SELECT id FROM checked WHERE taken AND next_at IS NULL))
)
-- One row per case with an alert to record (none in most checks, so a batch returns next
-- to nothing), each with the batch's counts; one row of counts alone when there is none.
SELECT n.claimed, n.evaluated, a.*
FROM (SELECT (SELECT count(*) FROM due) AS claimed,
             (SELECT count(*) FROM checked WHERE taken) AS evaluated) n
LEFT JOIN (SELECT id, fr, res, fr_alert, res_alert, first_response_due_at, resolution_due_at,
                  sla_policy_id, channel, case_type, priority, category_id, group_code,
                  assignee_id
           FROM checked WHERE taken AND (fr_alert OR res_alert)) a ON true
"""


async def _record(
    conn: asyncpg.Connection,
    table: str,
    time_column: str,
    alerts: list[tuple[int, str, dt.datetime]],
    now: dt.datetime,
) -> set[tuple[int, str]]:
    """Insert the alerts not recorded before; return those that were new."""
    if not alerts:
        return set()
    ids, targets, dues = [a[0] for a in alerts], [a[1] for a in alerts], [a[2] for a in alerts]
    if table == "case_sla_warnings":
        rows = await conn.fetch(
            f"INSERT INTO {table} (case_id, target, due_at, {time_column}) "
            "SELECT i, t, d, $4 FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS a(i, t, d) "
            "ON CONFLICT DO NOTHING RETURNING case_id, target",
            ids,
            targets,
            dues,
            now,
        )
    else:
        # The case keeps the breach (its *_breached_at) for its state, the supervisor's
        # lists and the statistics, whatever is re-planned later; its row is this batch's.
        rows = await conn.fetch(
            """
            WITH recorded AS (
                INSERT INTO case_sla_breaches (case_id, target, due_at, detected_at, policy_id,
                                               channel, case_type, priority, category_id,
                                               group_code, assignee_id)
                SELECT a.i, a.t, a.d, $4, c.sla_policy_id, c.channel, c.case_type, c.priority,
                       c.category_id, c.group_code, c.assignee_id
                FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS a(i, t, d)
                JOIN cases c ON c.id = a.i
                ON CONFLICT DO NOTHING RETURNING case_id, target, detected_at
            ), stamped AS (
                UPDATE cases c
                SET first_response_breached_at = coalesce(c.first_response_breached_at, b.fr),
                    resolution_breached_at = coalesce(c.resolution_breached_at, b.res)
                FROM (SELECT case_id,
                             min(detected_at) FILTER (WHERE target = 'first_response') AS fr,
                             min(detected_at) FILTER (WHERE target = 'resolution') AS res
                      FROM recorded GROUP BY case_id) b
                WHERE c.id = b.case_id
            )
            SELECT case_id, target FROM recorded
            """,
            ids,
            targets,
            dues,
            now,
        )
    return {(r["case_id"], r["target"]) for r in rows}


def _matches(
    rule: EscalationRule, case: asyncpg.Record, target: str, level: str, tree: dict[int, int | None]
) -> bool:
    """Whether the rule acts on this alert; a rule's category covers its subcategories."""
    return (
        rule.on_level == level
        and rule.target in (None, target)
        and all(
            getattr(rule, f) is None or getattr(rule, f) == case[f]
            for f in ("case_type", "priority", "group_code")
        )
        and (rule.category_id is None or rule.category_id in _chain(tree, case["category_id"]))
    )


def _chain(tree: dict[int, int | None], category_id: int | None) -> list[int]:
    chain: list[int] = []
    while category_id is not None and category_id not in chain and len(chain) < 50:
        chain.append(category_id)
        category_id = tree.get(category_id)
    return chain


def _raised(current: str, to: str) -> str:
    if to == "step":
        return PRIORITIES[min(PRIORITIES.index(current) + 1, len(PRIORITIES) - 1)]
    return to if PRIORITIES.index(to) > PRIORITIES.index(current) else current


class _Plan:
    """What the rules do to one case in this pass (before the idempotency check)."""

    def __init__(self, case: asyncpg.Record) -> None:
        self.case = case
        self.priority: str = case["priority"]
        self.group: str | None = case["group_code"]
        self.assignee: int | None = case["assignee_id"]
        self.fired: list[tuple[EscalationRule, str, str, dict[str, Any]]] = []

    def apply(self, rule: EscalationRule, target: str, level: str) -> None:
        actions: dict[str, Any] = {}
        if rule.notify_supervisors:
            actions["notify_supervisors"] = True
        if rule.raise_priority is not None:
            new = _raised(self.priority, rule.raise_priority)
            if new != self.priority:
                actions["priority"] = {"from": self.priority, "to": new}
                self.priority = new
        if rule.reassign_group is not None and rule.reassign_group != self.group:
            actions["group_code"] = {"from": self.group, "to": rule.reassign_group}
            self.group, self.assignee = rule.reassign_group, None
        self.fired.append((rule, target, level, actions))


async def _escalate(
    conn: asyncpg.Connection,
    cases: dict[int, asyncpg.Record],
    fired: dict[int, list[tuple[str, str]]],
    rules: list[EscalationRule],
    now: dt.datetime,
) -> int:
    """Apply the matching rules, once each per case, target and level, in a few statements
    for the whole batch (a morning's backlog warns thousands of cases at once)."""
    tree = (
        {
            r["id"]: r["parent_id"]
            for r in await conn.fetch("SELECT id, parent_id FROM case_categories")
        }
        if any(rule.category_id is not None for rule in rules)
        else {}
    )
    candidates = [
        (case_id, rule.id, target, level)
        for case_id, alerts in fired.items()
        for target, level in alerts
        for rule in rules
        if _matches(rule, cases[case_id], target, level, tree)
    ]
    if not candidates:
        return 0
    done_before = {
        (r["case_id"], r["rule_id"], r["target"], r["level"])
        for r in await conn.fetch(
            "SELECT e.case_id, e.rule_id, e.target, e.level FROM case_escalations e "
            "JOIN unnest($1::bigint[], $2::bigint[]) AS k(c, r) ON e.case_id = k.c AND e.rule_id = k.r",
            [c[0] for c in candidates],
            [c[1] for c in candidates],
        )
    }
    by_rule = {r.id: r for r in rules}
    plans: dict[int, _Plan] = {}
    for case_id, rule_id, target, level in candidates:
        if (case_id, rule_id, target, level) not in done_before:
            plans.setdefault(case_id, _Plan(cases[case_id])).apply(by_rule[rule_id], target, level)
    if not plans:
        return 0
    fired_rows = [
        (p, rule, target, level, actions)
        for p in plans.values()
        for rule, target, level, actions in p.fired
    ]
    # The case rows are locked by this batch, so no other evaluator inserts the same keys.
    ids = await conn.fetch(
        """
        INSERT INTO case_escalations (case_id, rule_id, target, level, at, notify_supervisors,
                                      actions)
        SELECT c, r, t, l, $5, n, a::jsonb
        FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $6::boolean[], $7::text[])
             WITH ORDINALITY AS x(c, r, t, l, n, a, i)
        ORDER BY i
        RETURNING id
        """,
        [f[0].case["id"] for f in fired_rows],
        [f[1].id for f in fired_rows],
        [f[2] for f in fired_rows],
        [f[3] for f in fired_rows],
        now,
        [f[1].notify_supervisors for f in fired_rows],
        [_ENCODE.encode(f[4]).decode() for f in fired_rows],
    )
    events: list[tuple[int, NewEvent]] = []
    changes: list[Change] = []
    for (plan, rule, target, level, actions), row in zip(fired_rows, ids, strict=True):
        data = {
            "escalation_id": row["id"],
            "rule_id": rule.id,
            "rule": rule.name,
            "target": target,
            "level": level,
            "actions": actions,
        }
        events.append((plan.case["id"], NewEvent(kind="escalation", data=data)))
        changes.append(Change("case", str(plan.case["id"]), "escalate", None, None, data))
    moved = [
        p
        for p in plans.values()
        if (p.priority, p.group, p.assignee)
        != (p.case["priority"], p.case["group_code"], p.case["assignee_id"])
    ]
    if moved:
        await conn.execute(
            "UPDATE cases c SET priority = m.p, group_code = m.g, assignee_id = m.a, "
            "updated_at = herald_now() FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) "
            "AS m(i, p, g, a) WHERE c.id = m.i",
            [p.case["id"] for p in moved],
            [p.priority for p in moved],
            [p.group for p in moved],
            [p.assignee for p in moved],
        )
        for p in moved:
            changes.extend(
                audit.field_changes(
                    "case",
                    p.case["id"],
                    {
                        "priority": p.case["priority"],
                        "group_code": p.case["group_code"],
                        "assignee_id": p.case["assignee_id"],
                    },
                    {"priority": p.priority, "group_code": p.group, "assignee_id": p.assignee},
                )
            )
    await store.append_many(conn, EVALUATOR, events)
    await audit.record(conn, EVALUATOR, changes)
    return len(fired_rows)


async def _batch(conn: asyncpg.Connection, now: dt.datetime) -> tuple[int, int]:
    """One batch of due checks in a transaction: (checks claimed, cases evaluated)."""
    async with conn.transaction():
        result = await conn.fetch(_CYCLE, now, BATCH)
        claimed, evaluated = result[0]["claimed"], result[0]["evaluated"]
        rows = [r for r in result if r["id"] is not None]
        warnings: list[tuple[int, str, dt.datetime]] = []
        breaches: list[tuple[int, str, dt.datetime]] = []
        for r in rows:
            for target, level, new, due in (
                ("first_response", r["fr"], r["fr_alert"], r["first_response_due_at"]),
                ("resolution", r["res"], r["res_alert"], r["resolution_due_at"]),
            ):
                if new:
                    (warnings if level == 1 else breaches).append((r["id"], target, due))
        warned = await _record(conn, "case_sla_warnings", "warned_at", warnings, now)
        breached = await _record(conn, "case_sla_breaches", "detected_at", breaches, now)
        if not warned and not breached:
            return claimed, evaluated
        fired: dict[int, list[tuple[str, str]]] = defaultdict(list)
        new_events: list[tuple[int, NewEvent]] = []
        for level, found, alerts in (
            ("warning", warned, warnings),
            ("breached", breached, breaches),
        ):
            for case_id, target, due in alerts:
                if (case_id, target) in found:
                    fired[case_id].append((target, level))
                    new_events.append(
                        (
                            case_id,
                            NewEvent(
                                kind="sla",
                                data={"target": target, "level": level, "due_at": due.isoformat()},
                            ),
                        )
                    )
        await store.append_many(conn, EVALUATOR, new_events)
        rules = await sla_config.list_rules(conn, active_only=True)
        if rules:
            await _escalate(conn, {r["id"]: r for r in rows}, fired, rules, now)
        return claimed, evaluated


async def run_sla_cycle(
    pool: asyncpg.Pool, *, now: dt.datetime | None = None, parallel: int = 2
) -> int:
    """Evaluate every case whose next check is due; return how many were evaluated.

    ``parallel`` connections take batches side by side (SKIP LOCKED keeps them apart)."""
    now = now or clock.now()

    async def drain() -> int:
        # One connection for all its batches: a fresh one would plan the statement again.
        total = 0
        async with pool.acquire() as conn:
            while True:
                claimed, evaluated = await _batch(conn, now)
                total += evaluated
                if claimed < BATCH:
                    return total

    return sum(await asyncio.gather(*(drain() for _ in range(max(1, parallel)))))


class CaseEscalation(msgspec.Struct):
    """What one escalation rule did to a case, and when."""

    id: int
    case_id: int
    number: str
    rule_id: int
    target: str
    level: str
    at: dt.datetime
    notify_supervisors: bool
    actions: dict[str, Any]


async def escalations(
    conn: asyncpg.Connection,
    *,
    notify: bool | None,
    case_id: int | None,
    before_id: int | None,
    limit: int,
) -> list[CaseEscalation]:
    """Escalations newest first, optionally only those that notify supervisors or of one case;
    ``before_id`` is the keyset cursor."""
    rows = await conn.fetch(
        """
        SELECT e.id, e.case_id, c.number, e.rule_id, e.target, e.level, e.at,
               e.notify_supervisors, e.actions
        FROM case_escalations e JOIN cases c ON c.id = e.case_id
        WHERE ($1::boolean IS NULL OR e.notify_supervisors = $1)
          AND ($2::bigint IS NULL OR e.case_id = $2)
          AND ($3::bigint IS NULL OR e.id < $3)
        ORDER BY e.id DESC LIMIT $4
        """,
        notify,
        case_id,
        before_id,
        limit,
    )
    return [CaseEscalation(**dict(r)) for r in rows]
