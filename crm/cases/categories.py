"""The case category tree (SR-04): administrators add, rename, move and deactivate."""

from __future__ import annotations

from typing import Annotated

import asyncpg
import msgspec

from crm.cases.types import CaseCategory
from herald import audit
from herald.audit import Actor, Change
from herald.bounds import Id, IdOrZero
from herald.errors import Conflict, InvalidInput, NotFound

Code = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_.-]{1,62}$")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class CaseCategorySpec(msgspec.Struct, forbid_unknown_fields=True):
    code: Code
    name_uk: Name
    name_en: Name
    parent_id: Id | None = None
    position: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0


class CaseCategoryPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The fields to change; ``parent_id`` 0 moves the category to the top level."""

    name_uk: Name | None = None
    name_en: Name | None = None
    parent_id: IdOrZero | None = None
    position: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    is_active: bool | None = None


_SELECT = (
    "SELECT id, parent_id, code, name_uk, name_en, position, is_active, created_at, "
    "updated_at FROM case_categories"
)


async def list_categories(
    conn: asyncpg.Connection, *, include_inactive: bool
) -> list[CaseCategory]:
    rows = await conn.fetch(
        _SELECT + " WHERE $1 OR is_active ORDER BY parent_id NULLS FIRST, position, id",
        include_inactive,
    )
    return [CaseCategory(**dict(r)) for r in rows]


async def get_category(conn: asyncpg.Connection, category_id: int) -> CaseCategory:
    row = await conn.fetchrow(_SELECT + " WHERE id = $1", category_id)
    if row is None:
        raise NotFound(f"no case category {category_id}")
    return CaseCategory(**dict(row))


async def _check_parent(conn: asyncpg.Connection, parent_id: int, moving: int | None) -> None:
    """The parent exists and is not the category itself or one of its descendants."""
    chain = await conn.fetch(
        """
        WITH RECURSIVE up(id, parent_id, depth) AS (
            SELECT id, parent_id, 0 FROM case_categories WHERE id = $1
            UNION ALL
            SELECT c.id, c.parent_id, up.depth + 1 FROM case_categories c
            JOIN up ON c.id = up.parent_id WHERE up.depth < 100
        ) SELECT id FROM up
        """,
        parent_id,
    )
    if not chain:
        raise InvalidInput("parent_id", f"no case category {parent_id}")
    if moving is not None and moving in {r["id"] for r in chain}:
        raise InvalidInput("parent_id", "a category cannot be moved under itself or its descendant")


async def create_category(
    conn: asyncpg.Connection, actor: Actor, spec: CaseCategorySpec
) -> CaseCategory:
    async with conn.transaction():
        if spec.parent_id is not None:
            await _check_parent(conn, spec.parent_id, None)
        if await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM case_categories WHERE code = $1)", spec.code
        ):
            raise Conflict(f"a case category with code {spec.code!r} already exists")
        category_id = await conn.fetchval(
            "INSERT INTO case_categories (parent_id, code, name_uk, name_en, position) "
            "VALUES ($1, $2, $3, $4, $5) RETURNING id",
            spec.parent_id,
            spec.code,
            spec.name_uk,
            spec.name_en,
            spec.position,
        )
        await audit.record(
            conn,
            actor,
            [
                Change(
                    "case_category",
                    str(category_id),
                    "create",
                    None,
                    None,
                    msgspec.to_builtins(spec),
                )
            ],
        )
        return await get_category(conn, category_id)


async def update_category(
    conn: asyncpg.Connection, actor: Actor, category_id: int, patch: CaseCategoryPatch
) -> CaseCategory:
    changes = msgspec.to_builtins(patch)
    if not changes:
        raise InvalidInput("body", "give at least one field to change")
    async with conn.transaction():
        before = await get_category(conn, category_id)
        if patch.parent_id:
            await _check_parent(conn, patch.parent_id, category_id)
        new = {**msgspec.to_builtins(before), **changes}
        if patch.parent_id == 0:
            new["parent_id"] = None
        await conn.execute(
            "UPDATE case_categories SET name_uk = $2, name_en = $3, parent_id = $4, "
            "position = $5, is_active = $6, updated_at = herald_now() WHERE id = $1",
            category_id,
            new["name_uk"],
            new["name_en"],
            new["parent_id"],
            new["position"],
            new["is_active"],
        )
        after = await get_category(conn, category_id)
        fields = ("name_uk", "name_en", "parent_id", "position", "is_active")
        old_values = msgspec.to_builtins(before)
        new_values = msgspec.to_builtins(after)
        await audit.record(
            conn,
            actor,
            audit.field_changes(
                "case_category", category_id, old_values, {f: new_values[f] for f in fields}
            ),
        )
        return after


async def delete_category(conn: asyncpg.Connection, actor: Actor, category_id: int) -> None:
    """Delete an unused category; one used by a case, a rule or a subcategory is refused
    (deactivate it instead, so history keeps its meaning)."""
    async with conn.transaction():
        before = await get_category(conn, category_id)
        used = await conn.fetchrow(
            """
            SELECT EXISTS (SELECT 1 FROM cases WHERE category_id = $1) AS by_case,
                   EXISTS (SELECT 1 FROM case_classification_rules WHERE category_id = $1) AS by_rule,
                   EXISTS (SELECT 1 FROM case_categories WHERE parent_id = $1) AS by_child
            """,
            category_id,
        )
        reasons = [
            what
            for key, what in (
                ("by_case", "cases"),
                ("by_rule", "classification rules"),
                ("by_child", "subcategories"),
            )
            if used[key]
        ]
        if reasons:
            raise Conflict(
                f"case category {before.code!r} is used by {', '.join(reasons)}; "
                "deactivate it instead (is_active: false)"
            )
        await conn.execute("DELETE FROM case_categories WHERE id = $1", category_id)
        await audit.record(
            conn,
            actor,
            [
                Change(
                    "case_category", str(category_id), "delete", None, {"code": before.code}, None
                )
            ],
        )
