"""Clients as records the API names: does one exist, and whose is an account's OR number.

Clients come from the billing import (the seeder, ``herald seed``); the CRM reads them and
never writes them, so this module has reads only.
"""

from __future__ import annotations

import asyncpg

from herald.errors import InvalidInput, NotFound


async def exists(conn: asyncpg.Connection, client_id: int) -> bool:
    """Whether the client ``client_id`` exists."""
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)", client_id)
    )


async def require(conn: asyncpg.Connection, client_id: int) -> None:
    """NotFound unless the client ``client_id`` exists."""
    if not await exists(conn, client_id):
        raise NotFound(f"no client {client_id}")


async def resolve(conn: asyncpg.Connection, client_id: int | None, or_number: str | None) -> int:
    """The client named by exactly one of its id and the OR number of one of its accounts."""
    if client_id is None and or_number is not None:
        found = await conn.fetchval(
            "SELECT client_id FROM accounts WHERE or_number = $1", or_number
        )
        if found is None:
            raise NotFound(f"no account with OR number {or_number}")
        return int(found)
    if client_id is None or or_number is not None:
        raise InvalidInput("client_id", "give exactly one of client_id and or_number")
    await require(conn, client_id)
    return client_id
