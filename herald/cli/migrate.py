"""The migration runner: applies the versioned SQL files in ``migrations/`` in order.

Why a runner of our own rather than yoyo-migrations or alembic: both would bring a
second, synchronous PostgreSQL driver next to asyncpg, alembic wants Python revision
scripts rather than plain SQL, and neither refuses to touch a database migrated by a
newer Herald. This runner is ~150 lines: one table, one advisory lock, one transaction
per file, checksums so an applied file that was edited afterwards is caught.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
# A file whose first line is this marker runs outside a transaction (CREATE INDEX
# CONCURRENTLY, ALTER TYPE ... ADD VALUE); keep such files to a single statement.
_NO_TRANSACTION = "-- herald:no-transaction"
# Any constant fits; it only has to be the same for every Herald process.
_LOCK_KEY = 0x4845_5241_4C44  # "HERALD"

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text NOT NULL DEFAULT current_user
)
"""


class MigrationError(Exception):
    """The database and the migration files disagree; nothing was applied."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    transactional: bool

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Plan:
    """What ``migrate`` found: the database's version and the files still to apply."""

    current: int
    pending: tuple[Migration, ...]


def discover(package: str = "migrations") -> list[Migration]:
    """The migrations shipped in ``package``, in version order."""
    found: dict[int, Migration] = {}
    for entry in resources.files(package).iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if not match:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        version = int(match["version"])
        if version in found:
            raise MigrationError(f"two migrations share version {version:04d}")
        sql = entry.read_text(encoding="utf-8")
        found[version] = Migration(
            version, match["name"], sql, transactional=not sql.startswith(_NO_TRANSACTION)
        )
    return [found[v] for v in sorted(found)]


async def plan(conn: asyncpg.Connection, migrations: list[Migration]) -> Plan:
    """Compare the database with the files; raise MigrationError on any disagreement."""
    await conn.execute(_CREATE_TABLE)
    rows = await conn.fetch(
        "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
    )
    known = {m.version: m for m in migrations}
    newest_known = max(known, default=0)
    for row in rows:
        migration = known.get(row["version"])
        if migration is None:
            if row["version"] > newest_known:
                raise MigrationError(
                    f"the database is at version {row['version']:04d} ({row['name']}), newer than "
                    f"this Herald knows (up to {newest_known:04d}); upgrade Herald instead"
                )
            raise MigrationError(
                f"applied migration {row['version']:04d} ({row['name']}) "
                "is missing from migrations/"
            )
        if migration.checksum != row["checksum"]:
            raise MigrationError(
                f"migration {row['version']:04d}_{row['name']}.sql was changed "
                "after it was applied; add a new migration instead"
            )
    applied = {row["version"] for row in rows}
    current = max(applied, default=0)
    pending = tuple(m for m in migrations if m.version not in applied)
    if pending and pending[0].version < current:
        raise MigrationError(
            f"migration {pending[0].version:04d} is older than the database's "
            f"version {current:04d} but was never applied"
        )
    return Plan(current, pending)


async def migrate(conn: asyncpg.Connection, migrations: list[Migration]) -> list[Migration]:
    """Apply every pending migration, each in its own transaction; return those applied.

    Idempotent, and safe when several processes start at once: they queue on an
    advisory lock and the later ones find nothing left to do.
    """
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        todo = (await plan(conn, migrations)).pending
        for migration in todo:
            await _apply(conn, migration)
        return list(todo)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def _apply(conn: asyncpg.Connection, migration: Migration) -> None:
    record = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"
    args = (migration.version, migration.name, migration.checksum)
    try:
        if migration.transactional:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(record, *args)
        else:
            await conn.execute(migration.sql)
            await conn.execute(record, *args)
    except asyncpg.PostgresError as exc:
        raise MigrationError(
            f"migration {migration.version:04d}_{migration.name} failed: "
            f"{exc.__class__.__name__}: {exc}"
        ) from exc
