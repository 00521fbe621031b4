"""No-code automations of the status model: on a client's reply, and after idle time.

``client_reply`` rules run inside the intake of a follow-up message. ``idle`` rules run
from the scheduler: ``run_due_automations(pool)`` moves every case that has sat in a
status with neither a status change nor a client message for the rule's hours.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

import asyncpg
import msgspec

from crm.cases import routing, store, transitions
from crm.cases.store import NewEvent
from crm.cases.types import Case, CaseAutomationRule, Status
from herald import audit
from herald.audit import Actor, Change
from herald.errors import InvalidInput, NotFound

log = logging.getLogger("herald.cases.automation")

AUTOMATION = Actor(login="automation")
BATCH = 500


class CaseAutomationSpec(msgspec.Struct, forbid_unknown_fields=True):
    """``client_reply``: the client wrote while the case was ``from_status``. ``idle``: the
    case stayed ``from_status`` for ``idle_hours`` without a status change or client message."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    trigger: Literal["client_reply", "idle"]
    from_status: Status
    to_status: Status
    idle_hours: Annotated[int, msgspec.Meta(ge=1, le=8760)] | None = None
    is_active: bool = True


_SELECT = (
    "SELECT id, name, is_active, trigger, from_status, to_status, idle_hours, created_at, "
    "updated_at FROM case_automation_rules"
)


async def list_rules(conn: asyncpg.Connection) -> list[CaseAutomationRule]:
    return [CaseAutomationRule(**dict(r)) for r in await conn.fetch(_SELECT + " ORDER BY id")]


async def _get(conn: asyncpg.Connection, rule_id: int) -> CaseAutomationRule:
    row = await conn.fetchrow(_SELECT + " WHERE id = $1", rule_id)
    if row is None:
        raise NotFound(f"no automation rule {rule_id}")
    return CaseAutomationRule(**dict(row))


async def _check(conn: asyncpg.Connection, spec: CaseAutomationSpec) -> None:
    if spec.from_status == spec.to_status:
        raise InvalidInput("to_status", "the rule must change the status")
    if (spec.trigger == "idle") != (spec.idle_hours is not None):
        raise InvalidInput("idle_hours", "give idle_hours for an idle rule, and only for it")
    if not await transitions.is_allowed(conn, spec.from_status, spec.to_status):
        raise InvalidInput(
            "to_status",
            f"the transition table does not allow {spec.from_status} -> {spec.to_status}",
        )


def _auditable(rule: CaseAutomationRule) -> dict[str, object]:
    data = msgspec.to_builtins(rule)
    for key in ("id", "created_at", "updated_at"):
        data.pop(key)
    return data


async def create_rule(
    conn: asyncpg.Connection, actor: Actor, spec: CaseAutomationSpec
) -> CaseAutomationRule:
    async with conn.transaction():
        await _check(conn, spec)
        rule_id = await conn.fetchval(
            "INSERT INTO case_automation_rules (name, is_active, trigger, from_status, to_status, "
            "idle_hours) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            spec.name,
            spec.is_active,
            spec.trigger,
            spec.from_status,
            spec.to_status,
            spec.idle_hours,
        )
        rule = await _get(conn, rule_id)
        await audit.record(
            conn,
            actor,
            [Change("case_automation", str(rule_id), "create", None, None, _auditable(rule))],
        )
        return rule


async def update_rule(
    conn: asyncpg.Connection, actor: Actor, rule_id: int, spec: CaseAutomationSpec
) -> CaseAutomationRule:
    async with conn.transaction():
        before = await _get(conn, rule_id)
        await _check(conn, spec)
        await conn.execute(
            "UPDATE case_automation_rules SET name = $2, is_active = $3, trigger = $4, "
            "from_status = $5, to_status = $6, idle_hours = $7, updated_at = herald_now() WHERE id = $1",
            rule_id,
            spec.name,
            spec.is_active,
            spec.trigger,
            spec.from_status,
            spec.to_status,
            spec.idle_hours,
        )
        after = await _get(conn, rule_id)
        await audit.record(
            conn,
            actor,
            audit.field_changes("case_automation", rule_id, _auditable(before), _auditable(after)),
        )
        return after


async def delete_rule(conn: asyncpg.Connection, actor: Actor, rule_id: int) -> None:
    async with conn.transaction():
        before = await _get(conn, rule_id)
        await conn.execute("DELETE FROM case_automation_rules WHERE id = $1", rule_id)
        await audit.record(
            conn,
            actor,
            [Change("case_automation", str(rule_id), "delete", None, _auditable(before), None)],
        )


async def on_client_reply(conn: asyncpg.Connection, case: Case) -> Case:
    """Apply the first active client_reply rule for the (locked) case's status, if any and
    if the transition table still allows it."""
    rule = await conn.fetchrow(
        "SELECT id, to_status FROM case_automation_rules WHERE is_active "
        "AND trigger = 'client_reply' AND from_status = $1 ORDER BY id LIMIT 1",
        case.status,
    )
    if rule is None:
        return case
    if not await transitions.is_allowed(conn, case.status, rule["to_status"]):
        log.warning(
            "automation rule %s: %s -> %s is no longer allowed; skipped",
            rule["id"],
            case.status,
            rule["to_status"],
        )
        return case
    return await transitions.apply(
        conn,
        AUTOMATION,
        case,
        rule["to_status"],
        data={"automation_rule_id": rule["id"], "trigger": "client_reply"},
    )


async def _run_idle_batch(pool: asyncpg.Pool, rule: asyncpg.Record) -> int:
    async with pool.acquire() as conn, conn.transaction():
        if not await transitions.is_allowed(conn, rule["from_status"], rule["to_status"]):
            log.warning(
                "automation rule %s: %s -> %s is no longer allowed; skipped",
                rule["id"],
                rule["from_status"],
                rule["to_status"],
            )
            return 0
        rows = await conn.fetch(
            """
            SELECT id, status, client_id FROM cases
            WHERE status <> 'closed' AND status = $1
              AND status_changed_at < herald_now() - make_interval(hours => $2)
              AND last_inbound_at < herald_now() - make_interval(hours => $2)
            ORDER BY status_changed_at LIMIT $3
            FOR UPDATE SKIP LOCKED
            """,
            rule["from_status"],
            rule["idle_hours"],
            BATCH,
        )
        if not rows:
            return 0
        ids = [r["id"] for r in rows]
        await conn.execute(
            "UPDATE cases SET status = $2, status_changed_at = herald_now(), "
            "updated_at = herald_now() WHERE id = ANY($1::bigint[])",
            ids,
            rule["to_status"],
        )
        data = {
            "automation_rule_id": rule["id"],
            "trigger": "idle",
            "idle_hours": rule["idle_hours"],
        }
        await store.append_many(
            conn,
            AUTOMATION,
            [
                (
                    i,
                    NewEvent(
                        kind="status",
                        from_status=rule["from_status"],
                        to_status=rule["to_status"],
                        data=data,
                    ),
                )
                for i in ids
            ],
        )
        await audit.record(
            conn,
            AUTOMATION,
            [
                Change("case", str(i), "update", "status", rule["from_status"], rule["to_status"])
                for i in ids
            ],
        )
        if transitions.reopens(rule["from_status"], rule["to_status"]):
            await routing.hold_capacity(conn, AUTOMATION, ids, reason="reopened")
        for r in rows:
            if r["client_id"] is not None:
                await store.on_timeline(conn, await store.get_case(conn, r["id"]))
        return len(ids)


async def run_due_automations(pool: asyncpg.Pool) -> int:
    """Apply every active idle rule to the cases that are due; return how many moved.

    Safe to run from several processes at once (rows are claimed with SKIP LOCKED)."""
    async with pool.acquire() as conn:
        rules = await conn.fetch(
            "SELECT id, from_status, to_status, idle_hours FROM case_automation_rules "
            "WHERE is_active AND trigger = 'idle' ORDER BY id"
        )
    moved = 0
    for rule in rules:
        while True:
            done = await _run_idle_batch(pool, rule)
            moved += done
            if done < BATCH:
                break
    return moved
