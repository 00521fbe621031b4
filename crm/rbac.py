"""The role-permission matrix: data an admin edits, read on every request."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
import msgspec

from herald import audit
from herald.audit import Actor, Change
from herald.errors import Conflict, InvalidInput, NotFound


class Permission(msgspec.Struct, frozen=True):
    code: str
    description_uk: str
    description_en: str


class Role(msgspec.Struct, frozen=True):
    code: str
    name_uk: str
    name_en: str
    description: str
    permissions: list[str]


_ROLE_SELECT = """
    SELECT r.code, r.name_uk, r.name_en, r.description,
           coalesce(array_agg(rp.permission_code ORDER BY rp.permission_code)
                    FILTER (WHERE rp.permission_code IS NOT NULL), '{}') AS permissions
    FROM roles r LEFT JOIN role_permissions rp ON rp.role_code = r.code
"""


ADMINISTRATOR_PERMISSIONS = ("rbac.manage", "users.manage")
_KEEP_AN_ADMINISTRATOR = "herald_keep_an_administrator"  # the constraint of migration 0032


@contextlib.asynccontextmanager
async def keeping_an_administrator(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """A transaction that fails with Conflict if, at commit, no active user is left holding
    both ``rbac.manage`` and ``users.manage`` (the database checks it: migration 0032)."""
    try:
        async with conn.transaction():
            yield
    except asyncpg.CheckViolationError as exc:
        if exc.constraint_name != _KEEP_AN_ADMINISTRATOR:
            raise
        raise Conflict(
            "this change would leave no active user able to manage roles and "
            "users (rbac.manage and users.manage); grant both to another active "
            "user first"
        ) from None


async def list_permissions(conn: asyncpg.Connection) -> list[Permission]:
    rows = await conn.fetch(
        "SELECT code, description_uk, description_en FROM permissions ORDER BY code"
    )
    return [Permission(**dict(r)) for r in rows]


async def list_roles(conn: asyncpg.Connection) -> list[Role]:
    rows = await conn.fetch(_ROLE_SELECT + " GROUP BY r.code ORDER BY r.code")
    return [Role(**dict(r)) for r in rows]


async def get_role(conn: asyncpg.Connection, code: str) -> Role:
    row = await conn.fetchrow(_ROLE_SELECT + " WHERE r.code = $1 GROUP BY r.code", code)
    if row is None:
        raise NotFound(f"role {code!r} does not exist")
    return Role(**dict(row))


async def create_role(
    conn: asyncpg.Connection,
    actor: Actor,
    *,
    code: str,
    name_uk: str,
    name_en: str,
    description: str,
    permissions: list[str],
) -> Role:
    async with conn.transaction():
        try:
            await conn.execute(
                "INSERT INTO roles (code, name_uk, name_en, description) VALUES ($1, $2, $3, $4)",
                code,
                name_uk,
                name_en,
                description,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"role {code!r} exists") from None
        except asyncpg.CheckViolationError:
            raise InvalidInput(
                "code", "role code must be lower-case latin letters, digits and _ (2-63 characters)"
            ) from None
        await audit.record(
            conn,
            actor,
            [Change("role", code, "create", None, None, {"name_uk": name_uk, "name_en": name_en})],
        )
        return await set_role_permissions(conn, actor, code, permissions)


async def set_role_permissions(
    conn: asyncpg.Connection, actor: Actor, code: str, permissions: list[str]
) -> Role:
    """Replace a role's permission set; the journal keeps the old and the new set."""
    wanted = sorted(set(permissions))
    async with keeping_an_administrator(conn):
        # Lock the role so two admins editing it at once cannot interleave.
        await conn.execute("SELECT 1 FROM roles WHERE code = $1 FOR UPDATE", code)
        role = await get_role(conn, code)
        known = {r["code"] for r in await conn.fetch("SELECT code FROM permissions")}
        unknown = [p for p in wanted if p not in known]
        if unknown:
            raise InvalidInput("permissions", f"unknown permission(s): {', '.join(unknown)}")
        if wanted == role.permissions:
            return role
        await conn.execute("DELETE FROM role_permissions WHERE role_code = $1", code)
        await conn.executemany(
            "INSERT INTO role_permissions (role_code, permission_code) VALUES ($1, $2)",
            [(code, p) for p in wanted],
        )
        await audit.record(
            conn, actor, [Change("role", code, "update", "permissions", role.permissions, wanted)]
        )
        return await get_role(conn, code)
