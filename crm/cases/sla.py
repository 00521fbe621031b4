"""Per-case SLA as read by the API and the supervisor view, and a deadline changed by hand.

The deadlines themselves are set by database triggers (migration 0021) on every path
that creates or changes a case; the evaluator (``crm/cases/sla_evaluator.py``) moves
states to warning and breached. Remaining time is business time of the policy's calendar.
A target whose breach was recorded is not met, whatever its deadline became since; a
deadline set by hand is kept by every re-plan (migration 0036).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import asyncpg
import msgspec

from crm.cases import store
from crm.cases.sla_config import Target
from crm.cases.sla_types import CaseSla, SlaTargetState
from crm.cases.store import NewEvent
from herald import audit, clock
from herald.audit import Actor, Change
from herald.errors import Conflict, NotFound

_COLUMNS = {
    "first_response": (
        "first_response_due_at",
        "first_response_at",
        "first_response_warn_at",
        "first_response_due_manual",
    ),
    "resolution": (
        "resolution_due_at",
        "resolved_at",
        "resolution_warn_at",
        "resolution_due_manual",
    ),
}


class DeadlineChange(msgspec.Struct, forbid_unknown_fields=True):
    """Set a target's due time by hand (e.g. extend the resolution deadline), with a reason."""

    target: Target
    due_at: Annotated[dt.datetime, msgspec.Meta(tz=True)]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


_SQL = """
SELECT c.id, c.status, c.sla_state, c.sla_paused_at, c.sla_policy_id,
       c.first_response_due_at, c.first_response_at, c.resolution_due_at, c.resolved_at,
       c.first_response_breached_at, c.resolution_breached_at, c.first_response_due_manual,
       c.resolution_due_manual,
       CASE WHEN c.first_response_due_at IS NOT NULL AND c.first_response_at IS NULL
                 AND c.status <> 'closed' AND p.calendar_id IS NOT NULL
            THEN business_between(p.calendar_id, coalesce(c.sla_paused_at, $2),
                                  c.first_response_due_at) END AS fr_left,
       CASE WHEN c.resolution_due_at IS NOT NULL AND c.resolved_at IS NULL
                 AND c.status <> 'closed' AND p.calendar_id IS NOT NULL
            THEN business_between(p.calendar_id, coalesce(c.sla_paused_at, $2),
                                  c.resolution_due_at) END AS res_left
FROM cases c LEFT JOIN case_sla_policies p ON p.id = c.sla_policy_id
WHERE c.id = ANY($1::bigint[])
"""


def _target(
    due: dt.datetime | None,
    done: dt.datetime | None,
    left: float | None,
    ref: dt.datetime,
    breached_at: dt.datetime | None,
    by_hand: bool,
) -> SlaTargetState | None:
    if due is None:
        return None
    if breached_at is not None:
        met: bool | None = False  # a breach recorded stays, whatever the deadline is now
    else:
        met = (done <= due) if done is not None else (False if ref > due else None)
    return SlaTargetState(due, done, left, met, breached_at, by_hand)


async def sla_for(
    conn: asyncpg.Connection, case_ids: list[int], *, now: dt.datetime | None = None
) -> dict[int, CaseSla]:
    """The SLA block of each of ``case_ids`` that exists, in one query."""
    if not case_ids:
        return {}
    now = now or clock.now()
    out: dict[int, CaseSla] = {}
    for r in await conn.fetch(_SQL, list(case_ids), now):
        ref = r["sla_paused_at"] or now
        out[r["id"]] = CaseSla(
            state=r["sla_state"],
            paused=r["sla_paused_at"] is not None,
            paused_at=r["sla_paused_at"],
            policy_id=r["sla_policy_id"],
            first_response=_target(
                r["first_response_due_at"],
                r["first_response_at"],
                r["fr_left"],
                ref,
                r["first_response_breached_at"],
                r["first_response_due_manual"],
            ),
            resolution=_target(
                r["resolution_due_at"],
                r["resolved_at"],
                r["res_left"],
                ref,
                r["resolution_breached_at"],
                r["resolution_due_manual"],
            ),
        )
    return out


async def change_deadline(
    conn: asyncpg.Connection, actor: Actor, case_id: int, change: DeadlineChange
) -> CaseSla:
    """Move a target's due time; a ``deadline`` event and the journal keep old, new and why.
    The deadline is marked as set by hand: a later re-plan (a raised priority, a
    reclassification, a calendar or policy change) keeps it."""
    due_col, done_col, warn_col, manual_col = _COLUMNS[change.target]
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT number, status, sla_policy_id, {due_col} AS due, {done_col} AS done "
            "FROM cases WHERE id = $1 FOR UPDATE",
            case_id,
        )
        if row is None:
            raise NotFound(f"no case {case_id}")
        if row["status"] == "closed":
            raise Conflict(f"case {row['number']} is closed")
        if row["sla_policy_id"] is None or row["due"] is None:
            raise Conflict(
                f"case {row['number']} has no {change.target} deadline "
                "(no SLA policy with that target applies)"
            )
        if row["done"] is not None:
            raise Conflict(f"case {row['number']}: the {change.target} target is already done")
        await conn.execute(
            f"UPDATE cases SET {due_col} = $2, "
            f"{warn_col} = case_sla_warn_for(sla_policy_id, $3, $2), {manual_col} = true, "
            "updated_at = herald_now() WHERE id = $1",
            case_id,
            change.due_at,
            change.target,
        )
        await conn.execute("SELECT case_sla_check_now($1, true)", case_id)
        old, new = row["due"].isoformat(), change.due_at.isoformat()
        await store.append_events(
            conn,
            actor,
            case_id,
            [
                NewEvent(
                    kind="deadline",
                    body=change.reason,
                    data={
                        "target": change.target,
                        "old_due_at": old,
                        "new_due_at": new,
                        "reason": change.reason,
                    },
                )
            ],
        )
        await audit.record(conn, actor, [Change("case", str(case_id), "update", due_col, old, new)])
        return (await sla_for(conn, [case_id]))[case_id]


class SlaClock(msgspec.Struct, frozen=True):
    """Whether a case's SLA time is running now (its calendar is in working hours and the
    case not On Hold) and when that changes next (the end of the working span, or the start
    of the next one; None beyond the calendar's horizon). A countdown shown to a person
    runs only while ``running`` and stops at ``changes_at``."""

    running: bool
    changes_at: dt.datetime | None


_CLOCK_SQL = """
SELECT c.id, c.sla_paused_at IS NOT NULL AS paused, cur.ends_at AS working_until,
       (SELECT s.starts_at FROM business_calendar_spans s
        WHERE s.calendar_id = p.calendar_id AND s.starts_at > $2
        ORDER BY s.starts_at LIMIT 1) AS next_start
FROM cases c
JOIN case_sla_policies p ON p.id = c.sla_policy_id
LEFT JOIN LATERAL (
    SELECT s.ends_at FROM business_calendar_spans s
    WHERE s.calendar_id = p.calendar_id AND s.starts_at <= $2
    ORDER BY s.starts_at DESC LIMIT 1) cur ON cur.ends_at > $2
WHERE c.id = ANY($1::bigint[])
"""


async def sla_clocks(
    conn: asyncpg.Connection, case_ids: list[int], *, now: dt.datetime | None = None
) -> dict[int, SlaClock]:
    """The SLA clock of each of ``case_ids`` that has a policy, in one query."""
    if not case_ids:
        return {}
    now = now or clock.now()
    out: dict[int, SlaClock] = {}
    for r in await conn.fetch(_CLOCK_SQL, list(case_ids), now):
        if r["paused"]:
            out[r["id"]] = SlaClock(False, None)  # until someone takes it off hold
        elif r["working_until"] is not None:
            out[r["id"]] = SlaClock(True, r["working_until"])
        else:
            out[r["id"]] = SlaClock(False, r["next_start"])
    return out
