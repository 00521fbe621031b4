"""PostgreSQL connections: pools for the application, single connections for the owner."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from herald.settings import Settings


async def init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as Python values (audit old/new values, settings documents).
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(settings: Settings, *, dsn: str | None = None) -> asyncpg.Pool:
    """The application's pool, connected as the application role."""
    return await asyncpg.create_pool(
        dsn or settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        init=init_connection,
        server_settings={
            "application_name": "herald",
            "statement_timeout": str(settings.db_statement_timeout_ms),
            "idle_in_transaction_session_timeout": str(settings.db_idle_in_transaction_timeout_ms),
            # The server notices a vanished client (a lost host) within about a minute.
            "tcp_keepalives_idle": "30",
            "tcp_keepalives_interval": "10",
            "tcp_keepalives_count": "3",
            "timezone": "UTC",
        },
    )


@asynccontextmanager
async def admin_connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """One connection as the owner role, for migrations and bulk loads."""
    conn = await asyncpg.connect(
        settings.database_admin_url, server_settings={"application_name": "herald-admin"}
    )
    try:
        await init_connection(conn)
        yield conn
    finally:
        await conn.close()


async def schema_version(conn: asyncpg.Connection) -> int | None:
    """The newest migration applied (None before the first): the readiness probe's round trip."""
    version: int | None = await conn.fetchval("SELECT max(version) FROM schema_migrations")
    return version


async def now(conn: asyncpg.Connection) -> dt.datetime:
    """The database's clock, ``herald_now()``: the time rows written now will carry."""
    at: dt.datetime = await conn.fetchval("SELECT herald_now()")
    return at
