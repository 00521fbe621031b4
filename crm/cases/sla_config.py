"""SLA policies and escalation rules (admin-defined), journalled.

Policy matching (done in SQL by ``case_sla_plan``, migration 0021): a policy applies to a
case when each of its given ``case_type``, ``priority`` and ``category_id`` equals the
case's (a field left null matches anything). Of the policies that apply, the most
specific wins: the one with the most fields given; on a tie, one with a category beats
one without, then the nearest category (a policy's category covers its subcategories,
migration 0037), then one with a type; then the lowest id. The scope (type, priority,
category) of two policies is never the same. Creating or changing a policy plans the open
cases it applied to or now covers again (``sla_replan``), in the same transaction;
deadlines set by hand, targets already done and recorded breaches stay.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import asyncpg
import msgspec

from crm.cases import sla_replan
from crm.cases.types import CaseType, Priority
from herald import audit
from herald.audit import Actor, Change
from herald.bounds import Id
from herald.errors import Conflict, InvalidInput, NotFound

Target = Literal["first_response", "resolution"]
Level = Literal["warning", "breached"]


class SlaPolicySpec(msgspec.Struct, forbid_unknown_fields=True):
    """Targets in business minutes of the calendar; at least one target."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    calendar_id: Id
    case_type: CaseType | None = None
    priority: Priority | None = None
    category_id: Id | None = None
    first_response_minutes: Annotated[int, msgspec.Meta(ge=1, le=525600)] | None = None
    resolution_minutes: Annotated[int, msgspec.Meta(ge=1, le=5256000)] | None = None
    warning_percent: Annotated[int, msgspec.Meta(ge=1, le=99)] = 80
    is_active: bool = True


class SlaPolicy(msgspec.Struct):
    id: int
    name: str
    is_active: bool
    case_type: str | None
    priority: str | None
    category_id: int | None
    calendar_id: int
    first_response_minutes: int | None
    resolution_minutes: int | None
    warning_percent: int
    created_at: dt.datetime
    updated_at: dt.datetime


class EscalationRuleSpec(msgspec.Struct, forbid_unknown_fields=True):
    """On ``on_level`` of ``target`` (null: either) of a case matching the optional
    type / priority / category / group: notify supervisors, raise the priority ("step" =
    one level up, or a level) and/or reassign to a group. At least one action."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    on_level: Level
    target: Target | None = None
    case_type: CaseType | None = None
    priority: Priority | None = None
    category_id: Id | None = None
    group_code: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    notify_supervisors: bool = False
    raise_priority: Literal["step", "normal", "high", "urgent"] | None = None
    reassign_group: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    is_active: bool = True


class EscalationRule(msgspec.Struct):
    id: int
    name: str
    is_active: bool
    on_level: str
    target: str | None
    case_type: str | None
    priority: str | None
    category_id: int | None
    group_code: str | None
    notify_supervisors: bool
    raise_priority: str | None
    reassign_group: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


_POLICY_FIELDS = (
    "name",
    "is_active",
    "case_type",
    "priority",
    "category_id",
    "calendar_id",
    "first_response_minutes",
    "resolution_minutes",
    "warning_percent",
)
_RULE_FIELDS = (
    "name",
    "is_active",
    "on_level",
    "target",
    "case_type",
    "priority",
    "category_id",
    "group_code",
    "notify_supervisors",
    "raise_priority",
    "reassign_group",
)


def _values(spec: msgspec.Struct, fields: tuple[str, ...]) -> dict[str, Any]:
    return {f: getattr(spec, f) for f in fields}


async def _check_category(conn: asyncpg.Connection, category_id: int | None) -> None:
    if category_id is not None and not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM case_categories WHERE id = $1)", category_id
    ):
        raise InvalidInput("category_id", f"no case category {category_id}")


async def _check_policy(
    conn: asyncpg.Connection, spec: SlaPolicySpec, policy_id: int | None
) -> None:
    if spec.first_response_minutes is None and spec.resolution_minutes is None:
        raise InvalidInput(
            "first_response_minutes", "give first_response_minutes and/or resolution_minutes"
        )
    if not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM business_calendars WHERE id = $1)", spec.calendar_id
    ):
        raise InvalidInput("calendar_id", f"no business calendar {spec.calendar_id}")
    await _check_category(conn, spec.category_id)
    clash = await conn.fetchval(
        "SELECT id FROM case_sla_policies WHERE case_type IS NOT DISTINCT FROM $1 "
        "AND priority IS NOT DISTINCT FROM $2 AND category_id IS NOT DISTINCT FROM $3 "
        "AND id IS DISTINCT FROM $4",
        spec.case_type,
        spec.priority,
        spec.category_id,
        policy_id,
    )
    if clash is not None:
        raise Conflict(f"SLA policy {clash} has the same case type, priority and category")


_POLICY_SELECT = (
    f"SELECT id, {', '.join(_POLICY_FIELDS)}, created_at, updated_at FROM case_sla_policies"
)
_RULE_SELECT = (
    f"SELECT id, {', '.join(_RULE_FIELDS)}, created_at, updated_at FROM case_escalation_rules"
)


async def list_policies(conn: asyncpg.Connection) -> list[SlaPolicy]:
    return [SlaPolicy(**dict(r)) for r in await conn.fetch(_POLICY_SELECT + " ORDER BY id")]


async def get_policy(conn: asyncpg.Connection, policy_id: int) -> SlaPolicy:
    row = await conn.fetchrow(_POLICY_SELECT + " WHERE id = $1", policy_id)
    if row is None:
        raise NotFound(f"no SLA policy {policy_id}")
    return SlaPolicy(**dict(row))


def _audited(value: msgspec.Struct, fields: tuple[str, ...]) -> dict[str, Any]:
    return {f: getattr(value, f) for f in fields}


async def create_policy(conn: asyncpg.Connection, actor: Actor, spec: SlaPolicySpec) -> SlaPolicy:
    values = _values(spec, _POLICY_FIELDS)
    async with conn.transaction():
        await _check_policy(conn, spec, None)
        policy_id = await conn.fetchval(
            f"INSERT INTO case_sla_policies ({', '.join(_POLICY_FIELDS)}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            *values.values(),
        )
        await audit.record(
            conn, actor, [Change("case_sla_policy", str(policy_id), "create", None, None, values)]
        )
        await sla_replan.after_policy_change(conn, actor, policy_id, spec.name)
        return await get_policy(conn, policy_id)


async def update_policy(
    conn: asyncpg.Connection, actor: Actor, policy_id: int, spec: SlaPolicySpec
) -> SlaPolicy:
    values = _values(spec, _POLICY_FIELDS)
    async with conn.transaction():
        before = await get_policy(conn, policy_id)
        await _check_policy(conn, spec, policy_id)
        sets = ", ".join(f"{f} = ${i}" for i, f in enumerate(_POLICY_FIELDS, start=2))
        await conn.execute(
            f"UPDATE case_sla_policies SET {sets}, updated_at = herald_now() WHERE id = $1",
            policy_id,
            *values.values(),
        )
        await audit.record(
            conn,
            actor,
            audit.field_changes(
                "case_sla_policy", policy_id, _audited(before, _POLICY_FIELDS), values
            ),
        )
        if _audited(before, _POLICY_FIELDS) | {"name": spec.name} != values:
            await sla_replan.after_policy_change(conn, actor, policy_id, spec.name)
        return await get_policy(conn, policy_id)


async def delete_policy(conn: asyncpg.Connection, actor: Actor, policy_id: int) -> None:
    """Delete a policy no case refers to; a used one is refused (deactivate it instead)."""
    async with conn.transaction():
        before = await get_policy(conn, policy_id)
        if await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM cases WHERE sla_policy_id = $1)", policy_id
        ):
            raise Conflict(f"SLA policy {policy_id} is used by cases; deactivate it instead")
        await conn.execute("DELETE FROM case_sla_policies WHERE id = $1", policy_id)
        await audit.record(
            conn,
            actor,
            [
                Change(
                    "case_sla_policy",
                    str(policy_id),
                    "delete",
                    None,
                    _audited(before, _POLICY_FIELDS),
                    None,
                )
            ],
        )


async def list_rules(
    conn: asyncpg.Connection, *, active_only: bool = False
) -> list[EscalationRule]:
    where = " WHERE is_active" if active_only else ""
    return [
        EscalationRule(**dict(r)) for r in await conn.fetch(_RULE_SELECT + where + " ORDER BY id")
    ]


async def get_rule(conn: asyncpg.Connection, rule_id: int) -> EscalationRule:
    row = await conn.fetchrow(_RULE_SELECT + " WHERE id = $1", rule_id)
    if row is None:
        raise NotFound(f"no escalation rule {rule_id}")
    return EscalationRule(**dict(row))


async def _check_rule(conn: asyncpg.Connection, spec: EscalationRuleSpec) -> None:
    if not (spec.notify_supervisors or spec.raise_priority or spec.reassign_group):
        raise InvalidInput(
            "notify_supervisors",
            "give an action: notify_supervisors, raise_priority or reassign_group",
        )
    await _check_category(conn, spec.category_id)


async def create_rule(
    conn: asyncpg.Connection, actor: Actor, spec: EscalationRuleSpec
) -> EscalationRule:
    values = _values(spec, _RULE_FIELDS)
    async with conn.transaction():
        await _check_rule(conn, spec)
        rule_id = await conn.fetchval(
            f"INSERT INTO case_escalation_rules ({', '.join(_RULE_FIELDS)}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
            *values.values(),
        )
        await audit.record(
            conn,
            actor,
            [Change("case_escalation_rule", str(rule_id), "create", None, None, values)],
        )
        return await get_rule(conn, rule_id)


async def update_rule(
    conn: asyncpg.Connection, actor: Actor, rule_id: int, spec: EscalationRuleSpec
) -> EscalationRule:
    values = _values(spec, _RULE_FIELDS)
    async with conn.transaction():
        before = await get_rule(conn, rule_id)
        await _check_rule(conn, spec)
        sets = ", ".join(f"{f} = ${i}" for i, f in enumerate(_RULE_FIELDS, start=2))
        await conn.execute(
            f"UPDATE case_escalation_rules SET {sets}, updated_at = herald_now() WHERE id = $1",
            rule_id,
            *values.values(),
        )
        await audit.record(
            conn,
            actor,
            audit.field_changes(
                "case_escalation_rule", rule_id, _audited(before, _RULE_FIELDS), values
            ),
        )
        return await get_rule(conn, rule_id)


async def delete_rule(conn: asyncpg.Connection, actor: Actor, rule_id: int) -> None:
    """Delete a rule that never fired; one that did is refused (deactivate it instead)."""
    async with conn.transaction():
        before = await get_rule(conn, rule_id)
        if await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM case_escalations WHERE rule_id = $1)", rule_id
        ):
            raise Conflict(f"escalation rule {rule_id} has escalated cases; deactivate it instead")
        await conn.execute("DELETE FROM case_escalation_rules WHERE id = $1", rule_id)
        await audit.record(
            conn,
            actor,
            [
                Change(
                    "case_escalation_rule",
                    str(rule_id),
                    "delete",
                    None,
                    _audited(before, _RULE_FIELDS),
                    None,
                )
            ],
        )
