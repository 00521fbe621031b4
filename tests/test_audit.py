"""The audit journal: append-only in the database, written in the change's transaction."""

from __future__ import annotations

import asyncpg
import pytest
from conftest import login_as

from herald import audit
from herald.audit import Actor, Change


async def _one_entry(conn: asyncpg.Connection) -> None:
    await audit.record(
        conn,
        Actor(login="tester", id=None, request_id="r1"),
        [Change("contact", "7", "update", "phone", "+380501112233", "+380671112233")],
    )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET new_value = '\"forged\"'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "UPDATE audit_log_y2026 SET actor_login = 'x'",
        "DELETE FROM audit_log_default",
    ],
)
async def test_application_role_cannot_change_the_journal(
    app_conn: asyncpg.Connection, statement: str
) -> None:
    await _one_entry(app_conn)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(statement)
    assert await app_conn.fetchval("SELECT count(*) FROM audit_log") == 1


async def test_even_the_owner_cannot_update_or_delete(admin_conn: asyncpg.Connection) -> None:
    await _one_entry(admin_conn)
    for statement in (
        "UPDATE audit_log SET actor_login = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await admin_conn.execute(statement)


async def test_entry_shares_the_fate_of_its_transaction(app_conn: asyncpg.Connection) -> None:
    with pytest.raises(RuntimeError):
        async with app_conn.transaction():
            await _one_entry(app_conn)
            raise RuntimeError("the change failed")
    assert await app_conn.fetchval("SELECT count(*) FROM audit_log") == 0
    async with app_conn.transaction():
        await _one_entry(app_conn)
    row = await app_conn.fetchrow("SELECT * FROM audit_log")
    assert (row["entity_type"], row["entity_id"], row["field"]) == ("contact", "7", "phone")
    assert (row["old_value"], row["new_value"]) == ("+380501112233", "+380671112233")
    assert row["request_id"] == "r1"


async def test_history_api_pages_newest_first(
    client, demo_users, app_conn: asyncpg.Connection
) -> None:
    actor = Actor(login="tester")
    await audit.record(
        app_conn,
        actor,
        [Change("contact", "9", "update", "email", f"a{i}", f"a{i + 1}") for i in range(5)],
    )
    admin = await login_as(client, "admin")
    first = await (await client.get("/api/v1/audit/contact/9?limit=3", headers=admin)).json()
    assert [e["new_value"] for e in first["items"]] == ["a5", "a4", "a3"]
    second = await (
        await client.get(
            f"/api/v1/audit/contact/9?limit=3&cursor={first['next_cursor']}", headers=admin
        )
    ).json()
    assert [e["new_value"] for e in second["items"]] == ["a2", "a1"]
    assert second["next_cursor"] is None
    bad = await client.get("/api/v1/audit/contact/9?cursor=zzz", headers=admin)
    assert bad.status == 400 and (await bad.json())["errors"][0]["field"] == "cursor"
    bad = await client.get("/api/v1/audit/contact/9?limit=0", headers=admin)
    assert bad.status == 400 and (await bad.json())["errors"][0]["field"] == "limit"


async def test_logins_and_user_changes_are_journalled(
    client, demo_users, app_conn: asyncpg.Connection
) -> None:
    admin = await login_as(client, "admin")
    await client.post("/api/v1/auth/login", json={"login": "marketer", "password": "bad"})
    marketer_id = await app_conn.fetchval("SELECT id FROM users WHERE login = 'marketer'")
    await client.patch(
        f"/api/v1/users/{marketer_id}", headers=admin, json={"full_name": "Мар'яна Шевчук-Коваль"}
    )
    history = await (await client.get(f"/api/v1/audit/user/{marketer_id}", headers=admin)).json()
    actions = [(e["action"], e["field"]) for e in history["items"]]
    assert ("update", "full_name") in actions and ("login_failed", "failed_logins") in actions
    rename = next(e for e in history["items"] if e["field"] == "full_name")
    assert rename["actor_login"] == "admin" and rename["request_id"]


async def test_the_journal_masks_personal_data_for_roles_without_clients_pii(
    client, demo_users, admin_conn: asyncpg.Connection
) -> None:
    # Given a contact whose passport was entered and corrected, and a client record journalled whole
    client_id = await admin_conn.fetchval(
        "INSERT INTO clients (last_name, first_name) VALUES ('Шевченко', 'Тарас') RETURNING id"
    )
    supervisor = await login_as(client, "supervisor")
    response = await client.post(
        "/api/v1/contacts",
        headers=supervisor,
        json={"client_id": client_id, "phone": "0671234567", "passport_number": "КК123456"},
    )
    assert response.status == 201, await response.text()
    contact_id = (await response.json())["id"]
    response = await client.patch(
        f"/api/v1/contacts/{contact_id}", headers=supervisor, json={"passport_number": "КК654321"}
    )
    assert response.status == 200, await response.text()
    await audit.record(
        admin_conn,
        Actor(login="import"),
        [
            Change(
                "client",
                str(client_id),
                "create",
                None,
                None,
                {"last_name": "Шевченко", "passport_number": "КК123456", "tax_id": "1234567890"},
            )
        ],
    )

    # When an analyst (audit.read, no clients.pii) and an admin (both) read the journal
    analyst, admin = await login_as(client, "analyst"), await login_as(client, "admin")
    seen = {}
    for who, headers in (("analyst", analyst), ("admin", admin)):
        for path in (
            f"/api/v1/audit/contact/{contact_id}",
            f"/api/v1/audit/client/{client_id}",
            f"/api/v1/contacts/{contact_id}/history",
        ):
            response = await client.get(path, headers=headers)
            if response.status == 403:
                continue
            assert response.status == 200, await response.text()
            seen[who, path] = await response.text()

    # Then the analyst sees the passport and tax id only masked, wherever the journal is read
    analyst_text = "".join(text for (who, _), text in seen.items() if who == "analyst")
    for raw in ("КК123456", "КК654321", "1234567890"):
        assert raw not in analyst_text
    assert (
        "КК****56" in analyst_text and "КК****21" in analyst_text and "12******90" in analyst_text
    )
    assert "Шевченко" in analyst_text  # only personal document data is masked
    admin_text = "".join(text for (who, _), text in seen.items() if who == "admin")
    assert "КК123456" in admin_text and "КК654321" in admin_text and "1234567890" in admin_text
