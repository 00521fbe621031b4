"""Deadlines of open cases planned again after an administrator changed a business
calendar or an SLA policy (issue 20 point 9).

Set-based: one statement per change plans every affected open case again with
``case_sla_replanned`` (migration 0036, the same planning as a reclassification: the
policy that applies now; a deadline set by hand or a target already done is kept; a
recorded breach stays), writes only the cases whose deadlines or policy changed, puts
them on the evaluator's schedule at once (or off it, without a policy), and writes one
``deadline`` event per moved target into the case's journal (``data.replanned`` says
why; the "deadline changed" client notification skips these, so an admin's edit never
texts every client with an open case). A ``replan`` entry in the changed calendar's or
policy's own journal counts the cases (none when no case changed).

Affected cases: open work (New, In Progress, On Hold; a Resolved case keeps its plan)
whose policy uses the calendar; for a policy, the open work it applied to and that its
scope now covers (a category with its subcategories). Run in the transaction of the change,
so an edit and its re-plan commit together; the rows are locked in id order for the
statement.
"""

from __future__ import annotations

import asyncpg

from herald import audit
from herald.audit import Actor, Change

_REPLAN = """
WITH affected AS (
    SELECT c.id FROM cases c
    WHERE c.status IN ('new', 'in_progress', 'on_hold') AND ({scope})
    ORDER BY c.id FOR UPDATE OF c
), planned AS (
    SELECT c.id, c.sla_policy_id AS old_policy, c.first_response_due_at AS old_fr,
           c.resolution_due_at AS old_res, r.*
    FROM cases c JOIN affected a ON a.id = c.id
    CROSS JOIN LATERAL case_sla_replanned(c) r
), changed AS (
    UPDATE cases c
    SET sla_policy_id = p.policy_id, first_response_due_at = p.fr_due,
        first_response_warn_at = p.fr_warn, resolution_due_at = p.res_due,
        resolution_warn_at = p.res_warn, first_response_due_manual = p.fr_manual,
        resolution_due_manual = p.res_manual, sla_state = p.state, updated_at = herald_now()
    FROM planned p
    WHERE c.id = p.id
      AND (c.sla_policy_id, c.first_response_due_at, c.first_response_warn_at,
           c.resolution_due_at, c.resolution_warn_at, c.sla_state)
          IS DISTINCT FROM (p.policy_id, p.fr_due, p.fr_warn, p.res_due, p.res_warn, p.state)
    RETURNING c.id, p.policy_id, p.old_fr, p.fr_due, p.old_res, p.res_due
), scheduled AS (
    INSERT INTO case_sla_checks (case_id, next_check_at)
    SELECT id, herald_now() FROM changed WHERE policy_id IS NOT NULL
    ON CONFLICT (case_id) DO UPDATE SET next_check_at = excluded.next_check_at
), unscheduled AS (
    DELETE FROM case_sla_checks k USING changed
    WHERE k.case_id = changed.id AND changed.policy_id IS NULL
), journal AS (
    INSERT INTO case_events (case_id, kind, actor_id, actor_login, body, data)
    SELECT m.id, 'deadline', $1::bigint, $2::text, $3::text,
           jsonb_build_object('target', v.target, 'old_due_at', v.old_due, 'new_due_at', v.new_due,
                              'reason', $3::text, 'replanned', $4::text) || $5::jsonb
    FROM changed m
    CROSS JOIN LATERAL (VALUES ('first_response', m.old_fr, m.fr_due),
                               ('resolution', m.old_res, m.res_due)) AS v(target, old_due, new_due)
    WHERE v.old_due IS DISTINCT FROM v.new_due
    ORDER BY m.id, v.target
)
SELECT count(*) FROM changed
"""


async def _replan(
    conn: asyncpg.Connection,
    actor: Actor,
    scope: str,
    args: list[object],
    reason: str,
    why: str,
    about: dict[str, int],
) -> int:
    base: list[object] = [actor.id, actor.login, reason, why, about]
    sql = _REPLAN.format(scope=scope.format(*(f"${i}" for i in range(6, 6 + len(args)))))
    return int(await conn.fetchval(sql, *base, *args))


async def after_calendar_change(
    conn: asyncpg.Connection, actor: Actor, calendar_id: int, name: str
) -> int:
    """Re-plan the open cases whose policy uses the calendar; returns how many changed."""
    changed = await _replan(
        conn,
        actor,
        "c.sla_policy_id IN (SELECT id FROM case_sla_policies WHERE calendar_id = {0})",
        [calendar_id],
        f"Змінено робочий календар «{name}»",
        "calendar",
        {"calendar_id": calendar_id},
    )
    if changed:
        await audit.record(
            conn,
            actor,
            [
                Change(
                    "business_calendar", str(calendar_id), "replan", None, None, {"cases": changed}
                )
            ],
        )
    return changed


# The open cases a policy's scope covers (its category with the subcategories).
_POLICY_SCOPE = """
c.sla_policy_id = {0} OR EXISTS (
    SELECT 1 FROM case_sla_policies p
    WHERE p.id = {0}
      AND (p.case_type IS NULL OR p.case_type = c.case_type)
      AND (p.priority IS NULL OR p.priority = c.priority)
      AND (p.category_id IS NULL OR c.category_id IN (
          WITH RECURSIVE down(id) AS (
              SELECT p.category_id
              UNION SELECT k.id FROM case_categories k JOIN down ON k.parent_id = down.id)
          SELECT id FROM down)))
"""


async def after_policy_change(
    conn: asyncpg.Connection, actor: Actor, policy_id: int, name: str
) -> int:
    """Re-plan the open cases the policy applied to or now covers; returns how many changed."""
    changed = await _replan(
        conn,
        actor,
        _POLICY_SCOPE,
        [policy_id],
        f"Змінено політику SLA «{name}»",
        "policy",
        {"policy_id": policy_id},
    )
    if changed:
        await audit.record(
            conn,
            actor,
            [Change("case_sla_policy", str(policy_id), "replan", None, None, {"cases": changed})],
        )
    return changed
