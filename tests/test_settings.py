"""Settings: defaults that work, and wrong values that stop start-up naming the variable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
import pytest

from herald import clock
from herald.settings import BUSINESS_TZ_PG_SETTING, SettingsError, load_settings, with_clock_offset


def test_defaults_point_at_local_services() -> None:
    s = load_settings({})
    assert s.database_url.endswith("@localhost:5432/herald")
    assert s.amqp_url == "amqp://guest:guest@localhost:5672/"
    assert s.redis_url == "redis://localhost:6379/0"


def test_values_are_converted_from_strings() -> None:
    s = load_settings(
        {"HERALD_SHARDS": "16", "HERALD_READINESS_TIMEOUT": "0.5", "HERALD_LOG_LEVEL": "DEBUG"}
    )
    assert (s.shards, s.readiness_timeout, s.log_level) == (16, 0.5, "DEBUG")


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("HERALD_SHARDS", "-1", ">= 1"),
        ("HERALD_SHARDS", "many", "Expected `int`"),
        ("HERALD_HTTP_PORT", "70000", "<= 65535"),
        ("HERALD_DATABASE_URL", "mysql://localhost/herald", "URL scheme must be one of postgresql"),
        ("HERALD_AMQP_URL", "amqp://guest:secret@localhost:notaport/", "not a valid URL"),
        ("HERALD_REDIS_URL", "redis:///0", "no host"),
        ("HERALD_LOG_LEVEL", "LOUD", "Invalid enum value"),
        ("HERALD_NAMESPACE", "Has Spaces", "matching regex"),
        ("HERALD_SHRADS", "4", "unknown setting"),
    ],
)
def test_wrong_value_names_the_variable(variable: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(variable + ":")
    assert says in str(caught.value)


def test_password_never_shown_in_errors() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"HERALD_DATABASE_URL": "mysql://u:topsecret@localhost/x"})
    assert "topsecret" not in str(caught.value)


def test_pool_min_above_max_is_refused() -> None:
    with pytest.raises(SettingsError, match="HERALD_DB_POOL_MIN"):
        load_settings({"HERALD_DB_POOL_MIN": "20", "HERALD_DB_POOL_MAX": "5"})


def test_cli_stops_with_a_message_naming_the_variable() -> None:
    env = {**os.environ, "HERALD_HTTP_PORT": "-5"}
    done = subprocess.run(
        [sys.executable, "-m", "herald", "migrate", "--status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "HERALD_HTTP_PORT" in done.stderr and "Traceback" not in done.stderr


def test_production_refuses_cheap_password_hashes() -> None:
    production = {"HERALD_ENVIRONMENT": "production", "HERALD_UNSUBSCRIBE_SECRET": "x" * 32}
    assert load_settings(production).password_hash_memory_kib == 65_536
    for variable, value in (
        ("HERALD_PASSWORD_HASH_MEMORY_KIB", "1024"),
        ("HERALD_PASSWORD_HASH_TIME_COST", "1"),
    ):
        with pytest.raises(SettingsError, match="HERALD_PASSWORD_HASH_MEMORY_KIB"):
            load_settings({**production, variable: value})
    assert load_settings({"HERALD_PASSWORD_HASH_MEMORY_KIB": "64"}).password_hash_memory_kib == 64


async def test_new_password_hashes_take_the_configured_costs(base_settings) -> None:
    from crm import users

    users.configure_hashing(time_cost=2, memory_kib=128)
    try:
        assert (await users.hash_password("довгий-пароль-1")).startswith(
            "$argon2id$v=19$m=128,t=2,"
        )
    finally:
        users.configure_hashing(
            time_cost=base_settings.password_hash_time_cost,
            memory_kib=base_settings.password_hash_memory_kib,
        )


def test_business_time_zone_must_be_an_iana_zone() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({"HERALD_BUSINESS_TZ": "Mars/Olympus"})
    assert err.value.variable == "HERALD_BUSINESS_TZ"
    assert load_settings({}).business_tz == "Europe/Kyiv"


async def test_business_time_zone_reaches_python_and_every_connection(settings) -> None:
    # Given a business in New York, when its settings are loaded, then Python's clock and
    # every database connection name the same zone; the default zone adds no parameter.
    assert BUSINESS_TZ_PG_SETTING not in settings.database_url
    moved = with_clock_offset(
        msgspec.structs.replace(settings, business_tz="America/New_York"),
        settings.clock_offset_days,
    )
    assert f"{BUSINESS_TZ_PG_SETTING}=" in moved.database_url
    assert f"{BUSINESS_TZ_PG_SETTING}=" in moved.database_admin_url
    for url, expected in (
        (moved.database_url, "America/New_York"),
        (settings.database_url, "Europe/Kyiv"),
    ):
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT herald_business_tz()") == expected
        finally:
            await conn.close()
    clock.configure(moved)
    try:
        assert clock.business_tz() == ZoneInfo("America/New_York")
    finally:
        clock.configure(settings)
    assert clock.business_tz() == ZoneInfo("Europe/Kyiv")


def test_no_module_names_the_business_time_zone_itself() -> None:
    # The zone is read from the setting (herald.clock.business_tz(), herald_business_tz()),
    # never written as a literal in code.
    root = Path(__file__).resolve().parent.parent
    literal = re.compile(r"""["']Europe/Kyiv["']""")
    found = [
        str(p.relative_to(root))
        for package in ("admin_api", "crm", "dispatcher", "herald", "providers", "rules")
        for p in (root / package).rglob("*.py")
        if literal.search(p.read_text())
        and p.relative_to(root).as_posix() not in ("herald/settings.py",)
        and not p.relative_to(root).as_posix().startswith(("herald/cli/seed/", "herald/cli/bench/"))
    ]
    assert not found, found


def test_the_admin_url_must_name_the_app_urls_database() -> None:
    # Given only the app URL moved to another database, when settings load, then the admin
    # URL (which migrates and seeds) is refused by name instead of filling another database
    with pytest.raises(SettingsError) as caught:
        load_settings({"HERALD_DATABASE_URL": "postgresql://herald_app:x@localhost:5432/other"})
    assert caught.value.variable == "HERALD_DATABASE_ADMIN_URL"
    assert "/other" in str(caught.value)
    # Both moved together is fine, and so are different users of the same database
    moved = load_settings(
        {
            "HERALD_DATABASE_URL": "postgresql://herald_app:x@localhost:5432/other",
            "HERALD_DATABASE_ADMIN_URL": "postgresql://herald:y@localhost/other",
        }
    )
    assert moved.database_url.startswith("postgresql://herald_app:x@localhost:5432/other")
