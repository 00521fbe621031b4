"""The billing simulator, the HTTP connector and the cache (single flight, stored shapes)."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest
from sim_helpers import free_port, wait_until

from crm.billing import AccountRef, BillingCache
from herald import clock
from herald.db import create_pool
from herald.settings import Settings, SettingsError, load_settings
from providers.billing import (
    BillingAccountUnknown,
    BillingTimeout,
    BillingUnavailable,
    HttpBillingConnector,
    normalise,
)
from providers.sim.billing import BILLING_SIM, BillingSim, account_data
from providers.sim.server import init_simulators_app

TOKEN = "billing-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class BillingServer:
    def __init__(self, server, sim: BillingSim) -> None:
        self.server = server
        self.sim = sim
        self.url = str(server.make_url("/billing"))


@pytest.fixture
async def billing(base_settings: Settings, aiohttp_server) -> BillingServer:
    app = init_simulators_app(msgspec.structs.replace(base_settings, provider_api_token=TOKEN))
    server = await aiohttp_server(app)
    return BillingServer(server, app[BILLING_SIM])


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _get(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.get(url, **kw) as r:
        return r.status, await r.json(content_type=None)


async def _put(http: aiohttp.ClientSession, url: str, body: object) -> tuple[int, Any]:
    async with http.put(url, json=body) as r:
        return r.status, await r.json(content_type=None)


async def test_simulator_answers_the_same_for_an_account_and_differently_for_another(
    billing: BillingServer, http: aiohttp.ClientSession
) -> None:
    status, first = await _get(http, f"{billing.url}/v1/accounts/1000000123", headers=AUTH)
    assert status == 200
    _, again = await _get(http, f"{billing.url}/v1/accounts/1000000123", headers=AUTH)
    _, other = await _get(http, f"{billing.url}/v1/accounts/1000000124", headers=AUTH)
    assert first == again
    assert first != other
    data = msgspec.convert(first, type=dict)
    assert data["or_number"] == "1000000123"
    # Twelve monthly charges, newest first, each a first of month, in the past.
    periods = [c["period"] for c in data["charges"]]
    assert len(periods) == 12 and periods == sorted(periods, reverse=True)
    assert all(re.fullmatch(r"\d{4}-\d{2}-01", p) for p in periods)
    assert len(set(periods)) == 12
    assert all(re.fullmatch(r"\d+\.\d{2}", c["amount"]) for c in data["charges"])
    assert all(re.fullmatch(r"\d+\.\d{3}", c["volume_m3"]) for c in data["charges"])
    today = clock.today(dt.UTC)
    assert all(dt.datetime.fromisoformat(p["paid_at"]).date() < today for p in data["payments"])
    # Balance follows from payments and charges, debt is never negative.
    assert Decimal(data["debt"]) >= 0
    assert data["tariff_code"] in {
        "household_fixed",
        "household_annual",
        "household_monthly",
        "condominium",
    }
    # GDO readings name the account's meters and grow month by month.
    serials = {m["serial_number"] for m in data["meters"]}
    assert serials and {g["meter_serial"] for g in data["gdo_readings"]} == serials
    first_meter = [
        Decimal(g["value"])
        for g in data["gdo_readings"]
        if g["meter_serial"] == data["meters"][0]["serial_number"]
    ]
    assert len(first_meter) == 3 and first_meter == sorted(first_meter)
    assert data["equipment"] and all(
        e["kind"] in {"stove", "boiler", "water_heater"} for e in data["equipment"]
    )


def test_generated_balance_is_payments_minus_charges_and_debt_is_the_overdue_part() -> None:
    for n in range(200):
        data = account_data(f"10000{n:05d}", dt.date(2026, 3, 15))
        charges = sum(c.amount for c in data.charges)
        payments = sum(p.amount for p in data.payments)
        opening = data.balance - payments + charges
        assert opening == opening.quantize(Decimal("0.01"))
        owed_before_latest = -data.balance - data.charges[0].amount
        assert data.debt == max(Decimal(0), owed_before_latest)
        assert all(p.paid_at.date() < dt.date(2026, 3, 15) for p in data.payments)


async def test_simulator_refuses_unknown_accounts_and_bad_tokens(
    billing: BillingServer, http: aiohttp.ClientSession
) -> None:
    status, _ = await _get(http, f"{billing.url}/v1/accounts/0900000001", headers=AUTH)
    assert status == 404
    status, _ = await _get(http, f"{billing.url}/v1/accounts/12345", headers=AUTH)
    assert status == 404
    status, _ = await _get(http, f"{billing.url}/v1/accounts/1000000001")
    assert status == 401
    status, stats = await _get(http, f"{billing.url}/sim/stats")
    assert stats == {"requests": 3, "served": 0, "not_found": 2, "failed": 0, "refused": 1}


async def test_simulator_can_be_down_fail_a_few_requests_and_be_reset(
    billing: BillingServer, http: aiohttp.ClientSession
) -> None:
    url = f"{billing.url}/v1/accounts/1000000001"
    status, config = await _put(http, f"{billing.url}/sim/config", {"down": True})
    assert status == 200 and config["down"] is True
    assert (await _get(http, url, headers=AUTH))[0] == 503
    await _put(
        http,
        f"{billing.url}/sim/config",
        {"down": False, "fail_next_requests": 1, "fail_status": 502},
    )
    assert (await _get(http, url, headers=AUTH))[0] == 502
    assert (await _get(http, url, headers=AUTH))[0] == 200
    status, problem = await _put(http, f"{billing.url}/sim/config", {"failure_rate": 2})
    assert status == 400 and "failure_rate" in problem["detail"]
    status, problem = await _put(http, f"{billing.url}/sim/config", {"unknown_or_pattern": "("})
    assert status == 400
    await _put(http, f"{billing.url}/sim/config", {"unknown_or_pattern": "^1000000001$"})
    assert (await _get(http, url, headers=AUTH))[0] == 404
    async with http.post(f"{billing.url}/sim/reset") as r:
        assert await r.json() == {
            "requests": 0,
            "served": 0,
            "not_found": 0,
            "failed": 0,
            "refused": 0,
        }
    assert (await _get(http, url, headers=AUTH))[0] == 200


async def test_an_account_answer_can_be_overridden_for_tests(
    billing: BillingServer, http: aiohttp.ClientSession
) -> None:
    status, data = await _put(
        http,
        f"{billing.url}/sim/accounts/1000000001",
        {"balance": "-10.00", "meters": [{"serial_number": "SN1", "model": "Metrix G4"}]},
    )
    assert status == 200
    _, served = await _get(http, f"{billing.url}/v1/accounts/1000000001", headers=AUTH)
    assert served == data
    assert served["balance"] == "-10.00"
    assert served["meters"][0]["serial_number"] == "SN1"
    status, problem = await _put(http, f"{billing.url}/sim/accounts/1000000001", {"colour": 1})
    assert status == 400 and "colour" in problem["detail"]
    status, _ = await _put(http, f"{billing.url}/sim/accounts/1000000001", {"balance": "x"})
    assert status == 400


async def test_connector_fetches_and_tells_failures_apart(
    billing: BillingServer, http: aiohttp.ClientSession
) -> None:
    # 1 s: room for a loaded test machine; the simulated latency below (1.5 s) still exceeds it
    connector = HttpBillingConnector(http, billing.url, TOKEN, request_timeout=1.0)
    data = await connector.fetch("1000000042")
    assert data == normalise(account_data("1000000042", clock.today(dt.UTC)))
    with pytest.raises(BillingAccountUnknown):
        await connector.fetch("0000000042")
    billing.sim.configure({"down": True})
    with pytest.raises(BillingUnavailable) as down:
        await connector.fetch("1000000042")
    assert not isinstance(down.value, BillingTimeout) and "503" in down.value.detail
    billing.sim.configure({"down": False, "latency_ms": 1500})
    with pytest.raises(BillingTimeout):
        await connector.fetch("1000000042")
    refused = HttpBillingConnector(http, f"http://127.0.0.1:{free_port()}/billing", TOKEN)
    with pytest.raises(BillingUnavailable):
        await refused.fetch("1000000042")
    wrong_token = HttpBillingConnector(http, billing.url, "nope")
    billing.sim.configure({"latency_ms": 0})
    with pytest.raises(BillingUnavailable):
        await wrong_token.fetch("1000000042")


async def _account(conn: asyncpg.Connection, or_number: str = "1000000077") -> int:
    client_id = await conn.fetchval(
        "INSERT INTO clients (last_name, first_name) VALUES ('Бондар', 'Ірина') RETURNING id"
    )
    return await conn.fetchval(
        """
        INSERT INTO accounts (client_id, or_number, eic_code, region_code, city, street, building,
                              consumer_type, tariff_code, opened_at)
        VALUES ($1, $2, '56XS' || $2 || '0A', 'UA-30', 'Київ', 'вул. Січова', '3', 'household',
                'household_fixed', '2019-05-01')
        RETURNING id
        """,
        client_id,
        or_number,
    )


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(settings)
    yield p
    await p.close()


async def test_concurrent_refreshes_of_one_account_ask_billing_once_and_store_the_answer(
    billing: BillingServer,
    http: aiohttp.ClientSession,
    pool: asyncpg.Pool,
    admin_conn: asyncpg.Connection,
) -> None:
    account_id = await _account(admin_conn)
    billing.sim.configure({"latency_ms": 200})
    cache = BillingCache(
        HttpBillingConnector(http, billing.url, TOKEN), pool, max_age_seconds=300, wait_seconds=5
    )
    ref = AccountRef(account_id, "1000000077", None)
    results = await asyncio.gather(
        *(cache.refresh_now([ref], refreshed_by="olena") for _ in range(5))
    )
    assert billing.sim.stats.requests == 1
    assert {r[account_id].block.refresh for r in results} == {"done"}
    assert cache.in_flight == 0

    row = await admin_conn.fetchrow(
        "SELECT * FROM billing_snapshots WHERE account_id = $1", account_id
    )
    expected = account_data("1000000077", clock.today(dt.UTC))
    assert row["balance"] == expected.balance and row["debt"] == expected.debt
    assert row["tariff_code"] == expected.tariff_code and row["refreshed_by"] == "olena"
    assert row["last_charge_period"] == expected.charges[0].period
    assert row["last_charge_amount"] == expected.charges[0].amount
    assert row["due_date"] == expected.due_date
    # The exact JSON shapes the timeline reads.
    assert len(row["charges"]) == 12
    for charge in row["charges"]:
        assert set(charge) == {"id", "period", "volume_m3", "amount", "posted_at"}
        assert re.fullmatch(r"\d{4}-\d{2}-01", charge["period"])
        assert re.fullmatch(r"-?\d+\.\d{3}", charge["volume_m3"])
        assert re.fullmatch(r"-?\d+\.\d{2}", charge["amount"])
        assert dt.datetime.fromisoformat(charge["posted_at"]).tzinfo is not None
    assert row["payments"], "this account's payer pays"
    for payment in row["payments"]:
        assert set(payment) == {"id", "paid_at", "amount", "method"}
        assert re.fullmatch(r"-?\d+\.\d{2}", payment["amount"])
        assert dt.datetime.fromisoformat(payment["paid_at"]).tzinfo is not None
    assert [p["id"] for p in row["payments"]] == [p.id for p in expected.payments]
    assert {g["meter_serial"] for g in row["gdo_readings"]} == {
        m.serial_number for m in expected.meters
    }

    # The next refresh, once the first is over, asks again.
    await cache.refresh_now([ref], refreshed_by="petro")
    assert billing.sim.stats.requests == 2
    await cache.close()


async def test_a_failed_refresh_keeps_the_cached_data_and_is_not_stored(
    billing: BillingServer,
    http: aiohttp.ClientSession,
    pool: asyncpg.Pool,
    admin_conn: asyncpg.Connection,
) -> None:
    account_id = await _account(admin_conn, "1000000078")
    cache = BillingCache(
        HttpBillingConnector(http, billing.url, TOKEN), pool, max_age_seconds=300, wait_seconds=5
    )
    ref = AccountRef(account_id, "1000000078", None)
    await cache.refresh_now([ref], refreshed_by="olena")
    before = await admin_conn.fetchrow(
        "SELECT * FROM billing_snapshots WHERE account_id = $1", account_id
    )
    billing.sim.configure({"down": True})
    result = await cache.refresh_now([ref], refreshed_by="petro")
    block = result[account_id].block
    assert block.refresh == "unavailable" and "503" in (block.error or "")
    after = await admin_conn.fetchrow(
        "SELECT * FROM billing_snapshots WHERE account_id = $1", account_id
    )
    assert dict(after) == dict(before)
    await cache.close()


async def test_a_background_refresh_still_running_at_shutdown_is_stopped(
    billing: BillingServer,
    http: aiohttp.ClientSession,
    pool: asyncpg.Pool,
    admin_conn: asyncpg.Connection,
) -> None:
    account_id = await _account(admin_conn, "1000000079")
    billing.sim.configure({"latency_ms": 3000})
    cache = BillingCache(
        HttpBillingConnector(http, billing.url, TOKEN), pool, max_age_seconds=300, wait_seconds=0.05
    )
    read = cache.begin(
        [AccountRef(account_id, "1000000079", None)], force=False, refreshed_by="olena"
    )
    resolved = await read.wait()
    assert resolved[account_id].block.refresh == "pending"
    assert resolved[account_id].block.available is False
    await wait_until(lambda: billing.sim.stats.requests == 1)
    assert cache.in_flight == 1
    await cache.close()
    assert cache.in_flight == 0
    assert (
        await admin_conn.fetchval(
            "SELECT count(*) FROM billing_snapshots WHERE account_id = $1", account_id
        )
        == 0
    )


def test_billing_settings_are_read_and_checked() -> None:
    settings = load_settings(
        {
            "HERALD_BILLING_URL": "https://billing.example/api",
            "HERALD_BILLING_TIMEOUT_SECONDS": "0.5",
            "HERALD_BILLING_MAX_AGE_SECONDS": "60",
        }
    )
    assert (
        settings.billing_url,
        settings.billing_timeout_seconds,
        settings.billing_max_age_seconds,
    ) == ("https://billing.example/api", 0.5, 60)
    defaults = load_settings({})
    assert defaults.billing_url == "http://127.0.0.1:8090/billing"
    assert (defaults.billing_timeout_seconds, defaults.billing_max_age_seconds) == (0.3, 300)
    with pytest.raises(SettingsError, match="HERALD_BILLING_URL"):
        load_settings({"HERALD_BILLING_URL": "ftp://billing.example"})
    with pytest.raises(SettingsError, match="HERALD_BILLING_TIMEOUT_SECONDS"):
        load_settings({"HERALD_BILLING_TIMEOUT_SECONDS": "0"})
    with pytest.raises(SettingsError, match="HERALD_BILLING_MAX_AGE_SECONDS"):
        load_settings({"HERALD_BILLING_MAX_AGE_SECONDS": "-1"})
