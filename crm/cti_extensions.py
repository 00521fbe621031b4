"""Which Herald user sits at which VICIdial phone: extension (or phone login) -> user.

VICIdial's call events name the agent by ``user`` when the agent is logged in to the
agent screen, but a queue or a trunk event may carry only the phone (``extension`` or
``phone_login``). The mapping lets the ringing push reach that phone's operator.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import asyncpg
import msgspec

from herald import audit
from herald.audit import Actor, Change
from herald.errors import InvalidInput, NotFound

Extension = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/@-]{0,63}$")]


class ExtensionSpec(msgspec.Struct, forbid_unknown_fields=True):
    """The Herald login of the operator at an extension (VICIdial's ``extension`` or
    ``phone_login``, e.g. ``SIP/101``)."""

    extension: Extension
    login: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class ExtensionMapping(msgspec.Struct):
    extension: str
    user_id: int
    login: str
    full_name: str
    updated_at: dt.datetime
    updated_by: str


_SELECT = """
SELECT e.extension, e.user_id, u.login, u.full_name, e.updated_at, e.updated_by
FROM cti_extensions e JOIN users u ON u.id = e.user_id
"""


async def list_mappings(conn: asyncpg.Connection) -> list[ExtensionMapping]:
    rows = await conn.fetch(_SELECT + " ORDER BY e.extension")
    return [ExtensionMapping(**dict(r)) for r in rows]


async def login_at(conn: asyncpg.Connection, extension: str | None) -> str | None:
    """The login of the active user mapped to ``extension``, if any."""
    if not extension:
        return None
    return await conn.fetchval(
        "SELECT u.login FROM cti_extensions e JOIN users u ON u.id = e.user_id "
        "WHERE e.extension = $1 AND u.is_active",
        extension,
    )


async def set_mapping(
    conn: asyncpg.Connection, actor: Actor, spec: ExtensionSpec
) -> ExtensionMapping:
    extension = spec.extension
    async with conn.transaction():
        user_id = await conn.fetchval(
            "SELECT id FROM users WHERE lower(login) = lower($1) AND is_active", spec.login
        )
        if user_id is None:
            raise InvalidInput("login", f"no active user {spec.login!r}")
        before = await conn.fetchval(
            "SELECT user_id FROM cti_extensions WHERE extension = $1 FOR UPDATE", extension
        )
        await conn.execute(
            "INSERT INTO cti_extensions (extension, user_id, updated_by) VALUES ($1, $2, $3) "
            "ON CONFLICT (extension) DO UPDATE SET user_id = excluded.user_id, "
            "updated_at = herald_now(), updated_by = excluded.updated_by",
            extension,
            user_id,
            actor.login,
        )
        if before != user_id:
            await audit.record(
                conn,
                actor,
                [
                    Change(
                        "cti_extension",
                        extension,
                        "create" if before is None else "update",
                        "user_id",
                        before,
                        user_id,
                    )
                ],
            )
        row = await conn.fetchrow(_SELECT + " WHERE e.extension = $1", extension)
        return ExtensionMapping(**dict(row))


async def delete_mapping(conn: asyncpg.Connection, actor: Actor, extension: str) -> None:
    async with conn.transaction():
        before = await conn.fetchval(
            "DELETE FROM cti_extensions WHERE extension = $1 RETURNING user_id", extension
        )
        if before is None:
            raise NotFound(f"extension {extension!r} is not mapped")
        await audit.record(
            conn, actor, [Change("cti_extension", extension, "delete", "user_id", before, None)]
        )
