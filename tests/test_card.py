"""The Client 360 card through the API, with the billing simulator in the loop."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec
import pytest
from conftest import login_as

from admin_api.app import init_app
from crm.cases.text import text_hash
from herald import clock
from herald.settings import Settings
from providers.sim.billing import BILLING_SIM, BillingSim, account_data
from providers.sim.server import init_simulators_app

TOKEN = "card-test-token"


def now() -> dt.datetime:
    return clock.now()


class CardApi:
    """The admin API (on this test's database) and the billing simulator it talks to."""

    def __init__(self, client: Any, sim: BillingSim, settings: Settings) -> None:
        self.client = client
        self.sim = sim
        self.settings = settings
        self._headers: dict[str, dict[str, str]] = {}

    async def headers(self, role: str) -> dict[str, str]:
        if role not in self._headers:
            self._headers[role] = await login_as(self.client, role)
        return self._headers[role]

    async def call(
        self, method: str, path: str, role: str = "operator_cc", **params: str
    ) -> tuple[int, Any]:
        response = await self.client.request(
            method, path, params=params, headers=await self.headers(role)
        )
        return response.status, await response.json(content_type=None)

    async def card(self, client_id: int, role: str = "operator_cc", **params: str) -> Any:
        status, body = await self.call("GET", f"/api/v1/clients/{client_id}", role, **params)
        assert status == 200, body
        return body


MakeApi = Callable[..., Awaitable[CardApi]]


@pytest.fixture
async def make_api(
    settings: Settings, demo_users: dict[str, str], aiohttp_client, aiohttp_server
) -> MakeApi:
    """Start the billing simulator and the API; keyword arguments override settings."""

    async def make(**overrides: Any) -> CardApi:
        sim_app = init_simulators_app(msgspec.structs.replace(settings, provider_api_token=TOKEN))
        server = await aiohttp_server(sim_app)
        configured = msgspec.structs.replace(
            settings,
            provider_api_token=TOKEN,
            billing_url=str(server.make_url("/billing")),
            **{"billing_timeout_seconds": 5.0, **overrides},
        )
        client = await aiohttp_client(init_app(configured))
        return CardApi(client, sim_app[BILLING_SIM], configured)

    return make


async def make_client(
    conn: asyncpg.Connection,
    or_numbers: tuple[str, ...] = ("1000000101",),
    *,
    passport: str | None = "КА123456",
    tax_id: str | None = "1234567890",
) -> tuple[int, list[int]]:
    """A client with accounts (one meter each) and an owner contact linked to all of them."""
    client_id = await conn.fetchval(
        """
        INSERT INTO clients (last_name, first_name, middle_name, birth_date, passport_number, tax_id)
        VALUES ('Шевченко', 'Тарас', 'Григорович', '1984-03-09', $1, $2) RETURNING id
        """,
        passport,
        tax_id,
    )
    account_ids = []
    for n, or_number in enumerate(or_numbers):
        account_ids.append(
            await conn.fetchval(
                """
            INSERT INTO accounts (client_id, or_number, eic_code, region_code, district, city,
                                  street, building, flat, postal_code, consumer_type, registers,
                                  destroyed_housing, tariff_code, opened_at)
            VALUES ($1, $2, '56XS' || $2 || '0A', 'UA-32', 'Бучанський', 'Ірпінь',
                    'вул. Університетська', $3, '12', '08200', 'household_heating',
                    '{subsidy}', $4, 'household_fixed', '2015-01-01')
            RETURNING id
            """,
                client_id,
                or_number,
                str(n + 1),
                n == 1,
            )
        )
    owner = await conn.fetchval(
        "INSERT INTO contacts (client_id, first_name, last_name, phone, email) "
        "VALUES ($1, 'Тарас', 'Шевченко', '+380501112233', 'taras@example.com') RETURNING id",
        client_id,
    )
    for account_id in account_ids:
        await conn.execute(
            "INSERT INTO account_contacts (account_id, contact_id, role) VALUES ($1, $2, 'owner')",
            account_id,
            owner,
        )
        await conn.execute(
            "INSERT INTO meters (account_id, serial_number, model, size_class, installed_at) "
            "VALUES ($1, $2, 'Metrix G4', 'G4', '2018-06-01')",
            account_id,
            f"SN{account_id:06d}",
        )
    return client_id, account_ids


def _charge(or_number: str, period: str, amount: str) -> dict[str, str]:
    return {
        "id": f"{or_number}-c{period[:7]}",
        "period": period,
        "volume_m3": "50.000",
        "amount": amount,
        "posted_at": f"{period}T03:00:00+00:00",
    }


def _payment(pid: str, paid_at: str, amount: str) -> dict[str, str]:
    return {"id": pid, "paid_at": paid_at, "amount": amount, "method": "bank_card"}


async def cache(
    conn: asyncpg.Connection,
    account_id: int,
    *,
    fetched_at: dt.datetime,
    balance: str = "-150.00",
    debt: str = "0.00",
    charges: list[dict[str, str]] | None = None,
    payments: list[dict[str, str]] | None = None,
) -> None:
    """A snapshot in the cache as the connector writes it."""
    await conn.execute(
        """
        INSERT INTO billing_snapshots (account_id, balance, debt, fetched_at, tariff_code, charges,
                                       payments, equipment, gdo_readings, refreshed_by)
        VALUES ($1, $2, $3, $4, 'household_fixed', $5, $6, $7, '[]', 'earlier')
        """,
        account_id,
        Decimal(balance),
        Decimal(debt),
        fetched_at,
        charges if charges is not None else [_charge("x", "2026-01-01", "150.00")],
        payments or [],
        [{"kind": "stove", "model": "Гефест 3200", "installed_on": None}],
    )


async def test_a_fresh_cache_is_shown_without_asking_billing(
    make_api: MakeApi, admin_conn: asyncpg.Connection
) -> None:
    api = await make_api()
    client_id, (account_id,) = await make_client(admin_conn)
    fetched = now() - dt.timedelta(minutes=1)
    await cache(admin_conn, account_id, fetched_at=fetched, balance="-150.00")

    card = await api.card(client_id)

    assert api.sim.stats.requests == 0
    assert card["client"]["client_id"] == client_id
    assert card["client"]["full_name"] == "Шевченко Тарас Григорович"
    assert card["client"]["birth_date"] == "1984-03-09"
    assert card["requested_account_id"] is None
    (account,) = card["accounts"]
    assert account["or_number"] == "1000000101" and account["eic_code"] == "56XS10000001010A"
    assert account["address"]["region_name"] == "Київська область"
    assert account["address"]["text"] == (
        "08200, Київська область, Бучанський, Ірпінь, вул. Університетська, 1, кв. 12"
    )
    assert account["consumer_type"] == "household_heating"
    assert account["registers"] == ["subsidy"] and account["destroyed_housing"] is False
    assert account["tariff"] == {
        "code": "household_fixed",
        "price_per_m3": "7.9600",
        "name_uk": "Фіксована ціна для побутових споживачів",
    }
    assert account["equipment"] == [{"kind": "stove", "model": "Гефест 3200", "installed_on": None}]
    assert [m["serial_number"] for m in account["meters"]] == [f"SN{account_id:06d}"]
    billing = account["billing"]
    assert billing["available"] is True and billing["stale"] is False
    assert billing["refresh"] == "not_needed"
    assert billing["balance"] == "-150.00"
    assert billing["charges"][0]["period"] == "2026-01-01"
    assert dt.datetime.fromisoformat(billing["fetched_at"]) == fetched
    (contact,) = card["contacts"]
    assert contact["phone"] == "+380501112233" and contact["owned"] is True
    assert contact["links"] == [
        {"account_id": account_id, "or_number": "1000000101", "role": "owner", "is_active": True}
    ]
    assert [c["role"] for c in account["contacts"]] == ["owner"]


async def test_an_old_cache_is_refreshed_while_the_card_is_read(
    make_api: MakeApi, admin_conn: asyncpg.Connection, demo_users: dict[str, str]
) -> None:
    api = await make_api()
    client_id, (account_id,) = await make_client(admin_conn)
    old = now() - dt.timedelta(minutes=10)
    await cache(admin_conn, account_id, fetched_at=old)

    card = await api.card(client_id)

    expected = account_data("1000000101", clock.today(dt.UTC))
    billing = card["accounts"][0]["billing"]
    assert api.sim.stats.requests == 1
    assert billing["refresh"] == "done" and billing["stale"] is False
    assert billing["balance"] == str(expected.balance)
    assert [c["id"] for c in billing["charges"]] == [c.id for c in expected.charges]
    assert card["accounts"][0]["equipment"] == msgspec.to_builtins(expected.equipment)
    fetched = dt.datetime.fromisoformat(billing["fetched_at"])
    assert fetched > old
    # The card answers as soon as billing did; the answer is stored right after.
    row = await eventually(
        lambda: admin_conn.fetchrow(
            "SELECT fetched_at, balance, refreshed_by FROM billing_snapshots "
            "WHERE account_id = $1 AND fetched_at > $2",
            account_id,
            old,
        )
    )
    assert row["fetched_at"] == fetched
    assert row["balance"] == expected.balance
    assert row["refreshed_by"] == demo_users["operator_cc"]

    again = await api.card(client_id)
    assert api.sim.stats.requests == 1
    assert again["accounts"][0]["billing"]["refresh"] == "not_needed"
    assert again["accounts"][0]["billing"]["fetched_at"] == billing["fetched_at"]


async def test_seeded_totals_without_history_are_refreshed(
    make_api: MakeApi, admin_conn: asyncpg.Connection
) -> None:
    api = await make_api()
    client_id, (account_id,) = await make_client(admin_conn)
    await admin_conn.execute(
        "INSERT INTO billing_snapshots (account_id, balance, debt, fetched_at) "
        "VALUES ($1, -1.00, 0, herald_now())",
        account_id,
    )
    card = await api.card(client_id)
    assert card["accounts"][0]["billing"]["refresh"] == "done"
    assert api.sim.stats.requests == 1


async def test_slow_billing_gives_the_cached_card_marked_stale_and_refreshes_in_background(
    make_api: MakeApi, admin_conn: asyncpg.Connection
) -> None:
    api = await make_api(billing_timeout_seconds=0.2)
    client_id, (account_id,) = await make_client(admin_conn)
    old = now() - dt.timedelta(hours=2)
    await cache(admin_conn, account_id, fetched_at=old, balance="-150.00")
    api.sim.configure({"latency_ms": 1500})

    card = await api.card(client_id)

    billing = card["accounts"][0]["billing"]
    assert billing["stale"] is True and billing["refresh"] == "pending"
    assert billing["available"] is True and billing["balance"] == "-150.00"
    assert dt.datetime.fromisoformat(billing["fetched_at"]) == old
    # The refresh goes on without the card and lands in the cache.
    expected = account_data("1000000101", clock.today(dt.UTC))
    row = await eventually(
        lambda: admin_conn.fetchrow(
            "SELECT fetched_at, balance FROM billing_snapshots WHERE account_id = $1 "
            "AND fetched_at > $2",
            account_id,
            old,
        )
    )
    assert row["balance"] == expected.balance
    assert api.sim.stats.requests == 1
    later = await api.card(client_id)
    assert later["accounts"][0]["billing"]["refresh"] == "not_needed"
    assert later["accounts"][0]["billing"]["balance"] == str(expected.balance)


async def test_billing_down_never_fails_the_card(
    make_api: MakeApi, admin_conn: asyncpg.Connection
) -> None:
    api = await make_api()
    client_id, (cached, _uncached) = await make_client(admin_conn, ("1000000101", "1000000102"))
    old = now() - dt.timedelta(days=1)
    await cache(
        admin_conn,
        cached,
        fetched_at=old,
        balance="-80.00",
        debt="30.00",
        payments=[_payment("p1", (now() - dt.timedelta(days=3)).isoformat(), "50.00")],
    )
    api.sim.configure({"down": True})

    card = await api.card(client_id)

    first, second = card["accounts"]
    assert first["billing"]["available"] is True and first["billing"]["stale"] is True
    assert first["billing"]["refresh"] == "unavailable"
    assert "503" in first["billing"]["error"]
    assert first["billing"]["balance"] == "-80.00"
    assert dt.datetime.fromisoformat(first["billing"]["fetched_at"]) == old
    assert second["billing"] == {
        "available": False,
        "stale": True,
        "fetched_at": None,
        "refresh": "unavailable",
        "error": second["billing"]["error"],
        "balance": None,
        "debt": None,
        "due_date": None,
        "tariff_code": None,
        "charges": [],
        "payments": [],
    }
    assert second["equipment"] == []
    dashboard = card["dashboard"]
    assert dashboard["billing_complete"] is False
    assert dashboard["debt_total"] == "30.00" and dashboard["payments_count"] == 1
    assert api.sim.stats.failed == 2


async def test_billing_not_knowing_an_account_is_said_on_the_card(
    make_api: MakeApi, admin_conn: asyncpg.Connection
) -> None:
    api = await make_api()
    client_id, _ = await make_client(admin_conn, ("0000000101",))
    card = await api.card(client_id)
    billing = card["accounts"][0]["billing"]
    assert billing["available"] is False and billing["refresh"] == "unknown_account"


async def test_the_operator_can_refresh_billing_explicitly(
    make_api: MakeApi, admin_conn: asyncpg.Connection
) -> None:
    api = await make_api()
    client_id, (first, second) = await make_client(admin_conn, ("1000000101", "1000000102"))
    for account_id in (first, second):
        await cache(admin_conn, account_id, fetched_at=now() - dt.timedelta(seconds=30))

    status, body = await api.call("POST", f"/api/v1/clients/{client_id}/billing/refresh")

    assert status == 200, body
    assert api.sim.stats.requests == 2
    assert body["client_id"] == client_id
    assert [a["or_number"] for a in body["accounts"]] == ["1000000101", "1000000102"]
    for item in body["accounts"]:
        expected = account_data(item["or_number"], clock.today(dt.UTC))
        assert item["billing"]["refresh"] == "done" and item["billing"]["stale"] is False
        assert item["billing"]["balance"] == str(expected.balance)
        assert item["equipment"] == msgspec.to_builtins(expected.equipment)
    balance = await admin_conn.fetchval(
        "SELECT balance FROM billing_snapshots WHERE account_id = $1", first
    )
    assert balance == account_data("1000000101", clock.today(dt.UTC)).balance

    # ?refresh=true on the card asks billing even though the cache is fresh.
    card = await api.card(client_id, refresh="true")
    assert api.sim.stats.requests == 4
    assert {a["billing"]["refresh"] for a in card["accounts"]} == {"done"}


async def test_an_explicit_refresh_says_503_when_billing_is_down(
    make_api: MakeApi, admin_conn: asyncpg.Connection
) -> None:
    api = await make_api()
    client_id, (account_id,) = await make_client(admin_conn)
    await cache(admin_conn, account_id, fetched_at=now() - dt.timedelta(seconds=30))
    api.sim.configure({"down": True})
    status, problem = await api.call("POST", f"/api/v1/clients/{client_id}/billing/refresh")
    assert status == 503
    assert problem["type"] == "/problems/billing-unavailable"
    assert "1000000101" in problem["detail"]
    # The card itself still opens with the cached data.
    card = await api.card(client_id)
    assert card["accounts"][0]["billing"]["available"] is True


@pytest.mark.timeout(60)
async def test_an_explicit_refresh_says_504_when_billing_does_not_answer(
    make_api: MakeApi, admin_conn: asyncpg.Connection
) -> None:
    api = await make_api()
    client_id, _ = await make_client(admin_conn)
    api.sim.configure({"latency_ms": 7000})  # longer than the connector's 5 s request timeout
    status, problem = await api.call("POST", f"/api/v1/clients/{client_id}/billing/refresh")
    assert status == 504
    assert problem["type"] == "/problems/billing-timeout"


async def test_passport_and_tax_id_are_masked_unless_the_role_may_see_them(
    make_api: MakeApi, admin_conn: asyncpg.Connection
) -> None:
    api = await make_api()
    client_id, (account_id,) = await make_client(admin_conn)
    await cache(admin_conn, account_id, fetched_at=now())

    masked = (await api.card(client_id, "operator_cc"))["client"]
    shown = (await api.card(client_id, "operator_cos"))["client"]

    assert masked["passport_number"] == "КА****56" and masked["tax_id"] == "12******90"
    assert masked["pii_masked"] is True
    assert shown["passport_number"] == "КА123456" and shown["tax_id"] == "1234567890"
    assert shown["pii_masked"] is False
    _, by_or = await api.call("GET", "/api/v1/accounts/by-or/1000000101", "operator_cc")
    assert by_or["client"]["passport_number"] == "КА****56"
    # An ID-card number (9 digits) is masked the same way.
    other, _ = await make_client(admin_conn, ("1000000109",), passport="123456789", tax_id=None)
    client = (await api.card(other, "operator_cc"))["client"]
    assert client["passport_number"] == "12*****89" and client["tax_id"] is None


async def test_the_card_by_or_number_is_the_same_card_and_names_the_account(
    make_api: MakeApi, admin_conn: asyncpg.Connection
) -> None:
    api = await make_api()
    client_id, (first, second) = await make_client(admin_conn, ("1000000101", "1000000102"))
    for account_id in (first, second):
        await cache(admin_conn, account_id, fetched_at=now())
    status, card = await api.call("GET", "/api/v1/accounts/by-or/1000000102")
    assert status == 200, card
    assert card["requested_account_id"] == second
    assert card["client"]["client_id"] == client_id
    assert [a["id"] for a in card["accounts"]] == [first, second]
    by_id = await api.card(client_id)
    assert by_id["accounts"] == card["accounts"] and by_id["client"] == card["client"]


async def test_contacts_show_their_roles_per_account_including_contacts_of_others(
    make_api: MakeApi, admin_conn: asyncpg.Connection
) -> None:
    api = await make_api()
    client_id, (first, second) = await make_client(admin_conn, ("1000000101", "1000000102"))
    stranger, _ = await make_client(admin_conn, ("1000000201",))
    helper = await admin_conn.fetchval(
        "INSERT INTO contacts (client_id, first_name, phone) VALUES ($1, 'Марія', '+380671234567') "
        "RETURNING id",
        stranger,
    )
    await admin_conn.execute(
        "INSERT INTO account_contacts (account_id, contact_id, role, is_active, unlinked_at) "
        "VALUES ($1, $3, 'billing_contact', true, NULL), ($2, $3, 'co_owner', false, herald_now())",
        first,
        second,
        helper,
    )
    for account_id in (first, second):
        await cache(admin_conn, account_id, fetched_at=now())

    card = await api.card(client_id)

    contacts = {c["id"]: c for c in card["contacts"]}
    assert contacts[helper]["owned"] is False
    assert [
        (link["or_number"], link["role"], link["is_active"]) for link in contacts[helper]["links"]
    ] == [("1000000101", "billing_contact", True), ("1000000102", "co_owner", False)]
    first_card, second_card = card["accounts"]
    assert {(c["contact_id"], c["role"]) for c in first_card["contacts"]} >= {
        (helper, "billing_contact")
    }
    inactive = next(c for c in second_card["contacts"] if c["contact_id"] == helper)
    assert inactive["is_active"] is False and inactive["unlinked_at"] is not None
    assert second_card["destroyed_housing"] is True


async def test_unknown_and_malformed_ids_get_clear_problems(
    make_api: MakeApi, admin_conn: asyncpg.Connection
) -> None:
    api = await make_api()
    status, problem = await api.call("GET", "/api/v1/clients/999999")
    assert status == 404 and problem["type"] == "/problems/not-found"
    status, problem = await api.call("GET", "/api/v1/accounts/by-or/1999999999")
    assert status == 404 and "1999999999" in problem["detail"]
    for bad in ("12345", "10000000ab", "100000000001"):
        status, problem = await api.call("GET", f"/api/v1/accounts/by-or/{bad}")
        assert status == 400, bad
        assert problem["errors"][0]["field"] == "or_number"
    status, problem = await api.call("GET", "/api/v1/clients/0")
    assert status == 400 and problem["errors"][0]["field"] == "client_id"
    status, problem = await api.call("GET", "/api/v1/clients/1", refresh="maybe")
    assert status == 400 and problem["errors"][0]["field"] == "refresh"
    status, problem = await api.call("GET", "/api/v1/clients/1", colour="red")
    assert status == 400 and problem["errors"][0]["field"] == "colour"
    status, problem = await api.call("POST", "/api/v1/clients/999999/billing/refresh")
    assert status == 404
    status, problem = await api.call("GET", "/api/v1/clients/1", "marketer")
    assert status == 403
    api.client.session.cookie_jar.clear()  # the login's session cookie
    response = await api.client.get("/api/v1/clients/1")
    assert response.status == 401
    assert api.sim.stats.requests == 0


async def test_the_dashboard_counts_payments_in_the_period_and_sums_debts(
    make_api: MakeApi, admin_conn: asyncpg.Connection
) -> None:
    api = await make_api()
    client_id, (first, second) = await make_client(admin_conn, ("1000000101", "1000000102"))
    await cache(
        admin_conn,
        first,
        fetched_at=now(),
        balance="-300.00",
        debt="120.50",
        charges=[
            _charge("1000000101", "2026-01-01", "180.00"),
            _charge("1000000101", "2025-12-01", "150.00"),
        ],
        payments=[
            _payment("a1", "2026-01-10T10:00:00+00:00", "100.00"),
            _payment("a2", "2025-12-10T10:00:00+00:00", "150.00"),
            # 23:30 UTC on 31 Jan is already 1 February in Kyiv.
            _payment("a3", "2026-01-31T23:30:00+00:00", "7.00"),
        ],
    )
    await cache(
        admin_conn,
        second,
        fetched_at=now(),
        balance="25.50",
        debt="0.00",
        charges=[_charge("1000000102", "2025-11-01", "10.00")],
        payments=[_payment("b1", "2026-01-20T10:00:00+00:00", "40.25")],
    )

    january = (await api.card(client_id, **{"from": "2026-01-01", "to": "2026-01-31"}))["dashboard"]
    assert january == {
        "period_from": "2026-01-01",
        "period_to": "2026-01-31",
        "payments_count": 2,
        "payments_sum": "140.25",
        "debt_total": "120.50",
        "balance_total": "-274.50",
        "billing_complete": True,
        "billing_history_from": "2025-11-01",
        "active_cases": {"count": 0, "newest": []},
    }
    winter = (await api.card(client_id, **{"from": "2025-12-01", "to": "2026-02-28"}))["dashboard"]
    assert (winter["payments_count"], winter["payments_sum"]) == (4, "297.25")
    # Default: the twelve months up to `to` (or today).
    default = (await api.card(client_id, to="2026-06-30"))["dashboard"]
    assert default["period_from"] == "2025-07-01" and default["payments_count"] == 4
    assert api.sim.stats.requests == 0

    status, problem = await api.call(
        "GET", f"/api/v1/clients/{client_id}", **{"from": "2026-02-01", "to": "2026-01-01"}
    )
    assert status == 400 and problem["errors"][0]["field"] == "from"
    status, problem = await api.call(
        "GET", f"/api/v1/clients/{client_id}", **{"from": "2026-13-01"}
    )
    assert status == 400 and problem["errors"][0]["field"] == "from"


async def test_a_client_without_accounts_still_has_a_card(
    make_api: MakeApi, admin_conn: asyncpg.Connection
) -> None:
    api = await make_api()
    client_id = await admin_conn.fetchval(
        "INSERT INTO clients (last_name, first_name) VALUES ('Петренко', 'Ольга') RETURNING id"
    )
    card = await api.card(client_id)
    assert card["accounts"] == [] and card["contacts"] == []
    assert (
        card["dashboard"]["payments_count"] == 0 and card["dashboard"]["billing_complete"] is True
    )


async def eventually(probe: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (found := await probe()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
    return found


async def test_gdo_readings_from_billing_reach_the_meters_once(
    make_api: MakeApi, admin_conn: asyncpg.Connection
) -> None:
    api = await make_api()
    client_id, (account_id,) = await make_client(admin_conn)
    serial = f"SN{account_id:06d}"  # the meter Herald knows
    month = clock.today(dt.UTC).replace(day=1)
    api.sim.override(
        "1000000101",
        {
            "meters": [{"serial_number": serial, "model": "Metrix G4"}],
            "gdo_readings": [
                {
                    "meter_serial": serial,
                    "value": "1200.500",
                    "read_on": str(month - dt.timedelta(days=31)),
                },
                {"meter_serial": serial, "value": "1250.125", "read_on": str(month)},
                {"meter_serial": "NOT-OURS", "value": "5.000", "read_on": str(month)},
            ],
        },
        clock.today(dt.UTC),
    )

    await api.card(client_id)  # no cache yet: refreshed, readings handed to the meters

    readings = await eventually(
        lambda: admin_conn.fetch(
            "SELECT r.value, r.read_on, r.source FROM meter_readings r JOIN meters m ON m.id = r.meter_id "
            "WHERE m.account_id = $1 ORDER BY r.read_on",
            account_id,
        )
    )
    assert [(r["value"], r["read_on"], r["source"]) for r in readings] == [
        (Decimal("1200.500"), month - dt.timedelta(days=31), "gdo"),
        (Decimal("1250.125"), month, "gdo"),
    ]
    card = await api.card(client_id)
    (meter,) = card["accounts"][0]["meters"]
    assert meter["serial_number"] == serial
    assert meter["latest_reading"]["value"] == "1250.125"
    assert meter["latest_reading"]["source"] == "gdo"
    # Billing sends its recent history on every refresh: nothing is recorded twice.
    status, _ = await api.call("POST", f"/api/v1/clients/{client_id}/billing/refresh")
    assert status == 200
    assert (
        await admin_conn.fetchval(
            "SELECT count(*) FROM meter_readings r JOIN meters m ON m.id = r.meter_id "
            "WHERE m.account_id = $1",
            account_id,
        )
        == 2
    )


async def test_the_card_carries_digital_channels_shop_orders_and_customer_experience(
    make_api: MakeApi, admin_conn: asyncpg.Connection
) -> None:
    api = await make_api()
    client_id, (account_id,) = await make_client(admin_conn)
    await cache(admin_conn, account_id, fetched_at=now())
    await admin_conn.execute(
        "INSERT INTO channel_usage (client_id, channel, first_at, last_at, interactions, last_type) "
        "VALUES ($1, 'app', '2025-02-01T10:00:00Z', '2026-01-05T18:30:00Z', 14, 'reading_submitted')",
        client_id,
    )
    await admin_conn.execute(
        "INSERT INTO consents (client_id, channel, topic, opted_in, source) "
        "VALUES ($1, 'sms', 'marketing', false, 'sms_stop')",
        client_id,
    )

    card = await api.card(client_id)

    channels = {c["channel"]: c for c in card["channels"]}
    assert set(channels) == {"cabinet", "app", "shop", "chatbot"}
    assert channels["app"]["used"] is True and channels["app"]["interactions"] == 14
    assert channels["app"]["last_at"].startswith("2026-01-05T18:30:00")
    assert channels["cabinet"]["used"] is False and channels["cabinet"]["last_at"] is None
    assert card["shop_orders"] == {"current": [], "past": []}
    assert [(o["channel"], o["topic"]) for o in card["customer_experience"]["opt_outs"]] == [
        ("sms", "marketing")
    ]
    assert card["dashboard"]["active_cases"] == {"count": 0, "newest": []}


async def add_case(
    conn: asyncpg.Connection,
    client_id: int,
    channel: str,
    status: str,
    category: str | None,
    hours_ago: int,
) -> tuple[int, str]:
    """A case of the client as a loader writes it: (id, number)."""
    row = await conn.fetchrow(
        """
        INSERT INTO cases (channel, client_id, identified_by, body, text_hash, category_id,
                           status, created_by_login, created_at)
        VALUES ($1, $2, 'client_id', 'Звернення', $3, (SELECT id FROM case_categories WHERE code = $4),
                $5, 'loader', herald_now() - make_interval(hours => $6))
        RETURNING id, number
        """,
        channel,
        client_id,
        text_hash(None, f"{client_id}-{hours_ago}"),
        category,
        status,
        hours_ago,
    )
    return row["id"], row["number"]


async def test_the_dashboard_lists_the_open_cases_newest_first(
    make_api: MakeApi, admin_conn: asyncpg.Connection
) -> None:
    api = await make_api()
    client_id, _ = await make_client(admin_conn)
    other, _ = await make_client(admin_conn, ("1000000202",), passport=None, tax_id=None)
    opened = [
        await add_case(admin_conn, client_id, channel, status, category, hours)
        for channel, status, category, hours in [
            ("call", "new", "billing.debt", 1),
            ("viber", "in_progress", None, 30),
            ("email", "on_hold", "meter.reading", 5),
            ("site", "new", "supply.leak", 2),
            ("app", "in_progress", "info", 50),
            ("walk_in", "new", None, 70),
        ]
    ]
    for status, hours in [("resolved", 3), ("closed", 4)]:
        await add_case(admin_conn, client_id, "call", status, "billing", hours)
    await add_case(admin_conn, other, "call", "new", "billing", 1)

    active = (await api.card(client_id))["dashboard"]["active_cases"]

    # Six open cases; the five newest are listed (resolved and closed ones are not open).
    assert active["count"] == 6
    newest = active["newest"]
    assert [c["case_id"] for c in newest] == [opened[i][0] for i in (0, 3, 2, 1, 4)]
    first = newest[0]
    assert (
        first["number"],
        first["status"],
        first["channel"],
        first["category"],
        first["category_name"],
    ) == (opened[0][1], "new", "call", "billing.debt", "Заборгованість")
    assert newest[3]["category"] is None and newest[3]["category_name"] is None
    created = dt.datetime.fromisoformat(first["created_at"])
    assert abs(now() - dt.timedelta(hours=1) - created) < dt.timedelta(minutes=5)
    assert (await api.card(other))["dashboard"]["active_cases"]["count"] == 1
