"""Mass edit of accounts (CM-03): selection by ids or filter, audit per record and field, report."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from conftest import login_as

from crm import mass_edit
from herald import clock

URL = "/api/v1/accounts/mass-edit"

# (client index, region, consumer type, registers, destroyed, tariff, status, city)
ACCOUNTS = [
    (0, "UA-30", "household", [], False, "household_fixed", "active", "Київ"),
    (0, "UA-30", "household", ["idp"], True, "household_fixed", "active", "Київ"),
    (1, "UA-30", "household_heating", ["subsidy"], False, "household_annual", "active", "Київ"),
    (
        1,
        "UA-63",
        "household",
        ["subsidy", "benefit"],
        False,
        "household_fixed",
        "suspended",
        "Харків",
    ),
    (2, "UA-63", "condominium", [], False, "condominium", "active", "Харків"),
    (2, "UA-46", "household", ["idp"], False, "household_monthly", "closed", "Львів"),
]


@pytest.fixture
async def accounts(
    admin_conn: asyncpg.Connection, demo_users: dict[str, str]
) -> dict[str, list[int]]:
    clients = [
        await admin_conn.fetchval(
            "INSERT INTO clients (last_name, first_name) VALUES ($1, 'Ім''я') RETURNING id",
            f"Клієнт{i}",
        )
        for i in range(3)
    ]
    ids = []
    for n, (c, region, consumer, registers, destroyed, tariff, status, city) in enumerate(
        ACCOUNTS, 1
    ):
        ids.append(
            await admin_conn.fetchval(
                """INSERT INTO accounts (client_id, or_number, eic_code, region_code, city, street, building,
                                     consumer_type, registers, destroyed_housing, tariff_code, status,
                                     opened_at, closed_at)
               VALUES ($1, $2, $3, $4, $5, 'Шевченка', '1', $6, $7, $8, $9, $10, '2020-01-01',
                       CASE WHEN $10 = 'closed' THEN date '2024-01-01' END) RETURNING id""",
                clients[c],
                f"{2_000_000_000 + n}",
                f"56X{n:012d}B",
                region,
                city,
                consumer,
                registers,
                destroyed,
                tariff,
                status,
            )
        )
    return {"clients": clients, "accounts": ids}


async def _post(
    client: Any, headers: dict[str, str], body: dict[str, Any], status: int = 200
) -> Any:
    response = await client.post(URL, headers=headers, json=body)
    payload = await response.json()
    assert response.status == status, payload
    return payload


async def _state(conn: asyncpg.Connection, ids: list[int]) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        "SELECT id, consumer_type, registers, destroyed_housing, tariff_code, "
        "status, closed_at FROM accounts WHERE id = ANY($1) ORDER BY id",
        ids,
    )
    return [tuple(r) for r in rows]


async def _journal(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        "SELECT entity_id, field, old_value, new_value, actor_login FROM audit_log "
        "WHERE entity_type = 'account' ORDER BY entity_id::bigint, id"
    )
    return [tuple(r) for r in rows]


async def test_by_account_ids_changes_journals_and_reports(client, accounts, admin_conn) -> None:
    sup = await login_as(client, "supervisor")
    a = accounts["accounts"]
    report = await _post(
        client,
        sup,
        {
            "account_ids": [a[0], a[1], a[2], 999_999, a[0]],
            "set": {"registers_add": ["idp"], "destroyed_housing": True},
        },
    )
    assert (report["matched"], report["changed"], report["unchanged"]) == (3, 2, 1)
    assert report["dry_run"] is False and report["records_capped"] is False
    assert report["not_found"] == [999_999]
    assert report["records"] == [
        {
            "account_id": a[0],
            "client_id": accounts["clients"][0],
            "changes": [
                {"field": "registers", "old": [], "new": ["idp"]},
                {"field": "destroyed_housing", "old": False, "new": True},
            ],
        },
        {
            "account_id": a[2],
            "client_id": accounts["clients"][1],
            "changes": [
                {"field": "registers", "old": ["subsidy"], "new": ["subsidy", "idp"]},
                {"field": "destroyed_housing", "old": False, "new": True},
            ],
        },
    ]
    assert [(r[2], r[3]) for r in await _state(admin_conn, a[:3])] == [
        (["idp"], True),
        (["idp"], True),
        (["subsidy", "idp"], True),
    ]
    # One journal entry per changed record and field, none for the unchanged account.
    assert await _journal(admin_conn) == [
        (str(a[0]), "registers", [], ["idp"], "supervisor"),
        (str(a[0]), "destroyed_housing", False, True, "supervisor"),
        (str(a[2]), "registers", ["subsidy"], ["subsidy", "idp"], "supervisor"),
        (str(a[2]), "destroyed_housing", False, True, "supervisor"),
    ]
    # The account history endpoint shows it.
    admin = await login_as(client, "admin")
    history = await (await client.get(f"/api/v1/audit/account/{a[2]}", headers=admin)).json()
    assert {e["field"] for e in history["items"]} == {"registers", "destroyed_housing"}


async def test_by_client_ids_and_register_removal(client, accounts, admin_conn) -> None:
    sup = await login_as(client, "supervisor")
    c, a = accounts["clients"], accounts["accounts"]
    report = await _post(
        client,
        sup,
        {
            "client_ids": [c[1], 999_999],
            "set": {"registers_remove": ["subsidy"], "registers_add": ["vulnerable"]},
        },
    )
    assert (report["matched"], report["changed"], report["unchanged"]) == (2, 2, 0)
    assert report["not_found"] == [999_999]
    assert [(r[0], r[2]) for r in await _state(admin_conn, a)] == [
        (a[0], []),
        (a[1], ["idp"]),
        (a[2], ["vulnerable"]),
        (a[3], ["benefit", "vulnerable"]),
        (a[4], []),
        (a[5], ["idp"]),
    ]
    assert len(await _journal(admin_conn)) == 2


async def test_by_filter_with_status_and_tariff(client, accounts, admin_conn) -> None:
    sup = await login_as(client, "supervisor")
    a = accounts["accounts"]
    report = await _post(
        client,
        sup,
        {
            "filter": {
                "region": ["UA-30", "UA-63"],
                "consumer_type": ["household"],
                "city": " київ ",
            },
            "set": {"tariff_code": "household_monthly", "status": "closed"},
        },
    )
    assert (report["matched"], report["changed"]) == (2, 2)
    today = clock.now().date()  # the pool runs in UTC
    state = {r[0]: r for r in await _state(admin_conn, a)}
    for account in (a[0], a[1]):
        assert state[account][4:] == ("household_monthly", "closed", today)
    assert state[a[3]][4:] == ("household_fixed", "suspended", None)  # Харків, not selected
    assert {(e[0], e[1]) for e in await _journal(admin_conn)} == {
        (str(x), f) for x in (a[0], a[1]) for f in ("tariff_code", "status", "closed_at")
    }
    assert report["records"][0]["changes"][-1] == {
        "field": "closed_at",
        "old": None,
        "new": today.isoformat(),
    }

    # Registers contain all of the listed ones; reopening a closed account clears closed_at.
    report = await _post(
        client,
        sup,
        {
            "filter": {"registers_contains": ["idp"], "status": ["closed"]},
            "set": {"status": "active"},
        },
    )
    assert (report["matched"], report["changed"]) == (2, 2)  # a[1] just closed, a[5]
    assert {r[0]: r[5:] for r in await _state(admin_conn, [a[1], a[5]])} == {
        a[1]: ("active", None),
        a[5]: ("active", None),
    }
    report = await _post(
        client,
        sup,
        {
            "filter": {"destroyed_housing": True, "tariff": ["condominium"]},
            "set": {"destroyed_housing": False},
        },
    )
    assert report["matched"] == 0 and report["records"] == []


async def test_dry_run_reports_without_changing(client, accounts, admin_conn) -> None:
    sup = await login_as(client, "supervisor")
    a = accounts["accounts"]
    before = await _state(admin_conn, a)
    body = {"filter": {"region": ["UA-63"]}, "set": {"consumer_type": "budget", "status": "active"}}
    preview = await _post(client, sup, {**body, "dry_run": True})
    assert preview["dry_run"] is True and (preview["matched"], preview["changed"]) == (2, 2)
    assert await _state(admin_conn, a) == before
    assert await _journal(admin_conn) == []
    applied = await _post(client, sup, body)
    assert {k: v for k, v in applied.items() if k != "dry_run"} == {
        k: v for k, v in preview.items() if k != "dry_run"
    }
    assert len(await _journal(admin_conn)) == 3  # two consumer types, one status


async def test_selection_limit_and_detail_cap(client, accounts, admin_conn, monkeypatch) -> None:
    sup = await login_as(client, "supervisor")
    problem = await _post(
        client,
        sup,
        {
            "account_ids": list(range(1, mass_edit.MAX_SELECTION + 2)),
            "set": {"destroyed_housing": True},
        },
        400,
    )
    assert problem["errors"][0]["field"] == "account_ids"
    monkeypatch.setattr(mass_edit, "MAX_SELECTION", 3)
    problem = await _post(
        client,
        sup,
        {"filter": {"region": ["UA-30", "UA-63"]}, "set": {"destroyed_housing": True}},
        400,
    )
    assert problem["errors"][0]["field"] == "filter"
    problem = await _post(
        client, sup, {"client_ids": accounts["clients"], "set": {"destroyed_housing": True}}, 400
    )
    assert problem["errors"][0]["field"] == "client_ids"
    assert await _journal(admin_conn) == []

    monkeypatch.setattr(mass_edit, "MAX_SELECTION", 100)
    monkeypatch.setattr(mass_edit, "DETAIL_CAP", 2)
    report = await _post(
        client,
        sup,
        {"account_ids": accounts["accounts"], "set": {"tariff_code": "household_annual"}},
    )
    assert (report["changed"], len(report["records"]), report["records_capped"]) == (5, 2, True)
    assert len(await _journal(admin_conn)) == 5  # the journal is never capped


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"set": {"status": "active"}}, "account_ids"),
        ({"account_ids": [1], "client_ids": [1], "set": {"status": "active"}}, "account_ids"),
        ({"account_ids": [1]}, "set"),
        ({"account_ids": [1], "set": {}}, "set"),
        ({"account_ids": [], "set": {"status": "active"}}, "account_ids"),
        ({"account_ids": [0], "set": {"status": "active"}}, "account_ids[0]"),
        ({"account_ids": [1], "set": {"consumer_type": "factory"}}, "set.consumer_type"),
        ({"account_ids": [1], "set": {"tariff_code": "free_gas"}}, "set.tariff_code"),
        ({"account_ids": [1], "set": {"registers_add": ["IDP!"]}}, "set.registers_add[0]"),
        (
            {"account_ids": [1], "set": {"registers_add": ["idp"], "registers_remove": ["idp"]}},
            "set.registers_remove",
        ),
        ({"account_ids": [1], "set": {"colour": "red"}}, "set.colour"),
        ({"filter": {}, "set": {"status": "active"}}, "filter"),
        ({"filter": {"region": ["Kyiv"]}, "set": {"status": "active"}}, "filter.region[0]"),
        ({"filter": {"status": ["gone"]}, "set": {"status": "active"}}, "filter.status[0]"),
    ],
)
async def test_bad_requests_name_the_field(
    client, accounts, body: dict[str, Any], field: str
) -> None:
    sup = await login_as(client, "supervisor")
    problem = await _post(client, sup, body, 400)
    assert problem["errors"][0]["field"] == field


async def test_permission_required(client, accounts, admin_conn) -> None:
    for role in ("operator_cc", "operator_cos", "marketer", "analyst"):
        headers = await login_as(client, role)
        response = await client.post(
            URL,
            headers=headers,
            json={"account_ids": accounts["accounts"], "set": {"status": "suspended"}},
        )
        assert response.status == 403, role
    assert await _journal(admin_conn) == []
    admin = await login_as(client, "admin")
    assert (
        await _post(
            client, admin, {"account_ids": accounts["accounts"][:1], "set": {"status": "suspended"}}
        )
    )["changed"] == 1
