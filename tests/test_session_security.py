"""Sessions at login: a session id planted before login is never adopted (no fixation), every
login makes a new one, and in production every cookie Herald sets is Secure, HttpOnly and
SameSite=Strict. (Brute force lock-out: tests/test_auth.py, tests/test_login_guard.py and,
for the login form, tests/test_ui_pages.py.)"""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

import msgspec
import pytest

from admin_api.app import init_app
from admin_api.security import SESSION_COOKIE
from herald.cli.demo import DEMO_USERS
from herald.settings import Settings

OPERATOR = next(d for d in DEMO_USERS if d.role == "operator_cc")
ANALYST = next(d for d in DEMO_USERS if d.role == "analyst")
PLANTED = "planted-by-an-attacker-0123456789abcdef"


def _origin(client: Any) -> str:
    return f"http://{client.server.host}:{client.server.port}"


async def _login_api(client: Any, user: Any, cookie: str | None = None) -> Any:
    headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"} if cookie else {}
    return await client.post(
        "/api/v1/auth/login", json={"login": user.login, "password": user.password}, headers=headers
    )


async def _login_form(client: Any, user: Any, cookie: str | None = None) -> Any:
    headers = {"Origin": _origin(client)}
    if cookie:
        headers["Cookie"] = f"{SESSION_COOKIE}={cookie}"
    return await client.post(
        "/ui/login",
        data={"login": user.login, "password": user.password},
        headers=headers,
        allow_redirects=False,
    )


def _set_cookies(response: Any) -> dict[str, Any]:
    """Every Set-Cookie header of ``response``: name -> morsel."""
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.getall("Set-Cookie", []):
        jar.load(header)
    return dict(jar)


async def _me(client: Any, token: str) -> int:
    client.session.cookie_jar.clear()
    response = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    return response.status


@pytest.mark.parametrize("login", [_login_api, _login_form])
async def test_a_planted_session_id_is_not_adopted_at_login(client, demo_users, login) -> None:
    # Given a browser carrying a session id an attacker chose
    response = await login(client, OPERATOR, PLANTED)
    assert response.status in (200, 303), await response.text()
    # When the operator logs in, Then Herald issues a new id and the planted one stays worthless
    issued = _set_cookies(response)[SESSION_COOKIE].value
    assert issued != PLANTED and len(issued) >= 32
    assert await _me(client, PLANTED) == 401
    assert await _me(client, issued) == 200


@pytest.mark.parametrize("login", [_login_api, _login_form])
async def test_every_login_makes_a_new_session(client, demo_users, login) -> None:
    # Given a browser with a valid session of one user (a shared workstation)
    first = _set_cookies(await login(client, ANALYST))[SESSION_COOKIE].value
    # When another user logs in on it, Then they get a session of their own
    client.session.cookie_jar.clear()
    second = _set_cookies(await login(client, OPERATOR, first))[SESSION_COOKIE].value
    assert second != first
    client.session.cookie_jar.clear()
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {second}"})
    assert (await me.json())["login"] == OPERATOR.login
    # and logging in again as the same user makes yet another
    client.session.cookie_jar.clear()
    third = _set_cookies(await login(client, OPERATOR, second))[SESSION_COOKIE].value
    assert third not in (first, second)


@pytest.fixture
async def production_client(settings: Settings, demo_users, aiohttp_client) -> Any:
    production = msgspec.structs.replace(
        settings, environment="production", unsubscribe_secret="s" * 40
    )
    return await aiohttp_client(init_app(production))


async def _cookie_flags(client: Any) -> dict[str, tuple[bool, bool, str]]:
    """Every cookie the logins and the language switch set: name -> (Secure, HttpOnly, SameSite)."""
    found: dict[str, tuple[bool, bool, str]] = {}
    responses = [
        await _login_api(client, OPERATOR),
        await _login_form(client, OPERATOR),
        await client.get("/ui/login?lang=en", allow_redirects=False),
    ]
    for response in responses:
        assert response.status in (200, 303), await response.text()
        for name, morsel in _set_cookies(response).items():
            found[name] = (bool(morsel["secure"]), bool(morsel["httponly"]), morsel["samesite"])
    return found


async def test_cookies_are_secure_in_production(production_client) -> None:
    flags = await _cookie_flags(production_client)
    assert {SESSION_COOKIE, "herald_device", "herald_lang"} <= flags.keys(), flags
    assert all(flag == (True, True, "Strict") for flag in flags.values()), flags


async def test_cookies_work_over_plain_http_outside_production(client, demo_users) -> None:
    flags = await _cookie_flags(client)
    assert flags and all(flag == (False, True, "Strict") for flag in flags.values()), flags
