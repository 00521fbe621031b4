"""Login throttling (crm/login_guard.py): per address, per account for unknown devices, per
known device; escalating locks that end sessions; an anonymous script cannot keep an
operator at their own workstation out."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from conftest import login_as

from herald.cli.demo import DEMO_USERS

OPERATOR = next(d for d in DEMO_USERS if d.role == "operator_cc")
ANALYST = next(d for d in DEMO_USERS if d.role == "analyst")


async def _attempt(client: Any, login: str, password: str, device: str | None = None) -> Any:
    """A login from a browser with no cookies but ``device`` (None: an unknown device)."""
    client.session.cookie_jar.clear()
    headers = {"Cookie": f"herald_device={device}"} if device else {}
    return await client.post(
        "/api/v1/auth/login", json={"login": login, "password": password}, headers=headers
    )


async def _operator_at_workstation(client: Any) -> tuple[dict[str, str], str]:
    """The operator logged in at their own browser: (session header, its device token)."""
    response = await _attempt(client, OPERATOR.login, OPERATOR.password)
    assert response.status == 200, await response.text()
    device = response.cookies["herald_device"]
    assert device["httponly"] and device["path"] == "/api/v1/auth/login"
    return {"Authorization": "Bearer " + (await response.json())["token"]}, device.value


async def _seconds_locked(conn: asyncpg.Connection, login: str) -> float:
    return await conn.fetchval(
        "SELECT extract(epoch FROM locked_until - herald_now()) FROM users WHERE login = $1", login
    )


async def _let_lock_run_out(conn: asyncpg.Connection, login: str) -> None:
    await conn.execute(
        "UPDATE users SET locked_until = herald_now() - interval '1 second' WHERE login = $1", login
    )
    await conn.execute("DELETE FROM login_address_failures")


async def test_a_script_locks_only_unknown_devices_and_each_lock_doubles(
    client, demo_users, settings, app_conn: asyncpg.Connection
) -> None:
    # Given the operator logged in at their workstation
    session, device = await _operator_at_workstation(client)

    # When a script without their device fails five times
    statuses = [
        (await _attempt(client, OPERATOR.login, f"guess-{n}")).status
        for n in range(settings.login_max_failures)
    ]

    # Then the account is locked for unknown devices, first briefly, and the sessions ended
    assert statuses == [401] * (settings.login_max_failures - 1) + [423]
    assert 55 <= await _seconds_locked(app_conn, OPERATOR.login) <= settings.login_lockout_seconds
    assert (await client.get("/api/v1/auth/me", headers=session)).status == 401
    assert (await _attempt(client, OPERATOR.login, OPERATOR.password)).status == 423
    # ... but the operator at their own browser logs straight back in
    response = await _attempt(client, OPERATOR.login, OPERATOR.password, device)
    assert response.status == 200, await response.text()
    assert response.cookies["herald_device"].value == device

    # And a script that keeps at it gets locks twice as long each time, up to the ceiling
    await app_conn.execute(
        "UPDATE users SET lockouts = 0, locked_until = NULL WHERE login = $1", OPERATOR.login
    )
    expected = [60, 120, 240, 480, 900, 900]
    for seconds in expected:
        await _let_lock_run_out(app_conn, OPERATOR.login)
        for n in range(settings.login_max_failures):
            await _attempt(client, OPERATOR.login, f"guess-{n}")
        assert seconds - 5 <= await _seconds_locked(app_conn, OPERATOR.login) <= seconds
    # and a successful login starts the doubling afresh
    await _let_lock_run_out(app_conn, OPERATOR.login)
    assert (await _attempt(client, OPERATOR.login, OPERATOR.password)).status == 200
    assert (
        await app_conn.fetchval("SELECT lockouts FROM users WHERE login = $1", OPERATOR.login) == 0
    )

    # The journal says who was locked and whose sessions ended
    admin = await login_as(client, "admin")
    user_id = await app_conn.fetchval("SELECT id FROM users WHERE login = $1", OPERATOR.login)
    history = await (
        await client.get(f"/api/v1/audit/user/{user_id}?limit=500", headers=admin)
    ).json()
    actions = {(e["action"], e["field"]) for e in history["items"]}
    assert {
        ("lock", "locked_until"),
        ("end_sessions", "sessions"),
        ("login_failed", "failed_logins"),
    } <= actions


async def test_a_known_device_is_locked_on_its_own(
    client, demo_users, settings, app_conn: asyncpg.Connection
) -> None:
    # Given the operator's browser, known to Herald
    _, device = await _operator_at_workstation(client)
    # When someone at it fails five times
    statuses = [
        (await _attempt(client, OPERATOR.login, "wrong", device)).status
        for _ in range(settings.login_max_failures)
    ]
    # Then that browser is locked for that user, and the account is not
    assert statuses[-1] == 423 and statuses[:-1] == [401] * (settings.login_max_failures - 1)
    locked = await _attempt(client, OPERATOR.login, OPERATOR.password, device)
    assert locked.status == 423 and "this device" in (await locked.json())["detail"]
    assert await _seconds_locked(app_conn, OPERATOR.login) is None
    assert (await _attempt(client, OPERATOR.login, OPERATOR.password)).status == 200
    # A device token of another user, or a forged one, is just an unknown device
    assert (await _attempt(client, ANALYST.login, ANALYST.password, device)).status == 200
    assert (await _attempt(client, OPERATOR.login, OPERATOR.password, "forged")).status == 200


async def test_an_address_that_keeps_failing_waits_longer_and_longer(
    client, demo_users, settings, app_conn: asyncpg.Connection
) -> None:
    # Given an address that used up its free failures over many logins (spraying)
    free = settings.login_address_free_failures
    for n in range(free):
        response = await _attempt(client, f"nobody{n}", "guess")
        assert response.status == 401
    # When it tries again at once, Then it must wait 1 s, without its password being checked
    response = await _attempt(client, OPERATOR.login, OPERATOR.password)
    assert response.status == 429 and response.headers["Retry-After"] == "1"
    assert (await response.json())["type"] == "/problems/too-many-attempts"
    # Each further failure doubles the wait, up to the ceiling
    for waited, wait in ((1, 2), (2, 4), (4, 8)):
        await app_conn.execute(
            "UPDATE login_address_failures SET last_attempt_at = "
            "herald_now() - make_interval(secs => $1 + 0.5)",
            waited,
        )
        assert (await _attempt(client, "nobody", "guess")).status == 401
        response = await _attempt(client, "nobody", "guess")
        assert response.status == 429 and response.headers["Retry-After"] == str(wait)
    await app_conn.execute("UPDATE login_address_failures SET failures = 1000")
    response = await _attempt(client, "nobody", "guess")
    assert response.headers["Retry-After"] == str(settings.login_address_max_delay_seconds)
    # A known device is not held by its address
    await app_conn.execute("DELETE FROM login_address_failures")
    _, device = await _operator_at_workstation(client)
    await app_conn.execute(
        "UPDATE login_address_failures SET failures = 1000, last_attempt_at = herald_now()"
    )
    assert (await _attempt(client, OPERATOR.login, OPERATOR.password, device)).status == 200
    # and the window forgets an address that stopped
    await app_conn.execute(
        "UPDATE login_address_failures SET last_attempt_at = herald_now() "
        "- make_interval(secs => $1)",
        settings.login_address_window_seconds,
    )
    assert (await _attempt(client, OPERATOR.login, OPERATOR.password)).status == 200


async def test_parallel_guesses_cannot_slip_past_the_count(client, demo_users, settings) -> None:
    # A burst of 40 wrong passwords at once: only the allowed ones are checked at all.
    responses = await asyncio.gather(
        *(
            client.post(
                "/api/v1/auth/login", json={"login": OPERATOR.login, "password": f"guess-{n}"}
            )
            for n in range(40)
        )
    )
    statuses = sorted(r.status for r in responses)
    assert statuses.count(401) == settings.login_max_failures - 1, statuses
    assert set(statuses) <= {401, 423, 429}


async def test_an_admin_password_reset_ends_sessions_and_lifts_the_lock(
    client, demo_users, settings, app_conn: asyncpg.Connection
) -> None:
    session, _ = await _operator_at_workstation(client)
    for n in range(settings.login_max_failures):
        await _attempt(client, OPERATOR.login, f"guess-{n}")
    admin = await login_as(client, "admin")
    user_id = await app_conn.fetchval("SELECT id FROM users WHERE login = $1", OPERATOR.login)
    response = await client.post(
        f"/api/v1/users/{user_id}/password",
        headers=admin,
        json={"new_password": "Нове-Гасло-Зміни-2027"},
    )
    assert response.status == 204, await response.text()
    assert await app_conn.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", user_id) == 0
    assert (await client.get("/api/v1/auth/me", headers=session)).status == 401
    assert (await _attempt(client, OPERATOR.login, "Нове-Гасло-Зміни-2027")).status == 200


@pytest.mark.parametrize("cookie", ["", "x" * 5000, "not\tascii-é"])
async def test_a_malformed_device_cookie_is_an_unknown_device(client, demo_users, cookie) -> None:
    client.session.cookie_jar.clear()
    response = await client.post(
        "/api/v1/auth/login",
        headers={"Cookie": f"herald_device={cookie}"},
        json={"login": OPERATOR.login, "password": OPERATOR.password},
    )
    assert response.status in (200, 400), await response.text()
