"""Case rules as settings (issue 15): create, change, switch on/off, move, delete, and
their versions. Every saved state is a row of ``case_rule_versions`` (who, when, the
whole rule) and an audit entry; a diff compares any two versions field by field, and a
rollback saves an old version's content as the newest version."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import msgspec

from crm.cases import rule_engine
from crm.cases.rule_types import (
    CaseRule,
    CaseRuleAlert,
    CaseRuleDiff,
    CaseRulePatch,
    CaseRuleRun,
    CaseRuleSpec,
    CaseRuleVersion,
)
from herald import audit
from herald.audit import Actor, Change
from herald.errors import Conflict, InvalidInput, NotFound

_COLUMNS = rule_engine._COLUMNS


def spec_of(rule: CaseRule) -> dict[str, Any]:
    """The settable content of a rule (what a version keeps)."""
    data: dict[str, Any] = msgspec.to_builtins(rule)
    for key in ("id", "version", "created_by", "created_at", "updated_by", "updated_at"):
        data.pop(key)
    return data


async def list_rules(conn: asyncpg.Connection) -> list[CaseRule]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM case_rules ORDER BY position, id")
    return [rule_engine.rule_from_row(r) for r in rows]


async def get_rule(conn: asyncpg.Connection, rule_id: int, *, lock: bool = False) -> CaseRule:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM case_rules WHERE id = $1" + (" FOR UPDATE" if lock else ""),
        rule_id,
    )
    if row is None:
        raise NotFound(f"no case rule {rule_id}")
    return rule_engine.rule_from_row(row)


def _values(spec: CaseRuleSpec) -> tuple[Any, ...]:
    data = msgspec.to_builtins(spec)
    return (
        spec.name,
        spec.position,
        spec.is_active,
        spec.stop_processing,
        spec.trigger.type,
        data["trigger"],
        data.get("condition"),
        data["actions"],
    )


async def _version(conn: asyncpg.Connection, actor: Actor, rule: CaseRule, action: str) -> None:
    await conn.execute(
        "INSERT INTO case_rule_versions (rule_id, version, action, spec, by_login) "
        "VALUES ($1, $2, $3, $4, $5)",
        rule.id,
        rule.version,
        action,
        spec_of(rule),
        actor.login,
    )


async def _next_position(conn: asyncpg.Connection) -> int:
    value: int = await conn.fetchval("SELECT coalesce(max(position), 0) + 10 FROM case_rules")
    return value


async def create_rule(conn: asyncpg.Connection, actor: Actor, spec: CaseRuleSpec) -> CaseRule:
    async with conn.transaction():
        spec = await rule_engine.check(conn, spec)
        if spec.position == 0:
            spec = msgspec.structs.replace(spec, position=await _next_position(conn))
        rule_id = await conn.fetchval(
            "INSERT INTO case_rules (name, position, is_active, stop_processing, trigger_type, "
            "trigger, condition, actions, created_by, updated_by) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING id",
            *_values(spec),
            actor.login,
        )
        rule = await get_rule(conn, rule_id)
        await _version(conn, actor, rule, "create")
        await audit.record(
            conn, actor, [Change("case_rule", str(rule_id), "create", None, None, spec_of(rule))]
        )
        return rule


async def _save(
    conn: asyncpg.Connection, actor: Actor, before: CaseRule, spec: CaseRuleSpec, action: str
) -> CaseRule:
    await conn.execute(
        "UPDATE case_rules SET name = $2, position = $3, is_active = $4, stop_processing = $5, "
        "trigger_type = $6, trigger = $7, condition = $8, actions = $9, version = version + 1, "
        "updated_by = $10, updated_at = herald_now() WHERE id = $1",
        before.id,
        *_values(spec),
        actor.login,
    )
    after = await get_rule(conn, before.id)
    await _version(conn, actor, after, action)
    await audit.record(
        conn, actor, audit.field_changes("case_rule", before.id, spec_of(before), spec_of(after))
    )
    return after


async def update_rule(
    conn: asyncpg.Connection, actor: Actor, rule_id: int, spec: CaseRuleSpec
) -> CaseRule:
    async with conn.transaction():
        before = await get_rule(conn, rule_id, lock=True)
        spec = await rule_engine.check(conn, spec)
        if spec.position == 0:  # not given: the rule keeps its place
            spec = msgspec.structs.replace(spec, position=before.position)
        return await _save(conn, actor, before, spec, "update")


async def patch_rule(
    conn: asyncpg.Connection, actor: Actor, rule_id: int, patch: CaseRulePatch
) -> CaseRule:
    async with conn.transaction():
        before = await get_rule(conn, rule_id, lock=True)
        spec = msgspec.convert(spec_of(before), CaseRuleSpec)
        if patch.is_active is not None:
            spec = msgspec.structs.replace(spec, is_active=patch.is_active)
        if patch.position is not None:
            spec = msgspec.structs.replace(spec, position=patch.position)
        if spec_of(before) == msgspec.to_builtins(spec):
            return before
        return await _save(conn, actor, before, spec, "update")


async def move_rule(
    conn: asyncpg.Connection, actor: Actor, rule_id: int, direction: str
) -> list[CaseRule]:
    """Swap a rule with its neighbour above ("up") or below ("down") in the order."""
    if direction not in ("up", "down"):
        raise InvalidInput("direction", "up or down")
    async with conn.transaction():
        await conn.execute("LOCK TABLE case_rules IN SHARE ROW EXCLUSIVE MODE")
        ordered = await list_rules(conn)
        index = next((i for i, r in enumerate(ordered) if r.id == rule_id), None)
        if index is None:
            raise NotFound(f"no case rule {rule_id}")
        other = index - 1 if direction == "up" else index + 1
        if not 0 <= other < len(ordered):
            return ordered
        ordered[index], ordered[other] = ordered[other], ordered[index]
        for position, rule in enumerate(ordered, start=1):
            if rule.position != position * 10:
                await patch_rule(conn, actor, rule.id, CaseRulePatch(position=position * 10))
        return await list_rules(conn)


async def delete_rule(conn: asyncpg.Connection, actor: Actor, rule_id: int) -> None:
    async with conn.transaction():
        before = await get_rule(conn, rule_id, lock=True)
        await conn.execute("DELETE FROM case_rules WHERE id = $1", rule_id)
        await conn.execute(
            "INSERT INTO case_rule_versions (rule_id, version, action, spec, by_login) "
            "VALUES ($1, $2, 'delete', $3, $4)",
            rule_id,
            before.version + 1,
            spec_of(before),
            actor.login,
        )
        await audit.record(
            conn, actor, [Change("case_rule", str(rule_id), "delete", None, spec_of(before), None)]
        )


async def versions(conn: asyncpg.Connection, rule_id: int) -> list[CaseRuleVersion]:
    rows = await conn.fetch(
        "SELECT rule_id, version, action, spec, by_login, at FROM case_rule_versions "
        "WHERE rule_id = $1 ORDER BY version DESC",
        rule_id,
    )
    if not rows:
        raise NotFound(f"no case rule {rule_id}")
    return [CaseRuleVersion(**dict(r)) for r in rows]


async def _spec_at(conn: asyncpg.Connection, rule_id: int, version: int) -> dict[str, Any]:
    spec = await conn.fetchval(
        "SELECT spec FROM case_rule_versions WHERE rule_id = $1 AND version = $2",
        rule_id,
        version,
    )
    if spec is None:
        raise NotFound(f"case rule {rule_id} has no version {version}")
    return dict(spec)


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{path}.{key}" if path else key, out)
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        for i, item in enumerate(value):
            _flatten(item, f"{path}[{i}]", out)
    else:
        out[path] = value


def diff_specs(old: dict[str, Any], new: dict[str, Any]) -> list[CaseRuleDiff]:
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    _flatten(old, "", a)
    _flatten(new, "", b)
    return [
        CaseRuleDiff(path, a.get(path), b.get(path))
        for path in sorted(set(a) | set(b))
        if a.get(path) != b.get(path)
    ]


async def diff(conn: asyncpg.Connection, rule_id: int, old: int, new: int) -> list[CaseRuleDiff]:
    return diff_specs(await _spec_at(conn, rule_id, old), await _spec_at(conn, rule_id, new))


async def rollback(conn: asyncpg.Connection, actor: Actor, rule_id: int, version: int) -> CaseRule:
    """Save the content of an old version as the rule's newest version (re-checked: a
    category or group deleted since refuses the rollback, naming the field)."""
    async with conn.transaction():
        old = await _spec_at(conn, rule_id, version)
        try:
            spec = msgspec.convert(old, CaseRuleSpec)
        except msgspec.ValidationError as exc:
            raise Conflict(f"version {version} no longer fits the rule format: {exc}") from None
        spec = await rule_engine.check(conn, spec)
        before = await get_rule(conn, rule_id, lock=True)
        return await _save(conn, actor, before, spec, "rollback")


async def runs(conn: asyncpg.Connection, case_id: int, limit: int = 100) -> list[CaseRuleRun]:
    rows = await conn.fetch(
        "SELECT id, case_id, rule_id, version, trigger, depth, outcome, actions, at "
        "FROM case_rule_runs WHERE case_id = $1 AND outcome <> 'no_match' "
        "ORDER BY id DESC LIMIT $2",
        case_id,
        limit,
    )
    return [CaseRuleRun(**dict(r)) for r in rows]


async def alerts(conn: asyncpg.Connection, limit: int = 50) -> list[CaseRuleAlert]:
    rows = await conn.fetch(
        "SELECT a.id, a.case_id, c.number AS case_number, a.rule_id, a.group_code, a.text, "
        "a.created_at FROM case_rule_alerts a JOIN cases c ON c.id = a.case_id "
        "ORDER BY a.id DESC LIMIT $1",
        limit,
    )
    return [CaseRuleAlert(**dict(r)) for r in rows]


async def case_id_of(conn: asyncpg.Connection, number: str | None, case_id: int | None) -> int:
    if case_id is not None:
        return case_id
    found = await conn.fetchval("SELECT id FROM cases WHERE number = $1", (number or "").strip())
    if found is None:
        raise InvalidInput("case_number", f"no case {number}")
    value: int = found
    return value


def draft(spec: CaseRuleSpec, actor: Actor) -> CaseRule:
    """An unsaved rule (for a dry run of the form being edited)."""
    now = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    return CaseRule(
        id=0,
        name=spec.name,
        position=spec.position,
        is_active=spec.is_active,
        stop_processing=spec.stop_processing,
        trigger=spec.trigger,
        condition=spec.condition,
        actions=spec.actions,
        version=0,
        created_by=actor.login,
        created_at=now,
        updated_by=actor.login,
        updated_at=now,
    )


async def webhook_secret(conn: asyncpg.Connection) -> str:
    value: str = await conn.fetchval("SELECT webhook_secret FROM case_rule_settings")
    return value


async def designer_choices(conn: asyncpg.Connection) -> dict[str, list[dict[str, Any]]]:
    """What the designer's selects offer: categories, groups, users, segments, templates."""
    categories = await conn.fetch(
        "SELECT code, name_uk, name_en FROM case_categories WHERE is_active ORDER BY code"
    )
    groups = await conn.fetch("SELECT code, name_uk, name_en FROM case_groups ORDER BY code")
    users = await conn.fetch(
        "SELECT id, full_name, login FROM users WHERE is_active ORDER BY full_name LIMIT 500"
    )
    segments = await conn.fetch("SELECT id, name FROM segments ORDER BY name LIMIT 500")
    templates = await conn.fetch(
        """
        SELECT t.id, t.name, array(SELECT jsonb_object_keys(v.variants)) AS channels
        FROM message_templates t
        JOIN message_template_versions v ON v.template_id = t.id AND v.version = t.current_version
        ORDER BY t.name LIMIT 500
        """
    )
    return {
        "categories": [dict(r) for r in categories],
        "groups": [dict(r) for r in groups],
        "users": [dict(r) for r in users],
        "segments": [dict(r) for r in segments],
        "templates": [dict(r) for r in templates],
    }
