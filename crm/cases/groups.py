"""Case groups (departments), their members, and the routing rules that place a new case
in a group (SR-10). Administrators edit all of it; every change is journalled."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import asyncpg
import msgspec

from crm.cases.types import CaseType, Channel, Priority
from herald import audit
from herald.audit import Actor, Change
from herald.bounds import Id
from herald.errors import Conflict, InvalidInput, NotFound

GroupCode = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{1,40}$")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Mode = Literal["round_robin", "skills"]


class CaseGroup(msgspec.Struct):
    code: str
    name_uk: str
    name_en: str
    mode: str
    is_active: bool
    member_ids: list[int]
    created_at: dt.datetime
    updated_at: dt.datetime


class CaseGroupSpec(msgspec.Struct, forbid_unknown_fields=True):
    code: GroupCode
    name_uk: Name
    name_en: Name
    mode: Mode = "round_robin"


class CaseGroupPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name_uk: Name | None = None
    name_en: Name | None = None
    mode: Mode | None = None
    is_active: bool | None = None


class CaseGroupMembers(msgspec.Struct, forbid_unknown_fields=True):
    user_ids: Annotated[list[Id], msgspec.Meta(max_length=1000)]


class CaseRoutingRuleSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    group_code: GroupCode
    position: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    is_active: bool = True
    channels: Annotated[list[Channel], msgspec.Meta(max_length=8)] = []
    category_ids: Annotated[list[Id], msgspec.Meta(max_length=200)] = []
    case_types: Annotated[list[CaseType], msgspec.Meta(max_length=3)] = []
    priorities: Annotated[list[Priority], msgspec.Meta(max_length=4)] = []


class CaseRoutingRule(msgspec.Struct):
    id: int
    name: str
    group_code: str
    position: int
    is_active: bool
    channels: list[str]
    category_ids: list[int]
    case_types: list[str]
    priorities: list[str]
    created_at: dt.datetime
    updated_at: dt.datetime


class CaseRoutingSettings(msgspec.Struct):
    default_group: str | None
    updated_at: dt.datetime | None = None
    updated_by: str | None = None


class CaseRoutingSettingsSpec(msgspec.Struct, forbid_unknown_fields=True):
    default_group: GroupCode | None


_GROUP = """
SELECT g.code, g.name_uk, g.name_en, g.mode, g.is_active, g.created_at, g.updated_at,
       coalesce(array_agg(m.user_id ORDER BY m.user_id) FILTER (WHERE m.user_id IS NOT NULL),
                '{}') AS member_ids
FROM case_groups g LEFT JOIN case_group_members m ON m.group_code = g.code
"""


async def list_groups(conn: asyncpg.Connection) -> list[CaseGroup]:
    rows = await conn.fetch(_GROUP + " GROUP BY g.code ORDER BY g.code")
    return [CaseGroup(**dict(r)) for r in rows]


async def get_group(conn: asyncpg.Connection, code: str) -> CaseGroup:
    row = await conn.fetchrow(_GROUP + " WHERE g.code = $1 GROUP BY g.code", code)
    if row is None:
        raise NotFound(f"no case group {code!r}")
    return CaseGroup(**dict(row))


async def check_group(conn: asyncpg.Connection, code: str, field: str) -> None:
    """An active group, or InvalidInput naming ``field``."""
    if not await conn.fetchval("SELECT is_active FROM case_groups WHERE code = $1", code):
        raise InvalidInput(field, f"no active case group {code!r}")


async def create_group(conn: asyncpg.Connection, actor: Actor, spec: CaseGroupSpec) -> CaseGroup:
    async with conn.transaction():
        inserted = await conn.fetchval(
            "INSERT INTO case_groups (code, name_uk, name_en, mode) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (code) DO NOTHING RETURNING code",
            spec.code,
            spec.name_uk,
            spec.name_en,
            spec.mode,
        )
        if inserted is None:
            raise Conflict(f"a case group with code {spec.code!r} already exists")
        await audit.record(
            conn,
            actor,
            [Change("case_group", spec.code, "create", None, None, msgspec.to_builtins(spec))],
        )
        return await get_group(conn, spec.code)


async def update_group(
    conn: asyncpg.Connection, actor: Actor, code: str, patch: CaseGroupPatch
) -> CaseGroup:
    changes = msgspec.to_builtins(patch)
    if not changes:
        raise InvalidInput("body", "give at least one field to change")
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT name_uk, name_en, mode, is_active FROM case_groups WHERE code = $1 FOR UPDATE",
            code,
        )
        if row is None:
            raise NotFound(f"no case group {code!r}")
        before = dict(row)
        new = {**before, **changes}
        await conn.execute(
            "UPDATE case_groups SET name_uk = $2, name_en = $3, mode = $4, "
            "is_active = $5, updated_at = herald_now() WHERE code = $1",
            code,
            new["name_uk"],
            new["name_en"],
            new["mode"],
            new["is_active"],
        )
        await audit.record(conn, actor, audit.field_changes("case_group", code, before, new))
        return await get_group(conn, code)


async def set_members(
    conn: asyncpg.Connection, actor: Actor, code: str, user_ids: list[int]
) -> CaseGroup:
    """Make ``user_ids`` the whole membership of the group (journalled as added/removed).
    A removed member keeps the cases already assigned to them."""
    wanted = set(user_ids)
    async with conn.transaction():
        if (
            await conn.fetchval("SELECT code FROM case_groups WHERE code = $1 FOR UPDATE", code)
            is None
        ):
            raise NotFound(f"no case group {code!r}")
        active = {
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM users WHERE id = ANY($1::bigint[]) AND is_active", list(wanted)
            )
        }
        for i, user_id in enumerate(user_ids):
            if user_id not in active:
                raise InvalidInput(f"user_ids[{i}]", f"no active user {user_id}")
        current = {
            r["user_id"]
            for r in await conn.fetch(
                "SELECT user_id FROM case_group_members WHERE group_code = $1", code
            )
        }
        added, removed = sorted(wanted - current), sorted(current - wanted)
        await conn.execute(
            "DELETE FROM case_group_members WHERE group_code = $1 AND user_id = ANY($2::bigint[])",
            code,
            removed,
        )
        await conn.execute(
            "INSERT INTO case_group_members (group_code, user_id) "
            "SELECT $1, u FROM unnest($2::bigint[]) AS u",
            code,
            added,
        )
        await conn.execute(
            "INSERT INTO case_agents (user_id) SELECT u FROM unnest($1::bigint[]) "
            "AS u ON CONFLICT (user_id) DO NOTHING",
            added,
        )
        await audit.record(
            conn,
            actor,
            [
                *(Change("case_group", code, "link", "member", None, u) for u in added),
                *(Change("case_group", code, "unlink", "member", u, None) for u in removed),
            ],
        )
        return await get_group(conn, code)


# -- routing rules ---------------------------------------------------------------------------

_RULE = (
    "SELECT id, name, group_code, position, is_active, channels, category_ids, case_types, "
    "priorities, created_at, updated_at FROM case_routing_rules"
)


def _rule(row: asyncpg.Record) -> CaseRoutingRule:
    fields: dict[str, Any] = {
        k: list(v) if isinstance(v, list) else v for k, v in dict(row).items()
    }
    return CaseRoutingRule(**fields)


async def list_rules(conn: asyncpg.Connection) -> list[CaseRoutingRule]:
    return [_rule(r) for r in await conn.fetch(_RULE + " ORDER BY position, id")]


async def _get_rule(conn: asyncpg.Connection, rule_id: int) -> CaseRoutingRule:
    row = await conn.fetchrow(_RULE + " WHERE id = $1", rule_id)
    if row is None:
        raise NotFound(f"no case routing rule {rule_id}")
    return _rule(row)


async def _check_rule(conn: asyncpg.Connection, spec: CaseRoutingRuleSpec) -> None:
    await check_group(conn, spec.group_code, "group_code")
    if spec.category_ids:
        known = {
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM case_categories WHERE id = ANY($1::bigint[])", spec.category_ids
            )
        }
        for i, category_id in enumerate(spec.category_ids):
            if category_id not in known:
                raise InvalidInput(f"category_ids[{i}]", f"no case category {category_id}")


def _rule_values(spec: CaseRoutingRuleSpec) -> tuple[object, ...]:
    return (
        spec.name,
        spec.group_code,
        spec.position,
        spec.is_active,
        list(spec.channels),
        list(spec.category_ids),
        list(spec.case_types),
        list(spec.priorities),
    )


async def create_rule(
    conn: asyncpg.Connection, actor: Actor, spec: CaseRoutingRuleSpec
) -> CaseRoutingRule:
    async with conn.transaction():
        await _check_rule(conn, spec)
        rule_id = await conn.fetchval(
            "INSERT INTO case_routing_rules (name, group_code, position, is_active, channels, "
            "category_ids, case_types, priorities) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "RETURNING id",
            *_rule_values(spec),
        )
        await audit.record(
            conn,
            actor,
            [
                Change(
                    "case_routing_rule",
                    str(rule_id),
                    "create",
                    None,
                    None,
                    msgspec.to_builtins(spec),
                )
            ],
        )
        return await _get_rule(conn, rule_id)


async def update_rule(
    conn: asyncpg.Connection, actor: Actor, rule_id: int, spec: CaseRoutingRuleSpec
) -> CaseRoutingRule:
    async with conn.transaction():
        before = msgspec.to_builtins(await _get_rule(conn, rule_id))
        await _check_rule(conn, spec)
        await conn.execute(
            "UPDATE case_routing_rules SET name = $2, group_code = $3, position = $4, "
            "is_active = $5, channels = $6, category_ids = $7, case_types = $8, priorities = $9, "
            "updated_at = herald_now() WHERE id = $1",
            rule_id,
            *_rule_values(spec),
        )
        await audit.record(
            conn,
            actor,
            audit.field_changes("case_routing_rule", rule_id, before, msgspec.to_builtins(spec)),
        )
        return await _get_rule(conn, rule_id)


async def delete_rule(conn: asyncpg.Connection, actor: Actor, rule_id: int) -> None:
    async with conn.transaction():
        before = await _get_rule(conn, rule_id)
        await conn.execute("DELETE FROM case_routing_rules WHERE id = $1", rule_id)
        await audit.record(
            conn,
            actor,
            [
                Change(
                    "case_routing_rule", str(rule_id), "delete", None, {"name": before.name}, None
                )
            ],
        )


async def get_settings(conn: asyncpg.Connection) -> CaseRoutingSettings:
    row = await conn.fetchrow(
        "SELECT default_group, updated_at, updated_by FROM case_routing_settings"
    )
    return CaseRoutingSettings(**dict(row)) if row else CaseRoutingSettings(None)


async def put_settings(
    conn: asyncpg.Connection, actor: Actor, spec: CaseRoutingSettingsSpec
) -> CaseRoutingSettings:
    async with conn.transaction():
        before = await get_settings(conn)
        if spec.default_group is not None:
            await check_group(conn, spec.default_group, "default_group")
        await conn.execute(
            "INSERT INTO case_routing_settings (id, default_group, updated_at, updated_by) "
            "VALUES (true, $1, herald_now(), $2) ON CONFLICT (id) DO UPDATE SET "
            "default_group = EXCLUDED.default_group, updated_at = herald_now(), "
            "updated_by = EXCLUDED.updated_by",
            spec.default_group,
            actor.login,
        )
        await audit.record(
            conn,
            actor,
            audit.field_changes(
                "case_routing_settings",
                "default",
                {"default_group": before.default_group},
                {"default_group": spec.default_group},
            ),
        )
        return await get_settings(conn)


async def category_chain(conn: asyncpg.Connection, category_id: int | None) -> list[int]:
    """The category and its ancestors (nearest first); empty for no category."""
    if category_id is None:
        return []
    rows = await conn.fetch(
        """
        WITH RECURSIVE up(id, parent_id, depth) AS (
            SELECT id, parent_id, 0 FROM case_categories WHERE id = $1
            UNION ALL
            SELECT c.id, c.parent_id, up.depth + 1 FROM case_categories c
            JOIN up ON c.id = up.parent_id WHERE up.depth < 100
        ) SELECT id FROM up ORDER BY depth
        """,
        category_id,
    )
    return [r["id"] for r in rows]


async def choose_group(
    conn: asyncpg.Connection,
    *,
    channel: str,
    category_id: int | None,
    case_type: str | None,
    priority: str,
) -> tuple[str | None, int | None]:
    """(group, rule id) for a case: the first matching active rule of an active group, else
    the default group (rule None); (None, None) when there is neither."""
    chain = await category_chain(conn, category_id)
    row = await conn.fetchrow(
        """
        SELECT r.id, r.group_code FROM case_routing_rules r
        JOIN case_groups g ON g.code = r.group_code AND g.is_active
        WHERE r.is_active
          AND (cardinality(r.channels) = 0 OR $1 = ANY(r.channels))
          AND (cardinality(r.category_ids) = 0 OR r.category_ids && $2::bigint[])
          AND (cardinality(r.case_types) = 0 OR $3 = ANY(r.case_types))
          AND (cardinality(r.priorities) = 0 OR $4 = ANY(r.priorities))
        ORDER BY r.position, r.id LIMIT 1
        """,
        channel,
        chain,
        case_type,
        priority,
    )
    if row is not None:
        return row["group_code"], row["id"]
    default = await conn.fetchval(
        "SELECT s.default_group FROM case_routing_settings s "
        "JOIN case_groups g ON g.code = s.default_group AND g.is_active"
    )
    return default, None
