"""Login, sessions, password policy, lock-out, 401/403 and bad input to login."""

from __future__ import annotations

import asyncpg
import pytest
from conftest import login_as

from herald.cli.demo import DEMO_USERS

ADMIN = next(d for d in DEMO_USERS if d.role == "admin")
OPERATOR = next(d for d in DEMO_USERS if d.role == "operator_cc")


async def test_login_me_logout(client, demo_users) -> None:
    response = await client.post(
        "/api/v1/auth/login", json={"login": ADMIN.login.upper(), "password": ADMIN.password}
    )
    body = await response.json()
    assert response.status == 200, body
    assert body["token_type"] == "Bearer" and body["user"]["login"] == ADMIN.login
    assert "rbac.manage" in body["user"]["permissions"]
    headers = {"Authorization": f"Bearer {body['token']}"}
    me = await client.get("/api/v1/auth/me", headers=headers)
    assert (await me.json())["roles"] == ["admin"]
    assert (await client.post("/api/v1/auth/logout", headers=headers)).status == 204
    after = await client.get("/api/v1/auth/me", headers=headers)
    assert after.status == 401
    assert (await after.json())["type"] == "/problems/session-invalid"


async def test_session_cookie_works_too(client, demo_users) -> None:
    response = await client.post(
        "/api/v1/auth/login", json={"login": ADMIN.login, "password": ADMIN.password}
    )
    assert "herald_session" in response.cookies
    assert response.cookies["herald_session"]["httponly"]
    # the test client keeps cookies: no Authorization header needed
    assert (await client.get("/api/v1/auth/me")).status == 200


async def test_wrong_password_and_unknown_login_look_the_same(client, demo_users) -> None:
    wrong = await client.post("/api/v1/auth/login", json={"login": ADMIN.login, "password": "nope"})
    unknown = await client.post("/api/v1/auth/login", json={"login": "ghost", "password": "nope"})
    assert wrong.status == unknown.status == 401
    assert (await wrong.json())["detail"] == (await unknown.json())["detail"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"password": "x"}, "login"),
        ({"login": "admin"}, "password"),
        ({"login": 42, "password": "x"}, "login"),
        ({"login": "", "password": "x"}, "login"),
        ({"login": "admin", "password": "x", "remember": True}, "remember"),
        ({"login": "a" * 65, "password": "x"}, "login"),
    ],
)
async def test_bad_login_input_is_a_400_naming_the_field(client, payload, field) -> None:
    response = await client.post("/api/v1/auth/login", json=payload)
    body = await response.json()
    assert response.status == 400, body
    assert response.content_type == "application/problem+json"
    assert body["errors"][0]["field"] == field


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b"null"])
async def test_malformed_login_body_is_a_400(client, raw) -> None:
    response = await client.post(
        "/api/v1/auth/login", data=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert (await response.json())["errors"][0]["field"] == "body"


async def test_lockout_after_repeated_failures(client, demo_users, settings) -> None:
    for _ in range(settings.login_max_failures - 1):
        response = await client.post(
            "/api/v1/auth/login", json={"login": OPERATOR.login, "password": "wrong"}
        )
        assert response.status == 401
    response = await client.post(
        "/api/v1/auth/login", json={"login": OPERATOR.login, "password": "wrong"}
    )
    assert response.status == 423
    assert (await response.json())["locked_until"]
    # even the right password is refused while locked
    response = await client.post(
        "/api/v1/auth/login", json={"login": OPERATOR.login, "password": OPERATOR.password}
    )
    assert response.status == 423
    # an admin unlocks
    admin = await login_as(client, "admin")
    user_id = (
        await (
            await client.post(
                "/api/v1/auth/login", json={"login": ADMIN.login, "password": ADMIN.password}
            )
        ).json()
    )["user"]["id"]
    users = await (await client.get("/api/v1/users", headers=admin)).json()
    operator_id = next(u["id"] for u in users["items"] if u["login"] == OPERATOR.login)
    assert operator_id != user_id
    response = await client.patch(
        f"/api/v1/users/{operator_id}", json={"unlock": True}, headers=admin
    )
    assert response.status == 200, await response.text()
    assert (await login_as(client, "operator_cc"))["Authorization"]


async def test_401_without_credentials_and_403_without_permission(client, demo_users) -> None:
    response = await client.get("/api/v1/users")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    operator = await login_as(client, "operator_cc")
    response = await client.get("/api/v1/users", headers=operator)
    assert response.status == 403
    assert "users.read" in (await response.json())["detail"]
    garbage = await client.get("/api/v1/users", headers={"Authorization": "Bearer forged"})
    assert garbage.status == 401


async def test_password_policy_on_create_and_change(client, demo_users) -> None:
    admin = await login_as(client, "admin")
    response = await client.post(
        "/api/v1/users",
        headers=admin,
        json={
            "login": "new.operator",
            "full_name": "Нова Операторка",
            "password": "short",
            "roles": ["operator_cc"],
        },
    )
    body = await response.json()
    assert response.status == 400
    assert body["errors"][0]["field"] == "password"
    assert "at least 12 characters" in body["detail"] and "a digit" in body["detail"]
    response = await client.post(
        "/api/v1/users",
        headers=admin,
        json={
            "login": "new.operator",
            "full_name": "Нова Операторка",
            "password": "Дуже-Надійний-2026",
            "roles": ["operator_cc"],
        },
    )
    assert response.status == 201, await response.text()
    response = await client.post(
        "/api/v1/auth/login", json={"login": "new.operator", "password": "Дуже-Надійний-2026"}
    )
    token = {"Authorization": "Bearer " + (await response.json())["token"]}
    response = await client.post(
        "/api/v1/auth/password",
        headers=token,
        json={"current_password": "wrong", "new_password": "Інший-Пароль-2027"},
    )
    assert (await response.json())["errors"][0]["field"] == "current_password"
    response = await client.post(
        "/api/v1/auth/password",
        headers=token,
        json={"current_password": "Дуже-Надійний-2026", "new_password": "alllowercase"},
    )
    assert (await response.json())["errors"][0]["field"] == "new_password"
    response = await client.post(
        "/api/v1/auth/password",
        headers=token,
        json={"current_password": "Дуже-Надійний-2026", "new_password": "Інший-Пароль-2027"},
    )
    assert response.status == 204
    assert (await client.get("/api/v1/auth/me", headers=token)).status == 200


async def test_create_user_rejects_duplicates_and_unknown_roles(client, demo_users) -> None:
    admin = await login_as(client, "admin")
    user = {
        "login": "ADMIN",
        "full_name": "Двійник",
        "password": "Дуже-Надійний-2026",
        "roles": ["admin"],
    }
    assert (await client.post("/api/v1/users", headers=admin, json=user)).status == 409
    user |= {"login": "someone", "roles": ["wizard"]}
    response = await client.post("/api/v1/users", headers=admin, json=user)
    assert response.status == 400
    assert (await response.json())["errors"][0]["field"] == "roles"


async def test_deactivated_user_loses_sessions(
    client, demo_users, app_conn: asyncpg.Connection
) -> None:
    operator = await login_as(client, "operator_cc")
    admin = await login_as(client, "admin")
    user_id = await app_conn.fetchval("SELECT id FROM users WHERE login = $1", OPERATOR.login)
    response = await client.patch(
        f"/api/v1/users/{user_id}", json={"is_active": False}, headers=admin
    )
    assert (await response.json())["is_active"] is False
    assert (await client.get("/api/v1/auth/me", headers=operator)).status == 401


async def test_bad_path_parameter_is_a_400(client, demo_users) -> None:
    admin = await login_as(client, "admin")
    response = await client.get("/api/v1/users/abc", headers=admin)
    assert response.status == 400
    assert (await response.json())["errors"][0]["field"] == "user_id"
    assert (await client.get("/api/v1/users/999999", headers=admin)).status == 404


async def test_an_expired_lock_starts_the_count_afresh(
    client, demo_users, settings, app_conn: asyncpg.Connection
) -> None:
    # Given a user whose lock-out has just run out
    await app_conn.execute(
        "UPDATE users SET failed_logins = $2, locked_until = herald_now() - interval '1 second' "
        "WHERE login = $1",
        OPERATOR.login,
        settings.login_max_failures,
    )
    # When they mistype once
    response = await client.post(
        "/api/v1/auth/login", json={"login": OPERATOR.login, "password": "typo"}
    )
    # Then it is one failure, not a new lock-out
    assert response.status == 401
    assert (
        await app_conn.fetchval("SELECT failed_logins FROM users WHERE login = $1", OPERATOR.login)
        == 1
    )
    assert (await login_as(client, "operator_cc"))["Authorization"]
