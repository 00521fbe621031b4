"""A user's preferences of the web UI: for now the language, stored per user and journalled."""

from __future__ import annotations

from typing import Literal, get_args

import asyncpg

from herald.audit import Actor, Change, record
from herald.errors import InvalidInput, NotFound

Language = Literal["uk", "en"]
LANGUAGES: tuple[str, ...] = get_args(Language)
DEFAULT_LANGUAGE: Language = "uk"


async def language_of(conn: asyncpg.Connection, user_id: int) -> str:
    """The user's UI language (Ukrainian for a user who never chose)."""
    found = await conn.fetchval("SELECT ui_language FROM users WHERE id = $1", user_id)
    return found or DEFAULT_LANGUAGE


async def set_language(conn: asyncpg.Connection, actor: Actor, user_id: int, language: str) -> str:
    """Store the user's UI language; the change is journalled like any other field."""
    if language not in LANGUAGES:
        raise InvalidInput("language", f"one of {', '.join(LANGUAGES)}, got {language!r}")
    async with conn.transaction():
        old = await conn.fetchval("SELECT ui_language FROM users WHERE id = $1 FOR UPDATE", user_id)
        if old is None:
            raise NotFound(f"user {user_id} not found")
        if old != language:
            await conn.execute("UPDATE users SET ui_language = $2 WHERE id = $1", user_id, language)
            await record(
                conn, actor, [Change("user", str(user_id), "update", "ui_language", old, language)]
            )
    return language
