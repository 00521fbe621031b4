"""Contacts (CM-01): CRUD with audit, phone formats, links and roles, duplicates, merge, RBAC."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from conftest import login_as


class World:
    """Two clients (the first with a booklet passport) and four accounts."""

    def __init__(self, clients: list[int], accounts: list[int]) -> None:
        self.clients, self.accounts = clients, accounts


async def _client(conn: asyncpg.Connection, last: str, passport: str | None) -> int:
    return await conn.fetchval(
        "INSERT INTO clients (last_name, first_name, middle_name, passport_number) "
        "VALUES ($1, 'Тарас', 'Григорович', $2) RETURNING id",
        last,
        passport,
    )


async def _account(conn: asyncpg.Connection, client_id: int, n: int) -> int:
    return await conn.fetchval(
        """INSERT INTO accounts (client_id, or_number, eic_code, region_code, city, street, building,
                                 consumer_type, tariff_code, opened_at)
           VALUES ($1, $2, $3, 'UA-30', 'Київ', 'Хрещатик', '1', 'household', 'household_fixed',
                   '2020-01-01') RETURNING id""",
        client_id,
        f"{1_000_000_000 + n}",
        f"56X{n:012d}A",
    )


@pytest.fixture
async def world(admin_conn: asyncpg.Connection, demo_users: dict[str, str]) -> World:
    c1 = await _client(admin_conn, "Шевченко", "КА 123456")
    c2 = await _client(admin_conn, "Коваленко", "987654321")
    accounts = [await _account(admin_conn, c, n) for n, c in enumerate([c1, c1, c1, c2], 1)]
    return World([c1, c2], accounts)


async def _ok(response: Any, status: int = 200) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


async def _problem(response: Any, status: int) -> dict[str, Any]:
    body = await response.json()
    assert response.status == status, body
    assert response.content_type == "application/problem+json"
    return body


def _field(problem: dict[str, Any]) -> str:
    return problem["errors"][0]["field"]


async def _history(client: Any, headers: dict[str, str], contact_id: int) -> list[dict[str, Any]]:
    page = await _ok(
        await client.get(f"/api/v1/contacts/{contact_id}/history?limit=500", headers=headers)
    )
    return list(reversed(page["items"]))  # oldest first


def _entries(history: list[dict[str, Any]]) -> list[tuple[str, str | None, Any, Any]]:
    return [(e["action"], e["field"], e["old_value"], e["new_value"]) for e in history]


async def _create(client: Any, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    return await _ok(await client.post("/api/v1/contacts", headers=headers, json=body), 201)


# -- CRUD and audit --------------------------------------------------------------------------


async def test_create_read_edit_deactivate_journalled(client, world: World) -> None:
    sup = await login_as(client, "supervisor")
    contact = await _create(
        client,
        sup,
        client_id=world.clients[0],
        last_name="Шевченко",
        first_name="Марія",
        phone="+38 (067) 123-45-67",
        email="Maria.Sh@Example.com",
        links=[{"account_id": world.accounts[0], "role": "co_owner"}],
    )
    cid = contact["id"]
    assert contact["phone"] == "+380671234567"
    assert contact["email"] == "Maria.Sh@Example.com"
    assert contact["is_active"] and contact["merged_into"] is None
    assert [(link["account_id"], link["role"], link["is_active"]) for link in contact["links"]] == [
        (world.accounts[0], "co_owner", True)
    ]
    assert await _ok(await client.get(f"/api/v1/contacts/{cid}", headers=sup)) == contact

    edited = await _ok(
        await client.patch(
            f"/api/v1/contacts/{cid}",
            headers=sup,
            json={
                "phone": "050 111 22 33",
                "email": "maria@example.org",
                "middle_name": "Петрівна",
            },
        )
    )
    assert (edited["phone"], edited["email"], edited["middle_name"]) == (
        "+380501112233",
        "maria@example.org",
        "Петрівна",
    )
    # Sending the same values again changes and journals nothing.
    await _ok(
        await client.patch(f"/api/v1/contacts/{cid}", headers=sup, json={"phone": "+380501112233"})
    )

    gone = await _ok(
        await client.patch(f"/api/v1/contacts/{cid}", headers=sup, json={"is_active": False})
    )
    assert gone["is_active"] is False
    assert gone["phone"] == "+380501112233" and gone["links"][0]["is_active"]  # data kept

    listed = await _ok(
        await client.get(f"/api/v1/clients/{world.clients[0]}/contacts", headers=sup)
    )
    assert [c["id"] for c in listed["items"]] == [cid]
    active = await _ok(
        await client.get(
            f"/api/v1/clients/{world.clients[0]}/contacts?active_only=true", headers=sup
        )
    )
    assert active["items"] == []

    history = await _history(client, sup, cid)
    assert _entries(history) == [
        ("create", "client_id", None, world.clients[0]),
        ("create", "last_name", None, "Шевченко"),
        ("create", "first_name", None, "Марія"),
        ("create", "phone", None, "+380671234567"),
        ("create", "email", None, "Maria.Sh@Example.com"),
        ("link", f"link:{world.accounts[0]}", None, "co_owner"),
        ("update", "middle_name", None, "Петрівна"),
        ("update", "phone", "+380671234567", "+380501112233"),
        ("update", "email", "Maria.Sh@Example.com", "maria@example.org"),
        ("update", "is_active", True, False),
    ]
    assert {e["actor_login"] for e in history} == {"supervisor"}
    # The general audit endpoint shows the same journal.
    admin = await login_as(client, "admin")
    journal = await _ok(await client.get(f"/api/v1/audit/contact/{cid}?limit=500", headers=admin))
    assert [e["id"] for e in journal["items"]] == [e["id"] for e in reversed(history)]


@pytest.mark.parametrize(
    "written",
    [
        "0671234567",
        "+38 (067) 123-45-67",
        "380671234567",
        "067 123 45 67",
        "(067)1234567",
        "+380671234567",
    ],
)
async def test_phone_any_format_is_stored_as_e164(client, world: World, written: str) -> None:
    sup = await login_as(client, "supervisor")
    contact = await _create(client, sup, client_id=world.clients[0], phone=written)
    assert contact["phone"] == "+380671234567"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"phone": "12345"}, "phone"),
        ({"phone": "8 067 123 45 67"}, "phone"),
        ({"phone": "телефон"}, "phone"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@b"}, "email"),
        ({"phone": "0671234567", "passport_number": "К123456"}, "passport_number"),
        ({"phone": "0671234567", "passport_number": "12345678"}, "passport_number"),
        ({"last_name": "Без контакту"}, "phone"),
        (
            {"phone": "0671234567", "links": [{"account_id": 999999, "role": "owner"}]},
            "links[0].account_id",
        ),
        ({"phone": "0671234567", "links": [{"account_id": 1, "role": "boss"}]}, "links[0].role"),
        ({"phone": "0671234567", "colour": "red"}, "colour"),
        ({"phone": "0671234567", "last_name": "x" * 101}, "last_name"),
    ],
)
async def test_bad_input_on_create_names_the_field(
    client, world: World, body: dict[str, Any], field: str
) -> None:
    sup = await login_as(client, "supervisor")
    problem = await _problem(
        await client.post(
            "/api/v1/contacts", headers=sup, json={"client_id": world.clients[0], **body}
        ),
        400,
    )
    assert _field(problem) == field


async def test_bad_input_on_edit_and_paths(client, world: World) -> None:
    sup = await login_as(client, "supervisor")
    problem = await _problem(
        await client.post(
            "/api/v1/contacts", headers=sup, json={"client_id": 999999, "phone": "0671234567"}
        ),
        400,
    )
    assert _field(problem) == "client_id"
    contact = await _create(client, sup, client_id=world.clients[0], phone="0671234567")
    url = f"/api/v1/contacts/{contact['id']}"
    assert (
        _field(await _problem(await client.patch(url, headers=sup, json={"phone": None}), 400))
        == "phone"
    )
    assert (
        _field(await _problem(await client.patch(url, headers=sup, json={"email": "x@"}), 400))
        == "email"
    )
    assert (
        _field(await _problem(await client.patch(url, headers=sup, json={"is_active": "no"}), 400))
        == "is_active"
    )
    assert (
        _field(await _problem(await client.get("/api/v1/contacts/abc", headers=sup), 400))
        == "contact_id"
    )
    await _problem(await client.get("/api/v1/contacts/999999", headers=sup), 404)
    await _problem(
        await client.patch("/api/v1/contacts/999999", headers=sup, json={"phone": None}), 404
    )
    await _problem(await client.get("/api/v1/clients/999999/contacts", headers=sup), 404)
    # A contact keeps a phone or an e-mail: adding an e-mail lets the phone go.
    edited = await _ok(
        await client.patch(url, headers=sup, json={"phone": None, "email": "a@b.ua"})
    )
    assert (edited["phone"], edited["email"]) == (None, "a@b.ua")


# -- links -----------------------------------------------------------------------------------


async def test_link_change_role_unlink_relink_keeps_one_row(
    client, world: World, admin_conn: asyncpg.Connection
) -> None:
    sup = await login_as(client, "operator_cc")
    contact = await _create(client, sup, client_id=world.clients[0], phone="0671234567")
    cid, a1, a4 = contact["id"], world.accounts[0], world.accounts[3]
    url = f"/api/v1/contacts/{cid}/links/{a1}"

    first = await _ok(await client.put(url, headers=sup, json={"role": "owner"}))
    assert (first["role"], first["is_active"], first["unlinked_at"]) == ("owner", True, None)
    # One contact linked to several consumers, of another client too.
    other = await _ok(
        await client.put(
            f"/api/v1/contacts/{cid}/links/{a4}", headers=sup, json={"role": "billing_contact"}
        )
    )
    assert other["account_client_id"] == world.clients[1]

    changed = await _ok(await client.put(url, headers=sup, json={"role": "co_owner"}))
    assert changed["role"] == "co_owner" and changed["linked_at"] == first["linked_at"]
    same = await _ok(await client.put(url, headers=sup, json={"role": "co_owner"}))
    assert same == changed

    broken = await _ok(await client.delete(url, headers=sup))
    assert broken["is_active"] is False and broken["unlinked_at"] is not None
    assert await _ok(await client.delete(url, headers=sup)) == broken  # idempotent

    relinked = await _ok(await client.put(url, headers=sup, json={"role": "billing_contact"}))
    assert relinked["is_active"] and relinked["unlinked_at"] is None
    assert relinked["linked_at"] == first["linked_at"] and relinked["role"] == "billing_contact"
    assert (
        await admin_conn.fetchval(
            "SELECT count(*) FROM account_contacts WHERE contact_id = $1", cid
        )
        == 2
    )

    card = await _ok(await client.get(f"/api/v1/contacts/{cid}", headers=sup))
    assert {(link["account_id"], link["role"], link["is_active"]) for link in card["links"]} == {
        (a1, "billing_contact", True),
        (a4, "billing_contact", True),
    }
    # The contact also appears among the second client's contacts (linked to its account).
    listed = await _ok(
        await client.get(f"/api/v1/clients/{world.clients[1]}/contacts", headers=sup)
    )
    assert [c["id"] for c in listed["items"]] == [cid]

    link_history = [
        e for e in _entries(await _history(client, sup, cid)) if (e[1] or "").startswith("link:")
    ]
    assert link_history == [
        ("link", f"link:{a1}", None, "owner"),
        ("link", f"link:{a4}", None, "billing_contact"),
        ("update", f"link:{a1}", "owner", "co_owner"),
        ("unlink", f"link:{a1}", "co_owner", None),
        ("link", f"link:{a1}", None, "billing_contact"),
    ]

    await _problem(
        await client.put(
            f"/api/v1/contacts/{cid}/links/999999", headers=sup, json={"role": "owner"}
        ),
        404,
    )
    assert (
        _field(await _problem(await client.put(url, headers=sup, json={"role": "friend"}), 400))
        == "role"
    )
    await _problem(
        await client.delete(f"/api/v1/contacts/{cid}/links/{world.accounts[1]}", headers=sup), 404
    )
    await _ok(await client.patch(f"/api/v1/contacts/{cid}", headers=sup, json={"is_active": False}))
    await _problem(
        await client.put(
            f"/api/v1/contacts/{cid}/links/{world.accounts[1]}", headers=sup, json={"role": "owner"}
        ),
        409,
    )


# -- duplicates ------------------------------------------------------------------------------


async def test_duplicates_on_create_by_phone_email_passport(client, world: World) -> None:
    sup = await login_as(client, "supervisor")
    c1, c2 = world.clients
    first = await _create(
        client,
        sup,
        client_id=c1,
        last_name="Шевченко",
        phone="0671234567",
        email="Taras@Example.com",
        passport_number="МН 654321",
    )

    cases = [
        ({"phone": "+38 (067) 123-45-67"}, ["phone"]),
        ({"email": "taras@EXAMPLE.com"}, ["email"]),
        ({"phone": "0500000000", "passport_number": "mh-654321"}, ["passport_number"]),
        ({"phone": "380671234567", "email": "taras@example.com"}, ["phone", "email"]),
    ]
    for body, matched in cases:
        problem = await _problem(
            await client.post("/api/v1/contacts", headers=sup, json={"client_id": c2, **body}), 409
        )
        assert problem["type"] == "/problems/duplicate-contact"
        assert problem["candidates"] == [
            {
                "kind": "contact",
                "id": first["id"],
                "client_id": c1,
                "last_name": "Шевченко",
                "first_name": None,
                "middle_name": None,
                "matched": matched,
            }
        ]
        checked = await _ok(
            await client.get(
                "/api/v1/contacts/duplicates",
                headers=sup,
                params={("passport" if k == "passport_number" else k): v for k, v in body.items()},
            )
        )
        assert checked["candidates"] == problem["candidates"]

    # A client's passport (spaces, Latin look-alikes) is a candidate too, except one's own client.
    problem = await _problem(
        await client.post(
            "/api/v1/contacts",
            headers=sup,
            json={"client_id": c2, "phone": "0990000001", "passport_number": "ka123456"},
        ),
        409,
    )
    assert [(c["kind"], c["id"], c["matched"]) for c in problem["candidates"]] == [
        ("client", c1, ["passport_number"])
    ]
    own = await _create(client, sup, client_id=c1, phone="0990000001", passport_number="КА123456")
    assert own["passport_number"] == "КА123456"

    # Knowingly creating a duplicate is allowed, and journalled as such.
    dup = await _create(client, sup, client_id=c2, phone="0671234567", allow_duplicate=True)
    notes = [e for e in await _history(client, sup, dup["id"]) if e["action"] == "allow_duplicate"]
    assert [n["new_value"] for n in notes] == [
        [{"kind": "contact", "id": first["id"], "matched": ["phone"]}]
    ]
    # Inactive contacts are nobody's duplicate.
    for contact_id in (first["id"], dup["id"]):
        await _ok(
            await client.patch(
                f"/api/v1/contacts/{contact_id}", headers=sup, json={"is_active": False}
            )
        )
    await _create(client, sup, client_id=c2, phone="0671234567")

    bad = await _problem(
        await client.get("/api/v1/contacts/duplicates?phone=123", headers=sup), 400
    )
    assert _field(bad) == "phone"
    bad = await _problem(
        await client.get("/api/v1/contacts/duplicates?passport=XX", headers=sup), 400
    )
    assert _field(bad) == "passport"
    await _problem(await client.get("/api/v1/contacts/duplicates", headers=sup), 400)


async def test_duplicates_on_edit_and_reactivation(client, world: World) -> None:
    sup = await login_as(client, "supervisor")
    c1, c2 = world.clients
    a = await _create(client, sup, client_id=c1, phone="0671234567", email="a@example.com")
    b = await _create(client, sup, client_id=c2, phone="0501112233")
    url = f"/api/v1/contacts/{b['id']}"

    for body, matched in (
        ({"phone": "067-123-45-67"}, ["phone"]),
        ({"email": "A@example.com"}, ["email"]),
    ):
        problem = await _problem(await client.patch(url, headers=sup, json=body), 409)
        assert [(c["id"], c["matched"]) for c in problem["candidates"]] == [(a["id"], matched)]
    assert (await _ok(await client.get(url, headers=sup)))["phone"] == "+380501112233"  # unchanged

    shared = await _ok(
        await client.patch(url, headers=sup, json={"phone": "0671234567", "allow_duplicate": True})
    )
    assert shared["phone"] == "+380671234567"
    # Editing another field of a contact that already shares a phone is not refused.
    await _ok(await client.patch(url, headers=sup, json={"first_name": "Олена"}))
    # The contact checking itself is not its own duplicate.
    own = await _ok(
        await client.get(
            "/api/v1/contacts/duplicates",
            headers=sup,
            params={"phone": "0671234567", "exclude_contact_id": str(b["id"])},
        )
    )
    assert [c["id"] for c in own["candidates"]] == [a["id"]]

    # Reactivating a contact checks all of its data again.
    await _ok(await client.patch(url, headers=sup, json={"is_active": False}))
    problem = await _problem(await client.patch(url, headers=sup, json={"is_active": True}), 409)
    assert [c["id"] for c in problem["candidates"]] == [a["id"]]
    back = await _ok(
        await client.patch(url, headers=sup, json={"is_active": True, "allow_duplicate": True})
    )
    assert back["is_active"]


async def test_concurrent_saves_of_one_phone_make_one_contact(client, world: World) -> None:
    sup = await login_as(client, "supervisor")
    bodies = [
        {"client_id": c, "phone": phone}
        for c, phone in zip(world.clients, ("0671234567", "+380 67 123 45 67"), strict=True)
    ]
    responses = await asyncio.gather(
        *(client.post("/api/v1/contacts", headers=sup, json=b) for b in bodies)
    )
    assert sorted(r.status for r in responses) == [201, 409]


# -- merge -----------------------------------------------------------------------------------


async def test_merge_moves_links_fills_fields_and_keeps_both_histories(
    client, world: World, admin_conn: asyncpg.Connection
) -> None:
    sup = await login_as(client, "supervisor")
    a1, a2, a3, a4 = world.accounts
    source = await _create(
        client,
        sup,
        client_id=world.clients[0],
        phone="0671234567",
        first_name="Тарас",
        passport_number="АВ 111222",
        links=[
            {"account_id": a1, "role": "owner"},
            {"account_id": a2, "role": "owner"},
            {"account_id": a3, "role": "billing_contact"},
            {"account_id": a4, "role": "co_owner"},
        ],
    )
    survivor = await _create(
        client,
        sup,
        client_id=world.clients[0],
        phone="0509998877",
        email="taras@example.com",
        last_name="Шевченко",
        links=[{"account_id": a2, "role": "co_owner"}, {"account_id": a3, "role": "owner"}],
    )
    s, v = source["id"], survivor["id"]
    await _ok(await client.delete(f"/api/v1/contacts/{s}/links/{a4}", headers=sup))

    result = await _ok(
        await client.post(f"/api/v1/contacts/{s}/merge", headers=sup, json={"into": v})
    )
    assert sorted(result["filled_fields"]) == ["first_name", "passport_number"]
    outcomes = {link["account_id"]: (link["outcome"], link["role"]) for link in result["links"]}
    assert outcomes == {
        a1: ("moved", "owner"),
        a2: ("role_upgraded", "owner"),
        a3: ("kept_stronger_role", "owner"),
    }
    assert all(link["note"] for link in result["links"] if link["outcome"] != "moved")

    kept = result["survivor"]
    assert (
        kept["phone"],
        kept["email"],
        kept["first_name"],
        kept["last_name"],
        kept["passport_number"],
    ) == ("+380509998877", "taras@example.com", "Тарас", "Шевченко", "АВ 111222")
    assert {(link["account_id"], link["role"]) for link in kept["links"] if link["is_active"]} == {
        (a1, "owner"),
        (a2, "owner"),
        (a3, "owner"),
    }
    assert kept["merged_from"] == [s]
    assert (
        await admin_conn.fetchval("SELECT passport_norm FROM contacts WHERE id = $1", v)
        == "АВ111222"
    )
    merged = await _ok(await client.get(f"/api/v1/contacts/{s}", headers=sup))
    assert merged == result["merged"]
    assert merged["is_active"] is False and merged["merged_into"] == v
    assert merged["phone"] == "+380671234567"  # data kept
    assert [link["is_active"] for link in merged["links"]] == [False] * 4

    merged_history = _entries(await _history(client, sup, s))
    assert ("merge", "merged_into", None, v) in merged_history
    assert ("merge", "is_active", True, False) in merged_history
    assert {e for e in merged_history if e[0] == "merge" and (e[1] or "").startswith("link:")} == {
        ("merge", f"link:{a1}", "owner", None),
        ("merge", f"link:{a2}", "owner", None),
        ("merge", f"link:{a3}", "billing_contact", None),
    }
    survivor_history = _entries(await _history(client, sup, v))
    assert [e for e in survivor_history if e[0] == "merge"] == [
        ("merge", "merged_from", None, s),
        ("merge", "first_name", None, "Тарас"),
        ("merge", "passport_number", None, "АВ 111222"),
        ("merge", f"link:{a1}", None, "owner"),
        ("merge", f"link:{a2}", "co_owner", "owner"),
    ]
    assert ("create", "email", None, "taras@example.com") in survivor_history  # older history stays

    again = await _problem(
        await client.post(f"/api/v1/contacts/{s}/merge", headers=sup, json={"into": v}), 409
    )
    assert str(v) in again["detail"]
    third = await _create(client, sup, client_id=world.clients[1], email="x@example.com")
    await _problem(
        await client.post(f"/api/v1/contacts/{third['id']}/merge", headers=sup, json={"into": s}),
        409,
    )
    assert (
        _field(
            await _problem(
                await client.post(f"/api/v1/contacts/{v}/merge", headers=sup, json={"into": v}), 400
            )
        )
        == "into"
    )
    assert (
        _field(
            await _problem(
                await client.post(
                    f"/api/v1/contacts/{v}/merge", headers=sup, json={"into": 999999}
                ),
                400,
            )
        )
        == "into"
    )
    await _problem(
        await client.post("/api/v1/contacts/999999/merge", headers=sup, json={"into": v}), 404
    )
    # A merged contact cannot come back to life.
    await _problem(
        await client.patch(f"/api/v1/contacts/{s}", headers=sup, json={"is_active": True}), 409
    )


# -- permissions and masking -----------------------------------------------------------------


async def test_permissions_and_passport_masking(client, world: World) -> None:
    cc = await login_as(client, "operator_cc")  # clients.read + clients.manage, no clients.pii
    cos = await login_as(client, "operator_cos")  # with clients.pii
    contact = await _create(
        client, cc, client_id=world.clients[0], phone="0671234567", passport_number="КА 123457"
    )
    cid = contact["id"]
    assert contact["passport_number"] == "КА****57"
    assert (await _ok(await client.get(f"/api/v1/contacts/{cid}", headers=cos)))[
        "passport_number"
    ] == "КА 123457"
    cc_history = await _history(client, cc, cid)
    assert [e["new_value"] for e in cc_history if e["field"] == "passport_number"] == ["КА****57"]
    cos_history = await _history(client, cos, cid)
    assert [e["new_value"] for e in cos_history if e["field"] == "passport_number"] == ["КА 123457"]

    other = await _create(client, cc, client_id=world.clients[1], email="o@example.com")
    denied = await _problem(
        await client.post(f"/api/v1/contacts/{other['id']}/merge", headers=cc, json={"into": cid}),
        403,
    )
    assert "contacts.merge" in denied["detail"]
    analyst = await login_as(client, "analyst")  # read only
    await _ok(await client.get(f"/api/v1/contacts/{cid}", headers=analyst))
    await _problem(
        await client.post(
            "/api/v1/contacts",
            headers=analyst,
            json={"client_id": world.clients[0], "phone": "0671112233"},
        ),
        403,
    )
    await _problem(
        await client.put(
            f"/api/v1/contacts/{cid}/links/{world.accounts[0]}",
            headers=analyst,
            json={"role": "owner"},
        ),
        403,
    )
    marketer = await login_as(client, "marketer")  # no clients.read at all
    await _problem(await client.get(f"/api/v1/contacts/{cid}", headers=marketer), 403)
    await _problem(await client.get(f"/api/v1/contacts/{cid}/history", headers=marketer), 403)
    client.session.cookie_jar.clear()  # login also set a session cookie
    await _problem(await client.get(f"/api/v1/contacts/{cid}"), 401)
