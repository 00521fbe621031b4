"""Simulated billing service: ``GET /billing/v1/accounts/{or_number}`` (bearer provider token).

Everything about an account is derived from a hash of its OR number and today's date,
so the simulator serves 13 M accounts with no storage and answers the same all day:
balance and overdue debt, the charges of the last 12 months (volume and amount at the
tariff's price, heavier in winter), the payments made against them, the tariff,
equipment, one or two meters and the gas distribution operator's readings of each
meter for the last three months (consistent with the charged volumes).

ORs matching ``unknown_or_pattern`` are unknown: 404 (default: those starting with 0,
which the seeder never makes).

Control, as for the other simulators, under ``/billing/sim/``: ``GET|PUT config``
(latency, random failures, the next N requests failing, ``down``), ``GET stats``,
``POST reset``, and ``PUT accounts/{or_number}`` to override fields of one account's
answer (tests make meter serials match Herald's), cleared by reset.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import hashlib
import random
import re
from decimal import ROUND_CEILING, Decimal
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta

from herald import clock
from herald.settings import Settings
from providers.billing import (
    CENTS,
    LITRES,
    BillingData,
    BillingMeter,
    Charge,
    Equipment,
    GdoReading,
    Payment,
)
from providers.sim.control import json_response, problem

Share = Annotated[float, Meta(ge=0.0, le=1.0)]
Millis = Annotated[float, Meta(ge=0.0)]

# Prices per m3 of the tariffs Herald knows (migrations/0003), with their weights.
TARIFFS: tuple[tuple[str, Decimal, int], ...] = (
    ("household_fixed", Decimal("7.96"), 6),
    ("household_annual", Decimal("7.96"), 2),
    ("household_monthly", Decimal("9.89"), 1),
    ("condominium", Decimal("9.40"), 1),
)
# Share of a heating household's yearly gas used in each month (January first).
_HEATING_SEASON = (0.17, 0.15, 0.12, 0.07, 0.03, 0.02, 0.02, 0.02, 0.03, 0.07, 0.13, 0.17)
_METHODS = ("bank_card", "online_banking", "cabinet", "mobile_app", "post_office", "bank_cash_desk")
_METER_MODELS = (
    ("Metrix G4", "G4"),
    ("Itron Gallus 2000 G4", "G4"),
    ("Самгаз G2.5", "G2.5"),
    ("Elster BK-G1.6", "G1.6"),
    ("Metrix G6", "G6"),
)
_STOVES = ("Гефест 3200", "Greta 1470", "Electrolux EKG 511", "ПГ-4")
_BOILERS = ("Ariston Clas One 24", "Vaillant turboTEC pro", "Bosch Gaz 6000", "АОГВ-11,6")
_WATER_HEATERS = ("Нева 4510", "Bosch Therm 4000", "Ariston Fast Evo")


class BillingSimConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How the simulated billing behaves; ``PUT /billing/sim/config`` merges a partial one in."""

    latency_ms: Millis = 0.0
    latency_jitter_ms: Millis = 0.0
    down: bool = False  # every request answered fail_status
    failure_rate: Share = 0.0  # a random share of requests answered fail_status
    fail_next_requests: Annotated[int, Meta(ge=0)] = 0
    fail_status: Annotated[int, Meta(ge=500, le=599)] = 503
    unknown_or_pattern: str | None = "^0"  # ORs billing does not know: 404


class BillingSimStats(msgspec.Struct, kw_only=True):
    """Counts since start or reset: requests = served + not_found + failed + refused."""

    requests: int = 0
    served: int = 0
    not_found: int = 0
    failed: int = 0
    refused: int = 0  # bad token or malformed request


_FIELDS = frozenset(f.name for f in msgspec.structs.fields(BillingData)) - {"or_number"}
_OR = re.compile(r"^[0-9]{10}$")


class BillingSim:
    """The simulated billing's state: config, counts and per-account overrides."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.config = BillingSimConfig()
        self._unknown = re.compile(self.config.unknown_or_pattern or "(?!)")
        self.stats = BillingSimStats()
        self.overrides: dict[str, dict[str, Any]] = {}

    def configure(self, patch: dict[str, Any]) -> BillingSimConfig:
        """Merge ``patch`` into the config; raise ValueError naming the problem."""
        try:
            config = msgspec.convert(msgspec.structs.asdict(self.config) | patch, BillingSimConfig)
            unknown = re.compile(config.unknown_or_pattern or "(?!)")
        except msgspec.ValidationError as exc:
            raise ValueError(str(exc)) from None
        except re.error as exc:
            raise ValueError(f"bad unknown_or_pattern: {exc}") from None
        self.config, self._unknown = config, unknown
        return config

    def override(self, or_number: str, fields: dict[str, Any], today: dt.date) -> BillingData:
        """Replace fields of one account's answer from now on; raise ValueError on a bad one."""
        extra = sorted(set(fields) - _FIELDS)
        if extra:
            raise ValueError(f"unknown fields {extra}; known: {sorted(_FIELDS)}")
        merged = self.overrides.get(or_number, {}) | fields
        data = self._merge(account_data(or_number, today), merged)
        self.overrides[or_number] = merged
        return data

    def knows(self, or_number: str) -> bool:
        return bool(_OR.match(or_number)) and not self._unknown.search(or_number)

    def answer(self, or_number: str, today: dt.date) -> BillingData:
        return self._merge(account_data(or_number, today), self.overrides.get(or_number))

    @staticmethod
    def _merge(data: BillingData, fields: dict[str, Any] | None) -> BillingData:
        if not fields:
            return data
        try:
            return msgspec.convert(msgspec.to_builtins(data) | fields, BillingData)
        except msgspec.ValidationError as exc:
            raise ValueError(str(exc)) from None

    def failure(self) -> int | None:
        """The status this request fails with, or None."""
        config = self.config
        if config.down:
            return config.fail_status
        if config.fail_next_requests:
            config.fail_next_requests -= 1
            return config.fail_status
        if config.failure_rate and random.random() < config.failure_rate:
            return config.fail_status
        return None

    def latency(self) -> float:
        config = self.config
        millis = config.latency_ms
        if config.latency_jitter_ms:
            millis += random.uniform(-config.latency_jitter_ms, config.latency_jitter_ms)
        return max(0.0, millis) / 1000


BILLING_SIM = web.AppKey("billing_simulator", BillingSim)


def _months_back(first: dt.date, months: int) -> dt.date:
    index = first.year * 12 + first.month - 1 - months
    return dt.date(index // 12, index % 12 + 1, 1)


def _at(day: dt.date, seconds: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(seconds=seconds)


def account_data(or_number: str, today: dt.date) -> BillingData:
    """The account's billing answer: a pure function of the OR number and the date."""
    digest = hashlib.blake2b(or_number.encode(), digest_size=8, person=b"herald-billing").digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    tariff, price, _ = rng.choices(TARIFFS, weights=[t[2] for t in TARIFFS])[0]
    heating = rng.random() < 0.6
    yearly = rng.uniform(900, 2600) if heating else rng.uniform(100, 300)
    payer = rng.random()  # < 0.75 pays every month, < 0.92 skips some, else rarely pays
    opening = (
        Decimal(rng.randrange(0, 50_000)) / 100
        if payer < 0.75
        else -Decimal(rng.randrange(50_000, 2_000_000)) / 100
        if payer >= 0.92
        else Decimal(0)
    )

    this_month = today.replace(day=1)
    charges: list[Charge] = []
    payments: list[Payment] = []
    for back in range(12, 0, -1):
        period = _months_back(this_month, back)
        share = _HEATING_SEASON[period.month - 1] if heating else 1 / 12
        volume = Decimal(yearly * share * rng.uniform(0.85, 1.15)).quantize(LITRES)
        amount = (volume * price).quantize(CENTS)
        posted = _months_back(this_month, back - 1)  # posted early in the next month
        charges.append(
            Charge(
                f"{or_number}-c{period:%Y%m}",
                period,
                volume,
                amount,
                _at(posted, 3600 + rng.randrange(4 * 3600)),
            )
        )
        pays = rng.random() < (0.97 if payer < 0.75 else 0.6 if payer < 0.92 else 0.15)
        paid_on = posted + dt.timedelta(days=rng.randrange(3, 25))
        if pays and paid_on < today:
            # Round up to whole hryvnias, sometimes to tens; now and then a little more.
            paid = amount.to_integral_value(rounding=ROUND_CEILING)
            if rng.random() < 0.3:
                paid = Decimal(int(paid / 10 + 1) * 10)
            payments.append(
                Payment(
                    f"{or_number}-p{paid_on:%Y%m%d}",
                    _at(paid_on, 28_800 + rng.randrange(43_200)),
                    paid.quantize(CENTS),
                    rng.choice(_METHODS),
                )
            )
    balance = (
        opening
        + sum((p.amount for p in payments), Decimal(0))
        - sum((c.amount for c in charges), Decimal(0))
    )
    # The latest charge is due on the 20th; what was owed before it is overdue.
    debt = max(Decimal(0), -balance - charges[-1].amount).quantize(CENTS)

    equipment = [
        Equipment("stove", rng.choice(_STOVES), _months_back(this_month, rng.randrange(12, 360)))
    ]
    if heating:
        equipment.append(
            Equipment(
                "boiler", rng.choice(_BOILERS), _months_back(this_month, rng.randrange(12, 240))
            )
        )
    if rng.random() < 0.4:
        equipment.append(
            Equipment(
                "water_heater",
                rng.choice(_WATER_HEATERS),
                _months_back(this_month, rng.randrange(12, 240)),
            )
        )

    meters: list[BillingMeter] = []
    readings: list[GdoReading] = []
    for k in range(2 if rng.random() < 0.1 else 1):
        model, size = rng.choice(_METER_MODELS)
        serial = (
            f"MX{rng.randrange(10**8):08d}"
            if model.startswith("Metrix")
            else f"{rng.randrange(10**8):08d}"
        )
        meters.append(
            BillingMeter(serial, model, size, _months_back(this_month, rng.randrange(6, 180)))
        )
        # The GDO reads each meter on the 1st; the first meter measures the charged volume.
        value = Decimal(rng.randrange(1_000, 40_000)) + Decimal(rng.randrange(1000)) / 1000
        for i, charge in enumerate(charges):
            value += charge.volume_m3 if k == 0 else (charge.volume_m3 / 10).quantize(LITRES)
            if i >= len(charges) - 3:
                readings.append(
                    GdoReading(serial, value.quantize(LITRES), _months_back(charge.period, -1))
                )

    due_day = min(20, calendar.monthrange(today.year, today.month)[1])
    return BillingData(
        or_number=or_number,
        balance=balance.quantize(CENTS),
        debt=debt,
        tariff_code=tariff,
        due_date=today.replace(day=due_day),
        charges=charges[::-1],
        payments=payments[::-1],
        equipment=equipment,
        meters=meters,
        gdo_readings=readings,
    )


def mount_billing(app: web.Application, settings: Settings) -> None:
    """Add the billing simulator under /billing."""
    sim = BillingSim()
    app[BILLING_SIM] = sim
    expected_auth = f"Bearer {settings.provider_api_token}"
    encoder = msgspec.json.Encoder()

    async def get_account(request: web.Request) -> web.Response:
        stats = sim.stats
        stats.requests += 1
        if request.headers.get("Authorization") != expected_auth:
            stats.refused += 1
            return problem(401, "missing or wrong bearer token")
        or_number = request.match_info["or_number"]
        status = sim.failure()
        await _sleep(sim.latency())
        if status is not None:
            stats.failed += 1
            return problem(status, "simulated billing failure")
        if not sim.knows(or_number):
            stats.not_found += 1
            return problem(404, f"no account {or_number}")
        stats.served += 1
        body = encoder.encode(sim.answer(or_number, clock.today(dt.UTC)))
        return web.Response(body=body, content_type="application/json")

    async def get_config(request: web.Request) -> web.Response:
        return json_response(sim.config)

    async def put_config(request: web.Request) -> web.Response:
        patch = await _json_object(request)
        if isinstance(patch, web.Response):
            return patch
        try:
            return json_response(sim.configure(patch))
        except ValueError as exc:
            return problem(400, str(exc))

    async def get_stats(request: web.Request) -> web.Response:
        return json_response(sim.stats)

    async def post_reset(request: web.Request) -> web.Response:
        sim.reset()
        return json_response(sim.stats)

    async def put_account(request: web.Request) -> web.Response:
        or_number = request.match_info["or_number"]
        if not _OR.match(or_number):
            return problem(400, "an OR number is 10 digits")
        patch = await _json_object(request)
        if isinstance(patch, web.Response):
            return patch
        try:
            return json_response(sim.override(or_number, patch, clock.today(dt.UTC)))
        except ValueError as exc:
            return problem(400, str(exc))

    app.router.add_get("/billing/v1/accounts/{or_number}", get_account)
    app.router.add_get("/billing/sim/config", get_config)
    app.router.add_put("/billing/sim/config", put_config)
    app.router.add_get("/billing/sim/stats", get_stats)
    app.router.add_post("/billing/sim/reset", post_reset)
    app.router.add_put("/billing/sim/accounts/{or_number}", put_account)


async def _json_object(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        patch = msgspec.json.decode(await request.read())
    except msgspec.DecodeError as exc:
        return problem(400, f"body is not JSON: {exc}")
    if not isinstance(patch, dict):
        return problem(400, "body must be a JSON object")
    return patch


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)
