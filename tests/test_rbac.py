"""The role-permission matrix is data that an admin edits through the API."""

from __future__ import annotations

from conftest import login_as


async def test_granting_a_permission_takes_effect_at_once(client, demo_users) -> None:
    admin = await login_as(client, "admin")
    operator = await login_as(client, "operator_cc")
    assert (await client.get("/api/v1/users", headers=operator)).status == 403
    roles = await (await client.get("/api/v1/roles", headers=admin)).json()
    before = next(r for r in roles if r["code"] == "operator_cc")["permissions"]
    wanted = sorted([*before, "users.read"])
    response = await client.put("/api/v1/roles/operator_cc/permissions", headers=admin,
                                json={"permissions": wanted})
    assert response.status == 200, await response.text()
    assert (await response.json())["permissions"] == wanted
    assert (await client.get("/api/v1/users", headers=operator)).status == 200
    # and the change is in the journal
    history = await client.get("/api/v1/audit/role/operator_cc", headers=admin)
    entry = (await history.json())["items"][0]
    assert (entry["field"], entry["old_value"], entry["new_value"]) == (
        "permissions", before, wanted)
    assert entry["actor_login"] == "admin"


async def test_unknown_permission_is_refused(client, demo_users) -> None:
    admin = await login_as(client, "admin")
    response = await client.put("/api/v1/roles/analyst/permissions", headers=admin,
                                json={"permissions": ["audit.read", "everything.please"]})
    body = await response.json()
    assert response.status == 400
    assert body["errors"][0]["field"] == "permissions"
    assert "everything.please" in body["detail"]
    response = await client.put("/api/v1/roles/nobody/permissions", headers=admin,
                                json={"permissions": []})
    assert response.status == 404


async def test_cannot_remove_the_last_way_to_edit_the_matrix(client, demo_users) -> None:
    admin = await login_as(client, "admin")
    response = await client.put("/api/v1/roles/admin/permissions", headers=admin,
                                json={"permissions": ["users.read"]})
    assert response.status == 409
    roles = await (await client.get("/api/v1/roles", headers=admin)).json()
    assert "rbac.manage" in next(r for r in roles if r["code"] == "admin")["permissions"]


async def test_new_role(client, demo_users) -> None:
    admin = await login_as(client, "admin")
    response = await client.post("/api/v1/roles", headers=admin, json={
        "code": "quality_manager", "name_uk": "Менеджер з якості", "name_en": "Quality manager",
        "permissions": ["audit.read"]})
    assert response.status == 201, await response.text()
    response = await client.post("/api/v1/roles", headers=admin, json={
        "code": "Bad Code", "name_uk": "x", "name_en": "x"})
    assert (await response.json())["errors"][0]["field"] == "code"
    supervisor = await login_as(client, "supervisor")
    response = await client.post("/api/v1/roles", headers=supervisor, json={
        "code": "sneaky", "name_uk": "x", "name_en": "x"})
    assert response.status == 403
