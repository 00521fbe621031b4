"""Indexes, constraints and triggers of the seeded tables: read, drop before a bulk load, restore.

Definitions are read from the catalogue (``pg_get_indexdef``, ``pg_get_constraintdef``)
rather than copied from the migrations, so an index someone adds in a later migration
is dropped and rebuilt like the rest. The seeder runs all of this inside the one
transaction that loads the data: if anything fails, or the process dies, PostgreSQL
rolls the drops back with the rows, and the schema can never be left without them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import asyncpg
import msgspec

# Tables a reset must never empty, whatever foreign keys may one day point from them.
PROTECTED_TABLES = frozenset(
    {
        "users",
        "roles",
        "user_roles",
        "permissions",
        "role_permissions",
        "sessions",
        "audit_log",
        "schema_migrations",
    }
)

Kind = Literal["constraint", "index", "foreign_key", "trigger"]
# Restore order: unique keys before the foreign keys that need them; triggers last.
_RESTORE_ORDER: dict[str, int] = {"constraint": 0, "index": 1, "foreign_key": 2, "trigger": 3}

_CONSTRAINTS = """
SELECT c.contype::text AS type, c.conrelid::regclass::text AS tbl, c.conname::text AS name,
       pg_get_constraintdef(c.oid) AS def
FROM pg_constraint c
-- Only a constraint's own definition: the copies a partitioned table gives its partitions
-- (conparentid <> 0) go and come back with it.
WHERE c.conparentid = 0
  AND ((c.contype IN ('p', 'u', 'x') AND c.conrelid = ANY($1::regclass[]))
       OR (c.contype = 'f' AND (c.conrelid = ANY($1::regclass[]) OR c.confrelid = ANY($1::regclass[]))))
ORDER BY 1, 2, 3
"""
# Indexes that do not back a primary key, unique or exclusion constraint.
_INDEXES = """
SELECT i.indrelid::regclass::text AS tbl, i.indexrelid::regclass::text AS name,
       pg_get_indexdef(i.indexrelid) AS def, am.amname::text AS method
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
WHERE i.indrelid = ANY($1::regclass[])
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                  WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))
ORDER BY 1, 2
"""
# Enabled user triggers: an audit trigger added later must not fire for 90 M seed rows.
_TRIGGERS = """
SELECT t.tgrelid::regclass::text AS tbl, t.tgname::text AS name, t.tgenabled::text AS enabled
FROM pg_trigger t
WHERE t.tgrelid = ANY($1::regclass[]) AND NOT t.tgisinternal AND t.tgenabled <> 'D'
ORDER BY 1, 2
"""
_REFERENCING = """
WITH RECURSIVE closure(rel) AS (
    SELECT unnest($1::regclass[])::oid
    UNION
    SELECT c.conrelid FROM pg_constraint c JOIN closure ON c.confrelid = closure.rel
    WHERE c.contype = 'f' AND c.conparentid = 0
)
SELECT rel::regclass::text AS tbl, (SELECT relname::text FROM pg_class WHERE oid = rel) AS name
FROM closure ORDER BY 1
"""
_ENABLE = {"O": "ENABLE TRIGGER", "R": "ENABLE REPLICA TRIGGER", "A": "ENABLE ALWAYS TRIGGER"}


class SeedError(Exception):
    """Seeding was refused or failed; the transaction was rolled back and nothing changed."""


class Definition(msgspec.Struct, frozen=True, order=True):
    """One schema object the bulk load removes and puts back, with the SQL for both."""

    kind: Kind
    table: str
    name: str
    create: str
    drop: str
    method: str = ""  # index access method (btree, gin, ...), for progress messages


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


async def capture(conn: asyncpg.Connection, tables: Sequence[str]) -> list[Definition]:
    """The indexes, key constraints, foreign keys and enabled triggers of ``tables``.

    Foreign keys of other tables that point at ``tables`` are included: they depend on
    the primary keys being dropped.
    """
    found: list[Definition] = []
    for row in await conn.fetch(_CONSTRAINTS, list(tables)):
        alter = f"ALTER TABLE {row['tbl']} "
        name = quote_ident(row["name"])
        kind: Kind = "foreign_key" if row["type"] == "f" else "constraint"
        found.append(
            Definition(
                kind,
                row["tbl"],
                row["name"],
                f"{alter}ADD CONSTRAINT {name} {row['def']}",
                f"{alter}DROP CONSTRAINT {name}",
                "btree" if kind == "constraint" else "",
            )
        )
    for row in await conn.fetch(_INDEXES, list(tables)):
        found.append(
            Definition(
                "index",
                row["tbl"],
                row["name"],
                row["def"],
                f"DROP INDEX {row['name']}",
                row["method"],
            )
        )
    for row in await conn.fetch(_TRIGGERS, list(tables)):
        alter = f"ALTER TABLE {row['tbl']} "
        name = quote_ident(row["name"])
        found.append(
            Definition(
                "trigger",
                row["tbl"],
                row["name"],
                f"{alter}{_ENABLE[row['enabled']]} {name}",
                f"{alter}DISABLE TRIGGER {name}",
            )
        )
    return found


async def drop(conn: asyncpg.Connection, definitions: Iterable[Definition]) -> None:
    """Drop (or disable) the definitions, dependants first."""
    for d in sorted(definitions, key=lambda d: -_RESTORE_ORDER[d.kind]):
        await conn.execute(d.drop)


async def restore(
    conn: asyncpg.Connection,
    definitions: Iterable[Definition],
    *,
    on_start: Callable[[Definition], None] | None = None,
    on_done: Callable[[Definition, float], None] | None = None,
) -> dict[str, float]:
    """Recreate the definitions, keys before foreign keys; return seconds spent on each.

    GIN indexes go first within their kind: they are the slow ones (minutes at 13 M
    rows, and PostgreSQL 15 builds them in one process).
    """
    spent: dict[str, float] = {}
    ordered = sorted(
        definitions, key=lambda d: (_RESTORE_ORDER[d.kind], d.method != "gin", d.table, d.name)
    )
    for d in ordered:
        if on_start is not None:
            on_start(d)
        started = time.perf_counter()
        await conn.execute(d.create)
        spent[d.name] = time.perf_counter() - started
        if on_done is not None:
            on_done(d, spent[d.name])
    return spent


async def verify(
    conn: asyncpg.Connection, tables: Sequence[str], expected: Iterable[Definition]
) -> None:
    """Raise SeedError unless the tables have exactly the expected definitions again."""
    now = set(await capture(conn, tables))
    before = set(expected)
    if now != before:
        missing = sorted(d.name for d in before - now)
        extra = sorted(d.name for d in now - before)
        raise SeedError(
            f"schema differs after restoring definitions: missing {missing}, unexpected {extra}"
        )


async def nonempty(conn: asyncpg.Connection, tables: Sequence[str]) -> list[str]:
    """The tables among ``tables`` that hold at least one row."""
    return [
        t for t in tables if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {quote_ident(t)})")
    ]


async def truncate_cascade(conn: asyncpg.Connection, tables: Sequence[str]) -> list[str]:
    """Empty ``tables`` and every table whose foreign keys lead to them; return those tables.

    Refuses (SeedError) if that would reach a protected table such as users or audit_log.
    """
    closure = await conn.fetch(_REFERENCING, list(tables))
    hit = sorted(r["name"] for r in closure if r["name"] in PROTECTED_TABLES)
    if hit:
        raise SeedError(
            f"resetting the CRM tables would truncate {', '.join(hit)} through foreign keys; "
            "refusing"
        )
    await conn.execute(f"TRUNCATE {', '.join(quote_ident(t) for t in tables)} CASCADE")
    return [r["tbl"] for r in closure]


async def lock(conn: asyncpg.Connection, tables: Sequence[str]) -> None:
    """Take the seeded tables for this transaction, so no one writes into them meanwhile."""
    await conn.execute(
        f"LOCK TABLE {', '.join(quote_ident(t) for t in tables)} IN ACCESS EXCLUSIVE MODE"
    )


async def reset_identities(conn: asyncpg.Connection, tables: Sequence[str]) -> None:
    """Move each identity sequence past the largest id loaded, so later inserts do not collide."""
    rows = await conn.fetch(
        """SELECT a.attrelid::regclass::text AS tbl, a.attname::text AS col,
                  pg_get_serial_sequence(a.attrelid::regclass::text, a.attname) AS seq
           FROM pg_attribute a
           WHERE a.attrelid = ANY($1::regclass[]) AND a.attidentity <> '' AND NOT a.attisdropped""",
        list(tables),
    )
    for row in rows:
        col = quote_ident(row["col"])
        await conn.execute(
            f"SELECT setval($1::regclass, coalesce(max({col}), 0) + 1, false) FROM {row['tbl']}",
            row["seq"],
        )
