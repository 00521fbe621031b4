"""The one clock: Python and PostgreSQL read the same time, and nothing reads another."""

from __future__ import annotations

import ast
import datetime as dt
import pathlib
import re

import asyncpg
import msgspec
import pytest

from herald import clock
from herald.settings import (
    CLOCK_PG_SETTING,
    SettingsError,
    load_settings,
    with_clock_offset,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
KYIV = dt.timezone(dt.timedelta(hours=2))

# What reads the wall clock in SQL, and in Python.
SQL_CLOCK = re.compile(
    r"(?<![.\w])(now\(\)|clock_timestamp\(\)|current_date\b|current_timestamp\b"
    r"|localtimestamp\b|statement_timestamp\(\)|transaction_timestamp\(\))",
    re.IGNORECASE,
)
PY_CLOCK = re.compile(r"\b(datetime\.now\(|datetime\.utcnow\(|date\.today\(|time\.time\(\))")

# Code that may read the wall clock itself, and why.
WALL_CLOCK_ALLOWED = {
    "herald/clock.py": "the one clock",
    "providers/http_batch.py": "a provider's Retry-After date is on the provider's clock",
    "herald/cli/drills.py": "failure drills measure real recovery time",
    "herald/cli/load.py": "the load run measures real rates",
}
WALL_CLOCK_ALLOWED_DIRS = {
    "providers/sim": "the simulators stand for the outside world, which has the real clock",
    "herald/cli/bench": "benchmarks measure real time",
    "loadtest": "load tests measure real time",
}


def _sources() -> list[pathlib.Path]:
    packages = ("herald", "crm", "dispatcher", "rules", "providers", "admin_api", "loadtest")
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _sql_strings(path: pathlib.Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_python_code_reads_only_the_one_clock() -> None:
    found = []
    for path in _sources():
        name = path.relative_to(ROOT).as_posix()
        if name in WALL_CLOCK_ALLOWED or any(
            name.startswith(d + "/") for d in WALL_CLOCK_ALLOWED_DIRS
        ):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if PY_CLOCK.search(line) and not line.lstrip().startswith("#"):
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "read the time through herald.clock:\n" + "\n".join(found)


def test_sql_in_python_reads_only_herald_now() -> None:
    found = []
    for path in _sources():
        if path.relative_to(ROOT).as_posix() == "herald/cli/migrate.py":
            continue  # its own table exists before herald_now() does
        for number, text in _sql_strings(path):
            for match in SQL_CLOCK.finditer(text):
                found.append(f"{path.relative_to(ROOT)}:{number}: {match.group(0)}")
    assert not found, "use herald_now() / herald_clock_timestamp() in SQL:\n" + "\n".join(found)


def test_migrations_after_the_clock_read_only_herald_now() -> None:
    found = []
    for path in sorted((ROOT / "migrations").glob("*.sql")):
        if int(path.name[:4]) <= 31:
            continue  # 0031 rewrote everything before it; the catalogue test checks the result
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("--", 1)[0]
            if SQL_CLOCK.search(code):
                found.append(f"{path.name}:{number}: {line.strip()}")
    assert not found, "use herald_now() / herald_clock_timestamp():\n" + "\n".join(found)


async def test_database_objects_read_only_herald_now(admin_conn: asyncpg.Connection) -> None:
    pattern = SQL_CLOCK.pattern.replace("(?<![.\\w])", "\\m").replace("\\b", "\\M")
    functions = await admin_conn.fetch(
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'public' AND p.proname NOT IN ('herald_now', 'herald_clock_timestamp') "
        "AND p.prosrc ~* $1",
        pattern,
    )
    defaults = await admin_conn.fetch(
        "SELECT ad.adrelid::regclass::text AS rel FROM pg_attrdef ad "
        "WHERE pg_get_expr(ad.adbin, ad.adrelid) ~* $1",
        pattern,
    )
    views = await admin_conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm') AND pg_get_viewdef(c.oid) ~* $1",
        pattern,
    )
    triggers = await admin_conn.fetch(
        "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND pg_get_triggerdef(oid) ~* $1",
        pattern,
    )
    checks = await admin_conn.fetch(
        "SELECT conname FROM pg_constraint WHERE pg_get_constraintdef(oid) ~* $1", pattern
    )
    assert [t["tgname"] for t in triggers] == []
    assert [c["conname"] for c in checks] == []
    assert [f["proname"] for f in functions] == []
    assert [d["rel"] for d in defaults] == []
    assert [v["relname"] for v in views] == []


async def test_database_clock_follows_the_setting(admin_conn: asyncpg.Connection) -> None:
    await admin_conn.execute(f"SET {CLOCK_PG_SETTING} = '30 days'")
    async with admin_conn.transaction():
        wall, shifted, ticking = await admin_conn.fetchrow(
            "SELECT now(), herald_now(), herald_clock_timestamp()"
        )
    assert shifted - wall == dt.timedelta(days=30)
    assert dt.timedelta(days=30) <= ticking - wall < dt.timedelta(days=30, seconds=5)
    # Column defaults read it too: the audit journal's time
    at = await admin_conn.fetchval(
        "INSERT INTO audit_log (actor_login, entity_type, entity_id, action) "
        "VALUES ('test', 'clock', '1', 'create') RETURNING at"
    )
    assert dt.timedelta(days=30) <= at - wall < dt.timedelta(days=30, seconds=5)
    await admin_conn.execute(f"SET {CLOCK_PG_SETTING} = ''")
    assert await admin_conn.fetchval("SELECT herald_now() = now()")


async def test_settings_move_python_and_every_connection_together(settings) -> None:
    moved = with_clock_offset(settings, -200)
    assert f"{CLOCK_PG_SETTING}=" in moved.database_url
    assert f"{CLOCK_PG_SETTING}=" in moved.database_admin_url
    conn = await asyncpg.connect(moved.database_url)
    try:
        gap = await conn.fetchval("SELECT now() - herald_now()")
    finally:
        await conn.close()
    assert gap == dt.timedelta(days=200)
    # Back to zero: the parameter is gone, not set to zero
    assert CLOCK_PG_SETTING not in with_clock_offset(moved, 0).database_url
    before = clock.offset()
    clock.configure(moved)
    try:
        assert abs((dt.datetime.now(dt.UTC) - clock.now()) - dt.timedelta(days=200)) < dt.timedelta(
            seconds=1
        )
        assert abs(dt.datetime.now(dt.UTC).timestamp() - clock.time() - 200 * 86_400) < 1
    finally:
        clock.configure(
            msgspec.structs.replace(moved, clock_offset_days=before.total_seconds() / 86_400)
        )


def test_offset_setting_is_checked() -> None:
    assert load_settings({"HERALD_CLOCK_OFFSET_DAYS": "400"}).clock_offset_days == 400
    with pytest.raises(SettingsError, match="HERALD_CLOCK_OFFSET_DAYS"):
        load_settings({"HERALD_CLOCK_OFFSET_DAYS": "soon"})
    with pytest.raises(SettingsError, match="HERALD_CLOCK_OFFSET_DAYS"):
        load_settings(
            {
                "HERALD_CLOCK_OFFSET_DAYS": "1",
                "HERALD_ENVIRONMENT": "production",
                "HERALD_UNSUBSCRIBE_SECRET": "x" * 32,
            }
        )


@pytest.mark.clock(dt.datetime(2031, 2, 3, 9, 0, tzinfo=KYIV))
async def test_a_pinned_test_lives_on_its_day(settings, app_conn) -> None:
    assert clock.today(KYIV) == dt.date(2031, 2, 3)
    db_now = await app_conn.fetchval("SELECT herald_now()")
    assert abs(db_now - dt.datetime(2031, 2, 3, 9, 0, tzinfo=KYIV)) < dt.timedelta(minutes=1)
