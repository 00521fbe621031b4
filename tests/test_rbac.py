"""The role-permission matrix is data that an admin edits through the API."""

from __future__ import annotations

import asyncpg
import pytest
from conftest import login_as


async def test_granting_a_permission_takes_effect_at_once(client, demo_users) -> None:
    admin = await login_as(client, "admin")
    operator = await login_as(client, "operator_cc")
    assert (await client.get("/api/v1/users", headers=operator)).status == 403
    roles = await (await client.get("/api/v1/roles", headers=admin)).json()
    before = next(r for r in roles if r["code"] == "operator_cc")["permissions"]
    wanted = sorted([*before, "users.read"])
    response = await client.put(
        "/api/v1/roles/operator_cc/permissions", headers=admin, json={"permissions": wanted}
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["permissions"] == wanted
    assert (await client.get("/api/v1/users", headers=operator)).status == 200
    # and the change is in the journal
    history = await client.get("/api/v1/audit/role/operator_cc", headers=admin)
    entry = (await history.json())["items"][0]
    assert (entry["field"], entry["old_value"], entry["new_value"]) == (
        "permissions",
        before,
        wanted,
    )
    assert entry["actor_login"] == "admin"


async def test_unknown_permission_is_refused(client, demo_users) -> None:
    admin = await login_as(client, "admin")
    response = await client.put(
        "/api/v1/roles/analyst/permissions",
        headers=admin,
        json={"permissions": ["audit.read", "everything.please"]},
    )
    body = await response.json()
    assert response.status == 400
    assert body["errors"][0]["field"] == "permissions"
    assert "everything.please" in body["detail"]
    response = await client.put(
        "/api/v1/roles/nobody/permissions", headers=admin, json={"permissions": []}
    )
    assert response.status == 404


async def test_cannot_remove_the_last_way_to_edit_the_matrix(client, demo_users) -> None:
    admin = await login_as(client, "admin")
    response = await client.put(
        "/api/v1/roles/admin/permissions", headers=admin, json={"permissions": ["users.read"]}
    )
    assert response.status == 409
    roles = await (await client.get("/api/v1/roles", headers=admin)).json()
    assert "rbac.manage" in next(r for r in roles if r["code"] == "admin")["permissions"]


async def test_new_role(client, demo_users) -> None:
    admin = await login_as(client, "admin")
    response = await client.post(
        "/api/v1/roles",
        headers=admin,
        json={
            "code": "quality_manager",
            "name_uk": "Менеджер з якості",
            "name_en": "Quality manager",
            "permissions": ["audit.read"],
        },
    )
    assert response.status == 201, await response.text()
    response = await client.post(
        "/api/v1/roles", headers=admin, json={"code": "Bad Code", "name_uk": "x", "name_en": "x"}
    )
    assert (await response.json())["errors"][0]["field"] == "code"
    supervisor = await login_as(client, "supervisor")
    response = await client.post(
        "/api/v1/roles", headers=supervisor, json={"code": "sneaky", "name_uk": "x", "name_en": "x"}
    )
    assert response.status == 403


async def _user_id(client, headers, login: str) -> int:
    page = await (await client.get("/api/v1/users", headers=headers)).json()
    return next(u["id"] for u in page["items"] if u["login"] == login)


async def test_no_change_may_leave_nobody_able_to_manage_roles_and_users(
    client, demo_users
) -> None:
    admin = await login_as(client, "admin")
    admin_id = await _user_id(client, admin, "admin")
    refused = [
        # the role's permissions: without users.manage, as without rbac.manage
        client.put(
            "/api/v1/roles/admin/permissions",
            headers=admin,
            json={"permissions": ["rbac.manage", "rbac.read", "users.read"]},
        ),
        client.put(
            "/api/v1/roles/admin/permissions",
            headers=admin,
            json={"permissions": ["users.manage", "users.read"]},
        ),
        # the user's roles
        client.patch(f"/api/v1/users/{admin_id}", headers=admin, json={"roles": ["analyst"]}),
        client.patch(f"/api/v1/users/{admin_id}", headers=admin, json={"roles": []}),
        # deactivating the user
        client.patch(f"/api/v1/users/{admin_id}", headers=admin, json={"is_active": False}),
    ]
    for call in refused:
        response = await call
        body = await response.json()
        assert response.status == 409, body
        assert "rbac.manage and users.manage" in body["detail"]
    # nothing of it stuck: the admin still manages roles and users
    me = await (await client.get("/api/v1/auth/me", headers=admin)).json()
    assert {"rbac.manage", "users.manage"} <= set(me["permissions"]) and me["roles"] == ["admin"]


async def test_the_last_administrator_may_step_down_once_another_exists(client, demo_users) -> None:
    # Given a second administrator
    admin = await login_as(client, "admin")
    response = await client.post(
        "/api/v1/users",
        headers=admin,
        json={
            "login": "second.admin",
            "full_name": "Друга адміністраторка",
            "password": "Дуже-Надійний-2026",
            "roles": ["admin"],
        },
    )
    assert response.status == 201, await response.text()
    admin_id = await _user_id(client, admin, "admin")
    # When the first gives up the role, Then that is allowed; but not the second as well
    response = await client.patch(
        f"/api/v1/users/{admin_id}", headers=admin, json={"roles": ["analyst"]}
    )
    assert response.status == 200, await response.text()
    login = await client.post(
        "/api/v1/auth/login", json={"login": "second.admin", "password": "Дуже-Надійний-2026"}
    )
    headers = {"Authorization": "Bearer " + (await login.json())["token"]}
    second_id = (await login.json())["user"]["id"]
    response = await client.patch(
        f"/api/v1/users/{second_id}", headers=headers, json={"is_active": False}
    )
    assert response.status == 409


async def test_the_database_keeps_an_administrator_whatever_the_path(
    demo_users, app_conn: asyncpg.Connection
) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match="manage roles and users"):
        await app_conn.execute("DELETE FROM user_roles WHERE role_code = 'admin'")
    with pytest.raises(asyncpg.CheckViolationError):
        async with app_conn.transaction():
            await app_conn.execute(
                "DELETE FROM role_permissions WHERE permission_code = 'users.manage'"
            )
    # replacing roles wholesale in one transaction is fine: the rule is checked at commit
    async with app_conn.transaction():
        await app_conn.execute("DELETE FROM user_roles WHERE role_code = 'admin'")
        await app_conn.execute(
            "INSERT INTO user_roles SELECT id, 'admin' FROM users WHERE login = 'admin'"
        )
