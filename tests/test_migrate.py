"""The migration runner against a real PostgreSQL database."""

from __future__ import annotations

import asyncpg
import pytest

from herald.cli.migrate import Migration, MigrationError, discover, migrate, plan


async def test_migrate_is_idempotent(admin_conn: asyncpg.Connection) -> None:
    # Given a database already migrated by the fixture
    # When migrate runs again
    applied = await migrate(admin_conn, discover())
    # Then nothing is applied and the version is the newest file's
    assert applied == []
    current = await admin_conn.fetchval("SELECT max(version) FROM schema_migrations")
    assert current == discover()[-1].version


async def test_refuses_database_with_unknown_newer_version(admin_conn: asyncpg.Connection) -> None:
    await admin_conn.execute(
        "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'from_the_future', 'x')"
    )
    with pytest.raises(MigrationError, match="newer than this Herald"):
        await migrate(admin_conn, discover())


async def test_refuses_edited_migration(admin_conn: asyncpg.Connection) -> None:
    files = discover()
    edited = Migration(files[0].version, files[0].name, files[0].sql + "\n-- edited", True)
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await plan(admin_conn, [edited, *files[1:]])


async def test_applies_pending_in_order_and_rolls_back_a_failing_one(
    admin_conn: asyncpg.Connection,
) -> None:
    files = discover()
    top = files[-1].version
    good = Migration(top + 1, "add_probe", "CREATE TABLE probe_ok (id int)", True)
    bad = Migration(top + 2, "broken", "CREATE TABLE probe_bad (id int); SELECT no_such_fn()", True)
    with pytest.raises(MigrationError, match="broken failed"):
        await migrate(admin_conn, [*files, good, bad])
    versions = [r[0] for r in await admin_conn.fetch("SELECT version FROM schema_migrations")]
    assert top + 1 in versions and top + 2 not in versions
    assert await admin_conn.fetchval("SELECT to_regclass('probe_bad')") is None


def test_discover_rejects_badly_named_file(tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "badmigrations"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "1_oops.sql").write_text("SELECT 1")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MigrationError, match=r"not named NNNN_name\.sql"):
        discover("badmigrations")


async def test_search_norm_folds_case_and_apostrophes(app_conn: asyncpg.Connection) -> None:
    rows = await app_conn.fetch(
        "SELECT herald_search_norm(x) FROM unnest($1::text[]) x",
        ["Мар'яна  ЇЖАК", "МАРʼЯНА їжак", " мар’яна\tїжак "],
    )
    assert {r[0] for r in rows} == {"маряна їжак"}
